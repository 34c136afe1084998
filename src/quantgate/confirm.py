"""Confirmation: a failing verdict stands only when a fresh measurement fails too.

Why: a nightly gates hundreds of cells. At a per-cell false-fail rate of 0.6 % (AIME-like accuracy) or
5 % (a speed cell at its floor), a night in which nothing changed is red more often than not, and a gate
that is red on noise gets switched off. A truly worse cell fails again on fresh data (new seeds, a fresh
bench run); a cell that failed by chance rarely does twice, so requiring both cuts the false red rate
by roughly the second look's error rate while keeping most of the power
(``benchmarks/nightly_noise.py`` measures both over whole simulated nightlies).

The confirmation is judged alone, against the same reference and floor, so it is a second independent
test of the candidate (the shared reference is the only tie between them, and the simulation keeps it).
A fail that is not confirmed becomes ``inconclusive`` (the night's gate then accepts the cell only on a
recent green verdict, ``quantgate.gate``); its detail shows both looks. Pure.
"""

from __future__ import annotations

import dataclasses
from typing import overload

from quantgate.judge import Verdict
from quantgate.speedjudge import SpeedVerdict

# One-sided level at which the fresh data must fail too. Strict because the first look and the
# confirmation share the stored reference, whose error no fresh draw of the candidate removes: at 0.95
# and 0.99 whole simulated nightlies were red 22 % and 12 % of nights, at 0.999 under 1 %, with every
# 10 % loss still red within two nights (benchmarks/nightly_noise.py).
CONFIRMATION_CONFIDENCE = 0.999


def needs_confirmation(verdict: Verdict | SpeedVerdict) -> bool:
    return verdict.verdict == "fail"


@overload
def confirmed(first: Verdict, again: Verdict | None, why_not: str = ...) -> Verdict: ...
@overload
def confirmed(first: SpeedVerdict, again: SpeedVerdict | None, why_not: str = ...) -> SpeedVerdict: ...
def confirmed(
    first: Verdict | SpeedVerdict,
    again: Verdict | SpeedVerdict | None,
    why_not: str = "no confirmation was run",
) -> Verdict | SpeedVerdict:
    """``first`` when it did not fail; a fail only when ``again`` (fresh data) fails as well.

    ``again`` is ``None`` when no confirmation could be run (``why_not`` says why: a time budget, a
    failed bench); the fail is then unconfirmed, and inconclusive, like any other.
    """
    if not needs_confirmation(first):
        return first
    if again is not None and again.verdict == "fail":
        return dataclasses.replace(first, detail=f"{first.detail}; confirmed on fresh data: {again.detail}")
    second = f"fresh data: {again.detail}" if again is not None else why_not
    detail = f"inconclusive: an unconfirmed fail ({first.detail}); {second}"
    if isinstance(first, Verdict):
        return dataclasses.replace(first, verdict="inconclusive", more_samples=0, detail=detail)
    return dataclasses.replace(first, verdict="inconclusive", detail=detail)
