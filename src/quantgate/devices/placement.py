"""Placement: test items grouped by served model into jobs, run longest (or widest) first on adjacent devices.

``LongestFirstPlacement`` is the policy; ``make_plan`` simulates it (the ``--qg-plan`` table and its
lower bound), ``quantgate.devices.leases.DeviceLeases`` applies it between live pytest-xdist workers,
and ``shard_of_groups`` splits served models between CI machines, balanced by estimate. A ``Task`` is
one test item as placement sees it: no matrix cell, so that placement knows nothing of the catalog's
cells.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantgate.devices.fit import GPU_MEMORY_UTILIZATION
from quantgate.devices.inventory import Device, Inventory
from quantgate.errors import QuantgateError


@dataclass(frozen=True, kw_only=True)
class Task:
    """One test item as placement sees it.

    ``job`` groups items that share one served model (they run on one worker, back to back, on the
    same devices); ``shareable`` items may share a GPU with other shareable jobs within memory
    (accuracy cells), the others need their GPUs alone (performance cells: speed is measured on an
    otherwise idle GPU). ``seconds`` plans the run (learned or estimated); ``estimate_s`` is the
    estimate from committed files alone (published tables, else the catalog) used for sharding, so
    that every CI machine computes the same shards. ``reference`` marks a BF16 reference cell: on
    kinds that reuse stored references it usually runs nothing, so shards balance references and
    candidates each on their own (``shard_of_groups``).
    """

    node_id: str
    job: str
    kind: str
    count: int
    memory_gb: float
    shareable: bool
    seconds: float
    estimate_s: float
    startup_s: float = 0.0
    reference: bool = False


@dataclass(frozen=True)
class Job:
    """All tasks of one served model; it holds ``count`` devices of ``kind`` for ``duration_s``."""

    key: str
    kind: str
    count: int
    memory_gb: float
    exclusive: bool
    startup_s: float
    tasks: tuple[Task, ...]

    @property
    def duration_s(self) -> float:
        return self.startup_s + sum(t.seconds for t in self.tasks)


def build_jobs(tasks: Iterable[Task]) -> list[Job]:
    """Group tasks by ``job`` (first-appearance order); a job is exclusive if any task is."""
    grouped: dict[str, list[Task]] = {}
    for task in tasks:
        grouped.setdefault(task.job, []).append(task)
    jobs: list[Job] = []
    for key, members in grouped.items():
        first = members[0]
        for other in members[1:]:
            if (other.kind, other.count) != (first.kind, first.count):
                raise QuantgateError(
                    other.node_id,
                    f"served model {key!r} needs {first.count}x {first.kind} for {first.node_id} but "
                    f"{other.count}x {other.kind} here",
                )
        jobs.append(
            Job(
                key=key,
                kind=first.kind,
                count=first.count,
                memory_gb=max(t.memory_gb for t in members),
                exclusive=not all(t.shareable for t in members),
                startup_s=max(t.startup_s for t in members),
                tasks=tuple(members),
            )
        )
    return jobs


@dataclass
class DeviceUse:
    """What is placed on one device now."""

    used_gb: float = 0.0
    holders: int = 0
    exclusive: bool = False


@dataclass(frozen=True)
class Request:
    """A worker waiting for devices: what its job needs and how long it will hold them."""

    kind: str
    count: int
    memory_gb: float
    exclusive: bool
    duration_s: float

    @classmethod
    def of(cls, job: Job) -> Request:
        return cls(job.kind, job.count, job.memory_gb, job.exclusive, job.duration_s)


@dataclass(frozen=True)
class Holding:
    """Devices held now, ``memory_gb`` booked on each, expected free at ``end_s``."""

    devices: tuple[int, ...]
    memory_gb: float
    exclusive: bool
    end_s: float


class LongestFirstPlacement:
    """Place served-model jobs on adjacent devices, longest (or widest) first, with EASY backfilling.

    The policy, the same for the plan (``simulate``) and for live xdist workers (``DeviceLeases``):

    1. order: jobs by estimated duration, longest first (LPT), ties by key; or widest first (GPU
       count), then LPT, when that plan is shorter (``best_order`` simulates both). Widest first
       because a job needing every GPU of its kind starts without idling any only while all are
       free, at the start; later its reservation drains them (the full A6000 matrix planned 1.16x
       its lower bound in LPT order, 1.04x widest first). LPT stays where one narrow job is as long
       as the plan (it must start at once);
    2. a worker runs one job at a time and takes the next job in that order when it is free;
    3. a job gets ``count`` devices of its kind that are adjacent in the inventory; exclusive jobs
       (any performance cell) only devices nobody holds, shareable jobs (accuracy only) devices with
       ``memory_gb`` still free of the budget ``min(0.9 x memory, free)`` and no exclusive holder.
       Windows aligned to ``count`` come first (0-3, 4-7 for four of eight), then, for shareable
       jobs, the devices already most used (pack small servers together), then the lowest index;
    4. waiting workers are served in arrival order (``grant``). The first one that cannot start gets
       a reservation: the devices and the time at which they will be free, from the running jobs'
       expected ends. A later waiter may start before it only on other devices, or if it will be
       done by then (EASY backfilling). Without the reservation a 4-GPU job would wait until four
       GPUs happen to be idle at once, while 1-GPU jobs keep taking them.

    Example, 4x a6000, four workers, LPT order Llama-70B/int4-w4a16/a6000/tp2 (25.7 h),
    Llama-70B/bf16/a6000/tp4 (12.9 h), then 1-GPU jobs::

        0 h     worker 0: Llama-70B int4 on 0,1
        0 h     worker 1: waits for 0-3, reserved from 25.7 h; workers 2, 3 backfill 2 and 3
                with 1-GPU jobs that end by 25.7 h
        25.7 h  worker 1: Llama-70B bf16 on 0-3

    (widest first would start Llama-70B bf16 on 0-3 at once, and the int4 job after it).

    A job no device set of the inventory could ever hold is not placed: ``unplaceable`` says why,
    and its items are skipped with that reason.
    """

    def __init__(self, inventory: Inventory, utilization: float = GPU_MEMORY_UTILIZATION) -> None:
        self.inventory = inventory
        self.utilization = utilization

    def capacity(self, device: Device) -> float:
        return min(device.memory_gb * self.utilization, device.free_gb)

    @staticmethod
    def order(jobs: Iterable[Job], widest_first: bool = False) -> list[Job]:
        """Jobs longest first (LPT), ties by key; ``widest_first``: by GPU count first."""
        if widest_first:
            return sorted(jobs, key=lambda j: (-j.count, -j.duration_s, j.key))
        return sorted(jobs, key=lambda j: (-j.duration_s, j.key))

    def best_order(self, jobs: Sequence[Job], workers: int) -> list[Job]:
        """Rule 1: the LPT order, or the widest-first one when its simulated plan ends earlier."""
        lpt = self.order(jobs)
        widest = self.order(jobs, widest_first=True)
        if [j.key for j in widest] == [j.key for j in lpt]:
            return lpt

        def makespan(order: Sequence[Job]) -> float:
            return max((s.end_s for s in self.simulate(order, workers, ordered=True)[0]), default=0.0)

        return widest if makespan(widest) < makespan(lpt) - 1e-6 else lpt

    def windows(self, kind: str, count: int) -> list[tuple[bool, tuple[Device, ...]]]:
        """Every run of ``count`` adjacent devices of ``kind``, with whether it is aligned."""
        devices = self.inventory.devices
        out: list[tuple[bool, tuple[Device, ...]]] = []
        run_start = 0
        for start in range(len(devices)):
            if devices[start].kind != kind:
                continue
            if start == 0 or devices[start - 1].kind != kind:
                run_start = start
            window = devices[start : start + count]
            if len(window) == count and all(d.kind == kind for d in window):
                out.append(((start - run_start) % count == 0, tuple(window)))
        return out

    def _room(self, device: Device, request: Request, use: DeviceUse | None) -> bool:
        if request.memory_gb > self.capacity(device) + 1e-9:
            return False
        if use is None or use.holders == 0:
            return True
        if request.exclusive or use.exclusive:
            return False
        return use.used_gb + request.memory_gb <= self.capacity(device) + 1e-9

    def choose(
        self, request: Request, usage: Mapping[int, DeviceUse], avoid: frozenset[int] = frozenset()
    ) -> tuple[int, ...] | None:
        """Indices of the devices rule 3 picks given what is placed now (never ``avoid``), or None."""
        best: tuple[tuple[int, float, int], tuple[int, ...]] | None = None
        for aligned, window in self.windows(request.kind, request.count):
            if any(d.index in avoid for d in window):
                continue
            if not all(self._room(d, request, usage.get(d.index)) for d in window):
                continue
            used = (
                0.0 if request.exclusive else sum(usage[d.index].used_gb for d in window if d.index in usage)
            )
            score = (0 if aligned else 1, -used, window[0].index)
            if best is None or score < best[0]:
                best = (score, tuple(d.index for d in window))
        return None if best is None else best[1]

    def booked(self, request: Request, devices: Sequence[int]) -> float:
        """Memory a job books on each of its devices: the whole budget when exclusive."""
        if not request.exclusive:
            return request.memory_gb
        by_index = {d.index: d for d in self.inventory.devices}
        return min(self.capacity(by_index[i]) for i in devices)

    def grant(
        self, waiting: Sequence[Request], held: Sequence[Holding], now: float
    ) -> dict[int, tuple[int, ...]]:
        """Rule 4: which waiters (by position, arrival order) start at ``now``, on which devices."""
        usage = _usage(held)
        holdings = list(held)
        grants: dict[int, tuple[int, ...]] = {}
        reservation: tuple[float, frozenset[int]] | None = None
        for position, request in enumerate(waiting):
            if reservation is None:
                devices = self.choose(request, usage)
                if devices is None:
                    reservation = self._reserve(request, holdings, now)
                    continue
            else:
                until, reserved = reservation
                devices = self.choose(request, usage, avoid=reserved)
                if devices is None and now + request.duration_s <= until:
                    devices = self.choose(request, usage)
                if devices is None:
                    continue
            booked = self.booked(request, devices)
            _book(usage, devices, booked, request.exclusive)
            holdings.append(Holding(devices, booked, request.exclusive, now + request.duration_s))
            grants[position] = devices
        return grants

    def _reserve(
        self, request: Request, holdings: Sequence[Holding], now: float
    ) -> tuple[float, frozenset[int]]:
        """When and where ``request`` could start if the holders leave at their expected ends."""
        remaining = sorted(holdings, key=lambda h: h.end_s)
        while remaining:
            end = remaining[0].end_s
            remaining = [h for h in remaining if h.end_s > end]
            devices = self.choose(request, _usage(remaining))
            if devices is not None:
                return max(now, end), frozenset(devices)
        return now, frozenset()

    def unplaceable(self, job: Job) -> str | None:
        """Why no device set of the inventory can hold ``job`` even when idle, or None."""
        if self.choose(Request.of(job), {}) is not None:
            return None
        have = self.inventory.count(job.kind)
        where = f"the inventory ({self.inventory.summary()}, from {self.inventory.source})"
        if have == 0:
            return f"no {job.kind} in {where}"
        if have < job.count:
            return f"needs {job.count}x {job.kind}; {where} has {have}"
        if not self.windows(job.kind, job.count):
            return f"needs {job.count} adjacent {job.kind}; {where} has none adjacent"
        best = max(self.capacity(d) for d in self.inventory.devices if d.kind == job.kind)
        return f"needs {job.memory_gb:.1f} GiB on each {job.kind}; at most {best:.1f} GiB is usable there"

    def simulate(
        self, jobs: Sequence[Job], workers: int, ordered: bool = False
    ) -> tuple[list[Scheduled], list[tuple[Job, str]]]:
        """Run the policy on estimated durations: (scheduled jobs, unplaceable jobs with reasons).
        ``ordered``: take ``jobs`` in the order given instead of ``best_order``'s."""
        if workers < 1:
            raise QuantgateError(None, f"workers must be at least 1, got {workers}")
        skipped = [(job, reason) for job in jobs if (reason := self.unplaceable(job)) is not None]
        placeable = [job for job in jobs if self.unplaceable(job) is None]
        queue = list(placeable) if ordered else self.best_order(placeable, workers)
        idle = list(range(workers))
        waiting: list[tuple[int, Job]] = []
        running: list[Scheduled] = []
        done: list[Scheduled] = []
        now = 0.0
        while queue or waiting or running:
            for worker in sorted(idle):
                if not queue:
                    break
                waiting.append((worker, queue.pop(0)))
                idle.remove(worker)
            held = [Holding(s.devices, s.memory_gb, s.job.exclusive, s.end_s) for s in running]
            grants = self.grant([Request.of(job) for _, job in waiting], held, now)
            for position, devices in grants.items():
                worker, job = waiting[position]
                booked = self.booked(Request.of(job), devices)
                running.append(Scheduled(job, devices, worker, now, now + job.duration_s, booked))
            waiting = [w for position, w in enumerate(waiting) if position not in grants]
            if not running:
                raise RuntimeError("placement stalled with idle devices: a bug in LongestFirstPlacement")
            now = min(s.end_s for s in running)
            for finished in [s for s in running if s.end_s <= now]:
                running.remove(finished)
                done.append(finished)
                idle.append(finished.worker)
        return sorted(done, key=lambda s: (s.start_s, s.worker)), skipped


@dataclass(frozen=True)
class Scheduled:
    """A job placed on ``devices`` by ``worker`` from ``start_s`` to ``end_s`` (``memory_gb`` booked each)."""

    job: Job
    devices: tuple[int, ...]
    worker: int
    start_s: float
    end_s: float
    memory_gb: float


def _usage(holdings: Iterable[Holding]) -> dict[int, DeviceUse]:
    usage: dict[int, DeviceUse] = {}
    for h in holdings:
        _book(usage, h.devices, h.memory_gb, h.exclusive)
    return usage


# -- plan --------------------------------------------------------------------------------------------

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PlanEntry:
    node_id: str
    served_model: str
    devices: tuple[int, ...]
    worker: int
    start_s: float
    end_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "served_model": self.served_model,
            "devices": list(self.devices),
            "worker": self.worker,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
        }


@dataclass(frozen=True)
class Plan:
    """Which item runs where and when, if the estimates hold; and how good that is."""

    workers: int
    inventory: str
    scheduled: tuple[Scheduled, ...]
    entries: tuple[PlanEntry, ...]
    skipped: tuple[tuple[str, str, str], ...]
    makespan_s: float
    lower_bound_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "kind": "quantgate-plan",
            "workers": self.workers,
            "inventory": self.inventory,
            "entries": [e.as_dict() for e in self.entries],
            "skipped": [{"node_id": n, "served_model": s, "reason": r} for n, s, r in self.skipped],
            "makespan_s": round(self.makespan_s, 3),
            "lower_bound_s": round(self.lower_bound_s, 3),
        }

    def table(self) -> str:
        """The plan for people: one row per served model, in start order, and the totals."""
        rows: list[tuple[str, ...]] = [
            ("START", "END", "WORKER", "DEVICES", "SERVED MODEL", "ITEMS", "SHARE")
        ]
        for s in self.scheduled:
            rows.append(
                (
                    _hms(s.start_s),
                    _hms(s.end_s),
                    f"{s.worker}",
                    ",".join(str(i) for i in s.devices),
                    s.job.key,
                    str(len(s.job.tasks)),
                    "alone" if s.job.exclusive else f"{s.memory_gb:.1f} GiB",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        ratio = self.makespan_s / self.lower_bound_s if self.lower_bound_s else 1.0
        lines.append(
            f"plan for {self.workers} worker(s) on {self.inventory}: makespan {_hms(self.makespan_s)}, "
            f"lower bound {_hms(self.lower_bound_s)} ({ratio:.2f}x), {len(self.entries)} item(s) placed, "
            f"{len(self.skipped)} skipped"
        )
        reasons: dict[str, int] = {}
        for _, _, reason in self.skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"  skipped {n}: {reason}")
        return "\n".join(lines)


def lower_bound(jobs: Sequence[Job], policy: LongestFirstPlacement) -> float:
    """The largest of three bounds, the GPU-seconds counted per kind: the longest job; GPU-seconds /
    GPUs; and the GPU-seconds of the *large* jobs / GPUs.

    A shareable job counts ``memory_gb / capacity`` of each device it holds (two such jobs may share
    a GPU), an exclusive one all of it. Large jobs (exclusive ones, and shareable ones needing more
    than half a device's capacity) can never share a device with each other, so their GPU-seconds
    alone, each counted whole, are a second bound: without it, accuracy replicas of 37 GiB on a
    48 GiB A6000 would count as 0.85 of a GPU although no two ever fit on one. With one GPU kind
    these are textbook bounds; with several, each kind's jobs can only use that kind's GPUs, so the
    largest per-kind quotient is still a bound.
    """
    longest = max((j.duration_s for j in jobs), default=0.0)
    per_kind: dict[str, float] = {}
    large: dict[str, float] = {}
    for job in jobs:
        devices = [d for d in policy.inventory.devices if d.kind == job.kind]
        if not devices:
            continue
        capacity = max(policy.capacity(d) for d in devices)
        share = 1.0 if job.exclusive else min(1.0, job.memory_gb / capacity)
        per_kind[job.kind] = per_kind.get(job.kind, 0.0) + job.duration_s * job.count * share
        if job.exclusive or job.memory_gb > capacity / 2:
            large[job.kind] = large.get(job.kind, 0.0) + job.duration_s * job.count
    quotients = [total / policy.inventory.count(kind) for kind, total in [*per_kind.items(), *large.items()]]
    return max([longest, *quotients])


def make_plan(
    tasks: Sequence[Task],
    inventory: Inventory,
    workers: int,
    skipped: Sequence[tuple[str, str, str]] = (),
) -> Plan:
    """Plan ``tasks`` on ``inventory`` with ``workers`` pytest-xdist workers (1 without xdist).

    ``skipped`` lists items known not to run for other reasons, as (node id, served model, reason);
    they are reported beside the tasks no device set can hold.
    """
    policy = LongestFirstPlacement(inventory)
    jobs = build_jobs(tasks)
    scheduled, unplaceable = policy.simulate(jobs, workers)
    entries: list[PlanEntry] = []
    for s in scheduled:
        t = s.start_s + s.job.startup_s
        for task in s.job.tasks:
            entries.append(PlanEntry(task.node_id, s.job.key, s.devices, s.worker, t, t + task.seconds))
            t += task.seconds
    not_placed = tuple(skipped) + tuple((t.node_id, job.key, r) for job, r in unplaceable for t in job.tasks)
    placed = [s.job for s in scheduled]
    return Plan(
        workers=workers,
        inventory=inventory.summary(),
        scheduled=tuple(scheduled),
        entries=tuple(entries),
        skipped=not_placed,
        makespan_s=max((s.end_s for s in scheduled), default=0.0),
        lower_bound_s=lower_bound(placed, policy),
    )


def _hms(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def shard_of_groups(
    groups: Mapping[str, float], n: int, references: Collection[str] = frozenset()
) -> dict[str, int]:
    """Assign groups (key -> estimated GPU-seconds) to shards 1..n, longest first onto the lightest shard.

    Groups named in ``references`` (BF16 reference jobs) are a second stratum, balanced on its own
    after the first: where references pass on stored results the shards' planned time is the
    candidates' alone, and where they run it is both; balancing each stratum keeps both within a few
    per cent (one balance over the sum left the H100 shards' candidate time 8.3 h against 12.3 h).
    Within a stratum, ties between shards go to the lighter shard overall, then the lowest number.

    Deterministic and independent of the mapping's order: groups are taken by (-seconds, key).
    """
    if n < 1:
        raise QuantgateError(None, f"the number of shards must be at least 1, got {n}")
    total = [0.0] * n
    out: dict[str, int] = {}
    for stratum in (False, True):
        load = [0.0] * n
        members = [(k, v) for k, v in groups.items() if (k in references) == stratum]
        for key, seconds in sorted(members, key=lambda kv: (-kv[1], kv[0])):
            target = min(range(n), key=lambda i: (load[i], total[i], i))
            load[target] += seconds
            total[target] += seconds
            out[key] = target + 1
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); anything else is a ``QuantgateError``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise QuantgateError("--qg-shard", f"expected K/N such as 2/4, got {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= k <= n:
        raise QuantgateError("--qg-shard", f"K must be 1..N and N at least 1, got {text!r}")
    return k, n


def _book(usage: dict[int, DeviceUse], devices: Sequence[int], memory_gb: float, exclusive: bool) -> None:
    for index in devices:
        use = usage.setdefault(index, DeviceUse())
        use.used_gb += memory_gb
        use.holders += 1
        use.exclusive = use.exclusive or exclusive
