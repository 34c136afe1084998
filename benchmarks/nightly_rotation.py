"""Nights under a job budget: which served models each job of ``nightly.yml`` runs, night after night.

Each job (kind, GPUs, shard as in ``.github/workflows/nightly.yml``) holds the runnable cells of its
shard, with catalog-estimated durations (``quantgate.matrix.estimate_cell_seconds``). Every night the
job orders its served models as ``--qg-history`` does (never verdicted first, then the oldest verdict,
placement's longest-first within a tie) and starts cells in that order until one does not fit in the
night's GPU-seconds (budget x GPUs x packing); that one and the rest are deferred (``--qg-budget``).
Printed per job: the full sweep's planned hours, the nights until every cell has a verdict, whether
that meets the gate's 7-day limit (a deferred cell is red once its last verdict is older), and the
cells longer than the budget by themselves. Per kind: GPU-hours a week, rotation against the full sweep
every night.

Target (exit 0 when met): every cell verdicted within 7 nights (a cell longer than the budget never
is: it is deferred every night and named). Usage: ``python benchmarks/nightly_rotation.py
[--budget-hours 8]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from quantgate.catalog import Catalog, load_catalog  # noqa: E402
from quantgate.devices.durations import Durations  # noqa: E402
from quantgate.devices.inventory import declared_inventory  # noqa: E402
from quantgate.devices.placement import (  # noqa: E402
    Job,
    LongestFirstPlacement,
    Task,
    build_jobs,
    make_plan,
    shard_of_groups,
)
from quantgate.matrix import expand, task_for_cell  # noqa: E402

JOBS = (("h100", 8, 1, 2), ("h100", 8, 2, 2), ("a100", 8, 1, 1), ("a6000", 4, 1, 1))
MAX_AGE_NIGHTS = 7
NIGHTS = 28
# A night's GPU-seconds that placement fills: make_plan's makespan is within 1.02-1.09x of its lower
# bound (benchmarks/plan_makespan.py).
PACKING = 0.92


def shard_tasks(catalog: Catalog, kind: str, shard: int, shards: int) -> list[Task]:
    tasks = [
        task_for_cell(catalog, cell, cell.cell_id, Durations())
        for cell in expand(catalog)
        if cell.gpu == kind and cell.skip_reason is None
    ]
    groups: dict[str, float] = {}
    for task in tasks:
        groups[task.job] = groups.get(task.job, 0.0) + task.estimate_s
    home = shard_of_groups(groups, shards)
    return [t for t in tasks if home[t.job] == shard]


def night(jobs: Sequence[Job], last: dict[str, int], gpus: int, budget_s: float) -> tuple[list[Task], float]:
    """Cells one budgeted night runs, and their GPU-seconds: served models stalest first (a served
    model is as stale as its stalest cell that fits the budget, as in ``plugins.history``), their
    cells stalest first, until one does not fit in what is left of the night's GPU-seconds (then none
    after it starts: ``quantgate.jobbudget``); the night's first cell always fits its wall clock."""

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
    args = parser.parse_args(argv)
    budget_s = args.budget_hours * 3600
    catalog = load_catalog()
    ok = True
    weekly: dict[str, tuple[float, float]] = {}
    print(f"nightly.yml jobs under a {args.budget_hours:g} h budget (catalog-estimated durations)")
    print(f"{'job':<12} {'cells':>6} {'full sweep':>11} {'nights to cover':>16} {'<= 7':>5} {'> budget':>9}")
    for kind, gpus, shard, shards in JOBS:
        tasks = shard_tasks(catalog, kind, shard, shards)
        jobs = build_jobs(tasks)
        inventory = declared_inventory(f"{kind}:{gpus}", catalog)
        full = make_plan(tasks, inventory, workers=gpus).makespan_s
        last: dict[str, int] = {}
        covered_at: int | None = None
        gpu_seconds_week = 0.0
        too_long = [t for t in tasks if (t.seconds + t.startup_s) > budget_s]
        for n in range(NIGHTS):
            chosen, used = night(jobs, last, gpus, budget_s)
            if n < 7:
                gpu_seconds_week += used
            for task in chosen:
                last[task.node_id] = n
            if covered_at is None and len(last) == len(tasks) - len(too_long):
                covered_at = n + 1
        within = covered_at is not None and covered_at <= MAX_AGE_NIGHTS
        ok &= within and not too_long
        for task in too_long:
            print(
                f"  longer than the budget: {task.node_id} ({(task.seconds + task.startup_s) / 3600:.1f} h)"
            )
        fits = len(tasks) - len(too_long)
        nights = str(covered_at) if covered_at is not None else f"never ({len(last)}/{fits})"
        print(
            f"{kind}-{shard}/{shards:<6} {len(tasks):>6} {full / 3600:>9.1f} h {nights:>16} "
            f"{'yes' if within else 'no':>5} {len(too_long):>9}"
        )
        sweep_week = 7 * sum(j.duration_s * j.count for j in jobs)
        before, after = weekly.get(kind, (0.0, 0.0))
        weekly[kind] = (before + sweep_week, after + gpu_seconds_week)
    print()
    print(f"{'kind':<8} {'GPU-hours a week: full sweep nightly':>38} {'under rotation':>15}")
    for kind, (sweep, rotation) in weekly.items():
        print(f"{kind:<8} {sweep / 3600:>38.0f} {rotation / 3600:>15.0f}")
    print(f"target: every cell that fits the budget verdicted within {MAX_AGE_NIGHTS} nights")
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
