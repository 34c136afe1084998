"""A slow-host stand-in for the lane (loaded with ``-p slow_host`` by ``tests/test_slow_host.py``).

On some hosts of the CI machine kind vLLM's FP8 CPU kernel generates 20-50x slower than BF16; this
host may not be one of them. The stand-in makes any host one: the real vLLM server of each cell named
in ``QG_SLOW_CELLS`` (comma-separated served names) is frozen with SIGSTOP for all but
``1 / QG_SLOW_FACTOR`` of every 100 ms once it is ready, so every request it serves, the rate probe's
included, takes about that factor longer. Nothing else changes: the real tools run the real lane.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

CYCLE_S = 0.1


class Throttle:
    """Freeze a process group for all but ``1 / factor`` of each cycle, until ``stop``."""

    def __init__(self, pgid: int, factor: float) -> None:
        self.pgid = pgid
        self.running_s = CYCLE_S / factor
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="qg-slow-host", daemon=True)
        self.thread.start()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _run(self) -> None:
        while not self.done.is_set():
            self._signal(signal.SIGSTOP)
            if self.done.wait(CYCLE_S - self.running_s):
                break
            self._signal(signal.SIGCONT)
            self.done.wait(self.running_s)
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def pytest_configure(config: Any) -> None:
    from quantgate.runners import serve

    slow = {name for name in os.environ.get("QG_SLOW_CELLS", "").split(",") if name}
    factor = float(os.environ.get("QG_SLOW_FACTOR", "20"))
    throttles: dict[int, Throttle] = {}
    real_start, real_stop = serve.VllmServer.start, serve.VllmServer.stop

    def start(self: Any) -> Any:
        started = real_start(self)
        if self.spec.served_name in slow and self.process is not None:
            throttles[id(self)] = Throttle(self.process.pid, factor)
        return started

    def stop(self: Any) -> None:
        throttle = throttles.pop(id(self), None)
        if throttle is not None:
            throttle.stop()
        real_stop(self)

    serve.VllmServer.start = start  # type: ignore[method-assign]
    serve.VllmServer.stop = stop  # type: ignore[method-assign]
