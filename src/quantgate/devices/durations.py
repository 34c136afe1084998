"""Durations of cells and served-model start-ups: learned from earlier runs, kept in a versioned file.

``.quantgate/durations.json`` (``quantgate-durations``) holds each cell's measured seconds (the sum of its
tests' calls) and each served model's start-up; placement plans with them, and a cell never run falls
back to ``quantgate.matrix.estimate_cell_seconds``, which times a capacity-searched scenario with
``estimate_search_seconds`` here and a fixed load's runs with ``estimate_fixed_seconds``.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from quantgate.datafile import Strict, atomic_write_text, load_model
from quantgate.kinds import ScenarioLoad
from quantgate.runners.capacity import SearchSettings, planned_searches, step_prompts

DURATIONS_SCHEMA_VERSION = 1
DURATIONS_KIND = "quantgate-durations"
DEFAULT_DURATIONS_PATH = Path(".quantgate") / "durations.json"

# Default estimate (see estimate_cell_seconds). Deliberately crude: one measured run replaces it.
STARTUP_BASE_S = 90.0
LOAD_GIB_PER_S = 1.0

NonNegative = Annotated[float, Field(ge=0)]

# A bench run (a search's step or a fixed load's run) besides its requests: the bench worker starts the
# run and writes its file.
BENCH_RUN_OVERHEAD_S = 5.0


class _DurationsFile(Strict):
    schema_version: int
    kind: Literal["quantgate-durations"]
    cells: dict[str, NonNegative]
    served_models: dict[str, NonNegative]


@dataclass
class Durations:
    """Learned seconds: per cell id (the test call) and per served model (its start-up)."""

    cells: dict[str, float] = field(default_factory=dict)
    served_models: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> str:
        doc = {
            "schema_version": DURATIONS_SCHEMA_VERSION,
            "kind": DURATIONS_KIND,
            "cells": {k: round(v, 3) for k, v in sorted(self.cells.items())},
            "served_models": {k: round(v, 3) for k, v in sorted(self.served_models.items())},
        }
        return json.dumps(doc, indent=1) + "\n"


def load_durations(path: str | Path) -> Durations:
    """Read a durations file; a missing file is empty, a bad one a ``QuantgateError``."""
    if not Path(path).exists():
        return Durations()
    doc = load_model(_DurationsFile, path, DURATIONS_KIND, DURATIONS_SCHEMA_VERSION)
    return Durations(dict(doc.cells), dict(doc.served_models))


def save_durations(path: str | Path, durations: Durations) -> None:
    """Write atomically (readers see the old file or the new one)."""
    atomic_write_text(path, durations.as_json())


def estimate_startup_seconds(weights_gb: float) -> float:
    """Start-up of a served model: 90 s (engine, CUDA graphs, compilation) + 1 s per GiB of weights."""
    return STARTUP_BASE_S + weights_gb / LOAD_GIB_PER_S


@functools.lru_cache(maxsize=4096)  # plans ask again for every cell; the rule's walk is the cost
def estimate_search_seconds(
    load: ScenarioLoad,
    capacity: float,
    probed: float,
    output_tokens: int,
    repeats: int,
    reference: float | None = None,
) -> float:
    """Seconds of ``repeats`` capacity searches of ``load`` (its ``search`` block) on a server whose
    capacity is ``capacity`` req/s, for requests of ``output_tokens``: the steps the rule walks
    (``runners.capacity.planned_searches``), each timed by ``search_step_seconds``. The first search
    starts where the pipeline starts it (``pipeline.speed.SpeedStage.first_anchor``): at ``reference``
    req/s where given (BF16's capacity, which a quantized cell of a kind storing BF16's speed figures
    starts from), else at the kind's ``start_rate``, else at ``probed`` req/s (the pipeline's probe).

    Why walk the rule instead of a fixed cost per scenario: a search's cost is its number of steps times
    their length, and both follow from the settings and the server (steps of ``step_s`` seconds of
    arrivals on a fast server; ``num_prompts`` requests spread over minutes on a slow one; a ladder from
    the probe's rate for a first search without a reference, ~3 steps from a known capacity)."""
    search = load.search
    if search is None or load.goodput is None:
        raise ValueError("estimate_search_seconds needs a load with a search block and goodput limits")
    start = reference or search.start_rate or probed
    settings = SearchSettings(start_rate=start, **search.model_dump(exclude={"start_rate", "step_s"}))
    drain_s = (load.goodput.ttft_ms + output_tokens * load.goodput.tpot_ms) / 1000
    return sum(
        search_step_seconds(rate, capacity, step_prompts(load.num_prompts, search.step_s, rate), drain_s)
        for walk in planned_searches(settings, capacity, start, repeats)
        for rate in walk
    )


def search_step_seconds(rate: float, capacity: float, prompts: int, drain_s: float) -> float:
    """One search step: ``prompts`` Poisson arrivals at ``rate`` req/s (above ``capacity`` the server
    serves the backlog at its capacity instead), then the last request's own duration ``drain_s`` (the
    tool waits for every request; at the limits, TTFT + output tokens x TPOT), plus the run's overhead."""
    if not (rate > 0 and capacity > 0):
        raise ValueError(f"rate and capacity must be > 0 req/s, got {rate!r} and {capacity!r}")
    return BENCH_RUN_OVERHEAD_S + max(prompts / rate, prompts / capacity) + drain_s


def fixed_prompts(load: ScenarioLoad, requests_per_s: float) -> int:
    """Prompts of one run of a fixed load: with ``duration_s``, those a server finishing
    ``requests_per_s`` (at most the load's ``request_rate``) serves in that time, at least
    ``min_prompts`` and at most ``num_prompts``; else ``num_prompts``.

    Why: a count sized for a fast server is hours on a slow one (512 large-RAG requests are ~14 s of a
    7B model on an H100 and ~80 min of a 70B on four A6000s at the cards' throughputs)."""
    if load.duration_s is None:
        return load.num_prompts
    if not requests_per_s > 0:
        raise ValueError(f"requests_per_s must be > 0, got {requests_per_s!r}")
    rate = min(requests_per_s, load.request_rate or math.inf)
    wanted = math.ceil(load.duration_s * rate)
    return max(load.min_prompts, min(load.num_prompts, wanted))


def estimate_fixed_seconds(
    prompts: int,
    warmups: int,
    latency_s: float,
    capacity: float,
    *,
    max_concurrency: int | None = None,
    request_rate: float | None = None,
    runs: int = 1,
) -> float:
    """Seconds of ``runs`` runs of ``prompts`` requests, each run opened by ``warmups`` warm-up
    requests, as ``vllm bench serve`` sends them: the warm-ups at most ``max_concurrency`` at once, then
    the requests arriving at ``request_rate`` (``None`` or infinite: all at once), at most
    ``max_concurrency`` in flight. A request alone takes ``latency_s``; the server finishes at most
    ``capacity`` req/s. So: waves of ``max_concurrency`` requests of ``latency_s`` each, but no faster
    than the capacity or the arrivals; without a concurrency limit the prompts at the capacity or the
    arrival rate, the last request's own ``latency_s`` at the end (and once for the warm-ups); plus the
    run's overhead."""
    if not (latency_s > 0 and capacity > 0):
        raise ValueError(f"latency_s and capacity must be > 0, got {latency_s!r} and {capacity!r}")
    arrivals = prompts / request_rate if request_rate and math.isfinite(request_rate) else 0.0
    if max_concurrency is None:
        work = max(prompts / capacity, arrivals) + latency_s + (latency_s if warmups else 0.0)
    else:
        waves = math.ceil(prompts / max_concurrency) + math.ceil(warmups / max_concurrency)
        work = max(waves * latency_s, (prompts + warmups) / capacity, arrivals)
    return runs * (BENCH_RUN_OVERHEAD_S + work)
