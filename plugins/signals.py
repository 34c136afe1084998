"""SIGTERM ends a run as Ctrl-C does: session fixtures torn down (servers stopped), a report written.

pytest turns SIGINT into an orderly interrupted exit (``KeyboardInterrupt``) but leaves SIGTERM to
Python's default, which ends the process at once: no fixture finalizer runs, so no server is stopped
and no report is written. While pytest is configured, this plugin makes SIGTERM raise
``KeyboardInterrupt`` in the main thread. A SIGTERM handler that is already set (by a harness, or
``SIG_IGN``) is left as it is.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

Handler = Callable[[int, FrameType | None], Any] | int | None
PREVIOUS = pytest.StashKey[Handler]()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def pytest_configure(config: pytest.Config) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    config.stash[PREVIOUS] = signal.signal(signal.SIGTERM, _interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    if PREVIOUS in config.stash and signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, config.stash[PREVIOUS])
        del config.stash[PREVIOUS]
