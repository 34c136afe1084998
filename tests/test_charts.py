"""Charts show every judged cell of a run: one without a figure is marked, not dropped; a title names
the run and host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quantgate import charts
from quantgate.cellresult import CellResult

RESULTS = [
    CellResult(cell="a1", kind="accuracy", model="m", scheme="int8", verdict="pass", recovery=1.0, low=0.98,
               high=1.02, floor=0.97),
    CellResult(cell="a2", kind="accuracy", model="m", scheme="fp8", verdict="cut"),
    CellResult(cell="s0", kind="speed", model="m", scheme="bf16", scenario="single-stream"),
    CellResult(cell="s1", kind="speed", model="m", scheme="int8", scenario="single-stream", verdict="fail",
               speedup=0.8, low=0.7, high=0.9, floor=1.0),
    CellResult(cell="s2", kind="speed", model="m", scheme="fp8", scenario="single-stream", verdict="error"),
]  # fmt: skip


def test_a_cell_without_a_figure_is_marked_and_the_title_names_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[str, Any] = {}
    save = charts._save

    def keep(plt: Any, figure: Any, path: Path, dpi: int) -> Path:
        ax = figure.axes[0]
        drawn[path.name] = {
            "labels": [t.get_text() for t in ax.get_xticklabels()],
            "texts": [t.get_text() for t in ax.texts],
            "title": ax.get_title(),
        }
        return save(plt, figure, path, dpi)

    monkeypatch.setattr(charts, "_save", keep)
    written = charts.draw(RESULTS, tmp_path, "quantgate CPU lane · host x · 2026-12-01")
    assert [p.name for p in written] == ["recovery.png", "speedup.png"]
    assert drawn["recovery.png"]["labels"] == ["m int8", "m fp8"]
    assert drawn["recovery.png"]["texts"] == ["cut: no figure"]
    assert drawn["speedup.png"]["labels"] == ["m int8 single-stream", "m fp8 single-stream"]
    assert drawn["speedup.png"]["texts"] == ["error: no figure"]
    assert drawn["speedup.png"]["title"] == "quantgate CPU lane · host x · 2026-12-01"
