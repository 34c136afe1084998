"""Helpers of the tests that run the real CPU lane in a pytester directory (faults, slow host)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from quantgate.lane import Envs

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


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment carries ``marker`` (the run's tools inherit it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


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
