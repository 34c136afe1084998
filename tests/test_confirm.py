"""A failing verdict turns red only when fresh data fails too (``quantgate.confirm``), in the judge's
words and in the accuracy cell's sequential loop (``quantgate.outcomes.judge_sequentially``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from quantgate.confirm import confirmed
from quantgate.judge import judge_recovery
from quantgate.outcomes import judge_sequentially
from quantgate.runners.evaluate import EvalJob, Evaluation
from quantgate.speedjudge import judge_speedup

ITEMS = [f"q{i}" for i in range(60)]
REFERENCE = {item: (20, 14) for item in ITEMS}


def counts(correct: int, samples: int = 20) -> dict[str, tuple[int, int]]:
    return {item: (samples, correct) for item in ITEMS}


def test_a_pass_or_inconclusive_needs_no_confirmation() -> None:
    passing = judge_recovery(REFERENCE, counts(14), 0.97)
    assert passing.verdict == "pass"
    assert confirmed(passing, None) is passing


def test_a_fail_stands_when_fresh_data_fails_too() -> None:
    first = judge_recovery(REFERENCE, counts(8), 0.97)
    again = judge_recovery(REFERENCE, counts(9), 0.97)
    assert first.verdict == again.verdict == "fail"
    result = confirmed(first, again)
    assert result.verdict == "fail"
    assert result.recovery == first.recovery
    assert "confirmed on fresh data" in result.detail


def test_an_unconfirmed_fail_is_inconclusive_and_shows_both_looks() -> None:
    first = judge_recovery(REFERENCE, counts(8), 0.97)
    again = judge_recovery(REFERENCE, counts(14), 0.97)
    result = confirmed(first, again)
    assert result.verdict == "inconclusive"
    assert result.more_samples == 0
    assert first.detail in result.detail
    assert again.detail in result.detail


def test_no_confirmation_run_leaves_the_fail_unconfirmed() -> None:
    first = judge_speedup([1.0, 1.01, 0.99], [1.5, 1.52, 1.49], 1.0, higher_is_better=False)
    assert first.verdict == "fail"
    result = confirmed(first, None, "the confirming bench failed")
    assert result.verdict == "inconclusive"
    assert "the confirming bench failed" in result.detail


def looks_of(per_look: Sequence[int], tmp_path: Path) -> tuple[list[int], object]:
    """An evaluate callable whose n-th look scores ``per_look[n]`` correct of each item's samples."""
    asked: list[int] = []

    def evaluate(samples: int, number: int) -> Evaluation:
        asked.append(samples)
        job = EvalJob(
            "http://127.0.0.1:1",
            "m",
            tmp_path,
            None,
            "t",
            tmp_path,
            None,
            samples,
            number,
            0.6,
            0.95,
            64,
            tmp_path,
        )
        rate = per_look[number] / 20
        c = {item: (samples, round(rate * samples)) for item in ITEMS}
        return Evaluation(job, c, {}, rate, tmp_path / f"d{number}", tmp_path / f"r{number}", 1.0)

    return asked, evaluate


def test_a_failing_series_draws_one_confirmation_with_fresh_seeds(tmp_path: Path) -> None:
    asked, evaluate = looks_of([8, 14], tmp_path)
    verdict, looks, series = judge_sequentially(evaluate, REFERENCE, 0.97, 20, tmp_path / "ref.json")  # type: ignore[arg-type]
    assert asked == [20, 20]
    assert [look.job.seed for look in looks] == [0, 1]
    assert verdict.verdict == "inconclusive"
    assert "unconfirmed fail" in verdict.detail
    assert series == counts(8)


def test_a_confirmed_fail_is_a_fail(tmp_path: Path) -> None:
    _asked, evaluate = looks_of([8, 8], tmp_path)
    verdict, looks, _ = judge_sequentially(evaluate, REFERENCE, 0.97, 20, tmp_path / "ref.json")  # type: ignore[arg-type]
    assert verdict.verdict == "fail"
    assert len(looks) == 2


def test_a_budget_that_refuses_the_confirmation_leaves_it_unconfirmed(tmp_path: Path) -> None:
    asked, evaluate = looks_of([8, 8], tmp_path)
    verdict, _looks, _ = judge_sequentially(
        evaluate,  # type: ignore[arg-type]
        REFERENCE,
        0.97,
        20,
        tmp_path / "ref.json",
        fits=lambda samples, looks: False,
    )
    assert asked == [20]
    assert verdict.verdict == "inconclusive"
    assert "no time left to confirm it" in verdict.detail
