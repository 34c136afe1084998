"""The speed judge: is a quantized deployment at least ``floor`` times as fast as BF16 on the same GPU kind?

Speed figures are multiplicative, so everything happens on the log scale: the speedup is the ratio of
geometric means (quantized over BF16 for throughput, BF16 over quantized for latency), its interval a
Welch interval on the log ratio with Student's t at the Welch-Satterthwaite degrees of freedom (the
normal quantile on 3 vs 3 repeats failed a cell at its floor 9 % of the time, not 5 %).

* **fail** when the upper bound is below ``floor``: evidence of a deployment slower than the floor.
* **pass** when the lower bound is at or above ``floor * (1 - margin)``. Without a ``cap`` the margin
  is 0 and the verdict is the fixed-sample one. With a ``cap`` (the most candidate repeats a cell may
  run) the judge is sequential like the accuracy judge: ``margin`` is the indifference zone the cap's
  repeats resolve (``2 t SE`` at the cap, at most ``max_margin``), so a cell near its floor is decided
  at the cap instead of staying inconclusive night after night; early looks use stricter bounds
  (``t / f**1.25`` to pass, ``t / f**1.5`` to fail, ``f`` the fraction of the cap's information in
  hand), and an undecided cell asks for ``more_repeats``.
* otherwise **inconclusive**.

With one figure each (published tables), only the printed rounding (``resolution``) bounds the ratio
and the verdict says so. A throughput of 0 (a goodput: no request met the limits) is a measurement.
``benchmarks/speed_judge_power.py`` and ``benchmarks/nightly_noise.py`` measure the error rates. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from quantgate.errors import QuantgateError
from quantgate.judge import VerdictName, _finite

DEFAULT_SPEED_CONFIDENCE = 0.95
DEFAULT_MAX_MARGIN = 0.05
PASS_SHAPE = 1.25
FAIL_SHAPE = 1.5


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    front = (
        math.exp(
            a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
        )
        / a
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * fraction


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def _t_density(t: float, df: float) -> float:
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def t_quantile(confidence: float, df: float) -> float:
    """Student's t quantile at ``confidence`` (> 0.5) with ``df`` degrees of freedom (the normal one past
    1e6): Newton steps on the CDF, kept inside a bracket (bisection when a step leaves it)."""
    z = NormalDist().inv_cdf(confidence)
    if not math.isfinite(df) or df > 1e6:
        return z
    low, high = z, z
    while _t_cdf(high, df) < confidence:
        low, high = high, high * 2.0
    x = (low + high) / 2.0
    for _ in range(100):
        error = _t_cdf(x, df) - confidence
        if error < 0.0:
            low = x
        else:
            high = x
        step = x - error / _t_density(x, df)
        x = step if low < step < high else (low + high) / 2.0
        if high - low < 1e-13 * high or abs(error) < 1e-15:
            break
    return x


def welch_df(var_ref: float, n_ref: int, var_cand: float, n_cand: int) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference of two means (variances of the means)."""
    total = var_ref + var_cand
    if total == 0.0:
        return math.inf
    return total**2 / (var_ref**2 / (n_ref - 1) + var_cand**2 / (n_cand - 1))


@dataclass(frozen=True)
class SpeedVerdict:
    """Speedup of a quantized deployment over BF16 on the same GPU kind, judged against a floor."""

    verdict: VerdictName
    speedup: float
    low: float
    high: float
    floor: float
    per_gpu_speedup: float | None
    assumption: str | None
    detail: str
    margin: float = 0.0
    more_repeats: int = 0
    candidate_repeats: int = 0

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "speedup": round(self.speedup, 6),
            "low": round(self.low, 6),
            "high": round(self.high, 6),
            "floor": self.floor,
            "margin": round(self.margin, 6),
            "more_repeats": self.more_repeats,
            "candidate_repeats": self.candidate_repeats,
            "per_gpu_speedup": None if self.per_gpu_speedup is None else round(self.per_gpu_speedup, 6),
            "assumption": self.assumption,
            "detail": self.detail,
        }


def next_repeats(current: int, cap: int) -> int:
    """Further candidate repeats for a top-up: x1.5 per look (3 -> 5 -> 8 -> 12), up to ``cap``."""
    return max(0, min(cap, -(-3 * current // 2)) - current)


def _check(reference: Sequence[float], candidate: Sequence[float], floor: float, higher: bool) -> None:
    for name, values in (("reference", reference), ("candidate", candidate)):
        if not values:
            raise QuantgateError(None, "needs at least one measurement", name)
        zero_ok = name == "candidate" and higher
        for v in values:
            if not (_finite(v) and (v > 0.0 or (zero_ok and v == 0.0))):
                raise QuantgateError(None, f"measurements must be positive numbers, got {v!r}", name)
    if not (_finite(floor) and floor > 0.0):
        raise QuantgateError(None, f"floor must be positive, got {floor!r}", "floor")


def _mean_and_variance(logs: Sequence[float]) -> tuple[float, float]:
    """Mean of the logs and the variance of that mean (0 for a single figure)."""
    mean = sum(logs) / len(logs)
    if len(logs) < 2:
        return mean, 0.0
    return mean, sum((x - mean) ** 2 for x in logs) / (len(logs) - 1) / len(logs)


@dataclass(frozen=True)
class _Interval:
    low: float
    high: float
    margin: float
    how: str
    assumption: str | None = None


def _zero_figures(candidate: Sequence[float], floor: float) -> SpeedVerdict | None:
    """A goodput of 0 (no request met the limits) in some runs: no ratio to judge."""
    zeros = sum(1 for v in candidate if v == 0.0)
    if not zeros:
        return None
    met = len(candidate) - zeros
    verdict: VerdictName = "fail" if met == 0 else "inconclusive"
    return SpeedVerdict(
        verdict=verdict,
        speedup=0.0,
        low=0.0,
        high=math.inf if met else 0.0,
        floor=floor,
        per_gpu_speedup=None,
        assumption=None,
        detail=(
            f"{verdict}: the candidate's figure is 0 in {zeros} of {len(candidate)} runs "
            f"(no request met the limits) vs floor {floor:.2f}"
        ),
        candidate_repeats=len(candidate),
    )


def _repeated_interval(
    log_ref: Sequence[float],
    log_cand: Sequence[float],
    speedup: float,
    confidence: float,
    cap: int | None,
    max_margin: float,
) -> _Interval:
    """Welch's t interval on log figures; sequential (``cap``): stricter early, an indifference margin."""
    _, var_ref = _mean_and_variance(log_ref)
    _, var_cand = _mean_and_variance(log_cand)
    q = t_quantile(confidence, welch_df(var_ref, len(log_ref), var_cand, len(log_cand)))
    se_now = math.sqrt(var_ref + var_cand)
    q_pass = q_fail = q
    margin = 0.0
    if cap is not None:
        se_cap = math.sqrt(var_ref + var_cand * len(log_cand) / cap)
        margin = min(1.0 - math.exp(-2.0 * q * se_cap), max_margin)
        information = 1.0 if se_now == 0.0 else min(1.0, (se_cap / se_now) ** 2)
        q_pass, q_fail = q / information**PASS_SHAPE, q / information**FAIL_SHAPE
    how = f"{len(log_ref)} vs {len(log_cand)} measurements"
    return _Interval(speedup * math.exp(-q_pass * se_now), speedup * math.exp(q_fail * se_now), margin, how)


def _single_interval(ref_value: float, cand_value: float, sign: float, resolution: float) -> _Interval:
    """One figure each: exact up to the printed rounding (``resolution``)."""
    up = (ref_value + resolution, max(cand_value - resolution, 1e-12))
    down = (max(ref_value - resolution, 1e-12), cand_value + resolution)
    bounds = [(c / r) ** sign for r, c in (up, down)]
    assumption = "single figures, exact up to printed rounding" + (
        f" (+-{resolution:g})" if resolution else ""
    )
    return _Interval(min(bounds), max(bounds), 0.0, "1 figure each", assumption)


def judge_speedup(
    reference: Sequence[float],
    candidate: Sequence[float],
    floor: float,
    *,
    higher_is_better: bool,
    resolution: float = 0.0,
    reference_gpus: int = 1,
    candidate_gpus: int = 1,
    confidence: float = DEFAULT_SPEED_CONFIDENCE,
    cap: int | None = None,
    max_margin: float = DEFAULT_MAX_MARGIN,
) -> SpeedVerdict:
    """Speedup = BF16 latency / quantized latency, or quantized throughput / BF16 throughput.

    ``cap``: the most candidate repeats a sequential top-up may reach (``None``: a fixed-sample verdict,
    margin 0). ``resolution``: half a unit of the last printed digit, for single figures. When BF16
    needs more GPUs than the quantized model the per-GPU speedup is reported beside the whole-server
    one (the cards' definition), never instead of it.
    """
    _check(reference, candidate, floor, higher_is_better)
    if min(reference_gpus, candidate_gpus) < 1:
        raise QuantgateError(None, "GPU counts must be at least 1", "gpus")
    if cap is not None and cap < len(candidate):
        cap = len(candidate)
    zero = _zero_figures(candidate, floor)
    if zero is not None:
        return zero
    sign = 1.0 if higher_is_better else -1.0
    log_ref, log_cand = [math.log(v) for v in reference], [math.log(v) for v in candidate]
    (mean_ref, _), (mean_cand, _) = _mean_and_variance(log_ref), _mean_and_variance(log_cand)
    speedup = math.exp(sign * (mean_cand - mean_ref))
    if len(reference) >= 2 and len(candidate) >= 2:
        bounds = _repeated_interval(log_ref, log_cand, speedup, confidence, cap, max_margin)
    else:
        bounds = _single_interval(math.exp(mean_ref), math.exp(mean_cand), sign, resolution)
    low, high, margin = bounds.low, bounds.high, bounds.margin
    more = 0
    if high < floor:
        verdict: VerdictName = "fail"
    elif low >= floor * (1.0 - margin):
        verdict = "pass"
    else:
        verdict = "inconclusive"
        if cap is not None and len(candidate) >= 2:
            more = next_repeats(len(candidate), cap)
    per_gpu = speedup * reference_gpus / candidate_gpus if reference_gpus != candidate_gpus else None
    detail = f"{verdict}: speedup {speedup:.3f} [{low:.3f}, {high:.3f}] vs floor {floor:.2f}"
    if margin:
        detail += f" (pass at >= {floor * (1.0 - margin):.3f})"
    detail += f"; {bounds.how}"
    if more:
        detail += f"; run {more} more repeats"
    elif verdict == "inconclusive" and cap is not None and len(candidate) >= cap:
        detail += "; repeat cap reached, undecided"
    if per_gpu is not None:
        detail += f"; per GPU {per_gpu:.3f} ({candidate_gpus} vs {reference_gpus} GPUs)"
    if bounds.assumption:
        detail += f"; assumes {bounds.assumption}"
    return SpeedVerdict(
        verdict=verdict,
        speedup=speedup,
        low=low,
        high=high,
        floor=floor,
        per_gpu_speedup=per_gpu,
        assumption=bounds.assumption,
        detail=detail,
        margin=margin,
        more_repeats=more,
        candidate_repeats=len(candidate),
    )
