"""Reading a result file: decide from its content which tool wrote it, then hand it to that tool's reader."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from quantgate.errors import QuantgateError
from quantgate.results.fields import _what
from quantgate.results.guidellm import _guidellm_report
from quantgate.results.judge_jsonl import _judge_result
from quantgate.results.lighteval import _details_result, _lighteval_results
from quantgate.results.lm_eval import _lm_eval_results
from quantgate.results.pytest_benchmark import _pytest_benchmark
from quantgate.results.records import (
    KINDS,
    RESULT_SUFFIXES,
    ItemOutcome,
    Record,
    ResultFile,
)
from quantgate.results.vllm_bench import SERVE_LATENCY_KEYS, _vllm_latency, _vllm_serve, _vllm_throughput


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
    if "request_throughput" in keys or (keys & SERVE_LATENCY_KEYS and keys & {"completed", "duration"}):
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


_JSON_READERS: Final = {
    "lighteval-results": _lighteval_results,
    "lm-eval-results": _lm_eval_results,
    "vllm-bench-latency": _vllm_latency,
    "vllm-bench-throughput": _vllm_throughput,
    "vllm-bench-serve": _vllm_serve,
    "guidellm-report": _guidellm_report,
    "pytest-benchmark": _pytest_benchmark,
}
