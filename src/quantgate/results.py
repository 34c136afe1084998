"""Readers of the result files that evaluation and benchmark tools write, with their provenance.

What: ``read_result(path)`` looks at a file's *content* (not only its name), decides which tool wrote
it (one of ``KINDS``) and turns it into a ``ResultFile``: accuracy scores (``AccuracyResult``, with
per-item counts where the file has them), performance numbers (``PerfResult``) and a flat
``provenance`` map (tool commit, model revision, prompt hashes, machine, dates).

Why: the gate compares numbers produced by tools quantgate does not control, and their formats drift
between versions (lighteval renamed its pass@1 metrics, moved its details columns; GuideLLM moved its
version into ``metadata``). A misread number is worse than no number, so every reader is tolerant of
optional fields that older versions lack and strict about wrong values: NaN where a number is
required, negative counts, ``correct > samples``, text where a metric should be, duplicated items.
Every problem ends as one ``QuantgateError`` naming the file and the field path (``results.aime24|0.
pass@k:k=1&n=20``), the line (``line 7``, JSON Lines) or the row (``row 3``, parquet, 0-based);
no other exception type leaves this module.

Kinds and how each is recognised, checked in this order:

* ``lighteval-details``: a parquet file (``PAR1`` magic); or JSON Lines whose records have ``doc``
  and ``metric`` (lighteval since mid-2025; its docs render them ``__doc__``/``__metric__``, and both
  spellings are read) or ``metrics`` with ``predictions``/``example`` (the flat layout before that;
  nested columns that old versions wrote as Python reprs are read with ``ast.literal_eval``).
* ``lighteval-results``: an object with ``config_general`` and ``results`` (or ``results`` keyed by
  ``task|fewshot``).
* ``lm-eval-results``: an object with ``results`` and one of ``lm_eval_version``, ``n-shot``,
  ``n-samples``, ``configs``, ``higher_is_better``, ``group_subtasks``, or ``versions`` + ``config``
  (lm-eval 0.3).
* ``pytest-benchmark``: an object with ``machine_info`` and ``benchmarks``.
* ``guidellm-report``: an object with a ``benchmarks`` list and ``guidellm_version`` (top level or in
  ``metadata``), or a benchmark whose ``type_`` is ``generative_benchmark``. Metrics are taken from
  the ``successful`` requests' distributions.
* ``vllm-bench-latency``: an object with ``avg_latency``.
* ``vllm-bench-throughput``: an object with ``requests_per_second`` and ``tokens_per_second``.
* ``vllm-bench-serve``: an object with ``request_throughput``.
* ``judge-jsonl``: JSON Lines (or one object) with ``item`` and ``samples`` or ``correct`` (in JSON
  Lines ``item`` alone is enough, so a line that lacks a count is reported as such). Its one score
  is named after the file (task = file stem, metric ``pass@1``).

lighteval details, item ids and counts (``_details_result``):

* Item id, chosen once per file: the doc's ``id`` when every row has a non-empty one (current
  lighteval sets it to the document's index in the dataset); otherwise ``query:<16 hex>`` (the first
  16 hex digits of the SHA-256 of the query text, ``doc.query`` or the old ``example`` column) when
  every row has a query; otherwise ``row:<index>`` (0-based row or record position). Two rows with
  the same id are an error.
* A per-sample metric is a *count* metric when it is a mean over samples of a 0/1 score: lighteval's
  ``pass@k`` with ``k=1`` (``pass@k:k=1&n=20``, ``gpqa_pass@k:k=1``), ``avg@n`` and the old
  ``math_pass@1:N_samples``/``gpqa_pass@1:N_samples``. Its ``samples`` is, in the current layout, the
  number of predictions in the row (lighteval 0.13 keeps a task's own metric names whatever ``@n=``
  asks: ``math_500@k=1@n=4`` scores 4 samples and writes ``pass@k:k=1&n=1``; real files in
  ``tests/data/lighteval-builtin``); in the older flat layout the ``n`` in its name (it scored
  ``math_pass@1:1_samples`` on the first of 4 predictions); either, where only one is known.
  ``correct = round(value * samples)``, and ``value * samples`` must lie within
  ``1e-6 * samples`` of that integer, else the file is refused: pass@1 over n is exactly ``c / n``
  (Chen et al.'s estimator telescopes for k = 1), and lighteval counts missing predictions as wrong,
  so this is the count lighteval itself scored. Any other metric whose every value is 0 or 1 counts as one
  sample per item; other metrics (maj@k, F1, ...) carry no counts and are left out.
* ``output_tokens`` is the mean length of the generated token lists in ``model_response.output_tokens``
  and ``output_lengths`` their lengths, one per sample (current layout only).
* The task comes from the file name ``details_{task}_{timestamp}.parquet`` (``lighteval|aime24|0`` →
  ``aime24``, fewshot 0), else from ``doc.task_name``, else from the file name as it is.

Parquet needs ``pyarrow`` (``pip install 'quantgate[parquet]'``), imported only when a parquet file is
read.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from quantgate.errors import QuantgateError

KINDS: Final[tuple[str, ...]] = (
    "lighteval-results",
    "lighteval-details",
    "judge-jsonl",
    "lm-eval-results",
    "vllm-bench-latency",
    "vllm-bench-throughput",
    "vllm-bench-serve",
    "guidellm-report",
    "pytest-benchmark",
)

RESULT_SUFFIXES: Final[tuple[str, ...]] = (".json", ".jsonl", ".parquet")

# GuideLLM report schema versions this reader knows (the ``version`` field; absent before Dec 2025).
GUIDELLM_REPORT_VERSIONS: Final[tuple[int, ...]] = (1, 2)

_INTEGRAL_TOLERANCE: Final = 1e-6


# --------------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ItemOutcome:
    """Counts for one item: ``correct`` of ``samples`` generations were right.

    ``output_tokens`` is the mean number of generated tokens per sample, where the tool recorded it,
    and ``output_lengths`` each sample's (an answer cut at the generation limit has the limit's).
    """

    item: str
    samples: int
    correct: int
    output_tokens: float | None = None
    output_lengths: tuple[int, ...] | None = None

    def cut_at(self, limit: int) -> int | None:
        """Samples whose answer reached ``limit`` generated tokens (cut there), where lengths are known."""
        return None if self.output_lengths is None else sum(n >= limit for n in self.output_lengths)

    def __post_init__(self) -> None:
        if not isinstance(self.item, str) or not self.item:
            raise QuantgateError(None, f"item id must be a non-empty string, got {self.item!r}", "item")
        if not _is_count(self.samples) or self.samples < 1:
            raise QuantgateError(
                None, f"must be an integer >= 1, got {self.samples!r}", f"{self.item}.samples"
            )
        if not _is_count(self.correct) or not 0 <= self.correct <= self.samples:
            raise QuantgateError(
                None, f"must be an integer in 0..{self.samples}, got {self.correct!r}", f"{self.item}.correct"
            )
        if self.output_tokens is not None and (
            not _is_number(self.output_tokens)
            or not math.isfinite(self.output_tokens)
            or self.output_tokens < 0
        ):
            raise QuantgateError(
                None,
                f"must be a finite number >= 0, got {self.output_tokens!r}",
                f"{self.item}.output_tokens",
            )


@dataclass(frozen=True)
class AccuracyResult:
    """One task/metric score as the tool wrote it (a fraction 0..1 where the tool writes fractions).

    ``items`` holds per-item counts where the file has them (details, judge JSONL), else ``None``.
    ``samples_per_item`` comes from the metric name (``pass@k:k=1&n=20`` → 20) or the items.
    ``fewshot`` is the number of few-shot examples from the task key (``aime24|0`` → 0) or the tool's
    ``n-shot`` table, where known.
    """

    source: str
    kind: str
    tool_version: str | None
    model: str | None
    task: str
    metric: str
    value: float
    stderr: float | None
    samples_per_item: int | None
    items: tuple[ItemOutcome, ...] | None
    fewshot: int | None = None

    def __post_init__(self) -> None:
        where = f"{self.task}.{self.metric}"
        if not _is_number(self.value) or not math.isfinite(self.value):
            raise QuantgateError(self.source, f"value must be a finite number, got {self.value!r}", where)
        if self.stderr is not None and (
            not _is_number(self.stderr) or not math.isfinite(self.stderr) or self.stderr < 0
        ):
            raise QuantgateError(
                self.source, f"stderr must be a finite number >= 0, got {self.stderr!r}", where
            )
        if self.samples_per_item is not None and (
            not _is_count(self.samples_per_item) or self.samples_per_item < 1
        ):
            raise QuantgateError(
                self.source, f"samples_per_item must be an integer >= 1, got {self.samples_per_item!r}", where
            )


@dataclass(frozen=True)
class PerfResult:
    """One performance measurement: a named run under a load ``scenario`` and its metrics.

    Metric names are shared across tools where the meaning is the same: ``request_throughput``
    (requests/s), ``output_throughput`` and ``total_token_throughput`` (tokens/s), ``latency_s``
    (mean per-request or per-iteration latency, seconds), ``{mean,median,std,pNN}_{ttft,tpot,itl,e2el}_ms``.
    ``samples`` holds per-request or per-iteration latencies in seconds where the file has them.
    """

    source: str
    kind: str
    tool_version: str | None
    model: str | None
    name: str
    scenario: str | None
    metrics: Mapping[str, float]
    samples: tuple[float, ...] | None
    prompt_tokens: int | None
    output_tokens: int | None

    def __post_init__(self) -> None:
        metrics = dict(self.metrics)
        for key, value in metrics.items():
            if not _is_number(value) or not math.isfinite(value):
                raise QuantgateError(
                    self.source, f"metric must be a finite number, got {value!r}", f"{self.name}.{key}"
                )
        object.__setattr__(self, "metrics", MappingProxyType(metrics))
        if self.samples is not None:
            for index, sample in enumerate(self.samples):
                if not _is_number(sample) or not math.isfinite(sample) or sample < 0:
                    raise QuantgateError(
                        self.source,
                        f"sample must be a finite number >= 0, got {sample!r}",
                        f"{self.name}.samples[{index}]",
                    )


@dataclass(frozen=True)
class ResultFile:
    """Everything read from one file: what wrote it, its scores, its timings and where it came from."""

    path: str
    kind: str
    tool_version: str | None
    accuracy: tuple[AccuracyResult, ...]
    performance: tuple[PerfResult, ...]
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))


# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------


def read_result(path: str | Path) -> ResultFile:
    """Read one result file of any kind in ``KINDS``; any problem is a ``QuantgateError``."""
    path = Path(path)
    try:
        return _read_result(path)
    except QuantgateError:
        raise
    except (
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        ArithmeticError,
        RecursionError,
    ) as exc:
        # Safety net: the readers check what they use, so this should not happen; if it does, the
        # user still gets one error naming the file rather than a traceback.
        raise QuantgateError(path, f"cannot interpret the file ({type(exc).__name__}: {exc})") from None


def iter_result_files(directory: str | Path) -> list[Path]:
    """Every file under ``directory`` (recursively) that may be a result file, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise QuantgateError(directory, "not a directory")
    return sorted(p for p in directory.rglob("*") if p.suffix in RESULT_SUFFIXES and p.is_file())


def format_judge_jsonl(items: Iterable[ItemOutcome]) -> str:
    """Write per-item counts in quantgate's own ``judge-jsonl`` format (one object a line)."""
    lines = []
    for outcome in items:
        record: dict[str, object] = {
            "item": outcome.item,
            "samples": outcome.samples,
            "correct": outcome.correct,
        }
        if outcome.output_tokens is not None:
            record["output_tokens"] = outcome.output_tokens
        lines.append(json.dumps(record, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def describe(result_file: ResultFile) -> dict[str, object]:
    """A JSON-ready summary of a ``ResultFile``: kind, tool version, provenance, cells and metrics."""
    accuracy: list[dict[str, object]] = [
        {
            "task": r.task,
            "fewshot": r.fewshot,
            "metric": r.metric,
            "value": r.value,
            "stderr": r.stderr,
            "samples_per_item": r.samples_per_item,
            "items": None if r.items is None else len(r.items),
            "model": r.model,
        }
        for r in result_file.accuracy
    ]
    performance: list[dict[str, object]] = [
        {
            "name": r.name,
            "scenario": r.scenario,
            "model": r.model,
            "metrics": dict(r.metrics),
            "samples": None if r.samples is None else len(r.samples),
            "prompt_tokens": r.prompt_tokens,
            "output_tokens": r.output_tokens,
        }
        for r in result_file.performance
    ]
    return {
        "path": result_file.path,
        "kind": result_file.kind,
        "tool_version": result_file.tool_version,
        "provenance": dict(result_file.provenance),
        "accuracy": accuracy,
        "performance": performance,
    }


# --------------------------------------------------------------------------------------------------
# Loading and sniffing
# --------------------------------------------------------------------------------------------------

Record = tuple[str, object]  # (where label such as "line 3" or "row 0", the parsed record)


def _read_result(path: Path) -> ResultFile:
    if path.is_dir():
        raise QuantgateError(path, "is a directory, not a result file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise QuantgateError(path, f"cannot read: {exc.strerror or exc}") from None
    if data[:4] == b"PAR1":
        return _details_result(path, _parquet_records(path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise QuantgateError(path, "not UTF-8 text (nor a parquet file)") from None
    if not text.strip():
        raise QuantgateError(path, "empty file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # more than one JSON value: JSON Lines
            return _read_lines(path, _json_lines(path, text))
        raise QuantgateError(path, f"invalid JSON: {exc.msg}", f"line {exc.lineno}") from None
    except (ValueError, RecursionError) as exc:
        raise QuantgateError(path, f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise QuantgateError(path, f"a result file must hold a JSON object, got {_what(doc)}")
    kind = _sniff_object(doc)
    if kind in ("judge-jsonl", "lighteval-details"):
        first_line = next(i for i, line in enumerate(text.split("\n"), 1) if line.strip())
        return _read_lines(path, [(f"line {first_line}", doc)])
    if kind is None:
        keys = ", ".join(sorted(str(k) for k in doc)[:8]) or "none"
        raise QuantgateError(
            path,
            f"not a result file quantgate knows (top-level keys: {keys}; known kinds: {', '.join(KINDS)})",
        )
    reader = _JSON_READERS[kind]
    return reader(path, doc)


def _json_lines(path: Path, text: str) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            records.append((where, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise QuantgateError(path, f"invalid JSON: {exc.msg}", where) from None
        except (ValueError, RecursionError) as exc:
            raise QuantgateError(path, f"invalid JSON: {exc}", where) from None
    return records


def _read_lines(path: Path, records: list[Record]) -> ResultFile:
    where, first = records[0]
    if not isinstance(first, dict):
        raise QuantgateError(path, f"each line must hold a JSON object, got {_what(first)}", where)
    kind = _sniff_object(first)
    if kind == "judge-jsonl" or (kind is None and "item" in first):
        return _judge_result(path, records)
    if kind == "lighteval-details":
        return _details_result(path, records)
    raise QuantgateError(
        path, "JSON Lines of an unknown kind (quantgate reads judge-jsonl and lighteval-details lines)", where
    )


def _sniff_object(doc: Mapping[str, object]) -> str | None:
    keys = set(doc)
    results = doc.get("results")
    if "config_general" in keys and "results" in keys:
        return "lighteval-results"
    if isinstance(results, dict):
        lm_eval_markers = {
            "lm_eval_version",
            "n-shot",
            "n-samples",
            "configs",
            "higher_is_better",
            "group_subtasks",
        }
        if keys & lm_eval_markers or {"versions", "config"} <= keys:
            return "lm-eval-results"
        if any(isinstance(k, str) and "|" in k for k in results):
            return "lighteval-results"
    benchmarks = doc.get("benchmarks")
    if "machine_info" in keys and "benchmarks" in keys:
        return "pytest-benchmark"
    if isinstance(benchmarks, list):
        metadata = doc.get("metadata")
        if "guidellm_version" in keys or (isinstance(metadata, dict) and "guidellm_version" in metadata):
            return "guidellm-report"
        if any(isinstance(b, dict) and b.get("type_") == "generative_benchmark" for b in benchmarks):
            return "guidellm-report"
    if "avg_latency" in keys:
        return "vllm-bench-latency"
    if {"requests_per_second", "tokens_per_second"} <= keys:
        return "vllm-bench-throughput"
    if "request_throughput" in keys:
        return "vllm-bench-serve"
    if "item" in keys and keys & {"samples", "correct"}:
        return "judge-jsonl"
    if keys & {"doc", "__doc__"} and keys & {"metric", "__metric__"}:
        return "lighteval-details"
    if "metrics" in keys and keys & {"predictions", "example"}:
        return "lighteval-details"
    return None


def _parquet_records(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise QuantgateError(
            path, "reading parquet needs pyarrow: pip install 'quantgate[parquet]'"
        ) from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises ArrowInvalid, ArrowNotImplementedError, OSError, ...
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise QuantgateError(path, f"not a readable parquet file: {message}") from None
    if not rows:
        raise QuantgateError(path, "the parquet file has no rows")
    return [(f"row {index}", row) for index, row in enumerate(rows)]


# --------------------------------------------------------------------------------------------------
# Value helpers: every check names the field
# --------------------------------------------------------------------------------------------------


def _what(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _join(where: str, key: object) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def _mapping(path: Path, value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise QuantgateError(path, f"must be an object, got {_what(value)}", where)
    return value


def _list(path: Path, value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise QuantgateError(path, f"must be a list, got {_what(value)}", where)
    return value


def _required(path: Path, doc: Mapping[str, object], key: str, where: str = "") -> object:
    if key not in doc:
        raise QuantgateError(path, "missing", _join(where, key))
    return doc[key]


def _number(
    path: Path, value: object, where: str, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    if not _is_number(value):
        raise QuantgateError(path, f"must be a number, got {_what(value)}", where)
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise QuantgateError(path, "number out of range", where) from None
    if not math.isfinite(number):
        raise QuantgateError(path, f"must be a finite number, got {number!r}", where)
    if minimum is not None and number < minimum:
        raise QuantgateError(path, f"must be >= {minimum:g}, got {number!r}", where)
    if maximum is not None and number > maximum:
        raise QuantgateError(path, f"must be <= {maximum:g}, got {number!r}", where)
    return number


def _count(path: Path, value: object, where: str, *, minimum: int = 0) -> int:
    """An integer count; a float with an integral value (as pandas writes them) is accepted."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not _is_count(value):
        raise QuantgateError(path, f"must be an integer, got {_what(value)}", where)
    assert isinstance(value, int)
    if value < minimum:
        raise QuantgateError(path, f"must be an integer >= {minimum}, got {value}", where)
    return value


def _optional_number(
    path: Path, doc: Mapping[str, object], key: str, where: str, **bounds: float
) -> float | None:
    value = doc.get(key)
    return None if value is None else _number(path, value, _join(where, key), **bounds)


def _optional_count(path: Path, doc: Mapping[str, object], key: str, where: str) -> int | None:
    value = doc.get(key)
    return None if value is None else _count(path, value, _join(where, key))


def _dict_or_empty(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def _add_provenance(
    provenance: dict[str, str], prefix: str, doc: object, keys: Iterable[str] | None = None
) -> None:
    """Copy the scalar entries of ``doc`` (all, or ``keys``) into ``provenance`` as ``prefix + key``."""
    if not isinstance(doc, dict):
        return
    for key in keys if keys is not None else doc:
        text = _scalar_text(doc.get(key))
        if text is not None and text != "":
            provenance[f"{prefix}{key}"] = text


def _stderr(path: Path, value: object, where: str) -> float | None:
    """A standard error: absent, null, "N/A" or NaN mean unknown; otherwise a finite number >= 0."""
    if value is None or value == "N/A" or value == "":
        return None
    if _is_number(value) and isinstance(value, float) and math.isnan(value):
        return None
    return _number(path, value, where, minimum=0.0)


# --------------------------------------------------------------------------------------------------
# Metric and task names
# --------------------------------------------------------------------------------------------------

_OLD_SAMPLES = re.compile(r"^(?P<base>.*pass@1):(?P<n>\d+)_samples$")
_PARAMS = re.compile(r"^[A-Za-z_]\w*=[^&=]*(?:&[A-Za-z_]\w*=[^&=]*)*$")


def _metric_params(name: str) -> tuple[str, dict[str, str]]:
    """Split ``pass@k:k=1&n=20`` into ``("pass@k", {"k": "1", "n": "20"})``; no params → ``{}``."""
    base, sep, tail = name.rpartition(":")
    if sep and _PARAMS.match(tail):
        return base, dict(part.split("=", 1) for part in tail.split("&"))
    return name, {}


def _samples_in_name(name: str) -> int | None:
    """Samples per item named by a lighteval metric (``...:n=64``, ``math_pass@1:4_samples``), else None."""
    old = _OLD_SAMPLES.match(name)
    if old:
        n = int(old["n"])
        return n if n >= 1 else None
    _, params = _metric_params(name)
    n_text = params.get("n", "")
    if n_text.isdigit() and int(n_text) >= 1:
        return int(n_text)
    return None


def _is_mean_over_samples(name: str) -> bool:
    """True for lighteval metrics whose per-item value is (number correct) / (samples)."""
    if _OLD_SAMPLES.match(name):
        return True
    base, params = _metric_params(name)
    if base.endswith("pass@k") and params.get("k") == "1":
        return True
    return base.endswith("avg@n")


def _split_task_key(path: Path, key: str, where: str) -> tuple[str, int | None]:
    """``lighteval|aime24|0`` / ``aime24|0`` / ``aime24@n=20|0`` → ``("aime24", 0)``."""
    parts = key.split("|")
    if len(parts) > 3:
        raise QuantgateError(path, f"task key {key!r} is not task|fewshot or suite|task|fewshot", where)
    task = parts[1] if len(parts) == 3 else parts[0]
    task = task.split("@")[0].strip()
    if not task:
        raise QuantgateError(path, f"task key {key!r} names no task", where)
    if len(parts) == 1:
        return task, None
    fewshot = parts[-1].strip()
    if not fewshot.isdigit():
        raise QuantgateError(path, f"fewshot {parts[-1]!r} in task key {key!r} is not a whole number", where)
    return task, int(fewshot)


# --------------------------------------------------------------------------------------------------
# lighteval results
# --------------------------------------------------------------------------------------------------


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
            out.append(
                AccuracyResult(
                    source=str(path),
                    kind=kind,
                    tool_version=tool_version,
                    model=model,
                    task=task,
                    metric=metric,
                    value=number,
                    stderr=stderr,
                    samples_per_item=_samples_in_name(metric),
                    items=None,
                    fewshot=fewshot,
                )
            )
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
        per_item = [o.correct / o.samples for o in outcomes]
        sample_counts = {o.samples for o in outcomes}
        out.append(
            AccuracyResult(
                source=str(path),
                kind=kind,
                tool_version=None,
                model=None,
                task=task,
                metric=metric,
                value=sum(per_item) / len(per_item),
                stderr=None,
                samples_per_item=sample_counts.pop() if len(sample_counts) == 1 else None,
                items=tuple(outcomes),
                fewshot=fewshot,
            )
        )
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
        if any(v not in (0.0, 1.0) for v in values):
            return None
        return [
            ItemOutcome(item, 1, int(v), row.output_tokens, row.output_lengths)
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


# --------------------------------------------------------------------------------------------------
# judge-jsonl (quantgate's own per-item format)
# --------------------------------------------------------------------------------------------------

_JUDGE_FIELDS: Final = frozenset({"item", "samples", "correct", "output_tokens"})


def _judge_result(path: Path, records: Sequence[Record]) -> ResultFile:
    kind = "judge-jsonl"
    outcomes: list[ItemOutcome] = []
    first_seen: dict[str, str] = {}
    for where, record in records:
        if not isinstance(record, dict):
            raise QuantgateError(path, f"each line must hold a JSON object, got {_what(record)}", where)
        unknown = sorted(str(k) for k in record if k not in _JUDGE_FIELDS)
        if unknown:
            raise QuantgateError(
                path, f"unknown field {unknown[0]!r} (fields: item, samples, correct, output_tokens)", where
            )
        for key in ("item", "samples", "correct"):
            if key not in record:
                raise QuantgateError(path, f"missing {key!r}", where)
        item = record["item"]
        if not isinstance(item, str) or not item:
            raise QuantgateError(path, f"'item' must be a non-empty string, got {_what(item)}", where)
        samples = record["samples"]
        correct = record["correct"]
        if not _is_count(samples) or samples < 1:
            raise QuantgateError(path, f"'samples' must be an integer >= 1, got {_what(samples)}", where)
        if not _is_count(correct) or correct < 0:
            raise QuantgateError(path, f"'correct' must be an integer >= 0, got {_what(correct)}", where)
        if correct > samples:
            raise QuantgateError(path, f"'correct' ({correct}) exceeds 'samples' ({samples})", where)
        tokens = record.get("output_tokens")
        if tokens is not None and (not _is_number(tokens) or not math.isfinite(tokens) or tokens < 0):
            raise QuantgateError(
                path, f"'output_tokens' must be a finite number >= 0, got {_what(tokens)}", where
            )
        if item in first_seen:
            raise QuantgateError(path, f"duplicated item {item!r} (first on {first_seen[item]})", where)
        first_seen[item] = where
        outcomes.append(ItemOutcome(item, samples, correct, None if tokens is None else float(tokens)))
    per_item = [o.correct / o.samples for o in outcomes]
    sample_counts = {o.samples for o in outcomes}
    result = AccuracyResult(
        source=str(path),
        kind=kind,
        tool_version=None,
        model=None,
        task=path.stem,
        metric="pass@1",
        value=sum(per_item) / len(per_item),
        stderr=None,
        samples_per_item=sample_counts.pop() if len(sample_counts) == 1 else None,
        items=tuple(outcomes),
    )
    return ResultFile(str(path), kind, None, (result,), (), {"tool": "quantgate"})


# --------------------------------------------------------------------------------------------------
# lm-evaluation-harness results
# --------------------------------------------------------------------------------------------------

_LM_EVAL_NON_METRICS: Final = frozenset({"alias", "name", "sample_len", "samples", "sample_count"})


def _lm_eval_results(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "lm-eval-results"
    results = _mapping(path, _required(path, doc, "results"), "results")
    tool_version = _optional_str(doc.get("lm_eval_version"))
    config = _dict_or_empty(doc.get("config"))
    model = _optional_str(doc.get("model_name")) or _pretrained(config.get("model_args"))
    n_shot = _dict_or_empty(doc.get("n-shot"))

    provenance: dict[str, str] = {"tool": "lm-evaluation-harness"}
    _add_provenance(
        provenance,
        "",
        doc,
        (
            "lm_eval_version",
            "git_hash",
            "upper_git_hash",
            "date",
            "transformers_version",
            "model_name",
            "model_name_sanitized",
            "model_source",
            "start_time",
            "end_time",
            "total_evaluation_time_seconds",
        ),
    )
    _add_provenance(
        provenance, "config.", config, ("model", "model_args", "batch_size", "limit", "bootstrap_iters")
    )
    n_samples = doc.get("n-samples")
    if isinstance(n_samples, dict):
        for task_name, counts in n_samples.items():
            _add_provenance(provenance, f"n-samples.{task_name}.", counts, ("original", "effective"))

    out: list[AccuracyResult] = []
    for task, scores in results.items():
        where = _join("results", task)
        scores = _mapping(path, scores, where)
        fewshot_raw = n_shot.get(task)
        fewshot = fewshot_raw if isinstance(fewshot_raw, int) and not isinstance(fewshot_raw, bool) else None
        fewshot = fewshot if fewshot is not None and fewshot >= 0 else None
        for key, value in scores.items():
            base, comma, filter_name = key.partition(",")
            if key in _LM_EVAL_NON_METRICS or base.endswith("_stderr"):
                continue
            if not comma and not _is_number(value):
                continue  # old-style metadata such as a string alias
            metric_where = _join(where, key)
            number = _number(path, value, metric_where)
            stderr_key = f"{base}_stderr{comma}{filter_name}"
            stderr = _stderr(path, scores.get(stderr_key), _join(where, stderr_key))
            out.append(
                AccuracyResult(
                    source=str(path),
                    kind=kind,
                    tool_version=tool_version,
                    model=model,
                    task=str(task),
                    metric=key,
                    value=number,
                    stderr=stderr,
                    samples_per_item=None,
                    items=None,
                    fewshot=fewshot,
                )
            )
    if not out:
        raise QuantgateError(path, "no metrics in any task", "results")
    return ResultFile(str(path), kind, tool_version, tuple(out), (), provenance)


def _pretrained(model_args: object) -> str | None:
    if isinstance(model_args, dict):
        return _optional_str(model_args.get("pretrained")) or _optional_str(model_args.get("model"))
    if isinstance(model_args, str):
        for part in model_args.split(","):
            key, _, value = part.partition("=")
            if key.strip() in ("pretrained", "model") and value.strip():
                return value.strip()
    return None


# --------------------------------------------------------------------------------------------------
# vLLM bench latency | throughput | serve
# --------------------------------------------------------------------------------------------------


def _vllm_latency(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "vllm-bench-latency"
    metrics = {"latency_s": _number(path, _required(path, doc, "avg_latency"), "avg_latency", minimum=0.0)}
    percentiles = doc.get("percentiles")
    if percentiles is not None:
        for key, value in _mapping(path, percentiles, "percentiles").items():
            where = _join("percentiles", key)
            try:
                level = float(key)
            except ValueError:
                raise QuantgateError(path, "percentile key must be a number", where) from None
            if not 0 <= level <= 100:
                raise QuantgateError(path, "percentile key must lie in 0..100", where)
            metrics[f"p{key}_latency_s"] = _number(path, value, where, minimum=0.0)
    samples: tuple[float, ...] | None = None
    latencies = doc.get("latencies")
    if latencies is not None:
        values = _list(path, latencies, "latencies")
        samples = (
            tuple(_number(path, v, f"latencies[{i}]", minimum=0.0) for i, v in enumerate(values)) or None
        )
    perf = PerfResult(str(path), kind, None, None, path.stem, "latency", metrics, samples, None, None)
    return ResultFile(str(path), kind, None, (), (perf,), {"tool": "vllm bench latency"})


def _vllm_throughput(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "vllm-bench-throughput"
    elapsed = _number(path, _required(path, doc, "elapsed_time"), "elapsed_time", minimum=0.0)
    num_requests = _count(path, _required(path, doc, "num_requests"), "num_requests")
    total_tokens = _count(path, _required(path, doc, "total_num_tokens"), "total_num_tokens")
    metrics = {
        "request_throughput": _number(
            path, _required(path, doc, "requests_per_second"), "requests_per_second", minimum=0.0
        ),
        "total_token_throughput": _number(
            path, _required(path, doc, "tokens_per_second"), "tokens_per_second", minimum=0.0
        ),
        "elapsed_s": elapsed,
        "num_requests": float(num_requests),
    }
    output_tokens = _optional_count(path, doc, "total_output_tokens", "")
    prompt_tokens: int | None = None
    if output_tokens is not None:
        if output_tokens > total_tokens:
            raise QuantgateError(path, f"exceeds total_num_tokens ({total_tokens})", "total_output_tokens")
        prompt_tokens = total_tokens - output_tokens
        if elapsed > 0:
            metrics["output_throughput"] = output_tokens / elapsed
    perf = PerfResult(
        str(path), kind, None, None, path.stem, "offline", metrics, None, prompt_tokens, output_tokens
    )
    return ResultFile(str(path), kind, None, (), (perf,), {"tool": "vllm bench throughput"})


_SERVE_STAT = re.compile(r"^(?:mean|median|std|p\d+(?:\.\d+)?)_(?:ttft|tpot|itl|e2el)_ms$")
_SERVE_RATES: Final = (
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "request_goodput",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
)


def _vllm_serve(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "vllm-bench-serve"
    metrics: dict[str, float] = {}
    for key in ("request_throughput", "output_throughput"):
        metrics[key] = _number(path, _required(path, doc, key), key, minimum=0.0)
    for key in _SERVE_RATES[2:]:
        value = _optional_number(path, doc, key, "", minimum=0.0)
        if value is not None:
            metrics[key] = value
    metrics["duration_s"] = _number(path, _required(path, doc, "duration"), "duration", minimum=0.0)
    metrics["completed"] = float(_count(path, _required(path, doc, "completed"), "completed"))
    failed = _optional_count(path, doc, "failed", "")
    if failed is not None:
        metrics["failed"] = float(failed)
    for key, stat in doc.items():
        if _SERVE_STAT.match(key):
            metrics[key] = _number(path, stat, key, minimum=0.0)
    if "mean_e2el_ms" in metrics:
        metrics["latency_s"] = metrics["mean_e2el_ms"] / 1000.0
    prompt_tokens = _count(path, _required(path, doc, "total_input_tokens"), "total_input_tokens")
    output_tokens = _count(path, _required(path, doc, "total_output_tokens"), "total_output_tokens")

    rate = doc.get("request_rate")
    if isinstance(rate, str):
        if rate.strip().lower() not in ("inf", "infinity"):
            raise QuantgateError(path, f'must be a number or "inf", got {_what(rate)}', "request_rate")
        rate_text: str | None = "inf"
    elif _is_number(rate) and isinstance(rate, float) and math.isinf(rate) and rate > 0:
        rate_text = "inf"
    elif rate is None:
        rate_text = None
    else:
        rate_text = f"{_number(path, rate, 'request_rate', minimum=0.0):g}"
    concurrency = _optional_count(path, doc, "max_concurrency", "")
    parts = []
    if rate_text is not None:
        parts.append(f"request_rate={rate_text}")
    if concurrency is not None:
        parts.append(f"max_concurrency={concurrency}")
    model = _optional_str(doc.get("model_id"))
    provenance: dict[str, str] = {"tool": "vllm bench serve"}
    known = {
        "date",
        "backend",
        "endpoint_type",
        "label",
        "model_id",
        "tokenizer_id",
        "num_prompts",
        "request_rate",
        "burstiness",
        "max_concurrency",
        "ramp_up_strategy",
        "ramp_up_start_rps",
        "ramp_up_end_rps",
    }
    _add_provenance(provenance, "", doc, sorted(known))
    for key, entry in doc.items():  # --metadata KEY=VALUE entries are strings at the top level
        if key not in known and isinstance(entry, str) and entry:
            provenance.setdefault(key, entry)
    perf = PerfResult(
        str(path),
        kind,
        None,
        model,
        path.stem,
        ", ".join(parts) or None,
        metrics,
        None,
        prompt_tokens,
        output_tokens,
    )
    return ResultFile(str(path), kind, None, (), (perf,), provenance)


# --------------------------------------------------------------------------------------------------
# GuideLLM report
# --------------------------------------------------------------------------------------------------

# GuideLLM metric → (quantgate metric name prefix/suffix form, scale to quantgate units)
_GUIDELLM_LATENCIES: Final = (
    ("time_to_first_token_ms", "ttft"),
    ("inter_token_latency_ms", "itl"),
    ("time_per_output_token_ms", "tpot"),
)
_GUIDELLM_RATES: Final = (
    ("requests_per_second", "request_throughput"),
    ("output_tokens_per_second", "output_throughput"),
    ("tokens_per_second", "total_token_throughput"),
    ("request_concurrency", "mean_concurrency"),
)


def _guidellm_report(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "guidellm-report"
    metadata = _dict_or_empty(doc.get("metadata"))
    version_where = "version" if "version" in doc else "metadata.version"
    version = doc.get("version", metadata.get("version"))
    if version is not None and (not _is_count(version) or version not in GUIDELLM_REPORT_VERSIONS):
        known = " and ".join(str(v) for v in GUIDELLM_REPORT_VERSIONS)
        raise QuantgateError(
            path, f"report version {version!r} is not supported (this quantgate reads {known})", version_where
        )
    tool_version = _optional_str(doc.get("guidellm_version")) or _optional_str(
        metadata.get("guidellm_version")
    )
    provenance: dict[str, str] = {"tool": "guidellm"}
    _add_provenance(provenance, "", doc, ("version", "guidellm_version", "python_version", "platform"))
    _add_provenance(provenance, "", metadata, ("version", "guidellm_version", "python_version", "platform"))
    report_config = _dict_or_empty(doc.get("config"))

    benchmarks = _list(path, _required(path, doc, "benchmarks"), "benchmarks")
    if not benchmarks:
        raise QuantgateError(path, "the report holds no benchmarks", "benchmarks")
    out = []
    for index, raw in enumerate(benchmarks):
        where = f"benchmarks[{index}]"
        bench = _mapping(path, raw, where)
        type_ = bench.get("type_")
        if type_ is not None and type_ != "generative_benchmark":
            raise QuantgateError(path, f"unknown benchmark type {_what(type_)}", _join(where, "type_"))
        out.append(_guidellm_benchmark(path, bench, where, index, tool_version, report_config))
    return ResultFile(str(path), kind, tool_version, (), tuple(out), provenance)


def _guidellm_benchmark(
    path: Path,
    bench: Mapping[str, object],
    where: str,
    index: int,
    tool_version: str | None,
    report_config: Mapping[str, object],
) -> PerfResult:
    metrics_doc = _mapping(path, _required(path, bench, "metrics", where), _join(where, "metrics"))
    metrics_where = _join(where, "metrics")
    metrics: dict[str, float] = {}

    def successful(name: str) -> Mapping[str, object] | None:
        breakdown = metrics_doc.get(name)
        if breakdown is None:
            return None
        summary = _mapping(path, breakdown, _join(metrics_where, name)).get("successful")
        return (
            None if summary is None else _mapping(path, summary, _join(metrics_where, f"{name}.successful"))
        )

    def stat(summary: Mapping[str, object], name: str, key: str) -> float | None:
        value = summary.get(key)
        where_key = _join(metrics_where, f"{name}.successful.{key}")
        return None if value is None else _number(path, value, where_key, minimum=0.0)

    def percentile(summary: Mapping[str, object], name: str, key: str) -> float | None:
        table = summary.get("percentiles")
        if table is None:
            return None
        table = _mapping(path, table, _join(metrics_where, f"{name}.successful.percentiles"))
        value = table.get(key)
        where_key = _join(metrics_where, f"{name}.successful.percentiles.{key}")
        return None if value is None else _number(path, value, where_key, minimum=0.0)

    def put(name: str, value: float | None, scale: float = 1.0) -> None:
        if value is not None:
            metrics[name] = value * scale

    for source, target in _GUIDELLM_RATES:
        summary = successful(source)
        if summary is not None:
            put(target, stat(summary, source, "mean"))
    for source, short in _GUIDELLM_LATENCIES:
        summary = successful(source)
        if summary is not None:
            put(f"mean_{short}_ms", stat(summary, source, "mean"))
            put(f"median_{short}_ms", stat(summary, source, "median"))
            put(f"std_{short}_ms", stat(summary, source, "std_dev"))
            put(f"p90_{short}_ms", percentile(summary, source, "p90"))
            put(f"p99_{short}_ms", percentile(summary, source, "p99"))
    latency = successful("request_latency")
    if latency is not None:
        put("latency_s", stat(latency, "request_latency", "mean"))
        put("median_latency_s", stat(latency, "request_latency", "median"))
        put("p99_latency_s", percentile(latency, "request_latency", "p99"))
        put("mean_e2el_ms", stat(latency, "request_latency", "mean"), 1000.0)
    totals = metrics_doc.get("request_totals")
    if totals is not None:
        totals = _mapping(path, totals, _join(metrics_where, "request_totals"))
        for status, target in (
            ("successful", "completed"),
            ("errored", "failed"),
            ("incomplete", "incomplete"),
        ):
            count = _optional_count(path, totals, status, _join(metrics_where, "request_totals"))
            if count is not None:
                metrics[target] = float(count)

    token_totals: list[int | None] = []
    for name in ("prompt_token_count", "output_token_count"):
        summary = successful(name)
        total = None if summary is None else stat(summary, name, "total_sum")
        token_totals.append(None if total is None else round(total))

    config = _dict_or_empty(bench.get("config"))
    args = _dict_or_empty(bench.get("args"))
    strategy = config.get("strategy", args.get("strategy", bench.get("strategy")))
    name = _strategy_name(strategy) or f"benchmark-{index}"
    profile = config.get("profile", args.get("profile", report_config.get("profile")))
    scenario = _type_of(profile)
    model = None
    worker = bench.get("worker")  # reports before 2025-06 named the model here
    for holder, key in (
        (config.get("backend"), "model"),
        (worker, "backend_model"),
        (report_config.get("backend"), "model"),
        (report_config, "model"),
    ):
        if isinstance(holder, dict) and _optional_str(holder.get(key)):
            model = _optional_str(holder.get(key))
            break
    return PerfResult(
        str(path),
        "guidellm-report",
        tool_version,
        model,
        name,
        scenario,
        metrics,
        None,
        token_totals[0],
        token_totals[1],
    )


def _type_of(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return _optional_str(value.get("type_")) or _optional_str(value.get("kind"))
    return None


def _strategy_name(strategy: object) -> str | None:
    """GuideLLM's own labels: ``synchronous``, ``throughput``, ``concurrent@8``, ``constant@4.0``."""
    type_ = _type_of(strategy)
    if type_ is None or not isinstance(strategy, dict):
        return type_
    for key in ("streams", "rate"):
        value = strategy.get(key)
        if _is_number(value):
            return f"{type_}@{value!r}"
    return type_


# --------------------------------------------------------------------------------------------------
# pytest-benchmark
# --------------------------------------------------------------------------------------------------

_PYTEST_BENCHMARK_STATS: Final = (
    ("mean", "latency_s"),
    ("min", "min_s"),
    ("max", "max_s"),
    ("median", "median_s"),
    ("stddev", "stddev_s"),
)


def _pytest_benchmark(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "pytest-benchmark"
    tool_version = _optional_str(doc.get("version"))
    provenance: dict[str, str] = {"tool": "pytest-benchmark"}
    _add_provenance(provenance, "", doc, ("datetime", "version"))
    _add_provenance(provenance, "commit_info.", doc.get("commit_info"))
    machine = doc.get("machine_info")
    _add_provenance(provenance, "machine_info.", machine)
    if isinstance(machine, dict):
        _add_provenance(provenance, "machine_info.cpu.", machine.get("cpu"), ("brand_raw", "count", "arch"))

    benchmarks = _list(path, _required(path, doc, "benchmarks"), "benchmarks")
    if not benchmarks:
        raise QuantgateError(path, "the file holds no benchmarks", "benchmarks")
    out = []
    for index, raw in enumerate(benchmarks):
        where = f"benchmarks[{index}]"
        bench = _mapping(path, raw, where)
        name = bench.get("name")
        if not isinstance(name, str) or not name:
            raise QuantgateError(path, f"must be a non-empty string, got {_what(name)}", _join(where, "name"))
        stats_where = _join(where, "stats")
        stats = _mapping(path, _required(path, bench, "stats", where), stats_where)
        metrics: dict[str, float] = {}
        for key, target in _PYTEST_BENCHMARK_STATS:
            metrics[target] = _number(
                path, _required(path, stats, key, stats_where), _join(stats_where, key), minimum=0.0
            )
        metrics["rounds"] = float(
            _count(
                path, _required(path, stats, "rounds", stats_where), _join(stats_where, "rounds"), minimum=1
            )
        )
        for key, target in (("ops", "ops"), ("iqr", "iqr_s")):
            value = _optional_number(path, stats, key, stats_where, minimum=0.0)
            if value is not None:
                metrics[target] = value
        extra = bench.get("extra_info")
        if isinstance(extra, dict):
            for key, value in extra.items():
                if _is_number(value) and math.isfinite(float(value)):  # freeform: keep the numbers only
                    metrics[key if key not in metrics else f"extra_info.{key}"] = float(value)
        samples: tuple[float, ...] | None = None
        data = stats.get("data")
        if data is not None:
            values = _list(path, data, _join(stats_where, "data"))
            samples = (
                tuple(
                    _number(path, v, _join(_join(stats_where, "data"), i), minimum=0.0)
                    for i, v in enumerate(values)
                )
                or None
            )
        model = None
        for holder in (bench.get("params"), extra):
            if isinstance(holder, dict) and _optional_str(holder.get("model")):
                model = _optional_str(holder.get("model"))
                break
        group = _optional_str(bench.get("group"))
        out.append(
            PerfResult(str(path), kind, tool_version, model, name, group, metrics, samples, None, None)
        )
    return ResultFile(str(path), kind, tool_version, (), tuple(out), provenance)


_JSON_READERS: Final = {
    "lighteval-results": _lighteval_results,
    "lm-eval-results": _lm_eval_results,
    "vllm-bench-latency": _vllm_latency,
    "vllm-bench-throughput": _vllm_throughput,
    "vllm-bench-serve": _vllm_serve,
    "guidellm-report": _guidellm_report,
    "pytest-benchmark": _pytest_benchmark,
}
