"""Stored per-item references with provenance, written atomically and never replaced silently.

A reference holds, for one cell, each item's samples and correct count (and output tokens), so the
judge can pair a new run with it item by item and a reference can be topped up. Its provenance says
what produced it: model and checkpoint hashes, recipe, tool versions, sampling parameters, seed,
machine. A comparison whose provenance differs on a key that matters is refused with the differing
keys named; an update that changes provenance says so.

File: ``baselines/<lane>/<model>/<benchmark>.json``::

    {"schema_version": 1, "kind": "quantgate-reference",
     "cell": {"model": ..., "scheme": "bf16", "gpu": "cpu", "benchmark": ...},
     "provenance": {"model_sha256": ..., "vllm": ..., "temperature": "0.6", ...},
     "items": [{"item": "q0", "samples": 20, "correct": 13, "output_tokens": 14.5}, ...]}

A deterministic task (log-likelihood or greedy: one answer per item) stores ``samples: 1`` and, where
its metric is a fraction rather than right or wrong (TruthfulQA's mc2), the exact ``score`` in [0, 1]
(``correct`` is then the score rounded, so that counts stay whole).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from quantgate.datafile import Strict, atomic_write_text, load_model
from quantgate.errors import QuantgateError

REFERENCE_SCHEMA_VERSION = 1
REFERENCE_KIND = "quantgate-reference"

# Provenance keys that must agree for a comparison to mean anything.
MUST_MATCH = (
    "model_sha256",
    "tokenizer_sha256",
    "task_sha256",
    "temperature",
    "top_p",
    "max_tokens",
    "lighteval",
    "vllm",
)


class StoredItem(Strict):
    item: str = Field(min_length=1)
    samples: int = Field(ge=1)
    correct: int = Field(ge=0)
    output_tokens: float | None = Field(default=None, ge=0)
    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _correct_within_samples(self) -> StoredItem:
        if self.correct > self.samples:
            raise ValueError(f"correct ({self.correct}) exceeds samples ({self.samples})")
        if self.score is not None and self.samples != 1:
            raise ValueError(f"a score is stored for one deterministic answer, not {self.samples} samples")
        return self

    @property
    def value(self) -> float:
        """The item's score: the stored fraction, else correct / samples."""
        return self.score if self.score is not None else self.correct / self.samples


class CellKey(Strict):
    model: str
    scheme: str
    gpu: str
    benchmark: str


class Reference(Strict):
    schema_version: int
    kind: str
    cell: CellKey
    provenance: dict[str, str]
    items: tuple[StoredItem, ...] = Field(min_length=1)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value != REFERENCE_KIND:
            raise ValueError(f"must be {REFERENCE_KIND!r}")
        return value

    @field_validator("items")
    @classmethod
    def _unique_items(cls, items: tuple[StoredItem, ...]) -> tuple[StoredItem, ...]:
        seen: set[str] = set()
        for item in items:
            if item.item in seen:
                raise ValueError(f"item {item.item!r} appears twice")
            seen.add(item.item)
        return items

    def counts(self) -> dict[str, tuple[int, int]]:
        return {i.item: (i.samples, i.correct) for i in self.items}

    def scores(self) -> dict[str, float]:
        """Each item's score in [0, 1] (``StoredItem.value``): what a deterministic task is judged on."""
        return {i.item: i.value for i in self.items}


def make_reference(
    cell: Mapping[str, str], provenance: Mapping[str, str], items: Iterable[Mapping[str, object]]
) -> Reference:
    return Reference.model_validate(
        {
            "schema_version": REFERENCE_SCHEMA_VERSION,
            "kind": REFERENCE_KIND,
            "cell": dict(cell),
            "provenance": {k: str(v) for k, v in provenance.items()},
            "items": list(items),
        }
    )


def load_reference(path: str | Path) -> Reference:
    return load_model(Reference, path, "reference", REFERENCE_SCHEMA_VERSION)


def provenance_mismatch(
    stored: Mapping[str, str], current: Mapping[str, str], keys: Iterable[str] = MUST_MATCH
) -> dict[str, tuple[str | None, str | None]]:
    """Keys whose values differ (a key missing on one side counts as different when the other has it)."""
    return {
        key: (stored.get(key), current.get(key))
        for key in keys
        if (key in stored or key in current) and stored.get(key) != current.get(key)
    }


def check_comparable(
    path: str | Path,
    stored: Mapping[str, str],
    current: Mapping[str, str],
    keys: Iterable[str] = MUST_MATCH,
    fix: str = "rerun the reference with --qg-update-baselines",
) -> None:
    """Refuse to compare against a reference produced under different conditions, naming the keys."""
    diff = provenance_mismatch(stored, current, keys)
    if diff:
        shown = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise QuantgateError(path, f"reference provenance differs ({shown}); {fix}", "provenance")


def save_reference(path: str | Path, reference: Reference) -> str:
    """Write atomically; return a one-line account of what changed (never silent)."""
    path = Path(path)
    note = f"new reference {path}"
    if path.exists():
        try:
            old = load_reference(path)
        except QuantgateError as exc:
            note = f"replaced unreadable reference {path} ({exc.message})"
        else:
            diff = provenance_mismatch(
                old.provenance, reference.provenance, keys=set(old.provenance) | set(reference.provenance)
            )
            note = f"updated reference {path}"
            if diff:
                note += " with different provenance: " + ", ".join(sorted(diff))
    text = json.dumps(reference.model_dump(mode="json", exclude_none=True), indent=1, sort_keys=True) + "\n"
    atomic_write_text(path, text)
    return note
