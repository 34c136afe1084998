"""Whole nightlies of one GPU kind by simulation: is the gate red on noise, and does it see a real loss?

Every gating cell of the kind (catalog x rules, as ``pytest suites -m KIND`` selects them) is judged by
the project's own code: accuracy by ``quantgate.outcomes.judge_sequentially`` at the judge's cap for the
cell (``quantgate.judge.samples_to_detect``; first look, top-ups, confirmation of a fail with fresh
seeds), speed by ``quantgate.outcomes.judge_speed_sequentially`` with
``quantgate.speedjudge.judge_speedup`` at the GPU kind file's repeats, cap and BF16 reference repeats
(top-ups, confirmation of a fail by a fresh bench). BF16 accuracy cells pass on their stored references
while the inputs hold (the kind's ``reuse_reference``), so they are not judged here. Only the tools'
answers are simulated:

* accuracy: per-item solve rates from a U-shaped Beta with the published BF16 mean of the model on the
  benchmark (AIME spread 0.3, MATH-500 0.4, GPQA-Diamond 0.5; mean 0.5 where nothing is published); the
  stored BF16 reference holds 64 samples per item; a candidate's rates are ``R x`` the reference's.
* speed: each figure is log-normal around the cell's true value with ``--spread`` (sd of the log; 5 %
  by default, the spread the issue reasons with). The true speedup is the published one where the
  printed figures pin it to +-2 % and it meets the floor, otherwise one drawn from the kind's published
  speedups that do; cells published *below* their floor are red by the cards' own numbers: left out
  and counted.
* the stored BF16 references are redrawn every 10 nights: the nights that share one share its error.

A night is red when a gating cell ends ``fail``, or ``inconclusive`` without a pass in the last 7 nights
(the gate's verdict history, inputs unchanged). Printed: nights red with nothing changed (target
<= 5 %); for one cell truly 10 % worse (accuracy recovery 0.90 on each benchmark and floor; speed 10 %
under its floor, per scenario; the accuracy cell of lowest BF16 score, the hardest to judge), how often
it is red within two nights (target >= 95 %); the GPU-hours
confirmations and top-ups cost a night beside the night's planned GPU-hours.

The Open LLM v1 per-task cells (deterministic scoring) are informational in ``baselines/rules.yaml``, so
they never make a night red and are not in the figures above. What they would do if they gated is
printed after them, without targets: each judged by ``quantgate.judge.judge_recovery_items`` on 0/1
scores per item (TruthfulQA's mc2 fraction drawn 0/1 too, which only widens its interval) at the
published BF16 mean; with nothing changed a night's run flips 2 % of the stored reference's items, as
many gained as lost; a cell truly 10 % worse has lost 10 % of its solved items at random, and flips
as well. Printed: the nights on which one of them fails (over ``--deterministic-nights``, with the
gating cells' red nights of the same nights), and per benchmark and floor how often the cell of lowest
BF16 score fails within two nights (``--deterministic-runs`` stretches).

    python benchmarks/nightly_noise.py [--kind h100] [--nights 400] [--detect-runs 400] [--spread 0.05]
        [--deterministic-nights 100] [--deterministic-runs 100]

Exit status 0 when every target is met.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from quantgate import paths  # noqa: E402
from quantgate.catalog import Catalog, load_catalog  # noqa: E402
from quantgate.confirm import CONFIRMATION_CONFIDENCE  # noqa: E402
from quantgate.judge import DEFAULT_CAP, judge_recovery_items, samples_to_detect  # noqa: E402
from quantgate.kinds import KindSpec, load_kind  # noqa: E402
from quantgate.matrix import MatrixCell, estimate_cell_seconds, expand, planned_samples  # noqa: E402
from quantgate.outcomes import judge_sequentially, judge_speed_sequentially, speed_judge  # noqa: E402
from quantgate.published import load_published  # noqa: E402
from quantgate.replay import Replay  # noqa: E402
from quantgate.rules import AccuracyCellKey, Rules, SpeedCellKey, load_rules  # noqa: E402
from quantgate.runners.evaluate import EvalJob, Evaluation  # noqa: E402
from quantgate.speedjudge import SpeedVerdict  # noqa: E402

PUBLISHED = REPO / "baselines" / "published" / "cards-2025-02.json"
SPREAD_BY_BENCHMARK = {"aime24": 0.3, "math_500": 0.4, "gpqa_diamond": 0.5}
WORSE = 0.90
MAX_AGE_NIGHTS = 7
# A published speedup is used as a cell's truth only where the printed figures pin it to +-2 %
# (0.4 s vs 0.4 s printed says nothing between 0.78 and 1.29).
RESOLVED = 0.02
REFERENCE_NIGHTS = 10
TARGET_RED = 0.05
TARGET_DETECT = 0.95
# A rerun of a deterministic task flips this share of the items, as many gained as lost.
FLIPS = 0.02


@dataclass
class AccuracyCell:
    cell: MatrixCell
    floor: float
    rates: list[float]
    first_samples: int
    detect_drop: float
    planned_samples: float
    seconds: float

    def items(self) -> list[str]:
        return [f"item-{i}" for i in range(len(self.rates))]


@dataclass
class ItemsCell:
    """A deterministic (Open LLM v1) accuracy cell: one 0/1 score per item, judged in one look."""

    cell: MatrixCell
    floor: float
    mean: float
    gating: bool
    names: list[str]


@dataclass
class SpeedCell:
    cell: MatrixCell
    floor: float
    truth: float
    higher_is_better: bool
    seconds: float


@dataclass
class Cost:
    confirm_s: float = 0.0
    top_up_s: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    red_nights: set[int] = field(default_factory=set)


def item_rates(mean: float, spread: float, items: int, rng: random.Random) -> list[float]:
    raw = [
        rng.betavariate(max(mean * spread * 2, 1e-3), max((1 - mean) * spread * 2, 1e-3))
        for _ in range(items)
    ]
    scale = mean / max(sum(raw) / items, 1e-9)
    return [min(1.0, r * scale) for r in raw]


def bf16_means() -> dict[tuple[str, str], float]:
    published = load_published(PUBLISHED)
    return {
        (e.model, e.benchmark): e.reference / 100.0 for e in published.accuracy if e.reference is not None
    }


def accuracy_cells(catalog: Catalog, rules: Rules, kind: str, rng: random.Random) -> list[AccuracyCell]:
    bf16_mean = bf16_means()
    out = []
    for cell in expand(catalog, "accuracy"):
        if cell.gpu != kind or cell.skip_reason is not None or cell.benchmark not in SPREAD_BY_BENCHMARK:
            continue
        model, bench = catalog.models[cell.model], catalog.benchmarks[cell.benchmark]
        decision = rules.recovery_for(
            AccuracyCellKey(cell.model, model.params_b, cell.scheme, cell.benchmark, bench.family)
        )
        if not decision.gating:
            continue
        mean = bf16_mean.get((cell.model, cell.benchmark), 0.5)
        assert bench.items is not None
        assert bench.sampling is not None
        rates = item_rates(mean, SPREAD_BY_BENCHMARK[cell.benchmark], bench.items, rng)
        seconds = estimate_cell_seconds(catalog, cell) * max(1, cell.requirement.count)
        sampling = bench.sampling
        planned = planned_samples(bench.items, sampling.samples, sampling.detect_drop)
        out.append(
            AccuracyCell(
                cell, decision.floor, rates, sampling.samples, sampling.detect_drop, planned, seconds
            )
        )
    return out


def items_cells(catalog: Catalog, rules: Rules, kind: str) -> list[ItemsCell]:
    """The kind's deterministic task cells, gating or not, with the published BF16 mean (0.5 if none)."""
    bf16_mean = bf16_means()
    out = []
    for cell in expand(catalog, "accuracy"):
        benchmark = cell.benchmark or ""
        bench = catalog.benchmarks[benchmark]
        if cell.gpu != kind or cell.skip_reason is not None or bench.scoring != "deterministic":
            continue
        assert bench.items is not None
        model = catalog.models[cell.model]
        decision = rules.recovery_for(
            AccuracyCellKey(cell.model, model.params_b, cell.scheme, benchmark, bench.family)
        )
        mean = bf16_mean.get((cell.model, benchmark), 0.5)
        names = [f"item-{i}" for i in range(bench.items)]
        out.append(ItemsCell(cell, decision.floor, mean, decision.gating, names))
    return out


def speed_cells(
    catalog: Catalog, rules: Rules, kind: str, rng: random.Random
) -> tuple[list[SpeedCell], list[str]]:
    replayed = Replay(catalog, rules).published_cells(PUBLISHED)
    published = {
        c.cell_id: c.verdict.speedup / c.decision.floor
        for c in replayed
        if isinstance(c.verdict, SpeedVerdict)
        and c.decision is not None
        and c.verdict.high / c.verdict.low <= 1.0 + 2 * RESOLVED
    }
    healthy = sorted(r for cid, r in published.items() if f"-{kind}-" in cid and r >= 1.0)
    out, known_red = [], []
    for cell in expand(catalog, "performance"):
        if cell.gpu != kind or cell.skip_reason is not None or cell.scheme == "bf16":
            continue
        model = catalog.models[cell.model]
        decision = rules.speedup_for(
            SpeedCellKey(
                cell.model, model.params_b, cell.scheme, cell.gpu, cell.scenario or "", cell.workload or ""
            )
        )
        if not decision.gating:
            continue
        ratio = published.get(cell.cell_id)
        if ratio is not None and ratio < 1.0:
            known_red.append(cell.cell_id)
            continue
        truth = decision.floor * (ratio if ratio is not None else rng.choice(healthy))
        spec = catalog.scenarios[cell.scenario or ""]
        seconds = estimate_cell_seconds(catalog, cell) * max(1, cell.requirement.count)
        out.append(SpeedCell(cell, decision.floor, truth, spec.higher_is_better, seconds))
    return out, known_red


def draw_counts(rates: Sequence[float], samples: int, scale: float, rng: random.Random) -> list[int]:
    return [sum(1 for _ in range(samples) if rng.random() < min(1.0, p * scale)) for p in rates]


def binomial(n: int, p: float, rng: random.Random) -> int:
    if n <= 40:
        return sum(1 for _ in range(n) if rng.random() < p)
    k = round(rng.gauss(n * p, math.sqrt(max(n * p * (1 - p), 1e-12))))
    return min(n, max(0, k))


def night_accuracy(
    cell: AccuracyCell, reference: dict[str, tuple[int, int]], recovery: float, rng: random.Random, cost: Cost
) -> str:
    names = cell.items()

    def evaluate(samples: int, number: int) -> Evaluation:
        job = EvalJob("", "", Path(), None, "", Path(), None, samples, number, 0.6, 0.95, 0, Path())
        counts = {
            n: (samples, binomial(samples, min(1.0, p * recovery), rng))
            for n, p in zip(names, cell.rates, strict=True)
        }
        return Evaluation(job, counts, {}, 0.0, Path(f"look{number}"), Path(), 0.0)

    cap = samples_to_detect(reference, cell.floor, cell.detect_drop, DEFAULT_CAP)
    first = min(cell.first_samples, cap)
    verdict, looks, _ = judge_sequentially(evaluate, reference, cell.floor, first, Path("ref"), cap=cap)
    drawn = [look.job.samples for look in looks]
    per_sample = cell.seconds / cell.planned_samples
    confirmed = "fresh data" in verdict.detail or "confirmed" in verdict.detail
    series = drawn[:-1] if confirmed else drawn
    cost.top_up_s += per_sample * sum(series[1:])
    if confirmed:
        cost.confirm_s += per_sample * drawn[-1]
    return verdict.verdict


def night_speed(
    cell: SpeedCell,
    reference: list[float],
    truth: float,
    spread: float,
    spec: KindSpec,
    rng: random.Random,
    cost: Cost,
) -> str:
    def figures(n: int) -> list[float]:
        value = truth if cell.higher_is_better else 1.0 / truth
        return [value * math.exp(rng.gauss(0.0, spread)) for _ in range(n)]

    series: list[float] = []
    per_repeat = cell.seconds / spec.speed.repeats

    def more(total: int) -> list[float]:
        extra = total - len(series)
        cost.top_up_s += per_repeat * extra
        series.extend(figures(extra))
        return list(series)

    def fresh(n: int) -> list[float]:
        cost.confirm_s += per_repeat * n
        return figures(n)

    judge = speed_judge(reference, cell.floor, higher_is_better=cell.higher_is_better, cap=spec.speed.cap)
    series.extend(figures(spec.speed.repeats))
    verdict, _ = judge_speed_sequentially(judge, series, more, fresh, confirm_repeats=spec.speed.cap)
    return verdict.verdict


def speed_reference(spread: float, spec: KindSpec, rng: random.Random) -> list[float]:
    n = spec.speed.reference_repeats or spec.speed.repeats
    return [math.exp(rng.gauss(0.0, spread)) for _ in range(n)]


def accuracy_reference(cell: AccuracyCell, rng: random.Random) -> dict[str, tuple[int, int]]:
    return {
        n: (DEFAULT_CAP, binomial(DEFAULT_CAP, p, rng)) for n, p in zip(cell.items(), cell.rates, strict=True)
    }


def item_scores(cell: ItemsCell, rng: random.Random) -> list[float]:
    """A stored BF16 reference: each item solved with the cell's published mean."""
    return [1.0 if rng.random() < cell.mean else 0.0 for _ in cell.names]


def rerun(scores: Sequence[float], mean: float, rng: random.Random) -> list[float]:
    """The same model run again: ``FLIPS`` of the items change, as many gained as lost on average."""
    lose, gain = FLIPS / 2 / mean, FLIPS / 2 / (1 - mean)
    return [1.0 - s if rng.random() < (lose if s else gain) else s for s in scores]


def night_items(
    cell: ItemsCell, reference: Sequence[float], model: Sequence[float], rng: random.Random
) -> str:
    """One night's verdict of a deterministic cell whose model scores ``model`` before kernel flips."""
    candidate = rerun(model, cell.mean, rng)
    return judge_recovery_items(
        dict(zip(cell.names, reference, strict=True)),
        dict(zip(cell.names, candidate, strict=True)),
        cell.floor,
    ).verdict


def simulate_items_nights(
    cells: Sequence[ItemsCell], nights: int, rng: random.Random
) -> tuple[set[int], dict[str, int]]:
    """Nights on which a deterministic cell fails with nothing changed, and failing cells by id."""
    red: set[int] = set()
    red_cells: dict[str, int] = {}
    for night in range(nights):
        if night % REFERENCE_NIGHTS == 0:
            refs = [item_scores(c, rng) for c in cells]
        for c, ref in zip(cells, refs, strict=True):
            if night_items(c, ref, ref, rng) != "pass":
                red.add(night)
                red_cells[c.cell.cell_id] = red_cells.get(c.cell.cell_id, 0) + 1
    return red, red_cells


def detect_items(cell: ItemsCell, runs: int, rng: random.Random) -> float:
    """Fraction of two-night stretches in which a deterministic cell truly ``WORSE`` fails."""
    caught = 0
    for _ in range(runs):
        reference = item_scores(cell, rng)
        model = [0.0 if s and rng.random() < 1 - WORSE else s for s in reference]
        caught += any(night_items(cell, reference, model, rng) != "pass" for _ in range(2))
    return caught / runs


def simulate_nights(
    acc: Sequence[AccuracyCell],
    speed: Sequence[SpeedCell],
    nights: int,
    spread: float,
    spec: KindSpec,
    rng: random.Random,
) -> tuple[float, Cost, dict[str, int]]:
    """Fraction of red nights with nothing changed, the confirmations' and top-ups' cost, red cells by id.

    Nights follow one another with the gate's verdict history: an inconclusive cell is red only when
    its last pass is more than ``MAX_AGE_NIGHTS`` nights old (every cell starts with a pass the night
    before the first). The stored BF16 references are redrawn every ``REFERENCE_NIGHTS`` nights, to
    average over references while keeping a reference's tie between the nights that share it.
    """
    cost = Cost()
    red_nights = 0
    red_cells: dict[str, int] = {}
    last_pass: dict[str, int] = {}
    for night in range(nights):
        if night % REFERENCE_NIGHTS == 0:
            acc_refs = [accuracy_reference(c, rng) for c in acc]
            speed_refs = [speed_reference(spread, spec, rng) for _ in speed]
        outcomes = [
            (c.cell.cell_id, night_accuracy(c, r, 1.0, rng, cost)) for c, r in zip(acc, acc_refs, strict=True)
        ]
        outcomes += [
            (c.cell.cell_id, night_speed(c, r, c.truth, spread, spec, rng, cost))
            for c, r in zip(speed, speed_refs, strict=True)
        ]
        red = False
        for cell_id, outcome in outcomes:
            cost.outcomes[outcome] = cost.outcomes.get(outcome, 0) + 1
            if outcome == "pass":
                last_pass[cell_id] = night
            elif outcome == "fail" or night - last_pass.get(cell_id, -1) > MAX_AGE_NIGHTS:
                red = True
                red_cells[f"{cell_id} ({outcome})"] = red_cells.get(f"{cell_id} ({outcome})", 0) + 1
        red_nights += red
        if red:
            cost.red_nights.add(night)
    return red_nights / nights, cost, red_cells


def detect_accuracy(cell: AccuracyCell, runs: int, rng: random.Random) -> float:
    """Fraction of two-night stretches (one stored reference) in which a cell at recovery ``WORSE`` is red."""
    caught = 0
    for _ in range(runs):
        reference = accuracy_reference(cell, rng)
        caught += any(night_accuracy(cell, reference, WORSE, rng, Cost()) != "pass" for _ in range(2))
    return caught / runs


def detect_speed(cell: SpeedCell, runs: int, spread: float, spec: KindSpec, rng: random.Random) -> float:
    """Fraction of two-night stretches (one stored reference) in which a cell ``WORSE`` x its floor is red."""
    caught = 0
    for _ in range(runs):
        reference = speed_reference(spread, spec, rng)
        truth = cell.floor * WORSE
        caught += any(
            night_speed(cell, reference, truth, spread, spec, rng, Cost()) != "pass" for _ in range(2)
        )
    return caught / runs


def report_items(
    catalog: Catalog,
    rules: Rules,
    spec: KindSpec,
    args: argparse.Namespace,
    gating_red: set[int],
    rng: random.Random,
) -> None:
    """Print what the deterministic cells would do if they gated (no targets: they are informational)."""
    cells = [
        c
        for c in items_cells(catalog, rules, args.kind)
        if not (c.cell.scheme == "bf16" and spec.accuracy.reuse_reference)
    ]
    if not cells:
        return
    nights = args.deterministic_nights
    gating = sum(c.gating for c in cells)
    print(
        f"deterministic (Open LLM v1) cells: {len(cells)}, {gating} gating by rules.yaml; judged by "
        f"judge_recovery_items, a night's rerun flipping {FLIPS:.0%} of the items; {nights} nights:"
    )
    red, red_cells = simulate_items_nights(cells, nights, rng)
    before = {n for n in gating_red if n < nights}
    print(
        f"  nights one of them fails with nothing changed: {len(red) / nights:.1%}; were they gating, "
        f"nights red {len(red | before) / nights:.1%} (the gating cells alone: {len(before) / nights:.1%})"
    )
    worst = sorted(red_cells.items(), key=lambda kv: -kv[1])[:5]
    print("  cells most often failing: " + (", ".join(f"{c} x{n}" for c, n in worst) or "none"))
    print(f"  one cell truly {1 - WORSE:.0%} worse, failing within two nights:")
    for benchmark in sorted({c.cell.benchmark or "" for c in cells}):
        chosen = [c for c in cells if c.cell.benchmark == benchmark]
        shares = []
        for floor in sorted({c.floor for c in chosen}, reverse=True):
            cell = min((x for x in chosen if x.floor == floor), key=lambda x: x.mean)
            share = detect_items(cell, args.deterministic_runs, rng)
            shares.append(f"floor {floor} {share:.1%} ({cell.cell.model}, BF16 {cell.mean:.3f})")
        print(f"    {benchmark}: " + ", ".join(shares))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="h100")
    parser.add_argument("--nights", type=int, default=400)
    parser.add_argument("--detect-runs", type=int, default=400)
    parser.add_argument("--spread", type=float, default=0.05, help="sd of log speed figures (0.05: 5 %%)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--deterministic-nights", type=int, default=100, help="0: leave them out")
    parser.add_argument("--deterministic-runs", type=int, default=100)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    catalog, rules, spec = load_catalog(), load_rules(), load_kind(paths.kind_file("gpu"))
    started = time.perf_counter()
    acc = accuracy_cells(catalog, rules, args.kind, rng)
    reused = [c for c in acc if c.cell.scheme == "bf16" and spec.accuracy.reuse_reference]
    acc = [c for c in acc if c not in reused]
    speed, known_red = speed_cells(catalog, rules, args.kind, rng)
    planned_h = (sum(c.seconds for c in acc) + sum(c.seconds for c in speed)) / 3600
    print(
        f"{args.kind}: {len(acc)} gating accuracy cells ({len(reused)} BF16 cells more pass on their "
        f"references while the inputs hold), {len(speed)} gating speed cells ({len(known_red)} more "
        "published below their floor: red by the cards' own numbers, left out)"
    )
    print(
        f"speed: spread {args.spread:.0%}, {spec.speed.repeats} repeats topped up to {spec.speed.cap}, BF16 "
        f"reference {spec.speed.reference_repeats} repeats; confirmations at {CONFIRMATION_CONFIDENCE}; "
        f"{args.nights} nights"
    )
    rate, cost, red_cells = simulate_nights(acc, speed, args.nights, args.spread, spec, rng)
    ok = rate <= TARGET_RED
    status = "met" if ok else "MISSED"
    print(f"nights red with nothing changed: {rate:.1%} (target <= {TARGET_RED:.0%}) {status}")
    worst = sorted(red_cells.items(), key=lambda kv: -kv[1])[:5]
    print("  cells most often red: " + (", ".join(f"{c} x{n}" for c, n in worst) or "none"))
    print(f"  verdicts over all nights: {dict(sorted(cost.outcomes.items()))}")
    print(
        f"  GPU-hours a night: planned {planned_h:.0f} (every gating cell once), confirmations "
        f"{cost.confirm_s / 3600 / args.nights:.2f}, top-ups {cost.top_up_s / 3600 / args.nights:.2f}"
    )
    print(f"one cell truly {1 - WORSE:.0%} worse, red within two nights (target >= {TARGET_DETECT:.0%}):")
    for benchmark in SPREAD_BY_BENCHMARK:
        chosen = [c for c in acc if c.cell.benchmark == benchmark]
        for floor in sorted({c.floor for c in chosen}):
            cell = min((x for x in chosen if x.floor == floor), key=lambda x: sum(x.rates))
            share = detect_accuracy(cell, args.detect_runs, rng)
            met = share >= TARGET_DETECT
            ok &= met
            print(f"  accuracy {cell.cell.cell_id} (floor {floor}): {share:.1%} {'met' if met else 'MISSED'}")
    for scenario in ("single-stream", "multi-stream", "server"):
        found = next((x for x in speed if x.cell.scenario == scenario), None)
        if found is None:
            continue
        share = detect_speed(found, args.detect_runs, args.spread, spec, rng)
        met = share >= TARGET_DETECT
        ok &= met
        status = "met" if met else "MISSED"
        print(f"  speed {found.cell.cell_id} at {WORSE:.2f} x its floor: {share:.1%} {status}")
    if args.deterministic_nights > 0:
        report_items(catalog, rules, spec, args, cost.red_nights, rng)
    print(f"({time.perf_counter() - started:.0f} s) {'all targets met' if ok else 'SOME TARGETS MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
