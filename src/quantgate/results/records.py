"""The data a reader returns: per-item outcomes, accuracy and performance results, a result file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from quantgate.errors import QuantgateError

KINDS: Final[tuple[str, ...]] = (
    "lighteval-results",
    "lighteval-details",
    "judge-jsonl",
    "lm-eval-results",
    "vllm-bench-latency",
    "vllm-bench-throughput",
    "vllm-bench-serve",
    "guidellm-report",
    "pytest-benchmark",
)

RESULT_SUFFIXES: Final[tuple[str, ...]] = (".json", ".jsonl", ".parquet")

# GuideLLM report schema versions this reader knows (the ``version`` field; absent before Dec 2025).
GUIDELLM_REPORT_VERSIONS: Final[tuple[int, ...]] = (1, 2)

_INTEGRAL_TOLERANCE: Final = 1e-6


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ItemOutcome:
    """Counts for one item: ``correct`` of ``samples`` generations were right.

    ``output_tokens`` is the mean number of generated tokens per sample, where the tool recorded it,
    and ``output_lengths`` each sample's (an answer cut at the generation limit has the limit's).
    """

    item: str
    samples: int
    correct: int
    output_tokens: float | None = None
    output_lengths: tuple[int, ...] | None = None
    score: float | None = None

    @property
    def value(self) -> float:
        """The item's score: ``score`` where the metric is a fraction (one answer), else the rate."""
        return self.score if self.score is not None else self.correct / self.samples

    def cut_at(self, limit: int) -> int | None:
        """Samples whose answer reached ``limit`` generated tokens (cut there), where lengths are known."""
        return None if self.output_lengths is None else sum(n >= limit for n in self.output_lengths)

    def __post_init__(self) -> None:
        if not isinstance(self.item, str) or not self.item:
            raise QuantgateError(None, f"item id must be a non-empty string, got {self.item!r}", "item")
        if not _is_count(self.samples) or self.samples < 1:
            raise QuantgateError(
                None, f"must be an integer >= 1, got {self.samples!r}", f"{self.item}.samples"
            )
        if not _is_count(self.correct) or not 0 <= self.correct <= self.samples:
            raise QuantgateError(
                None, f"must be an integer in 0..{self.samples}, got {self.correct!r}", f"{self.item}.correct"
            )
        if self.output_tokens is not None and (
            not _is_number(self.output_tokens)
            or not math.isfinite(self.output_tokens)
            or self.output_tokens < 0
        ):
            raise QuantgateError(
                None,
                f"must be a finite number >= 0, got {self.output_tokens!r}",
                f"{self.item}.output_tokens",
            )
        if self.score is not None and (
            self.samples != 1 or not _is_number(self.score) or not 0.0 <= self.score <= 1.0
        ):
            raise QuantgateError(
                None,
                f"a fractional score needs one answer and a value in 0..1, got {self.score!r}",
                f"{self.item}.score",
            )


@dataclass(frozen=True)
class AccuracyResult:
    """One task/metric score as the tool wrote it (a fraction 0..1 where the tool writes fractions).

    ``items`` holds per-item counts where the file has them (details, judge JSONL), else ``None``.
    ``samples_per_item`` comes from the metric name (``pass@k:k=1&n=20`` → 20) or the items.
    ``fewshot`` is the number of few-shot examples from the task key (``aime24|0`` → 0) or the tool's
    ``n-shot`` table, where known.
    """

    source: str
    kind: str
    tool_version: str | None
    model: str | None
    task: str
    metric: str
    value: float
    stderr: float | None
    samples_per_item: int | None
    items: tuple[ItemOutcome, ...] | None
    fewshot: int | None = None

    def __post_init__(self) -> None:
        where = f"{self.task}.{self.metric}"
        if not _is_number(self.value) or not math.isfinite(self.value):
            raise QuantgateError(self.source, f"value must be a finite number, got {self.value!r}", where)
        if self.stderr is not None and (
            not _is_number(self.stderr) or not math.isfinite(self.stderr) or self.stderr < 0
        ):
            raise QuantgateError(
                self.source, f"stderr must be a finite number >= 0, got {self.stderr!r}", where
            )
        if self.samples_per_item is not None and (
            not _is_count(self.samples_per_item) or self.samples_per_item < 1
        ):
            raise QuantgateError(
                self.source, f"samples_per_item must be an integer >= 1, got {self.samples_per_item!r}", where
            )


@dataclass(frozen=True)
class _Scores:
    """Makes the scores of one result file, each with the file's source, kind, tool version and model."""

    source: str
    kind: str
    tool_version: str | None = None
    model: str | None = None

    def score(
        self,
        task: str,
        metric: str,
        value: float,
        stderr: float | None,
        samples_per_item: int | None,
        fewshot: int | None,
        items: tuple[ItemOutcome, ...] | None = None,
    ) -> AccuracyResult:
        """A score as the file states it, with its per-item counts where the file has them."""
        return AccuracyResult(
            source=self.source,
            kind=self.kind,
            tool_version=self.tool_version,
            model=self.model,
            task=task,
            metric=metric,
            value=value,
            stderr=stderr,
            samples_per_item=samples_per_item,
            items=items,
            fewshot=fewshot,
        )

    def of_items(
        self, task: str, metric: str, outcomes: Sequence[ItemOutcome], fewshot: int | None = None
    ) -> AccuracyResult:
        """A score from per-item counts: the mean of the items' rates; samples per item where all agree."""
        per_item = [o.value for o in outcomes]
        sample_counts = {o.samples for o in outcomes}
        samples_per_item = sample_counts.pop() if len(sample_counts) == 1 else None
        mean = sum(per_item) / len(per_item)
        return self.score(task, metric, mean, None, samples_per_item, fewshot, tuple(outcomes))


@dataclass(frozen=True)
class PerfResult:
    """One performance measurement: a named run under a load ``scenario`` and its metrics.

    Metric names are shared across tools where the meaning is the same: ``request_throughput``
    (requests/s), ``output_throughput`` and ``total_token_throughput`` (tokens/s), ``latency_s``
    (mean per-request or per-iteration latency, seconds), ``{mean,median,std,pNN}_{ttft,tpot,itl,e2el}_ms``.
    ``samples`` holds per-request or per-iteration latencies in seconds where the file has them.
    """

    source: str
    kind: str
    tool_version: str | None
    model: str | None
    name: str
    scenario: str | None
    metrics: Mapping[str, float]
    samples: tuple[float, ...] | None
    prompt_tokens: int | None
    output_tokens: int | None

    def __post_init__(self) -> None:
        metrics = dict(self.metrics)
        for key, value in metrics.items():
            if not _is_number(value) or not math.isfinite(value):
                raise QuantgateError(
                    self.source, f"metric must be a finite number, got {value!r}", f"{self.name}.{key}"
                )
        object.__setattr__(self, "metrics", MappingProxyType(metrics))
        if self.samples is not None:
            for index, sample in enumerate(self.samples):
                if not _is_number(sample) or not math.isfinite(sample) or sample < 0:
                    raise QuantgateError(
                        self.source,
                        f"sample must be a finite number >= 0, got {sample!r}",
                        f"{self.name}.samples[{index}]",
                    )


@dataclass(frozen=True)
class ResultFile:
    """Everything read from one file: what wrote it, its scores, its timings and where it came from."""

    path: str
    kind: str
    tool_version: str | None
    accuracy: tuple[AccuracyResult, ...]
    performance: tuple[PerfResult, ...]
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))


Record = tuple[str, object]  # (where label such as "line 3" or "row 0", the parsed record)
