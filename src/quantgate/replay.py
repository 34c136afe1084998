"""Replay: turn stored result files into cells and judge each against its reference and rule.

Two sources are understood:

* published model-card figures (``quantgate-published`` files under ``baselines/published/``): means
  only, so accuracy is judged with the aggregate judge under its stated assumption, and speed from
  single printed figures with their rounding;
* per-item run results laid out as ``DIR/<model>__<scheme>/<file>`` (quantgate JSONL or lighteval
  details): the ``bf16`` directory of the same model is the reference, items are paired, and the
  benchmark comes from the tool's task name or, for JSONL, the file name.

Every cell ends with an outcome: pass, fail, inconclusive, or unknown (the data does not give it,
with the reason). Nothing is dropped: a cell without data is counted as unknown, never as passed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from quantgate.catalog import Catalog, load_catalog
from quantgate.cellresult import CellResult
from quantgate.errors import QuantgateError
from quantgate.judge import (
    Aggregate,
    Verdict,
    judge_recovery,
    judge_recovery_aggregate,
)
from quantgate.results import AccuracyResult, ResultFile
from quantgate.rules import AccuracyCellKey, Decision, Rules, SpeedCellKey, load_rules
from quantgate.speedjudge import SpeedVerdict, judge_speedup

Outcome = Literal["pass", "fail", "inconclusive", "unknown"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "inconclusive", "unknown")


@dataclass(frozen=True)
class Cell:
    """One judged (or unjudgeable) cell of the matrix."""

    cell_id: str
    kind: Literal["accuracy", "speed"]
    model: str
    scheme: str
    target: str
    outcome: Outcome
    decision: Decision | None
    detail: str
    sources: tuple[str, ...]
    flags: tuple[str, ...] = ()
    verdict: Verdict | SpeedVerdict | None = None
    values: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def gating(self) -> bool:
        return self.decision is not None and self.decision.gating

    def result(self) -> CellResult:
        """This cell as the reports and charts take it; a speed target is ``gpu/scenario/workload``."""
        accuracy = self.kind == "accuracy"
        gpu, scenario, workload = (None, None, None) if accuracy else self.target.split("/")
        verdict = self.verdict
        return CellResult(
            cell=self.cell_id,
            kind=self.kind,
            model=self.model,
            scheme=self.scheme,
            gpu=gpu,
            benchmark=self.target if accuracy else None,
            scenario=scenario,
            workload=workload,
            verdict=self.outcome,
            gating=self.gating,
            rule=self.decision.rule_id if self.decision else None,
            floor=self.decision.floor if self.decision else None,
            recovery=verdict.recovery if isinstance(verdict, Verdict) else None,
            speedup=verdict.speedup if isinstance(verdict, SpeedVerdict) else None,
            low=verdict.low if verdict else None,
            high=verdict.high if verdict else None,
            detail=self.detail,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell_id,
            "kind": self.kind,
            "model": self.model,
            "scheme": self.scheme,
            "target": self.target,
            "outcome": self.outcome,
            "mode": self.decision.mode if self.decision else None,
            "rule": self.decision.rule_id if self.decision else None,
            "floor": self.decision.floor if self.decision else None,
            "detail": self.detail,
            "flags": list(self.flags),
            "sources": list(self.sources),
            "values": dict(self.values),
            "verdict": self.verdict.as_dict() if self.verdict else None,
        }


def _decimals(value: float) -> int:
    text = repr(float(value))
    if "e" in text or "E" in text:
        return 6
    _, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return len(frac)


def _half_unit(value: float) -> float:
    return 0.5 * 10.0 ** (-_decimals(value))


class Replay:
    """Judges result files against the catalog and the rules."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        rules: Rules | None = None,
        baselines: Path | None = None,
        update_baselines: bool = False,
    ) -> None:
        self.catalog = catalog or load_catalog()
        self.rules = rules or load_rules()
        self.baselines = baselines
        self.update_baselines = update_baselines
        self.notes: list[str] = []
        self._references: dict[tuple[str, str], tuple[str, dict[str, tuple[int, int]]] | None] = {}

    def stored_reference(
        self, run_dir: Path, model: str, benchmark: str, counts: dict[str, tuple[int, int]] | None
    ) -> tuple[str, dict[str, tuple[int, int]]] | None:
        """The stored BF16 reference of ``model`` on ``benchmark``, checked against the BF16 run's provenance.

        ``run_dir/provenance.json`` (flat strings) says how the BF16 run was made. Under
        ``update_baselines`` the run's ``counts`` become the stored reference (the change is noted, never
        silent); otherwise a reference whose provenance differs is refused.
        """
        from quantgate.datafile import load_document
        from quantgate.store import check_comparable, load_reference, make_reference, save_reference

        assert self.baselines is not None
        path = self.baselines / model / f"{benchmark}.json"
        provenance_file = run_dir / "provenance.json"
        provenance: dict[str, str] = {}
        if provenance_file.exists():
            loaded = load_document(provenance_file)
            if not isinstance(loaded, dict):
                raise QuantgateError(provenance_file, "must be an object of strings")
            provenance = {str(k): str(v) for k, v in loaded.items()}
        if self.update_baselines and counts is not None:
            cell = {
                "model": model,
                "scheme": "bf16",
                "gpu": provenance.get("gpu", "unknown"),
                "benchmark": benchmark,
            }
            items = [{"item": i, "samples": n, "correct": c} for i, (n, c) in sorted(counts.items())]
            self.notes.append(save_reference(path, make_reference(cell, provenance, items)))
        if not path.exists():
            return None
        reference = load_reference(path)
        check_comparable(path, reference.provenance, provenance)
        return str(path), reference.counts()

    # ---- published model-card figures -------------------------------------------------------

    def published_cells(self, path: str | Path) -> list[Cell]:
        from quantgate.published import load_published

        published = load_published(path)
        cells = self._published_accuracy(published.accuracy, str(path))
        cells += self._published_speed(published.performance, str(path))
        return cells

    def _accuracy_decision(self, model: str, scheme: str, benchmark: str) -> Decision:
        spec = self.catalog.models[model]
        bench = self.catalog.benchmarks[benchmark]
        key = AccuracyCellKey(model, spec.params_b, scheme, benchmark, bench.family)
        return self.rules.recovery_for(key)

    def _aggregate(self, benchmark: str, mean_pct: float) -> Aggregate:
        bench = self.catalog.benchmarks[benchmark]
        deterministic = bench.scoring == "deterministic"
        samples = bench.sampling.samples if bench.sampling is not None else 1
        if bench.items is None:
            raise QuantgateError(self.catalog.directory, "a task benchmark needs an item count", benchmark)
        return Aggregate(
            mean=mean_pct / 100.0,
            items=bench.items,
            samples=samples,
            deterministic=deterministic,
            resolution=_half_unit(mean_pct) / 100.0,
        )

    def _published_accuracy(self, entries: Sequence[Any], source: str) -> list[Cell]:
        by_key = {(e.model, e.scheme, e.benchmark): e for e in entries}
        cells = []
        for entry in entries:
            cell = partial(
                Cell,
                cell_id=f"{entry.model}-{entry.scheme}-{entry.benchmark}",
                kind="accuracy",
                model=entry.model,
                scheme=entry.scheme,
                target=entry.benchmark,
                decision=self._accuracy_decision(entry.model, entry.scheme, entry.benchmark),
                sources=(source, entry.source.url),
                flags=("uncertain",) if entry.uncertain else (),
                values={"reference_pct": entry.reference, "candidate_pct": entry.candidate},
            )
            if entry.status != "published" or entry.reference is None or entry.candidate is None:
                detail = f"unknown: {entry.note or 'not published in the model card'}"
                cells.append(cell(outcome="unknown", detail=detail))
                continue
            try:
                verdict = self._published_verdict(entry, by_key, source)
            except QuantgateError as exc:
                cells.append(cell(outcome="unknown", detail=f"unknown: {exc.message}"))
                continue
            detail = verdict.detail
            if entry.uncertain:
                detail += f"; flagged uncertain in the source: {entry.note}"
            cells.append(cell(outcome=verdict.verdict, detail=detail, verdict=verdict))
        return cells

    def _published_verdict(
        self, entry: Any, by_key: Mapping[tuple[str, str, str], Any], source: str
    ) -> Verdict:
        bench = self.catalog.benchmarks[entry.benchmark]
        decision = self._accuracy_decision(entry.model, entry.scheme, entry.benchmark)
        if bench.kind != "composite":
            reference = self._aggregate(entry.benchmark, entry.reference)
            candidate = self._aggregate(entry.benchmark, entry.candidate)
            return judge_recovery_aggregate(reference, candidate, decision.floor, can_sample=False)
        members = [by_key.get((entry.model, entry.scheme, m)) for m in bench.members]
        usable = [m for m in members if m is not None and m.reference is not None and m.candidate is not None]
        if len(usable) != len(bench.members):
            raise QuantgateError(source, "a member of the average is not published", entry.benchmark)
        return judge_recovery_aggregate(
            [self._aggregate(m.benchmark, m.reference) for m in usable],
            [self._aggregate(m.benchmark, m.candidate) for m in usable],
            decision.floor,
            can_sample=False,
        )

    def _published_speed(self, entries: Sequence[Any], source: str) -> list[Cell]:
        groups: dict[tuple[str, str, str, str], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for entry in entries:
            groups[(entry.model, entry.gpu, entry.scenario, entry.workload)][entry.scheme].append(entry)
        cells = []
        for (model, gpu, scenario, workload), by_scheme in sorted(groups.items()):
            higher_is_better = self.catalog.scenarios[scenario].higher_is_better
            references = by_scheme.get("bf16", [])
            params_b = self.catalog.models[model].params_b
            for scheme, quantized in sorted(by_scheme.items()):
                if scheme == "bf16":
                    continue
                decision = self.rules.speedup_for(
                    SpeedCellKey(model, params_b, scheme, gpu, scenario, workload)
                )
                for entry in quantized:
                    cell = partial(
                        Cell,
                        cell_id=f"{model}-{scheme}-{gpu}-{scenario}-{workload}",
                        kind="speed",
                        model=model,
                        scheme=scheme,
                        target=f"{gpu}/{scenario}/{workload}",
                        decision=decision,
                        sources=(source, entry.source.url),
                        flags=("conflict",) if getattr(entry, "conflict", False) else (),
                    )
                    if len(references) != 1:
                        why = "no BF16 figure" if not references else "conflicting BF16 figures"
                        cells.append(
                            cell(outcome="unknown", detail=f"unknown: {why} for this GPU, scenario, workload")
                        )
                        continue
                    ref = references[0]
                    verdict = judge_speedup(
                        [ref.value],
                        [entry.value],
                        decision.floor,
                        higher_is_better=higher_is_better,
                        resolution=max(_half_unit(ref.value), _half_unit(entry.value)),
                        reference_gpus=ref.gpu_count,
                        candidate_gpus=entry.gpu_count,
                    )
                    values = {
                        "reference": ref.value,
                        "candidate": entry.value,
                        "reference_gpus": float(ref.gpu_count),
                        "candidate_gpus": float(entry.gpu_count),
                    }
                    cells.append(
                        cell(outcome=verdict.verdict, detail=verdict.detail, verdict=verdict, values=values)
                    )
        return cells

    # ---- per-item run results -----------------------------------------------------------------

    def item_cells(self, directory: str | Path) -> list[Cell]:
        from quantgate.results import read_result

        root = Path(directory)
        runs: dict[tuple[str, str], dict[str, tuple[str, dict[str, tuple[int, int]]]]] = defaultdict(dict)
        for run_dir in sorted(p for p in root.iterdir() if p.is_dir() and "__" in p.name):
            model, _, scheme = run_dir.name.partition("__")
            if model not in self.catalog.models:
                raise QuantgateError(
                    run_dir, f"unknown model {model!r}; known: {', '.join(self.catalog.models)}"
                )
            if scheme not in self.catalog.schemes:
                raise QuantgateError(
                    run_dir, f"unknown scheme {scheme!r}; known: {', '.join(self.catalog.schemes)}"
                )
            for path in sorted(run_dir.iterdir()):
                if path.suffix not in {".jsonl", ".parquet"}:
                    continue
                result = per_item_result(read_result(path))
                benchmark = self._benchmark_key(result.task, path)
                if benchmark in runs[(model, scheme)]:
                    raise QuantgateError(
                        path, f"a second result for benchmark {benchmark!r} in {run_dir.name}"
                    )
                runs[(model, scheme)][benchmark] = (str(path), item_counts(result))
        cells = []
        for (model, scheme), benchmarks in sorted(runs.items()):
            if scheme == "bf16":
                continue
            for benchmark, (result_path, counts) in sorted(benchmarks.items()):
                decision = self._accuracy_decision(model, scheme, benchmark)
                reference = runs.get((model, "bf16"), {}).get(benchmark)
                if self.baselines is not None:
                    if (model, benchmark) not in self._references:
                        self._references[(model, benchmark)] = self.stored_reference(
                            root / f"{model}__bf16", model, benchmark, reference[1] if reference else None
                        )
                    reference = self._references[(model, benchmark)]
                cell = partial(
                    Cell,
                    cell_id=f"{model}-{scheme}-{benchmark}",
                    kind="accuracy",
                    model=model,
                    scheme=scheme,
                    target=benchmark,
                    decision=decision,
                )
                if reference is None:
                    where = self.baselines if self.baselines is not None else root
                    detail = f"unknown: no bf16 reference for {model} {benchmark} under {where}"
                    cells.append(cell(outcome="unknown", detail=detail, sources=(result_path,)))
                    continue
                verdict = judge_recovery(reference[1], counts, decision.floor)
                sources = (reference[0], result_path)
                cells.append(
                    cell(outcome=verdict.verdict, detail=verdict.detail, sources=sources, verdict=verdict)
                )
        return cells

    def _benchmark_key(self, task: str, path: Path) -> str:
        bare = task.split("|")[0] if "|" in task else task
        for key, bench in self.catalog.benchmarks.items():
            if bare in {key, bench.lighteval_task}:
                return key
        stem = path.stem
        if stem in self.catalog.benchmarks:
            return stem
        raise QuantgateError(
            path, f"task {task!r} is not a catalog benchmark; known: {', '.join(self.catalog.benchmarks)}"
        )

    # ---- everything under a directory ---------------------------------------------------------

    def cells(self, directory: str | Path) -> list[Cell]:
        root = Path(directory)
        if not root.exists():
            raise QuantgateError(root, "no such results directory")
        files = [root] if root.is_file() else sorted(root.rglob("*.json"))
        cells: list[Cell] = []
        for path in files:
            if _is_published(path):
                cells += self.published_cells(path)
        if root.is_dir():
            cells += self.item_cells(root)
        seen: set[str] = set()
        for cell in cells:
            if cell.cell_id in seen:
                raise QuantgateError(root, f"cell {cell.cell_id} is given by more than one result")
            seen.add(cell.cell_id)
        return cells


def per_item_result(result: ResultFile, metric: str | None = None) -> AccuracyResult:
    """The one per-item result of a file; with several metrics, ``metric`` or the most-sampled one."""
    with_items = [acc for acc in result.accuracy if acc.items is not None]
    if metric is not None:
        with_items = [acc for acc in with_items if acc.metric == metric]
    elif len(with_items) > 1:
        most = max(acc.samples_per_item or 1 for acc in with_items)
        with_items = [acc for acc in with_items if (acc.samples_per_item or 1) == most]
    if len(with_items) != 1:
        found = ", ".join(sorted(f"{acc.task}:{acc.metric}" for acc in result.accuracy)) or "none"
        wanted = f" with metric {metric!r}" if metric else ""
        raise QuantgateError(result.path, f"expected per-item results for one task{wanted}; found {found}")
    return with_items[0]


def item_counts(result: AccuracyResult) -> dict[str, tuple[int, int]]:
    return {i.item: (i.samples, i.correct) for i in result.items or ()}


def _is_published(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b'"quantgate-published"' in head


def counts(cells: Iterable[Cell]) -> dict[str, dict[str, int]]:
    """Outcome counts, split by kind and by whether the cell gates."""
    out: dict[str, dict[str, int]] = {}
    for cell in cells:
        key = f"{cell.kind}/{'gate' if cell.gating else 'informational'}"
        bucket = out.setdefault(key, dict.fromkeys(OUTCOMES, 0))
        bucket[cell.outcome] += 1
    return out


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
