"""The server scenario's figure: the highest Poisson request rate whose requests meet the TTFT/TPOT limits.

What: a *capacity search* offers the server one request rate per step (each step an ordinary ``vllm
bench serve --request-rate R --goodput ttft:X tpot:Y`` run, ``runners.bench``), judges the step by the
share of requests that met both limits (the tool's ``request_goodput`` / ``request_throughput``: both are
counts over the same duration, ``vllm/benchmarks/serve.py`` ``calculate_metrics``), and chooses the next
rate: a geometric ladder from the start rate (up by ``factor`` while steps pass, down while they fail)
until a passing and a failing rate bracket the capacity, then geometric bisection until the bracket is
within ``resolution``. The capacity is the highest rate that passed. A fixed offered rate cannot do
this: its goodput never exceeds the rate offered, so a faster scheme could never show it.

Why each repeat is one whole search: the speed judge (``quantgate.speedjudge``) compares independent
figures per side drawn the same way. A search's capacity is such a draw (fresh prompts and arrivals per
repeat, seeds numbered by repeat and step), so a top-up or a confirmation is simply more searches, and
BF16 and the quantized scheme are searched alike. Repeating only the final rates instead would give
pass/fail counts at rates that differ per side, which the judge cannot compare as a ratio. A search
reports a rate of its grid, so the caller spreads each repeat's first rate over one resolution step
(``dithered_start``, from ``pipeline.speed.warm_start``): searches started alike walked one grid and came
out identical.

Why bounded by the clock, not by a step count alone: ``search_capacity`` starts a step only when its
estimate fits before the deadline (the cell's speed budget), so a host 20x slower ends its search cut,
recorded, and without a figure, not late; a step may overrun its estimate by at most its timeout.

Why figures are derived from the recorded steps: ``capacities`` replays each repeat's steps through the
same ``next_rate`` rule, so a figure is a pure function of the tool's result files and the settings
carried by each run; a repeat whose search did not end (time, step limit, or a capacity above
``max_rate``) yields no figure and says why (``search_state``): a cut search is never passed on.

Why a planned walk (``planned_searches``): plans need a search's cost before any run, so the same rule
is walked against a server whose capacity is known (every rate up to it passes), with the pipeline's
starts (the first search's anchor: BF16's capacity for a quantized cell whose kind stores it, else the
probe's rate; then the last capacity; every start dithered); ``quantgate.devices.durations`` times its
steps (``estimate_search_seconds``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quantgate.runners.bench import BenchResult

# Spreads the searches' first rates over one resolution step (``dithered_start``).
GOLDEN = (5**0.5 - 1) / 2


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """How a capacity search walks: the first rate, the ladder's ``factor``, the bracket ``resolution``
    it stops at (hi / lo), the share of requests (``attainment``) that must meet the limits for a rate to
    pass, the rates it never goes below or above, and its step limit."""

    start_rate: float
    factor: float = 2.0
    resolution: float = 1.25
    attainment: float = 0.9
    min_rate: float = 0.25
    max_rate: float = 1024.0
    max_steps: int = 10

    def __post_init__(self) -> None:
        for name in ("start_rate", "min_rate", "max_rate"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite rate > 0, got {value!r}")
        if not self.min_rate < self.max_rate:
            raise ValueError(f"min_rate {self.min_rate} must be below max_rate {self.max_rate}")
        if not (self.factor > 1 and self.resolution > 1 and math.isfinite(self.factor)):
            raise ValueError("factor and resolution must be > 1")
        if not 0 < self.attainment <= 1:
            raise ValueError(f"attainment must be in (0, 1], got {self.attainment!r}")
        if self.max_steps < 2:
            raise ValueError(f"max_steps must be >= 2, got {self.max_steps!r}")


@dataclass(frozen=True, kw_only=True)
class Step:
    """One offered rate and whether enough of its requests met the limits."""

    rate: float
    passed: bool
    attainment: float


@dataclass(frozen=True, kw_only=True)
class SearchState:
    """Where a search stands: the next rate to offer, or ``done`` with the capacity (``None``: no
    figure, ``reason`` says why) and whether it ended by the rule (``converged``)."""

    next_rate: float | None
    capacity: float | None
    converged: bool
    reason: str


def attainment_of(result: BenchResult) -> float:
    """Share of completed requests that met every limit: goodput / throughput (same duration)."""
    throughput = result.request_throughput
    goodput = result.figures.get("request_goodput", 0.0)
    return 0.0 if throughput <= 0 else min(1.0, goodput / throughput)


def step_of(result: BenchResult, settings: SearchSettings) -> Step:
    """A finished run as a search step, judged against ``settings.attainment``."""
    share = attainment_of(result)
    return Step(rate=result.run.request_rate, passed=share >= settings.attainment, attainment=share)


def next_rate(steps: Sequence[Step], settings: SearchSettings) -> SearchState:
    """The search rule: the next rate to offer after ``steps``, or the search's end and its figure."""
    if not steps:
        start = min(max(settings.start_rate, settings.min_rate), settings.max_rate)
        return SearchState(next_rate=start, capacity=None, converged=False, reason="not started")
    passed = [s.rate for s in steps if s.passed]
    lo = max(passed, default=None)
    hi = min((s.rate for s in steps if not s.passed and (lo is None or s.rate > lo)), default=None)
    if lo is not None and hi is not None and hi / lo <= settings.resolution * (1 + 1e-9):
        return _done(lo, True, f"capacity {lo:.3g} req/s: {hi:.3g} failed")
    if lo is None and hi is not None and hi <= settings.min_rate * (1 + 1e-9):
        return _done(0.0, True, f"the lowest rate, {hi:.3g} req/s, failed the limits")
    if hi is None and lo is not None and lo >= settings.max_rate * (1 - 1e-9):
        return _done(None, False, f"the highest rate, {lo:.3g} req/s, passed: capacity above the search")
    if len(steps) >= settings.max_steps:
        return _done(None, False, f"no bracket within {settings.resolution} after {len(steps)} steps")
    if lo is None:  # down the ladder; the last rung is min_rate itself (not a rate just above it)
        assert hi is not None
        rate = hi / settings.factor
        rate = settings.min_rate if rate < settings.min_rate * settings.factor else rate
    elif hi is None:  # up the ladder, to max_rate at most (passing it ends the search uncensored)
        rate = min(lo * settings.factor, settings.max_rate)
    else:
        rate = math.sqrt(lo * hi)
    return SearchState(next_rate=rate, capacity=None, converged=False, reason="searching")


def _done(capacity: float | None, converged: bool, reason: str) -> SearchState:
    return SearchState(next_rate=None, capacity=capacity, converged=converged, reason=reason)


def step_prompts(num_prompts: int, step_s: float, rate: float) -> int:
    """Prompts of a step at ``rate``: ``step_s`` seconds of arrivals, at least ``num_prompts`` (a fixed
    count would send them all at once at a high enough rate, and every rate above it offer one load)."""
    return max(num_prompts, math.ceil(rate * step_s))


def dithered_start(settings: SearchSettings, anchor: float, repeat: int) -> SearchSettings:
    """``settings`` starting at ``anchor`` offset by a fraction of one ``resolution`` step that differs
    per repeat (golden-ratio sequence), within ``min_rate`` and ``max_rate`` (``pipeline.speed.warm_start``
    says why)."""
    offset = settings.resolution ** (((repeat * GOLDEN) % 1.0) - 0.5)
    start = min(max(anchor * offset, settings.min_rate), settings.max_rate)
    return dataclasses.replace(settings, start_rate=start)


def planned_walk(settings: SearchSettings, capacity: float) -> tuple[tuple[float, ...], SearchState]:
    """The rates one search offers a server whose capacity is ``capacity`` (every rate up to it passes,
    every rate above it fails), and how that search ends: the rule itself, no run."""
    steps: list[Step] = []
    while True:
        state = next_rate(steps, settings)
        if state.next_rate is None:
            return tuple(s.rate for s in steps), state
        passed = state.next_rate <= capacity
        steps.append(Step(rate=state.next_rate, passed=passed, attainment=1.0 if passed else 0.0))


def planned_searches(
    settings: SearchSettings, capacity: float, start: float, repeats: int, first: int = 0
) -> list[tuple[float, ...]]:
    """The rates of ``repeats`` searches (repeats numbered from ``first``) on a server of ``capacity``,
    started as the pipeline starts them (``pipeline.speed.warm_start``): the first at ``start`` (what
    the pipeline knows before any search: BF16's stored capacity for a quantized cell of a kind that
    stores it, else the probe's rate), each later one at the last capacity found above 0, every start
    dithered (``dithered_start``)."""
    walks: list[tuple[float, ...]] = []
    anchor: float | None = None
    for repeat in range(first, first + repeats):
        rates, state = planned_walk(dithered_start(settings, anchor or start, repeat), capacity)
        walks.append(rates)
        if state.converged and state.capacity:
            anchor = state.capacity
    return walks


@dataclass(frozen=True, kw_only=True)
class Search:
    """One search as run: its steps' results, how it ended, and the seconds it took; ``cut`` names why
    it stopped before its rule ended it (time), else ``None``."""

    results: tuple[BenchResult, ...]
    state: SearchState
    seconds: float
    cut: str | None = None


def search_capacity(
    run_step: Callable[[float, int], BenchResult],
    settings: SearchSettings,
    *,
    step_seconds: Callable[[float], float],
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> Search:
    """Run one search: ``run_step(rate, step)`` benches a rate; a step whose estimate
    (``step_seconds(rate)``) would end after ``deadline`` (``clock`` time) is not started, and the search
    is cut there (its figure is dropped by ``capacities``)."""
    started = clock()
    results: list[BenchResult] = []
    while True:
        state = next_rate([step_of(r, settings) for r in results], settings)
        if state.next_rate is None:
            return Search(results=tuple(results), state=state, seconds=clock() - started)
        expected = step_seconds(state.next_rate)
        if clock() + expected > deadline:
            cut = (
                f"cut after {len(results)} steps: the step at {state.next_rate:.3g} req/s "
                f"(~{expected:.0f} s) did not fit the speed budget"
            )
            return Search(results=tuple(results), state=state, seconds=clock() - started, cut=cut)
        results.append(run_step(state.next_rate, len(results)))


def search_state(results: Sequence[BenchResult]) -> SearchState:
    """How the search that ran ``results`` (one repeat's steps, in order) ended, by the same rule."""
    settings = results[0].run.search
    if settings is None:
        raise ValueError(f"run {results[0].run.name} is not a capacity search step")
    state = next_rate([step_of(r, settings) for r in results], settings)
    if state.next_rate is not None:
        return _done(None, False, f"unfinished after {len(results)} steps (cut)")
    return state


def searches(results: Sequence[BenchResult], scenario: str) -> list[list[BenchResult]]:
    """The scenario's search steps grouped per search, in the order they ran: one search per repeat of
    one bench plan (its folder), so a top-up's repeat never joins an earlier plan's."""
    groups: dict[tuple[str, int], list[BenchResult]] = {}
    for result in results:
        if result.run.scenario == scenario and result.run.search is not None:
            key = (str(result.result_path.parent), result.run.repeat)
            groups.setdefault(key, []).append(result)
    return [sorted(group, key=lambda r: r.run.step or 0) for group in groups.values()]


def capacities(results: Sequence[BenchResult], scenario: str) -> tuple[list[float], list[str]]:
    """One capacity (req/s) per search that ended by its rule, and why each other search has none."""
    figures: list[float] = []
    dropped: list[str] = []
    for group in searches(results, scenario):
        state = search_state(group)
        if state.converged and state.capacity is not None:
            figures.append(state.capacity)
        else:
            dropped.append(f"repeat {group[0].run.repeat}: {state.reason}")
    return figures, dropped
