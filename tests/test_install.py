"""quantgate installed from a wheel, not from this checkout, finds its data and judges.

The wheel is built offline from a copy of the checkout (the same files ``git`` tracks that a build
reads), installed into a folder of its own, and its ``quantgate`` script runs from another directory
with nothing of the checkout on the path: ``quantgate replay`` with no argument judges the published
figures the wheel carries, and gives the same cells as the checkout's own replay.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantgate import paths
from quantgate.catalog import default_catalog_dir
from quantgate.cli import main
from quantgate.envs import Envs
from quantgate.errors import QuantgateError
from quantgate.rules import default_rules_path, load_rules
from quantgate.runners.quantize import recipe_path

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", *paths.SHIPPED_FOLDERS)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a non-editable install of a wheel built from this checkout went into."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    for name in BUILD_INPUTS:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    wheels, target = work / "wheels", work / "site"
    offline = ["--no-deps", "--no-index", "--no-build-isolation"]
    subprocess.run([*pip, "wheel", str(source), *offline, "-w", str(wheels)], check=True, cwd=work)
    (wheel,) = wheels.glob("quantgate-*.whl")
    subprocess.run([*pip, "install", str(wheel), *offline, "--target", str(target)], check=True, cwd=work)
    return target


@pytest.mark.slow
def test_the_wheel_carries_every_data_folder(installed: Path) -> None:
    shipped = installed / "quantgate" / "_data"
    for folder in paths.SHIPPED_FOLDERS:
        expected = sorted(p.relative_to(REPO / folder) for p in (REPO / folder).rglob("*") if p.is_file())
        found = sorted(p.relative_to(shipped / folder) for p in (shipped / folder).rglob("*") if p.is_file())
        assert found == expected, folder


@pytest.mark.slow
def test_an_installed_quantgate_replays_the_published_figures_from_another_directory(
    installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {paths.ROOT_VARIABLE, "QUANTGATE_CATALOG"}}
    run = subprocess.run(
        [sys.executable, str(installed / "bin" / "quantgate"), "replay", "--json"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert main(["replay", str(paths.published_dir()), "--json"]) == 0
    from_checkout = json.loads(capsys.readouterr().out)
    assert report["counts"] == from_checkout["counts"]
    assert [c["cell"] for c in report["cells"]] == [c["cell"] for c in from_checkout["cells"]]
    located = subprocess.run(
        [sys.executable, "-c", "import quantgate.paths as p; print(p.root())"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(located.stdout.strip()) == installed / "quantgate" / "_data"


def test_quantgate_root_moves_every_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder in paths.SHIPPED_FOLDERS:
        shutil.copytree(REPO / folder, tmp_path / folder)
    monkeypatch.setenv(paths.ROOT_VARIABLE, str(tmp_path))
    monkeypatch.delenv("QUANTGATE_CATALOG", raising=False)
    assert default_rules_path() == tmp_path / "baselines" / "rules.yaml"
    assert default_catalog_dir() == tmp_path / "suites" / "catalog"
    assert recipe_path("int4-w4a16") == tmp_path / "fixtures" / "data" / "recipes" / "int4-w4a16.yaml"
    assert paths.kind_file("gpu") == tmp_path / "suites" / "kinds" / "gpu.yaml"
    assert Envs.from_environment().directory in {Path(os.environ.get("QG_ENVS", "/")), tmp_path / ".envs"}


def test_a_root_without_data_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.ROOT_VARIABLE, str(tmp_path))
    with pytest.raises(QuantgateError, match=r"QUANTGATE_ROOT=.*no baselines/rules.yaml there"):
        load_rules()
