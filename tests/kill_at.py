"""Test plugin of ``tests/test_killed_job_cpu.py``: the job SIGKILLs itself as a chosen test starts.

A stand-in for a runner's time limit or an out-of-memory kill: as the ``QG_KILL_AT_NTH``-th test whose
name starts with ``QG_KILL_AT`` sets up, the pytest process kills itself with SIGKILL, so no hook of
the session runs after.
"""

from __future__ import annotations

import os
import signal

import pytest

started: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    prefix = os.environ.get("QG_KILL_AT")
    if prefix and item.name.startswith(prefix):
        started.append(item.name)
        if len(started) == int(os.environ.get("QG_KILL_AT_NTH", "1")):
            os.kill(os.getpid(), signal.SIGKILL)
