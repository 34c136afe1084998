"""GPUs: what is here (inventory), what a served model needs (fit), where and when it runs (placement).

Why this module exists: a 70B model in BF16 needs four 80 GiB GPUs, a 1.5B model a tenth of one; a
run of the whole matrix takes GPU-days. Before any GPU hour is spent quantgate must know which cells
can run on the machine at hand, on how many GPUs each served model goes, and in what order the
served models should run so that the GPUs stay busy. Everything here is pure Python on catalog data
(no pytest, no torch); NVML is imported only inside ``nvml_inventory``.

**Inventory.** ``nvml_inventory()`` lists the GPUs NVML reports, restricted to those
``CUDA_VISIBLE_DEVICES`` makes visible (indices or ``GPU-<uuid>`` prefixes, with CUDA's rule that an
invalid entry hides it and all later ones), each mapped to a catalog kind through ``nvml_names``.
``Device.index`` is the NVML index, i.e. PCI bus order; quantgate sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
for the tools so that their CUDA indices agree. ``declared_inventory("h100:8,a6000:4")`` builds the
same structure without hardware, for plans and dry runs. Memory is in GiB (2**30 bytes) throughout:
the catalog's ``memory_gb`` of 80 for an H100 is read as 80 GiB (NVML reports 79.6 GiB for an
"H100 80GB HBM3").

**Fit** (``fit_served_model``), per GPU at tensor-parallel size ``tp``, in vLLM's terms
(``gpu_memory_utilization`` 0.9 of the GPU is the budget; the other 10 % holds CUDA graphs, whose
capture vLLM does after sizing the KV cache, and allocator fragmentation):

* weights: every linear layer of the decoder at the scheme's bits per weight plus its scales
  (W4A16 group 128: one 16-bit scale per 128 weights, 4.125 bits/weight; W8A8 per channel: one fp32
  scale per output row, as vLLM allocates it), biases, norms, and the embeddings and ``lm_head`` in
  16 bits (the recipes ``ignore: [lm_head]``; embeddings are not Linear layers). Column-parallel
  layers split their outputs, row-parallel their inputs, the vocabulary is split (padded to 64),
  KV heads are replicated when ``tp`` exceeds them.
* activations: vLLM's profiling pass of ``max_num_batched_tokens`` = 8192 tokens through the widest
  layer (gate/up output, activated output, four hidden-sized buffers, in 16 bits; an 8-bit copy of
  the input for W8A8) plus the sampler's fp32 logits and probabilities for ``max_num_seqs`` = 256.
* runtime: 1.0 GiB for the CUDA context, cuBLAS workspaces and the allocator's start, plus 0.5 GiB
  for NCCL buffers when ``tp`` > 1.
* KV cache: ``layers x 2 x kv_heads/tp x head_dim x 2 bytes`` per token (no scheme quantizes the KV
  cache) times the token budget the cell asks for (``quantgate.matrix`` sets it: two full-length
  32k reasoning sequences, four 4k few-shot prompts, or one full performance request).

TP sizes are tried in 1, 2, 4, 8 and the smallest that fits is chosen; a size is valid only if it
divides ``attention_heads`` and divides ``kv_heads`` (or is a multiple of it: replication), divides
``intermediate_size``, and, for group-quantized weights, leaves whole groups on every shard of the
row-parallel layers (vLLM's Marlin kernel refuses otherwise).

**Compute path** (``compute_path_problem``): a scheme below its catalog ``min_compute_capability`` is
not run. FP8 W8A8 is the case that matters: vLLM's ``CompressedTensorsW8A8Fp8.get_min_capability()``
is 89 ("lovelace and up"); on an A100 or A6000 vLLM does not refuse the checkpoint but loads it as
``CompressedTensorsW8A16Fp8``, warning "Your GPU does not have native support for FP8 computation but
FP8 quantization is being used. Weight-only FP8 compression will be used leveraging the Marlin
kernel." That is a different deployment (W8A16) from the one the cards measured, so such cells are
skipped as "not the scheme's compute path" unless the catalog lowers the scheme's minimum.

**Durations** come from ``.quantgate/durations.json`` (learned from earlier runs) or, for cells never
run, from ``estimate_cell_seconds`` (formula in its docstring). **Placement** groups test items by
served model into jobs and runs them longest first (``LongestFirstPlacement``); ``make_plan`` is its
simulation, ``DeviceLeases`` the same policy between live pytest-xdist workers, and ``shard`` splits
served models between CI machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from quantgate.catalog import Catalog, GpuKind, ModelSpec, SchemeSpec
from quantgate.datafile import Strict, atomic_write_text, load_model
from quantgate.errors import QuantgateError

if TYPE_CHECKING:
    from quantgate.matrix import MatrixCell

GIB = float(1 << 30)
GPU_MEMORY_UTILIZATION = 0.9
TP_SIZES = (1, 2, 4, 8)
MAX_NUM_BATCHED_TOKENS = 8192
MAX_NUM_SEQS = 256
VOCAB_PADDING = 64
RUNTIME_GB = 1.0
NCCL_GB = 0.5
KV_CACHE_BYTES = 2

# -- inventory ---------------------------------------------------------------------------------------


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


# -- fit ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory one GPU of a served model needs at ``tp``, in GiB, against its budget ``capacity_gb``."""

    tp: int
    weights_gb: float
    activation_gb: float
    runtime_gb: float
    kv_gb: float
    kv_tokens: int
    kv_bytes_per_token: int
    capacity_gb: float

    @property
    def need_gb(self) -> float:
        return self.weights_gb + self.activation_gb + self.runtime_gb + self.kv_gb

    @property
    def fits(self) -> bool:
        return self.need_gb <= self.capacity_gb

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache would hold if the server took the whole budget."""
        free = self.capacity_gb - (self.weights_gb + self.activation_gb + self.runtime_gb)
        return max(0, int(free * GIB // self.kv_bytes_per_token))


@dataclass(frozen=True)
class Fit:
    """The smallest tensor-parallel size at which a model fits a GPU kind, or why none does."""

    model: str
    scheme: str
    gpu: str
    kv_tokens: int
    tp: int | None
    estimate: MemoryEstimate | None
    reason: str | None

    @property
    def fits(self) -> bool:
        return self.tp is not None


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    return model.kv_heads // tp if model.kv_heads >= tp else 1


def tp_problem(model: ModelSpec, scheme: SchemeSpec, tp: int) -> str | None:
    """Why vLLM cannot shard ``model`` over ``tp`` GPUs, or None."""
    if model.attention_heads % tp:
        return f"tp{tp} does not divide attention_heads {model.attention_heads}"
    if model.kv_heads >= tp and model.kv_heads % tp:
        return f"tp{tp} does not divide kv_heads {model.kv_heads}"
    if model.kv_heads < tp and tp % model.kv_heads:
        return f"tp{tp} is not a multiple of kv_heads {model.kv_heads}"
    if model.intermediate_size % tp:
        return f"tp{tp} does not divide intermediate_size {model.intermediate_size}"
    weights = scheme.signature.weights
    if weights is not None and weights.strategy == "group" and weights.group_size:
        for layer, size in (
            ("o_proj", model.attention_heads * model.head_dim // tp),
            ("down_proj", model.intermediate_size // tp),
        ):
            if size % weights.group_size:
                return (
                    f"tp{tp} leaves {size} {layer} inputs per GPU, not whole groups of {weights.group_size}"
                )
    return None


def _linear_bytes(in_features: int, out_features: int, scheme: SchemeSpec, quantized: bool = True) -> float:
    weights = scheme.signature.weights
    if weights is None or not quantized:
        return in_features * out_features * 2.0
    size = in_features * out_features * scheme.weight_bits / 8
    if weights.strategy == "group":
        assert weights.group_size is not None
        groups = out_features * math.ceil(in_features / weights.group_size)
        size += groups * 2.0 + (0.0 if weights.symmetric else groups * scheme.weight_bits / 8)
    elif weights.strategy in ("channel", "token"):
        size += out_features * 4.0 + (0.0 if weights.symmetric else out_features)
    else:
        size += 4.0
    return size


def weight_bytes_per_gpu(model: ModelSpec, scheme: SchemeSpec, tp: int) -> float:
    """Bytes of one GPU's shard of the checkpoint as vLLM holds it."""
    hd, hidden, inter = model.head_dim, model.hidden_size, model.intermediate_size
    q_out = model.attention_heads * hd // tp
    kv_out = kv_heads_per_gpu(model, tp) * hd
    layer = (
        _linear_bytes(hidden, q_out + 2 * kv_out, scheme)
        + _linear_bytes(model.attention_heads * hd // tp, hidden, scheme)
        + _linear_bytes(hidden, 2 * inter // tp, scheme)
        + _linear_bytes(inter // tp, hidden, scheme)
        + 2 * hidden * 2.0
    )
    if model.family == "qwen2":
        layer += (q_out + 2 * kv_out) * 2.0
    rows = math.ceil(model.vocab_size / (VOCAB_PADDING * tp)) * VOCAB_PADDING
    embed = rows * hidden * 2.0
    quantized_head = scheme.quantized and "lm_head" not in scheme.signature.ignore
    lm_head = 0.0 if model.tied_embeddings else _linear_bytes(hidden, rows, scheme, quantized_head)
    return model.layers * layer + embed + lm_head + hidden * 2.0


def activation_bytes_per_gpu(model: ModelSpec, scheme: SchemeSpec, tp: int) -> float:
    """Peak of vLLM's profiling forward pass plus the sampler's logits."""
    tokens = MAX_NUM_BATCHED_TOKENS
    inter = model.intermediate_size // tp
    peak = tokens * 2.0 * (3 * inter + 4 * model.hidden_size)
    if scheme.activation_bits == 8:
        peak += tokens * max(model.hidden_size, inter)
    logits = MAX_NUM_SEQS * model.vocab_size * 4.0 * 2
    return peak + logits


def kv_bytes_per_token(model: ModelSpec, tp: int) -> int:
    return model.layers * 2 * kv_heads_per_gpu(model, tp) * model.head_dim * KV_CACHE_BYTES


def estimate_memory(
    model: ModelSpec, scheme: SchemeSpec, tp: int, kv_tokens: int, memory_gb: float
) -> MemoryEstimate:
    """Per-GPU memory of ``model`` under ``scheme`` at ``tp`` holding ``kv_tokens`` of KV cache."""
    per_token = kv_bytes_per_token(model, tp)
    return MemoryEstimate(
        tp=tp,
        weights_gb=weight_bytes_per_gpu(model, scheme, tp) / GIB,
        activation_gb=activation_bytes_per_gpu(model, scheme, tp) / GIB,
        runtime_gb=RUNTIME_GB + (NCCL_GB if tp > 1 else 0.0),
        kv_gb=kv_tokens * per_token / GIB,
        kv_tokens=kv_tokens,
        kv_bytes_per_token=per_token,
        capacity_gb=memory_gb * GPU_MEMORY_UTILIZATION,
    )


def fit_served_model(
    catalog: Catalog,
    model: str,
    scheme: str,
    gpu: str,
    kv_tokens: int,
    tp_sizes: Sequence[int] = TP_SIZES,
) -> Fit:
    """The smallest valid ``tp`` in ``tp_sizes`` at which the model fits ``gpu`` with ``kv_tokens``."""
    spec, quant, kind = catalog.model(model), catalog.scheme(scheme), catalog.gpu(gpu)
    if kind.memory_gb is None:
        return Fit(model, scheme, gpu, kv_tokens, None, None, f"{gpu} is not a GPU")
    tried: list[str] = []
    last: MemoryEstimate | None = None
    for tp in tp_sizes:
        problem = tp_problem(spec, quant, tp)
        if problem:
            tried.append(problem)
            continue
        last = estimate_memory(spec, quant, tp, kv_tokens, kind.memory_gb)
        if last.fits:
            return Fit(model, scheme, gpu, kv_tokens, tp, last, None)
        tried.append(f"tp{tp} needs {last.need_gb:.1f} of {last.capacity_gb:.1f} GiB per GPU")
    return Fit(model, scheme, gpu, kv_tokens, None, last, f"does not fit on {gpu}: " + "; ".join(tried))


def compute_path_problem(scheme: SchemeSpec, gpu: GpuKind, gpu_key: str) -> str | None:
    """Why ``scheme`` does not run as itself on ``gpu`` (below its minimum compute capability)."""
    need, have = scheme.min_compute_capability, gpu.compute_capability
    if need is None or have is None or have >= need:
        return None
    weights, inputs = scheme.signature.weights, scheme.signature.input_activations
    if weights is not None and weights.type == "float" and inputs is not None and have >= 8.0:
        return (
            f"not the scheme's compute path: FP8 W8A8 needs compute capability >= {need:g} and "
            f"{gpu_key} has {have:g}; vLLM would run this checkpoint weight-only (W8A16) through the "
            "FP8 Marlin kernel"
        )
    return f"{scheme.name} needs compute capability >= {need:g}; {gpu_key} has {have:g}"


# -- durations ---------------------------------------------------------------------------------------

DURATIONS_SCHEMA_VERSION = 1
DURATIONS_KIND = "quantgate-durations"
DEFAULT_DURATIONS_PATH = Path(".quantgate") / "durations.json"

# Default estimate (see estimate_cell_seconds). Deliberately crude: one measured run replaces it.
SECONDS_PER_TOKEN_PER_B = 3.0e-5
REASONING_OUTPUT_TOKENS = 6000
PROMPT_TOKENS_PER_SHOT = 200
PREFILL_COST = 0.05
GENERATIVE_OUTPUT_TOKENS = 256
SINGLE_STREAM_REQUESTS = 64
ITL_BASE_S = 0.004
ITL_PER_B_S = 0.0004
SWEEP_SECONDS = 600.0
STARTUP_BASE_S = 90.0
LOAD_GIB_PER_S = 1.0

NonNegative = Annotated[float, Field(ge=0)]


class _DurationsFile(Strict):
    schema_version: int
    kind: Literal["quantgate-durations"]
    cells: dict[str, NonNegative]
    served_models: dict[str, NonNegative]


@dataclass
class Durations:
    """Learned seconds: per cell id (the test call) and per served model (its start-up)."""

    cells: dict[str, float] = field(default_factory=dict)
    served_models: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> str:
        doc = {
            "schema_version": DURATIONS_SCHEMA_VERSION,
            "kind": DURATIONS_KIND,
            "cells": {k: round(v, 3) for k, v in sorted(self.cells.items())},
            "served_models": {k: round(v, 3) for k, v in sorted(self.served_models.items())},
        }
        return json.dumps(doc, indent=1) + "\n"


def load_durations(path: str | Path) -> Durations:
    """Read a durations file; a missing file is empty, a bad one a ``QuantgateError``."""
    if not Path(path).exists():
        return Durations()
    doc = load_model(_DurationsFile, path, DURATIONS_KIND, DURATIONS_SCHEMA_VERSION)
    return Durations(dict(doc.cells), dict(doc.served_models))


def save_durations(path: str | Path, durations: Durations) -> None:
    """Write atomically (readers see the old file or the new one)."""
    atomic_write_text(path, durations.as_json())


def estimate_cell_seconds(catalog: Catalog, cell: MatrixCell) -> float:
    """Default duration of one cell, before any run has measured it.

    Decoding speed of a served model is taken as ``params_b x 3e-5 / gpus`` seconds per generated
    token in a full batch (about 4,000 tokens/s for an 8B model on one GPU, 1,900 for 70B on four),
    whatever the scheme and GPU kind.

    * sampled accuracy (reasoning): ``items x samples x 6000`` generated tokens (R1-distill models
      think 3k-12k tokens per answer on AIME, MATH-500 and GPQA);
    * deterministic accuracy (few-shot, log-likelihood): ``items x (fewshot + 1) x 200`` prompt
      tokens at 0.05 of a generated token each (prefill is ~20x cheaper than decoding), plus 256
      generated tokens per item for generative metrics (GSM8K exact match);
    * single-stream performance: 64 requests one after another, each ``output_tokens x
      (4 ms + 0.4 ms x params_b / gpus)``;
    * multi-stream and server performance: a sweep of 10 request rates x 60 s = 600 s.
    """
    model = catalog.model(cell.model)
    gpus = max(1, cell.requirement.count)
    per_token = model.params_b * SECONDS_PER_TOKEN_PER_B / gpus
    if cell.kind == "accuracy":
        bench = catalog.benchmark(cell.target)
        items = bench.items or 0
        if bench.sampling is not None:
            return items * bench.sampling.samples * REASONING_OUTPUT_TOKENS * per_token
        prompt = (bench.fewshot or 0) + 1
        tokens = items * prompt * PROMPT_TOKENS_PER_SHOT * PREFILL_COST
        if bench.metric == "exact_match_strict":
            tokens += items * GENERATIVE_OUTPUT_TOKENS
        return tokens * per_token
    assert cell.scenario is not None
    assert cell.workload is not None
    if catalog.scenario(cell.scenario).metric == "latency_s":
        output = catalog.workload(cell.workload).output_tokens
        return SINGLE_STREAM_REQUESTS * output * (ITL_BASE_S + ITL_PER_B_S * model.params_b / gpus)
    return SWEEP_SECONDS


def estimate_startup_seconds(weights_gb: float) -> float:
    """Start-up of a served model: 90 s (engine, CUDA graphs, compilation) + 1 s per GiB of weights."""
    return STARTUP_BASE_S + weights_gb / LOAD_GIB_PER_S


# -- placement ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One test item as placement sees it.

    ``job`` groups items that share one served model (they run on one worker, back to back, on the
    same devices); ``shareable`` items may share a GPU with other shareable jobs within memory
    (accuracy cells), the others need their GPUs alone (performance cells: speed is measured on an
    otherwise idle GPU). ``seconds`` plans the run (learned or estimated); ``estimate_s`` is the
    catalog-only estimate used for sharding, so that every CI machine computes the same shards.
    """

    node_id: str
    job: str
    kind: str
    count: int
    memory_gb: float
    shareable: bool
    seconds: float
    estimate_s: float
    startup_s: float = 0.0


@dataclass(frozen=True)
class Job:
    """All tasks of one served model; it holds ``count`` devices of ``kind`` for ``duration_s``."""

    key: str
    kind: str
    count: int
    memory_gb: float
    exclusive: bool
    startup_s: float
    tasks: tuple[Task, ...]

    @property
    def duration_s(self) -> float:
        return self.startup_s + sum(t.seconds for t in self.tasks)


def build_jobs(tasks: Iterable[Task]) -> list[Job]:
    """Group tasks by ``job`` (first-appearance order); a job is exclusive if any task is."""
    grouped: dict[str, list[Task]] = {}
    for task in tasks:
        grouped.setdefault(task.job, []).append(task)
    jobs: list[Job] = []
    for key, members in grouped.items():
        first = members[0]
        for other in members[1:]:
            if (other.kind, other.count) != (first.kind, first.count):
                raise QuantgateError(
                    other.node_id,
                    f"served model {key!r} needs {first.count}x {first.kind} for {first.node_id} but "
                    f"{other.count}x {other.kind} here",
                )
        jobs.append(
            Job(
                key=key,
                kind=first.kind,
                count=first.count,
                memory_gb=max(t.memory_gb for t in members),
                exclusive=not all(t.shareable for t in members),
                startup_s=max(t.startup_s for t in members),
                tasks=tuple(members),
            )
        )
    return jobs


@dataclass
class DeviceUse:
    """What is placed on one device now."""

    used_gb: float = 0.0
    holders: int = 0
    exclusive: bool = False


@dataclass(frozen=True)
class Request:
    """A worker waiting for devices: what its job needs and how long it will hold them."""

    kind: str
    count: int
    memory_gb: float
    exclusive: bool
    duration_s: float

    @classmethod
    def of(cls, job: Job) -> Request:
        return cls(job.kind, job.count, job.memory_gb, job.exclusive, job.duration_s)


@dataclass(frozen=True)
class Holding:
    """Devices held now, ``memory_gb`` booked on each, expected free at ``end_s``."""

    devices: tuple[int, ...]
    memory_gb: float
    exclusive: bool
    end_s: float


class LongestFirstPlacement:
    """Place served-model jobs on adjacent devices, longest job first, with EASY backfilling.

    The policy, the same for the plan (``simulate``) and for live xdist workers (``DeviceLeases``):

    1. order: jobs by estimated duration, longest first (LPT), ties by key;
    2. a worker runs one job at a time and takes the next job in that order when it is free;
    3. a job gets ``count`` devices of its kind that are adjacent in the inventory; exclusive jobs
       (any performance cell) only devices nobody holds, shareable jobs (accuracy only) devices with
       ``memory_gb`` still free of the budget ``min(0.9 x memory, free)`` and no exclusive holder.
       Windows aligned to ``count`` come first (0-3, 4-7 for four of eight), then, for shareable
       jobs, the devices already most used (pack small servers together), then the lowest index;
    4. waiting workers are served in arrival order (``grant``). The first one that cannot start gets
       a reservation: the devices and the time at which they will be free, from the running jobs'
       expected ends. A later waiter may start before it only on other devices, or if it will be
       done by then (EASY backfilling). Without the reservation a 4-GPU job would wait until four
       GPUs happen to be idle at once, while 1-GPU jobs keep taking them.

    Example, 4x a6000, four workers, LPT order Llama-70B/int4-w4a16/a6000/tp2 (25.7 h),
    Llama-70B/bf16/a6000/tp4 (12.9 h), then 1-GPU jobs::

        0 h     worker 0: Llama-70B int4 on 0,1
        0 h     worker 1: waits for 0-3, reserved from 25.7 h; workers 2, 3 backfill 2 and 3
                with 1-GPU jobs that end by 25.7 h
        25.7 h  worker 1: Llama-70B bf16 on 0-3

    A job no device set of the inventory could ever hold is not placed: ``unplaceable`` says why,
    and its items are skipped with that reason.
    """

    def __init__(self, inventory: Inventory, utilization: float = GPU_MEMORY_UTILIZATION) -> None:
        self.inventory = inventory
        self.utilization = utilization

    def capacity(self, device: Device) -> float:
        return min(device.memory_gb * self.utilization, device.free_gb)

    @staticmethod
    def order(jobs: Iterable[Job]) -> list[Job]:
        return sorted(jobs, key=lambda j: (-j.duration_s, j.key))

    def windows(self, kind: str, count: int) -> list[tuple[bool, tuple[Device, ...]]]:
        """Every run of ``count`` adjacent devices of ``kind``, with whether it is aligned."""
        devices = self.inventory.devices
        out: list[tuple[bool, tuple[Device, ...]]] = []
        run_start = 0
        for start in range(len(devices)):
            if devices[start].kind != kind:
                continue
            if start == 0 or devices[start - 1].kind != kind:
                run_start = start
            window = devices[start : start + count]
            if len(window) == count and all(d.kind == kind for d in window):
                out.append(((start - run_start) % count == 0, tuple(window)))
        return out

    def _room(self, device: Device, request: Request, use: DeviceUse | None) -> bool:
        if request.memory_gb > self.capacity(device) + 1e-9:
            return False
        if use is None or use.holders == 0:
            return True
        if request.exclusive or use.exclusive:
            return False
        return use.used_gb + request.memory_gb <= self.capacity(device) + 1e-9

    def choose(
        self, request: Request, usage: Mapping[int, DeviceUse], avoid: frozenset[int] = frozenset()
    ) -> tuple[int, ...] | None:
        """Indices of the devices rule 3 picks given what is placed now (never ``avoid``), or None."""
        best: tuple[tuple[int, float, int], tuple[int, ...]] | None = None
        for aligned, window in self.windows(request.kind, request.count):
            if any(d.index in avoid for d in window):
                continue
            if not all(self._room(d, request, usage.get(d.index)) for d in window):
                continue
            used = (
                0.0 if request.exclusive else sum(usage[d.index].used_gb for d in window if d.index in usage)
            )
            score = (0 if aligned else 1, -used, window[0].index)
            if best is None or score < best[0]:
                best = (score, tuple(d.index for d in window))
        return None if best is None else best[1]

    def booked(self, request: Request, devices: Sequence[int]) -> float:
        """Memory a job books on each of its devices: the whole budget when exclusive."""
        if not request.exclusive:
            return request.memory_gb
        by_index = {d.index: d for d in self.inventory.devices}
        return min(self.capacity(by_index[i]) for i in devices)

    def grant(
        self, waiting: Sequence[Request], held: Sequence[Holding], now: float
    ) -> dict[int, tuple[int, ...]]:
        """Rule 4: which waiters (by position, arrival order) start at ``now``, on which devices."""
        usage = _usage(held)
        holdings = list(held)
        grants: dict[int, tuple[int, ...]] = {}
        reservation: tuple[float, frozenset[int]] | None = None
        for position, request in enumerate(waiting):
            if reservation is None:
                devices = self.choose(request, usage)
                if devices is None:
                    reservation = self._reserve(request, holdings, now)
                    continue
            else:
                until, reserved = reservation
                devices = self.choose(request, usage, avoid=reserved)
                if devices is None and now + request.duration_s <= until:
                    devices = self.choose(request, usage)
                if devices is None:
                    continue
            booked = self.booked(request, devices)
            _book(usage, devices, booked, request.exclusive)
            holdings.append(Holding(devices, booked, request.exclusive, now + request.duration_s))
            grants[position] = devices
        return grants

    def _reserve(
        self, request: Request, holdings: Sequence[Holding], now: float
    ) -> tuple[float, frozenset[int]]:
        """When and where ``request`` could start if the holders leave at their expected ends."""
        remaining = sorted(holdings, key=lambda h: h.end_s)
        while remaining:
            end = remaining[0].end_s
            remaining = [h for h in remaining if h.end_s > end]
            devices = self.choose(request, _usage(remaining))
            if devices is not None:
                return max(now, end), frozenset(devices)
        return now, frozenset()

    def unplaceable(self, job: Job) -> str | None:
        """Why no device set of the inventory can hold ``job`` even when idle, or None."""
        if self.choose(Request.of(job), {}) is not None:
            return None
        have = self.inventory.count(job.kind)
        where = f"the inventory ({self.inventory.summary()}, from {self.inventory.source})"
        if have == 0:
            return f"no {job.kind} in {where}"
        if have < job.count:
            return f"needs {job.count}x {job.kind}; {where} has {have}"
        if not self.windows(job.kind, job.count):
            return f"needs {job.count} adjacent {job.kind}; {where} has none adjacent"
        best = max(self.capacity(d) for d in self.inventory.devices if d.kind == job.kind)
        return f"needs {job.memory_gb:.1f} GiB on each {job.kind}; at most {best:.1f} GiB is usable there"

    def simulate(self, jobs: Sequence[Job], workers: int) -> tuple[list[Scheduled], list[tuple[Job, str]]]:
        """Run the policy on estimated durations: (scheduled jobs, unplaceable jobs with reasons)."""
        if workers < 1:
            raise QuantgateError(None, f"workers must be at least 1, got {workers}")
        skipped = [(job, reason) for job in jobs if (reason := self.unplaceable(job)) is not None]
        queue = [job for job in self.order(jobs) if self.unplaceable(job) is None]
        idle = list(range(workers))
        waiting: list[tuple[int, Job]] = []
        running: list[Scheduled] = []
        done: list[Scheduled] = []
        now = 0.0
        while queue or waiting or running:
            for worker in sorted(idle):
                if not queue:
                    break
                waiting.append((worker, queue.pop(0)))
                idle.remove(worker)
            held = [Holding(s.devices, s.memory_gb, s.job.exclusive, s.end_s) for s in running]
            grants = self.grant([Request.of(job) for _, job in waiting], held, now)
            for position, devices in grants.items():
                worker, job = waiting[position]
                booked = self.booked(Request.of(job), devices)
                running.append(Scheduled(job, devices, worker, now, now + job.duration_s, booked))
            waiting = [w for position, w in enumerate(waiting) if position not in grants]
            if not running:
                raise RuntimeError("placement stalled with idle devices: a bug in LongestFirstPlacement")
            now = min(s.end_s for s in running)
            for finished in [s for s in running if s.end_s <= now]:
                running.remove(finished)
                done.append(finished)
                idle.append(finished.worker)
        return sorted(done, key=lambda s: (s.start_s, s.worker)), skipped


@dataclass(frozen=True)
class Scheduled:
    """A job placed on ``devices`` by ``worker`` from ``start_s`` to ``end_s`` (``memory_gb`` booked each)."""

    job: Job
    devices: tuple[int, ...]
    worker: int
    start_s: float
    end_s: float
    memory_gb: float


def _usage(holdings: Iterable[Holding]) -> dict[int, DeviceUse]:
    usage: dict[int, DeviceUse] = {}
    for h in holdings:
        _book(usage, h.devices, h.memory_gb, h.exclusive)
    return usage


# -- plan --------------------------------------------------------------------------------------------

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PlanEntry:
    node_id: str
    served_model: str
    devices: tuple[int, ...]
    worker: int
    start_s: float
    end_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "served_model": self.served_model,
            "devices": list(self.devices),
            "worker": self.worker,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
        }


@dataclass(frozen=True)
class Plan:
    """Which item runs where and when, if the estimates hold; and how good that is."""

    workers: int
    inventory: str
    scheduled: tuple[Scheduled, ...]
    entries: tuple[PlanEntry, ...]
    skipped: tuple[tuple[str, str, str], ...]
    makespan_s: float
    lower_bound_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "kind": "quantgate-plan",
            "workers": self.workers,
            "inventory": self.inventory,
            "entries": [e.as_dict() for e in self.entries],
            "skipped": [{"node_id": n, "served_model": s, "reason": r} for n, s, r in self.skipped],
            "makespan_s": round(self.makespan_s, 3),
            "lower_bound_s": round(self.lower_bound_s, 3),
        }

    def table(self) -> str:
        """The plan for people: one row per served model, in start order, and the totals."""
        rows: list[tuple[str, ...]] = [
            ("START", "END", "WORKER", "DEVICES", "SERVED MODEL", "ITEMS", "SHARE")
        ]
        for s in self.scheduled:
            rows.append(
                (
                    _hms(s.start_s),
                    _hms(s.end_s),
                    f"{s.worker}",
                    ",".join(str(i) for i in s.devices),
                    s.job.key,
                    str(len(s.job.tasks)),
                    "alone" if s.job.exclusive else f"{s.memory_gb:.1f} GiB",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        ratio = self.makespan_s / self.lower_bound_s if self.lower_bound_s else 1.0
        lines.append(
            f"plan for {self.workers} worker(s) on {self.inventory}: makespan {_hms(self.makespan_s)}, "
            f"lower bound {_hms(self.lower_bound_s)} ({ratio:.2f}x), {len(self.entries)} item(s) placed, "
            f"{len(self.skipped)} skipped"
        )
        reasons: dict[str, int] = {}
        for _, _, reason in self.skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"  skipped {n}: {reason}")
        return "\n".join(lines)


def lower_bound(jobs: Sequence[Job], policy: LongestFirstPlacement) -> float:
    """``max(GPU-seconds / GPUs, longest job)``, the GPU-seconds counted per kind.

    A shareable job counts ``memory_gb / capacity`` of each device it holds (two such jobs may share
    a GPU), an exclusive one all of it. With one GPU kind this is the textbook bound; with several,
    each kind's jobs can only use that kind's GPUs, so the largest per-kind quotient is still a bound.
    """
    longest = max((j.duration_s for j in jobs), default=0.0)
    per_kind: dict[str, float] = {}
    for job in jobs:
        devices = [d for d in policy.inventory.devices if d.kind == job.kind]
        if not devices:
            continue
        share = 1.0 if job.exclusive else min(1.0, job.memory_gb / max(policy.capacity(d) for d in devices))
        per_kind[job.kind] = per_kind.get(job.kind, 0.0) + job.duration_s * job.count * share
    quotients = [total / policy.inventory.count(kind) for kind, total in per_kind.items()]
    return max([longest, *quotients])


def make_plan(
    tasks: Sequence[Task],
    inventory: Inventory,
    workers: int,
    skipped: Sequence[tuple[str, str, str]] = (),
) -> Plan:
    """Plan ``tasks`` on ``inventory`` with ``workers`` pytest-xdist workers (1 without xdist).

    ``skipped`` lists items known not to run for other reasons, as (node id, served model, reason);
    they are reported beside the tasks no device set can hold.
    """
    policy = LongestFirstPlacement(inventory)
    jobs = build_jobs(tasks)
    scheduled, unplaceable = policy.simulate(jobs, workers)
    entries: list[PlanEntry] = []
    for s in scheduled:
        t = s.start_s + s.job.startup_s
        for task in s.job.tasks:
            entries.append(PlanEntry(task.node_id, s.job.key, s.devices, s.worker, t, t + task.seconds))
            t += task.seconds
    not_placed = tuple(skipped) + tuple((t.node_id, job.key, r) for job, r in unplaceable for t in job.tasks)
    placed = [s.job for s in scheduled]
    return Plan(
        workers=workers,
        inventory=inventory.summary(),
        scheduled=tuple(scheduled),
        entries=tuple(entries),
        skipped=not_placed,
        makespan_s=max((s.end_s for s in scheduled), default=0.0),
        lower_bound_s=lower_bound(placed, policy),
    )


def _hms(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


# -- sharding ----------------------------------------------------------------------------------------


def shard_of_groups(groups: Mapping[str, float], n: int) -> dict[str, int]:
    """Assign groups (key -> estimated seconds) to shards 1..n, longest first onto the lightest shard.

    Deterministic and independent of the mapping's order: groups are taken by (-seconds, key) and
    ties between shards go to the lowest shard number.
    """
    if n < 1:
        raise QuantgateError(None, f"the number of shards must be at least 1, got {n}")
    load = [0.0] * n
    out: dict[str, int] = {}
    for key, seconds in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])):
        target = min(range(n), key=lambda i: (load[i], i))
        load[target] += seconds
        out[key] = target + 1
    return out


def shard(cells: Sequence[MatrixCell], k: int, n: int, catalog: Catalog) -> list[MatrixCell]:
    """The cells of shard ``k`` of ``n`` (1-based): whole served models, balanced by estimate."""
    if not 1 <= k <= n:
        raise QuantgateError(None, f"shard {k}/{n}: K must be between 1 and N")
    groups: dict[str, float] = {}
    for cell in sorted(cells, key=lambda c: c.cell_id):
        groups[cell.served_model] = groups.get(cell.served_model, 0.0) + estimate_cell_seconds(catalog, cell)
    assignment = shard_of_groups(groups, n)
    return [c for c in cells if assignment[c.served_model] == k]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); anything else is a ``QuantgateError``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise QuantgateError("--qg-shard", f"expected K/N such as 2/4, got {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= k <= n:
        raise QuantgateError("--qg-shard", f"K must be 1..N and N at least 1, got {text!r}")
    return k, n


# -- leases between live workers ---------------------------------------------------------------------


class LeaseTimeout(QuantgateError):
    """A worker waited longer than allowed for its devices."""


@dataclass
class Lease:
    """Devices held by one worker for one job; ``on_release`` callbacks run before they are freed.

    A served-model fixture registers the stop of its server here, so that the devices are handed to
    another worker only once the server that used them has exited.
    """

    job: str
    owner: str
    devices: tuple[int, ...]
    memory_gb: float
    exclusive: bool
    gpu_memory_utilization: float
    waited_s: float = 0.0
    _callbacks: list[Callable[[], object]] = field(default_factory=list, repr=False)

    def on_release(self, callback: Callable[[], object]) -> None:
        self._callbacks.append(callback)

    def run_callbacks(self) -> None:
        errors: list[BaseException] = []
        while self._callbacks:
            try:
                self._callbacks.pop()()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class DeviceLeases:
    """``LongestFirstPlacement`` between processes: a JSON file of holders and waiters under a lock.

    Every worker of one run points at the same directory. ``acquire`` registers the worker as a
    waiter and polls; on each poll the waiters are served in arrival order on the devices free now
    (rule 4 of the policy), and the worker takes its devices when that pass gives it some. Holders and
    waiters whose process has died are dropped, so a crashed worker does not hold GPUs forever.
    """

    def __init__(self, directory: str | Path, inventory: Inventory, owner: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.policy = LongestFirstPlacement(inventory)
        self.owner = owner
        self._state = self.directory / "leases.json"
        self._lock = self.directory / "leases.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(self._lock, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state: dict[str, Any] = (
                    json.loads(self._state.read_text()) if self._state.exists() else {"seq": 0}
                )
                state.setdefault("held", [])
                state.setdefault("waiting", [])
                yield state
                atomic_write_text(self._state, json.dumps(state))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def try_acquire(self, job: Job) -> Lease | None:
        """One pass of rule 4 over all waiters: the lease if this worker may start now, else None.

        The worker stays queued (its arrival order kept) until it gets its devices or withdraws.
        """
        with self._locked() as state:
            _drop_dead(state)
            if not any(w["owner"] == self.owner for w in state["waiting"]):
                state["seq"] += 1
                request = Request.of(job)
                state["waiting"].append(
                    {
                        "owner": self.owner,
                        "pid": os.getpid(),
                        "seq": state["seq"],
                        "job": job.key,
                        "need": [
                            request.kind,
                            request.count,
                            request.memory_gb,
                            request.exclusive,
                            request.duration_s,
                        ],
                    }
                )
            now = time.time()
            waiting = sorted(state["waiting"], key=lambda w: w["seq"])
            held = [
                Holding(tuple(h["devices"]), h["memory_gb"], h["exclusive"], max(now, h["until"]))
                for h in state["held"]
            ]
            grants = self.policy.grant([Request(*w["need"]) for w in waiting], held, now)
            mine = next(n for n, w in enumerate(waiting) if w["owner"] == self.owner)
            if mine not in grants:
                return None
            devices = grants[mine]
            request = Request(*waiting[mine]["need"])
            booked = self.policy.booked(request, devices)
            state["waiting"].remove(waiting[mine])
            state["held"].append(
                {
                    "owner": self.owner,
                    "pid": os.getpid(),
                    "job": job.key,
                    "devices": list(devices),
                    "memory_gb": booked,
                    "exclusive": job.exclusive,
                    "until": now + job.duration_s,
                }
            )
            return Lease(job.key, self.owner, devices, booked, job.exclusive, self._utilization(job, devices))

    def acquire(self, job: Job, timeout_s: float, poll_s: float = 0.05) -> Lease:
        """Wait for this worker's turn (see ``try_acquire``); ``LeaseTimeout`` after ``timeout_s``."""
        start = time.monotonic()
        delay = poll_s
        while True:
            lease = self.try_acquire(job)
            if lease is not None:
                lease.waited_s = time.monotonic() - start
                return lease
            if time.monotonic() - start > timeout_s:
                with self._locked() as state:
                    state["waiting"] = [w for w in state["waiting"] if w["owner"] != self.owner]
                raise LeaseTimeout(
                    job.key, f"waited {timeout_s:g} s for {job.count}x {job.kind} without getting them"
                )
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)

    def release(self, lease: Lease) -> None:
        """Run the lease's callbacks, then free its devices (even when a callback fails)."""
        try:
            lease.run_callbacks()
        finally:
            with self._locked() as state:
                state["held"] = [
                    h for h in state["held"] if not (h["owner"] == lease.owner and h["job"] == lease.job)
                ]

    def holders(self) -> list[dict[str, Any]]:
        """The leases held now (for tests and diagnostics)."""
        with self._locked() as state:
            return list(state["held"])

    def _utilization(self, job: Job, devices: Sequence[int]) -> float:
        """``--gpu-memory-utilization`` for the server: its share of the smallest of its GPUs."""
        memory = min(d.memory_gb for d in self.policy.inventory.devices if d.index in devices)
        share = self.policy.booked(Request.of(job), devices) / memory
        if job.exclusive:
            return math.floor(min(GPU_MEMORY_UTILIZATION, share) * 100) / 100
        return min(GPU_MEMORY_UTILIZATION, math.ceil(share * 100) / 100)


def _book(usage: dict[int, DeviceUse], devices: Sequence[int], memory_gb: float, exclusive: bool) -> None:
    for index in devices:
        use = usage.setdefault(index, DeviceUse())
        use.used_gb += memory_gb
        use.holders += 1
        use.exclusive = use.exclusive or exclusive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_dead(state: dict[str, Any]) -> None:
    state["held"] = [h for h in state["held"] if _alive(int(h["pid"]))]
    state["waiting"] = [w for w in state["waiting"] if _alive(int(w["pid"]))]
