"""Replicas of long served models (``quantgate.devices.replicas``) and the shards they balance."""

from __future__ import annotations

from collections import defaultdict

import pytest

from quantgate.catalog import Catalog, load_catalog
from quantgate.devices.durations import Durations
from quantgate.devices.inventory import declared_inventory
from quantgate.devices.placement import build_jobs, make_plan, shard_of_groups
from quantgate.devices.replicas import REPLICA_LIMIT_S, Piece, replica_count, replica_job, split_replicas
from quantgate.matrix import expand, planned_cell_seconds, shard, task_for_cell


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


def test_the_matrix_splits_only_long_served_models_and_keeps_speed_in_replica_one(catalog: Catalog) -> None:
    cells = [c for c in expand(catalog) if c.skip_reason is None]
    by_served: dict[str, list] = defaultdict(list)
    for cell in cells:
        by_served[cell.served_model].append(cell)
    split = 0
    for served, mine in by_served.items():
        total = sum(planned_cell_seconds(catalog, c) for c in mine)
        replicas = {c.replicas for c in mine}
        assert len(replicas) == 1, served
        if total <= REPLICA_LIMIT_S:
            assert replicas == {1}, served
            assert {c.job for c in mine} == {served}
            continue
        split += 1
        (count,) = replicas
        assert count > 1
        assert {c.replica for c in mine} == set(range(1, count + 1)), served
        assert {c.replica for c in mine if c.kind == "performance"} == {1}
    assert split > 0
    # 70B INT4 on one H100 plans AIME, MATH-500 and GPQA back to back: longer than any night.
    assert {c.replicas for c in by_served["Llama-70B/int4-w4a16/h100/tp1"]} == {5}


def test_replica_jobs_share_gpus_like_accuracy_jobs(catalog: Catalog) -> None:
    cells = [c for c in expand(catalog) if c.served_model == "Llama-70B/int4-w4a16/h100/tp1"]
    jobs = {j.key: j for j in build_jobs(task_for_cell(catalog, c, c.cell_id, Durations()) for c in cells)}
    assert len(jobs) == 5
    assert jobs["Llama-70B/int4-w4a16/h100/tp1/replica-1-of-5"].exclusive
    assert not any(j.exclusive for k, j in jobs.items() if not k.endswith("replica-1-of-5"))
    assert all(j.count == 1 for j in jobs.values())


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
