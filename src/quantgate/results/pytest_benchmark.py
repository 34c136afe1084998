"""pytest-benchmark JSON files: the one parser of the format, and its reading as quantgate results.

``parse_benchmarks`` checks a document's layout (a supported ``version``, a non-empty ``benchmarks``
list, entries with a name, a unique fullname, ``stats`` and ``extra_info`` mappings) and returns its
entries as written; ``_pytest_benchmark`` turns them into ``PerfResult``s, and ``quantgate.benchcompare``
into figures per benchmark key. The writer is ``quantgate.benchjson``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
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

SUPPORTED_MAJOR: Final = ("3", "4", "5")
_REPEAT = re.compile(r"-r\d+\]$")


@dataclass(frozen=True)
class BenchmarkEntry:
    """One entry of a pytest-benchmark file as written; ``where`` names it in errors."""

    where: str
    fullname: str
    name: str
    group: str | None
    params: Mapping[str, object]
    stats: Mapping[str, object]
    extra_info: Mapping[str, object]

    @property
    def key(self) -> str:
        """The fullname, without the repeat suffix when the entry is one repeat of a run."""
        return _REPEAT.sub("]", self.fullname) if "repeat" in self.params else self.fullname


@dataclass(frozen=True)
class BenchmarkDocument:
    path: Path
    version: str | None
    commit: str | None
    when: str | None
    entries: tuple[BenchmarkEntry, ...]


def parse_benchmarks(path: Path, doc: object) -> BenchmarkDocument:
    """The entries of a pytest-benchmark document; any layout problem is a ``QuantgateError``."""
    if not isinstance(doc, Mapping):
        raise QuantgateError(path, "a pytest-benchmark file is a mapping at the top level")
    version = doc.get("version")
    if version is not None and (
        not isinstance(version, str) or version.split(".", 1)[0] not in SUPPORTED_MAJOR
    ):
        raise QuantgateError(
            path,
            f"pytest-benchmark layout {version!r} is not one of {', '.join(SUPPORTED_MAJOR)}.x",
            "version",
        )
    benchmarks = _list(path, _required(path, doc, "benchmarks"), "benchmarks")
    if not benchmarks:
        raise QuantgateError(path, "the file holds no benchmarks", "benchmarks")
    entries: list[BenchmarkEntry] = []
    fullnames: set[str] = set()
    for index, raw in enumerate(benchmarks):
        where = f"benchmarks[{index}]"
        bench = _mapping(path, raw, where)
        name = bench.get("name")
        if not isinstance(name, str) or not name:
            raise QuantgateError(path, f"must be a non-empty string, got {_what(name)}", _join(where, "name"))
        fullname = bench.get("fullname", name)
        if not isinstance(fullname, str) or not fullname:
            raise QuantgateError(path, "must be a non-empty string", _join(where, "fullname"))
        if fullname in fullnames:
            raise QuantgateError(path, f"{fullname!r} appears twice", _join(where, "fullname"))
        fullnames.add(fullname)
        stats = _mapping(path, _required(path, bench, "stats", where), _join(where, "stats"))
        extra = bench.get("extra_info")
        if extra is not None and not isinstance(extra, Mapping):
            raise QuantgateError(path, "must be a mapping", _join(where, "extra_info"))
        params = bench.get("params")
        entries.append(
            BenchmarkEntry(
                where,
                fullname,
                name,
                _optional_str(bench.get("group")),
                params if isinstance(params, Mapping) else {},
                stats,
                extra or {},
            )
        )
    commit = doc.get("commit_info")
    return BenchmarkDocument(
        path,
        version if isinstance(version, str) else None,
        str(commit.get("id")) if isinstance(commit, Mapping) and commit.get("id") else None,
        str(doc["datetime"]) if isinstance(doc.get("datetime"), str) else None,
        tuple(entries),
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
    parsed = parse_benchmarks(path, doc)
    provenance: dict[str, str] = {"tool": "pytest-benchmark"}
    _add_provenance(provenance, "", doc, ("datetime", "version"))
    _add_provenance(provenance, "commit_info.", doc.get("commit_info"))
    machine = doc.get("machine_info")
    _add_provenance(provenance, "machine_info.", machine)
    if isinstance(machine, dict):
        _add_provenance(provenance, "machine_info.cpu.", machine.get("cpu"), ("brand_raw", "count", "arch"))
    return ResultFile(
        str(path),
        kind,
        parsed.version,
        (),
        tuple(_perf(path, e, parsed.version) for e in parsed.entries),
        provenance,
    )


def _perf(path: Path, entry: BenchmarkEntry, tool_version: str | None) -> PerfResult:
    stats, stats_where = entry.stats, _join(entry.where, "stats")
    metrics: dict[str, float] = {}
    for key, target in _PYTEST_BENCHMARK_STATS:
        metrics[target] = _number(
            path, _required(path, stats, key, stats_where), _join(stats_where, key), minimum=0.0
        )
    metrics["rounds"] = float(
        _count(path, _required(path, stats, "rounds", stats_where), _join(stats_where, "rounds"), minimum=1)
    )
    for key, target in (("ops", "ops"), ("iqr", "iqr_s")):
        optional = _optional_number(path, stats, key, stats_where, minimum=0.0)
        if optional is not None:
            metrics[target] = optional
    for key, value in entry.extra_info.items():
        if isinstance(value, int | float) and _is_number(value) and math.isfinite(float(value)):
            metrics[key if key not in metrics else f"extra_info.{key}"] = float(
                value
            )  # freeform: numbers only
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
    for holder in (entry.params, entry.extra_info):
        if _optional_str(holder.get("model")):
            model = _optional_str(holder.get("model"))
            break
    return PerfResult(
        str(path),
        "pytest-benchmark",
        tool_version,
        model,
        entry.name,
        entry.group,
        metrics,
        samples,
        None,
        None,
    )
