"""The judge's contract: verdict names, one-sidedness, pairing, top-ups, aggregate assumptions, bad input."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qg_testdata import AIME_RATES
from qg_testdata import counts as items

from quantgate.errors import QuantgateError
from quantgate.judge import (
    DEFAULT_CAP,
    Aggregate,
    judge_recovery,
    judge_recovery_aggregate,
    minimum_detectable_drop,
)
from quantgate.speedjudge import judge_speedup


class TestVerdicts:
    def test_identical_results_pass(self) -> None:
        ref = items(AIME_RATES, 64)
        verdict = judge_recovery(ref, ref, 0.97)
        assert verdict.verdict == "pass"
        assert verdict.recovery == pytest.approx(1.0)
        assert verdict.low < 1.0 < verdict.high
        assert verdict.more_samples == 0

    def test_large_drop_fails(self) -> None:
        ref = items(AIME_RATES, 64)
        cand = items([r * 0.6 for r in AIME_RATES], 20)
        verdict = judge_recovery(ref, cand, 0.97)
        assert verdict.verdict == "fail"
        assert verdict.high < 0.97
        assert verdict.more_samples == 0

    def test_improvement_never_fails(self) -> None:
        ref = items([r * 0.5 for r in AIME_RATES], 64)
        cand = items(AIME_RATES, 20)
        verdict = judge_recovery(ref, cand, 0.97)
        assert verdict.verdict == "pass"
        assert verdict.recovery > 1.5

    def test_borderline_asks_for_more_samples_up_to_cap(self) -> None:
        ref = items(AIME_RATES, 64)
        cand = items([r * 0.93 for r in AIME_RATES], 20)
        verdict = judge_recovery(ref, cand, 0.97)
        assert verdict.verdict == "inconclusive"
        assert 0 < verdict.more_samples <= DEFAULT_CAP - 20
        assert "more samples/item" in verdict.detail

    def test_inconclusive_at_cap_asks_for_nothing(self) -> None:
        ref = items(AIME_RATES, 64)
        cand = items([r * 0.94 for r in AIME_RATES], 20)
        verdict = judge_recovery(ref, cand, 0.97, cap=20)
        assert verdict.more_samples == 0

    def test_detail_is_one_line_naming_verdict_and_floor(self) -> None:
        verdict = judge_recovery(items(AIME_RATES, 64), items(AIME_RATES, 20), 0.97)
        assert "\n" not in verdict.detail
        assert verdict.detail.startswith(verdict.verdict)
        assert "floor 0.970" in verdict.detail

    def test_verdict_is_frozen(self) -> None:
        verdict = judge_recovery(items(AIME_RATES, 64), items(AIME_RATES, 20), 0.97)
        with pytest.raises(AttributeError):
            verdict.verdict = "fail"  # type: ignore[misc]

    def test_pairing_uses_same_items(self) -> None:
        """Mismatching which item is which widens the interval: items are compared to themselves."""
        ref = items(AIME_RATES, 64)
        cand = items(AIME_RATES, 64)
        shuffled = dict(zip(ref, reversed(list(cand.values())), strict=True))
        paired = judge_recovery(ref, cand, 0.97)
        unpaired = judge_recovery(ref, shuffled, 0.97)
        assert paired.recovery == pytest.approx(unpaired.recovery)
        assert paired.high - paired.low < unpaired.high - unpaired.low
        assert paired.verdict == "pass"


class TestBadInput:
    @pytest.mark.parametrize(
        ("candidate", "message"),
        [
            ({"q0": (20, 21)}, "correct must be in"),
            ({"q0": (20, -1)}, "correct must be in"),
            ({"q0": (0, 0)}, "samples must be at least 1"),
            ({"q0": (20.0, 3)}, "must be an integer"),
            ({"q0": (float("nan"), 3)}, "must be an integer"),
            ({"q0": (20,)}, "expected (samples, correct)"),
            ({}, "needs at least one item"),
        ],
    )
    def test_counts_are_checked(self, candidate: dict[str, object], message: str) -> None:
        with pytest.raises(QuantgateError, match=message.replace("(", r"\(").replace(")", r"\)")):
            judge_recovery({"q0": (20, 5)}, candidate, 0.97)  # type: ignore[arg-type]

    def test_mismatched_items_are_named(self) -> None:
        with pytest.raises(QuantgateError, match=r"1 only in reference.*q1.*1 only in candidate.*q2"):
            judge_recovery({"q0": (4, 1), "q1": (4, 1)}, {"q0": (4, 1), "q2": (4, 1)}, 0.97)

    def test_reference_solving_nothing_is_an_error(self) -> None:
        with pytest.raises(QuantgateError, match="recovery is undefined"):
            judge_recovery({"q0": (4, 0)}, {"q0": (4, 0)}, 0.97)

    @pytest.mark.parametrize("floor", [0.0, -1.0, float("nan"), float("inf"), 3.0])
    def test_floor_is_checked(self, floor: float) -> None:
        with pytest.raises(QuantgateError, match="floor"):
            judge_recovery({"q0": (4, 2)}, {"q0": (4, 2)}, floor)


class TestAggregate:
    def test_states_its_assumption(self) -> None:
        verdict = judge_recovery_aggregate(
            Aggregate(0.3005, items=30, samples=20),
            Aggregate(0.2463, items=30, samples=20),
            0.94,
            can_sample=False,
        )
        assert verdict.assumption is not None
        assert "worst-case binomial" in verdict.assumption
        assert "30 items x 20 samples" in verdict.detail
        assert verdict.more_samples == 0

    def test_deterministic_scoring_is_exact_up_to_rounding(self) -> None:
        ref = Aggregate(0.3720, items=1172, samples=1, deterministic=True, resolution=0.00005)
        good = judge_recovery_aggregate(ref, Aggregate(0.3771, 1172, 1, True, 0.00005), 0.99)
        bad = judge_recovery_aggregate(ref, Aggregate(0.3584, 1172, 1, True, 0.00005), 0.99)
        assert (good.verdict, bad.verdict) == ("pass", "fail")
        assert "deterministic" in (good.assumption or "")

    def test_composite_is_the_mean_of_members(self) -> None:
        refs = [Aggregate(0.5, 30, 20), Aggregate(0.9, 500, 20)]
        cands = [Aggregate(0.45, 30, 20), Aggregate(0.9, 500, 20)]
        verdict = judge_recovery_aggregate(refs, cands, 0.97)
        assert verdict.recovery == pytest.approx(1.35 / 1.4)

    def test_aggregate_is_more_cautious_than_per_item(self) -> None:
        ref = items(AIME_RATES, 64)
        cand = items(AIME_RATES, 20)
        per_item = judge_recovery(ref, cand, 0.97)
        mean = sum(AIME_RATES) / len(AIME_RATES)
        aggregate = judge_recovery_aggregate(Aggregate(mean, 30, 64), Aggregate(mean, 30, 20), 0.97)
        assert aggregate.high - aggregate.low > per_item.high - per_item.low

    @pytest.mark.parametrize("mean", [-0.1, 1.1, float("nan")])
    def test_bad_mean(self, mean: float) -> None:
        with pytest.raises(QuantgateError, match="mean"):
            Aggregate(mean, 30, 20)


class TestSpeedup:
    def test_latency_ratio_and_rounding_interval(self) -> None:
        verdict = judge_speedup([7.6], [5.3], 1.0, higher_is_better=False, resolution=0.05)
        assert verdict.speedup == pytest.approx(7.6 / 5.3)
        assert verdict.low == pytest.approx(7.55 / 5.35)
        assert verdict.verdict == "pass"

    def test_equal_rounded_figures_are_inconclusive(self) -> None:
        verdict = judge_speedup([0.4], [0.4], 1.0, higher_is_better=False, resolution=0.05)
        assert verdict.verdict == "inconclusive"

    def test_throughput_slower_fails(self) -> None:
        verdict = judge_speedup([26.4], [23.9], 1.0, higher_is_better=True, resolution=0.05)
        assert verdict.verdict == "fail"

    def test_per_gpu_figure_when_counts_differ(self) -> None:
        verdict = judge_speedup(
            [14.9], [10.0], 1.0, higher_is_better=False, reference_gpus=4, candidate_gpus=2
        )
        assert verdict.per_gpu_speedup == pytest.approx(14.9 / 10.0 * 2)
        assert "per GPU" in verdict.detail

    def test_repeated_measurements_give_a_confidence_interval(self) -> None:
        verdict = judge_speedup([2.0, 2.1, 1.9, 2.0], [1.0, 1.05, 0.95, 1.0], 1.5, higher_is_better=False)
        assert verdict.assumption is None
        assert verdict.low > 1.5
        assert verdict.verdict == "pass"

    @pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
    def test_bad_measurements(self, bad: float) -> None:
        with pytest.raises(QuantgateError, match="positive"):
            judge_speedup([bad], [1.0], 1.0, higher_is_better=True)
        with pytest.raises(QuantgateError, match="positive"):
            judge_speedup([1.0], [bad], 1.0, higher_is_better=False)

    def test_a_goodput_of_zero_is_a_measurement_of_the_candidate(self) -> None:
        none_met = judge_speedup([2.0, 2.1], [0.0, 0.0], 0.9, higher_is_better=True)
        assert none_met.verdict == "fail"
        assert none_met.detail == (
            "fail: the candidate's figure is 0 in 2 of 2 runs (no request met the limits) vs floor 0.90"
        )
        some_met = judge_speedup([2.0, 2.1, 2.0], [0.0, 2.2, 2.1], 0.9, higher_is_better=True)
        assert some_met.verdict == "inconclusive"


def test_minimum_detectable_drop_shrinks_with_samples() -> None:
    ref = items(AIME_RATES, 64)
    assert minimum_detectable_drop(ref, 0.97, 64) < minimum_detectable_drop(ref, 0.97, 20)


counts_strategy = st.integers(min_value=1, max_value=64).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n))
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.tuples(counts_strategy, counts_strategy), min_size=1, max_size=40),
    floor=st.floats(min_value=0.5, max_value=1.2),
)
def test_properties(data: list[tuple[tuple[int, int], tuple[int, int]]], floor: float) -> None:
    ref = {f"i{k}": pair[0] for k, pair in enumerate(data)}
    cand = {f"i{k}": pair[1] for k, pair in enumerate(data)}
    if all(c == 0 for _, c in ref.values()):
        with pytest.raises(QuantgateError):
            judge_recovery(ref, cand, floor)
        return
    verdict = judge_recovery(ref, cand, floor)
    assert verdict.verdict in {"pass", "fail", "inconclusive"}
    assert verdict.low <= verdict.recovery + 1e-9
    assert verdict.recovery <= verdict.high + 1e-9
    if verdict.verdict == "fail":
        assert verdict.high < floor
    if verdict.verdict == "pass":
        assert verdict.low >= floor - verdict.margin
    assert (verdict.more_samples > 0) <= (verdict.verdict == "inconclusive")
    assert verdict.more_samples + verdict.candidate_samples <= max(DEFAULT_CAP, verdict.candidate_samples)
    assert math.isfinite(verdict.recovery)
    better = {k: (n, n) for k, (n, _) in cand.items()}
    assert judge_recovery(ref, better, floor).verdict != "fail" or verdict.verdict == "fail"


@pytest.mark.parametrize(
    ("confidence", "df", "expected"),
    [
        # scipy.stats.t.ppf, computed in the vllm tool environment (scipy 1.x)
        (0.975, 2.5, 3.5746548420036817),
        (0.975, 3.7, 2.8675207071911895),
        (0.9, 1.3, 2.425947410787918),
        (0.95, 10, 1.8124611228107335),
    ],
)
def test_student_t_quantiles_match_scipy(confidence: float, df: float, expected: float) -> None:
    from quantgate.speedjudge import t_quantile

    assert t_quantile(confidence, df) == pytest.approx(expected, rel=1e-9)


def test_three_repeats_each_widen_the_speed_interval_to_students_t() -> None:
    """3 vs 3 equal-spread repeats: Welch df 4, so the half-width uses t(0.95, 4) = 2.132, not z = 1.645."""
    reference = [1.0, 1.1, 0.9]
    candidate = [1.0, 1.1, 0.9]
    verdict = judge_speedup(reference, candidate, 1.0, higher_is_better=True)
    logs = [math.log(v) for v in reference]
    se = math.sqrt(2 * statistics.variance(logs) / 3)
    assert math.log(verdict.high) == pytest.approx(2.131846786326649 * se, rel=1e-9)


class TestSequentialSpeed:
    """With a repeat cap the speed judge tops up while undecided and passes within its indifference zone."""

    def test_a_cell_just_under_its_floor_asks_for_more_repeats_then_is_decided_at_the_cap(self) -> None:
        reference = [100.0, 104.0, 96.0]
        close = [98.0, 102.0, 94.0]
        first = judge_speedup(reference, close, 1.0, higher_is_better=True, cap=12)
        assert first.verdict == "inconclusive"
        assert first.more_repeats == 2
        assert "run 2 more repeats" in first.detail
        fixed = judge_speedup(reference, close, 1.0, higher_is_better=True)
        assert fixed.verdict == "inconclusive"
        assert fixed.more_repeats == 0
        at_cap = judge_speedup(reference * 4, close * 4, 1.0, higher_is_better=True, cap=12)
        assert at_cap.verdict == "pass", at_cap.detail
        assert 0.0 < at_cap.margin <= 0.05
        assert at_cap.low >= 1.0 - at_cap.margin

    def test_the_indifference_zone_is_capped(self) -> None:
        noisy = [100.0, 140.0, 70.0]
        verdict = judge_speedup(noisy, [90.0, 120.0, 65.0] * 4, 1.0, higher_is_better=True, cap=12)
        assert verdict.margin == 0.05
        assert verdict.verdict == "inconclusive"
        assert verdict.more_repeats == 0
        assert "repeat cap reached" in verdict.detail

    def test_a_clear_slowdown_fails_at_the_first_look_and_a_clear_gain_passes(self) -> None:
        reference = [100.0, 101.0, 99.0]
        assert (
            judge_speedup(reference, [80.0, 81.0, 79.0], 1.0, higher_is_better=True, cap=12).verdict == "fail"
        )
        assert judge_speedup(reference, [150.0, 151.0, 149.0], 1.0, higher_is_better=True, cap=12).passed

    def test_early_looks_are_stricter_than_the_fixed_sample_interval(self) -> None:
        reference = [100.0, 103.0, 97.0]
        candidate = [92.0, 95.0, 89.0]
        fixed = judge_speedup(reference, candidate, 1.0, higher_is_better=True)
        early = judge_speedup(reference, candidate, 1.0, higher_is_better=True, cap=12)
        assert early.high > fixed.high
        assert early.low < fixed.low


class TestCellSize:
    """A cell's cap is the fewest samples per item that catch the benchmark's loss with 95 % power."""

    def test_many_items_need_few_samples_and_few_items_many(self) -> None:
        from quantgate.judge import DETECT_LADDER, nominal_reference, samples_to_detect

        many = nominal_reference(500, 0.85)
        cap = samples_to_detect(many, 0.97, 0.05, 64)
        assert cap < 20
        assert minimum_detectable_drop(many, 0.97, cap) <= 0.05
        fewer = DETECT_LADDER[DETECT_LADDER.index(cap) - 1]
        assert minimum_detectable_drop(many, 0.97, fewer) > 0.05
        assert samples_to_detect(nominal_reference(30, 0.5), 0.97, 0.10, 64) >= 32
        assert samples_to_detect(many, 0.97, 0.05, 2) == 2
        assert samples_to_detect(nominal_reference(30, 0.5), 0.97, 0.01, 64) == 64, "out of reach: the most"

    def test_the_nominal_reference_keeps_its_mean(self) -> None:
        from quantgate.judge import nominal_reference

        for mean in (0.3, 0.56, 0.92):
            counts = nominal_reference(600, mean).values()
            assert sum(c for _, c in counts) / sum(n for n, _ in counts) == pytest.approx(mean, abs=0.01)
