"""Leases between live pytest-xdist workers: a file all workers share, first come first served.

Each worker takes the devices of its next job from ``DeviceLeases`` (an ``fcntl``-locked JSON file in
the run's shared directory), by the same policy as the plan (``LongestFirstPlacement``), with EASY
backfilling; a worker that died is dropped from the file so that its devices come back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantgate.datafile import atomic_write_text
from quantgate.devices.fit import GPU_MEMORY_UTILIZATION
from quantgate.devices.inventory import Inventory
from quantgate.devices.placement import Holding, Job, LongestFirstPlacement, Request
from quantgate.errors import QuantgateError


class LeaseTimeout(QuantgateError):
    """A worker waited longer than allowed for its devices."""


@dataclass
class Lease:
    """Devices held by one worker for one job; ``on_release`` callbacks run before they are freed.

    A served-model fixture registers the stop of its server here, so that the devices are handed to
    another worker only once the server that used them has exited.
    """

    job: str
    owner: str
    devices: tuple[int, ...]
    memory_gb: float
    exclusive: bool
    gpu_memory_utilization: float
    waited_s: float = 0.0
    _callbacks: list[Callable[[], object]] = field(default_factory=list, repr=False)

    def on_release(self, callback: Callable[[], object]) -> None:
        self._callbacks.append(callback)

    def run_callbacks(self) -> None:
        errors: list[BaseException] = []
        while self._callbacks:
            try:
                self._callbacks.pop()()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class DeviceLeases:
    """``LongestFirstPlacement`` between processes: a JSON file of holders and waiters under a lock.

    Every worker of one run points at the same directory. ``acquire`` registers the worker as a
    waiter and polls; on each poll the waiters are served in arrival order on the devices free now
    (rule 4 of the policy), and the worker takes its devices when that pass gives it some. Holders and
    waiters whose process has died are dropped, so a crashed worker does not hold GPUs forever.
    """

    def __init__(self, directory: str | Path, inventory: Inventory, owner: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.policy = LongestFirstPlacement(inventory)
        self.owner = owner
        self._state = self.directory / "leases.json"
        self._lock = self.directory / "leases.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(self._lock, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state: dict[str, Any] = (
                    json.loads(self._state.read_text()) if self._state.exists() else {"seq": 0}
                )
                state.setdefault("held", [])
                state.setdefault("waiting", [])
                yield state
                atomic_write_text(self._state, json.dumps(state))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def try_acquire(self, job: Job) -> Lease | None:
        """One pass of rule 4 over all waiters: the lease if this worker may start now, else None.

        The worker stays queued (its arrival order kept) until it gets its devices or withdraws.
        """
        with self._locked() as state:
            _drop_dead(state)
            if not any(w["owner"] == self.owner for w in state["waiting"]):
                state["seq"] += 1
                request = Request.of(job)
                state["waiting"].append(
                    {
                        "owner": self.owner,
                        "pid": os.getpid(),
                        "seq": state["seq"],
                        "job": job.key,
                        "need": [
                            request.kind,
                            request.count,
                            request.memory_gb,
                            request.exclusive,
                            request.duration_s,
                        ],
                    }
                )
            now = time.time()
            waiting = sorted(state["waiting"], key=lambda w: w["seq"])
            held = [
                Holding(tuple(h["devices"]), h["memory_gb"], h["exclusive"], max(now, h["until"]))
                for h in state["held"]
            ]
            grants = self.policy.grant([Request(*w["need"]) for w in waiting], held, now)
            mine = next(n for n, w in enumerate(waiting) if w["owner"] == self.owner)
            if mine not in grants:
                return None
            devices = grants[mine]
            request = Request(*waiting[mine]["need"])
            booked = self.policy.booked(request, devices)
            state["waiting"].remove(waiting[mine])
            state["held"].append(
                {
                    "owner": self.owner,
                    "pid": os.getpid(),
                    "job": job.key,
                    "devices": list(devices),
                    "memory_gb": booked,
                    "exclusive": job.exclusive,
                    "until": now + job.duration_s,
                }
            )
            return Lease(job.key, self.owner, devices, booked, job.exclusive, self._utilization(job, devices))

    def acquire(self, job: Job, timeout_s: float, poll_s: float = 0.05) -> Lease:
        """Wait for this worker's turn (see ``try_acquire``); ``LeaseTimeout`` after ``timeout_s``."""
        start = time.monotonic()
        delay = poll_s
        while True:
            lease = self.try_acquire(job)
            if lease is not None:
                lease.waited_s = time.monotonic() - start
                return lease
            if time.monotonic() - start > timeout_s:
                with self._locked() as state:
                    state["waiting"] = [w for w in state["waiting"] if w["owner"] != self.owner]
                raise LeaseTimeout(
                    job.key, f"waited {timeout_s:g} s for {job.count}x {job.kind} without getting them"
                )
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)

    def release(self, lease: Lease) -> None:
        """Run the lease's callbacks, then free its devices (even when a callback fails)."""
        try:
            lease.run_callbacks()
        finally:
            with self._locked() as state:
                state["held"] = [
                    h for h in state["held"] if not (h["owner"] == lease.owner and h["job"] == lease.job)
                ]

    def holders(self) -> list[dict[str, Any]]:
        """The leases held now (for tests and diagnostics)."""
        with self._locked() as state:
            return list(state["held"])

    def _utilization(self, job: Job, devices: Sequence[int]) -> float:
        """``--gpu-memory-utilization`` for the server: its share of the smallest of its GPUs."""
        memory = min(d.memory_gb for d in self.policy.inventory.devices if d.index in devices)
        share = self.policy.booked(Request.of(job), devices) / memory
        if job.exclusive:
            return math.floor(min(GPU_MEMORY_UTILIZATION, share) * 100) / 100
        return min(GPU_MEMORY_UTILIZATION, math.ceil(share * 100) / 100)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_dead(state: dict[str, Any]) -> None:
    state["held"] = [h for h in state["held"] if _alive(int(h["pid"]))]
    state["waiting"] = [w for w in state["waiting"] if _alive(int(w["pid"]))]
