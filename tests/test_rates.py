"""Planning estimates from the published tables (``quantgate.devices.rates``, ``estimate_cell_seconds``)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from quantgate import matrix, paths
from quantgate.catalog import Catalog, load_catalog
from quantgate.devices.durations import search_step_seconds
from quantgate.devices.rates import (
    LATENCY_SLOPES,
    THROUGHPUT_SLOPES,
    Figure,
    PublishedRates,
    interpolate,
    published_rates,
)
from quantgate.kinds import KindSpec
from quantgate.matrix import (
    SINGLE_STREAM_REQUESTS,
    SPEED_TOP_UP_FACTORS,
    SWEEP_SECONDS,
    catalog_cell_seconds,
    estimate_cell_seconds,
    expand,
    gpu_kind,
    planned_cell_seconds,
    published_cell_seconds,
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
    assert estimate_cell_seconds(catalog, single) == pytest.approx(SINGLE_STREAM_REQUESTS * latency)
    # The cards measured the A6000 decoding far slower than the catalog's one rate assumes.
    slow = cells["Qwen-7B-bf16-a6000-math_500"]
    assert estimate_cell_seconds(catalog, slow) > 1.2 * catalog_cell_seconds(catalog, slow)
    assert all(math.isfinite(estimate_cell_seconds(catalog, c)) for c in cells.values())


def test_empty_tables_know_nothing() -> None:
    rates = PublishedRates({})
    assert not rates.has("h100", "bf16")
    assert rates.tokens_per_s("h100", "bf16", "rag", 8.0, 1) is None


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


def test_a_searched_server_cell_is_planned_as_its_searches_steps() -> None:
    """The first look of a server cell is the kind's repeats of searches on a server of the cards' max
    QPS, the first started at the probe's rate, each step its arrivals (or backlog) and its drain."""
    catalog = load_catalog()
    spec = gpu_kind(catalog)
    assert spec is not None
    load = spec.speed.scenarios["server"]
    search, goodput = load.search, load.goodput
    assert search is not None
    assert goodput is not None
    (cell,) = [c for c in expand(catalog) if c.cell_id == SEARCHED[0]]
    rates = published_rates(catalog)
    tps = rates.tokens_per_s("h100", "int4-w4a16", "multi-turn-chat", 7.62, 1)
    latency = rates.latency_s("h100", "int4-w4a16", "multi-turn-chat", 7.62, 1)
    assert tps is not None
    assert latency is not None
    capacity, probed = tps / 256, spec.accuracy.concurrency / latency
    walks = planned_searches(
        SearchSettings(start_rate=probed, **search.model_dump(exclude={"start_rate", "step_s"})),
        capacity,
        probed,
        spec.speed.repeats,
    )
    drain = (goodput.ttft_ms + 256 * goodput.tpot_ms) / 1000
    expected = sum(
        search_step_seconds(rate, capacity, step_prompts(load.num_prompts, search.step_s, rate), drain)
        for walk in walks
        for rate in walk
    )
    assert len(walks) == spec.speed.repeats == 3
    assert sum(len(walk) for walk in walks) >= 3 * 3, "at least 3 steps a search"
    assert estimate_cell_seconds(catalog, cell) == pytest.approx(expected)
    assert expected > SWEEP_SECONDS, "a search costs more than the fixed sweep the plans assumed"
    assert planned_cell_seconds(catalog, cell) == pytest.approx(SPEED_TOP_UP_FACTORS["h100"] * expected)


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
