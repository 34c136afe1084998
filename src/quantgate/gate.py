"""The nightly gate: merge the coverage files of every GPU job and decide the night.

Each ``pytest -m <kind> --qg-shard K/N`` job writes a coverage file (``quantgate-coverage``): every
selected cell with its outcome and reason. The gate merges them by cell id and fails when any cell
failed or errored, when a cell of an expected kind is absent or did not run in any shard (skipped,
collected but never reported), or when a cell appears with two different outcomes. A missing or
unreadable file is an error naming it: a gate never passes on data it did not see.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantgate.datafile import load_kind
from quantgate.errors import QuantgateError

COVERAGE_KIND = "quantgate-coverage"
COVERAGE_SCHEMA_VERSION = 1
GREEN = ("passed", "xfailed")
RED = ("failed", "error", "xpassed")


@dataclass(frozen=True)
class GateResult:
    passed: bool
    cells: int
    counts: dict[str, int]
    problems: tuple[str, ...]

    def summary(self) -> str:
        head = "PASS" if self.passed else "FAIL"
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        return f"{head}: {self.cells} cells ({counts})" + "".join(f"\n  {p}" for p in self.problems[:50])


def load_coverage(path: Path) -> list[dict[str, Any]]:
    doc = load_kind(path, COVERAGE_KIND, COVERAGE_SCHEMA_VERSION)
    cells = doc.get("cells")
    if not isinstance(cells, list):
        raise QuantgateError(path, "must be a list", "cells")
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_id"), str) or "status" not in cell:
            raise QuantgateError(path, "needs cell_id and status", f"cells[{index}]")
    return cells


def decide(files: Sequence[Path], expected: Iterable[str], known: Iterable[str] | None = None) -> GateResult:
    """Merge coverage ``files``; every id in ``expected`` must have run, each of its tests green.

    A cell may have several tests (an accuracy cell's recovery and its output length), told apart by
    their node ids; one test reported by two files with two outcomes is red (a shard overlap). With
    ``known`` (every cell of the matrix), a cell in a coverage file that the matrix does not have is
    red too: a renamed model or a stale runner must not pass unnoticed.
    """
    if not files:
        raise QuantgateError(None, "no coverage file given (fail closed)", "files")
    outcome: dict[str, tuple[str, str, str, Path]] = {}
    problems: list[str] = []
    for path in files:
        for cell in load_coverage(path):
            status, reason = str(cell["status"]), str(cell.get("reason") or "")
            if status == "deselected":
                continue
            test = str(cell.get("node_id") or cell["cell_id"])
            seen = outcome.get(test)
            if seen is not None and seen[1] != status:
                problems.append(f"{cell['cell_id']}: {seen[1]} in {seen[3]} but {status} in {path}")
            outcome[test] = (cell["cell_id"], status, reason, path)
    counts: dict[str, int] = {}
    tests_of: dict[str, list[tuple[str, str]]] = {}
    for cell_id, status, reason, path in outcome.values():
        counts[status] = counts.get(status, 0) + 1
        tests_of.setdefault(cell_id, []).append((status, reason))
        if status in RED:
            problems.append(f"{cell_id}: {status}" + (f" ({reason})" if reason else "") + f" [{path.name}]")
    if known is not None:
        matrix = set(known)
        for cell_id in sorted(tests_of.keys() - matrix):
            path = next(p for c, _, _, p in outcome.values() if c == cell_id)
            problems.append(f"{cell_id}: unknown cell (not in the matrix) [{path.name}]")
    for cell_id in sorted(set(expected)):
        for status, reason in tests_of.get(cell_id, [("absent", "in no coverage file")]):
            if status not in GREEN and status not in RED:
                problems.append(f"{cell_id}: not covered ({status}{': ' + reason if reason else ''})")
    return GateResult(not problems, len(tests_of), counts, tuple(problems))
