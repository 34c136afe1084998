"""Planning estimates from the published tables (``quantgate.devices.rates``, ``estimate_cell_seconds``)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from quantgate import matrix, paths
from quantgate.catalog import Catalog, load_catalog
from quantgate.devices.durations import (
    BENCH_RUN_OVERHEAD_S,
    estimate_fixed_seconds,
    fixed_prompts,
    search_step_seconds,
)
from quantgate.devices.rates import (
    LATENCY_SLOPES,
    THROUGHPUT_SLOPES,
    Figure,
    PublishedRates,
    fit_prefill,
    interpolate,
    published_rates,
)
from quantgate.kinds import KindSpec, ScenarioLoad, load_kind
from quantgate.matrix import (
    SPEED_TOP_UP_FACTORS,
    SWEEP_SECONDS,
    MatrixCell,
    catalog_cell_seconds,
    estimate_cell_seconds,
    expand,
    gpu_kind,
    planned_capacity,
    planned_cell_seconds,
    published_cell_seconds,
    reference_capacity,
)
from quantgate.published import load_published
from quantgate.runners.capacity import SearchSettings, planned_searches, step_prompts


def figures(*points: tuple[float, float]) -> list[Figure]:
    return [Figure(model=f"m{n}", params_per_gpu_b=x, value=y) for n, (x, y) in enumerate(points)]


def test_interpolation_is_log_log_between_points_and_bounded_outside() -> None:
    points = figures((1.0, 1.0), (4.0, 4.0))
    assert interpolate(points, 2.0, LATENCY_SLOPES) == pytest.approx(2.0)
    assert interpolate(points, 4.0, LATENCY_SLOPES) == pytest.approx(4.0)
    assert interpolate(points, 16.0, (0.0, 0.5)) == pytest.approx(8.0)
    # A throughput rising with size is not extrapolated upwards: the slope is bounded to (-1, 0).
    assert interpolate(points, 16.0, THROUGHPUT_SLOPES) == pytest.approx(4.0)
    assert interpolate(figures((2.0, 10.0)), 4.0, THROUGHPUT_SLOPES) == pytest.approx(5.0)
    assert interpolate(figures((2.0, 10.0)), 4.0, LATENCY_SLOPES) == pytest.approx(20.0)


def test_figures_at_one_size_are_averaged_in_log_space() -> None:
    assert interpolate(figures((2.0, 1.0), (2.0, 4.0)), 2.0, LATENCY_SLOPES) == pytest.approx(2.0)


def test_a_published_figure_is_its_own_estimate_and_held_out_it_is_not() -> None:
    catalog = load_catalog()
    rates = published_rates(catalog)
    published = load_published(paths.published_dir() / "cards-2025-02.json", catalog)
    entry = next(e for e in published.performance if e.metric == "latency_s" and e.model == "Qwen-14B")
    params = catalog.models[entry.model].params_b
    args = (entry.gpu, entry.scheme, entry.workload, params, entry.gpu_count)
    assert rates.latency_s(*args) == pytest.approx(entry.value)
    held_out = rates.without("Qwen-14B").latency_s(*args)
    assert held_out is not None
    assert held_out != pytest.approx(entry.value)
    assert 0.5 < held_out / entry.value < 2.0


def test_kinds_and_schemes_the_cards_did_not_measure_fall_back_to_the_catalog() -> None:
    catalog = load_catalog()
    rates = published_rates(catalog)
    assert rates.has("h100", "int4-w4a16")
    assert not rates.has("h100", "int8-w8a8")
    assert not rates.has("h200", "bf16")
    for cell_id in ("Qwen-7B-int8-w8a8-h100-aime24", "Qwen-7B-bf16-h200-math_500"):
        (cell,) = [c for c in expand(catalog) if c.cell_id == cell_id]
        assert published_cell_seconds(catalog, cell) is None
        assert estimate_cell_seconds(catalog, cell) == catalog_cell_seconds(catalog, cell)


def test_cells_of_measured_kinds_are_timed_with_the_published_rates() -> None:
    catalog = load_catalog()
    cells = {c.cell_id: c for c in expand(catalog)}
    single = cells["Qwen-7B-bf16-a6000-single-stream-multi-turn-chat"]
    latency = published_rates(catalog).latency_s("a6000", "bf16", "multi-turn-chat", 7.62, 1)
    assert latency is not None
    load = load_kind(paths.kind_file("gpu")).speed
    ss = load.scenarios["single-stream"]
    assert ss.duration_s is not None
    prompts = min(ss.num_prompts, max(ss.min_prompts, math.ceil(ss.duration_s * 1 / latency)))
    runs = load.repeats + 1  # and the discarded warm-up run that opens the served model's benches
    one_run = BENCH_RUN_OVERHEAD_S + (prompts + load.warmups) * latency  # one request at a time
    assert estimate_cell_seconds(catalog, single) == pytest.approx(runs * one_run)
    # The cards measured the A6000 decoding far slower than the catalog's one rate assumes.
    slow = cells["Qwen-7B-bf16-a6000-math_500"]
    assert estimate_cell_seconds(catalog, slow) > 1.2 * catalog_cell_seconds(catalog, slow)
    assert all(math.isfinite(estimate_cell_seconds(catalog, c)) for c in cells.values())


def test_empty_tables_know_nothing() -> None:
    rates = PublishedRates({})
    assert not rates.has("h100", "bf16")
    assert rates.tokens_per_s("h100", "bf16", "rag", 8.0, 1) is None


SHAPES = {
    "short": (256, 128),
    "mid": (768, 128),
    "long": (1024, 128),
    "gen": (256, 1024),
    "fix": (1024, 1024),
}


def rounded_latencies(rate: float, decode_s: float = 0.05) -> dict[str, list[Figure]]:
    """Single-stream latencies as the cards print them (0.1 s) for a true prefill ``rate``; the
    1,024-token outputs also slow down with the prompt (decoding over a longer context)."""
    out: dict[str, list[Figure]] = {}
    for workload, (prompt, output) in SHAPES.items():
        figures = []
        for model, x in (("a", 1.8), ("b", 7.6), ("c", 16.4), ("d", 35.3)):
            seconds = output * decode_s * x**0.5 + rate * x * prompt
            if output > 128:
                seconds += 4 * rate * x * prompt
            figures.append(Figure(model=model, params_per_gpu_b=x, value=round(seconds, 1)))
        out[workload] = figures
    return out


def test_the_prefill_rate_is_fitted_on_the_shortest_outputs_through_the_rounding() -> None:
    fit = fit_prefill(rounded_latencies(2.0e-5), SHAPES)
    assert fit is not None
    assert fit.rate == pytest.approx(2.0e-5, rel=0.1)
    assert 0 < fit.stderr < 0.3 * fit.rate
    assert fit.figures == 12  # three workloads of 128 output tokens, four models
    assert fit_prefill(rounded_latencies(4.0e-5), SHAPES).rate > 1.8 * fit.rate  # type: ignore[union-attr]


def test_a_prefill_rate_needs_two_prompt_lengths_and_a_rising_latency() -> None:
    latencies = rounded_latencies(2.0e-5)
    assert fit_prefill({k: v for k, v in latencies.items() if k in ("short", "gen")}, SHAPES) is None
    flat = {k: [replace(f, value=1.0) for f in v] for k, v in latencies.items()}
    assert fit_prefill(flat, SHAPES) is None
    assert fit_prefill(latencies, {}) is None


def test_the_cards_prefill_rates() -> None:
    """Llama-70B BF16 on 4x A6000 prefills large-rag's 10,240 tokens in ~3.6 s (the kind file's TTFT limit
    is 2 s), Qwen-7B BF16 on one H100 in ~0.4 s; a lower bound is lower; unmeasured kinds know none."""
    rates = published_rates(load_catalog())
    a6000 = rates.prefill_s("a6000", "bf16", 10_240, 70.6, 4)
    assert a6000 == pytest.approx(3.6, abs=0.1)
    low = rates.prefill_s("a6000", "bf16", 10_240, 70.6, 4, z=1.645)
    assert low is not None
    assert 2.0 < low < a6000
    assert rates.prefill_s("a6000", "bf16", 10_240, 70.6, 8) == pytest.approx(a6000 / 2)
    assert rates.prefill_s("h100", "bf16", 10_240, 7.62, 1) == pytest.approx(0.37, abs=0.05)
    assert rates.prefill_s("h200", "bf16", 10_240, 7.62, 1) is None
    assert rates.without("Qwen-14B").prefill_s("a6000", "bf16", 10_240, 70.6, 4) is not None


def test_tables_that_do_not_match_the_catalog_give_no_rates(tmp_path: Path) -> None:
    """A toy catalog (tests, forks) plans with the catalog's model instead of failing on the tables."""
    catalog = load_catalog()
    toy = replace(catalog, models={k: v for k, v in catalog.models.items() if k != "Qwen-14B"})
    assert not published_rates(toy).has("h100", "bf16")
    assert published_rates(catalog).has("h100", "bf16")


def test_plans_count_a_quantized_speed_cells_usual_top_ups() -> None:
    """Plans (and so shards and replicas) count top-ups; the first look's estimate (timeouts) does not."""
    from quantgate.matrix import SPEED_TOP_UP_FACTORS, planned_cell_seconds

    catalog = load_catalog()
    cells = {c.cell_id: c for c in expand(catalog)}
    speed = cells["Qwen-7B-int4-w4a16-h100-single-stream-rag"]
    assert planned_cell_seconds(catalog, speed) == pytest.approx(
        SPEED_TOP_UP_FACTORS["h100"] * estimate_cell_seconds(catalog, speed)
    )
    for cell_id in ("Qwen-7B-bf16-h100-single-stream-rag", "Qwen-7B-int4-w4a16-h100-aime24"):
        assert planned_cell_seconds(catalog, cells[cell_id]) == estimate_cell_seconds(catalog, cells[cell_id])


# --------------------------------------------------------------------------------------------------
# A capacity-searched scenario (the GPU kind file's server search) is planned as its searches' steps.
# --------------------------------------------------------------------------------------------------

SEARCHED = (
    "Qwen-7B-int4-w4a16-h100-server-multi-turn-chat",  # published rates, ~9 req/s at 512/256
    "Llama-70B-bf16-a6000-server-large-rag",  # published rates, the cards' lowest max QPS (0.05)
    "Qwen-14B-int8-w8a8-h100-server-code-fixing",  # H100 INT8: the catalog's model
    "Qwen-1.5B-fp8-w8a8-h200-server-instruction-following",  # H200: the catalog's model, ~200 req/s
)


def gpu_variant(
    spec: KindSpec, *, repeats: int | None = None, num_prompts: int | None = None, **search: float
) -> KindSpec:
    """The GPU kind file with its server load's search (and repeats, floor of prompts) changed."""
    load = spec.speed.scenarios["server"]
    assert load.search is not None
    changed = load.model_copy(
        update={
            "search": load.search.model_copy(update=search),
            "num_prompts": num_prompts or load.num_prompts,
        }
    )
    speed = spec.speed.model_copy(
        update={
            "scenarios": {**spec.speed.scenarios, "server": changed},
            "repeats": repeats or spec.speed.repeats,
        }
    )
    return spec.model_copy(update={"speed": speed})


def searched_estimates(catalog: Catalog) -> list[float]:
    cells = {c.cell_id: c for c in expand(catalog)}
    return [estimate_cell_seconds(catalog, cells[cell_id]) for cell_id in SEARCHED]


def walked_seconds(spec: KindSpec, capacity: float, start: float, output: int) -> tuple[float, list[int]]:
    """Seconds of the kind's first-look searches on a server of ``capacity`` req/s, the first started at
    ``start`` (each step its arrivals or backlog and its drain at the limits), and their step counts."""
    load = spec.speed.scenarios["server"]
    search, goodput = load.search, load.goodput
    assert search is not None
    assert goodput is not None
    walks = planned_searches(
        SearchSettings(start_rate=start, **search.model_dump(exclude={"start_rate", "step_s"})),
        capacity,
        start,
        spec.speed.repeats,
    )
    drain = (goodput.ttft_ms + output * goodput.tpot_ms) / 1000
    seconds = sum(
        search_step_seconds(rate, capacity, step_prompts(load.num_prompts, search.step_s, rate), drain)
        for walk in walks
        for rate in walk
    )
    return seconds, [len(walk) for walk in walks]


def searched_cell(catalog: Catalog, cell_id: str) -> MatrixCell:
    (cell,) = [c for c in expand(catalog) if c.cell_id == cell_id]
    return cell


def test_a_searched_server_cell_is_planned_as_its_searches_steps() -> None:
    """The first look of a quantized server cell is the kind's repeats of searches on a server of the
    cards' max QPS, the first started where the pipeline starts it, at BF16's capacity (the kind stores
    BF16's figures; Qwen-7B is served on one H100 in both), each step its arrivals (or backlog) and its
    drain: ~3 steps a search, where the probe's rate (8 streams alone) laddered up 6."""
    catalog = load_catalog()
    spec = gpu_kind(catalog)
    assert spec is not None
    assert spec.speed.reference == "stored"
    cell = searched_cell(catalog, SEARCHED[0])
    rates = published_rates(catalog)
    tps = rates.tokens_per_s("h100", "int4-w4a16", "multi-turn-chat", 7.62, 1)
    bf16_tps = rates.tokens_per_s("h100", "bf16", "multi-turn-chat", 7.62, 1)
    latency = rates.latency_s("h100", "int4-w4a16", "multi-turn-chat", 7.62, 1)
    assert tps is not None
    assert bf16_tps is not None
    assert latency is not None
    capacity, bf16_capacity, probed = tps / 256, bf16_tps / 256, spec.accuracy.concurrency / latency
    assert reference_capacity(catalog, cell, spec) == pytest.approx(bf16_capacity)
    expected, steps = walked_seconds(spec, capacity, bf16_capacity, 256)
    assert len(steps) == spec.speed.repeats == 3
    assert steps == [3, 3, 3], "from BF16's capacity, as from the last one: that rate, a rung, a bisection"
    assert estimate_cell_seconds(catalog, cell) == pytest.approx(expected)
    assert planned_cell_seconds(catalog, cell) == pytest.approx(SPEED_TOP_UP_FACTORS["h100"] * expected)
    from_probe, probe_steps = walked_seconds(spec, capacity, probed, 256)
    assert probe_steps[0] > steps[0] + 2
    assert from_probe > expected


def test_a_bf16_server_cell_starts_its_first_search_at_the_probes_rate() -> None:
    """BF16 is the reference, measured before anything is known of its server: its first search starts
    at the probe's rate (the kind's accuracy streams, each at one request's pace alone)."""
    catalog = load_catalog()
    spec = gpu_kind(catalog)
    assert spec is not None
    cell = searched_cell(catalog, SEARCHED[1])
    rates = published_rates(catalog)
    gpus = cell.requirement.count
    tps = rates.tokens_per_s("a6000", "bf16", "large-rag", 70.6, gpus)
    latency = rates.latency_s("a6000", "bf16", "large-rag", 70.6, gpus)
    assert tps is not None
    assert latency is not None
    assert reference_capacity(catalog, cell, spec) is None
    streams = spec.accuracy.concurrency * (spec.accuracy.first_samples or 1)
    assert planned_capacity(catalog, cell) == pytest.approx(tps / 1536)
    expected, _ = walked_seconds(spec, tps / 1536, streams / latency, 1536)
    assert estimate_cell_seconds(catalog, cell) == pytest.approx(expected)


def test_a_quantized_cell_on_fewer_gpus_starts_at_bf16s_capacity_per_gpu() -> None:
    """BF16's figure is its whole server's: 70B BF16 on four H100, 70B INT4 on one. The first search
    starts at BF16's planned capacity (the one BF16's own cell is planned on) times 1/4, the same
    throughput per GPU, as the pipeline starts it from the stored figures and their GPUs."""
    catalog = load_catalog()
    spec = gpu_kind(catalog)
    assert spec is not None
    int4 = searched_cell(catalog, "Llama-70B-int4-w4a16-h100-server-rag")
    bf16 = searched_cell(catalog, "Llama-70B-bf16-h100-server-rag")
    assert (int4.requirement.count, bf16.requirement.count) == (1, 4)
    start = reference_capacity(catalog, int4, spec)
    assert start == pytest.approx(planned_capacity(catalog, bf16) / 4)
    output = catalog.workload("rag").output_tokens
    expected, _ = walked_seconds(spec, planned_capacity(catalog, int4), start, output)
    assert estimate_cell_seconds(catalog, int4) == pytest.approx(expected)
    whole, _ = walked_seconds(spec, planned_capacity(catalog, int4), 4 * start, output)
    assert whole > expected, "whole-server parity would start 4x higher, through overloaded steps"


def test_without_stored_bf16_figures_a_quantized_cell_plans_its_first_search_from_the_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kind that measures BF16 in the session (``reference: session``, as the cpu kind) has no stored
    capacity before the cell's searches: the plans start them at the probe's rate, as the pipeline."""
    catalog = load_catalog()
    spec = gpu_kind(catalog)
    assert spec is not None
    cell = searched_cell(catalog, SEARCHED[0])
    stored = estimate_cell_seconds(catalog, cell)
    session = spec.model_copy(update={"speed": spec.speed.model_copy(update={"reference": "session"})})
    monkeypatch.setattr(matrix, "gpu_kind", lambda _: session)
    assert reference_capacity(catalog, cell, session) is None
    rates = published_rates(catalog)
    latency = rates.latency_s("h100", "int4-w4a16", "multi-turn-chat", 7.62, 1)
    assert latency is not None
    streams = session.accuracy.concurrency * (session.accuracy.first_samples or 1)
    expected, _ = walked_seconds(session, planned_capacity(catalog, cell), streams / latency, 256)
    assert estimate_cell_seconds(catalog, cell) == pytest.approx(expected)
    assert expected > stored


@pytest.mark.parametrize(
    "change",
    [
        {"repeats": 6},
        {"step_s": 60.0},
        {"resolution": 1.1},
        {"num_prompts": 80},
    ],
    ids=["repeats", "step_s", "resolution", "num_prompts"],
)
def test_the_estimate_grows_with_the_search(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, float]
) -> None:
    """More searches, longer steps, a finer bracket or more prompts a step: never less planned time for
    any searched cell, and more in all of them together."""
    catalog = load_catalog()
    spec = gpu_kind(catalog)
    assert spec is not None
    before = searched_estimates(catalog)
    variant = gpu_variant(spec, **change)  # type: ignore[arg-type]
    monkeypatch.setattr(matrix, "gpu_kind", lambda _: variant)
    after = searched_estimates(catalog)
    assert all(a >= b for a, b in zip(after, before, strict=True)), (before, after)
    assert sum(after) > 1.05 * sum(before), (before, after)
    if "repeats" in change:
        assert all(a > 1.5 * b for a, b in zip(after, before, strict=True)), "each repeat is a search"


def test_without_a_search_the_server_scenario_keeps_the_fixed_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = load_catalog()
    assert all(seconds != SWEEP_SECONDS for seconds in searched_estimates(catalog))
    monkeypatch.setattr(matrix, "gpu_kind", lambda _: None)
    assert searched_estimates(catalog) == [SWEEP_SECONDS] * len(SEARCHED)
    toy = replace(catalog, gpus={k: v for k, v in catalog.gpus.items() if k != "l40s"})
    monkeypatch.undo()
    assert gpu_kind(toy) is None, "a kind file that is not the catalog's plans without its searches"


def test_a_fixed_load_is_sized_by_time_within_its_counts_and_timed_as_the_tool_sends_it() -> None:
    load = ScenarioLoad(num_prompts=512, min_prompts=16, duration_s=90.0)
    assert fixed_prompts(load, 10.0) == 512
    assert fixed_prompts(load, 0.34) == 31  # ceil(90 x 0.34)
    assert fixed_prompts(load, 0.01) == 16
    assert fixed_prompts(ScenarioLoad(num_prompts=64), 0.01) == 64  # no duration_s: the count
    with pytest.raises(ValueError, match="requests_per_s"):
        fixed_prompts(load, 0.0)
    # all at once: prompts over capacity, the last request's own latency, the warm-ups' together
    assert estimate_fixed_seconds(31, 1, 60.0, 0.34, runs=3) == pytest.approx(
        3 * (BENCH_RUN_OVERHEAD_S + 31 / 0.34 + 60.0 + 60.0)
    )
    assert estimate_fixed_seconds(8, 1, 60.0, 0.34, max_concurrency=1, runs=4) == pytest.approx(
        4 * (BENCH_RUN_OVERHEAD_S + 9 * 60.0)
    )
    # four at a time, but no faster than the server's capacity, nor than the arrivals
    four = {"max_concurrency": 4}
    assert estimate_fixed_seconds(32, 0, 1.0, 100.0, **four) == pytest.approx(BENCH_RUN_OVERHEAD_S + 8)
    assert estimate_fixed_seconds(32, 0, 1.0, 2.0, **four) == pytest.approx(BENCH_RUN_OVERHEAD_S + 16)
    assert estimate_fixed_seconds(32, 0, 1.0, 100.0, max_concurrency=4, request_rate=1.0) == pytest.approx(
        BENCH_RUN_OVERHEAD_S + 32
    )
    assert estimate_fixed_seconds(32, 0, 1.0, 100.0, request_rate=math.inf) == pytest.approx(
        BENCH_RUN_OVERHEAD_S + 0.32 + 1.0
    )
    # a fixed request rate bounds the prompts a duration sizes
    paced = ScenarioLoad(num_prompts=512, duration_s=90.0, request_rate=2.0)
    assert fixed_prompts(paced, 10.0) == 180
