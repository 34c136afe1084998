"""Replicas of long served models (``quantgate.devices.replicas``) and the shards they balance."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest

from quantgate.catalog import Catalog, load_catalog
from quantgate.devices.durations import Durations
from quantgate.devices.fit import estimate_memory, tp_problem
from quantgate.devices.inventory import declared_inventory
from quantgate.devices.placement import build_jobs, make_plan, shard_of_groups
from quantgate.devices.replicas import (
    REPLICA_LIMIT_S,
    Piece,
    assign_replicas,
    replica_count,
    replica_job,
    split_replicas,
)
from quantgate.matrix import (
    WIDEN_MIN_GPU_S,
    WIDEST_REPLICA_TP,
    expand,
    planned_cell_seconds,
    served_models,
    shard,
    task_for_cell,
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_the_docstring_example() -> None:
    pieces = [
        Piece(name="speed", seconds=1.0, exclusive=True),
        Piece(name="a", seconds=5.0, exclusive=False),
        Piece(name="b", seconds=3.0, exclusive=False),
        Piece(name="c", seconds=2.0, exclusive=False),
    ]
    assert replica_count(pieces, 4.0) == 3
    assert split_replicas(pieces, 4.0) == {"speed": 1, "c": 1, "a": 2, "b": 3}
    assert split_replicas(list(reversed(pieces)), 4.0) == split_replicas(pieces, 4.0)


def test_no_more_replicas_than_accuracy_cells_plus_the_speed_one() -> None:
    pieces = [
        Piece(name="speed", seconds=100.0, exclusive=True),
        Piece(name="a", seconds=100.0, exclusive=False),
    ]
    assert replica_count(pieces, 1.0) == 2
    assert replica_count([Piece(name="a", seconds=0.5, exclusive=False)], 1.0) == 1
    assert replica_count([], 1.0) == 1


def test_replica_job_names() -> None:
    assert replica_job("M/s/h100/tp1", 1, 1) == "M/s/h100/tp1"
    assert replica_job("M/s/h100/tp1", 2, 5) == "M/s/h100/tp1/replica-2-of-5"
    assert replica_job("M/s/h100/tp1", 3, 5, 2) == "M/s/h100/tp1/replica-3-of-5-at-tp2"


def test_the_wider_replicas_docstring_example() -> None:
    pieces = [
        Piece(name="speed", seconds=1.0, exclusive=True),
        Piece(name="a", seconds=2.0, exclusive=False),
        Piece(name="w5", seconds=5.0, exclusive=False, tp=2),
        Piece(name="w3", seconds=3.0, exclusive=False, tp=2),
    ]
    assert assign_replicas(pieces, 6.0) == ({"speed": 1, "a": 1, "w5": 2, "w3": 3}, 3)
    # each wider TP is its own group of replicas, narrowest first, after the served model's own
    wider = [*pieces, Piece(name="w4", seconds=1.0, exclusive=False, tp=4)]
    assert assign_replicas(wider, 6.0) == ({"speed": 1, "a": 1, "w5": 2, "w3": 3, "w4": 4}, 4)
    assert assign_replicas(pieces[:2], 6.0) == ({"speed": 1, "a": 1}, 1)


def test_speed_pieces_over_the_limit_split_by_group_and_a_group_stays_together() -> None:
    pieces = [
        Piece(name="single-chat", seconds=2.0, exclusive=True, group="chat"),
        Piece(name="multi-chat", seconds=1.0, exclusive=True, group="chat"),
        Piece(name="single-rag", seconds=2.5, exclusive=True, group="rag"),
        Piece(name="single-code", seconds=1.0, exclusive=True, group="code"),
        Piece(name="a", seconds=1.0, exclusive=False),
    ]
    # speed 6.5 h over a 4 h limit: two speed replicas, chat (3 h) | rag + code (3.5 h); 'a' onto chat's
    assert split_replicas(pieces, 4.0) == {
        "single-chat": 1,
        "multi-chat": 1,
        "single-rag": 2,
        "single-code": 2,
        "a": 1,
    }
    assert replica_count(pieces, 4.0) == 2
    # one group longer than the limit is still one replica: its cells share the bench runs
    assert replica_count(pieces[:2], 1.0) == 1
    assert split_replicas(list(reversed(pieces)), 4.0) == split_replicas(pieces, 4.0)


def test_the_matrix_splits_only_long_served_models_and_keeps_a_workloads_speed_together(
    catalog: Catalog,
) -> None:
    cells = [c for c in expand(catalog) if c.skip_reason is None]
    by_served: dict[str, list] = defaultdict(list)
    for cell in cells:
        by_served[cell.served_model].append(cell)
    split = 0
    for served, mine in by_served.items():
        total = sum(planned_cell_seconds(catalog, c) for c in mine)
        replicas = {c.replicas for c in mine}
        assert len(replicas) == 1, served
        if total <= REPLICA_LIMIT_S and not any(c.replica_tp for c in mine):
            assert replicas == {1}, served
            assert {c.job for c in mine} == {served}
            continue
        split += 1
        (count,) = replicas
        assert count > 1
        assert {c.replica for c in mine} == set(range(1, count + 1)), served
        speed = defaultdict(set)
        for cell in mine:
            if cell.kind == "performance":
                speed[cell.workload].add(cell.replica)
        assert all(len(replicas) == 1 for replicas in speed.values()), (served, speed)
        holding = set().union(*speed.values())
        assert holding == set(range(1, len(holding) + 1)), (served, holding)  # the first replicas
        # a replica holds one TP: the served model's own, or one wider (accuracy cells only)
        for replica in range(1, count + 1):
            assert len({c.requirement.count for c in mine if c.replica == replica}) == 1, (served, replica)
    assert split > 0
    # 70B INT4 on one H100 plans AIME, MATH-500 and GPQA back to back: longer than any night.
    assert {c.replicas for c in by_served["Llama-70B/int4-w4a16/h100/tp1"]} != {1}


NIGHTLY_KINDS = ("h100", "a100", "a6000")
NIGHT_S = 8 * 3600.0


def test_no_cell_of_a_nightly_kind_is_longer_than_a_night(catalog: Catalog) -> None:
    """With the published tables' estimates, MATH-500 of a 70B INT4 model on one A100 plans ~23 h: its
    cells are served wider, and every cell (with its server's start-up) fits the nightly's 8 h."""
    for cell in expand(catalog):
        if cell.gpu in NIGHTLY_KINDS and cell.skip_reason is None:
            task = task_for_cell(catalog, cell, cell.cell_id, Durations())
            assert task.seconds + task.startup_s <= NIGHT_S, cell.cell_id


def test_wider_replicas_serve_accuracy_cells_only_at_a_valid_fitting_tp(catalog: Catalog) -> None:
    served = served_models(catalog)
    wide = [c for c in expand(catalog) if c.replica_tp is not None]
    assert wide
    for cell in wide:
        own = served[(cell.model, cell.scheme, cell.gpu)]
        assert cell.kind == "accuracy"
        assert own.fit.tp is not None
        assert own.fit.tp < cell.replica_tp == cell.requirement.count <= WIDEST_REPLICA_TP
        spec, scheme = catalog.model(cell.model), catalog.scheme(cell.scheme)
        assert tp_problem(spec, scheme, cell.replica_tp) is None
        memory = catalog.gpu(cell.gpu).memory_gb
        assert memory is not None
        estimate = estimate_memory(spec, scheme, cell.replica_tp, own.fit.kv_tokens, memory)
        assert estimate.fits
        assert cell.requirement.memory_gb == round(estimate.need_gb, 2)
        assert cell.job.endswith(f"-at-tp{cell.replica_tp}")
        assert cell.served_model == own.key  # the same checkpoint and served name; only its devices differ


def test_the_published_tables_long_cells_are_served_wider(catalog: Catalog) -> None:
    """The cells the brief named, each longer than a night on its served model's GPUs: served wider,
    within the replica limit; the served model's speed cells keep the catalog's deployment."""
    cells = {c.cell_id: c for c in expand(catalog)}
    served = served_models(catalog)
    for cell_id in (
        "Llama-70B-int4-w4a16-h100-math_500",
        "Qwen-32B-int8-w8a8-a100-math_500",
        "Qwen-32B-int4-w4a16-a100-math_500",
        "Llama-70B-int4-w4a16-a100-aime24",
        "Llama-70B-int4-w4a16-a100-math_500",
        "Llama-70B-int4-w4a16-a100-gpqa_diamond",
        "Qwen-32B-int4-w4a16-a6000-aime24",
        "Qwen-32B-int4-w4a16-a6000-math_500",
        "Qwen-32B-int4-w4a16-a6000-gpqa_diamond",
        "Llama-70B-int4-w4a16-a6000-math_500",
    ):
        cell = cells[cell_id]
        own = served[(cell.model, cell.scheme, cell.gpu)].requirement.count
        assert cell.replica_tp is not None, cell_id
        assert cell.replica_tp > own, cell_id
        assert planned_cell_seconds(catalog, cell) <= REPLICA_LIMIT_S, cell_id
        unwidened = replace(cell, requirement=served[(cell.model, cell.scheme, cell.gpu)].requirement)
        assert planned_cell_seconds(catalog, unwidened) > NIGHT_S, cell_id
    speed = cells["Qwen-32B-int8-w8a8-a100-single-stream-code-completion"]
    assert (speed.replica_tp, speed.requirement.count) == (None, 1)


def test_short_cheap_cells_stay_on_their_served_model(catalog: Catalog) -> None:
    """A cell under an hour of GPU time and within the limit never widens (a server start and a job
    of its own are not worth it)."""
    served = served_models(catalog)
    for cell in expand(catalog, "accuracy"):
        own = served[(cell.model, cell.scheme, cell.gpu)]
        base = replace(cell, requirement=own.requirement, replica_tp=None)
        seconds = planned_cell_seconds(catalog, base)
        if seconds <= REPLICA_LIMIT_S and seconds * own.requirement.count < WIDEN_MIN_GPU_S:
            assert cell.replica_tp is None, cell.cell_id


def test_a_wider_replica_is_a_job_holding_its_larger_count(catalog: Catalog) -> None:
    cells = [c for c in expand(catalog) if c.served_model == "Qwen-32B/int8-w8a8/a100/tp1"]
    jobs = {j.key: j for j in build_jobs(task_for_cell(catalog, c, c.cell_id, Durations()) for c in cells)}
    (wide,) = [j for j in jobs.values() if "-at-tp" in j.key]
    tp = int(wide.key.rsplit("-at-tp", 1)[1])
    assert wide.count == tp > 1
    assert not wide.exclusive
    assert {j.count for j in jobs.values() if j is not wide} == {1}
    plan = make_plan(
        [task_for_cell(catalog, c, c.cell_id, Durations()) for c in cells],
        declared_inventory("a100:8", catalog),
        workers=8,
    )
    (placed,) = [s for s in plan.scheduled if s.job.key == wide.key]
    assert len(placed.devices) == tp
    assert not plan.skipped


def test_replica_jobs_share_gpus_like_accuracy_jobs(catalog: Catalog) -> None:
    """70B INT4 on one H100: its speed cells (~12 h planned) in the first replicas, which need their GPU
    alone, the reasoning cells (MATH-500 alone 9.5 h on one GPU) on a wider replica; the replicas
    without speed cells share."""
    cells = [
        c
        for c in expand(catalog)
        if c.served_model == "Llama-70B/int4-w4a16/h100/tp1" and c.skip_reason is None
    ]
    jobs = {j.key: j for j in build_jobs(task_for_cell(catalog, c, c.cell_id, Durations()) for c in cells)}
    (wide,) = [key for key in jobs if "-at-tp" in key]
    assert len(jobs) >= 3
    speed = {c.job for c in cells if c.kind == "performance"}
    assert len(speed) >= 2
    assert all(jobs[key].exclusive for key in speed)
    assert not any(j.exclusive for k, j in jobs.items() if k not in speed)
    assert all(j.count == 1 for k, j in jobs.items() if k != wide)
    assert jobs[wide].count > 1


@pytest.mark.parametrize("reuse", [True, False])
def test_the_nightly_h100_shards_plan_within_ten_per_cent(catalog: Catalog, reuse: bool) -> None:
    """nightly.yml's two H100 shards, the full sweep: BF16 references reused (their cells run nothing)
    or measured again; the planned makespans differ by at most 10 % either way."""
    runnable = [c for c in expand(catalog) if c.gpu == "h100" and c.skip_reason is None]
    inventory = declared_inventory("h100:8", catalog)
    hours = []
    for k in (1, 2):
        mine = [c for c in shard(runnable, k, 2, catalog) if not (reuse and c.scheme == "bf16")]
        tasks = [task_for_cell(catalog, c, c.cell_id, Durations()) for c in mine]
        hours.append(make_plan(tasks, inventory, workers=8).makespan_s)
    assert max(hours) <= 1.10 * min(hours)


def test_references_and_candidates_are_balanced_each_on_their_own() -> None:
    groups = {"cand-a": 10.0, "cand-b": 6.0, "cand-c": 4.0, "ref-a": 8.0, "ref-b": 8.0}
    assignment = shard_of_groups(groups, 2, references={"ref-a", "ref-b"})
    load = defaultdict(float)
    for key, k in assignment.items():
        if key.startswith("cand"):
            load[k] += groups[key]
    assert sorted(load.values()) == [10.0, 10.0]
    assert {assignment["ref-a"], assignment["ref-b"]} == {1, 2}


def test_the_widest_replicas_fit_the_smallest_nightly_runner(catalog: Catalog) -> None:
    """A6000's nightly runner has 4 GPUs, ``WIDEST_REPLICA_TP``: its tp4 replicas are placed on all of
    them, and nothing of the kind is left unplaced."""
    cells = [c for c in expand(catalog) if c.gpu == "a6000" and c.skip_reason is None]
    tasks = [task_for_cell(catalog, c, c.cell_id, Durations()) for c in cells]
    plan = make_plan(tasks, declared_inventory("a6000:4", catalog), workers=4)
    assert not plan.skipped
    wide = [s for s in plan.scheduled if "-at-tp" in s.job.key]
    assert wide
    assert {len(s.devices) for s in wide} == {WIDEST_REPLICA_TP}
