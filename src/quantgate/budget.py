"""Size a cell's work to its time budget from measured rates, and say what was cut and why.

Why: a cell sized by fixed counts holds on the host it was tuned on only. Here the counts follow from
the cell's budget (seconds) and the server's measured generation rate (``runners.probe``): an
evaluation look keeps every item when it fits and otherwise the first items of the (shuffled) item
list, never fewer than ``min_items``; a top-up is drawn only when the looks so far say it fits in what
is left; a bench plan keeps as many repeats as fit, never fewer than two (the speed judge needs two
per side). Whatever is cut is a ``Cut`` with a one-line reason for the report; a cell that cannot be
decided in its budget is informational, never a pass.

Pure arithmetic; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Cut:
    """What a budget took away from a cell, and why, in one line."""

    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


class OverBudget(Exception):
    """A cell's step cannot be done in its budget at all; ``cut`` says what and why."""

    def __init__(self, cut: Cut) -> None:
        super().__init__(str(cut))
        self.cut = cut


@dataclass(frozen=True)
class LookSize:
    """How many items the first look evaluates; ``cut`` says why fewer than all (or none)."""

    items: int
    seconds: float
    cut: Cut | None = None


def estimate_look_seconds(
    items: int, samples: int, tokens_per_sample: float, tokens_per_s: float, overhead_s: float
) -> float:
    """Seconds for ``items`` x ``samples`` generations of ``tokens_per_sample`` at ``tokens_per_s``."""
    return overhead_s + items * samples * max(tokens_per_sample, 1.0) / max(tokens_per_s, 1e-9)


def size_first_look(
    total_items: int,
    samples: int,
    tokens_per_sample: float,
    tokens_per_s: float,
    budget_s: float,
    *,
    min_items: int,
    overhead_s: float,
    share: float = 0.5,
) -> LookSize:
    """The first look's items: all if the look fits in ``share`` of the budget, else as many as fit.

    Top-ups need the rest of the budget, hence ``share``. Below ``min_items`` nothing is evaluated
    (``items`` 0): so few items cannot decide a recovery floor.
    """
    allowed = budget_s * share
    full = estimate_look_seconds(total_items, samples, tokens_per_sample, tokens_per_s, overhead_s)
    if full <= allowed:
        return LookSize(total_items, full)
    per_item = samples * max(tokens_per_sample, 1.0) / max(tokens_per_s, 1e-9)
    fit = max(0, math.floor((allowed - overhead_s) / per_item))
    rate = f"{tokens_per_s:.1f} tokens/s"
    if fit < min_items:
        need = estimate_look_seconds(min_items, samples, tokens_per_sample, tokens_per_s, overhead_s)
        return LookSize(
            0,
            0.0,
            Cut(
                "accuracy not evaluated",
                f"{min_items} items x {samples} samples need ~{need:.0f} s at {rate}; "
                f"the cell's budget allows {allowed:.0f} s for a first look",
            ),
        )
    seconds = estimate_look_seconds(fit, samples, tokens_per_sample, tokens_per_s, overhead_s)
    return LookSize(
        fit,
        seconds,
        Cut(
            f"{fit} of {total_items} items",
            f"all items need ~{full:.0f} s at {rate}; the budget allows {allowed:.0f} s for a first look",
        ),
    )


def top_up_fits(samples: int, items: int, seconds_per_item_sample: float, left_s: float) -> bool:
    """Whether a top-up of ``samples`` per item fits in ``left_s``, at the looks' measured pace."""
    return samples * items * seconds_per_item_sample <= left_s


@dataclass(frozen=True)
class BenchSize:
    """Repeats of a bench plan that fit; ``cut`` says why fewer than asked (0: not benched)."""

    repeats: int
    repeat_s: float
    cut: Cut | None = None


def estimate_run_seconds(
    num_prompts: int,
    output_len: int,
    *,
    single_stream: bool,
    request_rate: float,
    single_tps: float,
    batch_tps: float,
    overhead_s: float,
) -> float:
    """One ``vllm bench serve`` run: one request at a time, or all in flight (arrivals bound it too)."""
    if single_stream:
        work = num_prompts * output_len / max(single_tps, 1e-9)
    else:
        work = num_prompts * output_len / max(batch_tps, 1e-9)
    arrivals = num_prompts / request_rate if math.isfinite(request_rate) else 0.0
    return overhead_s + max(work, arrivals)


def size_bench(asked: int, repeat_s: float, warm_s: float, budget_s: float, rate_detail: str) -> BenchSize:
    """Repeats that fit: ``warm_s`` (the discarded warm-up) plus ``repeats`` x ``repeat_s``."""
    if not math.isfinite(budget_s) or repeat_s <= 0 or warm_s + asked * repeat_s <= budget_s:
        return BenchSize(asked, repeat_s)
    fit = math.floor(max(budget_s - warm_s, 0.0) / repeat_s)
    if fit >= asked:
        return BenchSize(asked, repeat_s)
    if fit < 2:
        return BenchSize(
            0,
            repeat_s,
            Cut(
                "speed not measured",
                f"two repeats need ~{warm_s + 2 * repeat_s:.0f} s (server: {rate_detail}); "
                f"the budget is {budget_s:.0f} s",
            ),
        )
    return BenchSize(
        fit,
        repeat_s,
        Cut(
            f"{fit} of {asked} repeats",
            f"one repeat needs ~{repeat_s:.0f} s (server: {rate_detail}); the budget is {budget_s:.0f} s",
        ),
    )
