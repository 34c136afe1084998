"""A job budget on the cpu kind: the real pipeline runs what fits, defers the rest, and the gate reads it.

One run of ``pytest suites -m cpu`` on the tiny Llama's BF16 GPQA-Diamond and speed cells with
``--qg-budget 150s`` and learned durations that say its single-stream speed cell takes 140 s: the accuracy
cell (100 s expected with the server's start-up) runs; the speed cell no longer fits once the accuracy cell
has taken its time, so it and the speed cells after it are deferred before any bench starts. Its other
accuracy cells are left out: whether they fit depends on the host's pace, and so would which cell is the
first deferred. Checked: the run is green, the coverage file is complete and says which cells were deferred
and why, the lane report lists them, and the gate is red on them without a history and green with a recent
green verdict for each.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lane_run import REPO, copy_lane_project, envs_or_skip, run_lane

from quantgate.gate import decide
from quantgate.verdicts import Outcome, updated

pytestmark = pytest.mark.slow


def test_a_budgeted_cpu_job_defers_what_does_not_fit_and_the_gate_reads_its_coverage(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    envs = envs_or_skip()
    copy_lane_project(pytester, "slow_host")
    durations = {
        "schema_version": 1,
        "kind": "quantgate-durations",
        "cells": {"tiny-llama-bf16-cpu-single-stream": 140.0},
        "served_models": {"tiny-llama/bf16": 40.0},
    }
    (pytester.path / ".quantgate").mkdir()
    (pytester.path / ".quantgate" / "durations.json").write_text(json.dumps(durations))
    coverage = tmp_path / "coverage.json"
    run = run_lane(
        pytester,
        "slow_host",
        "tiny-llama-bf16 and not arc_challenge and not gsm8k",
        REPO / "suites" / "kinds" / "cpu.yaml",
        envs,
        tmp_path,
        900,
        extra=("--qg-budget", "150s", f"--qg-coverage={coverage}"),
    )
    assert run.result.ret == pytest.ExitCode.OK, run.result.stdout.str()[-4000:]
    doc = json.loads(coverage.read_text())
    assert doc["complete"] is True
    rows = [c for c in doc["cells"] if c["status"] != "deselected"]
    status = {c["cell_id"]: c["status"] for c in rows}
    assert status["tiny-llama-bf16-cpu-gpqa_diamond"] in ("passed", "xfailed"), status
    judged = {c["cell_id"]: c.get("verdict") for c in rows if "test_accuracy" in c["node_id"]}
    assert judged["tiny-llama-bf16-cpu-gpqa_diamond"] in ("pass", "inconclusive", "fail"), judged
    speed = sorted(c for c in status if "stream" in c or c.endswith("-server"))
    assert {status[c] for c in speed} == {"deferred"}, status
    reasons = [c["reason"] for c in rows if c["status"] == "deferred"]
    assert sum(r.startswith("needs ~140 s") for r in reasons) == 1, reasons
    assert all(c["inputs"]["device"] == "cpu" for c in rows)
    deferred = {t: o for t, o in run.outcomes.items() if o[0] == "deferred"}
    assert len(deferred) == len(speed), run.outcomes

    cells = sorted(status)
    red = decide([coverage], cells, known=cells)
    assert not red.passed
    assert len(red.problems) == len(speed), red.problems
    now = datetime.now(UTC)
    history = updated(
        {},
        [Outcome(c["node_id"], c["cell_id"], "passed", "", c["inputs"]) for c in rows],
        now - timedelta(days=1),
    )
    green = decide([coverage], cells, known=cells, history=history, now=now)
    assert green.passed, green.summary()
    assert len(green.notes) == len(speed)
