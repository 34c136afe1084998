"""What a served model needs on a GPU kind: memory fit per tensor-parallel size, and the compute path.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from quantgate.catalog import Catalog, GpuKind, ModelSpec, SchemeSpec
from quantgate.devices.inventory import GIB

GPU_MEMORY_UTILIZATION = 0.9
TP_SIZES = (1, 2, 4, 8)
MAX_NUM_BATCHED_TOKENS = 8192
MAX_NUM_SEQS = 256
VOCAB_PADDING = 64
RUNTIME_GB = 1.0
NCCL_GB = 0.5
KV_CACHE_BYTES = 2


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
