"""Placement, plan, shards and live leases (quantgate.devices), and the matrix they place."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantgate.catalog import Catalog, load_catalog
from quantgate.devices.durations import Durations
from quantgate.devices.inventory import Device, Inventory, declared_inventory
from quantgate.devices.leases import DeviceLeases, LeaseTimeout
from quantgate.devices.placement import Job, LongestFirstPlacement, Task, build_jobs, make_plan, parse_shard
from quantgate.errors import QuantgateError
from quantgate.matrix import NOT_PLANNED, excluded_kinds, expand, served_models, shard, task_for_cell

REPO = Path(__file__).resolve().parents[1]


def task(
    node_id: str,
    job: str,
    kind: str,
    count: int,
    memory_gb: float,
    shareable: bool,
    seconds: float,
    startup_s: float = 0.0,
) -> Task:
    """A planned test item whose estimate is its planned seconds."""
    return Task(
        node_id=node_id,
        job=job,
        kind=kind,
        count=count,
        memory_gb=memory_gb,
        shareable=shareable,
        seconds=seconds,
        estimate_s=seconds,
        startup_s=startup_s,
    )


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(REPO / "suites" / "catalog")


class TestMatrix:
    def test_every_model_scheme_gpu_and_target(self, catalog: Catalog) -> None:
        cells = expand(catalog)
        accuracy = {c.target for c in cells if c.kind == "accuracy"}
        performance = {c.target for c in cells if c.kind == "performance"}
        assert accuracy == {k for k, b in catalog.benchmarks.items() if b.kind == "task"}
        assert "reasoning_avg" not in accuracy
        assert len(performance) == 3 * 8
        assert "single-stream-multi-turn-chat" in performance
        assert {c.gpu for c in cells} == {"a6000", "a100", "h100", "h200", "l40s"}
        assert {c.scheme for c in cells} == {"bf16", "fp8-w8a8", "int8-w8a8", "int4-w4a16"}
        assert len(cells) == 6 * 4 * 5 * (9 + 24)
        assert len({c.cell_id for c in cells}) == len(cells)

    def test_cpu_is_left_out_and_says_why(self, catalog: Catalog) -> None:
        assert set(excluded_kinds(catalog)) == {"cpu"}
        assert "CPU lane" in excluded_kinds(catalog)["cpu"]

    def test_ids_and_served_models(self, catalog: Catalog) -> None:
        ids = {c.cell_id: c for c in expand(catalog)}
        acc = ids["Qwen-7B-int4-w4a16-h100-aime24"]
        perf = ids["Qwen-7B-int4-w4a16-h100-single-stream-multi-turn-chat"]
        assert acc.served_model == perf.served_model == "Qwen-7B/int4-w4a16/h100/tp1"
        assert (perf.scenario, perf.workload, acc.benchmark) == ("single-stream", "multi-turn-chat", "aime24")
        big = ids["Llama-70B-bf16-h100-mmlu"]
        assert big.served_model == "Llama-70B/bf16/h100/tp4"
        assert big.requirement.count == 4
        assert 30 < big.requirement.memory_gb <= 72

    def test_cells_of_one_served_model_agree(self, catalog: Catalog) -> None:
        """All cells of a served model share its facts; a wider accuracy-only replica's cells differ
        only in their requirement (its larger TP), the same for all cells of that replica."""
        by_served: dict[str, set[tuple[object, ...]]] = {}
        by_job: dict[str, set[object]] = {}
        for c in expand(catalog):
            # a served model's own skip reason is every cell's; a cell not planned has its own
            unplanned = c.skip_reason is not None and c.skip_reason.startswith(NOT_PLANNED)
            facts = (c.model, c.scheme, c.gpu, None if unplanned else c.skip_reason)
            by_served.setdefault(c.served_model, set()).add(facts)
            if c.replica_tp is None:
                by_served[c.served_model].add(c.requirement)
            by_job.setdefault(c.job, set()).add(c.requirement)
        assert len(by_served) == len(served_models(catalog)) == 6 * 4 * 5
        assert all(len(v) == 2 for v in by_served.values())
        assert all(len(v) == 1 for v in by_job.values())

    def test_only_fp8_below_ada_is_skipped(self, catalog: Catalog) -> None:
        """Whole served models; single cells not planned (tests/test_matrix_limits.py) aside."""
        cells = expand(catalog)
        skipped = {
            (c.scheme, c.gpu) for c in cells if c.skip_reason and not c.skip_reason.startswith(NOT_PLANNED)
        }
        assert skipped == {("fp8-w8a8", "a100"), ("fp8-w8a8", "a6000")}
        unplanned = {
            c.scenario or c.benchmark
            for c in cells
            if c.skip_reason and c.skip_reason.startswith(NOT_PLANNED)
        }
        assert unplanned == {"server", "mmlu"}, "server cells over the TTFT limit, and MMLU (57 tasks)"

    def test_task_uses_learned_durations(self, catalog: Catalog) -> None:
        cell = next(c for c in expand(catalog) if c.cell_id == "Qwen-7B-bf16-h100-aime24")
        estimated = task_for_cell(catalog, cell, "n", Durations())
        learned = task_for_cell(catalog, cell, "n", Durations({cell.cell_id: 12.5}, {cell.served_model: 3.0}))
        assert estimated.seconds == estimated.estimate_s > 100
        assert (learned.seconds, learned.startup_s, learned.estimate_s) == (12.5, 3.0, estimated.estimate_s)
        assert estimated.shareable
        assert estimated.job == cell.served_model


# -- plan properties ---------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Inventory, list[Task], int]:
    kinds = draw(st.lists(st.sampled_from(["h100", "a6000", "a100"]), min_size=1, max_size=3, unique=True))
    devices: list[Device] = []
    for kind in kinds:
        memory = {"h100": 80.0, "a6000": 48.0, "a100": 80.0}[kind]
        for _ in range(draw(st.integers(1, 8))):
            free = memory if draw(st.booleans()) else draw(st.floats(memory * 0.5, memory))
            devices.append(Device(len(devices), kind, memory, free, 9.0, kind))
    tasks: list[Task] = []
    for job in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from([*kinds, "l40s"]))
        count = draw(st.sampled_from([1, 1, 2, 4, 8]))
        memory = draw(st.floats(1.0, 80.0))
        shareable = draw(st.booleans())
        startup = draw(st.floats(0.0, 100.0))
        for n in range(draw(st.integers(1, 4))):
            seconds = draw(st.floats(1.0, 1000.0))
            tasks.append(task(f"t{job}-{n}", f"job{job}", kind, count, memory, shareable, seconds, startup))
    return Inventory(tuple(devices), "drawn"), tasks, draw(st.integers(1, 6))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_plan_never_oversubscribes_and_places_or_explains_everything(
    scenario: tuple[Inventory, list[Task], int],
) -> None:
    inventory, tasks, workers = scenario
    plan = make_plan(tasks, inventory, workers)
    policy = LongestFirstPlacement(inventory)
    jobs = {j.key: j for j in build_jobs(tasks)}
    placed = Counter(e.node_id for e in plan.entries)
    skipped = {node_id: reason for node_id, _, reason in plan.skipped}
    # every task placed exactly once, or skipped with the reason of its unplaceable job
    for task in tasks:
        reason = policy.unplaceable(jobs[task.job])
        if reason is None:
            assert placed[task.node_id] == 1
        else:
            assert task.node_id not in placed
            assert skipped[task.node_id] == reason
            assert reason
    by_index = {d.index: d for d in inventory.devices}
    for s in plan.scheduled:
        job = s.job
        assert len(s.devices) == job.count == len(set(s.devices))
        assert all(by_index[i].kind == job.kind for i in s.devices)
        positions = [inventory.devices.index(by_index[i]) for i in s.devices]
        assert positions == list(range(positions[0], positions[0] + job.count)), "devices not adjacent"
        assert s.end_s == pytest.approx(s.start_s + job.duration_s)
        assert 0 <= s.worker < workers
        entries = [e for e in plan.entries if e.served_model == job.key]
        assert min(e.start_s for e in entries) == pytest.approx(s.start_s + job.startup_s)
        assert max(e.end_s for e in entries) == pytest.approx(s.end_s)
    # at every start, each device holds at most its budget, and an exclusive job holds it alone
    for moment in {s.start_s for s in plan.scheduled}:
        live = [s for s in plan.scheduled if s.start_s <= moment < s.end_s]
        for index, device in by_index.items():
            on = [s for s in live if index in s.devices]
            if any(s.job.exclusive for s in on):
                assert len(on) == 1
            assert sum(s.memory_gb for s in on) <= policy.capacity(device) + 1e-6
            assert all(s.job.memory_gb <= policy.capacity(device) + 1e-6 for s in on)
        for worker in range(workers):
            assert sum(1 for s in live if s.worker == worker) <= 1
    assert plan.makespan_s >= plan.lower_bound_s - 1e-6
    assert plan.lower_bound_s >= max((s.job.duration_s for s in plan.scheduled), default=0.0) - 1e-6


def test_longest_first_and_backfill_keep_the_big_job_on_time(catalog: Catalog) -> None:
    """4x A6000: the two 4-GPU jobs are not starved by 1-GPU jobs (EASY reservation)."""
    inventory = declared_inventory("a6000:4", catalog)

    def job(key: str, count: int, seconds: float) -> list[Task]:
        return [task(f"{key}-0", key, "a6000", count, 40.0, False, seconds)]

    tasks = (
        job("long-2", 2, 100) + job("wide-4", 4, 50) + [t for n in range(8) for t in job(f"small{n}", 1, 30)]
    )
    policy = LongestFirstPlacement(inventory)
    jobs = build_jobs(tasks)
    scheduled, _ = policy.simulate(policy.order(jobs), workers=4, ordered=True)
    start = {s.job.key: s.start_s for s in scheduled}
    assert start["long-2"] == 0
    # reserved from the end of long-2: small jobs backfill GPUs 2-3 only while they end by then
    assert start["wide-4"] == 100
    assert sorted(v for k, v in start.items() if k.startswith("small")) == [0, 0, 30, 30, 60, 60, 150, 150]
    assert max(s.end_s for s in scheduled) == 180


def test_the_widest_job_goes_first_when_that_plan_is_shorter(catalog: Catalog) -> None:
    """The same jobs: wide-4 at once on all four GPUs beats LPT's 180 s; with one narrow job as long as
    the plan, both orders end at 350 s and LPT stays (the tie goes to LPT)."""
    inventory = declared_inventory("a6000:4", catalog)

    def job(key: str, count: int, seconds: float) -> list[Task]:
        return [task(f"{key}-0", key, "a6000", count, 40.0, False, seconds)]

    smalls = [t for n in range(8) for t in job(f"small{n}", 1, 30)]
    plan = make_plan(job("long-2", 2, 100) + job("wide-4", 4, 50) + smalls, inventory, workers=4)
    start = {s.job.key: s.start_s for s in plan.scheduled}
    assert start["wide-4"] == 0
    assert plan.makespan_s < 180
    assert plan.lower_bound_s == 160
    narrow = make_plan(job("long-1", 1, 300) + job("wide-4", 4, 50) + smalls, inventory, workers=4)
    assert {s.job.key: s.start_s for s in narrow.scheduled}["long-1"] == 0
    assert narrow.makespan_s == 350


def test_shareable_jobs_pack_within_memory(catalog: Catalog) -> None:
    inventory = declared_inventory("h100:1", catalog)
    tasks = [task(f"a{n}", f"acc{n}", "h100", 1, 30.0, True, 10.0) for n in range(3)]
    plan = make_plan(tasks, inventory, workers=3)
    starts = sorted(s.start_s for s in plan.scheduled)
    assert starts == [0.0, 0.0, 10.0]  # 72 GiB budget holds two 30 GiB servers, not three
    assert plan.as_dict()["lower_bound_s"] == pytest.approx(30 * 30 / 72)


def test_plan_json_shape(catalog: Catalog) -> None:
    inventory = declared_inventory("h100:8", catalog)
    tasks = [
        task_for_cell(catalog, c, c.cell_id, Durations())
        for c in expand(catalog)
        if c.gpu == "h100" and c.model in ("Llama-70B", "Qwen-1.5B")
    ]
    doc = json.loads(json.dumps(make_plan(tasks, inventory, workers=4).as_dict()))
    assert doc["schema_version"] == 1
    assert {"entries", "makespan_s", "lower_bound_s", "skipped", "workers"} <= set(doc)
    assert set(doc["entries"][0]) >= {"node_id", "served_model", "devices", "start_s", "end_s"}
    assert doc["makespan_s"] >= doc["lower_bound_s"] > 0
    # 70B BF16 is planned over the replica limit (its server cells are capacity searches): replica jobs
    four = [e for e in doc["entries"] if e["served_model"].startswith("Llama-70B/bf16/h100/tp4")]
    assert len(four) == 33
    for job in {e["served_model"] for e in four}:
        devices = {tuple(e["devices"]) for e in four if e["served_model"] == job}
        assert len(devices) == 1, job
        (held,) = devices
        assert held == tuple(range(held[0], held[0] + 4)), job  # adjacent (aligned preferred, not promised)


def test_a_job_that_fits_nowhere_is_explained(catalog: Catalog) -> None:
    tasks = [
        task("big", "70b", "h100", 4, 40.0, False, 1.0),
        task("x", "x", "a100", 1, 1.0, False, 1.0),
    ]
    plan = make_plan(tasks, declared_inventory("h100:2", catalog), workers=2)
    reasons = {node: reason for node, _, reason in plan.skipped}
    assert reasons["big"] == "needs 4x h100; the inventory (2x h100 (0-1), from declared 'h100:2') has 2"
    assert reasons["x"].startswith("no a100 in the inventory")
    assert plan.entries == ()


def test_inconsistent_tasks_of_one_served_model_are_refused() -> None:
    with pytest.raises(QuantgateError, match="needs 1x h100 for a but 2x h100 here"):
        build_jobs(
            [
                task("a", "m", "h100", 1, 1.0, True, 1.0),
                task("b", "m", "h100", 2, 1.0, True, 1.0),
            ]
        )


# -- shards ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_are_complete_disjoint_and_keep_jobs_whole(catalog: Catalog, n: int) -> None:
    cells = [c for c in expand(catalog) if c.skip_reason is None]
    shards = [shard(cells, k, n, catalog) for k in range(1, n + 1)]
    ids = [c.cell_id for part in shards for c in part]
    assert sorted(ids) == sorted(c.cell_id for c in cells)
    homes: dict[str, set[int]] = {}
    for k, part in enumerate(shards):
        for c in part:
            homes.setdefault(c.job, set()).add(k)
    assert all(len(v) == 1 for v in homes.values())
    assert len(homes) == len({c.job for c in cells})
    # A served model spans shards only through its replicas.
    served: dict[str, set[int]] = {}
    for k, part in enumerate(shards):
        for c in part:
            served.setdefault(c.served_model, set()).add(k)
    assert all(
        len(v) == 1 for s, v in served.items() if all(c.replicas == 1 for c in cells if c.served_model == s)
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6))
def test_shards_do_not_depend_on_collection_order(catalog: Catalog, seed: int, n: int) -> None:
    cells = [c for c in expand(catalog) if c.gpu == "h100"]
    shuffled = list(cells)
    random.Random(seed).shuffle(shuffled)
    for k in range(1, n + 1):
        ordered = {c.cell_id for c in shard(cells, k, n, catalog)}
        assert ordered == {c.cell_id for c in shard(shuffled, k, n, catalog)}


@pytest.mark.parametrize(("text", "expected"), [("2/4", (2, 4)), (" 1 / 1 ", (1, 1))])
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0"])
def test_parse_shard_refuses(text: str) -> None:
    with pytest.raises(QuantgateError, match="--qg-shard"):
        parse_shard(text)


# -- live leases -------------------------------------------------------------------------------------


def _job(key: str, count: int, memory: float = 40.0, exclusive: bool = True, seconds: float = 100.0) -> Job:
    return build_jobs([task(key, key, "h100", count, memory, not exclusive, seconds)])[0]


class TestLeases:
    def test_exclusive_devices_are_handed_over_after_release(self, tmp_path: Path, catalog: Catalog) -> None:
        inventory = declared_inventory("h100:2", catalog)
        a, b = DeviceLeases(tmp_path, inventory, "gw0"), DeviceLeases(tmp_path, inventory, "gw1")
        lease = a.try_acquire(_job("big", 2))
        assert lease is not None
        assert lease.devices == (0, 1)
        assert lease.gpu_memory_utilization == 0.9
        assert b.try_acquire(_job("small", 1)) is None
        order: list[str] = []
        lease.on_release(lambda: order.append("server stopped"))
        a.release(lease)
        assert order == ["server stopped"]
        second = b.try_acquire(_job("small", 1))
        assert second is not None
        assert second.devices == (0,)

    def test_shareable_leases_share_a_gpu_within_memory(self, tmp_path: Path, catalog: Catalog) -> None:
        inventory = declared_inventory("h100:1", catalog)
        owners = [DeviceLeases(tmp_path, inventory, f"gw{n}") for n in range(3)]
        first = owners[0].try_acquire(_job("a", 1, 30.0, exclusive=False))
        second = owners[1].try_acquire(_job("b", 1, 30.0, exclusive=False))
        assert first is not None
        assert second is not None
        assert first.devices == second.devices == (0,)
        assert first.gpu_memory_utilization == 0.38  # 30 GiB of 80, rounded up
        assert owners[2].try_acquire(_job("c", 1, 30.0, exclusive=False)) is None
        assert len(owners[0].holders()) == 2

    def test_a_waiting_wide_job_is_not_overtaken(self, tmp_path: Path, catalog: Catalog) -> None:
        inventory = declared_inventory("h100:2", catalog)
        a, b, c = (DeviceLeases(tmp_path, inventory, f"gw{n}") for n in range(3))
        assert a.try_acquire(_job("one", 1, seconds=50.0)) is not None
        assert b.try_acquire(_job("two", 2)) is None  # waits, with GPUs 0-1 reserved from ~50 s
        assert c.try_acquire(_job("long", 1, seconds=1000.0)) is None  # would delay "two"
        assert c.try_acquire(_job("long", 1, seconds=1000.0)) is None
        d = DeviceLeases(tmp_path, inventory, "gw3")
        short = d.try_acquire(_job("short", 1, seconds=1.0))  # done before the reservation: backfills
        assert short is not None
        assert short.devices == (1,)

    def test_callbacks_run_last_registered_first_and_errors_still_free(
        self, tmp_path: Path, catalog: Catalog
    ) -> None:
        leases = DeviceLeases(tmp_path, declared_inventory("h100:1", catalog), "gw0")
        lease = leases.try_acquire(_job("m", 1))
        assert lease is not None
        calls: list[str] = []
        lease.on_release(lambda: calls.append("first"))

        def fail() -> None:
            calls.append("second")
            raise RuntimeError("server did not stop")

        lease.on_release(fail)
        with pytest.raises(RuntimeError, match="did not stop"):
            leases.release(lease)
        assert calls == ["second", "first"]
        assert leases.holders() == []

    def test_a_dead_holder_does_not_keep_its_gpus(self, tmp_path: Path, catalog: Catalog) -> None:
        code = "import os; print(os.getpid())"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        held = {"owner": "gw9", "pid": int(done.stdout), "job": "x", "devices": [0], "memory_gb": 72.0}
        state = {"seq": 1, "waiting": [], "held": [{**held, "exclusive": True, "until": 0.0}]}
        (tmp_path / "leases.json").write_text(json.dumps(state))
        lease = DeviceLeases(tmp_path, declared_inventory("h100:1", catalog), "gw0").try_acquire(_job("m", 1))
        assert lease is not None

    def test_timeout(self, tmp_path: Path, catalog: Catalog) -> None:
        inventory = declared_inventory("h100:1", catalog)
        assert DeviceLeases(tmp_path, inventory, "gw0").try_acquire(_job("a", 1)) is not None
        waiter = DeviceLeases(tmp_path, inventory, "gw1")
        with pytest.raises(LeaseTimeout, match=r"waited 0\.05 s for 1x h100"):
            waiter.acquire(_job("b", 1), timeout_s=0.05, poll_s=0.01)
        assert all(h["owner"] == "gw0" for h in waiter.holders())
