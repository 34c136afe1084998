"""Replicas and shards through pytest itself (pytester), on the full catalog and a declared inventory:
``--qg-shard`` keeps the same cells as ``quantgate.matrix.shard`` (what the benchmarks plan), and the
plan places a long served model's replicas as separate jobs, its speed cells all in replica 1 on the
served model's GPU, its reasoning cells on a wider accuracy-only replica that holds as many GPUs as
its tensor-parallel size (placed and leased so)."""

from __future__ import annotations

import json

import pytest
from planning_project import planning_project

from quantgate.catalog import load_catalog
from quantgate.matrix import expand, shard

SUITE = """
def test_accuracy(qg_accuracy_cell):
    pass


def test_performance(qg_performance_cell):
    pass
"""
SPLIT = "Llama-70B/int4-w4a16/h100/tp1"


def _split_jobs() -> dict[str, int]:
    """The jobs of ``SPLIT`` in the matrix, with their GPU counts (a wider replica's is its TP)."""
    return {
        c.job: c.requirement.count
        for c in expand(load_catalog())
        if c.served_model == SPLIT and c.skip_reason is None  # MMLU's cells are not planned
    }


@pytest.fixture
def full(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return planning_project(pytester, monkeypatch, SUITE)


def _ids(result: pytest.RunResult) -> set[str]:
    return {line.split("[")[1].rstrip("]") for line in result.outlines if "::" in line and "[" in line}


def test_the_plugins_shards_are_the_matrix_shards(full: pytest.Pytester) -> None:
    catalog = load_catalog()
    runnable = [c for c in expand(catalog) if c.gpu == "h100"]  # with the not-planned MMLU cells
    for k in (1, 2):
        result = full.runpytest(
            "--collect-only", "-q", "-m", "h100", "--qg-gpus", "h100:8", "--qg-shard", f"{k}/2"
        )
        assert _ids(result) == {c.cell_id for c in shard(runnable, k, 2, catalog)}


def test_the_plan_places_replicas_as_jobs(full: pytest.Pytester) -> None:
    result = full.runpytest(
        "--collect-only",
        "-q",
        "-m",
        "h100",
        "-k",
        "Llama-70B-int4",
        "--qg-gpus",
        "h100:8",
        "--qg-plan",
        "plan.json",
    )
    assert result.ret == 0
    entries = json.loads((full.path / "plan.json").read_text())["entries"]
    jobs: dict[str, list[dict[str, object]]] = {}
    for entry in entries:
        jobs.setdefault(entry["served_model"], []).append(entry)
    expected = _split_jobs()
    assert sorted(jobs) == sorted(expected)
    (wide,) = [job for job in expected if "-at-tp" in job]
    assert expected[wide] > 1
    speed_jobs = {
        c.job
        for c in expand(load_catalog())
        if c.served_model == SPLIT and c.kind == "performance" and c.skip_reason is None
    }
    assert len(speed_jobs) > 1  # ~12 h of speed cells on one H100: split by workload
    assert {e["served_model"] for e in entries if "test_performance" in str(e["node_id"])} == speed_jobs
    for job, members in jobs.items():
        # each job on as many devices as its server's tensor-parallel size: the wider one on more
        assert {len(e["devices"]) for e in members} == {expected[job]}, job
    # the replicas with speed cells hold their GPU alone, the others share within memory like any
    # accuracy job
    for job in sorted(speed_jobs):
        result.stdout.fnmatch_lines([f"*{job} *alone*"])
    result.stdout.fnmatch_lines([f"*{wide}*GiB*"])


LIVE_SUITE = """
import json, os


def _write(cell, lease):
    with open(os.environ["TOY_LOG"], "a") as handle:
        row = {"cell": cell.cell_id, "job": lease.job, "kind": cell.kind, "devices": list(lease.devices),
               "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}
        handle.write(json.dumps(row) + "\\n")


def test_accuracy(qg_accuracy_cell, qg_lease):
    _write(qg_accuracy_cell, qg_lease)


def test_performance(qg_performance_cell, qg_lease):
    _write(qg_performance_cell, qg_lease)
"""


@pytest.mark.slow
def test_each_replica_runs_on_one_worker_with_its_own_lease(
    full: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under xdist each replica is one unit: its cells on one worker, back to back, on one lease."""
    monkeypatch.setenv("TOY_LOG", str(full.path / "log.jsonl"))
    full.makepyfile(test_suite=LIVE_SUITE)
    result = full.runpytest_subprocess("-n", "2", "-m", "h100", "-k", "Llama-70B-int4", "--qg-gpus", "h100:8")
    result.assert_outcomes(passed=32, skipped=1)  # Llama-70B-int4's MMLU cell is not planned
    rows = [json.loads(line) for line in (full.path / "log.jsonl").read_text().splitlines()]
    by_job: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_job.setdefault(str(row["job"]), []).append(row)
    expected = _split_jobs()
    assert sorted(by_job) == sorted(expected)
    speed_jobs = {str(m["job"]) for m in rows if m["kind"] == "performance"}
    assert speed_jobs == {
        c.job
        for c in expand(load_catalog())
        if c.served_model == SPLIT and c.kind == "performance" and c.skip_reason is None
    }
    for job, members in by_job.items():
        assert len({str(m["worker"]) for m in members}) == 1, job
        assert len({str(m["devices"]) for m in members}) == 1, job
        # the lease holds the job's count: the wider replica's server gets its larger TP
        assert {len(m["devices"]) for m in members} == {expected[job]}, job
    assert max(expected.values()) > 1
