"""A linter for the GitHub Actions workflows, as tests: structure, references, and the commands they run.

No actionlint binary is installable here (its PyPI package downloads one from GitHub at build time), so
this checks what would break a run: YAML that does not parse, jobs without ``runs-on`` or steps, steps
with neither or both of ``uses``/``run``, ``needs`` naming no job, ``matrix.X`` with no such key,
``./run`` subcommands, ``quantgate`` subcommands and ``--qg-*`` options that do not exist.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PLUGIN_SOURCE = "\n".join(p.read_text() for p in (ROOT / "plugins").glob("*.py"))


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path}: not a mapping"
    return doc


def _scripts(job: dict[str, Any]) -> list[str]:
    return [str(step["run"]) for step in job.get("steps", []) if "run" in step]


def test_there_are_a_pull_request_and_a_nightly_workflow() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "nightly.yml"}
    nightly = _load(ROOT / ".github" / "workflows" / "nightly.yml")
    triggers = nightly.get("on") or nightly.get(True)
    assert "schedule" in triggers
    assert "workflow_dispatch" in triggers


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_jobs_steps_and_references_are_well_formed(path: Path) -> None:
    doc = _load(path)
    jobs = doc["jobs"]
    assert jobs, f"{path.name}: no jobs"
    for name, job in jobs.items():
        assert "runs-on" in job, f"{path.name}: job {name} has no runs-on"
        assert job.get("steps"), f"{path.name}: job {name} has no steps"
        for index, step in enumerate(job["steps"]):
            assert ("uses" in step) != ("run" in step), (
                f"{path.name}: {name}.steps[{index}] needs uses or run"
            )
        needs = job.get("needs", [])
        for needed in [needs] if isinstance(needs, str) else needs:
            assert needed in jobs, f"{path.name}: job {name} needs unknown job {needed!r}"
        include = job.get("strategy", {}).get("matrix", {}).get("include", [])
        keys = set().union(*(entry.keys() for entry in include)) if include else set()
        keys |= set(job.get("strategy", {}).get("matrix", {}).keys()) - {"include", "exclude"}
        for used in re.findall(r"matrix\.(\w+)", yaml.safe_dump(job)):
            assert used in keys, f"{path.name}: job {name} uses matrix.{used}, not in its matrix"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_commands_they_run_exist(path: Path) -> None:
    from quantgate.cli import build_parser

    run_script = (ROOT / "run").read_text()
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for name, job in _load(path)["jobs"].items():
        for script in _scripts(job):
            for command in re.findall(r"\./run (\w+)", script):
                assert re.search(rf"^\s+{command}\)", run_script, re.M), (
                    f"{path.name}/{name}: ./run {command}"
                )
            for command in re.findall(r"quantgate (\w+)", script):
                assert command in subcommands, f"{path.name}/{name}: quantgate {command}"
            for option in re.findall(r"(--qg-[\w-]+)", script):
                assert f'"{option}"' in PLUGIN_SOURCE, f"{path.name}/{name}: unknown option {option}"


NIGHTLY = ROOT / ".github" / "workflows" / "nightly.yml"
STEP = re.compile(r"tools/nightly\.sh (\w+)((?: \S+)*)")
GITHUB_ONLY = re.compile(
    r"^\s*((previous|last)=\$\(gh run list|if \[ -n \"\$(previous|last)\" \]; then gh run download)"
)


def _rehearsal() -> str:
    script = (ROOT / "run").read_text()
    return script[script.index("  rehearse)") : script.index("    ;;", script.index("  rehearse)"))]


def _arity(arguments: str) -> int:
    return len(shlex.split(re.sub(r"\s+\|\| status=1$", "", arguments)))


def test_the_nightly_runs_nothing_but_tools_nightly_steps() -> None:
    """So that the CPU rehearsal, which runs the same script, runs everything a runner runs (apart from
    fetching the previous green run's artifacts, which only GitHub has)."""
    for name, job in _load(NIGHTLY)["jobs"].items():
        for script in _scripts(job):
            for line in script.strip().splitlines():
                assert STEP.search(line) or GITHUB_ONLY.search(line), f"nightly.yml/{name}: {line}"


def test_the_cpu_rehearsal_runs_the_nightly_workflows_steps_in_its_order() -> None:
    jobs = _load(NIGHTLY)["jobs"]
    workflow = [STEP.findall(s) for job in ("gpu", "gate") for s in _scripts(jobs[job])]
    steps = [(name, _arity(args)) for found in workflow for name, args in found]
    assert steps == [
        ("setup", 0),
        ("inventory", 2),
        ("envs", 1),
        ("plan", 3),
        ("prefetch", 2),
        ("cells", 7),
        ("setup", 0),
        ("gate", 3),
        ("compare", 3),
    ]
    rehearsal = [(name, _arity(args)) for name, args in STEP.findall(_rehearsal())]
    assert rehearsal == [steps[0], *steps[1:6], steps[7], steps[8]]
    assert "for shard in 1/2 2/2" in _rehearsal(), "two shards, as a kind's runners split it"
    assert 'cells cpu 2 "$shard"' in _rehearsal(), "each shard on two xdist workers"
    uploaded = _load(NIGHTLY)["jobs"]["gpu"]["steps"][-1]
    assert uploaded["with"]["path"] == "out/"
    assert uploaded["with"]["name"] == "nightly-${{ matrix.name }}"
    assert '"$artifacts/nightly-$name"' in _rehearsal(), "artifacts laid out as the gate job downloads them"


def _nightly(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QG_VENV": sys.prefix, "GITHUB_STEP_SUMMARY": ""}
    return subprocess.run(
        [str(ROOT / "tools" / "nightly.sh"), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _lane_benchmark(directory: Path, throughput: float = 1.0) -> None:
    """A real lane run's pytest-benchmark file (tiny Llama BF16 and INT8, 2026-11-30) as a job's
    artifact, its throughputs scaled by ``throughput``."""
    document = json.loads((ROOT / "tests" / "data" / "lane-benchmark" / "benchmark.json").read_text())
    for entry in document["benchmarks"]:
        extra = entry["extra_info"]
        for key in ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput"):
            if key in extra:
                extra[key] *= throughput
    path = directory / "nightly-cpu-1" / "report-cpu-1" / "benchmark.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(document))


def test_the_compare_step_fails_on_a_slower_run_and_says_when_there_is_nothing_to_compare(
    tmp_path: Path,
) -> None:
    _lane_benchmark(tmp_path / "previous")
    _lane_benchmark(tmp_path / "same")
    _lane_benchmark(tmp_path / "slower", throughput=0.3)
    assert _nightly("compare", str(tmp_path / "previous"), str(tmp_path / "same"), "50%").returncode == 0
    slower = _nightly("compare", str(tmp_path / "previous"), str(tmp_path / "slower"), "50%")
    assert slower.returncode == 1, slower.stdout + slower.stderr
    assert "request_throughput" in slower.stdout
    first = _nightly("compare", str(tmp_path / "none"), str(tmp_path / "same"), "50%")
    assert (first.returncode, first.stdout.strip()) == (0, "no earlier green run: nothing to compare")


def test_the_gate_step_fails_closed_without_coverage_files(tmp_path: Path) -> None:
    gate = _nightly("gate", "cpu", str(tmp_path), str(tmp_path / "history" / "verdicts.json"))
    assert gate.returncode == 1
    assert "no coverage file" in gate.stderr


def test_the_gate_step_carries_verdicts_so_a_deferred_cell_passes_on_a_recent_green_one(
    tmp_path: Path,
) -> None:
    from quantgate.kinds import load_kind
    from quantgate.pipeline import local_cells

    def night(name: str, deferred_from: int) -> Path:
        rows = [
            {"cell_id": c.cell_id, "node_id": f"suites/test_matrix.py::t[{c.cell_id}]", "status": status}
            for n, c in enumerate(local_cells(load_kind()))
            for status in ["passed" if n < deferred_from else "deferred"]
        ]
        doc = {"schema_version": 1, "kind": "quantgate-coverage", "complete": True, "cells": rows}
        path = tmp_path / name / "nightly-cpu-1" / "coverage-cpu-1.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(doc))
        return path.parents[1]

    history = tmp_path / "history" / "verdicts.json"
    early = _nightly("gate", "cpu", str(night("early", 5)), str(history))
    assert early.returncode == 1, early.stdout
    assert ": deferred and no verdict (limit 7 days)" in early.stdout
    full = _nightly("gate", "cpu", str(night("full", 10**6)), str(history))
    assert full.returncode == 0, full.stdout + full.stderr
    later = _nightly("gate", "cpu", str(night("later", 5)), str(history))
    assert later.returncode == 0, later.stdout + later.stderr
    assert "note: " in later.stdout
    assert json.loads(history.read_text())["kind"] == "quantgate-verdicts"


def _gpu_step(starting: str) -> dict[str, Any]:
    steps = [s for s in _load(NIGHTLY)["jobs"]["gpu"]["steps"] if "run" in s]
    found = [s for s in steps if str(s["run"]).startswith(starting)]
    assert len(found) == 1, f"nightly.yml/gpu: one step runs {starting!r}"
    return found[0]


def test_gpu_jobs_build_the_cuda_envs_and_prefetch_with_the_token_before_cells_run_offline() -> None:
    """The runner needs nothing prepared but a checkout and the HF_TOKEN secret: the CUDA environments
    are built (or found current) by the job, its plan's files are fetched before any cell, and the cells
    then run offline, so that a missing file fails the prefetch step by name instead of a cell."""
    job = _load(NIGHTLY)["jobs"]["gpu"]
    envs = _gpu_step("tools/nightly.sh envs")
    assert envs["run"] == 'tools/nightly.sh envs "${{ matrix.kind }}"'
    prefetch = _gpu_step("tools/nightly.sh prefetch")
    assert prefetch["run"] == 'tools/nightly.sh prefetch "${{ matrix.kind }}" "${{ matrix.name }}"'
    assert prefetch["env"] == {"HF_TOKEN": "${{ secrets.HF_TOKEN }}"}
    cells = _gpu_step("tools/nightly.sh cells")
    assert cells["env"] == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    order = [str(s["run"]).split()[1] for s in job["steps"] if str(s.get("run", "")).startswith("tools/")]
    assert order == ["setup", "inventory", "envs", "plan", "prefetch", "cells"]
    assert job["env"] == {"QG_ENVS": "/opt/quantgate/envs"}


def test_the_token_reaches_the_prefetch_step_only() -> None:
    text = NIGHTLY.read_text()
    assert text.count("secrets.HF_TOKEN") == 1
    for name, job in _load(NIGHTLY)["jobs"].items():
        assert "HF_TOKEN" not in job.get("env", {}), name
        for step in job["steps"]:
            if "HF_TOKEN" in step.get("env", {}):
                assert str(step.get("run", "")).startswith("tools/nightly.sh prefetch"), (name, step)


def test_the_rehearsal_prefetches_local_files_offline_without_a_token() -> None:
    rehearsal = _rehearsal()
    assert "export HF_HUB_OFFLINE=1" in rehearsal
    assert "unset HF_TOKEN HUGGING_FACE_HUB_TOKEN" in rehearsal
    assert rehearsal.index("unset HF_TOKEN") < rehearsal.index("tools/nightly.sh prefetch cpu")
    assert "tools/setup_envs.sh" not in rehearsal, "the environments come from the nightly's own step"


@pytest.mark.parametrize(("kind", "first_env_mib"), [("h100", 12000), ("cpu", 3500)])
def test_the_envs_step_builds_the_kinds_flavor(tmp_path: Path, kind: str, first_env_mib: int) -> None:
    """GPU kinds get the CUDA builds, the cpu kind the CPU ones: told apart here by the size each
    flavor's vllm environment asks the disk for, refused before anything is built."""
    env = {**os.environ, "QG_VENV": sys.prefix, "QG_ENVS": str(tmp_path), "QG_ENVS_HEADROOM_MIB": str(10**9)}
    done = subprocess.run(
        [str(ROOT / "tools" / "nightly.sh"), "envs", kind],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"vllm: needs about {first_env_mib + 1000000000} MiB free in {tmp_path}" in done.stderr
    assert not (tmp_path / "vllm").exists()


def test_the_prefetch_step_reads_the_shards_plan_and_names_it_when_missing() -> None:
    done = _nightly("prefetch", "h100", "no-such-shard")
    assert done.returncode == 2
    assert "quantgate: out/plan-no-such-shard.json: cannot read the plan" in done.stderr
