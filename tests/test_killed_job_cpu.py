"""A real cpu-kind job killed mid-run leaves the verdicts it finished, and the gate names the rest.

``pytest suites -m cpu`` on tiny-llama's BF16 cells, SIGKILLed (``tests/kill_at.py``) as its second
speed test starts, with its server, lighteval and bench workers running. The coverage file, rewritten
after every cell, says the job did not finish, holds the verdicts of the cells that ended, and
``quantgate gate`` fails on it, naming the file as unfinished and every cell that did not run. The
run's tools do not outlive it (the watchdog of ``quantgate.runners.process`` ends their groups).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from lane_run import REPO, prepare_lane, processes_with, run_lane

from quantgate.gate import decide

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real-tools")]


def test_a_killed_cpu_job_leaves_its_finished_verdicts_and_the_gate_names_the_rest(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    envs, marker = prepare_lane(
        pytester, monkeypatch, "kill_at", QG_KILL_AT="test_speed[", QG_KILL_AT_NTH="2"
    )
    # Goodput limits and cell budgets no loaded machine misses: the cells that end must end green
    # beside the other tests of `./run tests -n 2` (as in tests/test_lane_faults.py).
    kind = yaml.safe_load((REPO / "suites" / "kinds" / "cpu.yaml").read_text())
    kind["budget"].update(accuracy_s=100000, speed_s=100000)
    kind["speed"]["scenarios"]["server"]["goodput"] = {"ttft_ms": 60000, "tpot_ms": 10000}
    lane_file = tmp_path / "lane.yaml"
    lane_file.write_text(yaml.safe_dump(kind))
    run = run_lane(pytester, "kill_at", "tiny-llama-bf16", lane_file, envs, tmp_path, 900)
    assert run.result.ret == -9, run.result.stdout.str()[-3000:]
    assert not (tmp_path / "report" / "cells.json").exists(), "a killed job writes no report"

    coverage_file = pytester.path / ".quantgate" / "coverage.json"
    coverage = json.loads(coverage_file.read_text())
    assert coverage["complete"] is False
    selected = [c for c in coverage["cells"] if c["status"] != "deselected"]
    by_test = {c["node_id"].split("::", 1)[1]: c for c in selected}
    benchmarks = kind["models"]["tiny-llama"]["benchmarks"]
    assert len(by_test) == 2 * len(benchmarks) + 3, sorted(by_test)
    finished = {t: c["status"] for t, c in by_test.items() if c["status"] != "collected"}
    for benchmark in benchmarks:
        assert finished.pop(f"test_accuracy[tiny-llama-bf16-cpu-{benchmark}]") == "passed"
        assert finished.pop(f"test_output_length[tiny-llama-bf16-cpu-{benchmark}]") == "passed"
        assert by_test[f"test_accuracy[tiny-llama-bf16-cpu-{benchmark}]"]["verdict"] == "pass"
    assert list(finished.values()) == ["passed"], f"one speed cell ended before the kill: {finished}"

    verdict = decide([coverage_file], {c["cell_id"] for c in selected})
    assert not verdict.passed
    assert verdict.problems[0] == "coverage.json: written by a job that did not finish (killed or crashed)"
    not_run = list(verdict.problems[1:])
    assert len(not_run) == 2, verdict.problems
    unfinished = [t for t, c in by_test.items() if c["status"] == "collected"]
    assert all(any(t.split("[")[1].rstrip("]") in p for p in not_run) for t in unfinished), not_run

    deadline = time.monotonic() + 60
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(1)
    assert not processes_with(marker), processes_with(marker)
