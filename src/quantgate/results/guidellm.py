"""GuideLLM benchmark reports."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from quantgate.errors import QuantgateError
from quantgate.results.fields import (
    _add_provenance,
    _dict_or_empty,
    _join,
    _list,
    _mapping,
    _number,
    _optional_count,
    _optional_str,
    _required,
    _what,
)
from quantgate.results.records import (
    GUIDELLM_REPORT_VERSIONS,
    PerfResult,
    ResultFile,
    _is_count,
    _is_number,
)

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
