"""The ``quantgate`` command: exit codes, one-line errors, and the core's import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from qg_testdata import AIME_RATES, write_items

from quantgate.cli import main


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_items(tmp_path / "ref.jsonl", AIME_RATES, 64)


@pytest.mark.parametrize(
    ("factor", "samples", "code", "word"),
    [(1.0, 64, 0, "pass"), (0.6, 20, 1, "fail"), (0.97, 20, 3, "inconclusive")],
)
def test_judge_exit_codes(
    tmp_path: Path,
    reference: Path,
    capsys: pytest.CaptureFixture[str],
    factor: float,
    samples: int,
    code: int,
    word: str,
) -> None:
    candidate = write_items(tmp_path / "cand.jsonl", [r * factor for r in AIME_RATES], samples)
    assert (
        main(["judge", "--reference", str(reference), "--candidate", str(candidate), "--floor", "0.97"])
        == code
    )
    out = capsys.readouterr().out
    assert out.startswith(word)
    assert out.count("\n") == 1


def test_judge_json(tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    candidate = write_items(tmp_path / "cand.jsonl", AIME_RATES, 20)
    main(["judge", "--reference", str(reference), "--candidate", str(candidate), "--floor", "0.97", "--json"])
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["verdict"] == "inconclusive"
    assert verdict["more_samples"] == 12
    assert set(verdict) >= {"recovery", "low", "high", "detail"}


def test_judge_bad_line_names_file_and_line(
    tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"item": "q0", "samples": 20, "correct": 3}\n{"item": "q1", "samples": 20, "correct": -1}\n'
    )
    assert main(["judge", "--reference", str(reference), "--candidate", str(bad), "--floor", "0.97"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"quantgate: {bad}: line 2")
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_judge_mismatched_items(tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    candidate = write_items(tmp_path / "cand.jsonl", AIME_RATES[:10], 20)
    assert (
        main(["judge", "--reference", str(reference), "--candidate", str(candidate), "--floor", "0.97"]) == 2
    )
    assert "item sets differ: 20 only in reference" in capsys.readouterr().err


def test_judge_missing_file(tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["judge", "--reference", str(reference), "--candidate", str(missing), "--floor", "0.97"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_judge_reads_lighteval_details(capsys: pytest.CaptureFixture[str]) -> None:
    details = str(Path(__file__).parent / "data" / "results" / "lighteval_details_aime24_new.parquet")
    assert (
        main(["judge", "--reference", details, "--candidate", details, "--floor", "0.5", "--cap", "8"]) == 0
    )
    assert "10 items paired, candidate 8/item" in capsys.readouterr().out
    assert (
        main(["judge", "--reference", details, "--candidate", details, "--floor", "0.5", "--metric", "nope"])
        == 2
    )
    assert "found aime24:extractive_match, aime24:pass@k:k=1&n=8" in capsys.readouterr().err


def test_replay_published_json(capsys: pytest.CaptureFixture[str]) -> None:
    published = Path(__file__).resolve().parents[1] / "baselines" / "published"
    assert main(["replay", str(published), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cells = {c["cell"]: c for c in report["cells"]}
    assert cells["Qwen-7B-fp8-w8a8-aime24"]["outcome"] == "unknown"
    assert cells["Qwen-1.5B-int4-w4a16-aime24"]["mode"] == "informational"
    assert cells["Qwen-1.5B-int4-w4a16-aime24"]["outcome"] in {"fail", "inconclusive"}
    assert cells["Qwen-32B-int4-w4a16-math_500"]["outcome"] == "pass"
    speed = cells["Llama-70B-fp8-w8a8-h100-single-stream-multi-turn-chat"]
    assert speed["verdict"]["speedup"] == pytest.approx(7.6 / 5.3, rel=1e-4)
    assert sum(sum(b.values()) for b in report["counts"].values()) == len(cells)


def test_core_imports_neither_pytest_nor_heavy_tools() -> None:
    code = (
        "import sys, quantgate.cli, quantgate.judge, quantgate.replay, quantgate.results, quantgate.catalog, "
        "quantgate.rules, quantgate.published, quantgate.cli_inspect\n"
        "heavy = [m for m in ('pytest', 'torch', 'vllm', 'lighteval', 'llmcompressor', 'pyarrow', 'numpy') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_console_script_help() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
