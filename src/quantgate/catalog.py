"""The catalog: what quantgate can gate, read from ``suites/catalog/*.yaml``.

Six files, one per dimension of a cell: ``models.yaml``, ``schemes.yaml``, ``gpus.yaml``,
``benchmarks.yaml``, ``workloads.yaml`` and ``scenarios.yaml``. Each starts with
``schema_version: 1`` and maps *key -> entry* under a top-level key named like the file
(``models:``, ``schemes:`` ...). The keys (``Qwen-7B``, ``int4-w4a16``, ``h100``, ``aime24`` ...)
are what every other layer uses: cell ids, rules, baselines, published numbers.

Why data and not code: adding a GPU kind or a benchmark must not need a Python change, and every
number in the catalog carries a comment that says where it came from.

Every problem is one ``QuantgateError`` naming the file and the field path, for example
``suites/catalog/models.yaml: models.Qwen-7B.family: Input should be 'qwen2' or 'llama'``; closed
sets are ``Literal`` types so the message lists the allowed values. After each file validates on its
own, cross-file rules are checked (composite members exist; ``quantized_repos`` name known,
quantized schemes; keys published under one name are unambiguous).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, model_validator

from quantgate import paths
from quantgate.datafile import Strict, check_schema_version, load_document, validate
from quantgate.errors import QuantgateError

CATALOG_SCHEMA_VERSION = 1
CATALOG_ENV = "QUANTGATE_CATALOG"

Family = Literal["qwen2", "llama"]
SizeClass = Literal["small", "medium", "large"]
PublishedKind = Literal["model", "scheme", "benchmark", "workload", "scenario", "gpu"]

# Size classes used by the rules (recovery floors differ by size: the cards' 1.5B model recovers
# less than 7B+ under INT4). Upper bounds in billions of parameters, exclusive.
SIZE_CLASS_BOUNDS: tuple[tuple[SizeClass, float], ...] = (("small", 4.0), ("medium", 20.0))

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
M = TypeVar("M", bound=Strict)


class ModelSpec(Strict):
    """One base model: its repos and the architecture numbers GPU memory fitting needs."""

    name: str
    family: Family
    params_b: PositiveFloat
    bf16_repo: str
    quantized_repos: dict[str, str]
    layers: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    attention_heads: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    vocab_size: PositiveInt
    max_context: PositiveInt
    tied_embeddings: bool
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.attention_heads % self.kv_heads:
            raise ValueError(
                f"attention_heads ({self.attention_heads}) must be a multiple of kv_heads ({self.kv_heads})"
            )
        return self

    @property
    def size_class(self) -> SizeClass:
        """``small`` below 4B parameters, ``medium`` below 20B, else ``large``."""
        for name, bound in SIZE_CLASS_BOUNDS:
            if self.params_b < bound:
                return name
        return "large"


class QuantArgs(Strict):
    """How one tensor (weights or input activations) is quantized, as compressed-tensors records it."""

    num_bits: Literal[4, 8]
    type: Literal["float", "int"]
    strategy: Literal["tensor", "channel", "group", "token"]
    group_size: PositiveInt | None = None
    symmetric: bool
    dynamic: bool

    @model_validator(mode="after")
    def _group_size_iff_group(self) -> QuantArgs:
        if (self.strategy == "group") != (self.group_size is not None):
            raise ValueError("group_size is required for strategy 'group' and must be null otherwise")
        return self


class QuantSignature(Strict):
    """The ``quantization_config`` a checkpoint of the scheme must carry (all null for BF16)."""

    format: Literal["float-quantized", "int-quantized", "pack-quantized"] | None
    weights: QuantArgs | None
    input_activations: QuantArgs | None
    ignore: list[str]


class SchemeSpec(Strict):
    """A quantization scheme, or ``bf16``, the unquantized reference."""

    name: str
    published_key: Literal["bf16", "fp8", "w8a8", "w4a16"]
    repo_suffix: str | None
    weight_bits: Literal[4, 8, 16]
    activation_bits: Literal[8, 16]
    min_compute_capability: PositiveFloat | None
    recipe: str
    signature: QuantSignature

    @model_validator(mode="after")
    def _consistent(self) -> SchemeSpec:
        sig = self.signature
        quantized = self.repo_suffix is not None
        if (sig.format is not None) != quantized or (sig.weights is not None) != quantized:
            raise ValueError(
                "repo_suffix, signature.format and signature.weights must all be set (a quantized "
                "scheme) or all be null (bf16)"
            )
        if sig.weights is not None and sig.weights.num_bits != self.weight_bits:
            raise ValueError(
                f"weight_bits {self.weight_bits} differs from signature.weights.num_bits "
                f"{sig.weights.num_bits}"
            )
        act_bits = sig.input_activations.num_bits if sig.input_activations is not None else 16
        if act_bits != self.activation_bits:
            raise ValueError(
                f"activation_bits {self.activation_bits} differs from the signature's input "
                f"activations ({act_bits} bits)"
            )
        return self

    @property
    def quantized(self) -> bool:
        return self.repo_suffix is not None


class GpuKind(Strict):
    """A kind of accelerator (or ``cpu``); ``marker`` is the pytest marker, equal to the key."""

    name: str
    memory_gb: PositiveFloat | None
    compute_capability: PositiveFloat | None
    nvml_names: list[str]
    marker: str

    @model_validator(mode="after")
    def _cpu_has_nothing(self) -> GpuKind:
        if (self.memory_gb is None) != (self.compute_capability is None) or (self.memory_gb is None) != (
            not self.nvml_names
        ):
            raise ValueError(
                "memory_gb, compute_capability and nvml_names must all be given (a GPU) or all be "
                "null / empty (cpu)"
            )
        return self


class Sampling(Strict):
    """Sampling parameters of a sampled benchmark; ``samples`` is the most a first look draws per item;
    ``detect_drop`` the recovery loss a cell must catch with 95 % power, from which the judge sizes the
    cell (``quantgate.judge.samples_to_detect``); ``typical_score`` a BF16 score to plan with."""

    temperature: Annotated[float, Field(ge=0)]
    top_p: Annotated[float, Field(gt=0, le=1)]
    samples: PositiveInt
    detect_drop: Annotated[float, Field(gt=0, lt=1)] = 0.10
    typical_score: Annotated[float, Field(gt=0, lt=1)] = 0.5


class BenchmarkSpec(Strict):
    """An accuracy benchmark (``task``) or the mean of several (``composite``)."""

    name: str
    family: Literal["reasoning", "openllm_v1"]
    kind: Literal["task", "composite"]
    lighteval_task: str | None
    lighteval_metric: str | None = None
    fewshot: Annotated[int, Field(ge=0)] | None
    metric: Literal["pass@1", "acc", "acc_norm", "mc2", "exact_match_strict", "mean"]
    items: PositiveInt | None
    scoring: Literal["sampled", "deterministic"]
    sampling: Sampling | None
    members: list[str] = Field(default_factory=list)
    published_key: str

    @model_validator(mode="after")
    def _kind_fields(self) -> BenchmarkSpec:
        if self.kind == "task":
            missing = [f for f in ("lighteval_task", "fewshot", "items") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a task needs {', '.join(missing)}")
            if self.members:
                raise ValueError("only a composite has members")
            if self.metric == "mean":
                raise ValueError("metric 'mean' is for composites")
            if (self.scoring == "sampled") != (self.sampling is not None):
                raise ValueError("sampling is required when scoring is 'sampled' and must be null otherwise")
            if self.scoring == "sampled" and self.lighteval_metric is None:
                raise ValueError(
                    "a sampled task needs lighteval_metric, the per-item metric lighteval writes"
                )
        else:
            if not self.members:
                raise ValueError("a composite needs members")
            given = [
                f for f in ("lighteval_task", "fewshot", "items", "sampling") if getattr(self, f) is not None
            ]
            if given:
                raise ValueError(f"a composite has no {', '.join(given)} (its members do)")
            if self.metric != "mean":
                raise ValueError("a composite's metric is 'mean'")
        return self


class WorkloadSpec(Strict):
    """A performance workload: fixed prompt and output lengths in tokens."""

    name: str
    prompt_tokens: PositiveInt
    output_tokens: PositiveInt


class ScenarioSpec(Strict):
    """How requests are sent and which figure is kept."""

    name: str
    description: str
    metric: Literal["latency_s", "max_qps", "goodput_qps"]
    higher_is_better: bool
    published_name: str | None

    @model_validator(mode="after")
    def _direction(self) -> ScenarioSpec:
        if self.higher_is_better != (self.metric != "latency_s"):
            raise ValueError(
                f"higher_is_better must be {self.metric != 'latency_s'} for metric {self.metric}"
            )
        return self


_FILES: dict[str, str] = {
    "models": "models.yaml",
    "schemes": "schemes.yaml",
    "gpus": "gpus.yaml",
    "benchmarks": "benchmarks.yaml",
    "workloads": "workloads.yaml",
    "scenarios": "scenarios.yaml",
}
_SECTION_OF_KIND: dict[PublishedKind, str] = {
    "model": "models",
    "scheme": "schemes",
    "benchmark": "benchmarks",
    "workload": "workloads",
    "scenario": "scenarios",
    "gpu": "gpus",
}


@dataclass(frozen=True)
class Catalog:
    """The validated catalog; each dict keeps the YAML file's order."""

    directory: Path
    models: dict[str, ModelSpec]
    schemes: dict[str, SchemeSpec]
    gpus: dict[str, GpuKind]
    benchmarks: dict[str, BenchmarkSpec]
    workloads: dict[str, WorkloadSpec]
    scenarios: dict[str, ScenarioSpec]

    def file(self, section: str) -> Path:
        """The file a section was read from (``models`` -> ``<dir>/models.yaml``)."""
        return self.directory / _FILES[section]

    def _get(self, section: str, entries: Mapping[str, M], key: str) -> M:
        try:
            return entries[key]
        except KeyError:
            known = ", ".join(entries)
            raise QuantgateError(
                self.file(section), f"unknown key {key!r}; known: {known}", section
            ) from None

    def model(self, key: str) -> ModelSpec:
        return self._get("models", self.models, key)

    def scheme(self, key: str) -> SchemeSpec:
        return self._get("schemes", self.schemes, key)

    def gpu(self, key: str) -> GpuKind:
        return self._get("gpus", self.gpus, key)

    def benchmark(self, key: str) -> BenchmarkSpec:
        return self._get("benchmarks", self.benchmarks, key)

    def workload(self, key: str) -> WorkloadSpec:
        return self._get("workloads", self.workloads, key)

    def scenario(self, key: str) -> ScenarioSpec:
        return self._get("scenarios", self.scenarios, key)

    def quantized_schemes(self) -> list[str]:
        """Scheme keys other than the BF16 reference, in file order."""
        return [key for key, spec in self.schemes.items() if spec.quantized]

    def by_published(self, kind: PublishedKind, name: str) -> str:
        """The catalog key of something as the published sources name it.

        model: ``DeepSeek-R1-Distill-Qwen-7B`` -> ``Qwen-7B``; scheme: ``w4a16`` -> ``int4-w4a16``;
        benchmark: ``AIME2024_pass@1`` -> ``aime24``; workload: ``Multi-turn Chat`` ->
        ``multi-turn-chat``; scenario: ``single-stream (synchronous)`` -> ``single-stream``;
        gpu: ``H100`` -> ``h100`` (the key, the name or an NVML name, case-insensitively).
        """
        section = _SECTION_OF_KIND[kind]
        table = _published_names(self, kind)
        wanted = name.casefold() if kind == "gpu" else name
        if wanted in table:
            return table[wanted]
        known = ", ".join(sorted(table))
        raise QuantgateError(self.file(section), f"no {kind} published as {name!r}; known: {known}", section)


def _published_names(catalog: Catalog, kind: PublishedKind) -> dict[str, str]:
    """Published name -> key for one kind (GPU names case-folded)."""
    if kind != "gpu":
        return {name: key for key, name in _published_pairs(catalog, kind)}
    table: dict[str, str] = {}
    for key, gpu in catalog.gpus.items():
        for alias in (key, gpu.name, *gpu.nvml_names):
            table.setdefault(alias.casefold(), key)
    return table


def default_catalog_dir() -> Path:
    """``$QUANTGATE_CATALOG`` if set, else ``suites/catalog`` under quantgate's root (``quantgate.paths``)."""
    env = os.environ.get(CATALOG_ENV)
    if env:
        return Path(env)
    return paths.catalog_dir()


def load_catalog(directory: Path | None = None) -> Catalog:
    """Load and validate the catalog in ``directory`` (default: ``default_catalog_dir()``); cached."""
    where = Path(directory) if directory is not None else default_catalog_dir()
    if not where.is_dir():
        hint = "" if directory is not None else f" (set {CATALOG_ENV} or pass the catalog directory)"
        raise QuantgateError(where, f"catalog directory not found{hint}")
    return _load_resolved(where.resolve())


@functools.lru_cache(maxsize=16)
def _load_resolved(directory: Path) -> Catalog:
    catalog = Catalog(
        directory=directory,
        models=_read_section(directory, "models", ModelSpec),
        schemes=_read_section(directory, "schemes", SchemeSpec),
        gpus=_read_section(directory, "gpus", GpuKind),
        benchmarks=_read_section(directory, "benchmarks", BenchmarkSpec),
        workloads=_read_section(directory, "workloads", WorkloadSpec),
        scenarios=_read_section(directory, "scenarios", ScenarioSpec),
    )
    _cross_check(catalog)
    return catalog


def _read_section(directory: Path, section: str, model: type[M]) -> dict[str, M]:
    path = directory / _FILES[section]
    doc = check_schema_version(load_document(path), path, "catalog", CATALOG_SCHEMA_VERSION)
    for top in doc:
        if top not in ("schema_version", section):
            raise QuantgateError(
                path, f"unknown field (a catalog file holds schema_version and {section})", str(top)
            )
    if section not in doc:
        raise QuantgateError(path, f"missing: the mapping of {section} by key", section)
    entries: Any = doc[section]
    if not isinstance(entries, Mapping) or not entries:
        raise QuantgateError(path, "must be a non-empty mapping of key -> entry", section)
    out: dict[str, M] = {}
    for key, entry in entries.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise QuantgateError(
                path,
                f"key {key!r} must be letters, digits, '.', '_' or '-' (starting with a letter or digit)",
                f"{section}.{key}",
            )
        out[key] = validate(model, entry, path, prefix=f"{section}.{key}")
    return out


def _cross_check(catalog: Catalog) -> None:
    models_file = catalog.file("models")
    for key, model in catalog.models.items():
        for scheme_key, repo in model.quantized_repos.items():
            where = f"models.{key}.quantized_repos.{scheme_key}"
            scheme = catalog.schemes.get(scheme_key)
            if scheme is None or not scheme.quantized:
                known = ", ".join(catalog.quantized_schemes())
                raise QuantgateError(
                    models_file, f"not a quantized scheme of schemes.yaml; known: {known}", where
                )
            if scheme.repo_suffix is not None and not repo.endswith(scheme.repo_suffix):
                raise QuantgateError(
                    models_file, f"repo {repo!r} does not end with {scheme.repo_suffix!r}", where
                )

    for key, gpu in catalog.gpus.items():
        if gpu.marker != key:
            raise QuantgateError(catalog.file("gpus"), f"must equal the key {key!r}", f"gpus.{key}.marker")

    bench_file = catalog.file("benchmarks")
    for key, bench in catalog.benchmarks.items():
        for i, member in enumerate(bench.members):
            where = f"benchmarks.{key}.members[{i}]"
            target = catalog.benchmarks.get(member)
            if target is None:
                raise QuantgateError(
                    bench_file, f"unknown benchmark {member!r}; known: {', '.join(catalog.benchmarks)}", where
                )
            if target.kind != "task":
                raise QuantgateError(bench_file, f"{member!r} is a composite; members must be tasks", where)
            if (target.family, target.scoring) != (bench.family, bench.scoring):
                raise QuantgateError(
                    bench_file,
                    f"{member!r} is {target.family}/{target.scoring}, "
                    f"the composite {bench.family}/{bench.scoring}",
                    where,
                )

    for kind in _SECTION_OF_KIND:
        if kind == "gpu":
            continue
        section = _SECTION_OF_KIND[kind]
        seen: dict[str, str] = {}
        for key, name in _published_pairs(catalog, kind):
            if name in seen:
                raise QuantgateError(
                    catalog.file(section),
                    f"published name {name!r} is also used by {seen[name]!r}",
                    f"{section}.{key}",
                )
            seen[name] = key


def _published_pairs(catalog: Catalog, kind: PublishedKind) -> list[tuple[str, str]]:
    """(key, published name) pairs of one kind other than ``gpu``, in file order."""
    if kind == "model":
        return [(k, m.name) for k, m in catalog.models.items()]
    if kind == "scheme":
        return [(k, s.published_key) for k, s in catalog.schemes.items()]
    if kind == "benchmark":
        return [(k, b.published_key) for k, b in catalog.benchmarks.items()]
    if kind == "workload":
        return [(k, w.name) for k, w in catalog.workloads.items()]
    return [(k, s.published_name) for k, s in catalog.scenarios.items() if s.published_name is not None]
