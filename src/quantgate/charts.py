"""Charts of a lane report: recovery per model and scheme, speedup per scenario, with intervals.

Like the seed report's figures: one bar per (model, scheme), its judged interval as an error bar and the
floor as a line, so a reader sees at once which cells are near their floor. matplotlib is imported
only when a chart is drawn (Agg backend, no display); the input is the run's cell results
(``quantgate.cellresult``), of a lane run or of a replay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantgate.cellresult import CellResult

COLOURS = {"pass": "#3a7d44", "fail": "#b23a48", "inconclusive": "#d9a441", "reference": "#7f7f7f"}
MISSING = "#bbbbbb"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _bars(ax: Any, rows: Sequence[CellResult], floor_label: str) -> None:
    """One bar per cell with its interval and floor; a cell without a figure (cut, failed, missing) is
    a shaded slot labelled with its verdict, so no cell of the run disappears from the chart."""
    labels = [" ".join(filter(None, (r.model, r.scheme, r.scenario))) for r in rows]
    measured = [r.figure is not None for r in rows]
    values = [r.figure or 0.0 for r in rows]
    low = [
        max(v - r.low, 0.0) if ok and r.low is not None and _finite(r.low) else 0.0
        for v, r, ok in zip(values, rows, measured, strict=True)
    ]
    high = [
        max(r.high - v, 0.0) if ok and r.high is not None and _finite(r.high) else 0.0
        for v, r, ok in zip(values, rows, measured, strict=True)
    ]
    colours = [COLOURS.get(str(r.verdict), "#4c72b0") for r in rows]
    positions = range(len(rows))
    ax.bar(positions, values, color=colours, yerr=[low, high], capsize=3)
    floors = [r.floor if _finite(r.floor) else None for r in rows]
    for position, floor in zip(positions, floors, strict=True):
        if floor is not None:
            ax.hlines(floor, position - 0.4, position + 0.4, colors="black", linestyles="dashed")
    ax.set_xticks(list(positions), labels, fontsize=7, rotation=40, ha="right")
    ax.set_ylabel(floor_label, fontsize=8)
    bottoms = [v - d for v, d, ok in zip(values, low, measured, strict=True) if ok] + [
        f for f in floors if f is not None
    ]
    bottom = max(0.0, min(bottoms, default=1.0) - 0.05)
    ax.set_ylim(bottom=bottom)
    for position, row, ok in zip(positions, rows, measured, strict=True):
        if not ok:
            ax.axvspan(position - 0.4, position + 0.4, color=MISSING, alpha=0.35, hatch="//")
            text = f"{row.verdict or 'missing'}: no figure"
            ax.text(
                position, bottom, text, rotation=90, fontsize=6, ha="center", va="bottom", color="#444444"
            )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, figure: Any, path: Path, dpi: int) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def draw(results: Sequence[CellResult], directory: Path, title: str = "") -> list[Path]:
    """Write ``recovery.png`` and ``speedup.png`` with every judged cell of the run (one without a
    figure is marked, not dropped; BF16 speed rows, the reference, have no speedup to draw), under
    ``title`` (which run, which host); return the files."""
    plt = _pyplot()
    written: list[Path] = []
    accuracy = [r for r in results if r.kind == "accuracy"]
    speed = [r for r in results if r.kind == "speed" and r.verdict is not None]
    for name, rows, label in (
        ("recovery.png", accuracy, "recovery vs BF16 (bar: judged interval; dashed: floor)"),
        ("speedup.png", speed, "speedup vs BF16 (bar: judged interval; dashed: floor)"),
    ):
        if not rows:
            continue
        figure, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.8))
        _bars(ax, rows, label)
        ax.axhline(1.0, color="grey", linewidth=0.5)
        if title:
            ax.set_title(title, fontsize=8)
        written.append(_save(plt, figure, directory / name, dpi=110))
    return written


def draw_replay(results: Sequence[CellResult], directory: Path, stem: str) -> list[Path]:
    """``<stem>-recovery.png``: recovery per model and scheme, one panel per benchmark (like the seed's
    figures), a cell without a figure marked; ``<stem>-speedup.png``: per GPU kind, the spread of
    speedups over models and workloads for each scenario and scheme, with the floors, and how many
    cells had no figure."""
    plt = _pyplot()
    written: list[Path] = []
    accuracy = [r for r in results if r.kind == "accuracy"]
    benchmarks = sorted({r.target for r in accuracy})
    if benchmarks:
        figure, axes = plt.subplots(len(benchmarks), 1, figsize=(11.0, 3.2 * len(benchmarks)), squeeze=False)
        for ax, benchmark in zip(axes[:, 0], benchmarks, strict=True):
            panel = [r for r in accuracy if r.target == benchmark]
            _bars(ax, panel, "recovery vs BF16")
            ax.axhline(1.0, color="grey", linewidth=0.5)
            ax.set_title(benchmark, fontsize=9)
        written.append(_save(plt, figure, directory / f"{stem}-recovery.png", dpi=100))
    speed = [r for r in results if r.kind == "speed" and r.figure is not None]
    unmeasured = [r for r in results if r.kind == "speed" and r.figure is None]
    gpus = sorted({r.gpu or "" for r in speed})
    if gpus:
        figure, axes = plt.subplots(len(gpus), 1, figsize=(11.0, 3.2 * len(gpus)), squeeze=False)
        for ax, gpu in zip(axes[:, 0], gpus, strict=True):
            groups: dict[tuple[str, str], list[CellResult]] = {}
            for r in speed:
                if r.gpu == gpu:
                    groups.setdefault((r.scenario or "", r.scheme), []).append(r)
            keys = sorted(groups)
            ax.boxplot([[r.figure for r in groups[k]] for k in keys], showfliers=True)
            for position, key in enumerate(keys, start=1):
                floors = {r.floor for r in groups[key] if r.floor is not None and _finite(r.floor)}
                for floor in floors:
                    ax.hlines(floor, position - 0.4, position + 0.4, colors="black", linestyles="dashed")
            ax.set_xticks(range(1, len(keys) + 1), [f"{s}\n{q}" for s, q in keys], fontsize=7)
            ax.axhline(1.0, color="grey", linewidth=0.5)
            ax.set_ylabel("speedup vs BF16", fontsize=8)
            missing = sum(1 for r in unmeasured if r.gpu == gpu)
            without = f"; {missing} cells without a figure, not drawn (see the report)" if missing else ""
            ax.set_title(f"{gpu}: speedup over models and workloads (dashed: floors){without}", fontsize=9)
        written.append(_save(plt, figure, directory / f"{stem}-speedup.png", dpi=100))
    return written
