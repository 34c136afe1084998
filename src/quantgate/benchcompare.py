"""Compare two pytest-benchmark files knowing which way is better for each figure.

What: ``load`` reads a pytest-benchmark JSON document (quantgate's, or one ``pytest --benchmark-json``
wrote) through the format's one parser (``quantgate.results.pytest_benchmark``), refusing layouts it
does not know; ``compare`` matches the benchmarks of two files and returns, per benchmark and metric,
the speedup of the new file over the old *in the better direction* (a throughput that rose and a latency
that fell are both above 1), judged by the speed judge (``quantgate.speedjudge``) against ``1 -
threshold``: repeats of one run (``params.repeat``, ``...-r0]``) give a confidence interval on the
ratio, so a regression is called only when the whole interval is below the floor and a noisy pair is
"inconclusive"; single figures are compared exactly. A benchmark the old file has and the new one lacks
is a regression too (nothing goes missing silently).

Why: ``pytest-benchmark compare`` reads every figure as a time, so a run whose requests/s fell from 40
to 20 shows as "faster", and it compares one number per side. No I/O besides ``load``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from quantgate.datafile import load_document
from quantgate.errors import QuantgateError
from quantgate.results.pytest_benchmark import SUPPORTED_MAJOR, parse_benchmarks
from quantgate.speedjudge import judge_speedup


@dataclass(frozen=True)
class Metric:
    """A figure of a benchmark entry: where it is, its unit, and which way is better."""

    name: str
    section: Literal["stats", "extra_info"]
    key: str
    unit: str
    higher_is_better: bool


METRICS: Final[dict[str, Metric]] = {
    m.name: m
    for m in (
        Metric("mean", "stats", "mean", "s", False),
        Metric("median", "stats", "median", "s", False),
        Metric("ops", "stats", "ops", "1/s", True),
        Metric("request_throughput", "extra_info", "request_throughput", "req/s", True),
        Metric("output_throughput", "extra_info", "output_throughput", "tok/s", True),
        Metric("total_token_throughput", "extra_info", "total_token_throughput", "tok/s", True),
        Metric("request_goodput", "extra_info", "request_goodput", "req/s", True),
        Metric("mean_ttft_ms", "extra_info", "mean_ttft_ms", "ms", False),
        Metric("p99_ttft_ms", "extra_info", "p99_ttft_ms", "ms", False),
        Metric("mean_tpot_ms", "extra_info", "mean_tpot_ms", "ms", False),
        Metric("p99_e2el_ms", "extra_info", "p99_e2el_ms", "ms", False),
    )
}
DEFAULT_METRICS: Final = (
    "request_throughput",
    "output_throughput",
    "request_goodput",
    "mean_ttft_ms",
    "mean_tpot_ms",
    "mean",
    "ops",
)


@dataclass(frozen=True)
class BenchmarkFile:
    """A loaded file: benchmark key -> figures per metric (a list over the key's repeats)."""

    path: Path
    figures: Mapping[str, Mapping[str, tuple[float, ...]]]
    commit: str | None
    when: str | None


ChangeVerdict = Literal["pass", "fail", "inconclusive", "missing", "new", "no ratio"]


@dataclass(frozen=True)
class Change:
    """One benchmark and metric: old and new median, and the speedup of new over old with its interval.

    ``speedup`` is in the better direction (a throughput that doubled and a latency that halved are
    both 2.0); ``verdict`` is the judge's against the floor ``1 - threshold``: ``fail`` only when the
    whole interval is below it, ``inconclusive`` when it straddles it (repeats too noisy to say).
    """

    benchmark: str
    metric: str
    old: float | None
    new: float | None
    speedup: float | None
    low: float | None
    high: float | None
    verdict: ChangeVerdict
    note: str

    @property
    def regression(self) -> bool:
        return self.verdict in ("fail", "missing")

    def line(self) -> str:
        if self.speedup is None:
            return f"{self.benchmark} {self.metric}: {self.verdict}: {self.note}"
        return (
            f"{self.benchmark} {self.metric}: {self.old:.6g} -> {self.new:.6g}, "
            f"x{self.speedup:.3f} [{self.low:.3f}, {self.high:.3f}]: {self.verdict}"
        )


def load(path: str | Path) -> BenchmarkFile:
    """Read a pytest-benchmark JSON file (``quantgate.results.pytest_benchmark.parse_benchmarks``, the
    format's one parser); any problem is a ``QuantgateError`` naming file and field."""
    path = Path(path)
    doc = load_document(path)
    parsed = parse_benchmarks(path, doc)
    if parsed.version is None:
        raise QuantgateError(
            path, f"needs the pytest-benchmark layout, one of {', '.join(SUPPORTED_MAJOR)}.x", "version"
        )
    figures: dict[str, dict[str, list[float]]] = {}
    for entry in parsed.entries:
        into = figures.setdefault(entry.key, {})
        for metric in METRICS.values():
            section = entry.stats if metric.section == "stats" else entry.extra_info
            if metric.key not in section:
                continue
            value = section[metric.key]
            field = f"{entry.where}.{metric.section}.{metric.key}"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise QuantgateError(path, f"must be a number, got {value!r}", field)
            if not math.isfinite(value) or value < 0:
                raise QuantgateError(path, f"must be a finite number >= 0, got {value!r}", field)
            into.setdefault(metric.name, []).append(float(value))
    return BenchmarkFile(
        path,
        {key: {m: tuple(v) for m, v in by_metric.items()} for key, by_metric in figures.items()},
        parsed.commit,
        parsed.when,
    )


def compare(
    old: BenchmarkFile,
    new: BenchmarkFile,
    metrics: Sequence[str] = DEFAULT_METRICS,
    threshold: float = 0.05,
) -> list[Change]:
    """Every (benchmark, metric) of ``old``, judged against ``new``; new-only benchmarks are noted."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise QuantgateError("--metric", f"unknown metric {', '.join(unknown)}; known: {', '.join(METRICS)}")
    if not 0 <= threshold < 1:
        raise QuantgateError("--fail-worse", f"threshold must be in [0, 1), got {threshold!r}")
    changes: list[Change] = []
    for key in sorted(old.figures.keys() | new.figures.keys()):
        before, after = old.figures.get(key), new.figures.get(key)
        if after is None:
            changes.append(Change(key, "-", None, None, None, None, None, "missing", f"not in {new.path}"))
            continue
        if before is None:
            changes.append(Change(key, "-", None, None, None, None, None, "new", f"only in {new.path}"))
            continue
        for name in metrics:
            if name not in before:
                continue
            if name not in after:
                changes.append(
                    Change(key, name, None, None, None, None, None, "missing", f"not in {new.path}")
                )
                continue
            changes.append(_judge(key, METRICS[name], before[name], after[name], threshold))
    return changes


def _judge(key: str, metric: Metric, old: Sequence[float], new: Sequence[float], threshold: float) -> Change:
    a, b = statistics.median(old), statistics.median(new)
    zero_allowed = metric.higher_is_better
    if min(old) <= 0 or (min(new) <= 0 and not zero_allowed):
        return Change(key, metric.name, a, b, None, None, None, "no ratio", "a figure is 0")
    verdict = judge_speedup(old, new, 1.0 - threshold, higher_is_better=metric.higher_is_better)
    return Change(
        key, metric.name, a, b, verdict.speedup, verdict.low, verdict.high, verdict.verdict, verdict.detail
    )


def table(changes: Sequence[Change]) -> str:
    """A Markdown table of the changes, regressions first."""
    order = {"missing": 0, "fail": 1, "inconclusive": 2, "no ratio": 3, "new": 4, "pass": 5}
    lines = [
        "| benchmark | metric | better | old | new | new vs old [interval] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for change in sorted(changes, key=lambda c: (order[c.verdict], c.benchmark, c.metric)):
        metric = METRICS.get(change.metric)
        direction = "-" if metric is None else ("higher" if metric.higher_is_better else "lower")
        shown = f"**{change.verdict.upper()}**" if change.regression else change.verdict
        if change.speedup is None or change.low is None or change.high is None:
            lines.append(
                f"| {change.benchmark} | {change.metric} | {direction} | | | {change.note} | {shown} |"
            )
            continue
        unit = f" ({metric.unit})" if metric else ""
        lines.append(
            f"| {change.benchmark} | {change.metric}{unit} | {direction} | "
            f"{change.old:.6g} | {change.new:.6g} | "
            f"x{change.speedup:.3f} [{change.low:.3f}, {_bound(change.high)}] | {shown} |"
        )
    return "\n".join(lines)


def _bound(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3f}"
