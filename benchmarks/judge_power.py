"""Measure the judge's error rates by simulation, beside the naive rules it replaces.

For each benchmark profile, per-item solve rates are fixed (spread to 0 and 1, as reasoning benchmarks
are), a reference is drawn, and a candidate whose true per-item rates are ``R * rate`` is judged with
sequential top-ups (start 20 samples per item, cap 64). Printed per true recovery ``R``: how often the
judge fails, passes or stays inconclusive, the mean candidate samples it used, and the fail rate of
the two naive rules on the first 20 samples: a fixed ``recovery >= floor`` and a one-sided 5 % rtol.

Profiles: "AIME-like" is Beta(0.3, 0.3) rates (mean 0.5); the "less spread" profile, Beta(0.5, 0.5),
is printed for sensitivity without targets: the AIME targets are close to what 30 items and 64 samples
per item can resolve at all, and they hold only when rates are as spread as on real reasoning runs.

Targets (issue 2): AIME-like false-fail <= 1 % at R = 1.00, detection >= 95 % at R = 0.90, mean
samples <= 32 at R = 1.00; MATH-500-like false-fail <= 1 % at 1.00, detection >= 95 % at 0.95.

Deterministic scoring (Open LLM v1: log-likelihood accuracy, greedy exact match) has one 0/1 score per
item and is judged by ``judge_recovery_items`` in one look. Its profiles (ARC-like 1172 items at 0.55,
MMLU-like 14042 at 0.65, GSM8K-like 1319 at 0.75) draw a reference per run; the candidate is a rerun in
which 2 % of the items flip (as many gained as lost: "nothing changed"), then, for a true recovery
``R < 1``, loses ``1 - R`` of its solved items at random. Printed per floor: the judge's fail rate at
``R`` = 1.00 (false fails), 0.97 and 0.90 (detection), beside the fixed ``recovery >= floor`` rule's.
No targets: the issue sets none for deterministic scoring.

    python benchmarks/judge_power.py [--runs 4000] [--seed 7] [--deterministic-runs 1000] [--json FILE]

Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from quantgate.judge import (
    DEFAULT_CONFIDENCE,
    judge_recovery,
    judge_recovery_items,
    minimum_detectable_drop,
    samples_to_detect,
)


@dataclass(frozen=True)
class Profile:
    name: str
    items: int
    mean_rate: float
    spread: float
    recoveries: tuple[float, ...]
    targets: tuple[tuple[float, str, float], ...] = ()
    reference_samples: int = 64
    start_samples: int = 20
    cap: int = 64
    floor: float = 0.97
    detect_drop: float = 0.10


PROFILES = (
    Profile(
        "AIME-like",
        items=30,
        mean_rate=0.5,
        spread=0.3,
        recoveries=(1.05, 1.0, 0.97, 0.95, 0.93, 0.9, 0.85),
        targets=((1.0, "false_fail_max", 0.01), (0.9, "detect_min", 0.95), (1.0, "mean_samples_max", 32)),
    ),
    Profile(
        "AIME-like, weak model",
        items=30,
        mean_rate=0.3,
        spread=0.3,
        recoveries=(1.0, 0.95, 0.9, 0.85, 0.8),
    ),
    Profile(
        "AIME-like, rates less spread (sensitivity)",
        items=30,
        mean_rate=0.5,
        spread=0.5,
        recoveries=(1.0, 0.95, 0.9, 0.85),
    ),
    Profile(
        "GPQA-Diamond-like",
        items=198,
        mean_rate=0.5,
        spread=0.5,
        recoveries=(1.0, 0.95, 0.9),
        targets=((1.0, "false_fail_max", 0.01), (0.9, "detect_min", 0.95)),
    ),
    Profile(
        "MATH-500-like",
        items=500,
        mean_rate=0.85,
        spread=0.4,
        reference_samples=20,
        cap=20,
        recoveries=(1.0, 0.97, 0.96, 0.95, 0.93),
        targets=((1.0, "false_fail_max", 0.01), (0.95, "detect_min", 0.95)),
        detect_drop=0.05,
    ),
)


@dataclass(frozen=True)
class DeterministicProfile:
    name: str
    items: int
    score: float
    flips: float = 0.02
    recoveries: tuple[float, ...] = (1.0, 0.97, 0.9)
    floors: tuple[float, ...] = (0.99, 0.97)


DETERMINISTIC_PROFILES = (
    DeterministicProfile("ARC-like", items=1172, score=0.55),
    DeterministicProfile("MMLU-like", items=14042, score=0.65),
    DeterministicProfile("GSM8K-like", items=1319, score=0.75),
)


def item_rates(profile: Profile, rng: np.random.Generator) -> np.ndarray:
    """Per-item solve rates from a U-shaped Beta(a, b) with ``a + b = 2 * spread`` and the profile's mean.

    With ``spread`` 0.3 at mean 0.5 (Beta(0.3, 0.3)) about a third of the items are solved by nearly
    every sample or by nearly none, as on AIME for reasoning models; 0.5 (Jeffreys) is less extreme.
    """
    a = profile.mean_rate * profile.spread * 2
    b = (1 - profile.mean_rate) * profile.spread * 2
    rates = rng.beta(a, b, size=profile.items)
    clipped: np.ndarray = np.clip(rates * profile.mean_rate / rates.mean(), 0.0, 1.0)
    return clipped


def simulate(profile: Profile, recovery: float, runs: int, rng: np.random.Generator) -> dict[str, float]:
    rates = item_rates(profile, np.random.default_rng(12345))
    cand_rates = np.clip(rates * recovery, 0.0, 1.0)
    names = [f"item-{i}" for i in range(profile.items)]
    fails = passes = inconclusive = 0
    naive_fixed = naive_rtol = 0
    samples_used = 0
    for _ in range(runs):
        ref_correct = rng.binomial(profile.reference_samples, rates)
        reference = {n: (profile.reference_samples, int(c)) for n, c in zip(names, ref_correct, strict=True)}
        n = profile.start_samples
        correct = rng.binomial(n, cand_rates)
        first_recovery = (correct.sum() / n) / max(ref_correct.sum() / profile.reference_samples, 1e-12)
        naive_fixed += first_recovery < profile.floor
        naive_rtol += first_recovery < 0.95
        while True:
            candidate = {name: (n, int(c)) for name, c in zip(names, correct, strict=True)}
            verdict = judge_recovery(reference, candidate, profile.floor, cap=profile.cap)
            if verdict.more_samples == 0:
                break
            correct = correct + rng.binomial(verdict.more_samples, cand_rates)
            n += verdict.more_samples
        samples_used += n
        fails += verdict.verdict == "fail"
        passes += verdict.verdict == "pass"
        inconclusive += verdict.verdict == "inconclusive"
    return {
        "recovery": recovery,
        "fail": fails / runs,
        "pass": passes / runs,
        "inconclusive": inconclusive / runs,
        "mean_samples": samples_used / runs,
        "naive_fixed_fail": naive_fixed / runs,
        "naive_rtol5_fail": naive_rtol / runs,
    }


def simulate_items(
    profile: DeterministicProfile, recovery: float, runs: int, rng: np.random.Generator
) -> dict[str, float]:
    """Fail rates of ``judge_recovery_items`` and of the fixed rule per floor, at a true ``recovery``."""
    names = [f"item-{i}" for i in range(profile.items)]
    lose = profile.flips / 2 / profile.score
    gain = profile.flips / 2 / (1 - profile.score)
    fails = dict.fromkeys(profile.floors, 0)
    naive = dict.fromkeys(profile.floors, 0)
    inconclusive = 0
    for _ in range(runs):
        ref = rng.random(profile.items) < profile.score
        flip = rng.random(profile.items) < np.where(ref, lose, gain)
        cand = (ref ^ flip) & (rng.random(profile.items) >= 1 - recovery)
        reference = dict(zip(names, ref.tolist(), strict=True))
        candidate = dict(zip(names, cand.tolist(), strict=True))
        observed = cand.sum() / max(ref.sum(), 1)
        for floor in profile.floors:
            verdict = judge_recovery_items(reference, candidate, floor)
            fails[floor] += verdict.verdict == "fail"
            inconclusive += verdict.verdict == "inconclusive"
            naive[floor] += observed < floor
    row: dict[str, float] = {"recovery": recovery, "inconclusive": inconclusive / runs}
    for floor in profile.floors:
        row[f"fail@{floor}"] = fails[floor] / runs
        row[f"naive_fixed_fail@{floor}"] = naive[floor] / runs
    return row


def report_deterministic(runs: int, seed: int, report: dict[str, object]) -> None:
    """Print the deterministic profiles' fail rates (own random stream: the rows above stay as they are)."""
    rng = np.random.default_rng([seed, 1])
    print(
        f"\n## Deterministic scoring, judge_recovery_items (one look, confidence {DEFAULT_CONFIDENCE}): "
        f"{runs} runs per row; a rerun flips 2 % of the items, as many gained as lost"
    )
    header = [f"fail at R={r:.2f}" for r in DETERMINISTIC_PROFILES[0].recoveries]
    print("| profile | floor | " + " | ".join(header) + " | fixed >=floor fail at the same R |")
    print("|---|---|" + "---|" * len(header) + "---|")
    rows_out = []
    started = time.perf_counter()
    for profile in DETERMINISTIC_PROFILES:
        rows = [simulate_items(profile, r, runs, rng) for r in profile.recoveries]
        assert all(row["inconclusive"] == 0 for row in rows), "one look over many items always decides"
        for floor in profile.floors:
            judged = [f"{row[f'fail@{floor}']:.4f}" for row in rows]
            naive = " / ".join(f"{row[f'naive_fixed_fail@{floor}']:.4f}" for row in rows)
            label = f"{profile.name}, {profile.items} items at {profile.score}"
            print(f"| {label} | {floor} | " + " | ".join(judged) + f" | {naive} |")
        rows_out.append({"name": profile.name, "items": profile.items, "score": profile.score, "rows": rows})
    print(f"({time.perf_counter() - started:.1f} s)")
    report["deterministic"] = {"runs": runs, "profiles": rows_out}


def expected_reference(profile: Profile) -> dict[str, tuple[int, int]]:
    rates = item_rates(profile, np.random.default_rng(12345))
    n = profile.reference_samples
    return {f"item-{i}": (n, round(r * n)) for i, r in enumerate(rates)}


def check_targets(profile: Profile, rows: list[dict[str, float]]) -> list[str]:
    problems = []
    by_recovery = {row["recovery"]: row for row in rows}
    for recovery, kind, limit in profile.targets:
        row = by_recovery[recovery]
        value = {
            "false_fail_max": row["fail"],
            "detect_min": row["fail"],
            "mean_samples_max": row["mean_samples"],
        }[kind]
        ok = value <= limit if kind.endswith("_max") else value >= limit
        label = {
            "false_fail_max": "false-fail",
            "detect_min": "detection",
            "mean_samples_max": "mean samples",
        }[kind]
        sign = "<=" if kind.endswith("_max") else ">="
        status = "met" if ok else "MISSED"
        problems.append(
            f"{status}: {profile.name} {label} at R={recovery:.2f} = {value:.4g} ({sign} {limit:g})"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=4000, help="simulated runs per row. Default: %(default)r")
    parser.add_argument("--seed", type=int, default=7, help="random seed. Default: %(default)r")
    parser.add_argument(
        "--deterministic-runs",
        type=int,
        default=1000,
        help="simulated runs per row of the deterministic profiles. Default: %(default)r",
    )
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    report: dict[str, object] = {"runs": args.runs, "seed": args.seed, "profiles": []}
    all_ok = True
    for before in PROFILES:
        cap = samples_to_detect(expected_reference(before), before.floor, before.detect_drop, before.cap)
        runs = [(before, f"before: {before.start_samples} samples per item first, cap {before.cap}")]
        if cap != before.cap:
            after = dataclasses.replace(before, start_samples=min(before.start_samples, cap), cap=cap)
            label = f"after: the judge's cap for the benchmark, {cap} samples per item"
            runs.append((after, label))
        for profile, label in runs:
            all_ok &= report_profile(profile, label, args.runs, rng, report)
    if args.deterministic_runs > 0:
        report_deterministic(args.deterministic_runs, args.seed, report)
    print("\nall targets met" if all_ok else "\nSOME TARGETS MISSED")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
    return 0 if all_ok else 1


def report_profile(
    profile: Profile, label: str, runs: int, rng: np.random.Generator, report: dict[str, object]
) -> bool:
    """Simulate and print one profile's rows; whether its targets hold."""
    ok = True
    if True:
        started = time.perf_counter()
        rows = [simulate(profile, r, runs, rng) for r in profile.recoveries]
        reference = expected_reference(profile)
        mdd_start = minimum_detectable_drop(reference, profile.floor, profile.start_samples)
        mdd_cap = minimum_detectable_drop(reference, profile.floor, profile.cap)
        print(
            f"\n## {profile.name}, {label}: {profile.items} items, mean rate {profile.mean_rate}, reference "
            f"{profile.reference_samples}/item, candidate {profile.start_samples}->{profile.cap}/item, "
            f"floor {profile.floor}"
        )
        print(
            f"minimum detectable drop (95 % power): {mdd_start:.3f} at {profile.start_samples} samples/item, "
            f"{mdd_cap:.3f} at {profile.cap}"
        )
        print(
            "| true R | judge fail | pass | inconclusive | mean samples | fixed >=floor fail | rtol 5% fail |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            cells = [f"{row['recovery']:.2f}", f"{row['mean_samples']:.1f}"]
            rates = [
                f"{row[k]:.4f}"
                for k in ("fail", "pass", "inconclusive", "naive_fixed_fail", "naive_rtol5_fail")
            ]
            print("| " + " | ".join([cells[0], *rates[:3], cells[1], *rates[3:]]) + " |")
        for line in check_targets(profile, rows):
            print(line)
            ok &= line.startswith("met")
        print(f"({time.perf_counter() - started:.1f} s)")
        profiles = report["profiles"]
        assert isinstance(profiles, list)
        profiles.append(
            {"name": profile.name, "label": label, "rows": rows, "mdd_start": mdd_start, "mdd_cap": mdd_cap}
        )
    return ok


if __name__ == "__main__":
    sys.exit(main())
