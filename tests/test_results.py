"""Readers of tool result files: every kind read with its values, every class of broken input refused
with one QuantgateError naming the file, and property tests that nothing else ever escapes."""

from __future__ import annotations

import copy
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantgate.errors import QuantgateError
from quantgate.results import (
    KINDS,
    ItemOutcome,
    ResultFile,
    describe,
    format_judge_jsonl,
    iter_result_files,
    read_result,
)

DATA = Path(__file__).parent / "data" / "results"

# The counts make_details.py wrote into the details fixtures.
AIME_CORRECT = [8, 7, 0, 3, 5, 8, 1, 0, 6, 4]
GSM8K_CORRECT = [4, 3, 0, 2, 4, 1]
GPQA_CORRECT = [2, 0, 3, 1, 4, 2]

EXPECTED_KINDS = {
    "guidellm_report_old.json": "guidellm-report",
    "guidellm_report_v2.json": "guidellm-report",
    "judge_aime24.jsonl": "judge-jsonl",
    "lighteval_details_aime24_new.parquet": "lighteval-details",
    "lighteval_details_gpqa.jsonl": "lighteval-details",
    "lighteval_details_gsm8k_old.parquet": "lighteval-details",
    "lighteval_results_new.json": "lighteval-results",
    "lighteval_results_old.json": "lighteval-results",
    "lm_eval_results_gsm8k.json": "lm-eval-results",
    "lm_eval_results_v03.json": "lm-eval-results",
    "pytest_benchmark.json": "pytest-benchmark",
    "vllm_bench_latency.json": "vllm-bench-latency",
    "vllm_bench_serve.json": "vllm-bench-serve",
    "vllm_bench_serve_detailed.json": "vllm-bench-serve",
    "vllm_bench_serve_old.json": "vllm-bench-serve",
    "vllm_bench_throughput.json": "vllm-bench-throughput",
    "vllm_bench_throughput_new.json": "vllm-bench-throughput",
}


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def cell(result: ResultFile, task: str, metric: str) -> Any:
    found = [r for r in result.accuracy if r.task == task and r.metric == metric]
    assert len(found) == 1, [(r.task, r.metric) for r in result.accuracy]
    return found[0]


def perf(result: ResultFile, name: str) -> Any:
    found = [r for r in result.performance if r.name == name]
    assert len(found) == 1, [r.name for r in result.performance]
    return found[0]


# --------------------------------------------------------------------------------------------------
# Every fixture, every kind
# --------------------------------------------------------------------------------------------------


def test_iter_result_files_lists_every_fixture_sorted_and_skips_other_files() -> None:
    found = iter_result_files(DATA)
    assert [p.name for p in found] == sorted(EXPECTED_KINDS)
    assert found == sorted(found)


def test_every_kind_has_a_fixture() -> None:
    assert set(EXPECTED_KINDS.values()) == set(KINDS)


@pytest.mark.parametrize(("name", "kind"), sorted(EXPECTED_KINDS.items()))
def test_fixture_is_recognised_and_described_as_json(name: str, kind: str) -> None:
    result = read_result(DATA / name)
    assert result.kind == kind
    assert result.path == str(DATA / name)
    assert result.accuracy or result.performance
    described = describe(result)
    text = json.dumps(described, allow_nan=False)
    assert json.loads(text)["kind"] == kind
    for r in result.accuracy:
        assert (r.source, r.kind) == (str(DATA / name), kind)
    for p in result.performance:
        assert (p.source, p.kind) == (str(DATA / name), kind)


def test_kind_is_sniffed_from_content_not_name(tmp_path: Path) -> None:
    renamed = tmp_path / "results.json"
    shutil.copy(DATA / "vllm_bench_latency.json", renamed)
    assert read_result(renamed).kind == "vllm-bench-latency"
    as_jsonl = tmp_path / "latency.jsonl"
    shutil.copy(DATA / "lighteval_results_new.json", as_jsonl)
    assert read_result(as_jsonl).kind == "lighteval-results"
    no_suffix = tmp_path / "details"
    shutil.copy(DATA / "lighteval_details_aime24_new.parquet", no_suffix)
    assert read_result(no_suffix).kind == "lighteval-details"


# --------------------------------------------------------------------------------------------------
# lighteval results
# --------------------------------------------------------------------------------------------------


def test_lighteval_results_current_metric_names() -> None:
    result = read_result(DATA / "lighteval_results_new.json")
    assert result.tool_version == "3fd15266bc8448b797e61462d293aa3fd40b3580"
    assert {r.task for r in result.accuracy} == {"aime24", "aime25", "aime24_avg", "math_500", "gpqa:diamond"}
    aime = cell(result, "aime24", "pass@k:k=1&n=20")
    assert aime.value == pytest.approx(0.7116666666666667)
    assert aime.stderr == pytest.approx(0.07401522437870592)
    assert (aime.samples_per_item, aime.fewshot, aime.items) == (20, 0, None)
    assert aime.model == "RedHatAI/Qwen3-8B-FP8-dynamic"
    assert cell(result, "aime25", "pass@k:k=1").samples_per_item is None
    assert cell(result, "aime24_avg", "avg@n:n=64").samples_per_item == 64
    assert cell(result, "math_500", "pass@k:k=1&n=1").samples_per_item == 1
    assert cell(result, "gpqa:diamond", "gpqa_pass@k:k=1").value == pytest.approx(0.6161616161616161)
    assert not any(r.task == "all" for r in result.accuracy)
    generation = json.loads(result.provenance["generation_parameters"])
    assert generation == {"max_new_tokens": 32768, "seed": 1234, "temperature": 0.6, "top_p": 0.95}
    assert result.provenance["summary_tasks.aime24|0.hash_examples"] == "b4a7d5a2bff5d2ab"
    assert result.provenance["model_config.revision"] == "main"


def test_lighteval_results_old_metric_names_and_suite_keys() -> None:
    result = read_result(DATA / "lighteval_results_old.json")
    assert result.tool_version is None  # lighteval_sha "?" means not installed from git
    assert cell(result, "aime24", "math_pass@1:4_samples").samples_per_item == 4
    assert cell(result, "aime24", "math_pass@1:8_samples").value == pytest.approx(0.5541666666666667)
    assert cell(result, "gpqa:diamond", "gpqa_pass@1:1_samples").samples_per_item == 1
    arc = cell(result, "arc:challenge", "acc_norm")
    assert (arc.fewshot, arc.samples_per_item) == (25, None)
    assert arc.stderr == pytest.approx(0.01411129875167495)
    assert result.provenance["model_sha"] == "916b56a44061fd5cd7d6a8fb632557ed4f724f60"
    assert json.loads(result.provenance["generation_parameters"])["temperature"] == 0.6


def test_lighteval_version_is_preferred_to_the_sha_and_optional_fields_may_be_missing(tmp_path: Path) -> None:
    doc = {
        "config_general": {"lighteval_version": "0.11.0", "lighteval_sha": "abc"},
        "results": {"aime24@k=1@n=32|0": {"pass@k:k=1&n=32": 0.5}, "all": {"pass@k:k=1&n=32": 0.5}},
    }
    result = read_result(write_json(tmp_path / "r.json", doc))
    assert result.tool_version == "0.11.0"
    only = cell(result, "aime24", "pass@k:k=1&n=32")
    assert (only.stderr, only.samples_per_item, only.model) == (None, 32, None)


def test_lighteval_null_or_nan_stderr_is_unknown(tmp_path: Path) -> None:
    text = (
        '{"config_general": {}, "results": '
        '{"aime24|0": {"m": 0.5, "m_stderr": NaN}, "gsm8k|5": {"m": 0.7, "m_stderr": null}}}'
    )
    path = tmp_path / "r.json"
    path.write_text(text, encoding="utf-8")
    result = read_result(path)
    assert [r.stderr for r in result.accuracy] == [None, None]


# --------------------------------------------------------------------------------------------------
# lighteval details
# --------------------------------------------------------------------------------------------------


def test_lighteval_details_current_parquet_counts() -> None:
    result = read_result(DATA / "lighteval_details_aime24_new.parquet")
    assert result.tool_version is None
    assert result.provenance["item_ids"] == "doc id"
    pass1 = cell(result, "aime24", "pass@k:k=1&n=8")
    assert pass1.fewshot == 0
    assert pass1.samples_per_item == 8
    assert [o.item for o in pass1.items] == [str(i) for i in range(10)]
    assert [o.correct for o in pass1.items] == AIME_CORRECT
    assert {o.samples for o in pass1.items} == {8}
    assert pass1.value == pytest.approx(sum(AIME_CORRECT) / 80)
    first = pass1.items[0]
    assert first.output_tokens == pytest.approx(sum(4 + s % 5 for s in range(8)) / 8)
    single = cell(result, "aime24", "extractive_match")
    assert [o.correct for o in single.items] == [1 if c else 0 for c in AIME_CORRECT]
    assert single.samples_per_item == 1


def test_lighteval_details_task_comes_from_the_real_file_name(tmp_path: Path) -> None:
    real = tmp_path / "details_lighteval|aime24|0_2026-05-01T10-11-12.123456.parquet"
    shutil.copy(DATA / "lighteval_details_aime24_new.parquet", real)
    assert {(r.task, r.fewshot) for r in read_result(real).accuracy} == {("aime24", 0)}
    old = tmp_path / "details_lighteval|gsm8k|5_2025-01-28T12-00-00.000000.parquet"
    shutil.copy(DATA / "lighteval_details_gsm8k_old.parquet", old)
    assert {(r.task, r.fewshot) for r in read_result(old).accuracy} == {("gsm8k", 5)}


def test_lighteval_details_old_flat_columns_use_query_hashes() -> None:
    result = read_result(DATA / "lighteval_details_gsm8k_old.parquet")
    assert result.provenance["item_ids"] == "sha256 of the query"
    four = cell(result, "lighteval_details_gsm8k_old", "math_pass@1:4_samples")
    assert [o.correct for o in four.items] == GSM8K_CORRECT
    assert all(o.item.startswith("query:") and len(o.item) == 6 + 16 for o in four.items)
    assert len({o.item for o in four.items}) == len(GSM8K_CORRECT)
    assert all(o.output_tokens is None for o in four.items)
    one = cell(result, "lighteval_details_gsm8k_old", "math_pass@1:1_samples")
    assert [o.correct for o in one.items] == [1 if c else 0 for c in GSM8K_CORRECT]


def test_lighteval_details_jsonl_without_n_counts_the_predictions() -> None:
    result = read_result(DATA / "lighteval_details_gpqa.jsonl")
    gpqa = cell(result, "gpqa:diamond", "gpqa_pass@k:k=1")
    assert gpqa.samples_per_item == 4
    assert [o.correct for o in gpqa.items] == GPQA_CORRECT
    assert [o.item for o in gpqa.items] == [str(40 + i) for i in range(6)]


def test_lighteval_details_dunder_columns_repr_text_and_row_ids(tmp_path: Path) -> None:
    rows = [
        {
            "__doc__": {"query": f"q{i}", "id": str(i)},
            "__model_response__": {"text": ["a", "b"]},
            "__metric__": {"pass@k:k=1&n=2": c / 2},
        }
        for i, c in enumerate([2, 1, 0])
    ]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert [o.correct for o in read_result(path).accuracy[0].items] == [2, 1, 0]

    old_repr = [
        {"metrics": str({"math_pass@1:4_samples": c / 4}), "predictions": str(["x"] * 4)} for c in (1, 3)
    ]
    path = tmp_path / "old.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in old_repr), encoding="utf-8")
    result = read_result(path)
    assert [o.item for o in result.accuracy[0].items] == ["row:0", "row:1"]
    assert [o.correct for o in result.accuracy[0].items] == [1, 3]


def test_lighteval_details_task_falls_back_to_the_plain_file_name(tmp_path: Path) -> None:
    row = {"metrics": {"em": 1.0}, "example": "q"}
    path = tmp_path / "run|a|b|c.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert [(r.task, r.fewshot) for r in read_result(path).accuracy] == [("run|a|b|c", None)]


def test_lighteval_details_skip_metrics_that_carry_no_counts(tmp_path: Path) -> None:
    rows = [
        {
            "doc": {"id": str(i)},
            "model_response": {"text": ["x"]},
            "metric": {"maj@8": 0.4 + i / 10, "em": float(i % 2)},
        }
        for i in range(3)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert [r.metric for r in read_result(path).accuracy] == ["em"]


# --------------------------------------------------------------------------------------------------
# judge-jsonl
# --------------------------------------------------------------------------------------------------


def test_judge_jsonl() -> None:
    result = read_result(DATA / "judge_aime24.jsonl")
    (only,) = result.accuracy
    assert (only.task, only.metric, only.samples_per_item) == ("judge_aime24", "pass@1", 20)
    assert len(only.items) == 30
    assert only.items[2] == ItemOutcome("aime24/2", 20, 0, only.items[2].output_tokens)
    assert only.value == pytest.approx(sum(o.correct for o in only.items) / 600)


def test_judge_jsonl_single_line_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text('\n\n{"item": "a", "samples": 3, "correct": 2}\n\n', encoding="utf-8")
    assert read_result(path).accuracy[0].items == (ItemOutcome("a", 3, 2),)


# --------------------------------------------------------------------------------------------------
# lm-evaluation-harness
# --------------------------------------------------------------------------------------------------


def test_lm_eval_results() -> None:
    result = read_result(DATA / "lm_eval_results_gsm8k.json")
    assert result.tool_version == "0.4.9.1"
    strict = cell(result, "gsm8k", "exact_match,strict-match")
    assert strict.value == pytest.approx(0.7551175132676269)
    assert strict.stderr == pytest.approx(0.011845114968935396)
    assert (strict.fewshot, strict.model) == (5, "nm-testing/Meta-Llama-3-8B-Instruct-FP8")
    assert cell(result, "arc_challenge", "acc_norm,none").fewshot == 25
    assert len(result.accuracy) == 4  # "alias" is not a metric
    assert result.provenance["git_hash"] == "b2bf7bc"
    assert result.provenance["n-samples.gsm8k.effective"] == "1319"


def test_lm_eval_03_results_and_na_stderr(tmp_path: Path) -> None:
    result = read_result(DATA / "lm_eval_results_v03.json")
    acc = cell(result, "hellaswag", "acc")
    assert (acc.model, acc.fewshot, acc.tool_version) == ("EleutherAI/pythia-160m", None, None)
    assert acc.stderr == pytest.approx(0.004502917400811848)
    doc = load("lm_eval_results_gsm8k.json")
    doc["results"]["gsm8k"]["exact_match_stderr,strict-match"] = "N/A"
    assert (
        cell(read_result(write_json(tmp_path / "r.json", doc)), "gsm8k", "exact_match,strict-match").stderr
        is None
    )


# --------------------------------------------------------------------------------------------------
# vLLM bench
# --------------------------------------------------------------------------------------------------


def test_vllm_bench_latency() -> None:
    doc = load("vllm_bench_latency.json")
    result = read_result(DATA / "vllm_bench_latency.json")
    (p,) = result.performance
    assert (p.name, p.scenario) == ("vllm_bench_latency", "latency")
    assert p.metrics["latency_s"] == doc["avg_latency"]
    assert p.metrics["p99_latency_s"] == doc["percentiles"]["99"]
    assert p.samples == tuple(doc["latencies"])


def test_vllm_bench_throughput_old_and_new() -> None:
    (old,) = read_result(DATA / "vllm_bench_throughput.json").performance
    assert old.metrics["request_throughput"] == pytest.approx(23.970157766196353)
    assert "output_throughput" not in old.metrics
    assert (old.prompt_tokens, old.output_tokens) == (None, None)
    (new,) = read_result(DATA / "vllm_bench_throughput_new.json").performance
    assert new.metrics["output_throughput"] == pytest.approx(128000 / 38.24518220499158)
    assert (new.prompt_tokens, new.output_tokens) == (456000 - 128000, 128000)


def test_vllm_bench_serve() -> None:
    result = read_result(DATA / "vllm_bench_serve.json")
    (p,) = result.performance
    assert p.scenario == "request_rate=4"
    assert p.model == "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8"
    assert p.metrics["mean_ttft_ms"] == pytest.approx(24.811)
    assert p.metrics["p99_e2el_ms"] == pytest.approx(1876.32 + 2.6 * 1204.7)
    assert p.metrics["latency_s"] == pytest.approx(1.87632)
    assert (p.metrics["completed"], p.metrics["failed"]) == (200, 0)
    assert (p.prompt_tokens, p.output_tokens) == (43854, 41620)
    assert result.provenance["gpu_type"] == "NVIDIA H100 80GB HBM3"
    assert result.provenance["date"] == "20260822-141503"


def test_vllm_bench_serve_old_and_detailed(tmp_path: Path) -> None:
    (old,) = read_result(DATA / "vllm_bench_serve_old.json").performance
    assert old.scenario == "request_rate=inf, max_concurrency=64"
    assert "failed" not in old.metrics
    assert "latency_s" not in old.metrics
    (detailed,) = read_result(DATA / "vllm_bench_serve_detailed.json").performance
    assert detailed.metrics["completed"] == 8
    path = tmp_path / "serve.json"
    path.write_text(
        (DATA / "vllm_bench_serve.json")
        .read_text()
        .replace('"request_rate": 4.0', '"request_rate": Infinity')
    )
    assert read_result(path).performance[0].scenario == "request_rate=inf"


# --------------------------------------------------------------------------------------------------
# GuideLLM
# --------------------------------------------------------------------------------------------------


def test_guidellm_report_v2() -> None:
    result = read_result(DATA / "guidellm_report_v2.json")
    assert result.tool_version == "0.7.1"
    assert [p.name for p in result.performance] == ["synchronous", "throughput", "constant@4.0"]
    sync = perf(result, "synchronous")
    assert sync.scenario == "sweep"
    assert sync.model == "RedHatAI/Qwen3-8B-FP8-dynamic"
    assert sync.metrics["request_throughput"] == pytest.approx(0.98)
    assert sync.metrics["mean_ttft_ms"] == pytest.approx(21.7)
    assert sync.metrics["latency_s"] == pytest.approx(1.0195)
    assert sync.metrics["p99_ttft_ms"] > sync.metrics["median_ttft_ms"]
    assert (sync.prompt_tokens, sync.output_tokens) == (256 * 29, 128 * 29)
    assert perf(result, "throughput").metrics["failed"] == 2
    assert result.provenance["version"] == "2"


def test_guidellm_older_layouts(tmp_path: Path) -> None:
    (old,) = read_result(DATA / "guidellm_report_old.json").performance
    assert (old.name, old.scenario, old.model) == (
        "concurrent@8",
        "concurrent",
        "meta-llama/Llama-3.1-8B-Instruct",
    )
    assert "mean_tpot_ms" not in old.metrics
    doc = load("guidellm_report_v2.json")
    doc.update(doc.pop("metadata"))  # version and guidellm_version at the top level
    result = read_result(write_json(tmp_path / "g.json", doc))
    assert (result.kind, result.tool_version) == ("guidellm-report", "0.7.1")


# --------------------------------------------------------------------------------------------------
# pytest-benchmark
# --------------------------------------------------------------------------------------------------


def test_pytest_benchmark() -> None:
    doc = load("pytest_benchmark.json")
    result = read_result(DATA / "pytest_benchmark.json")
    assert result.tool_version == "5.2.3"
    decode = perf(result, "test_decode_latency[qwen3-8b-fp8-h100]")
    stats = doc["benchmarks"][0]["stats"]
    assert decode.scenario == "decode"
    assert decode.metrics["latency_s"] == stats["mean"]
    assert decode.metrics["rounds"] == 10
    assert decode.metrics["ttft_p99_ms"] == 31.7  # numeric extra_info is kept, text is not
    assert "note" not in decode.metrics
    assert decode.samples == tuple(stats["data"])
    assert decode.model == "RedHatAI/Qwen3-8B-FP8-dynamic"
    assert result.provenance["machine_info.gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert result.provenance["commit_info.dirty"] == "false"


# --------------------------------------------------------------------------------------------------
# Broken input: one QuantgateError naming the file (and the field or line)
# --------------------------------------------------------------------------------------------------


def edit(name: str, change: Callable[[Any], None]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        doc = load(name)
        change(doc)
        path = tmp / name
        path.write_text(json.dumps(doc), encoding="utf-8")  # allow_nan: NaN is written as NaN
        return path

    return build


def text_file(name: str, text: str | bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return build


def details_jsonl(rows: list[dict[str, Any]]) -> Callable[[Path], Path]:
    return text_file(
        "details_aime24|0_2026-05-01T10-11-12.123456.jsonl", "\n".join(json.dumps(r) for r in rows)
    )


def details_row(item: str, value: float, metric: str = "pass@k:k=1&n=8") -> dict[str, Any]:
    return {
        "doc": {"id": item, "query": item},
        "model_response": {"text": ["x"] * 8},
        "metric": {metric: value},
    }


def judge(*lines: str) -> Callable[[Path], Path]:
    return text_file("judge.jsonl", "\n".join(lines) + "\n")


def set_key(*path_and_value: Any) -> Callable[[Any], None]:
    *keys, value = path_and_value

    def change(doc: Any) -> None:
        for key in keys[:-1]:
            doc = doc[key]
        doc[keys[-1]] = value

    return change


def delete_key(*keys: Any) -> Callable[[Any], None]:
    def change(doc: Any) -> None:
        for key in keys[:-1]:
            doc = doc[key]
        del doc[keys[-1]]

    return change


BROKEN: dict[str, tuple[Callable[[Path], Path], str | None, str]] = {
    # id: (build the file, expected `where` or None, text the message contains)
    "empty": (text_file("empty.json", "  \n"), None, "empty"),
    "not utf-8": (text_file("bin.json", b"\xff\xfe\x00garbage"), None, "UTF-8"),
    "invalid json": (text_file("bad.json", '{"a": 1,\n "b": }'), "line 2", "invalid JSON"),
    "top-level list": (text_file("list.json", "[1, 2]"), None, "JSON object"),
    "unknown kind": (text_file("x.json", '{"hello": 1}'), None, "not a result file"),
    "lighteval NaN value": (
        edit("lighteval_results_new.json", set_key("results", "aime24|0", "pass@k:k=1&n=20", math.nan)),
        "results.aime24|0.pass@k:k=1&n=20",
        "finite",
    ),
    "lighteval text value": (
        edit("lighteval_results_new.json", set_key("results", "aime24|0", "pass@k:k=1&n=20", "0.71")),
        "results.aime24|0.pass@k:k=1&n=20",
        "must be a number",
    ),
    "lighteval negative stderr": (
        edit("lighteval_results_new.json", set_key("results", "aime24|0", "pass@k:k=1&n=20_stderr", -0.1)),
        "results.aime24|0.pass@k:k=1&n=20_stderr",
        ">= 0",
    ),
    "lighteval bad fewshot": (
        edit("lighteval_results_new.json", lambda d: d["results"].update({"gsm8k|five": {"em": 0.5}})),
        "results.gsm8k|five",
        "not a whole number",
    ),
    "lighteval only the average": (
        edit("lighteval_results_new.json", lambda d: d.update(results={"all": {"em": 0.5}})),
        "results",
        "no task scores",
    ),
    "lighteval task twice": (
        edit(
            "lighteval_results_old.json",
            lambda d: d["results"].update({"custom|aime24|0": {"math_pass@1:4_samples": 0.5}}),
        ),
        "results.custom|aime24|0",
        "appears twice",
    ),
    "lighteval results not an object": (
        edit("lighteval_results_new.json", set_key("results", "aime24|0", [0.5])),
        "results.aime24|0",
        "must be an object",
    ),
    "details count not whole": (
        details_jsonl([details_row("0", 0.37)]),
        "line 1.metric.pass@k:k=1&n=8",
        "not a whole number of correct samples",
    ),
    "details value above one": (
        details_jsonl([details_row("0", 1.25)]),
        "line 1.metric.pass@k:k=1&n=8",
        "0..1",
    ),
    "details NaN count metric": (
        text_file("d.jsonl", json.dumps(details_row("0", 0.5)).replace("0.5", "NaN")),
        "line 1.metric.pass@k:k=1&n=8",
        "finite",
    ),
    "details duplicated item": (
        details_jsonl([details_row("7", 0.5), details_row("7", 0.25)]),
        "line 2",
        "duplicated item '7' (first at line 1)",
    ),
    "details metric missing in a row": (
        details_jsonl([details_row("0", 0.5), details_row("1", 0.5, metric="em")]),
        "line 2.metric.pass@k:k=1&n=8",
        "missing",
    ),
    "details no count metric": (
        details_jsonl([details_row("0", 0.4, metric="f1"), details_row("1", 0.7, metric="f1")]),
        None,
        "no per-sample metric gives counts",
    ),
    "details unknown sample count": (
        details_jsonl([{"doc": {"id": "0"}, "metric": {"pass@k:k=1": 1.0}}]),
        "line 1.metric.pass@k:k=1",
        "cannot tell the number of samples",
    ),
    "details doc not an object": (
        details_jsonl([{"doc": 3, "metric": {"em": 1.0}}]),
        "line 1.doc",
        "must be an object",
    ),
    "details corrupt parquet": (text_file("d.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1"), None, "parquet"),
    "judge correct above samples": (
        judge('{"item": "a", "samples": 4, "correct": 1}', '{"item": "b", "samples": 4, "correct": 5}'),
        "line 2",
        "exceeds",
    ),
    "judge zero samples": (judge('{"item": "a", "samples": 0, "correct": 0}'), "line 1", ">= 1"),
    "judge negative correct": (judge('{"item": "a", "samples": 2, "correct": -1}'), "line 1", ">= 0"),
    "judge boolean samples": (judge('{"item": "a", "samples": true, "correct": 1}'), "line 1", "integer"),
    "judge fractional samples": (judge('{"item": "a", "samples": 2.5, "correct": 1}'), "line 1", "integer"),
    "judge duplicated item": (
        judge(*[f'{{"item": "{i}", "samples": 2, "correct": 1}}' for i in "abcdefa"]),
        "line 7",
        "duplicated item 'a' (first on line 1)",
    ),
    "judge unknown field": (
        judge('{"item": "a", "samples": 2, "correct": 1, "sample": 3}'),
        "line 1",
        "unknown field",
    ),
    "judge missing field": (
        judge('{"item": "a", "samples": 2}', '{"item": "b"}'),
        "line 1",
        "missing 'correct'",
    ),
    "judge numeric item": (judge('{"item": 3, "samples": 2, "correct": 1}'), "line 1", "non-empty string"),
    "judge bad line": (
        judge(
            '{"item": "a", "samples": 2, "correct": 1}', '{"item": "b", "samples": 2, "correct": 1}', "{oops"
        ),
        "line 3",
        "invalid JSON",
    ),
    "judge NaN tokens": (
        judge('{"item": "a", "samples": 2, "correct": 1, "output_tokens": NaN}'),
        "line 1",
        "output_tokens",
    ),
    "lm-eval text metric": (
        edit("lm_eval_results_gsm8k.json", set_key("results", "gsm8k", "exact_match,strict-match", "N/A")),
        "results.gsm8k.exact_match,strict-match",
        "must be a number",
    ),
    "lm-eval infinite metric": (
        edit("lm_eval_results_gsm8k.json", set_key("results", "gsm8k", "exact_match,strict-match", math.inf)),
        "results.gsm8k.exact_match,strict-match",
        "finite",
    ),
    "latency negative sample": (
        edit("vllm_bench_latency.json", set_key("latencies", 3, -1.0)),
        "latencies[3]",
        ">= 0",
    ),
    "latency bad percentile key": (
        edit("vllm_bench_latency.json", set_key("percentiles", "p99", 1.0)),
        "percentiles.p99",
        "percentile",
    ),
    "latency missing average": (
        edit("vllm_bench_latency.json", delete_key("avg_latency")),
        None,
        "not a result file",
    ),
    "throughput negative count": (
        edit("vllm_bench_throughput.json", set_key("num_requests", -1)),
        "num_requests",
        ">= 0",
    ),
    "throughput output above total": (
        edit("vllm_bench_throughput_new.json", set_key("total_output_tokens", 10**7)),
        "total_output_tokens",
        "exceeds",
    ),
    "throughput missing elapsed": (
        edit("vllm_bench_throughput.json", delete_key("elapsed_time")),
        "elapsed_time",
        "missing",
    ),
    "serve bad rate": (edit("vllm_bench_serve.json", set_key("request_rate", "fast")), "request_rate", "inf"),
    "serve bad completed": (
        edit("vllm_bench_serve.json", set_key("completed", "many")),
        "completed",
        "integer",
    ),
    "serve NaN statistic": (
        edit("vllm_bench_serve.json", set_key("p99_ttft_ms", math.nan)),
        "p99_ttft_ms",
        "finite",
    ),
    "serve negative failed": (edit("vllm_bench_serve.json", set_key("failed", -2)), "failed", ">= 0"),
    "guidellm no benchmarks": (
        edit("guidellm_report_v2.json", set_key("benchmarks", [])),
        "benchmarks",
        "no benchmarks",
    ),
    "guidellm future version": (
        edit("guidellm_report_v2.json", set_key("metadata", "version", 3)),
        "metadata.version",
        "not supported",
    ),
    "guidellm unknown benchmark type": (
        edit("guidellm_report_v2.json", set_key("benchmarks", 1, "type_", "other_benchmark")),
        "benchmarks[1].type_",
        "unknown benchmark type",
    ),
    "guidellm NaN mean": (
        edit(
            "guidellm_report_v2.json",
            set_key("benchmarks", 0, "metrics", "time_to_first_token_ms", "successful", "mean", math.nan),
        ),
        "benchmarks[0].metrics.time_to_first_token_ms.successful.mean",
        "finite",
    ),
    "guidellm metrics missing": (
        edit("guidellm_report_v2.json", delete_key("benchmarks", 2, "metrics")),
        "benchmarks[2].metrics",
        "missing",
    ),
    "pytest-benchmark zero rounds": (
        edit("pytest_benchmark.json", set_key("benchmarks", 0, "stats", "rounds", 0)),
        "benchmarks[0].stats.rounds",
        ">= 1",
    ),
    "pytest-benchmark no stats": (
        edit("pytest_benchmark.json", delete_key("benchmarks", 1, "stats")),
        "benchmarks[1].stats",
        "missing",
    ),
    "pytest-benchmark negative datum": (
        edit("pytest_benchmark.json", set_key("benchmarks", 1, "stats", "data", 0, -0.5)),
        "benchmarks[1].stats.data[0]",
        ">= 0",
    ),
    "pytest-benchmark text mean": (
        edit("pytest_benchmark.json", set_key("benchmarks", 0, "stats", "mean", "fast")),
        "benchmarks[0].stats.mean",
        "must be a number",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_is_one_quantgate_error_naming_the_file(case: str, tmp_path: Path) -> None:
    build, where, message = BROKEN[case]
    path = build(tmp_path)
    with pytest.raises(QuantgateError) as caught:
        read_result(path)
    error = caught.value
    assert error.source == str(path)
    assert str(error).startswith(str(path))
    assert error.where == where
    assert message in error.message
    assert "cannot interpret" not in error.message  # every reader check is explicit, not the safety net


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(QuantgateError, match="cannot read"):
        read_result(tmp_path / "absent.json")
    with pytest.raises(QuantgateError, match="is a directory"):
        read_result(tmp_path)
    with pytest.raises(QuantgateError, match="not a directory"):
        iter_result_files(tmp_path / "absent")


def test_item_outcome_validates_itself() -> None:
    with pytest.raises(QuantgateError):
        ItemOutcome("a", 2, 3)
    with pytest.raises(QuantgateError):
        ItemOutcome("a", 0, 0)
    with pytest.raises(QuantgateError):
        ItemOutcome("", 1, 0)
    with pytest.raises(QuantgateError):
        ItemOutcome("a", 2, 1, math.nan)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

JSON_FIXTURES = sorted(n for n in EXPECTED_KINDS if n.endswith(".json"))
JSONL_FIXTURES = sorted(n for n in EXPECTED_KINDS if n.endswith(".jsonl"))

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        ["inf", "N/A", "", "all", "aime24|0", "|", "a|b|c|d", "generative_benchmark", "{'a': 1}", "[1"]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("property")


def paths_in(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.extend(paths_in(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc[:5]):
            found.extend(paths_in(value, (*prefix, index)))
    return found


def mutate(data: st.DataObject, doc: Any) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = paths_in(doc)
        if not paths:
            return data.draw(json_values, label="whole document")
        target = data.draw(st.sampled_from(paths), label="path")
        parent = doc
        for key in target[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete", "rename"]), label="action")
        last = target[-1]
        if action == "delete" or (action == "rename" and isinstance(parent, list)):
            del parent[last]
        elif action == "rename":
            parent[data.draw(st.text(max_size=12), label="new key")] = parent.pop(last)
        else:
            parent[last] = data.draw(json_values, label="value")
    return doc


def read_or_quantgate_error(path: Path) -> None:
    """Reading either works (and describes as strict JSON) or fails with an explicit QuantgateError."""
    error: QuantgateError | None = None
    try:
        result = read_result(path)
    except QuantgateError as exc:
        error = exc
    if error is None:
        json.dumps(describe(result), allow_nan=False)
        return
    assert error.source == str(path)
    assert "cannot interpret" not in error.message, error.message


@PROPERTY
@given(data=st.data(), name=st.sampled_from(JSON_FIXTURES))
def test_mutated_json_documents_raise_only_quantgate_error(
    scratch: Path, data: st.DataObject, name: str
) -> None:
    doc = mutate(data, load(name))
    path = scratch / "mutated.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    read_or_quantgate_error(path)


@PROPERTY
@given(data=st.data(), name=st.sampled_from(JSONL_FIXTURES))
def test_mutated_json_lines_raise_only_quantgate_error(scratch: Path, data: st.DataObject, name: str) -> None:
    lines = [
        json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    lines = mutate(data, lines)
    if not isinstance(lines, list):
        lines = [lines]
    path = scratch / "mutated.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    read_or_quantgate_error(path)


@PROPERTY
@given(doc=json_values)
def test_arbitrary_json_values_raise_only_quantgate_error(scratch: Path, doc: Any) -> None:
    path = scratch / "arbitrary.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    read_or_quantgate_error(path)


@st.composite
def item_outcomes(draw: st.DrawFn) -> list[ItemOutcome]:
    names = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True))
    outcomes = []
    for name in names:
        samples = draw(st.integers(1, 128))
        correct = draw(st.integers(0, samples))
        tokens = draw(st.none() | st.floats(0, 1e6, allow_nan=False, allow_infinity=False))
        outcomes.append(ItemOutcome(name, samples, correct, tokens))
    return outcomes


@PROPERTY
@given(outcomes=item_outcomes())
def test_judge_jsonl_round_trip(scratch: Path, outcomes: list[ItemOutcome]) -> None:
    path = scratch / "judge.jsonl"
    path.write_text(format_judge_jsonl(outcomes), encoding="utf-8")
    (result,) = read_result(path).accuracy
    assert result.items == tuple(outcomes)
    assert result.value == pytest.approx(sum(o.correct / o.samples for o in outcomes) / len(outcomes))
    samples = {o.samples for o in outcomes}
    assert result.samples_per_item == (samples.pop() if len(samples) == 1 else None)


@PROPERTY
@given(
    prefix=st.sampled_from(
        [b"", b"PAR1", b"{", b'{"results": ', b'{"item": "a", "samples": 1, "correct": 1}\n']
    ),
    body=st.binary(max_size=300),
)
def test_random_bytes_raise_only_quantgate_error(scratch: Path, prefix: bytes, body: bytes) -> None:
    path = scratch / "random.bin"
    path.write_bytes(prefix + body)
    read_or_quantgate_error(path)


def test_answers_cut_at_the_length_limit_are_counted_per_item_from_a_real_run(tmp_path: Path) -> None:
    from quantgate.runners.evaluate import EvalJob, answers_and_cuts, read_evaluation

    recorded = Path(__file__).parent / "data" / "lighteval-cut"
    (details,) = recorded.glob("details_*.parquet")
    (gpqa,) = [r for r in read_result(details).accuracy if r.metric == "gpqa_pass@k:k=1"]
    lengths = {i.item: i.output_lengths for i in gpqa.items or ()}
    assert lengths == {
        "0": (12,) * 4,
        "1": (12,) * 4,
        "2": (11,) * 4,
        "3": (12,) * 4,
        "4": (11,) * 4,
        "5": (12,) * 4,
    }
    out = tmp_path / "run"
    (out / "details").mkdir(parents=True)
    (out / "results").mkdir()
    shutil.copy(details, out / "details" / details.name)
    shutil.copy(next(recorded.glob("results_*.json")), out / "results")

    def job(max_tokens: int) -> EvalJob:
        return EvalJob(
            "http://127.0.0.1:9",
            "m",
            Path("t"),
            None,
            "gpqa:diamond",
            Path("m.py"),
            None,
            4,
            0,
            0.6,
            0.95,
            max_tokens,
            out,
            metric_name="gpqa_pass@k:k=1",
        )

    at_limit = read_evaluation(job(12), 1.0)
    assert at_limit.cut == {"0": 4, "1": 4, "2": 0, "3": 4, "4": 0, "5": 4}
    assert at_limit.cut_answers == 16
    assert answers_and_cuts([at_limit, at_limit]) == (48, 32)
    assert read_evaluation(job(32), 1.0).cut_answers == 0


def test_a_serve_result_without_throughput_is_read_with_what_it_lacks_named(tmp_path: Path) -> None:
    """A vintage or fork that writes latency percentiles only (the real tool's file, its throughput and
    token totals removed): recognised as vllm bench serve, the missing figures in its provenance."""
    doc = json.loads((DATA / "vllm_bench_serve.json").read_text())
    for key in ("request_throughput", "output_throughput", "total_token_throughput", "total_input_tokens"):
        del doc[key]
    path = tmp_path / "fork.json"
    path.write_text(json.dumps(doc))
    result = read_result(path)
    (p,) = result.performance
    assert result.kind == "vllm-bench-serve"
    assert "request_throughput" not in p.metrics
    assert p.metrics["mean_ttft_ms"] == pytest.approx(24.811)
    assert result.provenance["missing"] == "request_throughput, output_throughput, total_input_tokens"
    assert p.prompt_tokens is None
    latency_free = {k: v for k, v in doc.items() if not k.endswith("_ms")}
    path.write_text(json.dumps(latency_free))
    with pytest.raises(QuantgateError, match="not a result file quantgate knows"):
        read_result(path)
    path.write_text(json.dumps({**latency_free, "request_throughput": None}))
    with pytest.raises(QuantgateError, match="request_throughput"):
        read_result(path)
