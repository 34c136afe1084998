"""The matrix: the catalog expanded into cells, one per model x scheme x GPU kind x target.

A cell is what one test checks: an **accuracy** cell is a task benchmark (``aime24``, ``mmlu`` ...;
composites such as ``reasoning_avg`` are computed from their members, never run), a **performance**
cell is a scenario on a workload (``single-stream-multi-turn-chat``). BF16 cells are in the matrix
too: they are the references every quantized cell is judged against, measured on the same GPU kind.

Cell ids are stable and readable, ``<model>-<scheme>-<gpu>-<target>``::

    Qwen-7B-int4-w4a16-h100-aime24
    Qwen-7B-int4-w4a16-h100-single-stream-multi-turn-chat

Every cell of one (model, scheme, GPU kind) shares one **served model**, keyed
``<model>/<scheme>/<gpu>/tp<N>``: vLLM loads it once and all its accuracy and performance cells
query it (loading a 70B checkpoint costs minutes). Its tensor-parallel size is the smallest at which
the most demanding of its cells fits (``quantgate.devices.fit.fit_served_model``), computed over the whole
catalog so that a cell's id, its served model and its GPU count do not change with what a run selects.

KV-cache budget per cell (tokens the server must be able to hold at once):

* reasoning benchmarks (sampled): context 32,768 tokens (the generation limit of DeepSeek's R1
  evaluations), two sequences at full length = 65,536 tokens. Typical answers are 3k-12k tokens, so
  that pool keeps about 8-16 of them in flight; vLLM itself only needs one full-length sequence.
* few-shot benchmarks (Open LLM v1): context 4,096 (ARC's 25-shot prompts are the longest, ~3.5k),
  four sequences = 16,384 tokens.
* performance: one request of the workload (prompt + output tokens), the minimum vLLM starts with.
  Throughput is then measured on whatever KV cache the deployment has, as the cards did.

The ``cpu`` kind is left out for these models: the CPU lane serves tiny local models instead
(``fixtures/tinymodel``). A 1.5B-70B reasoning model on vLLM's CPU build would take days per
benchmark, and the FP8 and Marlin INT4 kernels the schemes are about exist only for GPUs.

A performance cell whose goodput limits cannot be met by construction is in the matrix but **not
planned** (``limit_problem``): its ``skip_reason`` starts with ``not planned:`` and says why, so that it
is collected and skipped with that reason (the skip report, the plan's skipped list, the coverage file)
and the gate does not expect it (``quantgate gate`` expects the cells without a skip reason). Such a
cell is one whose prompt's prefill alone, or its BF16 reference's, takes longer than the kind's TTFT
limit (at the estimate's 95 % lower bound): its server meets the limit at no rate (capacity 0, an
error for BF16 and nothing to judge a quantized cell against). An accuracy cell of a benchmark with
no single lighteval task judged per item (MMLU) is not planned either (``judged_problem``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from quantgate import paths
from quantgate.catalog import Catalog, load_catalog
from quantgate.devices.durations import (
    Durations,
    estimate_fixed_seconds,
    estimate_search_seconds,
    estimate_startup_seconds,
    fixed_prompts,
)
from quantgate.devices.fit import (
    TP_SIZES,
    Fit,
    compute_path_problem,
    estimate_memory,
    fit_served_model,
    tp_problem,
)
from quantgate.devices.placement import Task, shard_of_groups
from quantgate.devices.rates import PublishedRates, published_rates
from quantgate.devices.replicas import REPLICA_LIMIT_S, Piece, assign_replicas, replica_job
from quantgate.errors import QuantgateError
from quantgate.judge import DEFAULT_CAP, nominal_reference, samples_to_detect
from quantgate.kinds import KindSpec, ScenarioLoad, load_kind

CellKind = Literal["accuracy", "performance"]

REASONING_CONTEXT_TOKENS = 32_768
REASONING_SEQUENCES = 2
FEWSHOT_CONTEXT_TOKENS = 4_096
FEWSHOT_SEQUENCES = 4
PERFORMANCE_SEQUENCES = 1
# How a cell that is in the matrix but not planned (``limit_problem``) starts its skip reason.
NOT_PLANNED = "not planned: "


@dataclass(frozen=True)
class Requirement:
    """GPUs a cell's served model needs: ``count`` of its kind with ``memory_gb`` GiB each."""

    count: int
    memory_gb: float


@dataclass(frozen=True)
class ServedModel:
    """One vLLM server: a model under a scheme on ``tp`` GPUs of one kind."""

    key: str
    model: str
    scheme: str
    gpu: str
    fit: Fit
    context_tokens: int
    skip_reason: str | None

    @property
    def requirement(self) -> Requirement:
        estimate = self.fit.estimate
        count = self.fit.tp or (estimate.tp if estimate is not None else 1)
        return Requirement(count, round(estimate.need_gb, 2) if estimate is not None else 0.0)


@dataclass(frozen=True)
class MatrixCell:
    """One cell of the matrix; ``skip_reason`` is set when it cannot run on any inventory, or when it is
    not planned (``NOT_PLANNED``: ``limit_problem``)."""

    kind: CellKind
    model: str
    scheme: str
    gpu: str
    target: str
    served_model: str
    requirement: Requirement
    context_tokens: int
    kv_tokens: int
    skip_reason: str | None = None
    benchmark: str | None = None
    scenario: str | None = None
    workload: str | None = None
    replica: int = 1
    replicas: int = 1
    # An accuracy cell too long on its served model's GPUs runs on an accuracy-only replica served at
    # this larger tensor-parallel size (``requirement.count`` is then this TP); None: the served model's.
    replica_tp: int | None = None

    @property
    def cell_id(self) -> str:
        return f"{self.model}-{self.scheme}-{self.gpu}-{self.target}"

    @property
    def job(self) -> str:
        """The placement job (and xdist unit) of the cell: its served model, or one replica of it
        when the served model is split (``quantgate.devices.replicas``)."""
        return replica_job(self.served_model, self.replica, self.replicas, self.replica_tp)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cell_id": self.cell_id,
            "kind": self.kind,
            "model": self.model,
            "scheme": self.scheme,
            "gpu": self.gpu,
            "target": self.target,
            "served_model": self.served_model,
            "count": self.requirement.count,
            "memory_gb": self.requirement.memory_gb,
        }


def gpu_kinds(catalog: Catalog) -> list[str]:
    """GPU kinds the matrix covers: every catalog kind with memory (``cpu`` excluded, see above)."""
    return [key for key, gpu in catalog.gpus.items() if gpu.memory_gb is not None]


def excluded_kinds(catalog: Catalog) -> dict[str, str]:
    """Kinds left out of the matrix, with why."""
    return {
        key: "the CPU lane serves tiny local models; these 1.5B-70B models and their GPU kernels are not "
        "gated there"
        for key, gpu in catalog.gpus.items()
        if gpu.memory_gb is None
    }


def _budgets(catalog: Catalog) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """(context, KV tokens) of each accuracy target and each performance target."""
    accuracy: dict[str, tuple[int, int]] = {}
    for key, bench in catalog.benchmarks.items():
        if bench.kind != "task":
            continue
        if bench.family == "reasoning":
            accuracy[key] = (REASONING_CONTEXT_TOKENS, REASONING_CONTEXT_TOKENS * REASONING_SEQUENCES)
        else:
            accuracy[key] = (FEWSHOT_CONTEXT_TOKENS, FEWSHOT_CONTEXT_TOKENS * FEWSHOT_SEQUENCES)
    performance: dict[str, tuple[int, int]] = {}
    for scenario in catalog.scenarios:
        for wkey, workload in catalog.workloads.items():
            context = workload.prompt_tokens + workload.output_tokens
            performance[f"{scenario}-{wkey}"] = (context, context * PERFORMANCE_SEQUENCES)
    return accuracy, performance


_CACHE: dict[int, tuple[Catalog, dict[tuple[str, str, str], ServedModel], tuple[MatrixCell, ...]]] = {}


_SERVED: dict[int, tuple[Catalog, dict[tuple[str, str, str], ServedModel]]] = {}


def served_models(catalog: Catalog) -> dict[tuple[str, str, str], ServedModel]:
    """The served model of every (model, scheme, GPU kind) of the matrix. Cached apart from the cells:
    a cell's estimate asks for its BF16 server's (``reference_capacity``) while the cells are made."""
    entry = _SERVED.get(id(catalog))
    if entry is None or entry[0] is not catalog:
        if len(_SERVED) >= 8:
            _SERVED.clear()
        entry = _SERVED[id(catalog)] = (catalog, _served_models(catalog))
    return entry[1]


def _cached(
    catalog: Catalog,
) -> tuple[Catalog, dict[tuple[str, str, str], ServedModel], tuple[MatrixCell, ...]]:
    entry = _CACHE.get(id(catalog))
    if entry is None or entry[0] is not catalog:
        served = served_models(catalog)
        entry = (catalog, served, _expand(catalog, served))
        if len(_CACHE) >= 8:
            _CACHE.clear()
        _CACHE[id(catalog)] = entry
    return entry


def _served_models(catalog: Catalog) -> dict[tuple[str, str, str], ServedModel]:
    accuracy, performance = _budgets(catalog)
    budgets = [*accuracy.values(), *performance.values()]
    context = max(c for c, _ in budgets)
    kv_tokens = max(k for _, k in budgets)
    out: dict[tuple[str, str, str], ServedModel] = {}
    for model in catalog.models:
        for scheme in catalog.schemes:
            for gpu in gpu_kinds(catalog):
                fit = fit_served_model(catalog, model, scheme, gpu, kv_tokens)
                reason = compute_path_problem(catalog.schemes[scheme], catalog.gpus[gpu], gpu) or fit.reason
                tp = f"tp{fit.tp}" if fit.tp is not None else "tp-none"
                out[(model, scheme, gpu)] = ServedModel(
                    f"{model}/{scheme}/{gpu}/{tp}", model, scheme, gpu, fit, context, reason
                )
    return out


def _cell(server: ServedModel, kind: CellKind, target: str, budget: tuple[int, int]) -> MatrixCell:
    return MatrixCell(
        kind=kind,
        model=server.model,
        scheme=server.scheme,
        gpu=server.gpu,
        target=target,
        served_model=server.key,
        requirement=server.requirement,
        context_tokens=budget[0],
        kv_tokens=budget[1],
        skip_reason=server.skip_reason,
    )


def _expand(catalog: Catalog, served: dict[tuple[str, str, str], ServedModel]) -> tuple[MatrixCell, ...]:
    accuracy, performance = _budgets(catalog)
    cells: list[MatrixCell] = []
    for server in served.values():
        mine: list[MatrixCell] = []
        for target, budget in accuracy.items():
            mine.append(replace(_cell(server, "accuracy", target, budget), benchmark=target))
        for scenario in catalog.scenarios:
            for workload in catalog.workloads:
                target = f"{scenario}-{workload}"
                cell = _cell(server, "performance", target, performance[target])
                mine.append(replace(cell, scenario=scenario, workload=workload))
        if server.skip_reason is not None:
            cells += mine
            continue
        mine = [replace(c, skip_reason=judged_problem(catalog, c) or limit_problem(catalog, c)) for c in mine]
        planned = [c for c in mine if c.skip_reason is None]
        placed = {c.cell_id: c for c in _with_replicas(catalog, server, planned)}
        cells += [placed.get(c.cell_id, c) for c in mine]
    return tuple(cells)


# A cell is left out when its prefill exceeds the TTFT limit even at the fit's one-sided 95 % lower
# bound (``rates.fit_prefill``: the cards print latencies to 0.1 s, the rates' standard errors are 5-30 %),
# not on a fitted value a hair over the limit.
PREFILL_CONFIDENCE_Z = 1.645


def prefill_seconds(
    catalog: Catalog, model: str, scheme: str, gpu: str, gpus: int, prompt_tokens: int
) -> tuple[float, float, str]:
    """One prompt's prefill alone on a server of ``gpus`` GPUs: (estimate, its 95 % lower bound, where
    they come from). From the cards' single-stream latencies where they measured the GPU kind and
    scheme (``quantgate.devices.rates.fit_prefill``), else the catalog's model (a prompt token at
    ``PREFILL_COST`` of a batched generated token, ``catalog_cell_seconds``; no bound: the estimate)."""
    params = catalog.model(model).params_b
    rates = published_rates(catalog)
    published = rates.prefill_s(gpu, scheme, prompt_tokens, params, gpus)
    low = rates.prefill_s(gpu, scheme, prompt_tokens, params, gpus, PREFILL_CONFIDENCE_Z)
    if published is not None and low is not None:
        return published, low, "the cards' single-stream latencies"
    per_token = params * SECONDS_PER_TOKEN_PER_B / max(1, gpus) * PREFILL_COST
    return prompt_tokens * per_token, prompt_tokens * per_token, "the catalog's model"


def judged_problem(catalog: Catalog, cell: MatrixCell) -> str | None:
    """Why an accuracy cell is not planned (``NOT_PLANNED``...), or None: its benchmark has no single
    lighteval task with a per-item metric (MMLU: lighteval 0.13 defines it as 57 ``mmlu:<subject>``
    tasks), and quantgate judges one task per cell, per item. Left out at planning, such a cell starts
    no server and costs no GPU time; it is reported, never red by construction."""
    if cell.kind != "accuracy" or cell.benchmark is None:
        return None
    task = catalog.benchmark(cell.benchmark)
    if task.lighteval_task is not None and task.lighteval_metric:
        return None
    return (
        f"{NOT_PLANNED}{cell.benchmark} is not judged per item: lighteval 0.13 has no single task with a "
        f"per-item metric for it ({task.lighteval_task or 'no task'}; MMLU is 57 'mmlu:<subject>' tasks) "
        "and quantgate judges one task per cell"
    )


def limit_problem(catalog: Catalog, cell: MatrixCell) -> str | None:
    """Why a performance cell is not planned (``NOT_PLANNED``...), or None: its scenario has goodput
    limits on its GPU kind (``suites/kinds/gpu.yaml``) and the prefill of one of its prompts alone
    (``prefill_seconds``, on its served model's GPUs, at the estimate's 95 % lower bound) already
    exceeds the TTFT limit, on its own server or on its BF16 reference's.

    A request's first token cannot come before its prompt is prefilled, so such a server meets the
    limit at no rate, not even the search's lowest: its capacity is 0 by construction. For BF16 that is
    an error, and a quantized cell is judged against BF16's capacity, so without one it has nothing to
    be judged against; a quantized server that is the slower one would fail every night on the scenario
    alone. Neither tells anything a night could change. Where the cards did not measure the kind and
    scheme (H200, L40S, H100 INT8) the catalog's model decides, which leaves nothing out at the
    catalog's sizes: a cell is left out on figures, never by default. The TPOT limit is not checked:
    the cards' slowest single stream meets it alone (``suites/kinds/gpu.yaml``).
    """
    if cell.kind != "performance" or cell.scenario is None or cell.workload is None:
        return None
    spec = gpu_kind(catalog)
    if spec is None or cell.gpu not in spec.kinds:
        return None
    load = next((load for name, load in spec.speed.scenarios.items() if name == cell.scenario), None)
    if load is None or load.goodput is None:
        return None
    prompt = load.input_len or catalog.workload(cell.workload).prompt_tokens
    limit_s = load.goodput.ttft_ms / 1000
    served = served_models(catalog)
    for scheme in [cell.scheme] if is_reference(catalog, cell) else [cell.scheme, "bf16"]:
        server = served.get((cell.model, scheme, cell.gpu))
        if server is None or server.skip_reason is not None:
            continue
        gpus = server.requirement.count
        seconds, low, source = prefill_seconds(catalog, cell.model, scheme, cell.gpu, gpus, prompt)
        if low <= limit_s:
            continue
        own = scheme == cell.scheme
        whose = "its" if own else "its BF16 reference's"
        bound = f" (at least {low:.1f} s at 95 % confidence)" if low < seconds else ""
        outcome = "capacity 0 at every rate" if own else "no BF16 capacity to judge it against"
        return (
            f"{NOT_PLANNED}{whose} {prompt:,}-token prompt's prefill alone takes ~{seconds:.1f} s{bound} "
            f"on {gpus}x {cell.gpu} ({scheme}, from {source}), over the {cell.scenario} scenario's TTFT "
            f"limit of {limit_s:g} s: {outcome}"
        )
    return None


def _with_replicas(catalog: Catalog, server: ServedModel, cells: Sequence[MatrixCell]) -> list[MatrixCell]:
    """One served model's cells with their replica (``quantgate.devices.replicas``), from estimates;
    an accuracy cell too long for its served model's GPUs first widened (``widened``)."""
    cells = [widened(catalog, server, c) for c in cells]
    pieces = [
        Piece(
            name=c.cell_id,
            seconds=planned_cell_seconds(catalog, c),
            exclusive=c.kind != "accuracy",
            tp=c.replica_tp,
            group=c.workload,
        )
        for c in cells
    ]
    split, replicas = assign_replicas(pieces)
    if replicas == 1:
        return list(cells)
    return [replace(c, replica=split[c.cell_id], replicas=replicas) for c in cells]


# The widest tensor-parallel size an accuracy-only replica is served at: the whole of the nightly's
# smallest runner (A6000: 4 GPUs) and half of the others (8), so a wider replica can always be placed
# and leaves room for other jobs beside it.
WIDEST_REPLICA_TP = 4


# A cell within the limit is served wider only where that saves GPU-hours worth a server start and a
# job of its own: it is planned at least this long on its served model's GPUs, and a wider TP saves at
# least this share of its GPU-seconds. Without it (over-limit cells only) the A6000 job's gating cells
# took 8 nights to cover (benchmarks/nightly_rotation.py), with it 7 at 1-3 GPU-hours. 3 h keeps it to
# the 32B and 70B models' reasoning cells, whose wider TPs lie inside the published tables' range of
# parameters per GPU (the small models' would be extrapolated).
WIDEN_MIN_GPU_S = 3 * 3600.0
WIDEN_MIN_SAVING = 0.25


def widened(catalog: Catalog, server: ServedModel, cell: MatrixCell) -> MatrixCell:
    """The accuracy cell on a wider accuracy-only replica where its served model's GPUs would take
    longer than ``REPLICA_LIMIT_S`` or cost clearly more GPU-hours, else the cell as it is.

    Candidates: each larger TP up to ``WIDEST_REPLICA_TP`` that vLLM can shard the model over
    (``tp_problem``) and that fits memory with the served model's KV budget. A cell over the limit takes
    the candidate with the fewest GPU-seconds among those within the limit (else the shortest, if
    shorter than on its own GPUs). A cell within the limit and of at least ``WIDEN_MIN_GPU_S`` takes
    the cheapest candidate when it saves ``WIDEN_MIN_SAVING`` of its GPU-seconds.

    Why a wider server and not a longer night: the cards measured 7.6-17.6B parameters per GPU (32B
    on two GPUs, 70B on four); a 32B or 70B model on one GPU, as the fit serves it, is extrapolated
    from there with per-GPU throughput falling at most in proportion (``quantgate.devices.rates``),
    and its one GPU leaves little KV cache (Qwen-32B INT8 MATH-500 on A100: 9.9 h on one GPU, 1.1 h on
    two). The wider replica lands on a configuration the cards measured, shorter and cheaper. Accuracy
    is judged per item against the stored BF16 reference, so the candidate server's TP does not
    change what is measured; speed cells never widen (they measure the catalog's deployment).
    """
    if cell.kind != "accuracy" or server.fit.tp is None:
        return cell
    own_s = planned_cell_seconds(catalog, cell)
    own_gpu_s = own_s * server.fit.tp
    if own_s <= REPLICA_LIMIT_S and own_gpu_s < WIDEN_MIN_GPU_S:
        return cell
    wide = [(w, s, s * w.requirement.count) for w, s in _wider_candidates(catalog, server, cell)]
    if own_s > REPLICA_LIMIT_S:
        within = [w for w in wide if w[1] <= REPLICA_LIMIT_S]
        if within:
            return min(within, key=lambda w: (w[2], w[0].requirement.count))[0]
        shortest = min(wide, key=lambda w: w[1], default=None)
        return shortest[0] if shortest is not None and shortest[1] < own_s else cell
    cheaper = [w for w in wide if w[2] <= own_gpu_s * (1 - WIDEN_MIN_SAVING)]
    return min(cheaper, key=lambda w: (w[2], w[0].requirement.count))[0] if cheaper else cell


def _wider_candidates(
    catalog: Catalog, server: ServedModel, cell: MatrixCell
) -> list[tuple[MatrixCell, float]]:
    """The cell at each larger valid TP that fits memory, with its planned seconds there."""
    assert server.fit.tp is not None
    spec, scheme, memory = (
        catalog.model(cell.model),
        catalog.scheme(cell.scheme),
        catalog.gpu(cell.gpu).memory_gb,
    )
    assert memory is not None
    out: list[tuple[MatrixCell, float]] = []
    for tp in (t for t in TP_SIZES if server.fit.tp < t <= WIDEST_REPLICA_TP):
        if tp_problem(spec, scheme, tp) is not None:
            continue
        estimate = estimate_memory(spec, scheme, tp, server.fit.kv_tokens, memory)
        if estimate.fits:
            wide = replace(cell, requirement=Requirement(tp, round(estimate.need_gb, 2)), replica_tp=tp)
            out.append((wide, planned_cell_seconds(catalog, wide)))
    return out


def expand(catalog: Catalog | None = None, kind: CellKind | None = None) -> list[MatrixCell]:
    """All cells (or those of one ``kind``), ordered by model, scheme, GPU kind, then target."""
    cells = _cached(catalog if catalog is not None else load_catalog())[2]
    return [c for c in cells if kind is None or c.kind == kind]


def task_for_cell(catalog: Catalog, cell: MatrixCell, node_id: str, durations: Durations) -> Task:
    """The placement task of one cell: its served model, GPUs, and durations (learned, else estimated).

    Accuracy cells are shareable (a GPU may hold two servers within memory); performance cells are
    not, and neither is the served model they belong to (``quantgate.devices.placement.build_jobs``).
    """
    estimate = planned_cell_seconds(catalog, cell)
    served = served_models(catalog)[(cell.model, cell.scheme, cell.gpu)]
    # the whole checkpoint (per GPU at the served model's TP, times that TP), whatever TP serves it
    weights = served.fit.estimate.weights_gb * served.requirement.count if served.fit.estimate else 0.0
    return Task(
        node_id=node_id,
        job=cell.job,
        kind=cell.gpu,
        count=cell.requirement.count,
        memory_gb=cell.requirement.memory_gb,
        shareable=cell.kind == "accuracy",
        seconds=durations.cells.get(cell.cell_id, estimate),
        estimate_s=estimate,
        startup_s=durations.served_models.get(cell.served_model, estimate_startup_seconds(weights)),
        reference=is_reference(catalog, cell),
    )


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
# The published workload whose batched throughput times accuracy cells: short prompts, long answers.
ACCURACY_WORKLOAD = "code-completion"


# A quantized speed cell benches the kind's first repeats (GPU: 3) and, while the speed judge is
# undecided, more up to its cap (12). Simulated nightlies with nothing changed (benchmarks/nightly_noise.py,
# 5 % spread, published speedups as truth, 100 nights) spent 1.45x the first looks' GPU-hours on H100's
# speed cells, 1.25x on A100's and 1.16x on A6000's (the cards' H100 speedups sit closer to their
# floors); kinds without published speedups take 1.3, those three's mean weighted by their hours.
SPEED_TOP_UP_FACTORS = {"h100": 1.45, "a100": 1.25, "a6000": 1.16}
SPEED_TOP_UP_FACTOR = 1.3

# A cell whose cap is above the first look tops up while undecided (benchmarks/judge_power.py: AIME
# starting at 20 of 64 used 31 samples per item on average when nothing changed).
TOP_UP_FACTOR = 1.5


@functools.lru_cache(maxsize=64)
def planned_samples(items: int, most: int, drop: float, typical: float = 0.5) -> float:
    """Samples per item an accuracy cell is planned with: the judge's cap for a nominal reference of the
    benchmark's typical score (``quantgate.judge.samples_to_detect``, floor 0.97) when a first look
    reaches it, else a first look of ``most`` and its usual top-ups."""
    cap = samples_to_detect(nominal_reference(items, typical), 0.97, drop, DEFAULT_CAP)
    return float(cap) if cap <= most else min(float(cap), most * TOP_UP_FACTOR)


def planned_cell_seconds(catalog: Catalog, cell: MatrixCell) -> float:
    """What plans, shards and replicas count for a cell never measured: ``estimate_cell_seconds``
    (the work of a first look), and for a quantized speed cell its usual top-ups on top
    (``SPEED_TOP_UP_FACTORS``, per GPU kind). Tool timeouts and the nightly simulation use the first
    look's estimate itself: they scale it by the repeats they ask for."""
    estimate = estimate_cell_seconds(catalog, cell)
    if cell.kind == "performance" and not is_reference(catalog, cell):
        return estimate * SPEED_TOP_UP_FACTORS.get(cell.gpu, SPEED_TOP_UP_FACTOR)
    return estimate


def estimate_cell_seconds(catalog: Catalog, cell: MatrixCell) -> float:
    """Planned duration of one cell before any run has measured it: from the published tables where the
    cards measured the cell's GPU kind and scheme (``published_cell_seconds``), else the catalog's
    model (``catalog_cell_seconds``). Both come from committed files only, so every runner computes the
    same value (shards depend on it)."""
    published = published_cell_seconds(catalog, cell)
    return published if published is not None else catalog_cell_seconds(catalog, cell)


def published_cell_seconds(
    catalog: Catalog, cell: MatrixCell, rates: PublishedRates | None = None
) -> float | None:
    """The cell's duration at the published rates (``quantgate.devices.rates``), or None where the
    cards did not measure its GPU kind and scheme (or its workload).

    The same work as ``catalog_cell_seconds``, timed with the cards' figures: accuracy cells generate
    at the batched throughput of ``ACCURACY_WORKLOAD`` (short prompts, long answers, as reasoning
    benchmarks), a fixed load's runs and a capacity search's steps are timed on a server of the
    workload's published latency and max QPS (``fixed_cell_seconds``, ``search_cell_seconds``).
    """
    rates = rates if rates is not None else published_rates(catalog)
    if not rates.has(cell.gpu, cell.scheme):
        return None
    params, gpus = catalog.model(cell.model).params_b, max(1, cell.requirement.count)
    if cell.kind == "accuracy":
        tps = rates.tokens_per_s(cell.gpu, cell.scheme, ACCURACY_WORKLOAD, params, gpus)
        return None if tps is None else _accuracy_tokens(catalog, cell) / tps
    assert cell.scenario is not None
    assert cell.workload is not None
    loaded = scenario_load(catalog, cell)
    latency = rates.latency_s(cell.gpu, cell.scheme, cell.workload, params, gpus)
    tps = rates.tokens_per_s(cell.gpu, cell.scheme, cell.workload, params, gpus)
    if loaded is None:
        if catalog.scenario(cell.scenario).metric != "latency_s":
            return SWEEP_SECONDS
        return None if latency is None else SINGLE_STREAM_REQUESTS * latency
    if tps is None or latency is None:
        return None
    if loaded[1].search is not None:
        return search_cell_seconds(catalog, cell, *loaded, tps, latency, rates)
    output = catalog.workload(cell.workload).output_tokens
    return fixed_cell_seconds(catalog, cell, *loaded, latency, tps / output, rates)


def _accuracy_tokens(catalog: Catalog, cell: MatrixCell) -> float:
    """Generated-token equivalents of an accuracy cell (prefill counted at ``PREFILL_COST``)."""
    bench = catalog.benchmark(cell.target)
    items = bench.items or 0
    if bench.sampling is not None:
        sampling = bench.sampling
        samples = planned_samples(items, sampling.samples, sampling.detect_drop, sampling.typical_score)
        return items * samples * REASONING_OUTPUT_TOKENS
    tokens = items * ((bench.fewshot or 0) + 1) * PROMPT_TOKENS_PER_SHOT * PREFILL_COST
    if bench.metric == "exact_match_strict":
        tokens += items * GENERATIVE_OUTPUT_TOKENS
    return tokens


def catalog_cell_seconds(catalog: Catalog, cell: MatrixCell) -> float:
    """Duration of one cell by the catalog's own model, where the published tables have no figures.

    Decoding speed of a served model is taken as ``params_b x 3e-5 / gpus`` seconds per generated
    token in a full batch (about 4,000 tokens/s for an 8B model on one GPU, 1,900 for 70B on four),
    whatever the scheme and GPU kind.

    * sampled accuracy (reasoning): ``items x samples x 6000`` generated tokens (R1-distill models
      think 3k-12k tokens per answer on AIME, MATH-500 and GPQA), ``samples`` what the judge needs for
      the item count (``planned_samples``);
    * deterministic accuracy (few-shot, log-likelihood): ``items x (fewshot + 1) x 200`` prompt
      tokens at 0.05 of a generated token each (prefill is ~20x cheaper than decoding), plus 256
      generated tokens per item for generative metrics (GSM8K exact match);
    * performance: one request alone takes ``output_tokens x (4 ms + 0.4 ms x params_b / gpus)``, and
      the server's capacity is the decode rate above over the output tokens; the GPU kind file's load
      of the cell's scenario is timed on that server: a fixed load's runs (``fixed_cell_seconds``), a
      capacity search's steps (``search_cell_seconds``);
    * without a GPU kind file for the cell's kind (a test's toy catalog): a single-stream cell is 64
      requests one after another, other performance a sweep of 10 request rates x 60 s = 600 s.
    """
    model = catalog.model(cell.model)
    gpus = max(1, cell.requirement.count)
    per_token = model.params_b * SECONDS_PER_TOKEN_PER_B / gpus
    if cell.kind == "accuracy":
        return _accuracy_tokens(catalog, cell) * per_token
    assert cell.scenario is not None
    assert cell.workload is not None
    output = catalog.workload(cell.workload).output_tokens
    latency = catalog_latency_s(catalog, cell)
    loaded = scenario_load(catalog, cell)
    if loaded is None:
        if catalog.scenario(cell.scenario).metric == "latency_s":
            return SINGLE_STREAM_REQUESTS * latency
        return SWEEP_SECONDS
    if loaded[1].search is not None:
        return search_cell_seconds(catalog, cell, *loaded, 1 / per_token, latency)
    return fixed_cell_seconds(catalog, cell, *loaded, latency, 1 / per_token / output)


def catalog_latency_s(catalog: Catalog, cell: MatrixCell) -> float:
    """One request of the cell's workload alone on its served model, by the catalog's model
    (``catalog_cell_seconds``)."""
    params, gpus = catalog.model(cell.model).params_b, max(1, cell.requirement.count)
    return catalog.workload(cell.workload or "").output_tokens * (ITL_BASE_S + ITL_PER_B_S * params / gpus)


_KINDS: dict[int, tuple[Catalog, KindSpec | None]] = {}


def gpu_kind(catalog: Catalog) -> KindSpec | None:
    """The data root's GPU kind file (``suites/kinds/gpu.yaml``), read once per catalog and process;
    ``None`` where it is missing or not ``catalog``'s (a test's toy catalog): plans then time every
    scenario as if it had no search. The file itself is checked by its loader and tests, not here."""
    entry = _KINDS.get(id(catalog))
    if entry is None or entry[0] is not catalog:
        path = paths.kind_file("gpu")
        try:
            spec = load_kind(path, catalog) if path.exists() else None
        except QuantgateError:
            spec = None
        if len(_KINDS) >= 8:
            _KINDS.clear()
        entry = _KINDS[id(catalog)] = (catalog, spec)
    return entry[1]


def scenario_load(catalog: Catalog, cell: MatrixCell) -> tuple[KindSpec, ScenarioLoad] | None:
    """The GPU kind file and its load of the cell's scenario where the file describes the cell's GPU
    kind, else ``None``."""
    spec = gpu_kind(catalog)
    if spec is None or cell.gpu not in spec.kinds or cell.scenario is None:
        return None
    load = spec.speed.scenarios.get(cell.scenario)  # type: ignore[call-overload]
    return (spec, load) if load is not None else None


def searched_load(catalog: Catalog, cell: MatrixCell) -> tuple[KindSpec, ScenarioLoad] | None:
    """``scenario_load`` where that scenario is a capacity search (``kinds.CapacitySearch``), else
    ``None``."""
    loaded = scenario_load(catalog, cell)
    return loaded if loaded is not None and loaded[1].search is not None else None


def fixed_cell_seconds(
    catalog: Catalog,
    cell: MatrixCell,
    spec: KindSpec,
    load: ScenarioLoad,
    latency_s: float,
    capacity: float,
    rates: PublishedRates | None = None,
) -> float:
    """A fixed-load cell's first look (``pipeline.speed.SpeedStage.bench_runs``): the kind's ``repeats``
    runs of ``planned_prompts`` requests, each opened by the kind's warm-up requests, and for the kind's
    first fixed scenario also the discarded warm-up run that opens a served model's benches, on a
    server whose one request alone takes ``latency_s`` and whose capacity is ``capacity`` req/s
    (``devices.durations.estimate_fixed_seconds``)."""
    fixed = [name for name, entry in spec.speed.scenarios.items() if entry.search is None]
    runs = spec.speed.repeats + (1 if fixed and fixed[0] == cell.scenario else 0)
    prompts = planned_prompts(catalog, cell, load, rates)
    return estimate_fixed_seconds(
        prompts,
        spec.speed.warmups,
        latency_s,
        capacity,
        max_concurrency=load.max_concurrency,
        request_rate=load.request_rate,
        runs=runs,
    )


def planned_prompts(
    catalog: Catalog, cell: MatrixCell, load: ScenarioLoad, rates: PublishedRates | None = None
) -> int:
    """Prompts of one run of a fixed load on the cell (``devices.durations.fixed_prompts``), sized on
    its BF16 reference's planned server on the cell's GPU kind (the cell's own where BF16 has none), so
    that every scheme of a model, GPU kind and workload sends the same requests per GPU and their
    figures compare like with like. The rate: BF16's planned capacity (``planned_capacity``) times the
    cell's GPUs over BF16's (a 70B INT4 server on one H100 is sent a quarter of what BF16 on four is);
    with a concurrency limit, at most that many requests per one request's latency on BF16's server
    (published, else the catalog's ``catalog_latency_s``)."""
    if load.duration_s is None:
        return load.num_prompts
    reference = reference_cell(catalog, cell) or cell
    gpus = max(1, cell.requirement.count) / max(1, reference.requirement.count)
    rate = planned_capacity(catalog, reference, rates) * gpus
    if load.max_concurrency is not None:
        rate = min(rate, load.max_concurrency / planned_latency_s(catalog, reference, rates))
    return fixed_prompts(load, rate)


def planned_latency_s(catalog: Catalog, cell: MatrixCell, rates: PublishedRates | None = None) -> float:
    """One request of the cell's workload alone on its served model: the published latency of its GPU
    kind, scheme and GPU count where the cards measured them, else ``catalog_latency_s``."""
    assert cell.workload is not None
    rates = rates if rates is not None else published_rates(catalog)
    params, gpus = catalog.model(cell.model).params_b, max(1, cell.requirement.count)
    latency = rates.latency_s(cell.gpu, cell.scheme, cell.workload, params, gpus)
    return latency if latency is not None else catalog_latency_s(catalog, cell)


def search_cell_seconds(
    catalog: Catalog,
    cell: MatrixCell,
    spec: KindSpec,
    load: ScenarioLoad,
    tokens_per_s: float,
    latency_s: float,
    rates: PublishedRates | None = None,
) -> float:
    """A capacity-searched cell's first look: the kind's ``repeats`` searches
    (``devices.durations.estimate_search_seconds``) on a server whose capacity is ``tokens_per_s``
    (batched decode, all its GPUs) over the workload's output tokens, the first search started where
    the pipeline starts it (``pipeline.speed.SpeedStage.first_anchor``): for a quantized cell of a kind
    that stores BF16's speed figures, at BF16's planned capacity (``reference_capacity``, from
    ``rates``); else at the probe's rate: the probe's streams (the kind's accuracy concurrency x first
    samples, ``pipeline.core.rate``) each at one request's pace alone (``latency_s``), over the output
    tokens. Top-ups are more searches of the same cost (``planned_cell_seconds``)."""
    output = catalog.workload(cell.workload or "").output_tokens
    streams = spec.accuracy.concurrency * (spec.accuracy.first_samples or 1)
    return estimate_search_seconds(
        load,
        capacity=tokens_per_s / output,
        probed=streams / max(latency_s, 1e-9),
        output_tokens=output,
        repeats=spec.speed.repeats,
        reference=reference_capacity(catalog, cell, spec, rates),
    )


def reference_capacity(
    catalog: Catalog, cell: MatrixCell, spec: KindSpec, rates: PublishedRates | None = None
) -> float | None:
    """Where the pipeline starts a quantized searched cell's first search, planned: BF16's planned
    capacity (req/s) for the cell's target times the cell's GPUs over BF16's
    (``pipeline.speed.SpeedStage.first_anchor``), where the kind stores BF16's speed figures (``speed.
    reference: stored``) and the model's BF16 server runs on the cell's GPU kind (else there is no
    reference to start from); else ``None``. BF16's capacity is the one its own searched cell is
    planned on (``planned_capacity``, on BF16's GPUs)."""
    if is_reference(catalog, cell) or spec.speed.reference != "stored" or cell.workload is None:
        return None
    bf16 = reference_cell(catalog, cell)
    if bf16 is None:
        return None
    gpus = max(1, bf16.requirement.count)
    return planned_capacity(catalog, bf16, rates) * max(1, cell.requirement.count) / gpus


def reference_cell(catalog: Catalog, cell: MatrixCell) -> MatrixCell | None:
    """The cell's BF16 reference on its GPU kind, on BF16's served model (the cell itself for a BF16
    cell), or ``None`` where that server is not run there."""
    server = served_models(catalog).get((cell.model, "bf16", cell.gpu))
    if server is None or server.skip_reason is not None:
        return None
    return replace(
        cell,
        scheme="bf16",
        served_model=server.key,
        requirement=server.requirement,
        replica=1,
        replicas=1,
        replica_tp=None,
    )


def planned_capacity(catalog: Catalog, cell: MatrixCell, rates: PublishedRates | None = None) -> float:
    """The capacity (req/s) a performance cell's server is planned with (its search's, its fixed loads'):
    the published batched decode throughput of its GPU kind, scheme, workload and GPU count where the
    cards measured them (``published_cell_seconds``), else the catalog's decode rate
    (``catalog_cell_seconds``), over the workload's output tokens."""
    assert cell.workload is not None
    rates = rates if rates is not None else published_rates(catalog)
    params, gpus = catalog.model(cell.model).params_b, max(1, cell.requirement.count)
    output = catalog.workload(cell.workload).output_tokens
    if rates.has(cell.gpu, cell.scheme):
        tps = rates.tokens_per_s(cell.gpu, cell.scheme, cell.workload, params, gpus)
        latency = rates.latency_s(cell.gpu, cell.scheme, cell.workload, params, gpus)
        if tps is not None and latency is not None:
            return tps / output
    return gpus / (params * SECONDS_PER_TOKEN_PER_B) / output


def shard(cells: Sequence[MatrixCell], k: int, n: int, catalog: Catalog) -> list[MatrixCell]:
    """The cells of shard ``k`` of ``n`` (1-based): whole jobs (served models, or replicas of the
    longest), balanced by estimated GPU-seconds (a served model on four GPUs weighs four times its
    hours), BF16 references and candidates each on their own (``shard_of_groups``). The same split
    as ``--qg-shard`` (``plugins.gpu``) makes from the cells' tasks."""
    if not 1 <= k <= n:
        raise QuantgateError(None, f"shard {k}/{n}: K must be between 1 and N")
    groups: dict[str, float] = {}
    references: set[str] = set()
    for cell in sorted(cells, key=lambda c: c.cell_id):
        if cell.skip_reason is not None:  # runs nothing: a group of its own that moves no other
            groups[cell.cell_id] = 0.0
            continue
        gpu_seconds = planned_cell_seconds(catalog, cell) * max(1, cell.requirement.count)
        groups[cell.job] = groups.get(cell.job, 0.0) + gpu_seconds
        if is_reference(catalog, cell):
            references.add(cell.job)
    assignment = shard_of_groups(groups, n, references)
    return [c for c in cells if assignment[c.cell_id if c.skip_reason is not None else c.job] == k]


def is_reference(catalog: Catalog, cell: MatrixCell) -> bool:
    """Whether the cell is a BF16 reference (its scheme is not quantized)."""
    scheme = catalog.schemes.get(cell.scheme)
    return scheme is not None and not scheme.quantized
