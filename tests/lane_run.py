"""Helpers of the tests that run the real CPU lane in a pytester directory (faults, slow host)."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quantgate.envs import Envs

REPO = Path(__file__).resolve().parents[1]


def envs_or_skip() -> Envs:
    envs = Envs.from_environment(REPO)
    missing = [
        n for n in ("vllm", "compress", "eval") if not (envs.directory / n / "bin" / "python").exists()
    ]
    if missing:
        why = f"no {', '.join(missing)} environment in {envs.directory} (tools/setup_envs.sh)"
        if os.environ.get("QG_REQUIRE_ENVS") == "1":
            pytest.fail(f"QG_REQUIRE_ENVS=1 but {why}")
        pytest.skip(why)
    return envs


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment carries ``marker`` (the run's tools inherit it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes() and pid_alive(int(proc.name)):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {cmdline.strip()}")
        except OSError:
            continue
    return found


def prepare_lane(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, plugin: str, **env: str
) -> tuple[Envs, str]:
    """The tool environments (or a skip), the lane project with the test plugin ``plugin`` in
    ``pytester``'s dir, and ``env`` plus a unique marker ``QG_<PLUGIN>_RUN=hex`` in this test's
    environment, which the run's processes inherit (``processes_with`` finds them by it)."""
    envs = envs_or_skip()
    copy_lane_project(pytester, plugin)
    marker = f"QG_{plugin.upper()}_RUN={uuid.uuid4().hex}"
    for name, value in (*env.items(), tuple(marker.split("=", 1))):
        monkeypatch.setenv(name, value)
    return envs, marker


def copy_lane_project(pytester: pytest.Pytester, plugin: str) -> None:
    """The repository's conftest, plugins and suites, and the named test plugin, in ``pytester``'s dir."""
    for name in ("conftest.py", "plugins", "suites"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, pytester.path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, pytester.path / name)
    shutil.copy(REPO / "tests" / f"{plugin}.py", pytester.path / f"{plugin}.py")
    pytester.makeini("[pytest]\npythonpath = .\naddopts = -p no:cacheprovider -p no:randomly\n")


@dataclass(frozen=True)
class LaneRun:
    """A finished lane run in a pytester directory: pytest's result, the report's cells and outcomes."""

    result: pytest.RunResult
    cells: dict[str, Any]
    outcomes: dict[str, tuple[str, str]]  # test name (without the file) -> (outcome, reason)
    wall_s: float


def run_lane(
    pytester: pytest.Pytester,
    plugin: str,
    select: str,
    lane_file: Path,
    envs: Envs,
    work: Path,
    timeout: float,
    extra: tuple[str, ...] = (),
) -> LaneRun:
    """``pytest suites -m cpu`` on the ``select``-ed cells with the test plugin ``plugin``, reported to
    ``work/report``; the tools' environments are ``envs``."""
    report = work / "report"
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "suites/test_matrix.py",
        "-p",
        plugin,
        "-m",
        "cpu",
        "-k",
        select,
        f"--qg-lane={lane_file}",
        f"--qg-envs={envs.directory}",
        f"--qg-lane-work={work / 'work'}",
        f"--qg-report={report}",
        "--qg-inconclusive=xfail",
        "-rfEx",
        *extra,
        timeout=timeout,
    )
    wall = time.monotonic() - started
    cells_file = report / "cells.json"
    cells = json.loads(cells_file.read_text()) if cells_file.exists() else {"outcomes": {}, "records": []}
    outcomes = {node.split("::", 1)[1]: (o["outcome"], o["reason"]) for node, o in cells["outcomes"].items()}
    return LaneRun(result, cells, outcomes, wall)
