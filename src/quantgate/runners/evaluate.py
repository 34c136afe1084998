"""Evaluate a served checkpoint with lighteval: one long-lived lighteval worker, one job per evaluation.

lighteval runs in its own environment (``drivers/lighteval_worker.py``) with quantgate's custom-model
backend (``fixtures/lane/lighteval_model.py``), which sends ``/v1/completions`` requests with ``n``
samples per item to our server and raises on any error, and a local task file. The worker imports
lighteval once (about 17 s here) and then runs one job per evaluation; a job that fails, times out or
kills the worker is a ``ToolError`` with the log tail, and the next evaluation starts a new worker.
What lighteval wrote (results JSON, per-item details parquet) is kept in the job's directory and read
back through ``quantgate.results``. The server's API key goes to the worker with the job, in its
environment (``OPENAI_API_KEY``; the worker sends it to that server), never into the job's
``endpoint.json``, which stays with the results.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quantgate.errors import QuantgateError
from quantgate.results import read_result
from quantgate.runners.process import CLIENT_KEY_ENV, JobWorker, ToolError

WORKER = Path(__file__).resolve().parent / "drivers" / "lighteval_worker.py"
TOOL = "lighteval"


@dataclass(frozen=True)
class EvalJob:
    """One evaluation: which server, which task, how to sample, where to write."""

    base_url: str
    served_name: str
    tokenizer: Path
    task_file: Path | None
    task: str
    model_file: Path
    data_dir: Path | None
    samples: int
    seed: int
    temperature: float
    top_p: float
    max_tokens: int
    out_dir: Path
    concurrency: int = 8
    timeout: float = 900.0
    fewshot: int = 0
    metric_name: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_length: int | None = None
    pairwise_tokenization: bool = False

    def endpoint(self) -> dict[str, object]:
        """What the lighteval model reads from ``endpoint.json`` (the API key is not written there)."""
        return {
            "base_url": self.base_url,
            "served_name": self.served_name,
            "tokenizer": str(self.tokenizer),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            **({"max_length": self.max_length} if self.max_length is not None else {}),
            **({"pairwise_tokenization": True} if self.pairwise_tokenization else {}),
        }

    def args(self) -> list[str]:
        args = ["custom", self.served_name, str(self.model_file), f"{self.task}|{self.fewshot}"]
        if self.task_file is not None:
            args += ["--custom-tasks", str(self.task_file)]
        return [*args, "--output-dir", str(self.out_dir), "--save-details"]

    @property
    def metric(self) -> str:
        """The per-item count metric to read: the task's own name (``metric_name``), else the local task's."""
        return self.metric_name or f"pass@k:k=1&n={self.samples}"


@dataclass(frozen=True)
class Evaluation:
    """Per-item outcome of one job, and where lighteval wrote it."""

    job: EvalJob
    counts: Mapping[str, tuple[int, int]]
    output_tokens: Mapping[str, float | None]
    score: float
    details: Path
    results: Path
    seconds: float
    cut: Mapping[str, int] | None = None
    fractions: Mapping[str, float] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, float]:
        """Each item's score in [0, 1]: its fraction (TruthfulQA's mc2) where the metric is one, else
        correct / samples."""
        return {item: self.fractions.get(item, c / n) for item, (n, c) in self.counts.items()}

    @property
    def cut_answers(self) -> int | None:
        """Samples cut at the job's ``max_tokens`` (their answer may be missing), where known."""
        return None if self.cut is None else sum(self.cut.values())

    def reference_items(self) -> list[dict[str, object]]:
        """The per-item records a stored reference keeps (``quantgate.store``), in item order."""
        return [
            {
                "item": item,
                "samples": n,
                "correct": c,
                "output_tokens": self.output_tokens.get(item),
                **({"score": self.fractions[item]} if item in self.fractions else {}),
            }
            for item, (n, c) in sorted(self.counts.items())
        ]


def answers_and_cuts(looks: Sequence[Evaluation]) -> tuple[int, int | None]:
    """All answers the looks drew, and how many were cut at the length limit (``None`` when a look
    cannot tell)."""
    answers = sum(n for look in looks for n, _ in look.counts.values())
    cuts = [look.cut_answers for look in looks]
    return answers, None if any(c is None for c in cuts) else sum(c or 0 for c in cuts)


class LightevalWorker(JobWorker):
    """The eval environment's lighteval, kept running between jobs (``drivers/lighteval_worker.py``)."""

    def __init__(
        self, python: Path, log_dir: Path, env: Mapping[str, str] | None = None, script: Path = WORKER
    ) -> None:
        super().__init__(
            TOOL, [str(python), str(script)], log_dir / "lighteval-worker.log", {**os.environ, **(env or {})}
        )
        self.jobs = 0

    def run(self, job: EvalJob) -> Evaluation:
        """Run one job to its end; any failure is a ``ToolError`` naming the job and the log tail."""
        job.out_dir.mkdir(parents=True, exist_ok=True)
        endpoint = job.out_dir / "endpoint.json"
        endpoint.write_text(json.dumps(job.endpoint(), indent=1), encoding="utf-8")
        request = {
            "args": job.args(),
            "env": {
                "QUANTGATE_ENDPOINT": str(endpoint),
                "QUANTGATE_SAMPLES": str(job.samples),
                "QUANTGATE_MAX_TOKENS": str(job.max_tokens),
                CLIENT_KEY_ENV: job.api_key or "",
                "QUANTGATE_SERVER": job.base_url,
                **({"QUANTGATE_TASK_DATA": str(job.data_dir)} if job.data_dir is not None else {}),
            },
        }
        label = f"{TOOL} ({job.served_name}, {job.samples} samples, seed {job.seed})"
        started = time.monotonic()
        outcome = self.submit(request, job.out_dir / "done.json", job.timeout, label)
        self.jobs += 1
        if not outcome.get("ok"):
            raise ToolError(label, f"failed: {outcome.get('error')}", self.log_path)
        return read_evaluation(job, time.monotonic() - started)


def _only(paths: list[Path], what: str, where: Path) -> Path:
    if len(paths) != 1:
        raise QuantgateError(where, f"expected one {what} written by lighteval, found {len(paths)}")
    return paths[0]


def read_evaluation(job: EvalJob, seconds: float) -> Evaluation:
    """Read back what lighteval wrote for ``job``: per-item counts from the details, the score."""
    details = _only(sorted(job.out_dir.glob("details/**/details_*.parquet")), "details file", job.out_dir)
    results = _only(sorted(job.out_dir.glob("results/**/results_*.json")), "results file", job.out_dir)
    found = [
        acc for acc in read_result(details).accuracy if acc.metric == job.metric and acc.items is not None
    ]
    if len(found) != 1:
        raise QuantgateError(details, f"no per-item {job.metric!r} results", "metric")
    items = found[0].items or ()
    for item in items:
        if item.samples != job.samples:
            raise QuantgateError(
                details, f"has {item.samples} samples, the job asked {job.samples}", f"{item.item}.samples"
            )
    cut = {i.item: i.cut_at(job.max_tokens) for i in items}
    return Evaluation(
        job=job,
        counts={i.item: (i.samples, i.correct) for i in items},
        output_tokens={i.item: i.output_tokens for i in items},
        cut=None if any(n is None for n in cut.values()) else {k: int(v or 0) for k, v in cut.items()},
        fractions={i.item: i.score for i in items if i.score is not None},
        score=found[0].value,
        details=details,
        results=results,
        seconds=seconds,
    )
