"""The nightly gate over coverage files: green only when every expected cell ran green somewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgate.cli import main
from quantgate.errors import QuantgateError
from quantgate.gate import decide


def coverage_file(path: Path, cells: list[dict[str, object]]) -> Path:
    """A coverage file (schema version 1) holding these cell rows."""
    path.write_text(json.dumps({"schema_version": 1, "kind": "quantgate-coverage", "cells": cells}))
    return path


def coverage(path: Path, cells: dict[str, str], reason: str = "") -> Path:
    return coverage_file(
        path, [{"cell_id": c, "status": s, "reason": reason or None} for c, s in cells.items()]
    )


def test_two_shards_that_ran_every_cell_green_pass(tmp_path: Path) -> None:
    one = coverage(tmp_path / "1.json", {"a": "passed", "b": "deselected"})
    two = coverage(tmp_path / "2.json", {"b": "xfailed", "a": "deselected"})
    result = decide([one, two], ["a", "b"])
    assert result.passed, result.summary()
    assert result.counts == {"passed": 1, "xfailed": 1}


@pytest.mark.parametrize(
    ("cells", "problem"),
    [
        pytest.param({"a": "failed", "b": "passed"}, "a: failed", id="failed"),
        pytest.param({"a": "error", "b": "passed"}, "a: error", id="error"),
        pytest.param({"a": "passed"}, "b: not covered (absent: in no coverage file)", id="absent"),
        pytest.param({"a": "passed", "b": "skipped"}, "b: not covered (skipped: no h100", id="skipped"),
        pytest.param({"a": "passed", "b": "deselected"}, "b: not covered (absent", id="deselected-only"),
    ],
)
def test_a_failed_or_uncovered_cell_fails_the_gate(
    tmp_path: Path, cells: dict[str, str], problem: str
) -> None:
    result = decide([coverage(tmp_path / "c.json", cells, reason="no h100 in the inventory")], ["a", "b"])
    assert not result.passed
    assert any(p.startswith(problem) for p in result.problems), result.problems


def test_a_cell_the_matrix_does_not_have_fails_the_gate(tmp_path: Path) -> None:
    ran = coverage(tmp_path / "c.json", {"a": "passed", "Qwen-7B-fp9-w8a8-h100-aime24": "passed"})
    result = decide([ran], ["a"], known=["a", "b"])
    assert not result.passed
    assert result.problems == ("Qwen-7B-fp9-w8a8-h100-aime24: unknown cell (not in the matrix) [c.json]",)
    assert decide([coverage(tmp_path / "d.json", {"a": "passed"})], ["a"], known=["a", "b"]).passed


def test_two_outcomes_for_one_cell_fail_the_gate(tmp_path: Path) -> None:
    one = coverage(tmp_path / "1.json", {"a": "passed"})
    two = coverage(tmp_path / "2.json", {"a": "skipped"})
    result = decide([one, two], ["a"])
    assert not result.passed
    assert "a: passed in" in result.summary()


def test_bad_input_names_the_file_and_no_file_is_no_pass(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 2, "kind": "quantgate-coverage", "cells": []}))
    with pytest.raises(QuantgateError, match=r"bad.json: schema_version: version 2 is not supported"):
        decide([bad], [])
    with pytest.raises(QuantgateError, match="fail closed"):
        decide([], [])


def test_the_gate_command_expects_every_runnable_cell_of_the_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quantgate.matrix import expand

    cells = {c.cell_id: "passed" for c in expand() if c.gpu == "h100" and c.skip_reason is None}
    path = coverage(tmp_path / "h100.json", cells)
    assert main(["gate", str(path), "--kinds", "h100"]) == 0
    assert main(["gate", str(path), "--kinds", "h100,a100"]) == 1
    assert "not covered" in capsys.readouterr().out


def test_the_gate_command_does_not_expect_cells_the_matrix_does_not_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A6000's server cells whose prefill alone exceeds the TTFT limit (quantgate.matrix.limit_problem)
    are skipped as not planned: the night passes without them, and the gate's notes count them."""
    from quantgate.matrix import NOT_PLANNED, expand

    a6000 = [c for c in expand() if c.gpu == "a6000"]
    unplanned = {
        c.cell_id: c.skip_reason for c in a6000 if c.skip_reason and c.skip_reason.startswith(NOT_PLANNED)
    }
    assert "Llama-70B-bf16-a6000-server-large-rag" in unplanned
    ran = [{"cell_id": c.cell_id, "status": "passed", "reason": None} for c in a6000 if c.skip_reason is None]
    skipped = [
        {"cell_id": c, "status": "skipped", "reason": r.removeprefix("quantgate: ")}
        for c, r in unplanned.items()
    ]
    path = coverage_file(tmp_path / "a6000.json", ran + skipped)
    assert main(["gate", str(path), "--kinds", "a6000"]) == 0
    out = capsys.readouterr().out
    assert f"note: {len(unplanned)} cell(s) not planned, so not expected" in out
    assert main(["gate", str(coverage_file(tmp_path / "ran.json", ran)), "--kinds", "a6000"]) == 0
    # a planned cell skipped with the same words is still not covered
    spoofed = [{**ran[0], "status": "skipped", "reason": NOT_PLANNED + "spoofed"}, *ran[1:]]
    assert main(["gate", str(coverage_file(tmp_path / "spoofed.json", spoofed)), "--kinds", "a6000"]) == 1
    assert f"{ran[0]['cell_id']}: not covered (skipped: not planned: spoofed)" in capsys.readouterr().out


def coverage_of_tests(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A coverage file whose rows are (test, cell, status): an accuracy cell has two tests."""
    cells = [
        {
            "cell_id": cell,
            "node_id": f"suites/test_matrix.py::{test}[{cell}]",
            "status": status,
            "reason": None,
        }
        for test, cell, status in rows
    ]
    return coverage_file(path, cells)


def test_every_test_of_a_cell_must_be_green_and_one_test_in_two_shards_must_agree(tmp_path: Path) -> None:
    cell = "tiny-qwen2-int8-w8a8-cpu-aime24"
    green = [("test_accuracy", cell, "passed"), ("test_output_length", cell, "xfailed")]
    result = decide([coverage_of_tests(tmp_path / "1.json", green)], [cell], known=[cell])
    assert result.passed, result.summary()
    assert (result.cells, result.counts) == (1, {"passed": 1, "xfailed": 1})
    longer = [("test_accuracy", cell, "passed"), ("test_output_length", cell, "failed")]
    assert decide([coverage_of_tests(tmp_path / "2.json", longer)], [cell]).problems == (
        f"{cell}: failed [2.json]",
    )
    overlap = coverage_of_tests(tmp_path / "3.json", [("test_accuracy", cell, "failed")])
    problems = decide([coverage_of_tests(tmp_path / "1.json", green), overlap], [cell]).problems
    assert any("passed in" in p and "but failed in" in p for p in problems), problems


def test_the_gate_command_knows_the_cpu_kinds_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quantgate.kinds import load_kind
    from quantgate.pipeline import local_cells

    cells = local_cells(load_kind())
    rows = [
        ("test_speed" if c.kind == "performance" else "test_accuracy", c.cell_id, "passed") for c in cells
    ]
    assert main(["gate", str(coverage_of_tests(tmp_path / "all.json", rows)), "--kinds", "cpu"]) == 0
    assert capsys.readouterr().out.startswith(f"PASS: {len(cells)} cells")
    assert main(["gate", str(coverage_of_tests(tmp_path / "half.json", rows[:10])), "--kinds", "cpu"]) == 1
    assert "not covered (absent: in no coverage file)" in capsys.readouterr().out


def test_a_deferred_cell_is_green_only_with_a_recent_green_verdict(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from quantgate.verdicts import Verdict

    now = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    ran = coverage(tmp_path / "c.json", {"a": "passed", "b": "deferred"}, reason="needs ~900 s, 12 s left")
    assert decide([ran], ["a", "b"], now=now).problems == (
        "b: deferred (needs ~900 s, 12 s left) and no verdict (limit 7 days)",
    )
    fresh = {"b": Verdict("b", "passed", now - timedelta(days=2))}
    result = decide([ran], ["a", "b"], history=fresh, now=now)
    assert result.passed, result.summary()
    assert result.notes == ("b: deferred; last passed 2.0 days ago",)
    stale = {"b": Verdict("b", "passed", now - timedelta(days=8))}
    assert decide([ran], ["a", "b"], history=stale, now=now).problems == (
        "b: deferred (needs ~900 s, 12 s left) and last passed 8.0 days ago (limit 7 days)",
    )
    red = {"b": Verdict("b", "failed", now - timedelta(hours=12))}
    assert not decide([ran], ["a", "b"], history=red, now=now).passed
    assert decide([ran], ["a", "b"], history=stale, now=now, max_age_days=9).passed


def test_a_coverage_file_of_a_job_that_did_not_finish_is_red(tmp_path: Path) -> None:
    path = coverage(tmp_path / "killed.json", {"a": "passed"})
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "complete": False}))
    result = decide([path], ["a"])
    assert result.problems == ("killed.json: written by a job that did not finish (killed or crashed)",)
    path.write_text(json.dumps({**doc, "complete": True}))
    assert decide([path], ["a"]).passed


def test_the_gate_command_keeps_the_verdict_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quantgate.kinds import load_kind
    from quantgate.pipeline import local_cells
    from quantgate.verdicts import load_verdicts

    cells = local_cells(load_kind())
    rows = [("test_x", c.cell_id, "passed") for c in cells]
    history = tmp_path / "verdicts.json"
    night1 = coverage_of_tests(tmp_path / "1.json", rows)
    assert main(["gate", str(night1), "--kinds", "cpu", "--history", str(history)]) == 0
    kept = load_verdicts(history)
    assert len(kept) == len(cells)
    assert {v.status for v in kept.values()} == {"passed"}
    deferred = [(t, c, "deferred") for t, c, _ in rows[5:]]
    night2 = coverage_of_tests(tmp_path / "2.json", rows[:5] + deferred)
    capsys.readouterr()
    assert main(["gate", str(night2), "--kinds", "cpu", "--history", str(history)]) == 0
    out = capsys.readouterr().out
    assert out.count("note: ") == len(cells) - 5
    assert main(["gate", str(night2), "--kinds", "cpu"]) == 1
    history.write_text(history.read_text().replace('"schema_version": 1', '"schema_version": 2'))
    assert main(["gate", str(night2), "--kinds", "cpu", "--history", str(history)]) == 2
    assert "verdicts.json: schema_version: version 2 is not supported" in capsys.readouterr().err


def test_a_deferred_cell_whose_inputs_changed_is_red_whatever_its_last_verdict(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from quantgate.verdicts import Verdict

    now = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    path = coverage_file(
        tmp_path / "c.json",
        [{"cell_id": "b", "status": "deferred", "inputs": {"tools": "vllm 0.33.0", "checkpoint": "x"}}],
    )
    last = Verdict(
        "b", "passed", now - timedelta(hours=3), inputs={"tools": "vllm 0.32.0", "checkpoint": "x"}
    )
    result = decide([path], ["b"], history={"b": last}, now=now)
    assert result.problems == ("b: deferred, but changed since its last verdict (tools)",)
    same = Verdict(
        "b", "passed", now - timedelta(hours=3), inputs={"tools": "vllm 0.33.0", "checkpoint": "x"}
    )
    assert decide([path], ["b"], history={"b": same}, now=now).passed


def test_an_inconclusive_gating_cell_stands_on_its_last_green_verdict_and_keeps_it(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from quantgate.verdicts import Verdict, updated

    now = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    path = coverage_file(
        tmp_path / "c.json",
        [
            {"cell_id": "a", "status": "failed", "verdict": "inconclusive", "reason": "unconfirmed fail"},
            {"cell_id": "b", "status": "failed", "verdict": "fail"},
        ],
    )
    assert decide([path], ["a", "b"], now=now).problems == (
        "b: failed [c.json]",
        "a: inconclusive (unconfirmed fail) and no verdict (limit 7 days)",
    )
    week = {t: Verdict(t, "passed", now - timedelta(days=3)) for t in ("a", "b")}
    result = decide([path], ["a", "b"], history=week, now=now)
    assert result.problems == ("b: failed [c.json]",)
    assert result.notes == ("a: inconclusive; last passed 3.0 days ago",)
    assert result.counts == {"inconclusive": 1, "failed": 1}
    kept = updated(week, result.outcomes, now)
    assert kept["a"] == week["a"]
    assert kept["b"].status == "failed"
    old = {"a": Verdict("a", "passed", now - timedelta(days=8))}
    assert "a: inconclusive (unconfirmed fail) and last passed 8.0 days ago (limit 7 days)" in (
        decide([path], ["a"], history=old, now=now).problems
    )
