"""tools/setup_envs.sh refuses up front what would fail minutes into a build.

A CI run once died with ``Errno 28`` halfway through installing the compress environment, because
the disk had filled; the script now checks free space before it creates an environment.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "setup_envs.sh"


def run_setup(envs: Path, *names: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *names],
        check=False,
        env={**os.environ, "QG_ENVS": str(envs), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_disk_too_small_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    result = run_setup(tmp_path, "eval", QG_ENVS_HEADROOM_MIB=str(10**9))
    assert result.returncode == 1
    assert f"eval: needs about {10**9 + 2150} MiB free in {tmp_path}" in result.stderr
    assert not (tmp_path / "eval").exists()


def test_a_stale_environment_is_removed_before_space_is_counted(tmp_path: Path) -> None:
    stale = tmp_path / "compress"
    stale.mkdir()
    (stale / "left-over").write_text("x")
    result = run_setup(tmp_path, "compress", QG_ENVS_HEADROOM_MIB=str(10**9))
    assert result.returncode == 1
    assert "compress: needs about" in result.stderr
    assert not stale.exists()


def test_an_unknown_environment_is_named(tmp_path: Path) -> None:
    result = run_setup(tmp_path, "vllm", "serve")
    assert result.returncode == 2
    assert "unknown environment: serve" in result.stderr
    assert not (tmp_path / "vllm").exists()
