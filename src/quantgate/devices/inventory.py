"""GPU inventory: what is here, from NVML or declared.

``nvml_inventory()`` lists the GPUs NVML reports, restricted to those
``CUDA_VISIBLE_DEVICES`` makes visible (indices or ``GPU-<uuid>`` prefixes, with CUDA's rule that an
invalid entry hides it and all later ones), each mapped to a catalog kind through ``nvml_names``.
``Device.index`` is the NVML index, i.e. PCI bus order; quantgate sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
for the tools so that their CUDA indices agree. ``declared_inventory("h100:8,a6000:4")`` builds the
same structure without hardware, for plans and dry runs. Memory is in GiB (2**30 bytes) throughout:
the catalog's ``memory_gb`` of 80 for an H100 is read as 80 GiB (NVML reports 79.6 GiB for an
"H100 80GB HBM3").
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantgate.catalog import Catalog
from quantgate.errors import QuantgateError

GIB = float(1 << 30)


class InventoryUnavailable(QuantgateError):
    """NVML could not be asked (library missing, no driver); the message says which."""


@dataclass(frozen=True)
class Device:
    """One GPU: ``index`` is its NVML (PCI bus order) index; ``kind`` its catalog key, or None."""

    index: int
    name: str
    memory_gb: float
    free_gb: float
    compute_capability: float | None
    kind: str | None
    uuid: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "memory_gb": round(self.memory_gb, 3),
            "free_gb": round(self.free_gb, 3),
            "compute_capability": self.compute_capability,
            "kind": self.kind,
            "uuid": self.uuid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Device:
        return cls(
            index=int(data["index"]),
            name=str(data["name"]),
            memory_gb=float(data["memory_gb"]),
            free_gb=float(data["free_gb"]),
            compute_capability=data.get("compute_capability"),
            kind=data.get("kind"),
            uuid=data.get("uuid"),
        )


@dataclass(frozen=True)
class Inventory:
    """The GPUs placement may use, in order, and where the list came from."""

    devices: tuple[Device, ...]
    source: str
    note: str | None = None
    driver: str | None = None
    cuda: str | None = None

    def count(self, kind: str) -> int:
        return sum(1 for d in self.devices if d.kind == kind)

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.devices:
            key = d.kind or f"unknown ({d.name})"
            out[key] = out.get(key, 0) + 1
        return out

    def summary(self) -> str:
        """``8x h100 (0-7), 4x a6000 (8-11)``, or ``no GPU``."""
        if not self.devices:
            return "no GPU"
        parts: list[str] = []
        for kind, n in self.kinds().items():
            indices = [d.index for d in self.devices if (d.kind or f"unknown ({d.name})") == kind]
            parts.append(f"{n}x {kind} ({_ranges(indices)})")
        return ", ".join(parts)

    def describe(self) -> str:
        """One line: what is here and where it came from (the pytest report header)."""
        text = f"{self.summary()} from {self.source}"
        return f"{text}: {self.note}" if self.note else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "note": self.note,
            "driver": self.driver,
            "cuda": self.cuda,
            "devices": [d.as_dict() for d in self.devices],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Inventory:
        return cls(
            devices=tuple(Device.from_dict(d) for d in data["devices"]),
            source=str(data["source"]),
            note=data.get("note"),
            driver=data.get("driver"),
            cuda=data.get("cuda"),
        )

    def machine_info(self) -> dict[str, Any]:
        """What a pytest-benchmark file's ``machine_info.gpu`` says about the GPUs of a run."""
        return {
            "devices": [d.name for d in self.devices],
            "kinds": self.kinds(),
            "driver": self.driver,
            "cuda": self.cuda,
            "source": self.source,
        }


_SPEC_PART = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?::\s*(\d+)\s*)?")


def declared_inventory(spec: str, catalog: Catalog, source: str | None = None) -> Inventory:
    """An inventory from ``KIND[:COUNT],...`` (``h100:8,a6000:4``); ``none`` or ``""`` is empty.

    Devices are numbered 0.. in the order given, with the catalog's memory and compute capability.
    Any problem is a ``QuantgateError`` naming the part of the spec at fault and the known kinds.
    """
    origin = source or f"declared {spec!r}"
    text = spec.strip()
    if text.lower() in {"", "none"}:
        return Inventory((), origin, None)
    gpu_kinds = [k for k, g in catalog.gpus.items() if g.memory_gb is not None]
    devices: list[Device] = []
    for part in text.split(","):
        match = _SPEC_PART.fullmatch(part)
        if not match:
            raise QuantgateError(
                "GPU inventory", f"cannot read {part.strip()!r}: expected KIND[:COUNT], e.g. h100:8", spec
            )
        kind, count_text = match.group(1).lower(), match.group(2)
        if kind not in gpu_kinds:
            raise QuantgateError(
                "GPU inventory", f"unknown GPU kind {kind!r}; known: {', '.join(gpu_kinds)}", spec
            )
        count = int(count_text) if count_text is not None else 1
        if not 1 <= count <= 64:
            raise QuantgateError("GPU inventory", f"count for {kind} must be 1..64, got {count}", spec)
        gpu = catalog.gpus[kind]
        assert gpu.memory_gb is not None
        for _ in range(count):
            devices.append(
                Device(len(devices), gpu.name, gpu.memory_gb, gpu.memory_gb, gpu.compute_capability, kind)
            )
    return Inventory(tuple(devices), origin, None)


def kind_of(name: str, catalog: Catalog) -> str | None:
    """The catalog kind whose ``nvml_names`` occur in an NVML device name (first match wins)."""
    for key, gpu in catalog.gpus.items():
        if any(alias in name for alias in gpu.nvml_names):
            return key
    return None


def visible_devices(devices: Sequence[Device], value: str | None) -> tuple[list[Device], str | None]:
    """Apply a ``CUDA_VISIBLE_DEVICES`` value to NVML devices; returns (visible, note).

    Unset means all; an empty value none. Entries are NVML indices or UUID prefixes (``GPU-8f3c``).
    As in CUDA, the first entry that matches no device (or repeats one) hides itself and the rest.
    """
    if value is None:
        return list(devices), None
    out: list[Device] = []
    for raw in value.split(","):
        token = raw.strip()
        found: Device | None = None
        if token.isdigit():
            found = next((d for d in devices if d.index == int(token)), None)
        elif token.startswith("GPU-"):
            matches = [d for d in devices if d.uuid and d.uuid.startswith(token)]
            found = matches[0] if len(matches) == 1 else None
        if found is None or found in out:
            shown = ",".join(str(d.index) for d in out) or "none"
            return (
                out,
                f"CUDA_VISIBLE_DEVICES={value!r}: {token!r} matches no single GPU, so CUDA stops there "
                f"(visible: {shown})",
            )
        out.append(found)
    return out, f"restricted by CUDA_VISIBLE_DEVICES={value!r}"


def nvml_inventory(catalog: Catalog, environ: Mapping[str, str] | None = None) -> Inventory:
    """The GPUs NVML reports, restricted by ``CUDA_VISIBLE_DEVICES``; raises ``InventoryUnavailable``.

    NVML itself ignores ``CUDA_VISIBLE_DEVICES``; this function applies it (see ``visible_devices``).
    """
    env = os.environ if environ is None else environ
    try:
        import pynvml
    except ImportError:
        raise InventoryUnavailable(
            "NVML", "nvidia-ml-py is not installed (pip install 'quantgate[gpu]')"
        ) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise InventoryUnavailable("NVML", f"cannot initialise: {exc}") from None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = _cuda_version(pynvml)
        devices: list[Device] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            devices.append(
                Device(
                    index=index,
                    name=name,
                    memory_gb=memory.total / GIB,
                    free_gb=memory.free / GIB,
                    compute_capability=float(f"{major}.{minor}"),
                    kind=kind_of(name, catalog),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                )
            )
    except pynvml.NVMLError as exc:
        raise InventoryUnavailable("NVML", f"cannot list devices: {exc}") from None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    visible, note = visible_devices(devices, env.get("CUDA_VISIBLE_DEVICES"))
    unknown = sorted({d.name for d in visible if d.kind is None})
    if unknown:
        extra = f"not in gpus.yaml, never used: {', '.join(unknown)}"
        note = f"{note}; {extra}" if note else extra
    return Inventory(tuple(visible), f"NVML (driver {driver})", note, driver, cuda)


def _cuda_version(pynvml: Any) -> str | None:
    """The CUDA version the driver supports (``12.4``), or None where NVML cannot say."""
    try:
        number = int(pynvml.nvmlSystemGetCudaDriverVersion())
    except (AttributeError, pynvml.NVMLError):
        return None
    return f"{number // 1000}.{number % 1000 // 10}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
