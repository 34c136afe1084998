"""Speed judge: how often a cell at or near its floor fails, and how often it is decided.

Simulates ``judge_speedup`` on ``n`` vs ``n`` repeats drawn log-normally around a true speedup, for the
interval the judge uses (Student's t at the Welch-Satterthwaite degrees of freedom) and for the normal
quantile it used before. Prints, per row: fails (the one-sided error at the floor should be 5 %),
passes, inconclusive. Run: ``python benchmarks/speed_judge_power.py [runs]``.
"""

from __future__ import annotations

import math
import random
import sys
from statistics import NormalDist, mean, variance

from quantgate.speedjudge import judge_speedup


def normal_quantile_verdict(reference: list[float], candidate: list[float], floor: float) -> str:
    """The judge's verdict before Student's t: the same Welch interval with the normal quantile."""
    log_ref = [math.log(v) for v in reference]
    log_cand = [math.log(v) for v in candidate]
    speedup = math.exp(mean(log_cand) - mean(log_ref))
    half = NormalDist().inv_cdf(0.95) * math.sqrt(
        variance(log_ref) / len(log_ref) + variance(log_cand) / len(log_cand)
    )
    low, high = speedup * math.exp(-half), speedup * math.exp(half)
    return "fail" if high < floor else "pass" if low >= floor else "inconclusive"


def simulate(
    true_speedup: float, spread: float, repeats: int, runs: int, seed: int
) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    floor = 1.0
    tally = {
        "t": {"fail": 0, "pass": 0, "inconclusive": 0},
        "normal": {"fail": 0, "pass": 0, "inconclusive": 0},
    }
    for _ in range(runs):
        reference = [math.exp(rng.gauss(0.0, spread)) for _ in range(repeats)]
        candidate = [true_speedup * math.exp(rng.gauss(0.0, spread)) for _ in range(repeats)]
        tally["t"][judge_speedup(reference, candidate, floor, higher_is_better=True).verdict] += 1
        tally["normal"][normal_quantile_verdict(reference, candidate, floor)] += 1
    return {k: {v: n / runs for v, n in counts.items()} for k, counts in tally.items()}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    print(f"{runs} simulated cells per row, floor 1.0, log-normal repeats")
    print("| true speedup | spread | repeats | interval | fails | passes | inconclusive |")
    print("|---|---|---|---|---|---|---|")
    for true_speedup, spread, repeats in (
        (1.0, 0.05, 3),
        (1.03, 0.05, 3),
        (1.0, 0.05, 5),
        (0.9, 0.05, 3),
        (1.2, 0.05, 3),
    ):
        result = simulate(true_speedup, spread, repeats, runs, seed=7)
        for interval in ("normal", "t"):
            r = result[interval]
            print(
                f"| {true_speedup:.2f} | {spread:.0%} | {repeats} vs {repeats} | {interval} | "
                f"{r['fail']:.1%} | {r['pass']:.1%} | {r['inconclusive']:.1%} |"
            )


if __name__ == "__main__":
    main()
