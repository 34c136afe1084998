"""Published baselines: the model cards' numbers in quantgate's own format, keyed by catalog keys.

Why a file of our own: the cards are the only outside evidence of how much each scheme should recover
and how much faster it should run. quantgate reads them through one validated, versioned file
(``baselines/published/cards-2025-02.json``), produced by ``tools/import_published.py`` from the
transcription in ``shared/reference/published-baselines.json``, so that every number keeps the card
it came from and every cell the cards do *not* give is explicit instead of silently absent.

Format (kind ``quantgate-published``, ``schema_version`` 1)::

    {"schema_version": 1, "kind": "quantgate-published",
     "origin": {"description": str, "cards_read": [card, ...], "cards_missing": [card, ...],
                "imported_from": "published-baselines.json", "conventions": str},
     "accuracy": [
       {"model": "Qwen-1.5B", "scheme": "int4-w4a16", "benchmark": "aime24",
        "reference": 30.05 | null,        # BF16 column of the same card, percent
        "candidate": 24.63 | null,        # quantized column, percent
        "unit": "percent",
        "printed_recovery_pct": 81.96 | null,   # as printed, null when blank
        "printed_decimals": 2 | null,     # fewest decimals among reference / candidate
        "status": "published" | "not-published",
        "uncertain": false,               # the transcription flags the printed number as inconsistent
        "note": str | null,               # the transcription's note; the reason when not-published
        "source": {"card": "RedHatAI/...", "url": "https://huggingface.co/...", "version_note": str | null}},
       ...],
     "performance": [
       {"model": "Qwen-1.5B", "scheme": "bf16", "gpu": "h100", "gpu_count": 1,
        "scenario": "single-stream", "workload": "multi-turn-chat",
        "metric": "latency_s" | "max_qps", "value": 0.8, "printed_decimals": 1,
        "qpd": 1299.0 | null,             # queries per dollar, as printed
        "conflict": false,                # true when cards print different rows for this cell
        "also_in": [card, ...],           # other cards printing the identical row
        "source": {...}},
       ...]}

Rules the file obeys (checked on load):

* Accuracy has one entry per (model, quantized scheme, benchmark) of the catalog's reasoning and
  Open LLM v1 benchmarks, including the two averages. ``published`` entries have both numbers.
  ``not-published`` entries have ``candidate`` and ``printed_recovery_pct`` null and say why in
  ``note`` (card text not found, or the quantized cell printed blank); ``reference`` stays when the
  card printed the BF16 value (Qwen-7B W4A16's Open LLM v1 rows). The cards' Open LLM v2 and coding
  rows are not imported: the catalog does not gate them.
* Performance has one entry per printed row cell, BF16 rows included (the reference of every
  speedup). Rows several cards print identically are one entry (``also_in``); rows that differ are
  all kept with ``conflict: true``. The source's derived speedups are not imported: speedups are
  computed from ``value`` on both sides.
* ``printed_decimals`` is derived from the number as stored in the source JSON (``repr`` of the
  float, trailing zeros trimmed): 0.4 -> 1, 14.04 -> 2, 14 -> 0. A trailing zero the card printed
  ("14.0", "0.30") is lost in that JSON, so the value is a lower bound on the printed precision and
  the rounding it implies (half a unit of the last decimal) is on the safe, wider side.
* Every key is a key of the catalog; each accuracy cell appears once; a performance cell appears
  once per card, and ``conflict`` is true exactly when it appears more than once (all checked by
  ``load_published``, with the entry's index in the error, e.g. ``performance[12].conflict``).
* The importer writes ``schema_version`` and ``kind`` first, then ``origin``, ``accuracy`` and
  ``performance`` (entries in catalog order, each entry's keys sorted, ``indent=1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from quantgate.catalog import Catalog, load_catalog
from quantgate.datafile import Strict, load_model
from quantgate.errors import QuantgateError

PUBLISHED_SCHEMA_VERSION = 1
PUBLISHED_KIND = "quantgate-published"

Percent = Annotated[float, Field(ge=0, le=100)]


class CardSource(Strict):
    """Where a number was printed: the card (repo id), its URL and which version of it was read."""

    card: str
    url: str
    version_note: str | None


class PublishedOrigin(Strict):
    """Provenance of the whole file."""

    description: str
    cards_read: list[str]
    cards_missing: list[str]
    imported_from: str
    conventions: str


class AccuracyRecord(Strict):
    """One (model, quantized scheme, benchmark) cell of a card's accuracy table."""

    model: str
    scheme: str
    benchmark: str
    reference: Percent | None
    candidate: Percent | None
    unit: Literal["percent"]
    printed_recovery_pct: Annotated[float, Field(ge=0)] | None
    printed_decimals: Annotated[int, Field(ge=0)] | None
    status: Literal["published", "not-published"]
    uncertain: bool
    note: str | None
    source: CardSource

    @model_validator(mode="after")
    def _status_matches_numbers(self) -> AccuracyRecord:
        if self.status == "published":
            if self.reference is None or self.candidate is None:
                raise ValueError("a published entry needs both reference and candidate")
        else:
            if self.candidate is not None or self.printed_recovery_pct is not None:
                raise ValueError("a not-published entry has candidate and printed_recovery_pct null")
            if not self.note:
                raise ValueError("a not-published entry says why in note")
        return self

    @property
    def published(self) -> bool:
        return self.status == "published"


class PerformanceRecord(Strict):
    """One cell of a card's performance table (BF16 rows included)."""

    model: str
    scheme: str
    gpu: str
    gpu_count: Annotated[int, Field(ge=1)]
    scenario: str
    workload: str
    metric: Literal["latency_s", "max_qps", "goodput_qps"]
    value: Annotated[float, Field(gt=0)]
    printed_decimals: Annotated[int, Field(ge=0)]
    qpd: Annotated[float, Field(ge=0)] | None
    conflict: bool = False
    also_in: list[str] = Field(default_factory=list)
    source: CardSource

    @property
    def cell(self) -> tuple[str, str, str, str, str]:
        """(model, scheme, gpu, scenario, workload): what a conflict is about."""
        return (self.model, self.scheme, self.gpu, self.scenario, self.workload)


class PublishedBaselines(Strict):
    """The whole file; ``accuracy_cell`` and ``performance_cell`` look entries up by catalog keys."""

    schema_version: Literal[1]
    kind: Literal["quantgate-published"]
    origin: PublishedOrigin
    accuracy: list[AccuracyRecord]
    performance: list[PerformanceRecord]

    def accuracy_cell(self, model: str, scheme: str, benchmark: str) -> AccuracyRecord | None:
        for rec in self.accuracy:
            if (rec.model, rec.scheme, rec.benchmark) == (model, scheme, benchmark):
                return rec
        return None

    def performance_cell(
        self, model: str, scheme: str, gpu: str, scenario: str, workload: str
    ) -> list[PerformanceRecord]:
        """All entries of one cell: none, one, or several when the cards conflict."""
        cell = (model, scheme, gpu, scenario, workload)
        return [perf for perf in self.performance if perf.cell == cell]


def load_published(path: str | Path, catalog: Catalog | None = None) -> PublishedBaselines:
    """Load and validate a published-baselines file; its keys must be keys of ``catalog``.

    ``catalog`` defaults to ``load_catalog()``. Any problem is a ``QuantgateError`` naming the file
    and the field (``accuracy[3].status``).
    """
    doc = load_model(PublishedBaselines, path, PUBLISHED_KIND, PUBLISHED_SCHEMA_VERSION)
    check_published(doc, path, catalog if catalog is not None else load_catalog())
    return doc


def check_published(doc: PublishedBaselines, path: str | Path, catalog: Catalog) -> None:
    """The rules beyond single fields: cells are unique, conflicts are flagged, keys are the catalog's.

    Every key names a catalog entry, accuracy schemes are quantized, metrics match their scenario.
    """
    seen: set[tuple[str, str, str]] = set()
    for i, rec in enumerate(doc.accuracy):
        key = (rec.model, rec.scheme, rec.benchmark)
        if key in seen:
            raise QuantgateError(path, f"second entry for the cell {'/'.join(key)}", f"accuracy[{i}]")
        seen.add(key)
    per_cell: dict[tuple[str, str, str, str, str], list[int]] = {}
    for i, perf in enumerate(doc.performance):
        per_cell.setdefault(perf.cell, []).append(i)
    for cell, indexes in per_cell.items():
        cards: set[str] = set()
        for i in indexes:
            perf = doc.performance[i]
            if perf.source.card in cards:
                raise QuantgateError(
                    path, f"second entry for the cell {'/'.join(cell)} from one card", f"performance[{i}]"
                )
            cards.add(perf.source.card)
            if perf.conflict != (len(indexes) > 1):
                raise QuantgateError(
                    path,
                    f"must be {len(indexes) > 1}: the cell {'/'.join(cell)} has {len(indexes)} "
                    f"entr{'ies' if len(indexes) > 1 else 'y'}",
                    f"performance[{i}].conflict",
                )

    quantized = set(catalog.quantized_schemes())

    def need(ok: bool, where: str, what: str, value: str, known: list[str]) -> None:
        if not ok:
            raise QuantgateError(
                path, f"{value!r} is not a {what} of the catalog; known: {', '.join(known)}", where
            )

    for i, rec in enumerate(doc.accuracy):
        at = f"accuracy[{i}]"
        need(rec.model in catalog.models, f"{at}.model", "model", rec.model, list(catalog.models))
        need(rec.scheme in quantized, f"{at}.scheme", "quantized scheme", rec.scheme, sorted(quantized))
        need(
            rec.benchmark in catalog.benchmarks,
            f"{at}.benchmark",
            "benchmark",
            rec.benchmark,
            list(catalog.benchmarks),
        )
    for i, perf in enumerate(doc.performance):
        at = f"performance[{i}]"
        need(perf.model in catalog.models, f"{at}.model", "model", perf.model, list(catalog.models))
        need(perf.scheme in catalog.schemes, f"{at}.scheme", "scheme", perf.scheme, list(catalog.schemes))
        need(perf.gpu in catalog.gpus, f"{at}.gpu", "GPU kind", perf.gpu, list(catalog.gpus))
        need(
            perf.workload in catalog.workloads,
            f"{at}.workload",
            "workload",
            perf.workload,
            list(catalog.workloads),
        )
        need(
            perf.scenario in catalog.scenarios,
            f"{at}.scenario",
            "scenario",
            perf.scenario,
            list(catalog.scenarios),
        )
        expected = catalog.scenarios[perf.scenario].metric
        if perf.metric != expected:
            raise QuantgateError(
                path, f"scenario {perf.scenario!r} measures {expected!r}, not {perf.metric!r}", f"{at}.metric"
            )
