"""The one reporter: every cell result (``quantgate.cellresult``) of a run, as Markdown and JSON.

A matrix run (any device kind) writes ``report.md`` (tables of cells and verdicts, tool timings,
coverage), ``cells.json`` (the same results, machine-readable) and, where speed cells ran,
``benchmark.json`` (pytest-benchmark format) into one directory (``write_report``); a replay of stored
results renders the same results as pivots per model and scheme (``replay_markdown``). Pure
formatting; nothing here runs a tool.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantgate.cellresult import CellResult
from quantgate.datafile import atomic_write_text
from quantgate.errors import QuantgateError

REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class WrittenReport:
    markdown: Path
    cells: Path
    benchmark: Path | None
    summary_lines: tuple[str, ...]


FAILURE_TAIL_LINES = 15


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _floor(result: CellResult) -> str:
    mode = "" if result.gating else ", informational"
    return f"{_num(result.floor, 2)} ({result.rule}{mode})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cut(result: CellResult) -> str:
    """Answers cut at the generation limit, of all answers drawn (``–`` where the tool did not say)."""
    cut, answers = result.cut_answers, result.answers
    return "–" if cut is None or not answers else f"{cut}/{answers}"


def _interval(result: CellResult, figure: float | None) -> str:
    return f"{_num(figure)} [{_num(result.low)}, {_num(result.high)}]"


def summary_line(result: CellResult) -> str:
    """One terminal line per accuracy or speed cell."""
    r = result
    head = f"{r.model} {r.scheme} {r.target}"
    if r.kind == "accuracy":
        return (
            f"{head}: {r.metric or 'pass@1'} {_num(r.score)} vs {_num(r.reference_score)}, recovery "
            f"{_interval(r, r.recovery)}, length x{_num(r.length_ratio)}, {r.verdict}"
        )
    return f"{head}: speedup {_interval(r, r.speedup)}, {r.verdict or 'reference'}"


def accuracy_rows(results: Sequence[CellResult]) -> list[list[str]]:
    return [
        [
            r.model,
            r.scheme,
            r.benchmark or "",
            _num(r.score) + (f" ({r.metric})" if r.metric else ""),
            _num(r.reference_score),
            _interval(r, r.recovery),
            _floor(r),
            "→".join(str(n) for n in r.looks) + f" ({r.samples}/item)",
            _num(r.length_ratio),
            _num(r.tokens_per_solved, 1),
            _cut(r),
            f"**{r.verdict}**",
        ]
        for r in results
        if r.kind == "accuracy"
    ]


def speed_rows(results: Sequence[CellResult], per_gpu: bool = False) -> list[list[str]]:
    """One row per speed cell; with ``per_gpu``, the GPU counts and the speedup per GPU too."""
    rows = []
    for r in results:
        if r.kind != "speed":
            continue
        rows.append(
            [
                r.model,
                r.scheme,
                r.scenario or "",
                f"{r.metric} ({r.unit})",
                _num(r.bf16_geomean if r.bf16_geomean is not None else r.bf16_median),
                _num(r.geomean if r.geomean is not None else r.median),
                _interval(r, r.speedup),
                "–" if r.floor is None else _floor(r),
                f"**{r.verdict or 'reference'}**",
            ]
        )
        if per_gpu:
            rows[-1][7:7] = [f"{r.bf16_gpus} → {r.gpus}", _num(r.per_gpu_speedup)]
    return rows


def coverage(outcomes: Mapping[str, tuple[str, str]]) -> tuple[Counter[str], list[list[str]]]:
    counts: Counter[str] = Counter(outcome for outcome, _ in outcomes.values())
    rows = [
        [node, outcome, reason.replace("|", "/")[:160]]
        for node, (outcome, reason) in outcomes.items()
        if outcome != "passed"
    ]
    return counts, rows


def failure_sections(failures: Mapping[str, Mapping[str, str]], lines: int = FAILURE_TAIL_LINES) -> list[str]:
    """Per failed test: its reason, and the last lines of the log of the tool that failed."""
    out: list[str] = []
    for node, failure in failures.items():
        out += [f"### {node}", "", str(failure.get("reason", "")), ""]
        tail = str(failure.get("tail", "")).splitlines()[-lines:]
        if tail:
            out += [f"last {len(tail)} lines of `{failure.get('log', '')}`:", "", "```", *tail, "```", ""]
    return out


def _judged(results: Iterable[CellResult]) -> dict[tuple[str, str], CellResult]:
    return {(r.kind, r.cell): r for r in results if r.kind in ("accuracy", "speed")}


def changes_since(previous_file: Path, results: Sequence[CellResult]) -> list[str]:
    """Lines naming each cell whose verdict changed, or that is new or gone, against the previous report."""
    try:
        previous = json.loads(previous_file.read_text(encoding="utf-8"))
        old = _judged(read_results(previous, str(previous_file)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ["no earlier report here to compare with"]
    new = _judged(results)
    out = []
    for key in sorted(new.keys() | old.keys()):
        kind, cell = key
        before, now = old.get(key), new.get(key)
        if before is None or now is None:
            out.append(f"- {kind} {cell}: {'new' if before is None else 'not in this run'}")
            continue
        was, is_ = before.verdict or "reference", now.verdict or "reference"
        if was != is_:
            a, b = before.figure, now.figure
            figures = f" ({_num(a)} → {_num(b)})" if a is not None and b is not None else ""
            out.append(f"- {kind} {cell}: {was} → {is_}{figures}")
    return out or [
        f"no verdict changed ({len(new)} cells; earlier report of {previous.get('generated', '?')})"
    ]


def read_results(document: Mapping[str, Any], source: str) -> list[CellResult]:
    """The results of a ``cells.json`` document; a bad record is one error naming its index and field."""
    records = document["records"]
    if not isinstance(records, list):
        raise QuantgateError(source, "must be a list", "records")
    return [CellResult.from_record(r, source, f"records[{i}]") for i, r in enumerate(records)]


ACCURACY_HEADER = (
    "model",
    "scheme",
    "benchmark",
    "pass@1",
    "reference",
    "recovery [low, high]",
    "floor (rule)",
    "samples",
    "output length vs ref",
    "tokens per solved",
    "cut at the length limit",
    "verdict",
)
SPEED_HEADER = (
    "model",
    "scheme",
    "scenario",
    "metric",
    "BF16 (geometric mean)",
    "quantized (geometric mean)",
    "speedup [low, high]",
    "floor (rule)",
    "verdict",
)
PER_GPU_COLUMNS = ("GPUs BF16 → quantized", "speedup per GPU")


def _cells_sections(results: Sequence[CellResult]) -> list[str]:
    """The accuracy and speed tables."""
    acc = accuracy_rows(results)
    per_gpu = any(r.per_gpu_speedup is not None for r in results if r.kind == "speed")
    speed = speed_rows(results, per_gpu)
    speed_header = list(SPEED_HEADER)
    if per_gpu:
        speed_header[7:7] = PER_GPU_COLUMNS
    lines = ["## Accuracy (recovery vs the stored BF16 reference, paired per item)", ""]
    lines += _table(ACCURACY_HEADER, acc) if acc else ["no accuracy cell ran"]
    lines += ["", "## Speed (BF16 / quantized on the same machine, this session)", ""]
    lines += _table(speed_header, speed) if speed else ["no speed cell ran"]
    return lines


def _tools_sections(results: Sequence[CellResult], server_starts: Mapping[str, Sequence[float]]) -> list[str]:
    """Quantization and server start timings, and what the cell budgets cut."""
    rows = [
        [
            r.cell,
            "reused" if r.reused else _num(r.seconds, 1),
            str(len(server_starts.get(r.cell, ()))),
            ", ".join(_num(s, 1) for s in server_starts.get(r.cell, ())),
        ]
        for r in results
        if r.kind == "quantize"
    ]
    lines = ["", "## Tool timings", ""]
    lines += _table(["cell", "quantize (s)", "server starts", "server start (s)"], rows)
    cut = [[r.cell, r.kind, "; ".join(r.cuts)] for r in results if r.cuts]
    if cut:
        lines += ["", "## Cut by the cell budget (sized from the server's probed rate)", ""]
        lines += _table(["cell", "step", "what was cut and why"], cut)
    return lines


def _coverage_sections(
    counts: Counter[str], not_passed: list[list[str]], failures: Mapping[str, Mapping[str, str]] | None
) -> list[str]:
    lines = ["", "## Coverage", ""]
    lines += [", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing ran", ""]
    if not_passed:
        lines += _table(["test", "outcome", "why"], not_passed)
    if failures:
        lines += ["", "## Failures: reason and the failing tool's log", ""]
        lines += failure_sections(failures)
    return lines


def _draw_charts(results: Sequence[CellResult], directory: Path, title: str) -> list[Path]:
    """The run's charts, where matplotlib is installed (it is optional for the core)."""
    try:
        from quantgate.charts import draw
    except ImportError:
        return []
    return draw(results, directory, title)


def write_report(
    directory: Path,
    results: Sequence[CellResult],
    *,
    outcomes: Mapping[str, tuple[str, str]],
    benchmark_doc: Mapping[str, Any] | None = None,
    server_starts: Mapping[str, Sequence[float]] | None = None,
    wall_s: float,
    context: Mapping[str, str],
    title: str = "quantgate CPU lane",
    failures: Mapping[str, Mapping[str, str]] | None = None,
    changes: Sequence[str] | None = None,
    generated: str | None = None,
) -> WrittenReport:
    """Write report.md, cells.json and benchmark.json (when given) into ``directory``.

    ``changes`` default: the verdicts that changed against the cells.json this call replaces.
    """
    counts, not_passed = coverage(outcomes)
    server_starts = server_starts or {}
    lines = [f"# {title}", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    lines += [f"- wall time: {wall_s:.0f} s", ""]
    lines += _cells_sections(results)
    lines += _tools_sections(results, server_starts)
    lines += _coverage_sections(counts, not_passed, failures)
    lines += ["", "## Changes since the last run in this directory", ""]
    lines += list(changes) if changes is not None else changes_since(directory / "cells.json", results)
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / "report.md"
    atomic_write_text(markdown, "\n".join(lines) + "\n")
    cells = directory / "cells.json"
    stamp = generated or datetime.now(UTC).isoformat(timespec="seconds")
    document = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "quantgate-lane-report",
        "title": title,
        "context": dict(context),
        "wall_s": round(wall_s, 1),
        "generated": stamp,
        "records": [r.to_record() for r in results],
        "outcomes": {node: {"outcome": o, "reason": r} for node, (o, r) in outcomes.items()},
        "failures": dict(failures or {}),
        "server_start_s": dict(server_starts),
    }
    atomic_write_text(cells, json.dumps(document, indent=1, default=str) + "\n")
    benchmark = None
    if benchmark_doc and benchmark_doc.get("benchmarks"):
        benchmark = directory / "benchmark.json"
        atomic_write_text(benchmark, json.dumps(benchmark_doc, indent=1) + "\n")
    host = context.get("gpus") or context.get("machine") or ""
    charts = _draw_charts(results, directory, " · ".join(filter(None, (title, host, stamp))))
    if charts:
        with markdown.open("a", encoding="utf-8") as handle:
            handle.write("\n## Charts\n\n" + "".join(f"![{c.stem}]({c.name})\n" for c in charts))
    shown = [r for r in results if r.kind == "accuracy"] + [r for r in results if r.kind == "speed"]
    summary = [summary_line(r) for r in shown]
    summary.append("coverage: " + (", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "nothing ran"))
    return WrittenReport(markdown, cells, benchmark, tuple(summary))


VERDICTS = ("pass", "fail", "inconclusive", "unknown")
_MARK = {"pass": "pass", "fail": "FAIL", "inconclusive": "?", "unknown": "-"}


def _mode(result: CellResult) -> str:
    return "gate" if result.gating else "informational"


def verdict_counts(results: Iterable[CellResult]) -> dict[str, dict[str, int]]:
    """Verdict counts, split by kind and by whether the cell gates (``accuracy/gate`` ...)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        bucket = out.setdefault(f"{r.kind}/{_mode(r)}", dict.fromkeys(VERDICTS, 0))
        bucket[r.verdict or "unknown"] = bucket.get(r.verdict or "unknown", 0) + 1
    return out


def every_cell_table(results: Sequence[CellResult]) -> str:
    """A Markdown table of every cell, then the counts."""
    rows = [
        [
            r.cell,
            r.kind,
            "-" if r.rule is None else _mode(r),
            "-" if r.rule is None else f"{r.rule} ({r.floor:g})",
            f"**{r.verdict}**",
            r.detail.replace("|", "/"),
        ]
        for r in results
    ]
    lines = [*_table(["cell", "kind", "mode", "rule (floor)", "outcome", "detail"], rows), ""]
    counts = [[key, *(str(b[v]) for v in VERDICTS)] for key, b in sorted(verdict_counts(results).items())]
    lines += _table(["kind / mode", *VERDICTS], counts)
    return "\n".join(lines)


def accuracy_pivot(results: Sequence[CellResult]) -> str:
    """Model x scheme rows, benchmark columns; informational cells are shown in parentheses."""
    accuracy = [r for r in results if r.kind == "accuracy"]
    targets = list(dict.fromkeys(r.target for r in accuracy))
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in accuracy:
        mark = _MARK[r.verdict or "unknown"]
        if r.recovery is not None:
            mark += f" {r.recovery:.3f}"
        if not r.gating:
            mark = f"({mark})"
        rows.setdefault((r.model, r.scheme), {})[r.target] = mark
    return "\n".join(
        _table(
            ["model", "scheme", *targets],
            [
                [model, scheme, *(marks.get(t, "") for t in targets)]
                for (model, scheme), marks in rows.items()
            ],
        )
    )


def speed_pivot(results: Sequence[CellResult]) -> str:
    """Per GPU kind, scheme and scenario: how many workloads pass, fail, stay open."""
    groups: dict[tuple[str, str, str, str], dict[str, int]] = {}
    for r in results:
        if r.kind == "speed":
            key = (r.gpu or "", r.scheme, r.scenario or "", "gate" if r.gating else "info")
            bucket = groups.setdefault(key, dict.fromkeys(VERDICTS, 0))
            bucket[r.verdict or "unknown"] += 1
    rows = [[*key, *(str(bucket[v]) for v in VERDICTS)] for key, bucket in sorted(groups.items())]
    return "\n".join(_table(["gpu", "scheme", "scenario", "mode", *VERDICTS], rows))


def replay_markdown(results: Sequence[CellResult], title: str) -> str:
    """A replay's report: recovery per model and scheme, speed verdicts per scenario, every cell."""
    parts = [f"# {title}", ""]
    if any(r.kind == "accuracy" for r in results):
        parts += [
            "## Recovery (pass / FAIL / ? inconclusive / - unknown; (informational))",
            "",
            accuracy_pivot(results),
            "",
        ]
    if any(r.kind == "speed" for r in results):
        parts += ["## Speedup vs BF16, workloads per verdict", "", speed_pivot(results), ""]
    parts += ["## Every cell", "", every_cell_table(results), ""]
    return "\n".join(parts)
