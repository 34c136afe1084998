"""Open LLM v1 (deterministic) tasks: lighteval's log-likelihood files read per item, fractional scores
(TruthfulQA's mc2) kept exactly, and references that store them."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest

from quantgate import paths
from quantgate.envs import Envs
from quantgate.errors import QuantgateError
from quantgate.kinds import load_kind
from quantgate.matrix import MatrixCell, expand
from quantgate.pipeline import Pipeline
from quantgate.results import read_result
from quantgate.runners.evaluate import EvalJob, Evaluation, read_evaluation
from quantgate.store import load_reference, make_reference, save_reference

RECORDED = Path(__file__).parent / "data" / "lighteval-arc"
TRUTHFULQA = Path(__file__).parent / "data" / "lighteval-truthfulqa"


def job(out: Path, metric: str) -> EvalJob:
    return EvalJob(
        base_url="http://127.0.0.1:9",
        served_name="m",
        tokenizer=Path("t"),
        task_file=None,
        task="arc:challenge",
        model_file=Path("m.py"),
        data_dir=None,
        samples=1,
        seed=0,
        temperature=0.0,
        top_p=1.0,
        max_tokens=40,
        out_dir=out,
        metric_name=metric,
    )


def copy_run(source: Path, out: Path) -> None:
    (out / "details").mkdir(parents=True)
    (out / "results").mkdir()
    for details in source.glob("details_*"):
        shutil.copy(details, out / "details" / details.name)
    for results in source.glob("results_*.json"):
        shutil.copy(results, out / "results" / results.name)


def test_a_real_log_likelihood_run_is_read_as_one_answer_per_item(tmp_path: Path) -> None:
    copy_run(RECORDED, tmp_path / "run")
    evaluation = read_evaluation(job(tmp_path / "run", "acc"), 1.0)
    assert len(evaluation.counts) == 200
    assert {n for n, _ in evaluation.counts.values()} == {1}
    assert set(evaluation.scores.values()) == {0.0, 1.0}
    assert evaluation.fractions == {}
    (results,) = RECORDED.glob("results_*.json")
    written = json.loads(results.read_text())["results"]["arc:challenge|0"]["acc"]
    assert sum(evaluation.scores.values()) / 200 == pytest.approx(written)
    assert evaluation.score == pytest.approx(written)


def test_a_real_truthfulqa_run_keeps_mc2_as_a_fraction_per_item(tmp_path: Path) -> None:
    copy_run(TRUTHFULQA, tmp_path / "run")
    evaluation = read_evaluation(job(tmp_path / "run", "truthfulqa_mc2"), 1.0)
    assert len(evaluation.scores) == 8
    assert evaluation.fractions == evaluation.scores
    assert all(0.0 < v < 1.0 for v in evaluation.scores.values())
    assert len(set(evaluation.scores.values())) == 8, "exact fractions, not rounded to 0/1"
    (results,) = TRUTHFULQA.glob("results_*.json")
    written = json.loads(results.read_text())["results"]["truthfulqa:mc|0"]["truthfulqa_mc2"]
    assert sum(evaluation.scores.values()) / 8 == pytest.approx(written)
    mc1 = read_evaluation(job(tmp_path / "run", "truthfulqa_mc1"), 1.0)
    assert set(mc1.scores.values()) <= {0.0, 1.0}
    assert mc1.fractions == {}


def mc2_rows(values: list[float]) -> str:
    return "\n".join(
        json.dumps(
            {
                "doc": {"id": str(i), "task_name": "truthfulqa:mc|0"},
                "model_response": {"text": []},
                "metric": {"truthfulqa_mc1": float(v > 0.5), "truthfulqa_mc2": v},
            }
        )
        for i, v in enumerate(values)
    )


def test_a_fraction_per_item_is_kept_exactly_and_stored(tmp_path: Path) -> None:
    values = [0.25, 0.8125, 1.0, 0.0]
    out = tmp_path / "run"
    (out / "details").mkdir(parents=True)
    (out / "results").mkdir()
    rows = [json.loads(line) for line in mc2_rows(values).splitlines()]
    details = out / "details" / "details_truthfulqa:mc|0_x.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), details)
    (out / "results" / "results_x.json").write_text("{}")
    (mc2,) = [r for r in read_result(details).accuracy if r.metric == "truthfulqa_mc2"]
    assert mc2.value == pytest.approx(sum(values) / 4)
    evaluation = read_evaluation(job(out, "truthfulqa_mc2"), 1.0)
    assert evaluation.scores == {str(i): v for i, v in enumerate(values)}
    assert evaluation.fractions == evaluation.scores, "a fraction metric keeps every item exactly"
    key = {"model": "m", "scheme": "bf16", "gpu": "cpu", "benchmark": "truthfulqa"}
    path = tmp_path / "ref.json"
    save_reference(path, make_reference(key, {"x": "1"}, evaluation.reference_items()))
    assert load_reference(path).scores() == evaluation.scores


def test_a_stored_score_needs_one_answer_and_a_fraction(tmp_path: Path) -> None:
    key = {"model": "m", "scheme": "bf16", "gpu": "cpu", "benchmark": "truthfulqa"}
    for bad in ({"samples": 2, "correct": 1, "score": 0.5}, {"samples": 1, "correct": 1, "score": 1.5}):
        with pytest.raises(ValueError, match="score"):
            make_reference(key, {}, [{"item": "0", **bad}])


def test_other_fractional_metrics_are_still_not_read_as_scores(tmp_path: Path) -> None:
    path = tmp_path / "details_t|0_x.jsonl"
    rows = [
        {"doc": {"id": str(i)}, "model_response": {"text": ["x"]}, "metric": {"maj@4": 0.25 * i}}
        for i in range(3)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(QuantgateError, match="no per-sample metric"):
        read_result(path)


# -- the GPU kind's path, with a real run's files standing in for lighteval on a GPU machine ----------


class RecordedArc:
    """Stand-in for the lighteval worker on a GPU machine: the real ARC run's files (``lighteval-arc``)."""

    def __init__(self) -> None:
        self.jobs: list[EvalJob] = []

    def run(self, job: EvalJob) -> Evaluation:
        self.jobs.append(job)
        shutil.rmtree(job.out_dir, ignore_errors=True)
        copy_run(RECORDED, job.out_dir)
        return read_evaluation(job, 1.0)


class StandInServer:
    base_url = "http://127.0.0.1:1"
    api_key = "stand-in-key"

    def in_use(self, during: str) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


def gpu_pipeline(tmp_path: Path, update: bool = False) -> Pipeline:
    pipeline = Pipeline(
        load_kind(paths.kind_file("gpu")),
        Envs(tmp_path / "envs"),
        tmp_path / "work",
        baselines=tmp_path / "baselines",
        update_baselines=update,
    )
    pipeline._worker = RecordedArc()  # type: ignore[assignment]
    return pipeline


def arc_cells() -> dict[str, MatrixCell]:
    return {
        c.scheme: c
        for c in expand(kind="accuracy")
        if c.cell_id.startswith("Qwen-7B-") and c.cell_id.endswith("-h100-arc_challenge")
    }


def test_a_gpu_arc_look_is_greedy_with_the_catalogs_few_shots(tmp_path: Path) -> None:
    pipeline = gpu_pipeline(tmp_path)
    cell = arc_cells()["int8-w8a8"]
    job = pipeline.evaluation_job(StandInServer(), cell, 1, 0, "look0")  # type: ignore[arg-type]
    assert job.task == "arc:challenge"
    assert job.args()[3] == "arc:challenge|25"
    assert (job.temperature, job.top_p, job.samples, job.metric) == (0.0, 1.0, 1, "acc")
    assert job.max_length == pipeline.served_context(cell) - 1
    assert job.endpoint()["max_length"] == job.max_length


def test_mmlu_cells_are_not_planned_with_the_reason_and_the_judged_tasks_are() -> None:
    """MMLU is 57 tasks in lighteval 0.13: its cells are collected and skipped as not planned (no server,
    no GPU time, not expected by the gate); every other task's cells are planned."""
    from quantgate.matrix import NOT_PLANNED

    cells = [c for c in expand(kind="accuracy") if c.gpu == "h100"]
    mmlu = [c for c in cells if c.benchmark == "mmlu"]
    assert mmlu
    assert all((c.skip_reason or "").startswith(NOT_PLANNED) for c in mmlu)
    assert all("57 'mmlu:<subject>' tasks" in (c.skip_reason or "") for c in mmlu)
    others = [c for c in cells if c.benchmark != "mmlu"]
    assert [c.cell_id for c in others if (c.skip_reason or "").startswith(NOT_PLANNED)] == []


def test_a_gpu_deterministic_cell_is_judged_once_against_the_one_answer_reference(tmp_path: Path) -> None:
    cells = arc_cells()
    writer = gpu_pipeline(tmp_path, update=True)
    reference, note = writer.reference(cells["bf16"], StandInServer())  # type: ignore[arg-type]
    assert note is not None
    assert {i.samples for i in reference.items} == {1}
    assert reference.provenance["samples"] == "1"
    assert reference.provenance["temperature"] == "0.0"
    judge = gpu_pipeline(tmp_path)
    outcome = judge.judge_accuracy(StandInServer(), cells["int8-w8a8"])  # type: ignore[arg-type]
    assert outcome.verdict.verdict == "pass"
    assert outcome.verdict.recovery == pytest.approx(1.0)
    assert len(outcome.looks) == 1, "no top-up and no confirmation: a second look gives the same answers"
    assert outcome.metric == "acc"
    assert outcome.result(cells["int8-w8a8"]).metric == "acc"
    (job,) = judge._worker.jobs  # type: ignore[union-attr]
    assert job.samples == 1


def test_the_cpu_kind_runs_open_llm_tasks_zero_shot_with_pairwise_tokenization(tmp_path: Path) -> None:
    """The tiny models' context (256 tokens) holds no 25 ARC examples, and their BPE merges across the
    context/choice boundary (module docstring of ``fixtures/lane/lighteval_model.py``); the GPU kind keeps
    the catalog's few-shot counts and lighteval's default tokenization."""
    from quantgate.pipeline.core import local_cells

    spec = load_kind(paths.kind_file("cpu"))
    (cell,) = [c for c in local_cells(spec) if c.cell_id == "tiny-llama-bf16-cpu-arc_challenge"]
    pipeline = Pipeline(spec, Envs(tmp_path / "envs"), tmp_path / "work")
    job = pipeline.evaluation_job(StandInServer(), cell, 1, 0, "look0")  # type: ignore[arg-type]
    assert job.args()[3] == "arc:challenge|0"
    assert job.endpoint()["pairwise_tokenization"] is True
    assert job.endpoint()["max_length"] == 255
    assert job.data_dir is not None
    gpu_job = gpu_pipeline(tmp_path).evaluation_job(StandInServer(), arc_cells()["bf16"], 1, 0, "look0")  # type: ignore[arg-type]
    assert "pairwise_tokenization" not in gpu_job.endpoint()
