"""The job budget's rule: a cell starts while its expected seconds fit; after one does not, none does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quantgate.jobbudget import JobBudget, parse_budget

T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400),
        ("8h", 28800),
        ("45s", 45),
        ("600", 600),
        ("1.5h", 5400),
        ("2026-12-01T03:00:00+00:00", 7200),
    ],
)
def test_a_budget_is_a_duration_or_an_end_time(text: str, seconds: float) -> None:
    assert parse_budget(text, T0) == pytest.approx(T0 + seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [("soon", "not a duration"), ("2026-12-01T03:00:00", "needs a zone"), ("-5m", "not a duration")],
)
def test_a_bad_budget_says_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_budget(text, T0)


def test_no_cell_starts_after_the_first_that_does_not_fit() -> None:
    budget = JobBudget(T0, T0 + 100)
    assert budget.admit("a", 60, T0) is None
    assert budget.admit("b", 60, T0 + 50) == (
        "deferred: needs ~60 s, 50 s of the job budget left (until 2026-12-01 01:01:40 UTC)"
    )
    assert budget.admit("c", 1, T0 + 51) == ("deferred: the job budget closed at b (no cell starts after it)")
    assert budget.deferred == ["b", "c"]
    assert JobBudget(T0 - 10, T0).admit("late", 0, T0 + 5) == (
        "deferred: needs ~0 s, 0 s of the job budget left (until 2026-12-01 01:00:00 UTC)"
    )


def test_a_cell_longer_than_the_whole_budget_is_deferred_without_closing_it() -> None:
    budget = JobBudget(T0, T0 + 100)
    assert budget.admit("huge", 500, T0) == (
        "deferred: needs ~500 s, longer than the whole job budget (100 s)"
    )
    assert budget.admit("small", 60, T0 + 1) is None
    assert budget.closed_at is None
    assert budget.deferred == ["huge"]
