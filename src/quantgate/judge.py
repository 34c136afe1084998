"""The statistical judge: is a quantized model's accuracy still at least ``floor`` times its reference's?

Why not a fixed rule: AIME has 30 items. With 20 samples per item a fixed "recovery >= 0.97" rule fails
about one run in five for a model that lost nothing, and a loose rule lets a 10 % drop through.

How it decides (paired, one-sided, sequential):

* Both models are scored on the *same* items, so the comparison is conditional on the items: the
  difference between easy and hard items cancels, only the sampling noise of each model remains.
  Per item, ``p = correct / samples``. The variance of each model's mean is estimated from the
  per-item rate of both models pooled (steadier than either alone; shrunk by half a success and half
  a failure so that items solved 0 or n times are not treated as noise-free).
* Recovery ``R = mean(p_candidate) / mean(p_reference)``. Its interval is Fieller's: the values ``f``
  for which ``D(f) = mean(p_c) - f * mean(p_r)`` is not significantly different from zero.
* **fail** when the upper bound of ``R`` is below ``floor``: evidence of a loss beyond the floor.
  Improvements can never fail.
* **pass** when the lower bound of ``R`` is at or above ``floor - margin``. ``margin`` is the
  benchmark's indifference zone: ``2 z SE / mean(p_r)`` with the standard error the candidate will
  have at ``cap`` samples per item (predicted from the reference). With that margin the pass and fail
  regions meet at the cap, so a run ends decided there, save in rare borderline cases.
* otherwise **inconclusive**, and ``more_samples`` says how many further samples per item to draw
  (x1.5 per look: 20 -> 32 -> 48 -> 64). Drawing them and judging again is the sequential top-up.
  Because the same run is looked at several times, early looks use stricter bounds, ``z / t**1.25``
  to pass and ``z / t**1.5`` to fail, where ``t`` is the fraction of the cap's information already in
  hand (an O'Brien-Fleming-like shape), so early stops need strong evidence. ``confidence`` is the
  one-sided level at the cap; its default (0.88) is calibrated by ``benchmarks/judge_power.py``
  against the targets in its docstring.

Published model cards give means only. ``judge_recovery_aggregate`` judges those too, but under an
assumption it states in the verdict: a number of items and samples per item, and the worst-case
(largest) sampling variance a mean can have, ``m (1 - m) / (items * samples)``; printed rounding is
added to the interval. Deterministic scoring (log-likelihood, greedy) has no sampling noise, so only
rounding is left.

Deterministic scoring judged per item (``judge_recovery_items``: log-likelihood acc / acc_norm,
TruthfulQA's mc2 fraction, greedy exact match) gives one score per item, so more samples change
nothing and there is nothing to top up. What is uncertain is which items the benchmark (or a
budget-cut subset of it) happens to hold, and a few items that flip between runs on GPU kernels. So
the variance is the spread over items of the paired differences: ``Var(D(f))`` is the sample variance
of ``c_i - f r_i`` over ``N``, and Fieller's interval is solved exactly with it (the covariance of the
two means included). One look, final: ``margin = 2 z SE(D(R)) / (m_r (1 - g))``,
``g = z^2 Var(m_r) / m_r^2``, is never narrower than the interval, so every verdict is pass or fail.

Everything here is pure standard-library code; ``benchmarks/judge_power.py`` measures the error rates.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from quantgate.errors import QuantgateError

VerdictName = Literal["pass", "fail", "inconclusive"]
VERDICTS: tuple[VerdictName, ...] = ("pass", "fail", "inconclusive")

DEFAULT_CONFIDENCE = 0.88
DEFAULT_CAP = 64
SHRINK = 0.5
# Early-look boundaries are z / t**shape, t = fraction of the cap's information in hand.
PASS_SHAPE = 1.25
FAIL_SHAPE = 1.5

ItemCounts = Mapping[str, "tuple[int, int] | Sequence[int]"]
ItemScores = Mapping[str, float]


@dataclass(frozen=True)
class Verdict:
    """The judge's answer for one cell; ``detail`` is one printable line."""

    verdict: VerdictName
    recovery: float
    low: float
    high: float
    floor: float
    margin: float
    more_samples: int
    items: int
    candidate_samples: int
    reference_samples: int
    assumption: str | None
    detail: str

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form; infinite bounds become ``None``."""

        def num(x: float) -> float | None:
            return None if math.isinf(x) or math.isnan(x) else round(x, 6)

        return {
            "verdict": self.verdict,
            "recovery": num(self.recovery),
            "low": num(self.low),
            "high": num(self.high),
            "floor": self.floor,
            "margin": num(self.margin),
            "more_samples": self.more_samples,
            "items": self.items,
            "candidate_samples": self.candidate_samples,
            "reference_samples": self.reference_samples,
            "assumption": self.assumption,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Aggregate:
    """A published mean with what is assumed about how it was measured."""

    mean: float
    items: int
    samples: int
    deterministic: bool = False
    resolution: float = 0.0

    def __post_init__(self) -> None:
        if not (_finite(self.mean) and 0.0 <= self.mean <= 1.0):
            raise QuantgateError(None, f"mean must be a fraction in [0, 1], got {self.mean!r}", "mean")
        if self.items < 1 or self.samples < 1:
            raise QuantgateError(None, "items and samples must be at least 1", "items")
        if not (_finite(self.resolution) and self.resolution >= 0.0):
            raise QuantgateError(None, f"resolution must be >= 0, got {self.resolution!r}", "resolution")

    @property
    def variance(self) -> float:
        if self.deterministic:
            return 0.0
        return self.mean * (1.0 - self.mean) / (self.items * self.samples)


@dataclass(frozen=True)
class _Summary:
    mean: float
    variance: float
    items: int
    samples: int


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _z(confidence: float) -> float:
    if not 0.5 < confidence < 1.0:
        raise QuantgateError(None, f"confidence must be in (0.5, 1), got {confidence!r}", "confidence")
    return NormalDist().inv_cdf(confidence)


def _check_floor(floor: float) -> None:
    if not (_finite(floor) and 0.0 < floor <= 2.0):
        raise QuantgateError(None, f"floor must be a ratio in (0, 2], got {floor!r}", "floor")


def _check_counts(name: str, counts: ItemCounts) -> dict[str, tuple[int, int]]:
    if not isinstance(counts, Mapping) or not counts:
        raise QuantgateError(None, "needs at least one item", name)
    out: dict[str, tuple[int, int]] = {}
    for item, pair in counts.items():
        where = f"{name}[{item!r}]"
        try:
            samples, correct = pair
        except (TypeError, ValueError):
            raise QuantgateError(None, f"expected (samples, correct), got {pair!r}", where) from None
        for label, value in (("samples", samples), ("correct", correct)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise QuantgateError(None, f"{label} must be an integer, got {value!r}", where)
        if samples < 1:
            raise QuantgateError(None, f"samples must be at least 1, got {samples}", where)
        if not 0 <= correct <= samples:
            raise QuantgateError(None, f"correct must be in [0, samples={samples}], got {correct}", where)
        out[str(item)] = (samples, correct)
    return out


def _check_same_items(reference: Mapping[str, object], candidate: Mapping[str, object]) -> None:
    if reference.keys() != candidate.keys():
        only_ref = sorted(reference.keys() - candidate.keys())
        only_cand = sorted(candidate.keys() - reference.keys())
        pieces = []
        if only_ref:
            pieces.append(f"{len(only_ref)} only in reference (e.g. {', '.join(only_ref[:3])})")
        if only_cand:
            pieces.append(f"{len(only_cand)} only in candidate (e.g. {', '.join(only_cand[:3])})")
        raise QuantgateError(None, "item sets differ: " + "; ".join(pieces), "items")


def _summarise(
    counts: Mapping[str, tuple[int, int]],
    rates: Mapping[str, float] | None = None,
    samples_override: int | None = None,
) -> _Summary:
    """Mean of per-item rates and the variance of that mean, from ``rates`` when given."""
    n_items = len(counts)
    total_p = 0.0
    total_var = 0.0
    for item, (samples, correct) in counts.items():
        rate = rates[item] if rates is not None else (correct + SHRINK) / (samples + 2 * SHRINK)
        total_p += correct / samples
        total_var += rate * (1.0 - rate) / (samples_override or samples)
    return _Summary(
        mean=total_p / n_items,
        variance=total_var / n_items**2,
        items=n_items,
        samples=min(s for s, _ in counts.values()),
    )


def _pooled_rates(
    reference: Mapping[str, tuple[int, int]], candidate: Mapping[str, tuple[int, int]]
) -> dict[str, float]:
    """Per-item rate of both models together: the variance estimate under "no loss" is steadier."""
    rates = {}
    for item, (n_r, c_r) in reference.items():
        n_c, c_c = candidate[item]
        rates[item] = (c_r + c_c + SHRINK) / (n_r + n_c + 2 * SHRINK)
    return rates


def _fieller(m_c: float, v_c: float, m_r: float, v_r: float, z: float, upper: bool) -> float:
    """One Fieller bound of ``m_c / m_r``; +-inf when the reference is not clear of zero."""
    denom = m_r * m_r - z * z * v_r
    if denom <= 0.0:
        return math.inf if upper else -math.inf
    disc = m_c * m_c * v_r + m_r * m_r * v_c - z * z * v_c * v_r
    root = math.sqrt(max(disc, 0.0))
    return (m_c * m_r + (z * root if upper else -z * root)) / denom


def _next_samples(current: int, cap: int) -> int:
    return max(0, min(cap, -(-3 * current // 8) * 4) - current)


def _decide(
    cand: _Summary,
    ref: _Summary,
    floor: float,
    *,
    cap_variance: float,
    confidence: float,
    cap: int,
    resolution: float = 0.0,
    assumption: str | None = None,
    can_sample: bool = True,
) -> Verdict:
    _check_floor(floor)
    if cap < 1:
        raise QuantgateError(None, f"cap must be at least 1, got {cap}", "cap")
    if ref.mean - resolution <= 0.0:
        raise QuantgateError(
            None, "the reference solves no item (mean 0): recovery is undefined", "reference"
        )
    z_cap = _z(confidence)
    se_at_cap = math.sqrt(cap_variance + floor * floor * ref.variance)
    se_now = math.sqrt(cand.variance + floor * floor * ref.variance)
    information = 1.0 if se_now == 0.0 or cand.samples >= cap else min(1.0, (se_at_cap / se_now) ** 2)
    z_fail = z_cap / information**FAIL_SHAPE if information > 0.0 else math.inf
    z_pass = z_cap / information**PASS_SHAPE if information > 0.0 else math.inf
    recovery = cand.mean / ref.mean
    low = _fieller(
        max(cand.mean - resolution, 0.0), cand.variance, ref.mean + resolution, ref.variance, z_pass, False
    )
    high = _fieller(cand.mean + resolution, cand.variance, ref.mean - resolution, ref.variance, z_fail, True)
    margin = 2.0 * z_cap * se_at_cap / ref.mean + 2.0 * resolution / ref.mean

    more = 0
    if high < floor:
        verdict: VerdictName = "fail"
    elif low >= floor - margin:
        verdict = "pass"
    else:
        verdict = "inconclusive"
        if can_sample and cand.samples < cap:
            more = _next_samples(cand.samples, cap)

    def fmt(x: float) -> str:
        return "inf" if math.isinf(x) else f"{x:.3f}"

    parts = [
        f"{verdict}: recovery {recovery:.3f} [{fmt(low)}, {fmt(high)}] vs floor {floor:.3f}"
        f" (pass at >= {floor - margin:.3f})",
        f"{cand.items} items paired, candidate {cand.samples}/item, reference {ref.samples}/item",
    ]
    if verdict == "inconclusive":
        if more:
            parts.append(f"draw {more} more samples/item")
        elif can_sample:
            parts.append("sample cap reached, undecided")
        else:
            parts.append(f"undecided by the figures given; a run with {cap} samples/item could decide")
    if assumption:
        parts.append(f"assumes {assumption}")
    return Verdict(
        verdict=verdict,
        recovery=recovery,
        low=low,
        high=high,
        floor=floor,
        margin=margin,
        more_samples=more,
        items=cand.items,
        candidate_samples=cand.samples,
        reference_samples=ref.samples,
        assumption=assumption,
        detail="; ".join(parts),
    )


def judge_recovery(
    reference: ItemCounts,
    candidate: ItemCounts,
    floor: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    cap: int = DEFAULT_CAP,
) -> Verdict:
    """Judge per-item outcomes: ``reference`` and ``candidate`` map item id -> ``(samples, correct)``.

    Both must cover the same items. ``confidence`` is the one-sided level of each bound; ``cap`` the
    most candidate samples per item a sequential top-up may ask for.
    """
    ref = _check_counts("reference", reference)
    cand = _check_counts("candidate", candidate)
    _check_same_items(ref, cand)
    rates = _pooled_rates(ref, cand)
    ref_summary = _summarise(ref, rates)
    cap_variance = _summarise(ref, rates, samples_override=cap).variance
    return _decide(
        _summarise(cand, rates), ref_summary, floor, cap_variance=cap_variance, confidence=confidence, cap=cap
    )


def judge_recovery_aggregate(
    reference: Aggregate | Sequence[Aggregate],
    candidate: Aggregate | Sequence[Aggregate],
    floor: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    cap: int = DEFAULT_CAP,
    can_sample: bool = True,
) -> Verdict:
    """Judge means only (e.g. a model card), stating the assumption in the verdict.

    A sequence of aggregates is a composite: the equal-weight mean of its members (as the cards'
    "average" rows are). ``can_sample=False`` when no more samples can be drawn (published numbers).
    """
    refs = [reference] if isinstance(reference, Aggregate) else list(reference)
    cands = [candidate] if isinstance(candidate, Aggregate) else list(candidate)
    if not refs or len(refs) != len(cands):
        raise QuantgateError(None, "reference and candidate need the same number of members", "members")
    k = len(refs)
    for r, c in zip(refs, cands, strict=True):
        if (r.items, r.deterministic) != (c.items, c.deterministic):
            raise QuantgateError(None, "reference and candidate must describe the same items", "items")

    def combine(parts: list[Aggregate], samples_override: int | None = None) -> _Summary:
        variance = 0.0
        for p in parts:
            if p.deterministic:
                continue
            variance += p.mean * (1.0 - p.mean) / (p.items * (samples_override or p.samples))
        return _Summary(
            mean=sum(p.mean for p in parts) / k,
            variance=variance / (k * k),
            items=sum(p.items for p in parts),
            samples=min(p.samples for p in parts),
        )

    resolution = max(p.resolution for p in [*refs, *cands])
    ref_summary = combine(refs)
    cap_variance = combine(refs, samples_override=cap).variance
    sampled = [p for p in refs if not p.deterministic]
    pieces = []
    if sampled:
        pieces.append(
            "worst-case binomial noise of a mean over "
            + ", ".join(f"{p.items} items x {p.samples} samples" for p in sampled)
        )
    if len(sampled) < k:
        pieces.append("deterministic scoring (no sampling noise)")
    if resolution:
        pieces.append(f"printed values exact to +-{resolution:g}")
    return _decide(
        combine(cands),
        ref_summary,
        floor,
        cap_variance=cap_variance,
        confidence=confidence,
        cap=cap,
        resolution=resolution,
        assumption="; ".join(pieces),
        can_sample=can_sample and bool(sampled),
    )


ITEMS_ASSUMPTION = "deterministic scoring (one run per model, no sampling noise), item-paired"


def _check_scores(name: str, scores: ItemScores) -> dict[str, float]:
    if not isinstance(scores, Mapping) or not scores:
        raise QuantgateError(None, "needs at least one item", name)
    out: dict[str, float] = {}
    for item, score in scores.items():
        # bools and ints are scores too (True: solved), numpy's numbers as well; NaN and +-inf fail the
        # range test. The plain types first: the abstract check alone is slow on 14042 MMLU items.
        if not (isinstance(score, (float, int, numbers.Real)) and 0 <= score <= 1):
            raise QuantgateError(
                None, f"score must be a finite number in [0, 1], got {score!r}", f"{name}[{item!r}]"
            )
        out[str(item)] = float(score)
    return out


def judge_recovery_items(
    reference: ItemScores,
    candidate: ItemScores,
    floor: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    max_margin: float | None = None,
) -> Verdict:
    """Judge deterministic scores: ``reference`` and ``candidate`` map item id -> score in [0, 1].

    A score is 0/1 for log-likelihood accuracy (acc, acc_norm) and greedy exact match, a fraction for
    TruthfulQA's mc2. Both must cover the same items. One look, final: the verdict is ``pass`` or
    ``fail``, ``inconclusive`` only when the items cannot say (one item, a reference scoring 0, or a
    reference mean not clear of zero at ``confidence``); ``more_samples`` is always 0.

    ``max_margin`` (the benchmark's ``detect_drop``) is the widest indifference zone a pass may use: a
    look whose margin is wider cannot tell a loss of that size from none (too few items, or a low
    score), so what would pass on it is inconclusive; a fail stands. Measured on the cpu kind: INT4 on
    200 GSM8K items at 0.35 read 0.900 [0.847, 0.954] against a floor of 0.94, a pass by a 0.107 margin.
    """
    ref = _check_scores("reference", reference)
    cand = _check_scores("candidate", candidate)
    _check_same_items(ref, cand)
    _check_floor(floor)
    z = _z(confidence)
    n = len(ref)
    r = list(ref.values())
    c = [cand[item] for item in ref]
    m_r = math.fsum(r) / n
    m_c = math.fsum(c) / n

    def verdict_of(
        verdict: VerdictName, recovery: float, low: float, high: float, margin: float, why: str
    ) -> Verdict:
        if math.isinf(margin):  # no interval to print
            shown = "undefined" if math.isnan(recovery) else f"{recovery:.3f}"
            head = f"{verdict}: recovery {shown} vs floor {floor:.3f}"
        else:
            head = (
                f"{verdict}: recovery {recovery:.3f} [{low:.3f}, {high:.3f}] vs floor {floor:.3f}"
                f" (pass at >= {floor - margin:.3f})"
            )
        parts = [head, f"{n} item{'s' * (n != 1)} paired, mean {m_c:.4f} vs reference {m_r:.4f}", why]
        return Verdict(
            verdict=verdict,
            recovery=recovery,
            low=low,
            high=high,
            floor=floor,
            margin=margin,
            more_samples=0,
            items=n,
            candidate_samples=1,
            reference_samples=1,
            assumption=ITEMS_ASSUMPTION,
            detail="; ".join(p for p in [*parts, f"assumes {ITEMS_ASSUMPTION}"] if p),
        )

    if m_r == 0.0:
        why = "the reference scores 0 on every item: recovery is undefined"
        return verdict_of("inconclusive", math.nan, -math.inf, math.inf, math.inf, why)
    recovery = m_c / m_r
    if n < 2:
        why = "one item has no spread across items to judge by (needs at least 2)"
        return verdict_of("inconclusive", recovery, -math.inf, math.inf, math.inf, why)
    # Variances of the two means and their covariance, from the spread over items (n - 1 denominator).
    dr = [x - m_r for x in r]
    dc = [y - m_c for y in c]
    v_rr = math.fsum(map(operator.mul, dr, dr)) / (n - 1) / n
    v_cc = math.fsum(map(operator.mul, dc, dc)) / (n - 1) / n
    v_cr = math.fsum(map(operator.mul, dc, dr)) / (n - 1) / n
    # Var(D(R)) straight from the per-item differences at R: no cancellation when they are all equal.
    d_at = [y - recovery * x for x, y in zip(dr, dc, strict=True)]
    v_at = math.fsum(map(operator.mul, d_at, d_at)) / (n - 1) / n
    # Fieller: the f with (m_c - f m_r)^2 <= z^2 Var(D(f)), a quadratic a f^2 - 2 b f + c <= 0.
    a = m_r * m_r - z * z * v_rr
    if a <= 0.0:
        why = (
            f"the reference's mean is not clear of zero at confidence {confidence:g}: "
            "the interval is unbounded"
        )
        return verdict_of("inconclusive", recovery, -math.inf, math.inf, math.inf, why)
    b = m_c * m_r - z * z * v_cr
    # b^2 - a c = z^2 m_r^2 Var(D(R)) - z^4 (v_rr v_cc - v_cr^2), the second term >= 0: the interval
    # is never wider than 2 z m_r SE(D(R)) / a, which is the margin.
    spread = z * m_r * math.sqrt(v_at)
    determinant = max(v_rr * v_cc - v_cr * v_cr, 0.0)
    root = min(math.sqrt(max(spread * spread - z**4 * determinant, 0.0)), spread)
    low, high = (b - root) / a, (b + root) / a
    margin = 2.0 * spread / a
    # Not below the floor is within the margin of it (high - low <= margin): pass and fail meet.
    verdict: VerdictName = "fail" if high < floor else "pass"
    if verdict == "pass" and max_margin is not None and margin > max_margin:
        why = (
            f"too few items to tell a {max_margin:.0%} loss from none: the pass would need a margin of "
            f"{margin:.3f}"
        )
        return verdict_of("inconclusive", recovery, low, high, margin, why)
    return verdict_of(verdict, recovery, low, high, margin, "")


def minimum_detectable_drop(
    reference: ItemCounts,
    floor: float,
    candidate_samples: int,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = 0.95,
) -> float:
    """The recovery shortfall ``1 - R`` that fails with probability ``power`` at ``candidate_samples``.

    Predicted from the reference's per-item rates, assuming the candidate's rates are like them.
    """
    counts = _check_counts("reference", reference)
    ref = _summarise(counts)
    cand_variance = _summarise(counts, samples_override=candidate_samples)
    se = math.sqrt(cand_variance.variance + floor * floor * ref.variance)
    detectable = floor - (_z(confidence) + NormalDist().inv_cdf(power)) * se / ref.mean
    return 1.0 - detectable


DETECT_DROP = 0.10
DETECT_LADDER = (1, 2, 4, 8, 12, 16, 20, 24, 32, 48, 64)


def samples_to_detect(reference: ItemCounts, floor: float, drop: float, most: int) -> int:
    """The fewest samples per item (of ``DETECT_LADDER``) at which one look catches a recovery loss of
    ``drop`` with 95 % power (``minimum_detectable_drop``), at most ``most``: the judge's cap for a cell.

    Many items need few samples each: MATH-500's 500 items catch a 5 % loss at about 4, GPQA-Diamond's
    198 a 10 % loss at about 8, AIME's 30 need the whole 64. At its cap the judge always decides, so a
    cell sized this way costs what its benchmark needs, not a fixed 20 or 64 per item
    (``benchmarks/judge_power.py`` prints the error rates and samples before and after).
    """
    for samples in DETECT_LADDER:
        if samples >= most:
            break
        if minimum_detectable_drop(reference, floor, samples) <= drop:
            return samples
    return most


def nominal_reference(
    items: int, mean: float = 0.5, samples: int = DEFAULT_CAP
) -> dict[str, tuple[int, int]]:
    """A stand-in reference for planning before any run: a third of the items solved at ``mean``, the
    rest at 0.95 or 0.05 in the shares that keep the mean (reasoning benchmarks have many items solved
    nearly always or nearly never); it reproduces ``samples_to_detect`` of the simulated profiles of
    ``benchmarks/judge_power.py`` (AIME 48, GPQA-Diamond 8, MATH-500 8 at a mean of 0.85)."""
    high = (mean - 0.05) / 0.9
    rates = [mean if i % 3 == 0 else 0.95 if i / items < high else 0.05 for i in range(items)]
    return {f"item-{i}": (samples, round(rate * samples)) for i, rate in enumerate(rates)}
