"""Published baselines: the import reproduces the committed file, copies every number, invents none."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantgate.catalog import Catalog, load_catalog
from quantgate.datafile import load_document
from quantgate.errors import QuantgateError
from quantgate.published import PublishedBaselines, load_published

REPO = Path(__file__).resolve().parents[1]


def _load_tool() -> ModuleType:
    """tools/ is not a package; load the script by path (a stray ``tools`` package cannot shadow it)."""
    spec = importlib.util.spec_from_file_location(
        "quantgate_import_published", REPO / "tools" / "import_published.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


_tool = _load_tool()
convert = _tool.convert
main = _tool.main
printed_decimals = _tool.printed_decimals
render = _tool.render
COMMITTED = REPO / "baselines" / "published" / "cards-2025-02.json"
SOURCE = REPO / "baselines" / "published" / "source" / "published-baselines.json.gz"

SCHEMES = {"bf16": "bf16", "fp8": "fp8-w8a8", "w8a8": "int8-w8a8", "w4a16": "int4-w4a16"}
BENCHMARKS = {
    "AIME2024_pass@1": "aime24",
    "MATH500_pass@1": "math_500",
    "GPQA_Diamond_pass@1": "gpqa_diamond",
    "Reasoning_avg": "reasoning_avg",
    "ARC-C_accnorm_25shot": "arc_challenge",
    "HellaSwag_accnorm_10shot": "hellaswag",
    "MMLU_acc_5shot": "mmlu",
    "TruthfulQA_mc2_0shot": "truthfulqa",
    "Winogrande_acc_5shot": "winogrande",
    "GSM8K_strict_5shot": "gsm8k",
    "OpenLLMv1_avg": "openllm_v1_avg",
}
SCENARIOS = {"single-stream (synchronous)": "single-stream", "multi-stream asynchronous": "multi-stream"}
WORKLOADS = {
    "Instruction Following": "instruction-following",
    "Multi-turn Chat": "multi-turn-chat",
    "Docstring Generation": "docstring-generation",
    "RAG": "rag",
    "Code Completion": "code-completion",
    "Code Fixing": "code-fixing",
    "Large Summarization": "large-summarization",
    "Large RAG": "large-rag",
}


def model_key(name: str) -> str:
    return name.removeprefix("DeepSeek-R1-Distill-")


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    doc: dict[str, Any] = load_document(SOURCE)
    return doc


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


# ---- the import against the shared reference -------------------------------------------------------


def test_import_reproduces_the_committed_file(
    source: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cards.json"
    assert main(["--source", str(SOURCE), "--out", str(out)]) == 0
    assert out.read_bytes() == COMMITTED.read_bytes()
    printed = capsys.readouterr().out
    assert "accuracy: 103 published, 95 not-published (88 card text not found, 7 blank in the card" in printed
    assert "skipped (benchmark not in the catalog): 110 (Coding 40, OpenLLM V2 70)" in printed
    assert "performance: 792 source rows -> 792 entries" in printed


def test_every_published_number_is_the_sources(source: dict[str, Any], committed: dict[str, Any]) -> None:
    out = {(e["model"], e["scheme"], e["benchmark"]): e for e in committed["accuracy"]}
    checked = 0
    for rec in source["accuracy"]:
        bench = BENCHMARKS.get(rec["benchmark_key"])
        if bench is None:
            continue
        entry = out[(model_key(rec["model"]), SCHEMES[rec["scheme"]], bench)]
        assert entry["reference"] == rec["bf16_score"]
        assert entry["uncertain"] is rec["uncertain"]
        assert entry["source"]["card"] == rec["source"]["card"]
        if rec["score"] is None:
            assert entry["status"] == "not-published"
            assert entry["note"] == rec["note"]
            continue
        assert entry["status"] == "published"
        assert entry["candidate"] == rec["score"]
        assert entry["printed_recovery_pct"] == rec["recovery_pct"]
        assert entry["note"] == rec["note"]
        checked += 1
    assert checked == 103

    perf = {}
    for e in committed["performance"]:
        key = (e["model"], e["scheme"], e["gpu"], e["scenario"], e["workload"])
        assert key not in perf
        perf[key] = e
    for rec in source["performance"]:
        key = (
            model_key(rec["model"]),
            SCHEMES[rec["scheme"]],
            rec["gpu"].lower(),
            SCENARIOS[rec["deployment"]],
            WORKLOADS[rec["workload"]],
        )
        entry = perf.pop(key)
        assert (entry["value"], entry["qpd"], entry["gpu_count"]) == (
            rec["value"],
            rec["qpd"],
            rec["gpu_count"],
        )
        assert entry["metric"] == {"latency_s": "latency_s", "max_throughput_qps": "max_qps"}[rec["metric"]]
        assert entry["source"]["card"] == rec["source"]["card"]
    assert not perf, "entries without a source row"


def test_missing_cards_become_explicit_not_published_cells(
    source: dict[str, Any], committed: dict[str, Any]
) -> None:
    missing = {(model_key(m["model"]), SCHEMES[m["scheme"]]): m for m in source["accuracy_missing"]}
    assert len(missing) == 8
    for entry in committed["accuracy"]:
        miss = missing.get((entry["model"], entry["scheme"]))
        if miss is not None:
            assert entry["status"] == "not-published"
            assert miss["status"] in entry["note"]
            assert entry["source"]["card"] == miss["quant_repo"]


# ---- the committed file (no shared reference needed) ----------------------------------------------


def test_committed_file_loads_and_covers_every_cell(catalog: Catalog) -> None:
    doc = load_published(COMMITTED)
    cells = {(e.model, e.scheme, e.benchmark) for e in doc.accuracy}
    assert len(doc.accuracy) == len(cells) == 6 * 3 * 11
    assert cells == {
        (m, s, b) for m in catalog.models for s in catalog.quantized_schemes() for b in catalog.benchmarks
    }
    assert sum(e.published for e in doc.accuracy) == 103
    assert len(doc.performance) == 792
    assert sum(p.scheme == "bf16" for p in doc.performance) == 264
    assert not any(p.conflict for p in doc.performance)


def test_not_published_entries_have_null_numbers() -> None:
    doc = load_published(COMMITTED)
    not_published = [e for e in doc.accuracy if not e.published]
    assert len(not_published) == 95
    for e in not_published:
        assert e.candidate is None
        assert e.printed_recovery_pct is None
        assert e.note
        if e.reference is not None:  # the BF16 column was printed, the quantized one blank
            assert (e.model, e.scheme) == ("Qwen-7B", "int4-w4a16")
            assert e.note == "quantized value blank in card"
    assert sum(e.reference is not None for e in not_published) == 7


def test_flagged_math500_keeps_its_flag() -> None:
    doc = load_published(COMMITTED)
    entry = doc.accuracy_cell("Qwen-1.5B", "int4-w4a16", "math_500")
    assert entry is not None
    assert (entry.candidate, entry.reference, entry.printed_recovery_pct) == (85.52, 84.66, 97.47)
    assert entry.uncertain is True
    assert entry.note is not None
    assert "82.52" in entry.note


def test_performance_cell_lookup() -> None:
    doc = load_published(COMMITTED)
    (bf16,) = doc.performance_cell("Qwen-1.5B", "bf16", "h100", "single-stream", "multi-turn-chat")
    assert (bf16.value, bf16.qpd, bf16.printed_decimals, bf16.metric) == (0.8, 1299.0, 1, "latency_s")
    (fp8,) = doc.performance_cell("Llama-70B", "fp8-w8a8", "h100", "multi-stream", "instruction-following")
    assert (fp8.value, fp8.gpu_count, fp8.printed_decimals) == (41.44, 4, 2)


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "published.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_load_published_refuses_another_schema_version(committed: dict[str, Any], tmp_path: Path) -> None:
    doc = copy.deepcopy(committed)
    doc["schema_version"] = 2
    with pytest.raises(QuantgateError) as err:
        load_published(_write(tmp_path, doc))
    assert err.value.where == "schema_version"
    assert "version 2 is not supported" in str(err.value)


BAD_FIELDS: list[tuple[str, str, Any, str, str]] = [
    ("accuracy", "status", "maybe", "accuracy[0].status", "'published' or 'not-published'"),
    ("accuracy", "unit", "fraction", "accuracy[0].unit", "'percent'"),
    ("accuracy", "surprise", 1, "accuracy[0].surprise", "unknown field"),
    ("accuracy", "candidate", None, "accuracy[0]", "needs both reference and candidate"),
    ("accuracy", "reference", 140.0, "accuracy[0].reference", "less than or equal to 100"),
    ("accuracy", "model", "Qwen-3B", "accuracy[0].model", "not a model of the catalog"),
    ("accuracy", "scheme", "bf16", "accuracy[0].scheme", "not a quantized scheme of the catalog"),
    ("performance", "metric", "tokens_per_s", "performance[0].metric", "'latency_s', 'max_qps' or"),
    ("performance", "metric", "max_qps", "performance[0].metric", "measures 'latency_s'"),
    ("performance", "gpu", "tpu-v5", "performance[0].gpu", "not a GPU kind of the catalog"),
    ("performance", "value", -1.0, "performance[0].value", "greater than 0"),
    ("performance", "conflict", True, "performance[0].conflict", "must be False: the cell"),
]


@pytest.mark.parametrize(("section", "field", "value", "where", "fragment"), BAD_FIELDS)
def test_load_published_names_the_bad_field(
    committed: dict[str, Any], tmp_path: Path, section: str, field: str, value: Any, where: str, fragment: str
) -> None:
    doc = copy.deepcopy(committed)
    doc[section][0][field] = value
    path = _write(tmp_path, doc)
    with pytest.raises(QuantgateError) as err:
        load_published(path)
    assert err.value.source == str(path)
    assert err.value.where == where
    assert fragment in str(err.value)


# ---- the importer's own rules, on a synthetic source -----------------------------------------------

CARD_A = "RedHatAI/DeepSeek-R1-Distill-Qwen-1.5B-FP8-dynamic"
CARD_B = "RedHatAI/DeepSeek-R1-Distill-Qwen-1.5B-quantized.w8a8"


def _src(card: str) -> dict[str, Any]:
    return {"card": card, "url": f"https://huggingface.co/{card}", "card_version_note": "test"}


def _perf(scheme: str, card: str, value: float) -> dict[str, Any]:
    return {
        "model": "DeepSeek-R1-Distill-Qwen-1.5B",
        "scheme": scheme,
        "deployment": "single-stream (synchronous)",
        "gpu": "H100",
        "gpu_count": 1,
        "workload": "RAG",
        "prompt_tokens": 1024,
        "output_tokens": 128,
        "metric": "latency_s",
        "value": value,
        "qpd": 100.0,
        "source": _src(card),
    }


def synthetic() -> dict[str, Any]:
    return {
        "meta": {"generated_by": "test", "scope": "test", "conventions": "test",
                 "cards_read": [CARD_B, CARD_A], "cards_missing": []},
        "accuracy": [
            {"model": "DeepSeek-R1-Distill-Qwen-1.5B", "scheme": "fp8", "category": "Reasoning",
             "benchmark_key": "AIME2024_pass@1", "score": 29.83, "bf16_score": 30.05, "recovery_pct": 99.27,
             "uncertain": False, "note": None, "source": _src(CARD_A)},
            {"model": "DeepSeek-R1-Distill-Qwen-1.5B", "scheme": "fp8", "category": "Coding",
             "benchmark_key": "HumanEval_pass@1", "score": 30.0, "bf16_score": 31.0, "recovery_pct": 96.8,
             "uncertain": False, "note": None, "source": _src(CARD_A)},
        ],
        "accuracy_missing": [],
        "performance": [
            _perf("bf16", CARD_B, 0.4),
            _perf("bf16", CARD_A, 0.4),
            _perf("fp8", CARD_A, 0.4),
            _perf("fp8", CARD_B, 0.5),
        ],
    }  # fmt: skip


def test_duplicates_merge_and_conflicts_are_kept(catalog: Catalog, tmp_path: Path) -> None:
    doc, counts = convert(synthetic(), tmp_path / "synthetic.json", catalog)
    out = tmp_path / "out.json"
    out.write_text(render(doc, out, catalog), encoding="utf-8")
    published = load_published(out)
    (bf16,) = published.performance_cell("Qwen-1.5B", "bf16", "h100", "single-stream", "rag")
    assert (bf16.source.card, bf16.also_in, bf16.conflict) == (CARD_A, [CARD_B], False)
    fp8 = published.performance_cell("Qwen-1.5B", "fp8-w8a8", "h100", "single-stream", "rag")
    assert sorted((p.value, p.source.card, p.conflict) for p in fp8) == [
        (0.4, CARD_A, True),
        (0.5, CARD_B, True),
    ]
    assert (counts.performance_merged, counts.performance_conflicts, counts.performance_entries) == (1, 2, 3)
    assert counts.skipped_by_category == {"Coding": 1}

    assert counts.accuracy_published == 1
    no_row = published.accuracy_cell("Qwen-1.5B", "fp8-w8a8", "gsm8k")
    assert no_row is not None
    assert no_row.note == "the card prints no GSM8K_strict_5shot row"
    assert no_row.source.card == CARD_A
    no_record = published.accuracy_cell("Llama-70B", "int4-w4a16", "aime24")
    assert no_record is not None
    assert no_record.status == "not-published"
    assert no_record.reference is None
    assert no_record.source.card == "RedHatAI/DeepSeek-R1-Distill-Llama-70B-quantized.w4a16"
    assert len(published.accuracy) == 198


def test_output_is_deterministic(catalog: Catalog, tmp_path: Path) -> None:
    shuffled = synthetic()
    shuffled["performance"].reverse()
    out = tmp_path / "out.json"
    first = render(convert(synthetic(), out, catalog)[0], out, catalog)
    second = render(convert(shuffled, out, catalog)[0], out, catalog)
    assert first == second
    assert first.startswith('{\n "schema_version": 1,\n "kind": "quantgate-published",')


def test_bad_source_is_refused_with_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = synthetic()
    bad["performance"][2]["model"] = "DeepSeek-R1-Distill-Qwen-3B"
    src = tmp_path / "source.json"
    src.write_text(json.dumps(bad), encoding="utf-8")
    out = tmp_path / "out.json"
    assert main(["--source", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}: performance[2].model: no model published as 'DeepSeek-R1-Distill-Qwen-3B'" in err
    assert not out.exists()

    bad = synthetic()
    bad["performance"][0]["output_tokens"] = 256
    src.write_text(json.dumps(bad), encoding="utf-8")
    assert main(["--source", str(src), "--out", str(out)]) == 2
    assert "performance[0].workload: 1024/256 tokens" in capsys.readouterr().err


def test_render_refuses_a_document_that_breaks_the_format(catalog: Catalog, tmp_path: Path) -> None:
    doc, _ = convert(synthetic(), tmp_path / "s.json", catalog)
    doc["accuracy"][0]["status"] = "guessed"
    with pytest.raises(QuantgateError, match=r"accuracy\[0\]\.status"):
        render(doc, tmp_path / "out.json", catalog)
    assert PublishedBaselines.model_fields.keys() >= {"accuracy", "performance"}


@pytest.mark.parametrize(
    ("value", "decimals"),
    [(0.4, 1), (14.04, 2), (14.0, 0), (14, 0), (3.68, 2), (1299.0, 0), (1e-05, 5), (0.05, 2)],
)
def test_printed_decimals(value: float, decimals: int) -> None:
    assert printed_decimals(value) == decimals


@given(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=4))
def test_printed_decimals_never_exceeds_the_printed_ones(digits: int, places: int) -> None:
    value = round(digits / 10**places, places)
    found = printed_decimals(value)
    assert found <= places
    if digits % 10:  # no trailing zero to lose
        assert found == places
