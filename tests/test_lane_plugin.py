"""The pipeline's plugins with pytester: the matrix suite's cells of every kind, selection, order, and
failing closed when the tools are not there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A throwaway project with quantgate's root conftest, plugins and suites."""
    shutil.copy(REPO / "conftest.py", pytester.path / "conftest.py")
    shutil.copytree(REPO / "suites", pytester.path / "suites", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "plugins", pytester.path / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makeini("[pytest]\npythonpath = .\naddopts = -p no:cacheprovider -p no:randomly\n")
    return pytester


def test_cpu_selects_the_matrix_suites_cpu_cells_served_model_by_served_model_bf16_first(
    project: pytest.Pytester,
) -> None:
    result = project.runpytest("suites", "-m", "cpu", "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert all(line.startswith("suites/test_matrix.py::") and "-cpu-" in line for line in ids), ids
    # per served model: 3 scenarios; per accuracy cell (llama: gpqa_diamond, arc_challenge and gsm8k,
    # qwen2: aime24 and math_500, 4 schemes each): accuracy and output length
    assert len(ids) == 8 * 3 + 4 * 5 * 2
    cells = [line.split("[", 1)[1].split("]")[0] for line in ids if "::test_accuracy[" in line]
    assert cells[0] == "tiny-llama-bf16-cpu-gpqa_diamond"
    assert cells.index("tiny-qwen2-bf16-cpu-aime24") < cells.index("tiny-qwen2-bf16-cpu-math_500")
    assert cells.index("tiny-qwen2-bf16-cpu-math_500") < cells.index("tiny-qwen2-int8-w8a8-cpu-aime24")
    tests = [line.split("::", 1)[1] for line in ids]
    assert tests[: 6 + 3] == [
        "test_accuracy[tiny-llama-bf16-cpu-gpqa_diamond]",
        "test_output_length[tiny-llama-bf16-cpu-gpqa_diamond]",
        "test_accuracy[tiny-llama-bf16-cpu-arc_challenge]",
        "test_output_length[tiny-llama-bf16-cpu-arc_challenge]",
        "test_accuracy[tiny-llama-bf16-cpu-gsm8k]",
        "test_output_length[tiny-llama-bf16-cpu-gsm8k]",
        "test_speed[tiny-llama-bf16-cpu-single-stream]",
        "test_speed[tiny-llama-bf16-cpu-multi-stream]",
        "test_speed[tiny-llama-bf16-cpu-server]",
    ], "a served model's tests run together, BF16 first"
    assert {cell.rsplit("-", 1)[1] for cell in cells} == {
        "aime24",
        "math_500",
        "gpqa_diamond",
        "arc_challenge",
        "gsm8k",
    }


def test_cpu_shards_keep_a_models_schemes_together(project: pytest.Pytester, tmp_path: Path) -> None:
    """On CPU, BF16 speed is measured in the same session as the other schemes': a shard holds whole
    models, and the two shards hold every cpu cell once, whatever durations each runner has learned
    (the first shard's run updates them before the second shard is computed)."""
    from quantgate.devices.durations import Durations

    learned = tmp_path / "durations.json"
    cells = [f"tiny-llama-{s}-cpu-{t}" for s in ("bf16", "int8-w8a8") for t in ("gpqa_diamond", "server")]
    learned.write_text(Durations(cells=dict.fromkeys(cells, 5000.0)).as_json())
    shards = []
    for shard, durations in (("1/2", []), ("2/2", [f"--qg-durations={learned}"])):
        result = project.runpytest(
            "suites", "-m", "cpu", "--qg-shard", shard, "--collect-only", "-q", *durations
        )
        shards.append({line for line in result.outlines if line.startswith("suites/test_matrix.py::")})
    models = [{line.split("[", 1)[1].split("-")[1] for line in shard} for shard in shards]
    assert all(len(m) == 1 for m in models), models
    assert models[0] != models[1]
    assert len(shards[0] | shards[1]) == 64
    assert not shards[0] & shards[1]


def test_without_tool_environments_every_cell_fails_with_the_reason_and_a_report(
    project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "report"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step-summary.md"))
    result = project.runpytest(
        "suites",
        "-m",
        "cpu",
        f"--qg-envs={tmp_path / 'no-envs'}",
        f"--qg-report={report}",
        f"--qg-lane-work={tmp_path / 'work'}",
        "-k",
        "tiny-llama-bf16 or tiny-llama-int8",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == 0
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 18
    result.stdout.fnmatch_lines(["*no vllm environment*tools/setup_envs.sh*"])
    cells = json.loads((report / "cells.json").read_text())
    assert len(cells["outcomes"]) == 18
    assert {o["outcome"] for o in cells["outcomes"].values()} <= {"error", "failed"}
    assert all("setup_envs" in o["reason"] for o in cells["outcomes"].values())
    assert "18 error" in (report / "report.md").read_text()
    assert (tmp_path / "step-summary.md").read_text().startswith("# quantgate CPU lane")


def test_a_bad_lane_file_stops_collection_naming_it(project: pytest.Pytester, tmp_path: Path) -> None:
    lane = tmp_path / "lane.yaml"
    lane.write_text(
        (REPO / "suites" / "kinds" / "cpu.yaml").read_text().replace("max_tokens: 40", "max_tokens: 0")
    )
    result = project.runpytest("suites", "-m", "cpu", f"--qg-lane={lane}", "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*UsageError: quantgate: {lane}: accuracy.max_tokens*"])


def test_h100_selects_exactly_the_h100_cells_of_the_matrix_suite(project: pytest.Pytester) -> None:
    from quantgate.matrix import expand

    expected = {f"{c.cell_id}" for c in expand() if c.gpu == "h100"}
    result = project.runpytest("suites", "-m", "h100", "--qg-gpus", "h100:8", "--collect-only", "-q")
    selected = {
        line.split("[", 1)[1].rstrip("]")
        for line in result.outlines
        if line.startswith("suites/test_matrix.py::")
    }
    assert selected == expected
    assert not [line for line in result.outlines if "-cpu-" in line or "test_replay.py" in line]
    speed = project.runpytest("suites", "-m", "h100 and speed", "--qg-gpus", "h100:8", "--collect-only", "-q")
    speed_ids = {line.split("[", 1)[1].rstrip("]") for line in speed.outlines if "::test_speed[" in line}
    assert speed_ids == {c.cell_id for c in expand() if c.gpu == "h100" and c.kind == "performance"}


def test_h100_cells_without_an_h100_end_red_with_the_reason(project: pytest.Pytester) -> None:
    result = project.runpytest("suites", "-m", "h100", "-k", "Qwen-7B-int8-w8a8-h100-aime24")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*all 2 selected matrix cells were skipped (2x no h100 in the inventory*failing closed*"]
    )


PARALLEL_CELLS = """
import pytest
from quantgate.cellresult import CellResult
from quantgate.runners.process import ToolError


@pytest.mark.parametrize("n", range(60))
def test_cell(n, qg_lane_session, tmp_path):
    qg_lane_session.server_started(f"m-s{n}", 1.0 + n)
    entry = {"name": f"run[{n}]", "fullname": f"lane::m-s{n}::run[{n}]", "stats": {}}
    qg_lane_session.add_benchmarks([entry])
    qg_lane_session.record(CellResult(
        cell=f"m-s{n}-multi-stream", kind="speed", model="m", scheme=f"s{n}", scenario="multi-stream",
        metric="max_qps", unit="requests/s", median=2.0, bf16_median=1.0,
        verdict="pass" if n % 10 else "fail",
        speedup=2.0, low=1.9, high=2.1, floor=1.0, rule="r", gating=True, detail="d",
    ))
    if n % 20 == 0:
        pytest.fail(f"cell {n} failed")
    if n % 20 == 10:
        log = tmp_path / "serve.log"
        log.write_text("".join(f"line {i}\\n" for i in range(40)) + f"engine {n} died\\n")
        raise ToolError(f"vllm server (m-s{n})", "exited with status -9 during evaluation look0", log)
"""


@pytest.mark.slow
def test_parallel_workers_lose_no_record_and_the_controller_writes_one_report(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    project.makepyfile(test_parallel_cells=PARALLEL_CELLS)
    report = tmp_path / "report"
    result = project.runpytest_subprocess(
        "test_parallel_cells.py", "-n", "3", f"--qg-report={report}", f"--qg-envs={tmp_path / 'envs'}"
    )
    result.assert_outcomes(passed=54, failed=6)
    result.stdout.fnmatch_lines(["*created: 3/3 workers*"])
    assert result.stdout.str().count("report: ") == 1
    cells = json.loads((report / "cells.json").read_text())
    assert sorted(r["scheme"] for r in cells["records"]) == sorted(f"s{n}" for n in range(60))
    assert len(cells["outcomes"]) == 60
    assert sum(o["outcome"] == "failed" for o in cells["outcomes"].values()) == 6
    assert cells["server_start_s"] == {f"m-s{n}": [1.0 + n] for n in range(60)}
    benchmarks = json.loads((report / "benchmark.json").read_text())["benchmarks"]
    assert sorted(b["name"] for b in benchmarks) == sorted(f"run[{n}]" for n in range(60))
    text = (report / "report.md").read_text()
    assert "6 failed, 54 passed" in text
    assert "| test_parallel_cells.py::test_cell[20] | failed | cell 20 failed |" in text
    assert (
        "| test_parallel_cells.py::test_cell[30] | failed | vllm server (m-s30): exited with status -9"
        in text
    )
    section = text.split("### test_parallel_cells.py::test_cell[30]", 1)[1].split("###", 1)[0]
    assert "last 15 lines of `" in section
    assert "line 26\nline 27" in section
    assert "engine 30 died" in section
    assert "line 25" not in section
