"""The deterministic judge's contract: one score per item, paired, one look that passes or fails."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgate.errors import QuantgateError
from quantgate.judge import DEFAULT_CONFIDENCE, judge_recovery_items


def binary(items: int, score: float, rng: random.Random) -> dict[str, float]:
    """0/1 scores (log-likelihood accuracy, greedy exact match) with ``score`` of them solved."""
    return {f"q{i}": float(rng.random() < score) for i in range(items)}


def flipped(scores: dict[str, float], flips: float, rng: random.Random) -> dict[str, float]:
    """A rerun of the same model: ``flips`` of the items change, as many gained as lost on average."""
    mean = statistics.fmean(scores.values())
    lose, gain = flips / 2 / mean, flips / 2 / (1 - mean)
    return {k: (1.0 - v if rng.random() < (lose if v else gain) else v) for k, v in scores.items()}


def dropped(scores: dict[str, float], drop: float, rng: random.Random) -> dict[str, float]:
    """A model truly ``drop`` worse: that share of its solved items lost at random."""
    return {k: (0.0 if v and rng.random() < drop else v) for k, v in scores.items()}


class TestVerdicts:
    def test_identical_scores_pass_at_floor_one(self) -> None:
        ref = binary(1172, 0.6, random.Random(1))
        verdict = judge_recovery_items(ref, dict(ref), 1.0)
        assert verdict.verdict == "pass", verdict.detail
        assert verdict.recovery == 1.0
        assert verdict.low <= 1.0 <= verdict.high
        assert (verdict.more_samples, verdict.candidate_samples, verdict.reference_samples) == (0, 1, 1)
        assert verdict.items == 1172

    def test_a_candidate_truly_ten_percent_worse_fails(self) -> None:
        rng = random.Random(2)
        ref = binary(1000, 0.6, rng)
        cand = dropped(ref, 0.10, rng)
        for floor in (0.99, 0.97):
            verdict = judge_recovery_items(ref, cand, floor)
            assert verdict.verdict == "fail", verdict.detail
            assert verdict.high < floor
            assert verdict.recovery == pytest.approx(0.9, abs=0.03)

    def test_a_small_drop_inside_the_margin_passes_and_an_improvement_never_fails(self) -> None:
        rng = random.Random(3)
        ref = binary(1172, 0.6, rng)
        better = {k: 1.0 for k in ref}
        assert judge_recovery_items(ref, better, 1.2).verdict == "pass"
        cand = flipped(ref, 0.02, rng)
        verdict = judge_recovery_items(ref, cand, 0.97)
        assert verdict.verdict == "pass", verdict.detail
        assert verdict.low < 1.0 < verdict.high

    def test_the_interval_is_fiellers_on_the_paired_item_variance(self) -> None:
        """Bounds where (m_c - f m_r)^2 = z^2 s^2(c - f r) / N, s^2 the sample variance over items."""
        rng = random.Random(4)
        ref = binary(200, 0.55, rng)
        cand = dropped(flipped(ref, 0.05, rng), 0.05, rng)
        verdict = judge_recovery_items(ref, cand, 0.97)
        z = statistics.NormalDist().inv_cdf(DEFAULT_CONFIDENCE)
        r = list(ref.values())
        c = [cand[k] for k in ref]

        def excess(f: float) -> float:
            d = [y - f * x for x, y in zip(r, c, strict=True)]
            return statistics.fmean(d) ** 2 - z * z * statistics.variance(d) / len(d)

        for bound in (verdict.low, verdict.high):
            assert excess(bound) == pytest.approx(0.0, abs=1e-12)
            assert excess(bound - 1e-4) * excess(bound + 1e-4) < 0, "the bound is a sign change"
        assert excess(verdict.recovery) < 0
        assert verdict.high - verdict.low <= verdict.margin

    def test_pairing_narrows_the_interval(self) -> None:
        """Items compared to themselves: shuffling which score is which item widens the interval."""
        rng = random.Random(5)
        ref = binary(1172, 0.6, rng)
        cand = flipped(ref, 0.02, rng)
        values = list(cand.values())
        rng.shuffle(values)
        unpaired = judge_recovery_items(ref, dict(zip(cand, values, strict=True)), 0.97)
        paired = judge_recovery_items(ref, cand, 0.97)
        assert paired.high - paired.low < (unpaired.high - unpaired.low) / 3

    def test_fractional_mc2_scores(self) -> None:
        rng = random.Random(6)
        ref = {f"q{i}": rng.betavariate(2, 2) for i in range(817)}
        close = {k: min(1.0, max(0.0, v + rng.gauss(0.0, 0.03))) for k, v in ref.items()}
        worse = {k: v * 0.9 for k, v in close.items()}
        assert judge_recovery_items(ref, close, 0.97).verdict == "pass"
        verdict = judge_recovery_items(ref, worse, 0.97)
        assert verdict.verdict == "fail", verdict.detail
        assert verdict.recovery == pytest.approx(0.9, abs=0.01)

    def test_bools_and_ints_are_scores(self) -> None:
        as_bools = judge_recovery_items({"a": True, "b": False, "c": 1}, {"a": 1, "b": 0, "c": True}, 0.97)
        as_floats = judge_recovery_items({"a": 1.0, "b": 0.0, "c": 1.0}, {"a": 1.0, "b": 0.0, "c": 1.0}, 0.97)
        assert as_bools == as_floats

    def test_zero_variance_decides_by_recovery_against_floor(self) -> None:
        ref = {f"q{i}": 1.0 for i in range(50)}
        cand = {f"q{i}": 0.98 for i in range(50)}
        at = judge_recovery_items(ref, cand, 0.98)
        above = judge_recovery_items(ref, cand, 0.99)
        assert (at.verdict, above.verdict) == ("pass", "fail")
        assert at.low == at.high == pytest.approx(0.98)
        assert at.margin == 0.0

    def test_detail_is_one_line_stating_the_assumption(self) -> None:
        ref = binary(300, 0.6, random.Random(7))
        verdict = judge_recovery_items(ref, ref, 0.97)
        assert "\n" not in verdict.detail
        assert verdict.detail.startswith("pass: recovery 1.000 [")
        assert "vs floor 0.970 (pass at >= " in verdict.detail
        assert "300 items paired" in verdict.detail
        assert verdict.assumption is not None
        assert "deterministic" in verdict.assumption
        assert verdict.assumption in verdict.detail
        assert verdict.as_dict()["more_samples"] == 0


class TestDegenerate:
    def test_one_item_is_inconclusive(self) -> None:
        verdict = judge_recovery_items({"q0": 1.0}, {"q0": 0.0}, 0.97)
        assert verdict.verdict == "inconclusive"
        assert "at least 2" in verdict.detail
        assert verdict.more_samples == 0
        assert verdict.as_dict()["low"] is None

    def test_a_reference_scoring_zero_is_inconclusive(self) -> None:
        verdict = judge_recovery_items({"a": 0, "b": 0}, {"a": 1, "b": 0}, 0.97)
        assert verdict.verdict == "inconclusive"
        assert "undefined" in verdict.detail
        assert math.isnan(verdict.recovery)
        assert verdict.as_dict()["recovery"] is None

    def test_a_reference_mean_not_clear_of_zero_is_inconclusive(self) -> None:
        verdict = judge_recovery_items({"a": 1, "b": 0, "c": 0}, {"a": 0, "b": 0, "c": 1}, 0.97)
        assert verdict.verdict == "inconclusive"
        assert "not clear of zero" in verdict.detail
        assert (verdict.low, verdict.high) == (-math.inf, math.inf)


class TestBadInput:
    def test_mismatched_items_are_named(self) -> None:
        with pytest.raises(QuantgateError, match=r"1 only in reference.*q1.*1 only in candidate.*q2") as err:
            judge_recovery_items({"q0": 1, "q1": 0}, {"q0": 1, "q2": 0}, 0.97)
        assert err.value.where == "items"

    @pytest.mark.parametrize("score", [1.5, -0.1, float("nan"), float("inf"), "0.5", None, (1, 1)])
    def test_scores_are_checked_and_the_item_named(self, score: object) -> None:
        with pytest.raises(QuantgateError, match=r"finite number in \[0, 1\]") as err:
            judge_recovery_items({"q0": 1, "q1": 0}, {"q0": 1, "q1": score}, 0.97)  # type: ignore[dict-item]
        assert err.value.where == "candidate['q1']"

    def test_empty_is_an_error(self) -> None:
        with pytest.raises(QuantgateError, match="at least one item"):
            judge_recovery_items({}, {}, 0.97)

    @pytest.mark.parametrize("floor", [0.0, float("nan"), 3.0])
    def test_floor_is_checked(self, floor: float) -> None:
        with pytest.raises(QuantgateError, match="floor"):
            judge_recovery_items({"a": 1, "b": 0}, {"a": 1, "b": 0}, floor)


def test_false_fail_rate_with_nothing_changed_is_one_minus_confidence_at_most() -> None:
    """True recovery 1.00 on the floor itself (the hardest case): 1172 items at 0.6, 2 % symmetric flips.

    A fail there is a false fail; it happens at the one-sided level, 1 - confidence (0.12), and not far
    less either (an interval too wide, e.g. unpaired, would make it near 0 and miss real losses).
    """
    rng = random.Random(8)
    runs = 800
    fails = 0
    for _ in range(runs):
        ref = binary(1172, 0.6, rng)
        fails += judge_recovery_items(ref, flipped(ref, 0.02, rng), 1.0).verdict == "fail"
    rate = fails / runs
    tolerance = 3 * math.sqrt(0.12 * 0.88 / runs)
    assert (1 - DEFAULT_CONFIDENCE) / 2 <= rate <= 1 - DEFAULT_CONFIDENCE + tolerance


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.0, max_value=1.0)),
        min_size=2,
        max_size=40,
    ),
    # Accuracy floors are recoveries, at most 1: above 1 an exactly reproduced candidate fails while a
    # noisier, worse one passes on its margin (the pipeline bounds the margin: ``max_margin``).
    floor=st.floats(min_value=0.5, max_value=1.0),
)
def test_properties(data: list[tuple[float, float]], floor: float) -> None:
    ref = {f"i{k}": r for k, (r, _) in enumerate(data)}
    cand = {f"i{k}": c for k, (_, c) in enumerate(data)}
    verdict = judge_recovery_items(ref, cand, floor)
    if math.isinf(verdict.high - verdict.low):
        assert verdict.verdict == "inconclusive"
        return
    assert verdict.verdict in {"pass", "fail"}
    tol = 1e-9 * max(1.0, abs(verdict.recovery))
    assert verdict.low - tol <= verdict.recovery <= verdict.high + tol
    assert verdict.high - verdict.low <= verdict.margin + tol
    if verdict.verdict == "fail":
        assert verdict.high < floor
    else:
        assert verdict.low >= floor - verdict.margin - tol
    better = {k: max(v, ref[k]) for k, v in cand.items()}
    assert judge_recovery_items(ref, better, floor).verdict != "fail" or verdict.verdict == "fail"


def test_a_pass_that_needs_a_wider_zone_than_the_drop_to_catch_is_inconclusive() -> None:
    """The cpu kind's INT4 GSM8K look: 200 items at 0.35, the candidate 10 % lower, floor 0.94."""
    reference = {str(i): float(i < 70) for i in range(200)}
    candidate = {str(i): float(i < 53 or 70 <= i < 80) for i in range(200)}  # 17 lost, 10 gained
    loose = judge_recovery_items(reference, candidate, 0.94)
    assert loose.verdict == "pass"
    assert loose.margin > 0.10
    strict = judge_recovery_items(reference, candidate, 0.94, max_margin=0.10)
    assert strict.verdict == "inconclusive"
    assert "too few items" in strict.detail
    assert (strict.low, strict.high) == (loose.low, loose.high)
    tight = judge_recovery_items(reference, reference, 0.94, max_margin=0.10)
    assert tight.verdict == "pass"
    many = {str(i): float(i % 20 < 7) for i in range(20_000)}
    lower = {str(i): float(i % 20 < 7 and i % 200 != 0) for i in range(20_000)}
    assert judge_recovery_items(many, lower, 0.94, max_margin=0.10).verdict == "pass"


def test_a_fail_stands_whatever_the_zone() -> None:
    reference = {str(i): float(i < 70) for i in range(200)}
    candidate = {str(i): float(i < 35) for i in range(200)}
    assert judge_recovery_items(reference, candidate, 0.94, max_margin=0.01).verdict == "fail"
