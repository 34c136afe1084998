"""The replay suite through pytest itself (pytester): cells become tests, gates fail closed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from qg_testdata import AIME_RATES, write_items

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "baselines" / "published"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A throwaway project with quantgate's root conftest and replay suite."""
    shutil.copy(REPO / "conftest.py", pytester.path / "conftest.py")
    skip = shutil.ignore_patterns("__pycache__", "test_matrix.py")
    shutil.copytree(REPO / "suites", pytester.path / "suites", ignore=skip)
    shutil.copytree(REPO / "plugins", pytester.path / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeini("[pytest]\npythonpath = .\naddopts = -p no:cacheprovider -p no:randomly\n")
    return pytester


def test_per_item_runs_pass_and_fail(suite: pytest.Pytester, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_items(runs / "Qwen-7B__bf16" / "aime24.jsonl", AIME_RATES, 64)
    write_items(runs / "Qwen-7B__int4-w4a16" / "aime24.jsonl", AIME_RATES, 64)
    write_items(runs / "Qwen-7B__fp8-w8a8" / "aime24.jsonl", [r * 0.6 for r in AIME_RATES], 20)
    write_items(runs / "Qwen-7B__int8-w8a8" / "aime24.jsonl", [r * 0.97 for r in AIME_RATES], 20)
    result = suite.runpytest("suites", f"--qg-results={runs}", "-v")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_cell?Qwen-7B-fp8-w8a8-aime24? FAILED*",
            "*test_cell?Qwen-7B-int4-w4a16-aime24? PASSED*",
            "*test_cell?Qwen-7B-int8-w8a8-aime24? FAILED*",
            "*Qwen-7B-fp8-w8a8-aime24: fail: recovery 0.6*",
            "*Qwen-7B-int8-w8a8-aime24: inconclusive: *draw 12 more samples/item*",
            "*accuracy/gate: 1 pass, 1 fail, 1 inconclusive, 0 unknown*",
        ]
    )


def test_inconclusive_can_be_reported_without_failing(suite: pytest.Pytester, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_items(runs / "Qwen-7B__bf16" / "aime24.jsonl", AIME_RATES, 64)
    write_items(runs / "Qwen-7B__int8-w8a8" / "aime24.jsonl", [r * 0.97 for r in AIME_RATES], 20)
    result = suite.runpytest("suites", f"--qg-results={runs}", "--qg-inconclusive=xfail")
    result.assert_outcomes(xfailed=1)


def test_missing_reference_is_not_green(suite: pytest.Pytester, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_items(runs / "Qwen-7B__int4-w4a16" / "aime24.jsonl", AIME_RATES, 20)
    result = suite.runpytest("suites", f"--qg-results={runs}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Qwen-7B-int4-w4a16-aime24: no evidence, failing closed*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_empty_results_directory_is_a_usage_error(suite: pytest.Pytester, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = suite.runpytest("suites", f"--qg-results={tmp_path / 'empty'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*yields no cell (fail closed)*"])


def test_bad_result_file_names_the_file(suite: pytest.Pytester, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    bad = runs / "Qwen-7B__bf16" / "aime24.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"item": "q0", "samples": 20, "correct": 25}\n')
    result = suite.runpytest("suites", f"--qg-results={runs}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*quantgate: {bad}*line 1*"])


def test_replay_of_published_cards(suite: pytest.Pytester, tmp_path: Path) -> None:
    summary = tmp_path / "not" / "yet" / "summary.md"  # an output folder that does not exist is created
    result = suite.runpytest(
        "suites",
        f"--qg-results={PUBLISHED}",
        "--qg-inconclusive=xfail",
        f"--qg-summary={summary}",
        "-k",
        "Qwen-1.5B-int4-w4a16-aime24 or Qwen-7B-fp8-w8a8-aime24 or Qwen-32B-fp8-w8a8-reasoning_avg",
        "-rA",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 1
    assert outcomes.get("xfailed", 0) + outcomes.get("passed", 0) + outcomes.get("skipped", 0) == 2
    result.stdout.fnmatch_lines(["*Qwen-7B-fp8-w8a8-aime24: no evidence, failing closed*not published*"])
    text = summary.read_text()
    assert "| Qwen-1.5B-int4-w4a16-aime24 | accuracy | informational | small-models-per-benchmark" in text
    chart = summary.parent / f"{summary.stem}-recovery.png"
    assert f"![{chart.stem}]({chart.name})" in text
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (summary.parent / f"{summary.stem}-speedup.png").exists()


def test_without_results_option_the_suite_refuses(suite: pytest.Pytester) -> None:
    result = suite.runpytest("suites")
    assert result.ret != pytest.ExitCode.OK
    result.stderr.fnmatch_lines(["*needs --qg-results DIR*"])


def test_baselines_workflow_in_five_runs(suite: pytest.Pytester, tmp_path: Path) -> None:
    """Write, pass, refuse a changed BF16 run (file intact), update (noted, red), pass again."""
    runs, base = tmp_path / "runs", tmp_path / "baselines"
    write_items(runs / "Qwen-7B__bf16" / "aime24.jsonl", AIME_RATES, 64)
    write_items(runs / "Qwen-7B__int4-w4a16" / "aime24.jsonl", AIME_RATES, 64)
    provenance = runs / "Qwen-7B__bf16" / "provenance.json"
    provenance.write_text(json.dumps({"vllm": "0.7.2", "lighteval": "0.13.0", "temperature": "0.6"}))
    stored = base / "Qwen-7B" / "aime24.json"
    args = ["suites", f"--qg-results={runs}", f"--qg-baselines={base}"]

    first = suite.runpytest(*args, "--qg-update-baselines")
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    first.stdout.fnmatch_lines([f"*new reference {stored}*baselines changed: this run fails*"])
    written = stored.read_bytes()

    suite.runpytest(*args).assert_outcomes(passed=1)

    provenance.write_text(json.dumps({"vllm": "0.8.0", "lighteval": "0.13.0", "temperature": "0.6"}))
    changed = suite.runpytest(*args)
    assert changed.ret != pytest.ExitCode.OK
    changed.stderr.fnmatch_lines(["*reference provenance differs (vllm: stored '0.7.2', now '0.8.0')*"])
    assert stored.read_bytes() == written

    update = suite.runpytest(*args, "--qg-update-baselines")
    assert update.ret == pytest.ExitCode.TESTS_FAILED
    update.stdout.fnmatch_lines([f"*updated reference {stored} with different provenance: vllm*"])

    suite.runpytest(*args).assert_outcomes(passed=1)
