"""One cell's result, as every report shows it: the matrix suite's cells (every kind) and a replay's.

A suite builds a ``CellResult`` from its judged outcome (``quantgate.outcomes``), the lane session
carries it to the controller, and the report, the terminal summary and the charts read its fields by
name. ``cells.json`` stores it flat (``to_record``), and ``from_record`` reads it back with one error
naming the file and field of anything it does not know, so a report can be re-rendered from a run's
file (``quantgate report``). ``kind`` ``quantize`` is a served model's checkpoint step (its seconds).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from quantgate.errors import QuantgateError

if TYPE_CHECKING:
    from quantgate.matrix import MatrixCell

Kind = Literal["accuracy", "speed", "quantize"]


@dataclass(frozen=True, kw_only=True)
class CellResult:
    """What a cell decided and the figures behind it; ``verdict`` is ``None`` for a BF16 speed reference."""

    cell: str
    kind: Kind
    model: str
    scheme: str
    gpu: str | None = None
    benchmark: str | None = None
    scenario: str | None = None
    workload: str | None = None
    verdict: str | None = None
    gating: bool = True
    rule: str | None = None
    floor: float | None = None
    recovery: float | None = None
    speedup: float | None = None
    low: float | None = None
    high: float | None = None
    detail: str = ""
    cuts: tuple[str, ...] = ()
    # accuracy
    score: float | None = None
    reference_score: float | None = None
    samples: int | None = None
    looks: tuple[int, ...] = ()
    seconds: float | None = None
    output_tokens: float | None = None
    reference_output_tokens: float | None = None
    length_ratio: float | None = None
    tokens_per_solved: float | None = None
    seconds_per_solved: float | None = None
    answers: int | None = None
    cut_answers: int | None = None
    # speed
    metric: str | None = None
    unit: str | None = None
    figures: tuple[float, ...] = ()
    median: float | None = None
    bf16_median: float | None = None
    geomean: float | None = None
    bf16_geomean: float | None = None
    gpus: int = 1
    bf16_gpus: int = 1
    per_gpu_speedup: float | None = None
    # quantize
    reused: bool = False

    @classmethod
    def for_cell(cls, cell: MatrixCell, kind: Kind) -> CellResult:
        """A result that names ``cell`` and nothing more yet (``dataclasses.replace`` adds the figures)."""
        return cls(
            cell=cell.cell_id,
            kind=kind,
            model=cell.model,
            scheme=cell.scheme,
            gpu=cell.gpu,
            benchmark=cell.benchmark,
            scenario=cell.scenario,
            workload=cell.workload,
        )

    @property
    def target(self) -> str:
        """The benchmark of an accuracy cell, the scenario of a speed cell."""
        return self.benchmark or self.scenario or ""

    @property
    def figure(self) -> float | None:
        """Recovery or speedup, where finite."""
        value = self.recovery if self.kind == "accuracy" else self.speedup
        return value if value is not None and math.isfinite(value) else None

    def to_record(self) -> dict[str, Any]:
        """The flat JSON form (``cells.json``'s ``records``); fields left at their default are omitted."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.default is not dataclasses.MISSING and value == spec.default:
                continue
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any], source: str, where: str) -> CellResult:
        """A result from its flat JSON form; anything unknown or of the wrong type names ``where``."""
        if not isinstance(record, Mapping):
            raise QuantgateError(source, "must be a mapping", where)
        known = {spec.name: spec for spec in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in record.items():
            if key not in known:
                raise QuantgateError(source, f"unknown field {key!r}", where)
            values[key] = _checked(known[key].type, value, source, f"{where}.{key}")
        missing = [name for name in ("cell", "kind", "model", "scheme") if name not in values]
        if missing:
            raise QuantgateError(source, f"missing {', '.join(missing)}", where)
        if values["kind"] not in get_args(Kind):
            raise QuantgateError(source, f"kind must be one of {get_args(Kind)}", f"{where}.kind")
        return cls(**values)


def _checked(annotation: object, value: Any, source: str, where: str) -> Any:
    """``value`` as the field's type (tuples from JSON lists), or one error naming ``where``."""
    text = str(annotation)
    if value is None and "None" in text:
        return None
    if text.startswith("tuple"):
        item = int if "int" in text else float if "float" in text else str
        if isinstance(value, list) and all(_is(item, v) for v in value):
            return tuple(value)
    elif "bool" in text:
        if isinstance(value, bool):
            return value
    elif "float" in text:
        if _is(float, value):
            return float(value)
    elif "int" in text:
        if _is(int, value):
            return value
    elif isinstance(value, str):
        return value
    raise QuantgateError(source, f"must be {text}, got {value!r}", where)


def _is(kind: type, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
