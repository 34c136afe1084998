"""Quantize a local checkpoint with llmcompressor, then check what it wrote against the scheme.

The recipes are data (``fixtures/data/recipes/<scheme>.yaml``); the run happens in the quantize
environment's interpreter through ``drivers/oneshot.py``. Afterwards the checkpoint's
``quantization_config`` must carry the scheme's compressed-tensors signature from the catalog (format,
bits, type, strategy, group size, symmetry, dynamic activations, ignored layers): a recipe that
silently produced something else is a failure, not a cell with the wrong label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantgate import paths
from quantgate.catalog import QuantArgs, SchemeSpec
from quantgate.errors import QuantgateError
from quantgate.runners.process import run_tool

DRIVER = Path(__file__).resolve().parent / "drivers" / "oneshot.py"


@dataclass(frozen=True)
class Quantized:
    scheme: str
    path: Path
    seconds: float
    log: Path


def recipe_path(scheme: str, directory: Path | None = None) -> Path:
    path = (directory or paths.recipes_dir()) / f"{scheme}.yaml"
    if not path.is_file():
        raise QuantgateError(path, f"no llmcompressor recipe for scheme {scheme!r}")
    return path


def _check_args(path: Path, where: str, found: Any, expected: QuantArgs) -> None:
    if not isinstance(found, Mapping):
        raise QuantgateError(path, f"missing; the scheme needs {expected.model_dump()}", where)
    for field, want in expected.model_dump().items():
        got = found.get(field)
        if got != want:
            raise QuantgateError(path, f"is {got!r}, the scheme needs {want!r}", f"{where}.{field}")


def check_signature(config_path: Path, scheme_key: str, scheme: SchemeSpec) -> None:
    """Refuse a checkpoint whose ``quantization_config`` is not the scheme's signature."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise QuantgateError(config_path, f"cannot read the checkpoint config: {exc}") from None
    signature = scheme.signature
    qc = config.get("quantization_config")
    if signature.format is None:
        if qc is not None:
            raise QuantgateError(
                config_path, f"a {scheme_key} checkpoint must not be quantized", "quantization_config"
            )
        return
    if not isinstance(qc, Mapping):
        raise QuantgateError(
            config_path, f"missing; a {scheme_key} checkpoint needs one", "quantization_config"
        )
    if qc.get("quant_method") != "compressed-tensors":
        raise QuantgateError(
            config_path,
            f"is {qc.get('quant_method')!r}, expected 'compressed-tensors'",
            "quantization_config.quant_method",
        )
    groups = qc.get("config_groups")
    if not isinstance(groups, Mapping) or len(groups) != 1:
        raise QuantgateError(
            config_path, "expected exactly one config group", "quantization_config.config_groups"
        )
    name, group = next(iter(groups.items()))
    where = f"quantization_config.config_groups.{name}"
    group_format = group.get("format") or qc.get("format")
    if group_format != signature.format:
        raise QuantgateError(
            config_path, f"is {group_format!r}, the scheme needs {signature.format!r}", f"{where}.format"
        )
    assert signature.weights is not None
    _check_args(config_path, f"{where}.weights", group.get("weights"), signature.weights)
    activations = group.get("input_activations")
    if signature.input_activations is None:
        if activations is not None:
            raise QuantgateError(
                config_path, "must be null for a weight-only scheme", f"{where}.input_activations"
            )
    else:
        _check_args(config_path, f"{where}.input_activations", activations, signature.input_activations)
    ignore = qc.get("ignore") or []
    missing = [layer for layer in signature.ignore if layer not in ignore]
    if missing:
        raise QuantgateError(config_path, f"must keep {missing} unquantized", "quantization_config.ignore")


def quantize(
    python: Path,
    model_dir: Path,
    scheme_key: str,
    scheme: SchemeSpec,
    out_dir: Path,
    log_dir: Path,
    *,
    calibration: Path | None = None,
    samples: int = 128,
    max_seq_length: int = 128,
    seed: int = 0,
    timeout: float = 1800.0,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> Quantized:
    """Run ``oneshot`` for ``scheme_key`` on ``model_dir`` into ``out_dir`` and check the result."""
    command = [
        str(python),
        str(DRIVER),
        "--model",
        str(model_dir),
        "--recipe",
        str(recipe_path(scheme_key)),
        "--out",
        str(out_dir),
        "--samples",
        str(samples),
        "--max-seq-length",
        str(max_seq_length),
        "--seed",
        str(seed),
        *extra,
    ]
    if calibration is not None:
        command += ["--calibration", str(calibration)]
    log = log_dir / f"quantize-{out_dir.name.removesuffix('.partial')}.log"
    seconds = run_tool(f"llmcompressor oneshot ({scheme_key})", command, log, timeout, env=env)
    check_signature(out_dir / "config.json", scheme_key, scheme)
    return Quantized(scheme_key, out_dir, seconds, log)
