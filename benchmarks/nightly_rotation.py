"""Nights under a job budget: which cells each job of ``nightly.yml`` runs, night after night.

Each job (kind, GPUs, shard as in ``.github/workflows/nightly.yml``) holds the runnable cells of its
shard (not those skipped: a scheme off its compute path, or a server cell not planned because its
prefill alone exceeds the TTFT limit, ``quantgate.matrix.limit_problem``), with estimated durations
(``quantgate.matrix.estimate_cell_seconds``: the published tables, else the catalog's model; sampled
cells at the judge's first looks; an accuracy cell too long or too costly on its served model's GPUs
served by a wider accuracy-only replica, ``quantgate.matrix.widened``).
BF16 cells pass on their stored references while the inputs hold (the GPU kind file's
``reuse_reference``), so they take no GPU time. Every night the job skips the cells verified in the
last ``--fresh-nights`` (``--qg-fresh``, 6 in the workflow), orders the rest as ``--qg-history`` does
(never verdicted first, then the oldest verdict, placement's longest-first within a tie) and starts
cells in that order until one does not fit in the night's GPU-seconds (budget x GPUs x packing); that
one and the rest are deferred (``--qg-budget``).

Printed per job: its cells and those of its kind not planned, the full sweep's planned hours, the
longest night, the nights until every cell has a verdict and whether that meets the gate's 7-day
limit, and the cells longer than the budget by themselves. Per kind: GPU-hours of one full sweep
before the cheaper first looks, reused references and wider replicas (with those of issue 13: H100
516 h), of one sweep now, and of a week under rotation (mean of weeks 2-4).

Targets (exit 0 when met): every cell verdicted within 7 nights (a cell longer than the budget never
is: it is deferred every night and named), no night over the budget, and a week's GPU-hours at most
half of a full sweep before. Usage: ``python benchmarks/nightly_rotation.py [--budget-hours 8]
[--fresh-nights 6]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from quantgate import matrix, paths  # noqa: E402
from quantgate.catalog import Catalog, load_catalog  # noqa: E402
from quantgate.devices.durations import Durations  # noqa: E402
from quantgate.devices.inventory import declared_inventory  # noqa: E402
from quantgate.devices.placement import (  # noqa: E402
    Job,
    LongestFirstPlacement,
    Task,
    build_jobs,
    make_plan,
)
from quantgate.kinds import load_kind  # noqa: E402
from quantgate.matrix import expand, task_for_cell  # noqa: E402

JOBS = (("h100", 8, 1, 2), ("h100", 8, 2, 2), ("a100", 8, 1, 1), ("a6000", 4, 1, 1))
MAX_AGE_NIGHTS = 7
NIGHTS = 28
# --qg-fresh in nightly.yml: a cell verified green on unchanged inputs within 6 nights is not re-run.
FRESH_NIGHTS = 6
# A night's GPU-seconds that placement fills: make_plan's makespan is within 1.02-1.09x of its lower
# bound (benchmarks/plan_makespan.py).
PACKING = 0.92


def shard_tasks(catalog: Catalog, kind: str, shard: int, shards: int, before: bool = False) -> list[Task]:
    """The shard's tasks; ``before``: with the estimates before the judge's first looks (every sampled
    cell at the catalog's samples per item) and before wider accuracy-only replicas (every cell on its
    served model's GPUs), for the GPU-hours they save."""
    saved = matrix.planned_samples
    if before:
        matrix.planned_samples = lambda items, most, *_: float(most)  # type: ignore[assignment]
    try:
        runnable = [c for c in expand(catalog) if c.gpu == kind and c.skip_reason is None]
        mine = matrix.shard(runnable, shard, shards, catalog) if shards > 1 else runnable
        if before:
            served = matrix.served_models(catalog)
            mine = [
                replace(c, requirement=served[(c.model, c.scheme, c.gpu)].requirement, replica_tp=None)
                for c in mine
            ]
        return [task_for_cell(catalog, cell, cell.cell_id, Durations()) for cell in mine]
    finally:
        matrix.planned_samples = saved


def night(
    jobs: Sequence[Job], last: dict[str, int], gpus: int, budget_s: float, tonight: int = 0, fresh: int = 0
) -> tuple[list[Task], float]:
    """Cells one budgeted night runs, and their GPU-seconds: served models stalest first (a served
    model is as stale as its stalest cell that fits the budget, as in ``plugins.history``), their
    cells stalest first, until one does not fit in what is left of the night's GPU-seconds (then none
    after it starts: ``quantgate.jobbudget``); the night's first cell always fits its wall clock. Cells
    verified within the last ``fresh`` nights are not run (``--qg-fresh``)."""

    def stalest(job: Job) -> int:
        fitting = [t for t in job.tasks if t.seconds + t.startup_s <= budget_s]
        return min((last.get(t.node_id, -1) for t in fitting), default=NIGHTS)

    ordered = sorted(LongestFirstPlacement.order(jobs), key=stalest)
    capacity = budget_s * gpus * PACKING
    used = 0.0
    chosen: list[Task] = []
    for job in ordered:
        started = False
        for task in sorted(job.tasks, key=lambda t: last.get(t.node_id, -1)):
            if fresh and tonight - last.get(task.node_id, -fresh - 1) < fresh:
                continue
            wall = task.seconds + (0.0 if started else job.startup_s)
            if wall > budget_s:
                continue
            need = wall * job.count
            if used + need > capacity and chosen:
                return chosen, used
            used += need
            started = True
            chosen.append(task)
    return chosen, used


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-hours", type=float, default=8.0)
    parser.add_argument("--fresh-nights", type=int, default=FRESH_NIGHTS, help="--qg-fresh; 0: off")
    args = parser.parse_args(argv)
    budget_s = args.budget_hours * 3600
    catalog = load_catalog()
    reuse = load_kind(paths.kind_file("gpu")).accuracy.reuse_reference
    ok = True
    weekly: dict[str, tuple[float, float, float]] = {}
    print(
        f"nightly.yml jobs under a {args.budget_hours:g} h budget, --qg-fresh {args.fresh_nights or 'off'} "
        f"(estimated durations; BF16 cells {'pass on stored references' if reuse else 'run'})"
    )
    print(
        f"{'job':<12} {'cells':>6} {'not planned':>12} {'full sweep':>11} {'longest night':>14} "
        f"{'nights to cover':>16} {'<= 7':>5} {'> budget':>9}"
    )
    unplanned = Counter(
        c.gpu for c in expand(catalog) if c.skip_reason and c.skip_reason.startswith(matrix.NOT_PLANNED)
    )
    for kind, gpus, shard, shards in JOBS:
        every = shard_tasks(catalog, kind, shard, shards)
        tasks = [t for t in every if not (reuse and "-bf16-" in t.node_id)]
        jobs = build_jobs(tasks)
        inventory = declared_inventory(f"{kind}:{gpus}", catalog)
        full = make_plan(tasks, inventory, workers=gpus).makespan_s
        last: dict[str, int] = {}
        covered_at: int | None = None
        gpu_seconds_week = 0.0
        longest = 0.0
        too_long = [t for t in tasks if (t.seconds + t.startup_s) > budget_s]
        for n in range(NIGHTS):
            chosen, used = night(jobs, last, gpus, budget_s, n, args.fresh_nights)
            longest = max(longest, used / gpus / PACKING)
            if n >= NIGHTS - 21:
                gpu_seconds_week += used / 3
            for task in chosen:
                last[task.node_id] = n
            if covered_at is None and len(last) == len(tasks) - len(too_long):
                covered_at = n + 1
        within = covered_at is not None and covered_at <= MAX_AGE_NIGHTS
        ok &= within and not too_long and longest <= budget_s
        for task in too_long:
            print(
                f"  longer than the budget: {task.node_id} ({(task.seconds + task.startup_s) / 3600:.1f} h)"
            )
        fits = len(tasks) - len(too_long)
        nights = str(covered_at) if covered_at is not None else f"never ({len(last)}/{fits})"
        print(
            f"{kind}-{shard}/{shards:<6} {len(tasks):>6} {unplanned[kind]:>12} {full / 3600:>9.1f} h "
            f"{longest / 3600:>12.1f} h {nights:>16} {'yes' if within else 'no':>5} {len(too_long):>9}"
        )
        sweep = sum(t.seconds * t.count for t in every)
        before_sweep = sum(
            t.seconds * t.count for t in shard_tasks(catalog, kind, shard, shards, before=True)
        )
        old, now, after = weekly.get(kind, (0.0, 0.0, 0.0))
        weekly[kind] = (old + before_sweep, now + sweep, after + gpu_seconds_week)
    print()
    print(f"{'kind':<8} {'a full sweep before':>20} {'now':>8} {'a week under rotation':>22} {'at most':>8}")
    for kind, (old, sweep, rotation) in weekly.items():
        limit = old / 3600 / 2
        ok &= rotation / 3600 <= limit
        hours = f"{old / 3600:>18.0f} h {sweep / 3600:>6.0f} h {rotation / 3600:>20.0f} h"
        print(f"{kind:<8} {hours} {limit:>6.0f} h")
    print(
        f"targets: every cell that fits the budget verdicted within {MAX_AGE_NIGHTS} nights, no night over "
        "the budget, a week's GPU-hours (mean of weeks 2-4) at most half of a full sweep before the cheaper "
        "first looks, reused BF16 references and wider replicas (issue 13 measured H100 at 516 h)"
    )
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
