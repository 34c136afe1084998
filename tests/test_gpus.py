"""quantgate.devices: inventories (declared and NVML), memory fit, the card deployments, durations."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fake_nvml import H100, fake_nvml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantgate.catalog import Catalog, ModelSpec, load_catalog
from quantgate.devices.durations import Durations, load_durations, save_durations
from quantgate.devices.fit import (
    TP_SIZES,
    compute_path_problem,
    estimate_memory,
    fit_served_model,
    tp_problem,
    weight_bytes_per_gpu,
)
from quantgate.devices.inventory import GIB, InventoryUnavailable, declared_inventory, nvml_inventory
from quantgate.errors import QuantgateError
from quantgate.published import load_published

REPO = Path(__file__).resolve().parents[1]
CARDS = REPO / "baselines" / "published" / "cards-2025-02.json"
KIND = "quantgate-durations"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(REPO / "suites" / "catalog")


class TestDeclaredInventory:
    def test_eight_h100(self, catalog: Catalog) -> None:
        inv = declared_inventory("h100:8", catalog)
        assert [d.index for d in inv.devices] == list(range(8))
        assert {(d.kind, d.memory_gb, d.compute_capability) for d in inv.devices} == {("h100", 80, 9.0)}
        assert inv.summary() == "8x h100 (0-7)"

    def test_mixed_keeps_the_order_given(self, catalog: Catalog) -> None:
        inv = declared_inventory("a6000:4, h100:2", catalog)
        assert [d.kind for d in inv.devices] == ["a6000"] * 4 + ["h100"] * 2
        assert inv.summary() == "4x a6000 (0-3), 2x h100 (4-5)"
        assert declared_inventory("l40s", catalog).summary() == "1x l40s (0)"

    @pytest.mark.parametrize("spec", ["", "none", " NONE "])
    def test_none_is_empty(self, catalog: Catalog, spec: str) -> None:
        assert declared_inventory(spec, catalog).devices == ()

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("b200:2", "unknown GPU kind 'b200'; known: a6000, a100, h100, h200, l40s"),
            ("cpu:1", "unknown GPU kind 'cpu'"),
            ("h100:0", "count for h100 must be 1..64, got 0"),
            ("h100:x", "cannot read 'h100:x': expected KIND[:COUNT]"),
            ("h100:2,,a100:1", "cannot read ''"),
        ],
    )
    def test_bad_spec_is_one_clear_error(self, catalog: Catalog, spec: str, message: str) -> None:
        with pytest.raises(QuantgateError, match="GPU inventory") as info:
            declared_inventory(spec, catalog)
        assert message in str(info.value)

    def test_round_trips_through_json(self, catalog: Catalog) -> None:
        inv = declared_inventory("h100:2,a6000:1", catalog)
        assert type(inv).from_dict(json.loads(json.dumps(inv.as_dict()))) == inv


class TestNvmlInventory:
    NAMES: ClassVar[list[str | bytes]] = [H100, H100.encode(), "NVIDIA GeForce RTX 4090", H100]

    def inventory(self, monkeypatch: pytest.MonkeyPatch, catalog: Catalog, cvd: str | None) -> Any:
        monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(self.NAMES))
        env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
        return nvml_inventory(catalog, env)

    def test_all_devices_mapped_to_kinds(self, monkeypatch: pytest.MonkeyPatch, catalog: Catalog) -> None:
        inv = self.inventory(monkeypatch, catalog, None)
        assert [(d.index, d.kind) for d in inv.devices] == [(0, "h100"), (1, "h100"), (2, None), (3, "h100")]
        assert inv.devices[0].memory_gb == pytest.approx(79.65, abs=0.01)
        assert inv.devices[1].free_gb < inv.devices[0].free_gb
        assert inv.source == "NVML (driver 550.54.15)"
        assert "never used: NVIDIA GeForce RTX 4090" in str(inv.note)

    @pytest.mark.parametrize(
        ("cvd", "indices", "note"),
        [
            ("3,1", [3, 1], "restricted"),
            ("GPU-3333", [3], "restricted"),
            ("GPU-0000,2", [0, 2], "restricted"),
            ("0,7,1", [0], "'7' matches no single GPU"),
            ("0,0", [0], "'0' matches no single GPU"),
            ("GPU-", [], "matches no single GPU"),
            ("", [], "matches no single GPU"),
        ],
    )
    def test_cuda_visible_devices_is_honoured(
        self, monkeypatch: pytest.MonkeyPatch, catalog: Catalog, cvd: str, indices: list[int], note: str
    ) -> None:
        inv = self.inventory(monkeypatch, catalog, cvd)
        assert [d.index for d in inv.devices] == indices
        assert note in str(inv.note)

    def test_nvml_failure_is_inventory_unavailable(
        self, monkeypatch: pytest.MonkeyPatch, catalog: Catalog
    ) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([], fail="Driver Not Loaded"))
        with pytest.raises(InventoryUnavailable, match="cannot initialise: Driver Not Loaded"):
            nvml_inventory(catalog, {})

    def test_missing_library_says_what_to_install(
        self, monkeypatch: pytest.MonkeyPatch, catalog: Catalog
    ) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", None)
        with pytest.raises(InventoryUnavailable, match=r"nvidia-ml-py is not installed .*quantgate\[gpu\]"):
            nvml_inventory(catalog, {})

    def test_this_machine_answers_or_says_why(self, catalog: Catalog) -> None:
        """The real nvidia-ml-py: GPUs where there are some, else InventoryUnavailable (never a crash)."""
        outcome: Any
        try:
            outcome = nvml_inventory(catalog)
        except InventoryUnavailable as exc:
            outcome = exc
        assert isinstance(outcome, InventoryUnavailable) or outcome.source.startswith("NVML")
        assert str(outcome)


class TestFit:
    def test_bf16_weights_are_two_bytes_per_parameter(self, catalog: Catalog) -> None:
        for key, model in catalog.models.items():
            total = weight_bytes_per_gpu(model, catalog.scheme("bf16"), 1)
            assert total == pytest.approx(model.params_b * 2e9, rel=0.01), key

    def test_w4a16_costs_4_125_bits_per_linear_weight(self, catalog: Catalog) -> None:
        model, scheme = catalog.model("Llama-8B"), catalog.scheme("int4-w4a16")
        embeddings = 2 * model.vocab_size * model.hidden_size * 2 + model.hidden_size * 2
        norms = model.layers * 2 * model.hidden_size * 2
        linear = model.params_b * 1e9 - 2 * model.vocab_size * model.hidden_size
        expected = linear * 4.125 / 8 + embeddings + norms
        assert weight_bytes_per_gpu(model, scheme, 1) == pytest.approx(expected, rel=0.005)

    def test_w8a8_costs_one_byte_plus_fp32_channel_scales(self, catalog: Catalog) -> None:
        model = catalog.model("Qwen-7B")
        int8 = weight_bytes_per_gpu(model, catalog.scheme("int8-w8a8"), 1)
        fp8 = weight_bytes_per_gpu(model, catalog.scheme("fp8-w8a8"), 1)
        bf16 = weight_bytes_per_gpu(model, catalog.scheme("bf16"), 1)
        embeddings = 2 * 152064 * 3584 * 2
        assert int8 == fp8
        assert (int8 - embeddings) / (bf16 - embeddings) == pytest.approx(0.5, abs=0.002)

    def test_tensor_parallel_rules(self, catalog: Catalog) -> None:
        bf16, int4 = catalog.scheme("bf16"), catalog.scheme("int4-w4a16")
        assert tp_problem(catalog.model("Qwen-7B"), bf16, 8) == "tp8 does not divide attention_heads 28"
        assert tp_problem(catalog.model("Qwen-1.5B"), bf16, 4) is None  # 2 KV heads, replicated
        problem = tp_problem(catalog.model("Qwen-1.5B"), int4, 4)
        assert problem == "tp4 leaves 2240 down_proj inputs per GPU, not whole groups of 128"
        assert tp_problem(catalog.model("Llama-70B"), int4, 8) is None

    def test_smallest_tp_that_fits(self, catalog: Catalog) -> None:
        tokens = 65_536
        assert fit_served_model(catalog, "Llama-70B", "bf16", "h100", tokens).tp == 4
        assert fit_served_model(catalog, "Llama-70B", "bf16", "h200", tokens).tp == 2
        assert fit_served_model(catalog, "Llama-70B", "int4-w4a16", "h100", tokens).tp == 1
        assert fit_served_model(catalog, "Qwen-1.5B", "bf16", "a6000", tokens).tp == 1
        nothing = fit_served_model(catalog, "Llama-70B", "bf16", "a6000", 10_000_000)
        assert nothing.tp is None
        assert nothing.reason is not None
        assert nothing.reason.startswith("does not fit on a6000: tp1 needs")

    def test_fp8_below_ada_is_not_the_schemes_compute_path(self, catalog: Catalog) -> None:
        fp8 = catalog.scheme("fp8-w8a8")
        for gpu in ("a100", "a6000"):
            reason = compute_path_problem(fp8, catalog.gpu(gpu), gpu)
            assert reason is not None
            assert reason.startswith(
                "not the scheme's compute path: FP8 W8A8 needs compute capability >= 8.9 "
            )
            assert "FP8 Marlin" in reason
        for gpu in ("h100", "h200", "l40s"):
            assert compute_path_problem(fp8, catalog.gpu(gpu), gpu) is None
        for scheme in ("bf16", "int8-w8a8", "int4-w4a16"):
            for gpu in ("a100", "a6000", "h100", "l40s"):
                assert compute_path_problem(catalog.scheme(scheme), catalog.gpu(gpu), gpu) is None

    def test_the_catalog_decides_the_minimum(self, catalog: Catalog) -> None:
        relaxed = catalog.scheme("fp8-w8a8").model_copy(update={"min_compute_capability": 8.0})
        assert compute_path_problem(relaxed, catalog.gpu("a100"), "a100") is None
        strict = catalog.scheme("int8-w8a8").model_copy(update={"min_compute_capability": 9.0})
        assert compute_path_problem(strict, catalog.gpu("a100"), "a100") == (
            "INT8 W8A8 (GPTQ + SmoothQuant) needs compute capability >= 9; a100 has 8"
        )


def test_card_deployments_fit_at_the_cards_gpu_count(catalog: Catalog, record_property: Any) -> None:
    """Every (model, scheme, GPU, count) the cards measured fits at that count; we may need fewer."""
    published = load_published(CARDS, catalog)
    contexts: dict[tuple[str, str, str, int], int] = {}
    for perf in published.performance:
        workload = catalog.workload(perf.workload)
        key = (perf.model, perf.scheme, perf.gpu, perf.gpu_count)
        contexts[key] = max(contexts.get(key, 0), workload.prompt_tokens + workload.output_tokens)
    rows = ["MODEL      SCHEME      GPU    CARD  OURS  NEED/GPU AT CARD COUNT"]
    infeasible: list[str] = []
    differences = 0
    for (model, scheme, gpu, count), tokens in sorted(contexts.items()):
        spec, quant, kind = catalog.model(model), catalog.scheme(scheme), catalog.gpu(gpu)
        assert kind.memory_gb is not None
        assert compute_path_problem(quant, kind, gpu) is None, (model, scheme, gpu)
        at_card = estimate_memory(spec, quant, count, tokens, kind.memory_gb)
        ours = fit_served_model(catalog, model, scheme, gpu, tokens)
        if tp_problem(spec, quant, count) or not at_card.fits or ours.tp is None or ours.tp > count:
            infeasible.append(f"{model} {scheme} {gpu}x{count}: {at_card.need_gb:.1f} GiB")
        if ours.tp != count:
            differences += 1
            rows.append(
                f"{model:<10} {scheme:<11} {gpu:<6} {count:>4}  {ours.tp or '-':>4}  "
                f"{at_card.need_gb:5.1f} of {at_card.capacity_gb:.1f} GiB"
            )
    table = "\n".join(rows)
    record_property("card_fit_differences", table)
    print(table)
    assert not infeasible, f"the cards ran these, our fit says they do not fit:\n{infeasible}\n{table}"
    assert len(contexts) == 70
    assert 0 < differences < len(contexts)
    assert "Llama-70B  int4-w4a16  h100      4     1" in table
    assert "Llama-70B  bf16        h100      4     2" in table


@st.composite
def architectures(draw: st.DrawFn) -> ModelSpec:
    kv_heads = draw(st.sampled_from([1, 2, 4, 8, 16]))
    heads = kv_heads * draw(st.integers(1, 8))
    head_dim = draw(st.sampled_from([64, 128]))
    return ModelSpec(
        name="synthetic",
        family=draw(st.sampled_from(["qwen2", "llama"])),
        params_b=1.0,
        bf16_repo="x/synthetic",
        quantized_repos={},
        layers=draw(st.integers(1, 96)),
        hidden_size=heads * head_dim,
        intermediate_size=128 * draw(st.integers(8, 256)),
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=draw(st.integers(1000, 160_000)),
        max_context=131072,
        tied_embeddings=draw(st.booleans()),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=architectures(),
    scheme=st.sampled_from(["bf16", "fp8-w8a8", "int8-w8a8", "int4-w4a16"]),
    memory_gb=st.floats(8, 192),
    tokens=st.integers(1, 400_000),
)
def test_fit_is_the_smallest_valid_tp_within_budget(
    model: ModelSpec, scheme: str, memory_gb: float, tokens: int
) -> None:
    catalog = load_catalog(REPO / "suites" / "catalog")
    quant = catalog.scheme(scheme)
    estimates = {
        tp: estimate_memory(model, quant, tp, tokens, memory_gb)
        for tp in TP_SIZES
        if tp_problem(model, quant, tp) is None
    }
    chosen = next((tp for tp, e in estimates.items() if e.fits), None)
    for tp, e in estimates.items():
        assert e.need_gb == pytest.approx(e.weights_gb + e.activation_gb + e.runtime_gb + e.kv_gb)
        assert e.capacity_gb == pytest.approx(0.9 * memory_gb)
        assert e.kv_gb * GIB == pytest.approx(tokens * e.kv_bytes_per_token)
        if tp == chosen:
            assert e.need_gb <= e.capacity_gb
            assert e.kv_capacity_tokens >= tokens
        elif chosen is None or tp < chosen:
            assert e.need_gb > e.capacity_gb
    # weights shrink as they are spread over more GPUs, and so does the KV cache per GPU
    tps = sorted(estimates)
    for small, large in itertools.pairwise(tps):
        assert estimates[large].weights_gb < estimates[small].weights_gb
        assert estimates[large].kv_bytes_per_token <= estimates[small].kv_bytes_per_token


class TestDurations:
    def test_missing_file_is_empty_and_round_trip(self, tmp_path: Path) -> None:
        path = tmp_path / ".quantgate" / "durations.json"
        assert load_durations(path) == Durations()
        save_durations(path, Durations({"a-b": 1.25}, {"m/s/g/tp1": 90.0}))
        doc = json.loads(path.read_text())
        assert doc["schema_version"] == 1
        assert doc["kind"] == "quantgate-durations"
        assert load_durations(path) == Durations({"a-b": 1.25}, {"m/s/g/tp1": 90.0})

    @pytest.mark.parametrize(
        ("doc", "where"),
        [
            ({"schema_version": 2, "kind": KIND, "cells": {}, "served_models": {}}, "schema_version"),
            ({"schema_version": 1, "kind": KIND, "cells": {"x": -1}, "served_models": {}}, "cells.x"),
            ({"schema_version": 1, "kind": "other", "cells": {}, "served_models": {}}, "kind"),
        ],
    )
    def test_bad_file_names_file_and_field(self, tmp_path: Path, doc: dict[str, Any], where: str) -> None:
        path = tmp_path / "durations.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(QuantgateError, match=rf"{path}: {where}"):
            load_durations(path)
