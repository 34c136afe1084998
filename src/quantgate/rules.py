"""Recovery and speedup floors as data, and the one rule that decides each cell.

Rules live in ``baselines/rules.yaml``. Each rule has selectors (scheme, model, parameter-count
range, benchmark or workload, family, GPU kind, scenario; a list means "any of") and a floor. For a
cell, the most specific matching rule decides; a rule without ``floor`` changes only the mode
(e.g. "informational") and takes the floor of the most specific matching rule that has one. Equally
specific matches are an ambiguity error and a cell with no match is an error, so no cell is ever
judged by accident or silently left out. Adding a threshold for a new model is one entry with
``model:``, which outranks every size-based rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from quantgate import paths
from quantgate.datafile import Strict, load_model
from quantgate.errors import QuantgateError

RULES_SCHEMA_VERSION = 1
Mode = Literal["gate", "informational"]


def _as_tuple(value: object) -> object:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(value)
    return value


class _Rule(Strict):
    id: str = Field(min_length=1)
    floor: float | None = Field(default=None, gt=0.0, le=10.0)
    mode: Mode = "gate"
    source: str = Field(min_length=1)
    scheme: tuple[str, ...] | None = None
    model: tuple[str, ...] | None = None
    min_params_b: float | None = Field(default=None, ge=0.0)
    max_params_b: float | None = Field(default=None, ge=0.0)
    family: tuple[str, ...] | None = None

    _normalise = field_validator("scheme", "model", "family", mode="before")(_as_tuple)

    @model_validator(mode="after")
    def _size_range(self) -> _Rule:
        if (
            self.min_params_b is not None
            and self.max_params_b is not None
            and self.min_params_b > self.max_params_b
        ):
            raise ValueError("min_params_b is above max_params_b")
        return self


class RecoveryRule(_Rule):
    benchmark: tuple[str, ...] | None = None

    _normalise_benchmark = field_validator("benchmark", mode="before")(_as_tuple)


class SpeedupRule(_Rule):
    gpu: tuple[str, ...] | None = None
    scenario: tuple[str, ...] | None = None
    workload: tuple[str, ...] | None = None

    _normalise_more = field_validator("gpu", "scenario", "workload", mode="before")(_as_tuple)


class RulesFile(Strict):
    schema_version: int
    recovery: tuple[RecoveryRule, ...]
    speedup: tuple[SpeedupRule, ...]


@dataclass(frozen=True)
class AccuracyCellKey:
    model: str
    params_b: float
    scheme: str
    benchmark: str
    family: str


@dataclass(frozen=True)
class SpeedCellKey:
    model: str
    params_b: float
    scheme: str
    gpu: str
    scenario: str
    workload: str


@dataclass(frozen=True)
class Decision:
    """The rule that decides a cell, with where it came from."""

    rule_id: str
    floor: float
    mode: Mode
    source: str
    rules_file: str

    @property
    def gating(self) -> bool:
        return self.mode == "gate"


def _in(selector: tuple[str, ...] | None, value: str) -> bool:
    return selector is None or value in selector


def _size_ok(rule: _Rule, params_b: float) -> bool:
    if rule.min_params_b is not None and params_b < rule.min_params_b:
        return False
    return not (rule.max_params_b is not None and params_b > rule.max_params_b)


# The selectors a rule and a cell key share by name, per kind of rule (the size range is checked apart).
_RECOVERY_SELECTORS = ("scheme", "model", "benchmark", "family")
_SPEEDUP_SELECTORS = ("scheme", "model", "gpu", "scenario", "workload")


def _matches(rule: _Rule, cell: AccuracyCellKey | SpeedCellKey, selectors: Sequence[str]) -> bool:
    """Whether each of the rule's ``selectors`` admits the cell's value and its size range the cell's size."""
    admitted = all(_in(getattr(rule, name), getattr(cell, name)) for name in selectors)
    return admitted and _size_ok(rule, cell.params_b)


def _specificity(rule: _Rule, task: tuple[str, ...] | None, extra: Sequence[object]) -> tuple[bool, ...]:
    sized = rule.min_params_b is not None or rule.max_params_b is not None
    return (
        rule.model is not None,
        task is not None,
        sized,
        rule.family is not None,
        *(x is not None for x in extra),
        rule.scheme is not None,
    )


@dataclass(frozen=True)
class Rules:
    path: str
    recovery: tuple[RecoveryRule, ...]
    speedup: tuple[SpeedupRule, ...]

    def recovery_for(self, cell: AccuracyCellKey) -> Decision:
        matches = [
            (_specificity(r, r.benchmark, ()), r)
            for r in self.recovery
            if _matches(r, cell, _RECOVERY_SELECTORS)
        ]
        label = f"{cell.model}/{cell.scheme}/{cell.benchmark}"
        return self._pick(matches, "recovery", label)

    def speedup_for(self, cell: SpeedCellKey) -> Decision:
        matches = [
            (_specificity(r, r.workload, (r.gpu, r.scenario)), r)
            for r in self.speedup
            if _matches(r, cell, _SPEEDUP_SELECTORS)
        ]
        label = f"{cell.model}/{cell.scheme}/{cell.gpu}/{cell.scenario}/{cell.workload}"
        return self._pick(matches, "speedup", label)

    def _pick(self, found: Sequence[tuple[tuple[bool, ...], _Rule]], kind: str, label: str) -> Decision:
        """The most specific match decides the mode; the most specific match with a floor, the floor."""
        if not found:
            raise QuantgateError(self.path, f"no {kind} rule decides cell {label}", kind)
        top = self._most_specific(list(found), kind, label)
        floored = (
            top
            if top.floor is not None
            else self._most_specific([pair for pair in found if pair[1].floor is not None], kind, label)
        )
        assert floored.floor is not None
        rule_id = top.id if floored is top else f"{top.id}+{floored.id}"
        source = top.source if floored is top else f"{top.source}; floor: {floored.source}"
        return Decision(rule_id, floored.floor, top.mode, source, self.path)

    def _most_specific(self, matches: list[tuple[tuple[bool, ...], _Rule]], kind: str, label: str) -> _Rule:
        if not matches:
            raise QuantgateError(self.path, f"no {kind} rule with a floor decides cell {label}", kind)
        matches.sort(key=lambda pair: pair[0], reverse=True)
        best_key, best = matches[0]
        tied = [r.id for key, r in matches[1:] if key == best_key]
        if tied:
            raise QuantgateError(
                self.path,
                f"rules {best.id!r} and {tied[0]!r} are equally specific for cell {label}; "
                "make one more specific",
                kind,
            )
        return best


def _check_unique_ids(rules: Iterable[_Rule], path: Path, kind: str) -> None:
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.id in seen:
            raise QuantgateError(path, f"duplicated rule id {rule.id!r}", f"{kind}[{index}].id")
        seen.add(rule.id)


def default_rules_path() -> Path:
    return paths.rules_file()


@lru_cache(maxsize=8)
def _load(path: Path) -> Rules:
    data = load_model(RulesFile, path, "rules", RULES_SCHEMA_VERSION)
    _check_unique_ids(data.recovery, path, "recovery")
    _check_unique_ids(data.speedup, path, "speedup")
    return Rules(str(path), data.recovery, data.speedup)


def load_rules(path: str | Path | None = None) -> Rules:
    return _load(Path(path or default_rules_path()).resolve())


def check_known_keys(
    rules: Rules,
    *,
    schemes: Iterable[str],
    models: Iterable[str],
    benchmarks: Iterable[str],
    families: Iterable[str],
    gpus: Iterable[str],
    scenarios: Iterable[str],
    workloads: Iterable[str],
) -> None:
    """Refuse selectors that name nothing in the catalog (a typo would otherwise match no cell)."""
    known = {
        "scheme": set(schemes),
        "model": set(models),
        "benchmark": set(benchmarks),
        "family": set(families),
        "gpu": set(gpus),
        "scenario": set(scenarios),
        "workload": set(workloads),
    }
    for kind, group in (("recovery", rules.recovery), ("speedup", rules.speedup)):
        for index, rule in enumerate(group):
            for field, allowed in known.items():
                values = getattr(rule, field, None)
                for value in values or ():
                    if value not in allowed:
                        raise QuantgateError(
                            rules.path,
                            f"unknown {field} {value!r}; known: {', '.join(sorted(allowed))}",
                            f"{kind}[{index}].{field}",
                        )
