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
