"""Device-kind files: what differs between ``cpu`` and a GPU kind, as data.

One pipeline (``quantgate.pipeline``) serves, evaluates, judges and benches every cell; a kind file
(``suites/kinds/<name>.yaml``) says what that pipeline does differently on its kinds:

* **models**: tiny local models built and quantized here (``models``, with ``calibration``), or,
  when the file lists none, the catalog's published checkpoints (``bf16_repo`` / ``quantized_repos``);
* **server**: the vLLM build's arguments and environment, its context (fixed, or each served model's
  from the matrix); a GPU server adds its lease's tensor-parallel size and memory share;
* **accuracy**: where lighteval's tasks read their data (local folders, or the hub), the generation
  limit and sample counts (fixed, or the catalog's and the matrix's);
* **speed**: the load of each scenario (and on CPU its token lengths; on GPUs the catalog workload's),
  and whether BF16 speed is measured in the same session or read from stored references;
* **budget**: the seconds a cell may spend; work is sized to them from a probed rate (CPU hosts of one
  machine kind differ 2-50x), or, without a budget, run in full with timeouts from the catalog estimate.

Every field is checked at load; a bad one is one error naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from quantgate import paths
from quantgate.catalog import Catalog, load_catalog
from quantgate.datafile import Strict, load_model
from quantgate.errors import QuantgateError

KIND_SCHEMA_VERSION = 1
Scenario = Literal["single-stream", "multi-stream", "server"]


class LocalModel(Strict):
    """A model built here (``fixtures/tinymodel``): its folder and the catalog tasks it is served on."""

    dir: Path
    family: Literal["llama", "qwen2"]
    params_b: float = Field(gt=0)
    benchmarks: tuple[str, ...] = Field(min_length=1)


class Calibration(Strict):
    file: Path
    samples: int = Field(ge=1)
    max_seq_length: int = Field(ge=8)


class ServerSettings(Strict):
    """``max_model_len`` ``None``: each served model's context from the matrix (its longest cell)."""

    max_model_len: int | None = Field(default=None, ge=16)
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    ready_timeout_s: float = Field(default=300.0, gt=0)


class AccuracySettings(Strict):
    """How a kind evaluates: lighteval's task file and quantgate's model backend, the folder of the
    tasks' local data (one sub-folder per catalog benchmark; ``None``: the hub datasets), the generation
    limit (``None``: the cell's context) and the most samples per item of a first look (``None``: the
    catalog's; the judge picks fewer where they suffice, never under ``min_first_samples``) and of a
    BF16 reference (``None``: the judge's cap). Temperature and top-p are the catalog's.
    ``reuse_reference``: a BF16 cell whose stored reference was made on this run's inputs (its provenance
    matches) passes on it instead of being evaluated again; any change of inputs measures it.
    ``fewshot``: every task's few-shot count on this kind (``None``: the catalog's; the cpu kind's
    tiny models have a 256-token context, where ARC's 25 examples cannot fit). ``pairwise_tokenization``:
    lighteval's vLLM option for log-likelihood tasks, context and choice tokenized apart instead of
    together and split (default off, as lighteval's)."""

    task_file: Path
    model_file: Path
    data: Path | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    first_samples: int | None = Field(default=None, ge=1)
    min_first_samples: int = Field(default=1, ge=1)
    reference_samples: int | None = Field(default=None, ge=2)
    seed: int = Field(default=0, ge=0)
    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=900.0, gt=0)
    output_length: tuple[float, float] = (0.9, 1.1)
    reuse_reference: bool = False
    fewshot: int | None = Field(default=None, ge=0)
    pairwise_tokenization: bool = False


class Goodput(Strict):
    ttft_ms: float = Field(gt=0)
    tpot_ms: float = Field(gt=0)


class CapacitySearch(Strict):
    """The server scenario as a capacity search (``quantgate.runners.capacity``): the highest Poisson
    rate at which ``attainment`` of the requests meet the goodput limits. ``start_rate`` ``None``: the
    probed batched generation rate over the output length; ``resolution``: the bracket (hi / lo) the
    search stops at; ``min_rate``/``max_rate``: the rates it stays within; ``max_steps``: its steps;
    ``step_s``: seconds of arrivals per step (a step offers ``rate x step_s`` prompts, at least the load's
    ``num_prompts``): with a fixed count, a rate high enough sends them all at once, and every rate
    above it offers the same load."""

    start_rate: float | None = Field(default=None, gt=0)
    factor: float = Field(default=2.0, gt=1)
    resolution: float = Field(default=1.25, gt=1)
    attainment: float = Field(default=0.9, gt=0, le=1)
    min_rate: float = Field(default=0.25, gt=0)
    max_rate: float = Field(default=1024.0, gt=0)
    max_steps: int = Field(default=10, ge=2)
    step_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _rates_ordered(self) -> CapacitySearch:
        if self.min_rate >= self.max_rate:
            raise ValueError(f"min_rate {self.min_rate} must be below max_rate {self.max_rate}")
        return self


class ScenarioLoad(Strict):
    """One scenario's load; ``input_len``/``output_len`` ``None``: the cell's catalog workload.
    ``search`` (server only, with ``goodput`` and without ``request_rate``): a capacity search.
    ``duration_s`` (a fixed load of a catalog workload): a run sends the prompts the cell's BF16 server
    is planned to finish in about that time, at least ``min_prompts``, at most ``num_prompts``
    (``quantgate.matrix.planned_prompts``), so a slow server's run is bounded by time, not by a count
    sized for a fast one."""

    input_len: int | None = Field(default=None, ge=1)
    output_len: int | None = Field(default=None, ge=1)
    num_prompts: int = Field(ge=1)
    min_prompts: int = Field(default=1, ge=1)
    duration_s: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    request_rate: float | None = Field(default=None, gt=0)
    goodput: Goodput | None = None
    search: CapacitySearch | None = None

    @model_validator(mode="after")
    def _search_has_limits(self) -> ScenarioLoad:
        if self.search is not None and (self.goodput is None or self.request_rate is not None):
            raise ValueError("search needs goodput limits and no request_rate (the search sets the rate)")
        if self.min_prompts > self.num_prompts:
            raise ValueError(f"min_prompts {self.min_prompts} must not exceed num_prompts {self.num_prompts}")
        if self.duration_s is not None and (self.search is not None or self.output_len is not None):
            raise ValueError("duration_s sizes a fixed load of a catalog workload (no search, no output_len)")
        return self


class SpeedSettings(Strict):
    """``reference: session``: BF16 is measured in the same session, before the model's other schemes
    (a CPU host's speed is its own); ``stored``: BF16 figures are per-kind references in
    ``baselines/<kind>/<model>/speed/`` (a GPU kind's shards split a model's schemes across runners).
    ``cap``: the most repeats a quantized cell reaches by top-ups while the speed judge is undecided
    (``quantgate.speedjudge``; unset: the verdict on ``repeats``); ``reference_repeats``: BF16's repeats
    (the reference every quantized cell is compared with; default ``repeats``); ``reuse_reference``
    (``stored`` only): a BF16 cell whose stored reference was made on this run's inputs reports it
    instead of benching again."""

    repeats: int = Field(ge=2)
    cap: int | None = Field(default=None, ge=2)
    reference_repeats: int | None = Field(default=None, ge=2)
    reuse_reference: bool = False
    warmups: int = Field(default=2, ge=0)
    scenarios: dict[Scenario, ScenarioLoad] = Field(min_length=1)
    reference: Literal["session", "stored"] = "session"
    timeout_s: float = Field(default=600.0, gt=0)


class CellBudget(Strict):
    """Seconds a cell may spend on accuracy and on speed; the work is sized to them (``budget``)."""

    accuracy_s: float = Field(default=math.inf, gt=0)
    speed_s: float = Field(default=math.inf, gt=0)
    min_items: int = Field(default=40, ge=1)
    probe_timeout_s: float = Field(default=20.0, gt=0)
    look_overhead_s: float = Field(default=4.0, ge=0)
    run_overhead_s: float = Field(default=1.5, ge=0)


class KindSpec(Strict):
    """A kind file: ``kinds`` are catalog device kinds (markers) whose cells it describes;
    ``inconclusive`` says whether an undecided gating cell fails the run (``fail``) or is reported as
    xfailed with its interval (``xfail``); ``--qg-inconclusive`` overrides it."""

    schema_version: int
    kinds: tuple[str, ...] = Field(min_length=1)
    offline: bool = False
    inconclusive: Literal["fail", "xfail"] = "fail"
    models: dict[str, LocalModel] = Field(default_factory=dict)
    schemes: tuple[str, ...] = Field(min_length=1)
    calibration: Calibration | None = None
    server: ServerSettings
    accuracy: AccuracySettings
    speed: SpeedSettings
    budget: CellBudget = Field(default_factory=CellBudget)

    @property
    def kind(self) -> str:
        """The kind of this file's local cells (its first)."""
        return self.kinds[0]

    @property
    def cpu(self) -> bool:
        return self.kinds == ("cpu",)


def load_kind(path: str | Path | None = None, catalog: Catalog | None = None) -> KindSpec:
    """Load a kind file (default: the cpu kind's); schemes and kinds must be the catalog's, ``bf16``
    (the reference) included."""
    path = path or paths.kind_file("cpu")
    spec = load_model(KindSpec, path, "kind", KIND_SCHEMA_VERSION)
    catalog = catalog or load_catalog()
    for index, scheme in enumerate(spec.schemes):
        if scheme not in catalog.schemes:
            known = ", ".join(catalog.schemes)
            raise QuantgateError(path, f"unknown scheme {scheme!r}; known: {known}", f"schemes[{index}]")
        if scheme in spec.schemes[:index]:
            raise QuantgateError(path, f"scheme {scheme!r} is listed twice", f"schemes[{index}]")
    if "bf16" not in spec.schemes:
        raise QuantgateError(path, "must include bf16, the reference of every other scheme", "schemes")
    for index, kind in enumerate(spec.kinds):
        if kind not in catalog.gpus:
            known = ", ".join(catalog.gpus)
            raise QuantgateError(path, f"unknown device kind {kind!r}; known: {known}", f"kinds[{index}]")
    if "cpu" in spec.kinds and not spec.cpu:
        raise QuantgateError(path, "cpu is a kind file of its own (vLLM's CPU build)", "kinds")
    if spec.models and spec.calibration is None:
        raise QuantgateError(path, "local models are quantized here: give their calibration", "calibration")
    for model, settings in spec.models.items():
        for index, benchmark in enumerate(settings.benchmarks):
            known_benchmark = catalog.benchmarks.get(benchmark)
            if (
                known_benchmark is None
                or known_benchmark.kind != "task"
                or not known_benchmark.lighteval_metric
            ):
                judged = ", ".join(
                    k for k, b in catalog.benchmarks.items() if b.kind == "task" and b.lighteval_metric
                )
                raise QuantgateError(
                    path,
                    f"{benchmark!r} is not a catalog task quantgate judges per item; those: {judged}",
                    f"models.{model}.benchmarks[{index}]",
                )
        for scenario, load in spec.speed.scenarios.items():
            if load.input_len is None or load.output_len is None:
                raise QuantgateError(
                    path,
                    "local models have no catalog workload: give input_len and output_len",
                    f"speed.scenarios.{scenario}",
                )
    if spec.models and spec.server.max_model_len is None:
        raise QuantgateError(path, "local models need a fixed context", "server.max_model_len")
    return spec
