"""``quantgate inspect``: tables, ``--json``, directories, exit status 2 with one stderr line per bad file."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from quantgate import cli_inspect
from quantgate.cli import build_parser

DATA = Path(__file__).parent / "data" / "results"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_inspect_is_registered_with_run_as_handler() -> None:
    args = parse("inspect", "a.json", "b.parquet", "--json")
    assert args.command == "inspect"
    assert args.files == ["a.json", "b.parquet"]
    assert args.json is True
    assert args.func is cli_inspect.run
    assert parse("inspect", "a.json").json is False


def test_inspect_requires_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse("inspect")
    assert caught.value.code == 2
    assert "FILE" in capsys.readouterr().err


def test_table_shows_kind_tool_version_and_cells(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("inspect", str(DATA / "lighteval_results_new.json"), str(DATA / "vllm_bench_serve.json"))
    assert cli_inspect.run(args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "kind: lighteval-results" in out
    assert "tool version: 3fd15266bc8448b797e61462d293aa3fd40b3580" in out
    assert "pass@k:k=1&n=20" in out
    assert "0.7117" in out
    assert "kind: vllm-bench-serve" in out
    assert "mean_ttft_ms" in out
    assert "request_rate=4" in out


def test_json_lists_every_file(capsys: pytest.CaptureFixture[str]) -> None:
    files = [DATA / "judge_aime24.jsonl", DATA / "guidellm_report_v2.json"]
    args = parse("inspect", "--json", *map(str, files))
    assert cli_inspect.run(args) == 0
    described = json.loads(capsys.readouterr().out)
    assert [d["kind"] for d in described] == ["judge-jsonl", "guidellm-report"]
    assert [d["path"] for d in described] == [str(f) for f in files]
    assert described[0]["accuracy"][0]["items"] == 30
    assert described[1]["tool_version"] == "0.7.1"
    assert [p["name"] for p in described[1]["performance"]] == ["synchronous", "throughput", "constant@4.0"]


def test_bad_file_exits_2_after_showing_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "judge.jsonl"
    bad.write_text('{"item": "a", "samples": 2, "correct": 3}\n', encoding="utf-8")
    missing = tmp_path / "missing.json"
    good = DATA / "vllm_bench_latency.json"
    args = parse("inspect", str(bad), str(missing), str(good))
    assert cli_inspect.run(args) == 2
    out, err = capsys.readouterr()
    assert "kind: vllm-bench-latency" in out
    lines = err.splitlines()
    assert lines == [
        f"quantgate: {bad}: line 1: 'correct' (3) exceeds 'samples' (2)",
        f"quantgate: {missing}: cannot read: No such file or directory",
    ]
    assert "Traceback" not in err


def test_bad_file_with_json_still_prints_the_good_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}', encoding="utf-8")
    args = parse("inspect", "--json", str(bad), str(DATA / "lm_eval_results_gsm8k.json"))
    assert cli_inspect.run(args) == 2
    out, err = capsys.readouterr()
    assert [d["kind"] for d in json.loads(out)] == ["lm-eval-results"]
    assert err.startswith(f"quantgate: {bad}: not a result file quantgate knows")
    assert err.count("\n") == 1


def test_directory_stands_for_its_result_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(DATA / "vllm_bench_throughput.json", tmp_path / "a.json")
    (tmp_path / "sub").mkdir()
    shutil.copy(DATA / "lighteval_details_aime24_new.parquet", tmp_path / "sub" / "b.parquet")
    (tmp_path / "notes.txt").write_text("not a result", encoding="utf-8")
    assert cli_inspect.run(parse("inspect", "--json", str(tmp_path))) == 0
    described = json.loads(capsys.readouterr().out)
    assert [d["kind"] for d in described] == ["vllm-bench-throughput", "lighteval-details"]


def test_every_fixture_inspects_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_inspect.run(parse("inspect", str(DATA))) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("  kind: ") == 17


def test_empty_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_inspect.run(parse("inspect", str(tmp_path))) == 2
    assert (
        capsys.readouterr().err
        == f"quantgate: {tmp_path}: no result files (*.json, *.jsonl, *.parquet) in this directory\n"
    )
