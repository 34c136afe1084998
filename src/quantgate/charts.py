"""Charts of a lane report: recovery per model and scheme, speedup per scenario, with intervals.

Like the seed report's figures: one bar per (model, scheme), its judged interval as an error bar and the
floor as a line, so a reader sees at once which cells are near their floor. matplotlib is imported
only when a chart is drawn (Agg backend, no display); the input is the records of ``cells.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLOURS = {"pass": "#3a7d44", "fail": "#b23a48", "inconclusive": "#d9a441", "reference": "#7f7f7f"}
MISSING = "#bbbbbb"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _bars(ax: Any, rows: Sequence[Mapping[str, Any]], value: str, floor_label: str) -> None:
    """One bar per row with its interval and floor; a row without a figure (cut, failed, missing) is
    a shaded slot labelled with its verdict, so no cell of the run disappears from the chart."""
    labels = [" ".join(str(r[k]) for k in ("model", "scheme", "scenario") if r.get(k)) for r in rows]
    measured = [_finite(r.get(value)) for r in rows]
    values = [float(r[value]) if ok else 0.0 for r, ok in zip(rows, measured, strict=True)]
    low = [
        max(v - r["low"], 0.0) if ok and _finite(r.get("low")) else 0.0
        for v, r, ok in zip(values, rows, measured, strict=True)
    ]
    high = [
        max(r["high"] - v, 0.0) if ok and _finite(r.get("high")) else 0.0
        for v, r, ok in zip(values, rows, measured, strict=True)
    ]
    colours = [COLOURS.get(str(r.get("verdict")), "#4c72b0") for r in rows]
    positions = range(len(rows))
    ax.bar(positions, values, color=colours, yerr=[low, high], capsize=3)
    for position, row in zip(positions, rows, strict=True):
        if _finite(row.get("floor")):
            ax.hlines(row["floor"], position - 0.4, position + 0.4, colors="black", linestyles="dashed")
    ax.set_xticks(list(positions), labels, fontsize=7, rotation=40, ha="right")
    ax.set_ylabel(floor_label, fontsize=8)
    bottoms = [v - d for v, d, ok in zip(values, low, measured, strict=True) if ok] + [
        float(r["floor"]) for r in rows if _finite(r.get("floor"))
    ]
    bottom = max(0.0, min(bottoms, default=1.0) - 0.05)
    ax.set_ylim(bottom=bottom)
    for position, row, ok in zip(positions, rows, measured, strict=True):
        if not ok:
            ax.axvspan(position - 0.4, position + 0.4, color=MISSING, alpha=0.35, hatch="//")
            text = f"{row.get('verdict') or 'missing'}: no figure"
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


def draw(records: Sequence[Mapping[str, Any]], directory: Path, title: str = "") -> list[Path]:
    """Write ``recovery.png`` and ``speedup.png`` with every judged cell of the run (one without a
    figure is marked, not dropped; BF16 speed rows, the reference, have no speedup to draw), under
    ``title`` (which run, which host); return the files."""
    plt = _pyplot()
    written: list[Path] = []
    accuracy = [r for r in records if r.get("kind") == "accuracy"]
    speed = [r for r in records if r.get("kind") == "speed" and r.get("verdict") != "reference"]
    for name, rows, value, label in (
        ("recovery.png", accuracy, "recovery", "recovery vs BF16 (bar: judged interval; dashed: floor)"),
        ("speedup.png", speed, "speedup", "speedup vs BF16 (bar: judged interval; dashed: floor)"),
    ):
        if not rows:
            continue
        figure, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.8))
        _bars(ax, rows, value, label)
        ax.axhline(1.0, color="grey", linewidth=0.5)
        if title:
            ax.set_title(title, fontsize=8)
        written.append(_save(plt, figure, directory / name, dpi=110))
    return written


def replay_records(cells: Sequence[Any]) -> list[dict[str, Any]]:
    """The cells of a replay (``quantgate.replay.Cell``) as chart rows; unjudged ones without figures."""
    rows = []
    for cell in cells:
        figures = cell.verdict.as_dict() if cell.verdict is not None else {}
        row = {
            "kind": cell.kind,
            "model": cell.model,
            "scheme": cell.scheme,
            "target": cell.target,
            "verdict": cell.outcome,
            "gating": cell.gating,
            "floor": cell.decision.floor if cell.decision else None,
            "low": figures.get("low"),
            "high": figures.get("high"),
            "recovery": figures.get("recovery"),
            "speedup": figures.get("speedup"),
        }
        rows.append(row)
    return rows


def draw_replay(cells: Sequence[Any], directory: Path, stem: str) -> list[Path]:
    """``<stem>-recovery.png``: recovery per model and scheme, one panel per benchmark (like the seed's
    figures), a cell without a figure marked; ``<stem>-speedup.png``: per GPU kind, the spread of
    speedups over models and workloads for each scenario and scheme, with the floors, and how many
    cells had no figure."""
    plt = _pyplot()
    rows = replay_records(cells)
    written: list[Path] = []
    accuracy = [r for r in rows if r["kind"] == "accuracy"]
    benchmarks = sorted({r["target"] for r in accuracy})
    if benchmarks:
        figure, axes = plt.subplots(len(benchmarks), 1, figsize=(11.0, 3.2 * len(benchmarks)), squeeze=False)
        for ax, benchmark in zip(axes[:, 0], benchmarks, strict=True):
            panel = [r for r in accuracy if r["target"] == benchmark]
            _bars(ax, panel, "recovery", "recovery vs BF16")
            ax.axhline(1.0, color="grey", linewidth=0.5)
            ax.set_title(benchmark, fontsize=9)
        written.append(_save(plt, figure, directory / f"{stem}-recovery.png", dpi=100))
    speed = [r for r in rows if r["kind"] == "speed" and _finite(r.get("speedup"))]
    unmeasured = [r for r in rows if r["kind"] == "speed" and not _finite(r.get("speedup"))]
    gpus = sorted({r["target"].split("/")[0] for r in speed})
    if gpus:
        figure, axes = plt.subplots(len(gpus), 1, figsize=(11.0, 3.2 * len(gpus)), squeeze=False)
        for ax, gpu in zip(axes[:, 0], gpus, strict=True):
            groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
            for r in speed:
                kind, scenario, _ = r["target"].split("/")
                if kind == gpu:
                    groups.setdefault((scenario, r["scheme"]), []).append(r)
            keys = sorted(groups)
            ax.boxplot([[r["speedup"] for r in groups[k]] for k in keys], showfliers=True)
            for position, key in enumerate(keys, start=1):
                floors = {r["floor"] for r in groups[key] if _finite(r.get("floor"))}
                for floor in floors:
                    ax.hlines(floor, position - 0.4, position + 0.4, colors="black", linestyles="dashed")
            ax.set_xticks(range(1, len(keys) + 1), [f"{s}\n{q}" for s, q in keys], fontsize=7)
            ax.axhline(1.0, color="grey", linewidth=0.5)
            ax.set_ylabel("speedup vs BF16", fontsize=8)
            missing = sum(1 for r in unmeasured if r["target"].split("/")[0] == gpu)
            without = f"; {missing} cells without a figure, not drawn (see the report)" if missing else ""
            ax.set_title(f"{gpu}: speedup over models and workloads (dashed: floors){without}", fontsize=9)
        written.append(_save(plt, figure, directory / f"{stem}-speedup.png", dpi=100))
    return written
