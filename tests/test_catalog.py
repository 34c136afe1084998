"""The catalog: the real one loads with every expected key; a broken one fails with one precise error."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantgate.catalog import CATALOG_ENV, Catalog, ModelSpec, load_catalog
from quantgate.errors import QuantgateError

REPO = Path(__file__).resolve().parents[1]
CATALOG_DIR = REPO / "suites" / "catalog"

MODELS = ["Qwen-1.5B", "Qwen-7B", "Llama-8B", "Qwen-14B", "Qwen-32B", "Llama-70B"]
SCHEMES = ["bf16", "fp8-w8a8", "int8-w8a8", "int4-w4a16"]
GPUS = ["a6000", "a100", "h100", "h200", "l40s", "cpu"]
BENCHMARKS = [
    "aime24", "math_500", "gpqa_diamond",
    "arc_challenge", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k",
    "reasoning_avg", "openllm_v1_avg",
]  # fmt: skip
WORKLOADS = {
    "instruction-following": (256, 128),
    "multi-turn-chat": (512, 256),
    "docstring-generation": (768, 128),
    "rag": (1024, 128),
    "code-completion": (256, 1024),
    "code-fixing": (1024, 1024),
    "large-summarization": (4096, 512),
    "large-rag": (10240, 1536),
}
SCENARIOS = ["single-stream", "multi-stream", "server"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CATALOG_DIR)


def test_real_catalog_has_every_expected_key(catalog: Catalog) -> None:
    assert list(catalog.models) == MODELS
    assert list(catalog.schemes) == SCHEMES
    assert list(catalog.gpus) == GPUS
    assert list(catalog.benchmarks) == BENCHMARKS
    assert list(catalog.workloads) == list(WORKLOADS)
    assert list(catalog.scenarios) == SCENARIOS
    composites = [k for k, b in catalog.benchmarks.items() if b.kind == "composite"]
    assert composites == ["reasoning_avg", "openllm_v1_avg"]
    for key, (prompt, output) in WORKLOADS.items():
        spec = catalog.workload(key)
        assert (spec.prompt_tokens, spec.output_tokens) == (prompt, output)


def test_default_location_and_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    assert load_catalog().directory == CATALOG_DIR.resolve()
    copy = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, copy)
    monkeypatch.setenv(CATALOG_ENV, str(copy))
    assert load_catalog().directory == copy.resolve()
    monkeypatch.setenv(CATALOG_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(QuantgateError, match=r"catalog directory not found.*QUANTGATE_CATALOG"):
        load_catalog()


def test_loading_is_cached(catalog: Catalog) -> None:
    assert load_catalog(CATALOG_DIR) is catalog


def _params_from_architecture(m: ModelSpec) -> int:
    """Parameter count of a Llama / Qwen2 decoder (Qwen2 has q/k/v biases)."""
    q = m.attention_heads * m.head_dim
    kv = m.kv_heads * m.head_dim
    attention = m.hidden_size * q + 2 * m.hidden_size * kv + q * m.hidden_size
    if m.family == "qwen2":
        attention += q + 2 * kv
    layer = attention + 3 * m.hidden_size * m.intermediate_size + 2 * m.hidden_size
    embeddings = m.vocab_size * m.hidden_size * (1 if m.tied_embeddings else 2)
    return m.layers * layer + embeddings + m.hidden_size


@pytest.mark.parametrize("key", MODELS)
def test_architecture_reproduces_parameter_count(catalog: Catalog, key: str) -> None:
    model = catalog.model(key)
    assert model.params_b == pytest.approx(_params_from_architecture(model) / 1e9, rel=0.004)
    assert model.head_dim * model.attention_heads == model.hidden_size
    assert model.bf16_repo == f"deepseek-ai/{model.name}"
    for scheme, repo in model.quantized_repos.items():
        assert repo == f"RedHatAI/{model.name}{catalog.scheme(scheme).repo_suffix}"


def test_exact_safetensors_totals() -> None:
    """Hugging Face API totals for two of the checkpoints (see the comment in models.yaml)."""
    catalog = load_catalog(CATALOG_DIR)
    assert _params_from_architecture(catalog.model("Llama-8B")) == 8_030_261_248
    assert _params_from_architecture(catalog.model("Qwen-32B")) == 32_763_876_352


def test_size_classes(catalog: Catalog) -> None:
    assert {k: m.size_class for k, m in catalog.models.items()} == {
        "Qwen-1.5B": "small",
        "Qwen-7B": "medium",
        "Llama-8B": "medium",
        "Qwen-14B": "medium",
        "Qwen-32B": "large",
        "Llama-70B": "large",
    }


# compressed-tensors presets (src/compressed_tensors/quantization/quant_scheme.py): FP8_DYNAMIC, W8A8, W4A16.
PRESETS: dict[str, dict[str, Any]] = {
    "fp8-w8a8": {
        "format": "float-quantized",
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "group_size": None,
                    "symmetric": True, "dynamic": False},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "group_size": None,
                              "symmetric": True, "dynamic": True},
        "ignore": ["lm_head"],
    },
    "int8-w8a8": {
        "format": "int-quantized",
        "weights": {"num_bits": 8, "type": "int", "strategy": "channel", "group_size": None,
                    "symmetric": True, "dynamic": False},
        "input_activations": {"num_bits": 8, "type": "int", "strategy": "token", "group_size": None,
                              "symmetric": True, "dynamic": True},
        "ignore": ["lm_head"],
    },
    "int4-w4a16": {
        "format": "pack-quantized",
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                    "symmetric": True, "dynamic": False},
        "input_activations": None,
        "ignore": ["lm_head"],
    },
    "bf16": {"format": None, "weights": None, "input_activations": None, "ignore": []},
}  # fmt: skip


@pytest.mark.parametrize("key", SCHEMES)
def test_scheme_signatures_match_compressed_tensors_presets(catalog: Catalog, key: str) -> None:
    assert catalog.scheme(key).signature.model_dump() == PRESETS[key]


def test_gpu_kinds(catalog: Catalog) -> None:
    table = {k: (g.memory_gb, g.compute_capability) for k, g in catalog.gpus.items()}
    assert table == {
        "a6000": (48, 8.6),
        "a100": (80, 8.0),
        "h100": (80, 9.0),
        "h200": (141, 9.0),
        "l40s": (48, 8.9),
        "cpu": (None, None),
    }
    assert all(g.marker == k for k, g in catalog.gpus.items())
    assert catalog.scheme("fp8-w8a8").min_compute_capability == 8.9


@pytest.mark.parametrize(
    ("kind", "name", "key"),
    [
        ("model", "DeepSeek-R1-Distill-Qwen-1.5B", "Qwen-1.5B"),
        ("model", "DeepSeek-R1-Distill-Llama-70B", "Llama-70B"),
        ("scheme", "fp8", "fp8-w8a8"),
        ("scheme", "w8a8", "int8-w8a8"),
        ("scheme", "w4a16", "int4-w4a16"),
        ("scheme", "bf16", "bf16"),
        ("benchmark", "AIME2024_pass@1", "aime24"),
        ("benchmark", "ARC-C_accnorm_25shot", "arc_challenge"),
        ("benchmark", "Reasoning_avg", "reasoning_avg"),
        ("benchmark", "OpenLLMv1_avg", "openllm_v1_avg"),
        ("workload", "Instruction Following", "instruction-following"),
        ("workload", "Large RAG", "large-rag"),
        ("scenario", "single-stream (synchronous)", "single-stream"),
        ("scenario", "multi-stream asynchronous", "multi-stream"),
        ("gpu", "A6000", "a6000"),
        ("gpu", "H100", "h100"),
        ("gpu", "NVIDIA A100-SXM4-80GB", "a100"),
    ],
)
def test_by_published(catalog: Catalog, kind: Any, name: str, key: str) -> None:
    assert catalog.by_published(kind, name) == key


def test_unknown_lookups_name_the_file_and_the_known_keys(catalog: Catalog) -> None:
    with pytest.raises(QuantgateError) as err:
        catalog.model("Qwen-3B")
    assert err.value.source is not None
    assert err.value.source.endswith("models.yaml")
    assert "Qwen-3B" in str(err.value)
    assert "Qwen-1.5B, Qwen-7B" in str(err.value)
    with pytest.raises(QuantgateError, match=r"benchmarks\.yaml.*HumanEval_pass@1.*AIME2024_pass@1"):
        catalog.by_published("benchmark", "HumanEval_pass@1")
    with pytest.raises(QuantgateError, match=r"scenarios\.yaml"):
        catalog.scenario("offline")


# ---- broken catalogs -------------------------------------------------------------------------------

Mutation = Callable[[Path], None]


def edit(filename: str, change: Callable[[dict[str, Any]], None]) -> Mutation:
    """Load one catalog file, change it, write it back (comments are lost; irrelevant here)."""

    def apply(directory: Path) -> None:
        path = directory / filename
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    return apply


def append_text(filename: str, text: str) -> Mutation:
    def apply(directory: Path) -> None:
        with (directory / filename).open("a", encoding="utf-8") as handle:
            handle.write(text)

    return apply


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    for part in parents:
        doc = doc[part]
    doc[last] = value


def _delete(doc: dict[str, Any], path: str) -> None:
    *parents, last = path.split("/")
    for part in parents:
        doc = doc[part]
    del doc[last]


BAD_CASES: list[tuple[str, Mutation, str, str | None, list[str]]] = [
    (
        "enum value",
        edit("models.yaml", lambda d: _set(d, "models/Qwen-7B/family", "mistral")),
        "models.yaml", "models.Qwen-7B.family", ["'qwen2'", "'llama'"],
    ),
    (
        "nested enum value",
        edit("schemes.yaml", lambda d: _set(d, "schemes/int4-w4a16/signature/weights/type", "nf4")),
        "schemes.yaml", "schemes.int4-w4a16.signature.weights.type", ["'float'", "'int'"],
    ),
    (
        "scenario metric",
        edit("scenarios.yaml", lambda d: _set(d, "scenarios/server/metric", "tokens_per_s")),
        "scenarios.yaml", "scenarios.server.metric", ["'latency_s'", "'max_qps'", "'goodput_qps'"],
    ),
    (
        "unknown field",
        edit("gpus.yaml", lambda d: _set(d, "gpus/h100/vram_gb", 80)),
        "gpus.yaml", "gpus.h100.vram_gb", ["unknown field"],
    ),
    (
        "unknown top-level field",
        edit("workloads.yaml", lambda d: _set(d, "extras", {})),
        "workloads.yaml", "extras", ["unknown field"],
    ),
    (
        "missing field",
        edit("models.yaml", lambda d: _delete(d, "models/Qwen-14B/kv_heads")),
        "models.yaml", "models.Qwen-14B.kv_heads", ["Field required"],
    ),
    (
        "wrong type",
        edit("models.yaml", lambda d: _set(d, "models/Llama-8B/layers", "thirty-two")),
        "models.yaml", "models.Llama-8B.layers", ["integer"],
    ),
    (
        "missing schema_version",
        edit("workloads.yaml", lambda d: _delete(d, "schema_version")),
        "workloads.yaml", "schema_version", ["missing", "version 1"],
    ),
    (
        "schema_version 2",
        edit("benchmarks.yaml", lambda d: _set(d, "schema_version", 2)),
        "benchmarks.yaml", "schema_version", ["version 2 is not supported", "reads 1"],
    ),
    (
        "duplicated key",
        append_text("models.yaml", "  Qwen-7B:\n    name: again\n"),
        "models.yaml", None, ["duplicated key 'Qwen-7B'"],
    ),
    (
        "composite member unknown",
        edit("benchmarks.yaml", lambda d: _set(d, "benchmarks/reasoning_avg/members", ["aime24", "aime25"])),
        "benchmarks.yaml", "benchmarks.reasoning_avg.members[1]", ["'aime25'", "aime24, math_500"],
    ),
    (
        "composite member of another family",
        edit("benchmarks.yaml", lambda d: _set(d, "benchmarks/reasoning_avg/members", ["aime24", "gsm8k"])),
        "benchmarks.yaml", "benchmarks.reasoning_avg.members[1]", ["'gsm8k' is openllm_v1/deterministic"],
    ),
    (
        "sampled task without sampling",
        edit("benchmarks.yaml", lambda d: _set(d, "benchmarks/aime24/sampling", None)),
        "benchmarks.yaml", "benchmarks.aime24", ["sampling is required"],
    ),
    (
        "quantized repo of an unknown scheme",
        edit("models.yaml", lambda d: _set(d, "models/Llama-8B/quantized_repos/int3-w3a16", "x/y")),
        "models.yaml", "models.Llama-8B.quantized_repos.int3-w3a16", ["fp8-w8a8, int8-w8a8, int4-w4a16"],
    ),
    (
        "quantized repo for bf16",
        edit("models.yaml", lambda d: _set(d, "models/Qwen-1.5B/quantized_repos/bf16", "x/y")),
        "models.yaml", "models.Qwen-1.5B.quantized_repos.bf16", ["not a quantized scheme"],
    ),
    (
        "repo without the scheme suffix",
        edit("models.yaml", lambda d: _set(d, "models/Qwen-32B/quantized_repos/fp8-w8a8", "RedHatAI/x-FP8")),
        "models.yaml", "models.Qwen-32B.quantized_repos.fp8-w8a8", ["does not end with '-FP8-dynamic'"],
    ),
    (
        "marker differs from key",
        edit("gpus.yaml", lambda d: _set(d, "gpus/l40s/marker", "l40")),
        "gpus.yaml", "gpus.l40s.marker", ["must equal the key 'l40s'"],
    ),
    (
        "published key used twice",
        edit("schemes.yaml", lambda d: _set(d, "schemes/int8-w8a8/published_key", "fp8")),
        "schemes.yaml", "schemes.int8-w8a8", ["published name 'fp8' is also used by 'fp8-w8a8'"],
    ),
    (
        "weight bits disagree with the signature",
        edit("schemes.yaml", lambda d: _set(d, "schemes/int4-w4a16/weight_bits", 8)),
        "schemes.yaml", "schemes.int4-w4a16", ["weight_bits 8 differs"],
    ),
    (
        "section empty",
        edit("scenarios.yaml", lambda d: _set(d, "scenarios", {})),
        "scenarios.yaml", "scenarios", ["non-empty mapping"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "filename", "where", "fragments"),
    [pytest.param(m, f, w, s, id=name) for name, m, f, w, s in BAD_CASES],
)
def test_bad_catalog_is_one_precise_error(
    tmp_path: Path, mutate: Mutation, filename: str, where: str | None, fragments: list[str]
) -> None:
    directory = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, directory)
    mutate(directory)
    with pytest.raises(QuantgateError) as err:
        load_catalog(directory)
    message = str(err.value)
    assert err.value.source == str((directory / filename).resolve())
    assert filename in message
    if where is not None:
        assert err.value.where == where
        assert where in message
    for fragment in fragments:
        assert fragment in message, message
