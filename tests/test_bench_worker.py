"""The long-lived bench worker, with a stand-in for ``bench_serve.py --serve`` (named as such).

The stand-in speaks the worker protocol (plan path and done file on stdin) and, instead of loading a
server, copies the recorded real ``vllm bench serve`` results of ``tests/data/bench`` to where each
run of the plan asks for its result; modes make it fail a run, die or hang.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from quantgate.runners import bench as bench_module
from quantgate.runners.bench import BenchWorker, multi_stream, single_stream
from quantgate.runners.process import ToolError

RECORDED = Path(__file__).parent / "data" / "bench"

STAND_IN = """
import json, os, shutil, sys, time
mode = os.environ["STAND_IN_MODE"]
for line in sys.stdin:
    job = json.loads(line)
    plan = json.load(open(job["plan"]))
    code = 0
    for run in plan["runs"]:
        args = run["args"]
        target = os.path.join(args[args.index("--result-dir") + 1], args[args.index("--result-filename") + 1])
        if mode == "die":
            sys.exit(4)
        if mode == "hang":
            time.sleep(60)
        if mode == "fail":
            print(json.dumps({"qg_bench_run": run["name"], "status": "error", "error": "RuntimeError: boom"}))
            code = 1
            break
        shutil.copy(os.path.join(os.environ["RECORDED"], run["name"] + ".json"), target)
        print(json.dumps({"qg_bench_run": run["name"], "status": "ok", "result": target, "seconds": 0.5}))
    sys.stdout.flush()
    with open(job["done"] + ".tmp", "w") as handle:
        json.dump({"code": code, "seconds": 0.1}, handle)
    os.replace(job["done"] + ".tmp", job["done"])
"""


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BenchWorker:
    script = tmp_path / "stand_in_bench_serve.py"
    script.write_text(textwrap.dedent(STAND_IN))
    monkeypatch.setattr(bench_module, "DRIVER", script)
    env = {**os.environ, "STAND_IN_MODE": "ok", "RECORDED": str(RECORDED)}
    return BenchWorker(Path(sys.executable), tmp_path / "logs", env)


def _runs(repeat: int) -> list[bench_module.BenchRun]:
    return [single_stream(repeat=repeat), multi_stream(repeat=repeat)]


def test_one_worker_runs_a_plan_per_server(worker: BenchWorker, tmp_path: Path) -> None:
    try:
        first = worker.run("http://127.0.0.1:9", "a", Path("tok"), _runs(0), tmp_path / "a")
        pid = worker.process.pid if worker.process else None
        second = worker.run("http://127.0.0.1:9", "b", Path("tok"), _runs(1), tmp_path / "b")
        assert worker.process is not None
        assert worker.process.pid == pid, "the second plan reused the worker"
    finally:
        worker.stop()
    assert [r.run.name for r in first] == ["single-stream.random-64x32.r0", "multi-stream.random-64x32.r0"]
    assert all(r.latencies_s for r in first + second)
    assert first[0].run_s == 0.5
    assert (tmp_path / "a" / "single-stream.random-64x32.r0.json").is_file()


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", "run 'single-stream.random-64x32.r0' failed: RuntimeError: boom"),
        ("die", "exited with status 4"),
        ("hang", "timed out after 2 s"),
    ],
)
def test_a_failed_plan_is_a_tool_error_and_no_process_is_left(
    worker: BenchWorker, tmp_path: Path, mode: str, message: str
) -> None:
    assert worker.env is not None
    worker.env["STAND_IN_MODE"] = mode
    worker.start()
    assert worker.process is not None
    pid = worker.process.pid
    try:
        with pytest.raises(ToolError, match=message):
            worker.run("http://127.0.0.1:9", "a", Path("tok"), _runs(0), tmp_path / "a", timeout=2.0)
    finally:
        worker.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
