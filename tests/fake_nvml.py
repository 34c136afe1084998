"""A stand-in for the ``pynvml`` module (nvidia-ml-py), for tests on machines without NVIDIA GPUs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

H100 = "NVIDIA H100 80GB HBM3"
MIB = 2**20


def fake_nvml(names: list[str | bytes], fail: str | None = None) -> Any:
    """A module-like object answering NVML's calls for devices named ``names`` (or failing to init)."""

    class NVMLError(Exception):
        pass

    def init() -> None:
        if fail:
            raise NVMLError(fail)

    return SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"550.54.15",
        nvmlSystemGetCudaDriverVersion=lambda: 12040,
        nvmlDeviceGetCount=lambda: len(names),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: names[h],
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=MIB * 81559, free=MIB * (81559 - 500 * h)),
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}{h}{h}{h}0000-1111-2222-3333-444455556666",
    )
