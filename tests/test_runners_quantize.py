"""The written ``quantization_config`` must be the scheme's compressed-tensors signature.

The configs under ``tests/data/checkpoints`` are transcribed from llmcompressor 0.14.0.1 runs on this
machine kind (shared/reference/cpu-feasibility.md); the CPU lane checks freshly written ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgate.catalog import load_catalog
from quantgate.errors import QuantgateError
from quantgate.runners.quantize import check_signature, recipe_path

DATA = Path(__file__).parent / "data" / "checkpoints"
CATALOG = load_catalog()


@pytest.mark.parametrize("scheme", ["bf16", "fp8-w8a8", "int8-w8a8", "int4-w4a16"])
def test_recorded_checkpoints_match_their_scheme(scheme: str) -> None:
    check_signature(DATA / f"{scheme}.config.json", scheme, CATALOG.schemes[scheme])


@pytest.mark.parametrize(
    ("written", "claimed", "where"),
    [
        ("int4-w4a16", "int8-w8a8", "format"),
        ("fp8-w8a8", "int8-w8a8", "format"),
        ("int8-w8a8", "fp8-w8a8", "format"),
        ("bf16", "int4-w4a16", "quantization_config"),
        ("int4-w4a16", "bf16", "quantization_config"),
    ],
)
def test_a_checkpoint_of_another_scheme_is_refused(written: str, claimed: str, where: str) -> None:
    with pytest.raises(QuantgateError, match=where):
        check_signature(DATA / f"{written}.config.json", claimed, CATALOG.schemes[claimed])


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (("weights", "group_size", 64), "weights.group_size: is 64, the scheme needs 128"),
        (("weights", "symmetric", False), "weights.symmetric"),
        (("weights", "num_bits", 8), "weights.num_bits"),
    ],
)
def test_a_drifted_field_is_named(tmp_path: Path, change: tuple[str, str, object], where: str) -> None:
    config = json.loads((DATA / "int4-w4a16.config.json").read_text())
    part, field, value = change
    config["quantization_config"]["config_groups"]["group_0"][part][field] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(QuantgateError) as info:
        check_signature(path, "int4-w4a16", CATALOG.schemes["int4-w4a16"])
    assert str(path) in str(info.value)
    assert where in str(info.value)


def test_lm_head_must_stay_unquantized(tmp_path: Path) -> None:
    config = json.loads((DATA / "fp8-w8a8.config.json").read_text())
    config["quantization_config"]["ignore"] = []
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(QuantgateError, match=r"must keep \['lm_head'\] unquantized"):
        check_signature(path, "fp8-w8a8", CATALOG.schemes["fp8-w8a8"])


def test_every_quantized_scheme_has_a_recipe() -> None:
    for scheme in CATALOG.quantized_schemes():
        assert recipe_path(scheme).read_text().startswith("#")
    with pytest.raises(QuantgateError, match="no llmcompressor recipe"):
        recipe_path("int3-w3a16")
