"""Cell budgets: work sized from measured rates, every cut named with its reason."""

from __future__ import annotations

import math

from quantgate.budget import estimate_run_seconds, size_bench, size_first_look, top_up_fits


def test_a_look_that_fits_keeps_every_item() -> None:
    size = size_first_look(200, 8, 12.0, 2000.0, 60.0, min_items=40, overhead_s=4.0)
    assert size.items == 200
    assert size.cut is None
    assert math.isclose(size.seconds, 4.0 + 200 * 8 * 12.0 / 2000.0)


def test_a_slow_server_gets_the_items_that_fit_in_half_the_budget() -> None:
    size = size_first_look(200, 8, 12.0, 100.0, 60.0, min_items=40, overhead_s=4.0)
    # (30 s - 4 s) / (8 * 12 / 100 s per item) = 27.08 -> below 40: nothing
    assert size.items == 0
    assert size.cut is not None
    assert size.cut.what == "accuracy not evaluated"
    assert "40 items x 8 samples need ~42 s at 100.0 tokens/s" in size.cut.reason
    size = size_first_look(200, 8, 12.0, 200.0, 60.0, min_items=40, overhead_s=4.0)
    assert size.items == 54  # (30 - 4) / 0.48
    assert size.cut is not None
    assert str(size.cut).startswith("54 of 200 items: all items need ~100 s")
    assert size.seconds <= 30.0


def test_an_unbounded_budget_never_cuts() -> None:
    size = size_first_look(200, 8, 12.0, 0.5, math.inf, min_items=40, overhead_s=4.0)
    assert (size.items, size.cut) == (200, None)
    bench = size_bench(3, 1e6, 1e6, math.inf, "slow")
    assert (bench.repeats, bench.cut) == (3, None)


def test_a_top_up_is_drawn_only_when_it_fits_at_the_measured_pace() -> None:
    assert top_up_fits(16, 200, 0.01, 32.0)
    assert not top_up_fits(16, 200, 0.01, 31.9)


def test_single_stream_runs_at_the_single_rate_and_arrivals_bound_a_server_run() -> None:
    single = estimate_run_seconds(
        6, 32, single_stream=True, request_rate=math.inf, single_tps=64.0, batch_tps=1e6, overhead_s=1.0
    )
    assert math.isclose(single, 1.0 + 6 * 32 / 64.0)
    server = estimate_run_seconds(
        16, 32, single_stream=False, request_rate=4.0, single_tps=64.0, batch_tps=1e6, overhead_s=1.0
    )
    assert math.isclose(server, 1.0 + 16 / 4.0)


def test_bench_keeps_the_repeats_that_fit_and_never_fewer_than_two() -> None:
    assert size_bench(3, 10.0, 5.0, 40.0, "r").repeats == 3
    two = size_bench(3, 10.0, 5.0, 30.0, "r")
    assert two.repeats == 2
    assert two.cut is not None
    assert str(two.cut) == "2 of 3 repeats: one repeat needs ~10 s (server: r); the budget is 30 s"
    none = size_bench(3, 10.0, 5.0, 24.0, "r")
    assert none.repeats == 0
    assert none.cut is not None
    assert none.cut.what == "speed not measured"
