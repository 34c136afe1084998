"""GuideLLM benchmark reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
_GUIDELLM_TOTALS: Final = (("successful", "completed"), ("errored", "failed"), ("incomplete", "incomplete"))


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


@dataclass(frozen=True)
class _Breakdowns:
    """A benchmark's ``metrics`` section: each metric's summary over successful requests."""

    path: Path
    doc: Mapping[str, object]
    where: str

    def successful(self, name: str) -> Mapping[str, object] | None:
        breakdown = self.doc.get(name)
        if breakdown is None:
            return None
        summary = _mapping(self.path, breakdown, _join(self.where, name)).get("successful")
        where = _join(self.where, f"{name}.successful")
        return None if summary is None else _mapping(self.path, summary, where)

    def stat(self, summary: Mapping[str, object], name: str, key: str) -> float | None:
        value = summary.get(key)
        where = _join(self.where, f"{name}.successful.{key}")
        return None if value is None else _number(self.path, value, where, minimum=0.0)

    def percentile(self, summary: Mapping[str, object], name: str, key: str) -> float | None:
        table = summary.get("percentiles")
        if table is None:
            return None
        where = _join(self.where, f"{name}.successful.percentiles")
        value = _mapping(self.path, table, where).get(key)
        return None if value is None else _number(self.path, value, f"{where}.{key}", minimum=0.0)


def _guidellm_metrics(metrics: _Breakdowns) -> dict[str, float]:
    """Rates, latency statistics and request counts under the names shared with vLLM's readers."""
    out: dict[str, float] = {}

    def put(name: str, value: float | None, scale: float = 1.0) -> None:
        if value is not None:
            out[name] = value * scale

    for source, target in _GUIDELLM_RATES:
        if (summary := metrics.successful(source)) is not None:
            put(target, metrics.stat(summary, source, "mean"))
    for source, short in _GUIDELLM_LATENCIES:
        if (summary := metrics.successful(source)) is not None:
            put(f"mean_{short}_ms", metrics.stat(summary, source, "mean"))
            put(f"median_{short}_ms", metrics.stat(summary, source, "median"))
            put(f"std_{short}_ms", metrics.stat(summary, source, "std_dev"))
            put(f"p90_{short}_ms", metrics.percentile(summary, source, "p90"))
            put(f"p99_{short}_ms", metrics.percentile(summary, source, "p99"))
    if (latency := metrics.successful("request_latency")) is not None:
        put("latency_s", metrics.stat(latency, "request_latency", "mean"))
        put("median_latency_s", metrics.stat(latency, "request_latency", "median"))
        put("p99_latency_s", metrics.percentile(latency, "request_latency", "p99"))
        put("mean_e2el_ms", metrics.stat(latency, "request_latency", "mean"), 1000.0)
    totals = metrics.doc.get("request_totals")
    if totals is not None:
        where = _join(metrics.where, "request_totals")
        totals = _mapping(metrics.path, totals, where)
        for status, target in (
            ("successful", "completed"),
            ("errored", "failed"),
            ("incomplete", "incomplete"),
        ):
            count = _optional_count(metrics.path, totals, status, where)
            if count is not None:
                out[target] = float(count)
    return out


def _token_total(metrics: _Breakdowns, name: str) -> int | None:
    summary = metrics.successful(name)
    total = None if summary is None else metrics.stat(summary, name, "total_sum")
    return None if total is None else round(total)


def _guidellm_model(
    bench: Mapping[str, object], config: Mapping[str, object], report_config: Mapping[str, object]
) -> str | None:
    """The served model's name, wherever this vintage of the report put it."""
    worker = bench.get("worker")  # reports before 2025-06 named the model here
    for holder, key in (
        (config.get("backend"), "model"),
        (worker, "backend_model"),
        (report_config.get("backend"), "model"),
        (report_config, "model"),
    ):
        if isinstance(holder, dict) and _optional_str(holder.get(key)):
            return _optional_str(holder.get(key))
    return None


def _guidellm_benchmark(
    path: Path,
    bench: Mapping[str, object],
    where: str,
    index: int,
    tool_version: str | None,
    report_config: Mapping[str, object],
) -> PerfResult:
    metrics_doc = _mapping(path, _required(path, bench, "metrics", where), _join(where, "metrics"))
    metrics = _Breakdowns(path, metrics_doc, _join(where, "metrics"))
    config = _dict_or_empty(bench.get("config"))
    args = _dict_or_empty(bench.get("args"))
    strategy = config.get("strategy", args.get("strategy", bench.get("strategy")))
    profile = config.get("profile", args.get("profile", report_config.get("profile")))
    return PerfResult(
        source=str(path),
        kind="guidellm-report",
        tool_version=tool_version,
        model=_guidellm_model(bench, config, report_config),
        name=_strategy_name(strategy) or f"benchmark-{index}",
        scenario=_type_of(profile),
        metrics=_guidellm_metrics(metrics),
        samples=None,
        prompt_tokens=_token_total(metrics, "prompt_token_count"),
        output_tokens=_token_total(metrics, "output_token_count"),
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
