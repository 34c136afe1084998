"""How long the seed matrix takes under quantgate's placement, against the lower bound and xdist's own
policies; and how long pytest takes to collect the full matrix.

For 8x H100 and 4x A6000, every runnable cell of the matrix on that kind (6 models x 4 schemes x the
task benchmarks and the scenario x workload performance targets; cells skipped as "not the scheme's
compute path" or "not planned" (a server cell whose prefill alone exceeds the TTFT limit,
``quantgate.matrix.limit_problem``) left out) becomes a task with its estimated duration
(``quantgate.matrix.estimate_cell_seconds``: the published tables, else the catalog's model) and its
served model's start-up. Then:

* quantgate: ``make_plan`` with one xdist worker per GPU: jobs (served models, or replicas of the
  longest) longest or widest first, contiguous devices, first come first served with backfill;
* lower bound: ``quantgate.devices.placement.lower_bound`` (GPU-seconds / GPUs, those of jobs that
  cannot share a GPU / GPUs, the longest job);
* xdist ``load``: each worker owns a fixed slice of ``max TP`` GPUs (the only slice size on which every
  cell can run); cells go one by one, in collection order, to the worker that is free first; a worker
  pays a server start-up whenever its next cell belongs to another served model;
* xdist ``loadgroup``: the same fixed slices; whole served models go, in collection order, to the
  worker that is free first (no memory awareness, so no two servers ever share a slice).

Then each job of ``nightly.yml`` (kind, GPUs, shard: ``nightly_rotation.JOBS``) for the full sweep
(``budget: none``): its shard's planned makespan with the BF16 references reused (their cells run
nothing, the GPU kind file's ``reuse_reference``) and with every cell measured, and per kind the
spread between its shards (longest / shortest - 1). Shards are whole jobs: served models, or replicas
of those planned longer than ``quantgate.devices.replicas.REPLICA_LIMIT_S``.

Targets (exit 0 when met): quantgate's makespan <= 1.10 x the lower bound on both inventories; the
shards of one kind within 10 % of each other in planned time, both ways; and ``pytest --collect-only
-q`` of the full matrix (all GPU kinds, both cell kinds, 3,960 items) in <= 2 s wall time. Usage:
``python benchmarks/plan_makespan.py [--collect-runs N]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from plugins import PLANNING_PLUGINS  # noqa: E402
from quantgate.catalog import Catalog, load_catalog  # noqa: E402
from quantgate.devices.durations import Durations  # noqa: E402
from quantgate.devices.inventory import declared_inventory  # noqa: E402
from quantgate.devices.placement import Job, Task, build_jobs, make_plan  # noqa: E402
from quantgate.matrix import expand, is_reference, shard, task_for_cell  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from nightly_rotation import JOBS  # noqa: E402

TARGET_RATIO = 1.10
TARGET_SHARD_SPREAD = 0.10
TARGET_COLLECT_S = 2.0
INVENTORIES = (("h100", 8), ("a6000", 4))

TOY_SUITE = """
def test_accuracy(qg_accuracy_cell):
    pass


def test_performance(qg_performance_cell):
    pass
"""


def seed_tasks(catalog: Catalog, kind: str) -> list[Task]:
    """Tasks of every runnable cell on ``kind``, in collection order, with estimated durations."""
    empty = Durations()
    return [
        task_for_cell(catalog, cell, cell.cell_id, empty)
        for cell in expand(catalog)
        if cell.gpu == kind and cell.skip_reason is None
    ]


def fixed_slices_load(tasks: Sequence[Task], jobs: Sequence[Job], gpus: int) -> float:
    """xdist ``load`` on fixed slices: cell by cell to the first free worker, start-up on every switch."""
    width = max(j.count for j in jobs)
    startup = {j.key: j.startup_s for j in jobs}
    free_at = [0.0] * (gpus // width)
    loaded: list[str | None] = [None] * len(free_at)
    for task in tasks:
        worker = min(range(len(free_at)), key=lambda w: (free_at[w], w))
        if loaded[worker] != task.job:
            free_at[worker] += startup[task.job]
            loaded[worker] = task.job
        free_at[worker] += task.seconds
    return max(free_at)


def fixed_slices_loadgroup(jobs: Sequence[Job], gpus: int) -> float:
    """xdist ``loadgroup`` on fixed slices: served models in collection order to the first free worker."""
    width = max(j.count for j in jobs)
    free_at = [0.0] * (gpus // width)
    for job in jobs:
        worker = min(range(len(free_at)), key=lambda w: (free_at[w], w))
        free_at[worker] += job.duration_s
    return max(free_at)


def shard_hours(catalog: Catalog, kind: str, gpus: int, k: int, n: int, reuse: bool) -> float:
    """Planned makespan of shard ``k``/``n`` of ``kind``'s runnable cells on ``gpus`` GPUs."""
    runnable = [c for c in expand(catalog) if c.gpu == kind and c.skip_reason is None]
    mine = shard(runnable, k, n, catalog) if n > 1 else runnable
    tasks = [
        task_for_cell(catalog, c, c.cell_id, Durations())
        for c in mine
        if not (reuse and is_reference(catalog, c))
    ]
    inventory = declared_inventory(f"{kind}:{gpus}", catalog)
    return make_plan(tasks, inventory, workers=gpus).makespan_s / 3600


def print_shards(catalog: Catalog) -> bool:
    """The nightly's jobs for the full sweep, and whether each kind's shards are within the target."""
    print("nightly.yml jobs, full sweep (budget none): planned makespan per shard")
    print(f"{'job':<12} {'references reused':>18} {'every cell':>11}")
    per_kind: dict[str, list[tuple[float, float]]] = {}
    for kind, gpus, k, n in JOBS:
        reused = shard_hours(catalog, kind, gpus, k, n, reuse=True)
        every = shard_hours(catalog, kind, gpus, k, n, reuse=False)
        per_kind.setdefault(kind, []).append((reused, every))
        print(f"{kind}-{k}/{n:<6} {reused:>16.1f} h {every:>9.1f} h")
    ok = True
    for kind, rows in per_kind.items():
        if len(rows) < 2:
            continue
        spreads = [max(col) / min(col) - 1 for col in zip(*rows, strict=True)]
        ok &= max(spreads) <= TARGET_SHARD_SPREAD
        print(f"{kind}: shards differ by {spreads[0]:.1%} (references reused), {spreads[1]:.1%} (every cell)")
    print(f"target: the shards of one kind within {TARGET_SHARD_SPREAD:.0%} of each other")
    return ok


def hours(seconds: float) -> str:
    return f"{seconds / 3600:8.1f} h"


def collect_time(runs: int, extra: Sequence[str] = ()) -> tuple[float, float, int]:
    """(best wall seconds, best pytest-reported collection seconds, items) for the full matrix."""
    with tempfile.TemporaryDirectory(prefix="qg-collect-") as tmp:
        root = Path(tmp)
        (root / "conftest.py").write_text(f"pytest_plugins = {list(PLANNING_PLUGINS)!r}\n")
        (root / "test_matrix.py").write_text(TOY_SUITE)
        (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "--qg-gpus", "none", *extra]
        best_wall, best_reported, items = float("inf"), float("inf"), 0
        for _ in range(runs):
            start = time.perf_counter()
            done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
            match = re.search(r"(\d+) tests? collected in ([\d.]+)s", done.stdout)
            if done.returncode != 0 or match is None:
                raise SystemExit(
                    f"collection failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
                )
            items = int(match.group(1))
            best_wall = min(best_wall, wall)
            best_reported = min(best_reported, float(match.group(2)))
        return best_wall, best_reported, items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect-runs", type=int, default=3, help="collections to time (best is kept)")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    ok = True
    print("makespan of the seed matrix (estimated durations: published tables, else the catalog)")
    print(f"{'inventory':<10} {'jobs':>6} {'cells':>6} {'lower bound':>12} {'quantgate':>10} {'ratio':>6}"
          f" {'xdist load':>11} {'loadgroup':>10} {'slice':>6}")  # fmt: skip
    for kind, count in INVENTORIES:
        tasks = seed_tasks(catalog, kind)
        jobs = build_jobs(tasks)
        inventory = declared_inventory(f"{kind}:{count}", catalog)
        plan = make_plan(tasks, inventory, workers=count)
        ratio = plan.makespan_s / plan.lower_bound_s
        load = fixed_slices_load(tasks, jobs, count)
        group = fixed_slices_loadgroup(jobs, count)
        width = max(j.count for j in jobs)
        ok &= ratio <= TARGET_RATIO and not plan.skipped
        print(
            f"{kind}:{count:<5} {len(jobs):>6} {len(tasks):>6} {hours(plan.lower_bound_s):>12} "
            f"{hours(plan.makespan_s):>10} {ratio:>6.3f} {hours(load):>11} {hours(group):>10} "
            f"{count // width}x{width:<3}"
        )
    print(f"target: quantgate <= {TARGET_RATIO:.2f} x lower bound, nothing skipped")
    print()
    ok &= print_shards(catalog)
    print()
    wall, reported, items = collect_time(args.collect_runs)
    wall_lean, reported_lean, _ = collect_time(args.collect_runs, ["-p", "no:hypothesispytest"])
    print(f"collect the full matrix: pytest --collect-only -q, {items} items (best of {args.collect_runs})")
    print(f"  wall {wall:.2f} s, pytest's 'collected in' {reported:.2f} s   (all installed plugins)")
    print(
        f"  wall {wall_lean:.2f} s, pytest's 'collected in' {reported_lean:.2f} s   (-p no:hypothesispytest)"
    )
    print(f"target: collection <= {TARGET_COLLECT_S:.1f} s")
    ok &= reported <= TARGET_COLLECT_S and wall_lean <= TARGET_COLLECT_S
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
