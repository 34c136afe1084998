"""Decode throughput and single-stream latency from the published performance tables, for planning.

Why: the catalog's duration model (``quantgate.matrix.catalog_cell_seconds``) has one decode rate per
parameter, whatever the GPU kind and scheme, and is off by up to 27x against the model cards' own
figures (``benchmarks/estimate_error.py``: A6000 BF16 decodes ~4.7x slower than it assumes). The cards
measured each GPU kind and scheme (``baselines/published/cards-2025-02.json``, vLLM 0.7.2): per model
and GPU count, the single-stream latency of each workload and the highest request rate (max QPS) the
multi-stream scenario kept to its limits. ``PublishedRates`` turns those into two rates:

* ``latency_s(gpu, scheme, workload, params_b, gpus)``: one request's end-to-end latency, alone;
* ``tokens_per_s(gpu, scheme, workload, params_b, gpus)``: the server's batched decode throughput,
  ``max QPS x output tokens`` (a lower bound: the cards' latency limits and prefill cost some of it).

and, for the goodput limits a server can meet at all (``quantgate.matrix.limit_problem``), one more:

* ``prefill_s(gpu, scheme, prompt_tokens, params_b, gpus)``: one prompt's prefill alone, the least time
  to its first token (``fit_prefill``), optionally at a lower confidence bound.

The first two are looked up per (scenario, GPU kind, scheme, workload) as a function of the parameters
each GPU holds, ``x = params_b / gpus``: the published figure itself where the tables have that model
on that many GPUs (several figures at one ``x`` are averaged in log space), else interpolated between
the two nearest published ``x`` in log-log space, else extrapolated from the nearest one along the
nearest segment's slope, bounded to what the physics allows (latency grows at most in proportion to ``x``,
throughput per GPU falls at most in proportion). Throughput is interpolated per GPU and multiplied by
``gpus``. A (GPU kind, scheme) the cards did not measure (H100 INT8, every H200 and L40S) gives None:
the caller falls back to the catalog's model. No parameter is fitted: ``without(model)`` drops one
model's figures, so that the error of the interpolation is measured on figures it did not see.

Deterministic: the figures come from a committed file and the arithmetic is the same on every runner,
so shards computed from these estimates are the same everywhere (``quantgate.devices.placement.Task``).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantgate import paths
from quantgate.catalog import Catalog, load_catalog
from quantgate.errors import QuantgateError
from quantgate.published import load_published

PUBLISHED_FILE = "cards-2025-02.json"
LATENCY = "single-stream"
THROUGHPUT = "multi-stream"
# Slope bounds of log(value) against log(params per GPU) when extrapolating (see the module docstring).
LATENCY_SLOPES = (0.0, 1.0)
THROUGHPUT_SLOPES = (-1.0, 0.0)

Key = tuple[str, str, str, str]  # (scenario, gpu, scheme, workload)
Shape = tuple[int, int]  # a workload's (prompt tokens, output tokens)


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One published figure as a rate: ``value`` is seconds (latency) or tokens/s per GPU (throughput)."""

    model: str
    params_per_gpu_b: float
    value: float


class PublishedRates:
    """The published figures by (scenario, GPU kind, scheme, workload), read as rates of ``x``."""

    def __init__(
        self, figures: Mapping[Key, Sequence[Figure]], shapes: Mapping[str, Shape] | None = None
    ) -> None:
        """``shapes``: each workload's (prompt, output) tokens, for the prefill fit (none: no prefill)."""
        self.figures: dict[Key, tuple[Figure, ...]] = {k: tuple(v) for k, v in figures.items() if v}
        self.shapes: dict[str, Shape] = dict(shapes or {})
        self._measured = {(k[1], k[2]) for k in self.figures}
        self._values: dict[tuple[Key, float], float] = {}  # collection looks up every cell: memoized
        self._prefill: dict[tuple[str, str], PrefillFit | None] = {}

    @classmethod
    def from_file(cls, path: str | Path, catalog: Catalog) -> PublishedRates:
        """Rates from a published-baselines file (read with ``quantgate.published.load_published``)."""
        published = load_published(path, catalog)
        figures: dict[Key, list[Figure]] = defaultdict(list)
        for entry in published.performance:
            params = catalog.models[entry.model].params_b / entry.gpu_count
            key = (entry.scenario, entry.gpu, entry.scheme, entry.workload)
            if entry.metric == "latency_s":
                figures[key].append(Figure(model=entry.model, params_per_gpu_b=params, value=entry.value))
            elif entry.metric == "max_qps":
                tokens = entry.value * catalog.workloads[entry.workload].output_tokens / entry.gpu_count
                figures[key].append(Figure(model=entry.model, params_per_gpu_b=params, value=tokens))
        shapes = {k: (w.prompt_tokens, w.output_tokens) for k, w in catalog.workloads.items()}
        return cls(figures, shapes)

    def without(self, model: str) -> PublishedRates:
        """The same tables less every figure of ``model`` (for held-out error measurements)."""
        return PublishedRates(
            {k: [f for f in v if f.model != model] for k, v in self.figures.items()}, self.shapes
        )

    def has(self, gpu: str, scheme: str) -> bool:
        """Whether the cards measured this GPU kind and scheme at all."""
        return (gpu, scheme) in self._measured

    def latency_s(self, gpu: str, scheme: str, workload: str, params_b: float, gpus: int) -> float | None:
        """One request's single-stream latency, or None where the cards have no such figures."""
        return self._value((LATENCY, gpu, scheme, workload), params_b / max(1, gpus), LATENCY_SLOPES)

    def tokens_per_s(self, gpu: str, scheme: str, workload: str, params_b: float, gpus: int) -> float | None:
        """The server's batched decode throughput (all its GPUs), or None where the cards have none."""
        per_gpu = self._value((THROUGHPUT, gpu, scheme, workload), params_b / max(1, gpus), THROUGHPUT_SLOPES)
        return None if per_gpu is None else per_gpu * max(1, gpus)

    def prefill_fit(self, gpu: str, scheme: str) -> PrefillFit | None:
        """The GPU kind and scheme's fitted prefill rate (``fit_prefill``), or None."""
        key = (gpu, scheme)
        if key not in self._prefill:
            latency = {k[3]: v for k, v in self.figures.items() if k[:3] == (LATENCY, gpu, scheme)}
            self._prefill[key] = fit_prefill(latency, self.shapes)
        return self._prefill[key]

    def prefill_s(
        self, gpu: str, scheme: str, prompt_tokens: int, params_b: float, gpus: int, z: float = 0.0
    ) -> float | None:
        """One prompt's prefill alone (seconds) at the fitted rate less ``z`` standard errors (``z``
        1.645: a one-sided 95 % lower bound), or None where the cards have no such figures."""
        fit = self.prefill_fit(gpu, scheme)
        if fit is None:
            return None
        return max(0.0, fit.rate - z * fit.stderr) * params_b / max(1, gpus) * prompt_tokens

    def _value(self, key: Key, x: float, slopes: tuple[float, float]) -> float | None:
        figures = self.figures.get(key)
        if figures is None:
            return None
        value = self._values.get((key, x))
        if value is None:
            value = self._values[(key, x)] = interpolate(figures, x, slopes)
        return value


def interpolate(figures: Sequence[Figure], x: float, slopes: tuple[float, float]) -> float:
    """``value`` at ``x`` by piecewise-linear interpolation in log-log space (see the module docstring).

    Figures of 1.0 at ``x`` 1 and 4.0 at ``x`` 4 give 2.0 at ``x`` 2; with slopes bounded to (0, 0.5)
    they give 8.0 at ``x`` 16 (the last segment's slope 1 bounded to 0.5, from 4.0 at 4).
    """
    if not figures:
        raise QuantgateError(None, "interpolate: no figures")
    by_x: dict[float, list[float]] = defaultdict(list)
    for figure in figures:
        by_x[math.log(figure.params_per_gpu_b)].append(math.log(figure.value))
    points = sorted((lx, sum(ly) / len(ly)) for lx, ly in by_x.items())
    lx = math.log(x)
    if len(points) == 1:
        (x0, y0) = points[0]
        slope = slopes[1] if slopes[1] > 0 else slopes[0]
        return math.exp(y0 + slope * (lx - x0))
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= lx <= x1:
            return math.exp(y0 + (y1 - y0) * (lx - x0) / (x1 - x0))
    (x0, y0), (x1, y1) = points[:2] if lx < points[0][0] else points[-2:]
    slope = min(max((y1 - y0) / (x1 - x0), slopes[0]), slopes[1])
    anchor_x, anchor_y = (x0, y0) if lx < points[0][0] else (x1, y1)
    return math.exp(anchor_y + slope * (lx - anchor_x))


@dataclass(frozen=True)
class PrefillFit:
    """Prefill seconds per prompt token per billion parameters a GPU holds (``rate``), its standard
    error, and how many figures it was fitted to."""

    rate: float
    stderr: float
    figures: int


def fit_prefill(latency: Mapping[str, Sequence[Figure]], shapes: Mapping[str, Shape]) -> PrefillFit | None:
    """The prefill rate fitted to single-stream latencies (``latency``: one GPU kind and scheme's
    figures by workload), or None where they cannot tell (no two prompt lengths with the same output,
    too few figures, or latency not growing with the prompt).

    Prefill is compute-bound: its FLOPs grow with the parameters and the prompt, shared by the GPUs, so
    one rate ``k`` per GPU kind and scheme gives ``k x params_b / gpus x prompt_tokens``. The cards
    print no time to first token, only each request's latency, and at 0.1 s: a prompt 768 tokens longer
    adds 0.0-0.4 s. So ``k`` is the least-squares slope of latency against ``params per GPU x prompt
    tokens`` over the workloads that share the fewest output tokens (the cards': 128, prompts of 256 to
    1,024 tokens; longer outputs add decoding over the longer context to the difference), each model
    and GPU count with its own intercept (its decoding), every model of the kind and scheme pooled. On
    the cards' tables the residuals are the printing's rounding (sd 0.02-0.04 s) and the standard error
    5-30 % of ``k``. Attention's quadratic share of a long prompt is left out.
    """
    groups: dict[int, list[tuple[int, Figure]]] = defaultdict(list)
    for workload, figures in latency.items():
        shape = shapes.get(workload)
        if shape is not None:
            groups[shape[1]] += [(shape[0], f) for f in figures]
    usable = sorted(out for out, points in groups.items() if len({p for p, _ in points}) > 1)
    if not usable:
        return None
    by_model: dict[tuple[str, float], list[tuple[float, float]]] = defaultdict(list)
    for prompt, figure in groups[usable[0]]:
        by_model[(figure.model, figure.params_per_gpu_b)].append(
            (figure.params_per_gpu_b * prompt, figure.value)
        )
    centred = []
    for points in by_model.values():
        mx = sum(x for x, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        centred += [(x - mx, y - my) for x, y in points]
    sxx = sum(x * x for x, _ in centred)
    freedom = len(centred) - len(by_model) - 1
    if sxx <= 0 or freedom < 1:
        return None
    rate = sum(x * y for x, y in centred) / sxx
    if rate <= 0:
        return None
    residual = sum((y - rate * x) ** 2 for x, y in centred) / freedom
    return PrefillFit(rate, math.sqrt(residual / sxx), len(centred))


_CACHE: dict[int, tuple[Catalog, PublishedRates]] = {}


def published_rates(catalog: Catalog | None = None) -> PublishedRates:
    """The data root's published tables as rates, read once per catalog and process.

    Tables that are missing, or whose keys are not ``catalog``'s (a test's toy catalog), give no rates:
    planning then uses the catalog's model. The file itself is checked by ``quantgate.published``'s
    readers and tests, not here: a plan is no place to fail on it.
    """
    catalog = catalog if catalog is not None else load_catalog()
    entry = _CACHE.get(id(catalog))
    if entry is None or entry[0] is not catalog:
        path = paths.published_dir() / PUBLISHED_FILE
        try:
            rates = PublishedRates.from_file(path, catalog) if path.exists() else PublishedRates({})
        except QuantgateError:
            rates = PublishedRates({})
        if len(_CACHE) >= 8:
            _CACHE.clear()
        entry = _CACHE[id(catalog)] = (catalog, rates)
    return entry[1]
