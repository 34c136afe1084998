"""The committed tiny models are what their seeded builder makes: rebuild both and compare byte for byte.

Needs the compress environment (torch + transformers; ``tools/setup_envs.sh compress``). Where it is
missing the test is skipped with that reason, unless ``QG_REQUIRE_ENVS=1`` (set by ``./run tests``, which
builds that environment first): then a missing environment is a failure, not a skip.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from quantgate.lane import Envs

ROOT = Path(__file__).resolve().parents[1]
BUILDER = ROOT / "fixtures" / "tinymodel" / "build.py"
COMMITTED = ROOT / "fixtures" / "tinymodel" / "models"


def _compress_python() -> Path:
    python = Envs.from_environment(ROOT).directory / "compress" / "bin" / "python"
    if not python.exists():
        if os.environ.get("QG_REQUIRE_ENVS") == "1":
            pytest.fail(f"QG_REQUIRE_ENVS=1 but there is no compress environment at {python.parent.parent}")
        pytest.skip(f"no compress environment at {python.parent.parent} (tools/setup_envs.sh compress)")
    return python


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_rebuilding_a_tiny_model_reproduces_the_committed_files(arch: str, tmp_path: Path) -> None:
    python = _compress_python()
    done = subprocess.run(
        [
            str(python),
            str(BUILDER),
            "--out",
            str(tmp_path),
            "--arch",
            arch,
            "--measure-samples",
            "0",
            "--check",
            str(COMMITTED),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "identical to" in done.stdout
