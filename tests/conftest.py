"""Shared settings for quantgate's own tests: the hub is off and nothing leaves loopback.

Every test runs with ``HF_HUB_OFFLINE=1`` (forced, not defaulted) and with ``socket.connect`` refusing
any address that is not loopback or a Unix socket, in this process; a test that tried would fail with
``IsolationError`` naming the address. Tool subprocesses get the same ``HF_HUB_OFFLINE`` through the
environment.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import numpy  # noqa: F401  (before any pytester snapshot: numpy cannot be imported twice in a process)
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


class IsolationError(OSError):
    """A test tried to open a connection beyond loopback."""


def _allowed(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name to resolve: not loopback by construction


def _guarded(original: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if not _allowed(address):
            raise IsolationError(f"quantgate tests stay on loopback; refused a connection to {address!r}")
        return original(self, address)

    return connect


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded(_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_connect_ex))


# The tests that run the real tools for minutes. vLLM's CPU threads slow down 10-20x when another busy
# process shares the two cores (a fault-run look took 190-270 s instead of ~12 s beside the Qwen2
# rebuild), so under xdist (``./run tests``: ``-n 2 --dist loadgroup``) they run one after another on
# one worker, the rebuilds (plain training, insensitive to load) first, while the other worker runs the
# quick tests.
REAL_TOOLS = ("test_tinymodel.py", "test_served_prompt.py", "test_lane_faults.py", "test_slow_host.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    heavy = [item for item in items if item.path.name in REAL_TOOLS]
    for item in heavy:
        item.add_marker(pytest.mark.xdist_group("real-tools"))
    slots = [index for index, item in enumerate(items) if item.path.name in REAL_TOOLS]
    ordered = sorted(heavy, key=lambda item: REAL_TOOLS.index(item.path.name))
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item
