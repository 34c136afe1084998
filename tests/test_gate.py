"""The nightly gate over coverage files: green only when every expected cell ran green somewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgate.cli import main
from quantgate.errors import QuantgateError
from quantgate.gate import decide


def coverage(path: Path, cells: dict[str, str], reason: str = "") -> Path:
    doc = {
        "schema_version": 1,
        "kind": "quantgate-coverage",
        "cells": [{"cell_id": c, "status": s, "reason": reason or None} for c, s in cells.items()],
    }
    path.write_text(json.dumps(doc))
    return path


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
