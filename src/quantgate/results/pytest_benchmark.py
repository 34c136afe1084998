"""pytest-benchmark JSON files."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from quantgate.errors import QuantgateError
from quantgate.results.fields import (
    _add_provenance,
    _count,
    _join,
    _list,
    _mapping,
    _number,
    _optional_number,
    _optional_str,
    _required,
    _what,
)
from quantgate.results.records import (
    PerfResult,
    ResultFile,
    _is_number,
)

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
