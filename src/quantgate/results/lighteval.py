"""lighteval: its results file and its per-item details (parquet or JSON Lines)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantgate.errors import QuantgateError
from quantgate.results.fields import (
    _add_provenance,
    _dict_or_empty,
    _is_mean_over_samples,
    _join,
    _list,
    _mapping,
    _number,
    _optional_str,
    _required,
    _samples_in_name,
    _scalar_text,
    _split_task_key,
    _stderr,
)
from quantgate.results.records import (
    _INTEGRAL_TOLERANCE,
    AccuracyResult,
    ItemOutcome,
    Record,
    ResultFile,
    _is_count,
    _is_number,
    _Scores,
)


def _lighteval_results(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "lighteval-results"
    results = _mapping(path, _required(path, doc, "results"), "results")
    general = _dict_or_empty(doc.get("config_general"))
    model_config = _dict_or_empty(general.get("model_config"))
    sha = _optional_str(general.get("lighteval_sha"))
    tool_version = _optional_str(general.get("lighteval_version")) or (sha if sha != "?" else None)
    model = _optional_str(general.get("model_name")) or _optional_str(model_config.get("model_name"))

    provenance: dict[str, str] = {"tool": "lighteval"}
    _add_provenance(
        provenance,
        "",
        general,
        (
            "lighteval_version",
            "lighteval_sha",
            "model_name",
            "model_sha",
            "model_dtype",
            "model_size",
            "job_id",
            "start_time",
            "end_time",
            "total_evaluation_time_secondes",
            "max_samples",
            "num_fewshot_seeds",
        ),
    )
    _add_provenance(provenance, "model_config.", model_config, ("model_name", "revision", "dtype", "seed"))
    generation = model_config.get("generation_parameters", general.get("generation_parameters"))
    if isinstance(generation, dict):
        set_params = {k: v for k, v in generation.items() if v is not None and _scalar_text(v) is not None}
        provenance["generation_parameters"] = json.dumps(set_params, sort_keys=True)
    summary_tasks = doc.get("summary_tasks")
    if isinstance(summary_tasks, dict):
        for task_key, summary in summary_tasks.items():
            if isinstance(summary, dict):
                _add_provenance(provenance, f"summary_tasks.{task_key}.", summary.get("hashes"))

    file_scores = _Scores(str(path), kind, tool_version, model)
    out: list[AccuracyResult] = []
    seen: dict[tuple[str, int | None, str], str] = {}
    for task_key, scores in results.items():
        if task_key == "all":  # lighteval's average over tasks: not a cell
            continue
        where = _join("results", task_key)
        task, fewshot = _split_task_key(path, task_key, where)
        scores = _mapping(path, scores, where)
        for metric, value in scores.items():
            if metric.endswith("_stderr"):
                continue
            metric_where = _join(where, metric)
            number = _number(path, value, metric_where)
            stderr = _stderr(path, scores.get(f"{metric}_stderr"), _join(where, f"{metric}_stderr"))
            cell = (task, fewshot, metric)
            if cell in seen:
                raise QuantgateError(
                    path,
                    f"task {task!r} (fewshot {fewshot}) appears twice, as {seen[cell]!r} and {task_key!r}",
                    where,
                )
            seen[cell] = task_key
            out.append(file_scores.score(task, metric, number, stderr, _samples_in_name(metric), fewshot))
    if not out:
        raise QuantgateError(path, "no task scores (only the 'all' average or nothing)", "results")
    return ResultFile(str(path), kind, tool_version, tuple(out), (), provenance)


# --------------------------------------------------------------------------------------------------
# lighteval details (parquet or JSON Lines)
# --------------------------------------------------------------------------------------------------

_DETAILS_NAME = re.compile(r"^details_(?P<task>.+?)_(?P<date>\d{4}-\d{2}-\d{2}T[\d.:\-]+)$")


@dataclass(frozen=True)
class _DetailRow:
    where: str
    doc_id: str | None
    query: str | None
    task_name: str | None
    predictions: int | None
    output_tokens: float | None
    metrics: Mapping[str, object]
    output_lengths: tuple[int, ...] | None = None
    names_samples: bool = False  # the older flat layout: a metric's name says over how many samples


def _literal(path: Path, value: object, where: str) -> object:
    """Old lighteval wrote nested columns as their Python repr when pyarrow could not type them."""
    if isinstance(value, str) and value and value[0] in "{[(":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise QuantgateError(path, "cannot read this column's text as a value", where) from None
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value) and value:
        return dict(value)  # a parquet map column reads as a list of (key, value) pairs
    return value


def _first_present(row: Mapping[str, object], *names: str) -> tuple[str, object] | None:
    for name in names:
        if name in row and row[name] is not None:
            return name, row[name]
    return None


def _detail_row(path: Path, where: str, record: object) -> _DetailRow:
    row = _mapping(path, record, where)
    doc_col = _first_present(row, "doc", "__doc__")
    metric_col = _first_present(row, "metric", "__metric__")
    if doc_col is not None and metric_col is not None:  # lighteval since mid-2025
        doc = _mapping(path, _literal(path, doc_col[1], _join(where, doc_col[0])), _join(where, doc_col[0]))
        metrics = _mapping(
            path, _literal(path, metric_col[1], _join(where, metric_col[0])), _join(where, metric_col[0])
        )
        response_col = _first_present(row, "model_response", "__model_response__")
        predictions: int | None = None
        output_tokens: float | None = None
        output_lengths: tuple[int, ...] | None = None
        if response_col is not None:
            response_where = _join(where, response_col[0])
            response = _mapping(path, _literal(path, response_col[1], response_where), response_where)
            text = response.get("text")
            if text is not None:
                predictions = len(_list(path, text, _join(response_where, "text")))
            output_lengths = _lengths(
                path, response.get("output_tokens"), _join(response_where, "output_tokens")
            )
            output_tokens = sum(output_lengths) / len(output_lengths) if output_lengths else None
        doc_id = doc.get("id")
        query = doc.get("query")
        return _DetailRow(
            where=where,
            doc_id=str(doc_id) if (isinstance(doc_id, str) and doc_id) or _is_count(doc_id) else None,
            query=query if isinstance(query, str) else None,
            task_name=_optional_str(doc.get("task_name")),
            predictions=predictions,
            output_tokens=output_tokens,
            metrics=metrics,
            output_lengths=output_lengths or None,
        )
    if "metrics" in row:  # lighteval before mid-2025: flat columns
        metrics = _mapping(
            path, _literal(path, row["metrics"], _join(where, "metrics")), _join(where, "metrics")
        )
        raw_predictions = row.get("predictions")
        predictions = None
        if raw_predictions is not None:
            predictions = len(
                _list(
                    path,
                    _literal(path, raw_predictions, _join(where, "predictions")),
                    _join(where, "predictions"),
                )
            )
        query = row.get("example") if isinstance(row.get("example"), str) else row.get("full_prompt")
        return _DetailRow(
            where=where,
            doc_id=None,
            query=query if isinstance(query, str) else None,
            task_name=None,
            predictions=predictions,
            output_tokens=None,
            metrics=metrics,
            names_samples=True,
        )
    raise QuantgateError(path, "neither doc/metric (current lighteval) nor metrics (older) columns", where)


def _lengths(path: Path, value: object, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    sequences = _list(path, value, where)
    return tuple(len(_list(path, seq, _join(where, i))) for i, seq in enumerate(sequences))


def _details_task(path: Path, rows: Sequence[_DetailRow]) -> tuple[str, int | None]:
    name = _DETAILS_NAME.match(path.stem)
    if name:
        return _split_task_key(path, name["task"], "file name")
    task_name = rows[0].task_name
    if task_name:
        return _split_task_key(path, task_name, f"{rows[0].where}.doc.task_name")
    stem = path.stem.removeprefix("details_")
    try:  # last resort: the file name, split like a task key when it looks like one
        return _split_task_key(path, stem, "file name")
    except QuantgateError:
        return stem, None


def _item_ids(rows: Sequence[_DetailRow]) -> list[str]:
    if all(r.doc_id for r in rows):
        return [r.doc_id for r in rows if r.doc_id]
    if all(r.query is not None for r in rows):
        return ["query:" + hashlib.sha256((r.query or "").encode("utf-8")).hexdigest()[:16] for r in rows]
    return [f"row:{index}" for index in range(len(rows))]


def _details_result(path: Path, records: Sequence[Record]) -> ResultFile:
    kind = "lighteval-details"
    rows = [_detail_row(path, where, record) for where, record in records]
    task, fewshot = _details_task(path, rows)
    ids = _item_ids(rows)
    first_seen: dict[str, str] = {}
    for row, item in zip(rows, ids, strict=True):
        if item in first_seen:
            raise QuantgateError(path, f"duplicated item {item!r} (first at {first_seen[item]})", row.where)
        first_seen[item] = row.where

    metric_names: list[str] = []
    for row in rows:
        metric_names.extend(str(m) for m in row.metrics if str(m) not in metric_names)

    out: list[AccuracyResult] = []
    for metric in metric_names:
        outcomes = _metric_outcomes(path, metric, rows, ids)
        if outcomes is None:
            continue
        out.append(_Scores(str(path), kind).of_items(task, metric, outcomes, fewshot))
    if not out:
        shown = ", ".join(metric_names[:6]) or "none"
        raise QuantgateError(
            path, f"no per-sample metric gives counts (pass@1 over n, avg@n or a 0/1 score); metrics: {shown}"
        )
    provenance = {"tool": "lighteval", "item_ids": _id_rule(ids), "rows": str(len(rows))}
    return ResultFile(str(path), kind, None, tuple(out), (), provenance)


def _id_rule(ids: Sequence[str]) -> str:
    if ids and ids[0].startswith("query:"):
        return "sha256 of the query"
    if ids and ids[0].startswith("row:"):
        return "row index"
    return "doc id"


# Per-item metrics that are a fraction of one deterministic answer, not right or wrong: TruthfulQA's
# mc2 (the probability mass on the true answers). Other fractional per-item values (maj@k, ...) say
# nothing the judge can pair, and are skipped.
FRACTION_METRICS = frozenset({"truthfulqa_mc2"})  # the name lighteval 0.13 writes


def _metric_outcomes(
    path: Path, metric: str, rows: Sequence[_DetailRow], ids: Sequence[str]
) -> list[ItemOutcome] | None:
    """Per-item counts for one metric, or None when the metric is not a count (see module docstring)."""
    over_samples = _is_mean_over_samples(metric)
    named_n = _samples_in_name(metric)
    values: list[float] = []
    for row in rows:
        where = _join(f"{row.where}.metric", metric)
        if metric not in row.metrics or row.metrics[metric] is None:
            if not over_samples:
                return None  # not a count metric anyway; a gap does not make the file wrong
            raise QuantgateError(path, "missing in this row (other rows have it)", where)
        raw = row.metrics[metric]
        if isinstance(raw, bool):
            raw = float(raw)
        if not over_samples and not _is_number(raw):
            return None  # text or structured per-sample metric: carries no counts
        values.append(_number(path, raw, where))
    if not over_samples:
        whole = all(v in (0.0, 1.0) for v in values)
        if not whole and (metric not in FRACTION_METRICS or any(not 0.0 <= v <= 1.0 for v in values)):
            return None
        return [
            ItemOutcome(item, 1, round(v), row.output_tokens, row.output_lengths, None if whole else v)
            for row, item, v in zip(rows, ids, values, strict=True)
        ]
    outcomes = []
    for row, item, value in zip(rows, ids, values, strict=True):
        where = _join(f"{row.where}.metric", metric)
        samples = row.predictions if row.predictions is not None and not row.names_samples else named_n
        samples = row.predictions if samples is None else samples
        if samples is None or samples < 1:
            raise QuantgateError(
                path,
                "cannot tell the number of samples: the metric name has no n and the row no predictions",
                where,
            )
        if not 0.0 <= value <= 1.0:
            raise QuantgateError(path, f"a mean over samples must lie in 0..1, got {value!r}", where)
        scaled = value * samples
        correct = round(scaled)
        if abs(scaled - correct) > _INTEGRAL_TOLERANCE * max(1, samples):
            raise QuantgateError(
                path, f"{value!r} is not a whole number of correct samples out of {samples}", where
            )
        outcomes.append(ItemOutcome(item, samples, correct, row.output_tokens, row.output_lengths))
    return outcomes
