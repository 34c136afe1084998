"""Print the CPU lane's cost: wall time, peak memory, where the time goes, and the bench overhead.

    python benchmarks/lane_timing.py [--envs DIR]              # the whole lane, from an empty work dir
    python benchmarks/lane_timing.py overhead [--repeats N]    # quantgate's bench vs vllm bench by hand

Targets (issue 3): the lane end to end (2 tiny models x 4 schemes) within 10 minutes on 2 cores with
peak memory within 8 GB; each (model, scheme) server started once; the suite's overhead over running
the same ``vllm bench serve`` runs by hand within 5 %.

``lane`` runs ``pytest suites -m cpu`` in a fresh work directory (so quantization is included), samples
the resident memory of the whole process tree (tools start their own sessions, so descendants are
found by parent id) every half second, then reads the lane's ``cells.json``. ``overhead`` serves the
tiny Llama once and alternates the lane's bench plan through ``quantgate.runners.bench.bench`` (one
driver process) with the same runs typed by hand (one ``vllm bench serve`` process each).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_rss_mib(root_pid: int) -> float:
    tree, total, todo = _children(), 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    return total / 1024


def lane(envs: str | None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from quantgate.report import read_results

    with tempfile.TemporaryDirectory(prefix="qg-lane-timing-") as scratch:
        report = Path(scratch) / "report"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "suites",
            "-m",
            "cpu",
            "-q",
            "-p",
            "no:randomly",
            "--qg-inconclusive",
            "xfail",
            f"--qg-lane-work={scratch}/work",
            f"--qg-report={report}",
        ] + ([f"--qg-envs={envs}"] if envs else [])
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        peak = [0.0]

        def sample() -> None:
            while process.poll() is None:
                peak[0] = max(peak[0], tree_rss_mib(process.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = process.communicate()
        wall = time.monotonic() - started
        sampler.join()
        print(output.strip().splitlines()[-1])
        cells = json.loads((report / "cells.json").read_text())
    results = read_results(cells, str(report / "cells.json"))
    quantize = [r.seconds for r in results if r.kind == "quantize" and r.seconds]
    evaluate = [r.seconds or 0.0 for r in results if r.kind == "accuracy"]
    starts = cells["server_start_s"]
    print(f"lane wall: {wall:.0f} s (target <= 600 s); pytest exit {process.returncode}")
    print(f"peak memory of the process tree (RSS): {peak[0] / 1024:.2f} GiB (target <= 8 GiB)")
    print(f"quantization: {len(quantize)} checkpoints, {sum(quantize):.0f} s in the background")
    print(
        f"server starts: {sum(len(s) for s in starts.values())} for {len(starts)} cells, "
        f"{sum(sum(s) for s in starts.values()):.0f} s; most starts of one cell: "
        f"{max(len(s) for s in starts.values())} (target 1)"
    )
    print(f"accuracy evaluation (lighteval jobs): {sum(evaluate):.0f} s")
    print(
        "outcomes: "
        + json.dumps(
            dict(
                sorted(
                    {
                        o: sum(1 for v in cells["outcomes"].values() if v["outcome"] == o)
                        for o in {v["outcome"] for v in cells["outcomes"].values()}
                    }.items()
                )
            )
        )
    )
    return process.returncode


def overhead(envs: str | None, repeats: int) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from quantgate.envs import Envs
    from quantgate.kinds import load_kind
    from quantgate.pipeline import Pipeline, local_cells
    from quantgate.runners.bench import DRIVER, bench, serve_args

    spec = load_kind()
    env_dir = Envs(Path(envs)) if envs else Envs.from_environment(ROOT)
    with tempfile.TemporaryDirectory(prefix="qg-overhead-") as scratch:
        work = Path(scratch)
        lane = Pipeline(spec, env_dir, work)
        cell = next(c for c in local_cells(spec) if c.kind == "performance")
        checkpoint = lane.checkpoint(cell)
        served_name = lane.served_name(cell)
        python = env_dir.python("vllm")
        tool_env = {**os.environ, **lane.tool_env()}
        plan, by_hand = [], []
        with lane.server(cell) as server:

            def bench_plan(out: Path) -> None:
                """The lane's bench plan through quantgate's one driver process, its results in ``out``."""
                bench(
                    python,
                    server.base_url,
                    served_name,
                    checkpoint.path,
                    lane.bench_runs(cell),
                    out,
                    work,
                    600,
                    tool_env,
                )

            bench_plan(work / "warm")
            for repeat in range(repeats):
                for how in ("plan", "by hand") if repeat % 2 == 0 else ("by hand", "plan"):
                    out = work / f"{repeat}-{how.replace(' ', '-')}"
                    started = time.monotonic()
                    if how == "plan":
                        bench_plan(out)
                        plan.append(time.monotonic() - started)
                    else:
                        for run in lane.bench_runs(cell):
                            args = serve_args(run, server.base_url, served_name, checkpoint.path, out)
                            subprocess.run(
                                [str(python), str(DRIVER), *args],
                                check=True,
                                env=tool_env,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                            )
                        by_hand.append(time.monotonic() - started)
    runs = len(lane.bench_runs(cell))
    print(f"{runs} bench runs per plan, {repeats} alternations, tiny Llama BF16 served once")
    print(
        f"quantgate bench (one driver): median {statistics.median(plan):.1f} s  {[round(p, 1) for p in plan]}"
    )
    print(
        f"by hand ({runs} processes):    median {statistics.median(by_hand):.1f} s  "
        f"{[round(b, 1) for b in by_hand]}"
    )
    change = statistics.median(plan) / statistics.median(by_hand) - 1
    print(f"overhead of the suite over by hand: {change:+.0%} (target <= +5 %)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="?", choices=("lane", "overhead"), default="lane")
    parser.add_argument("--envs", default=None, help="tool environments (default $QG_ENVS or .envs)")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    return lane(args.envs) if args.what == "lane" else overhead(args.envs, args.repeats)


if __name__ == "__main__":
    raise SystemExit(main())
