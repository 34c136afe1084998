"""The nightly gate: merge the coverage files of every GPU job and decide the night.

Each ``pytest -m <kind> --qg-shard K/N`` job writes a coverage file (``quantgate-coverage``): every
selected cell with its outcome and reason. The gate merges them by cell id and fails when any cell
failed or errored, when a cell of an expected kind is absent or did not run in any shard (skipped,
collected but never reported), or when a cell appears with two different outcomes. A missing or
unreadable file is an error naming it: a gate never passes on data it did not see. A cell deferred by
its job's budget (``--qg-budget``), and a gating cell the judge left inconclusive (too noisy to decide
tonight, or a fail that fresh data did not confirm: ``quantgate.confirm``), is neither green nor red: the
verdict history (``quantgate.verdicts``) decides, green only while the cell's last verdict is green,
recent and given on the same inputs. So noise does not turn a night red, and a cell that stays undecided
turns red when its last verdict ages past the limit. A cell the matrix does not plan (its goodput limits
cannot be met by construction: ``quantgate.matrix.limit_problem``) is not expected, so never missing; the
coverage files list it as skipped, ``not planned: <reason>``, and the gate's notes count them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantgate.datafile import load_kind
from quantgate.errors import QuantgateError
from quantgate.matrix import NOT_PLANNED
from quantgate.verdicts import GREEN, RED, Outcome, Verdict

COVERAGE_KIND = "quantgate-coverage"
COVERAGE_SCHEMA_VERSION = 1
DEFAULT_MAX_AGE_DAYS = 7.0


@dataclass(frozen=True)
class GateResult:
    passed: bool
    cells: int
    counts: dict[str, int]
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    outcomes: tuple[Outcome, ...] = ()

    def summary(self) -> str:
        head = "PASS" if self.passed else "FAIL"
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        lines = [f"  {p}" for p in self.problems[:50]] + [f"  note: {n}" for n in self.notes[:50]]
        return f"{head}: {self.cells} cells ({counts})" + "".join(f"\n{line}" for line in lines)


def load_coverage(path: Path) -> list[dict[str, Any]]:
    return _load(path)[0]


def _load(path: Path) -> tuple[list[dict[str, Any]], bool]:
    doc = load_kind(path, COVERAGE_KIND, COVERAGE_SCHEMA_VERSION)
    cells = doc.get("cells")
    if not isinstance(cells, list):
        raise QuantgateError(path, "must be a list", "cells")
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_id"), str) or "status" not in cell:
            raise QuantgateError(path, "needs cell_id and status", f"cells[{index}]")
    return cells, doc.get("complete") is not False


def decide(
    files: Sequence[Path],
    expected: Iterable[str],
    known: Iterable[str] | None = None,
    history: Mapping[str, Verdict] | None = None,
    now: datetime | None = None,
    max_age_days: float = DEFAULT_MAX_AGE_DAYS,
) -> GateResult:
    """Merge coverage ``files``; every id in ``expected`` must have run, each of its tests green.

    A cell may have several tests (an accuracy cell's recovery and its output length), told apart by
    their node ids; one test reported by two files with two outcomes is red (a shard overlap). With
    ``known`` (every cell of the matrix), a cell in a coverage file that the matrix does not have is
    red too: a renamed model or a stale runner must not pass unnoticed. A test deferred by its job's
    budget, or left inconclusive by the judge, is green only while ``history`` holds a green verdict for
    it younger than ``max_age_days`` on the same inputs; a file from a job that never finished (killed)
    is red. Cells skipped as not planned (``quantgate.matrix.NOT_PLANNED``) and not in ``expected`` are
    counted in one note.
    """
    if not files:
        raise QuantgateError(None, "no coverage file given (fail closed)", "files")
    now = now or datetime.now(UTC)
    outcome: dict[str, tuple[str, str, str, Path]] = {}
    inputs: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for path in files:
        cells, complete = _load(path)
        if not complete:
            problems.append(f"{path.name}: written by a job that did not finish (killed or crashed)")
        for cell in cells:
            status, reason = str(cell["status"]), str(cell.get("reason") or "")
            if status == "failed" and cell.get("verdict") == "inconclusive":
                status = "inconclusive"
            if status == "deselected":
                continue
            test = str(cell.get("node_id") or cell["cell_id"])
            seen = outcome.get(test)
            if seen is not None and seen[1] != status:
                problems.append(f"{cell['cell_id']}: {seen[1]} in {seen[3]} but {status} in {path}")
            outcome[test] = (cell["cell_id"], status, reason, path)
            given = cell.get("inputs")
            inputs[test] = {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}
    counts: dict[str, int] = {}
    tests_of: dict[str, list[tuple[str, str, str]]] = {}
    notes: list[str] = []
    for test, (cell_id, status, reason, path) in outcome.items():
        counts[status] = counts.get(status, 0) + 1
        tests_of.setdefault(cell_id, []).append((test, status, reason))
        if status in RED:
            problems.append(f"{cell_id}: {status}" + (f" ({reason})" if reason else "") + f" [{path.name}]")
    if known is not None:
        matrix = set(known)
        for cell_id in sorted(tests_of.keys() - matrix):
            path = next(p for c, _, _, p in outcome.values() if c == cell_id)
            problems.append(f"{cell_id}: unknown cell (not in the matrix) [{path.name}]")
    wanted = set(expected)
    for cell_id in sorted(wanted):
        for test, status, reason in tests_of.get(cell_id, [(cell_id, "absent", "in no coverage file")]):
            if status in ("deferred", "inconclusive"):
                stands, line = _stands(
                    cell_id, status, reason, (history or {}).get(test), inputs[test], now, max_age_days
                )
                (notes if stands else problems).append(line)
            elif status not in GREEN and status not in RED:
                problems.append(f"{cell_id}: not covered ({status}{': ' + reason if reason else ''})")
    unplanned = {
        c: r
        for c, st, r, _ in sorted(outcome.values(), key=lambda o: o[0])
        if st == "skipped" and r.startswith(NOT_PLANNED) and c not in wanted
    }
    if unplanned:
        first, reason = next(iter(unplanned.items()))
        notes.append(
            f"{len(unplanned)} cell(s) not planned, so not expected (e.g. {first}: "
            f"{reason.removeprefix(NOT_PLANNED)}); each with its reason in the coverage files"
        )
    ran = tuple(Outcome(test, c, st, r, inputs[test]) for test, (c, st, r, _) in outcome.items())
    return GateResult(not problems, len(tests_of), counts, tuple(problems), tuple(notes), ran)


def _stands(
    cell_id: str,
    status: str,
    reason: str,
    last: Verdict | None,
    inputs: Mapping[str, str],
    now: datetime,
    max_age: float,
) -> tuple[bool, str]:
    """Whether a deferred or inconclusive test's last verdict still stands (green, recent, same inputs),
    and the line that says so or says why not."""
    why = f" ({reason})" if reason else ""
    if last is None:
        return False, f"{cell_id}: {status}{why} and no verdict (limit {max_age:g} days)"
    changed = last.changed(inputs)
    if changed:
        return False, f"{cell_id}: {status}, but changed since its last verdict ({', '.join(changed)})"
    was = f"last {last.status} {last.age_days(now):.1f} days ago"
    if last.green and last.age_days(now) <= max_age:
        return True, f"{cell_id}: {status}; {was}"
    return False, f"{cell_id}: {status}{why} and {was} (limit {max_age:g} days)"
