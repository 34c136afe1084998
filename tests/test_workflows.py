"""A linter for the GitHub Actions workflows, as tests: structure, references, and the commands they run.

No actionlint binary is installable here (its PyPI package downloads one from GitHub at build time), so
this checks what would break a run: YAML that does not parse, jobs without ``runs-on`` or steps, steps
with neither or both of ``uses``/``run``, ``needs`` naming no job, ``matrix.X`` with no such key,
``./run`` subcommands, ``quantgate`` subcommands and ``--qg-*`` options that do not exist.
"""

from __future__ import annotations

import re
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
