"""A job's time budget: which cells may still start, so that a job ends before its runner's limit.

Why: a job killed at its runner's limit leaves cells half done and nothing to say why. With a budget
the job starts a cell only while the cell's expected seconds fit in what is left. Once one does not
fit, no later cell starts: cells run in the plan's priority order, and a cheap cell jumping ahead of a
deferred one would make what runs depend on timing noise. A cell longer than the whole budget is the
exception: no job could run it, so it is deferred without closing the budget. Cells left out are
*deferred*: not run, neither green nor red, each with the reason. A budget is a duration (``90m``,
``8h``, ``45s``, plain seconds) from the job's start, or an end time (ISO 8601 with a zone).

Pure arithmetic on times the caller passes in; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_budget(text: str, now: float) -> float:
    """The deadline (seconds since the epoch) that ``text`` names, for a job starting at ``now``."""
    match = _DURATION.match(text)
    if match:
        return now + float(match.group(1)) * _UNITS[match.group(2) or "s"]
    try:
        end = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a duration (90m, 8h, 45s, seconds) or an end time (ISO 8601 with a zone): {text!r}"
        ) from None
    if end.tzinfo is None:
        raise ValueError(f"an end time needs a zone (e.g. {text.strip()}+00:00): {text!r}")
    return end.timestamp()


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class JobBudget:
    """The job's start and deadline, and whether a cell has already been deferred (then no later cell
    starts). A cell longer than the whole budget is deferred without closing it: no night could run
    it, and it must not hold up the cells behind it (the gate reds it once its last verdict is old)."""

    start: float
    deadline: float
    closed_at: str | None = None
    deferred: list[str] = field(default_factory=list)

    @property
    def whole_s(self) -> float:
        return self.deadline - self.start

    def admit(self, cell_id: str, expected_s: float, now: float) -> str | None:
        """None when the cell may start; otherwise why it is deferred (and the budget closes)."""
        whole = self.whole_s
        if expected_s > whole:
            self.deferred.append(cell_id)
            return f"deferred: needs ~{expected_s:.0f} s, longer than the whole job budget ({whole:.0f} s)"
        if self.closed_at is not None:
            reason = f"deferred: the job budget closed at {self.closed_at} (no cell starts after it)"
        else:
            left = self.deadline - now
            if expected_s <= left:
                return None
            reason = (
                f"deferred: needs ~{expected_s:.0f} s, {max(left, 0.0):.0f} s of the job budget left "
                f"(until {clock(self.deadline)})"
            )
            self.closed_at = cell_id
        self.deferred.append(cell_id)
        return reason
