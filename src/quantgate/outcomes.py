"""What a judged cell produced: accuracy and speed outcomes, and the steps that make them.

``judge_sequentially`` is the accuracy cell's loop (a first look, then top-ups while the judge says
inconclusive); ``scenario_figures`` turns ``vllm bench serve`` results into one figure per repeat;
the outcomes carry what the report and pytest-benchmark JSON show. Pure apart from reading results
already written; the pipeline (``quantgate.pipeline``) does the work.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantgate import benchjson
from quantgate.budget import Cut, OverBudget
from quantgate.cellresult import CellResult
from quantgate.confirm import CONFIRMATION_CONFIDENCE, confirmed, needs_confirmation
from quantgate.envs import Envs, git_commit, machine
from quantgate.errors import QuantgateError
from quantgate.judge import DEFAULT_CAP, DEFAULT_CONFIDENCE, Verdict, judge_recovery
from quantgate.matrix import MatrixCell
from quantgate.rules import Decision
from quantgate.runners.bench import BenchResult
from quantgate.runners.capacity import capacities, searches
from quantgate.runners.evaluate import Evaluation, answers_and_cuts
from quantgate.speedjudge import DEFAULT_SPEED_CONFIDENCE, SpeedVerdict, judge_speedup


@dataclass(frozen=True)
class SpeedOutcome:
    """One scenario of one cell: its figures, BF16's, and the verdict (``None`` for BF16 itself)."""

    scenario: str
    metric: str
    higher_is_better: bool
    figures: list[float]
    bf16_figures: list[float]
    decision: Decision | None
    verdict: SpeedVerdict | None
    runs: tuple[BenchResult, ...] = ()
    gpus: int = 1
    bf16_gpus: int = 1
    reference_note: str | None = None
    reused: str | None = None

    def benchmark_entries(self, model: str, scheme: str, prefix: str) -> list[dict[str, object]]:
        """pytest-benchmark entries of this scenario's runs (``fullname`` ``<prefix>::<scenario>[...]``)."""
        return [
            benchjson.benchmark_entry(run, scheme=scheme, model=model, prefix=prefix) for run in self.runs
        ]

    def result(self, cell: MatrixCell, cuts: Sequence[str] = ()) -> CellResult:
        """This scenario's result for the reports, under ``cell``'s identity."""
        judged = self.verdict is not None and self.decision is not None
        verdict, decision = (self.verdict, self.decision) if judged else (None, None)
        return dataclasses.replace(
            CellResult.for_cell(cell, "speed"),
            cuts=tuple(cuts),
            metric=self.metric,
            unit="s" if self.metric == "latency_s" else "requests/s",
            figures=tuple(round(f, 6) for f in self.figures),
            median=statistics.median(self.figures),
            bf16_median=statistics.median(self.bf16_figures),
            geomean=geometric_mean(self.figures),
            bf16_geomean=geometric_mean(self.bf16_figures),
            verdict=None if self.verdict is None else self.verdict.verdict,
            speedup=verdict.speedup if verdict else None,
            low=verdict.low if verdict else None,
            high=verdict.high if verdict else None,
            floor=decision.floor if decision else None,
            rule=decision.rule_id if decision else None,
            gating=decision.gating if decision else True,
            detail=verdict.detail if verdict else (self.reused or ""),
            gpus=self.gpus,
            bf16_gpus=self.bf16_gpus,
            per_gpu_speedup=(
                self.verdict.per_gpu_speedup
                if self.verdict is not None and (self.gpus != 1 or self.bf16_gpus != 1)
                else None
            ),
        )


@dataclass(frozen=True)
class AccuracyOutcome:
    """A judged accuracy cell: every look the judge asked for, and its final verdict."""

    decision: Decision
    verdict: Verdict
    reference_path: Path
    reference_score: float
    score: float
    looks: tuple[Evaluation, ...]
    reference_note: str | None
    output_tokens: float | None = None
    reference_output_tokens: float | None = None
    cuts: tuple[Cut, ...] = ()
    metric: str | None = None

    def result(self, cell: MatrixCell) -> CellResult:
        """This cell's result for the reports (``cells.json``)."""
        return dataclasses.replace(
            CellResult.for_cell(cell, "accuracy"),
            metric=self.metric,
            verdict=self.verdict.verdict,
            gating=self.decision.gating,
            rule=self.decision.rule_id,
            floor=self.decision.floor,
            score=self.score,
            reference_score=self.reference_score,
            recovery=self.verdict.recovery,
            low=self.verdict.low,
            high=self.verdict.high,
            samples=self.verdict.candidate_samples,
            looks=tuple(look.job.samples for look in self.looks),
            seconds=self.seconds,
            detail=self.verdict.detail,
            output_tokens=self.output_tokens,
            reference_output_tokens=self.reference_output_tokens,
            length_ratio=self.length_ratio,
            tokens_per_solved=self.tokens_per_solved,
            seconds_per_solved=self.seconds_per_solved,
            cuts=tuple(str(c) for c in self.cuts),
            answers=self.answers,
            cut_answers=self.cut_answers,
        )

    @property
    def reused(self) -> bool:
        """A BF16 cell that passed on its stored reference, made on the same inputs: nothing was run."""
        return not self.looks

    @property
    def undecided_in_budget(self) -> bool:
        """Inconclusive because the budget cut the work: informational, not a gating verdict."""
        return bool(self.cuts) and self.verdict.verdict == "inconclusive"

    @property
    def seconds(self) -> float:
        return sum(look.seconds for look in self.looks)

    @property
    def length_ratio(self) -> float | None:
        """Mean output tokens per sample, candidate over reference (a model that thinks longer is slower)."""
        if not self.output_tokens or not self.reference_output_tokens:
            return None
        return self.output_tokens / self.reference_output_tokens

    @property
    def answers(self) -> int:
        return answers_and_cuts(self.looks)[0]

    @property
    def cut_answers(self) -> int | None:
        """Answers cut at the generation limit over all looks (``None`` when a look cannot tell)."""
        return answers_and_cuts(self.looks)[1]

    @property
    def solved(self) -> int:
        return sum(c for look in self.looks for _, c in look.counts.values())

    @property
    def seconds_per_solved(self) -> float | None:
        return self.seconds / self.solved if self.solved else None

    @property
    def tokens_per_solved(self) -> float | None:
        if self.output_tokens is None or not self.solved:
            return None
        samples = sum(n for look in self.looks for n, _ in look.counts.values())
        return self.output_tokens * samples / self.solved


def scenario_figures(
    results: Sequence[BenchResult], scenario: str, metric: str, allow_zero: bool = False
) -> list[float]:
    """One figure per repeat: mean request latency (s), request throughput or goodput (requests/s); for a
    server scenario benched as capacity searches, each finished search's capacity (``runners.capacity``:
    the highest rate whose requests met the limits; a cut search gives none, and fewer than two
    searches is ``OverBudget``, never a verdict).

    A goodput of 0 (no request met the limits) is a figure of a quantized cell (``allow_zero``); for
    BF16, the reference, it is an error naming the run: the limits are too tight for the machine.
    """
    if any(r.run.scenario == scenario and r.run.search is not None for r in results):
        return _capacity_figures(results, scenario, allow_zero)
    figures = []
    for result in results:
        if result.run.scenario != scenario:
            continue
        if metric == "latency_s":
            if not result.latencies_s:
                raise QuantgateError(result.result_path, "no per-request latencies", "latencies")
            figures.append(sum(result.latencies_s) / len(result.latencies_s))
        elif metric == "max_qps":
            figures.append(result.request_throughput)
        else:
            figures.append(result.figures.get("request_goodput", 0.0))
        if figures[-1] <= 0.0 and not allow_zero:
            raise QuantgateError(
                result.result_path,
                f"{metric} is 0: no request met the limits (too tight for this machine?)",
                "request_goodput",
            )
    if not figures:
        raise QuantgateError(None, f"no bench run for scenario {scenario!r}", "scenario")
    return figures


def _capacity_figures(results: Sequence[BenchResult], scenario: str, allow_zero: bool) -> list[float]:
    figures, dropped = capacities(results, scenario)
    if len(figures) < 2:
        why = "; ".join(dropped) or "no search finished"
        raise OverBudget(Cut(f"{scenario} capacity not judged", f"{len(figures)} searches finished ({why})"))
    if min(figures) <= 0.0 and not allow_zero:
        last = searches(results, scenario)[0][-1]
        raise QuantgateError(
            last.result_path,
            "capacity is 0: the lowest rate failed the limits (too tight for this machine?)",
            "request_goodput",
        )
    return figures


def geometric_mean(figures: Sequence[float]) -> float | None:
    """The figures' geometric mean, the centre the speed judge's speedup is the ratio of (0: ``None``)."""
    return statistics.geometric_mean(figures) if figures and min(figures) > 0 else None


def mean_output_tokens(pairs: list[tuple[int, float | None]]) -> float | None:
    """Mean tokens per sample over (samples, mean tokens) pairs; None when any is unknown."""
    if not pairs or any(tokens is None for _, tokens in pairs):
        return None
    total = sum(n for n, _ in pairs)
    return sum(n * (tokens or 0.0) for n, tokens in pairs) / total if total else None


def merge_counts(
    total: Mapping[str, tuple[int, int]], more: Mapping[str, tuple[int, int]], source: str
) -> dict[str, tuple[int, int]]:
    """Add a top-up's per-item counts to the earlier looks'; the item sets must agree."""
    if total and total.keys() != more.keys():
        raise QuantgateError(source, "a top-up returned a different item set than the first look", "items")
    return {
        item: (total.get(item, (0, 0))[0] + n, total.get(item, (0, 0))[1] + c)
        for item, (n, c) in more.items()
    }


def judge_sequentially(
    evaluate: Callable[[int, int], Evaluation],
    reference: Mapping[str, tuple[int, int]],
    floor: float,
    first_samples: int,
    reference_path: Path,
    cap: int = DEFAULT_CAP,
    fits: Callable[[int, Sequence[Evaluation]], bool] | None = None,
    confirm_confidence: float = CONFIRMATION_CONFIDENCE,
) -> tuple[Verdict, list[Evaluation], dict[str, tuple[int, int]]]:
    """Sample ``first_samples`` per item, then top up as the judge asks while it says inconclusive.

    ``evaluate(samples, look)`` runs one look; each look must use its own seed (vLLM repeats a seed's
    samples exactly). ``fits(samples, looks)`` may refuse a top-up (a time budget): the inconclusive
    verdict then stands. A fail is confirmed by one more look with fresh seeds and as many samples per
    item as the series drew, judged alone as a final look at ``confirm_confidence``
    (``quantgate.confirm``); unconfirmed, it is inconclusive.
    Returns the final verdict, every look (the confirmation last), and the series' per-item counts.
    """
    counts: dict[str, tuple[int, int]] = {}
    looks: list[Evaluation] = []
    samples = first_samples
    while True:
        looks.append(evaluate(samples, len(looks)))
        counts = merge_counts(counts, looks[-1].counts, str(looks[-1].details))
        verdict = _judge(reference, counts, floor, cap, looks[-1], reference_path, DEFAULT_CONFIDENCE)
        if verdict.verdict == "fail":
            break
        if verdict.verdict != "inconclusive" or verdict.more_samples == 0:
            return verdict, looks, counts
        if fits is not None and not fits(verdict.more_samples, looks):
            return verdict, looks, counts
        samples = verdict.more_samples
    drawn = next(iter(counts.values()))[0]
    if fits is not None and not fits(drawn, looks):
        return confirmed(verdict, None, "no time left to confirm it"), looks, counts
    looks.append(evaluate(drawn, len(looks)))
    fresh = merge_counts({}, looks[-1].counts, str(looks[-1].details))
    again = _judge(reference, fresh, floor, drawn, looks[-1], reference_path, confirm_confidence)
    return confirmed(verdict, again), looks, counts


def _judge(
    reference: Mapping[str, tuple[int, int]],
    counts: Mapping[str, tuple[int, int]],
    floor: float,
    cap: int,
    look: Evaluation,
    reference_path: Path,
    confidence: float,
) -> Verdict:
    try:
        return judge_recovery(reference, counts, floor, cap=cap, confidence=confidence)
    except QuantgateError as exc:
        raise QuantgateError(look.details, f"against {reference_path}: {exc.message}", exc.where) from None


def speed_judge(
    reference: Sequence[float],
    floor: float,
    *,
    higher_is_better: bool,
    cap: int | None,
    reference_gpus: int = 1,
    candidate_gpus: int = 1,
) -> Callable[[Sequence[float], bool], SpeedVerdict]:
    """The speed judge of one cell as ``judge_speed_sequentially`` calls it: ``(figures, confirming)``;
    a series is judged sequentially against ``cap``, a confirmation as a final look at
    ``CONFIRMATION_CONFIDENCE``."""

    def judge(figures: Sequence[float], confirming: bool) -> SpeedVerdict:
        return judge_speedup(
            reference,
            figures,
            floor,
            higher_is_better=higher_is_better,
            reference_gpus=reference_gpus,
            candidate_gpus=candidate_gpus,
            cap=None if confirming else cap,
            confidence=CONFIRMATION_CONFIDENCE if confirming else DEFAULT_SPEED_CONFIDENCE,
        )

    return judge


def judge_speed_sequentially(
    judge: Callable[[Sequence[float], bool], SpeedVerdict],
    figures: Sequence[float],
    more: Callable[[int], Sequence[float] | str],
    fresh: Callable[[int], Sequence[float] | str],
    confirm_repeats: int | None = None,
) -> tuple[SpeedVerdict, list[float]]:
    """Judge a speed cell's ``figures`` (``judge(figures, confirming)``); while the judge asks for more
    repeats, ``more(total)`` returns the figures once ``total`` repeats are in (or why none were run:
    the verdict then stands). A fail is confirmed by ``fresh(repeats)``: ``confirm_repeats`` new
    repeats (default: as many as the series), judged alone (``judge(figures, True)``: a final look at
    ``quantgate.confirm.CONFIRMATION_CONFIDENCE``). Returns the verdict and the series."""
    series = list(figures)
    while True:
        verdict = judge(series, False)
        if verdict.verdict != "inconclusive" or not verdict.more_repeats:
            break
        got = more(len(series) + verdict.more_repeats)
        if isinstance(got, str):
            verdict = dataclasses.replace(verdict, detail=f"{verdict.detail}; {got}")
            break
        series = list(got)
    if needs_confirmation(verdict):
        again = fresh(max(confirm_repeats or 0, len(series)))
        if isinstance(again, str):
            return confirmed(verdict, None, again), series
        return confirmed(verdict, judge(again, True)), series
    return verdict, series


def benchmark_document(
    entries: Sequence[Mapping[str, object]],
    envs: Envs,
    root: Path,
    gpu: Mapping[str, object] | None = None,
) -> dict[str, object] | None:
    """The session's bench runs as one pytest-benchmark document (``None`` when nothing was benched)."""
    if not entries:
        return None
    info = benchjson.machine_info(
        cpu=machine(),
        python=platform.python_version(),
        vllm=envs.version("vllm"),
        torch=envs.version("torch"),
        gpu=gpu,
    )
    return benchjson.document(entries, machine=info, commit=benchjson.commit_info(git_commit(root)))
