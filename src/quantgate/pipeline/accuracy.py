"""The accuracy stage: evaluation looks, BF16 references with provenance, the sequential judge."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from quantgate.budget import Cut, LookSize, OverBudget, size_first_look, top_up_fits
from quantgate.envs import machine, sha256_files, tokenizer_sha256
from quantgate.envs import weights_sha256 as local_weights_sha256
from quantgate.errors import QuantgateError
from quantgate.judge import DETECT_DROP, Verdict, judge_recovery_items, samples_to_detect
from quantgate.matrix import MatrixCell
from quantgate.outcomes import (
    AccuracyOutcome,
    judge_sequentially,
    mean_output_tokens,
)
from quantgate.rules import AccuracyCellKey, Decision
from quantgate.runners.evaluate import EvalJob, Evaluation
from quantgate.runners.serve import VllmServer
from quantgate.store import (
    MUST_MATCH,
    Reference,
    check_comparable,
    load_reference,
    make_reference,
    save_reference,
)

if TYPE_CHECKING:
    from quantgate.pipeline.core import PipelineCore as _Core
else:
    _Core = object

from quantgate.pipeline.core import HUB_MUST_MATCH, REFERENCE_SEED_OFFSET

# A deterministic item is sized as this many generation limits of tokens: a log-likelihood item scores
# every choice's prompt (four, on the multiple-choice tasks), and the probe measures generation, not
# prefill. Measured on a slow host: FP8's 104-item ARC look, sized from its 2-3 continuation tokens per
# item at ~20 s, was still running after 5 minutes.
DETERMINISTIC_ITEM_TOKENS = 4


class AccuracyStage(_Core):
    """Methods of ``Pipeline`` that judge a cell's accuracy (``judge_accuracy``)."""

    def evaluation_job(
        self,
        server: VllmServer,
        cell: MatrixCell,
        samples: int,
        seed: int,
        tag: str,
        items: int | None = None,
        timeout: float | None = None,
    ) -> EvalJob:
        acc = self.spec.accuracy
        benchmark = cell.benchmark or ""
        task = self.catalog.benchmarks[benchmark]
        sampling = self.sampling(benchmark)
        name = task.lighteval_task or ""
        return EvalJob(
            base_url=server.base_url,
            served_name=self.served_name(cell),
            tokenizer=self.checkpoint(cell).path,
            task_file=self.path(acc.task_file),
            task=name if self.deterministic(benchmark) else f"{name}@k=1@n={samples}",
            model_file=self.path(acc.model_file),
            data_dir=self.task_data(benchmark, items) if acc.data is not None else None,
            samples=samples,
            seed=seed,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=self.max_tokens(cell),
            out_dir=self.workdir / "eval" / self.served_name(cell) / benchmark / tag,
            concurrency=acc.concurrency,
            timeout=timeout or self.timeout(cell, samples / sampling.samples),
            fewshot=self.fewshot(benchmark),
            metric_name=task.lighteval_metric,
            api_key=server.api_key,
            max_length=self.served_context(cell) - 1,
            pairwise_tokenization=acc.pairwise_tokenization,
        )

    def evaluate(self, server: VllmServer, job: EvalJob) -> Evaluation:
        """Run a look (``evaluation_job``) in the lighteval worker, the server checked before and after."""
        shutil.rmtree(job.out_dir, ignore_errors=True)
        with server.in_use(f"evaluation {job.out_dir.name}"):
            return self.worker().run(job)

    def provenance(self, cell: MatrixCell, samples: int, seed: int) -> tuple[dict[str, str], tuple[str, ...]]:
        """What a BF16 accuracy run depends on, and the keys that must agree to compare against it: a
        local model's weights, tokenizer, task files and machine; a hub model's repository."""
        benchmark = cell.benchmark or ""
        sampling = self.sampling(benchmark)
        common = {
            "temperature": str(sampling.temperature),
            "top_p": str(sampling.top_p),
            "max_tokens": str(self.max_tokens(cell)),
            "samples": str(samples),
            "seed": str(seed),
            **(
                {
                    "fewshot": str(self.fewshot(benchmark)),
                    "pairwise_tokenization": str(self.spec.accuracy.pairwise_tokenization),
                }
                if self.deterministic(benchmark)
                else {}
            ),
            "vllm": self.envs.version("vllm"),
            "lighteval": self.envs.version("lighteval"),
        }
        local = self.local(cell.model)
        if local is None:
            return {
                "model_repo": self.repository(cell.model, "bf16"),
                **common,
                "gpu": cell.gpu,
            }, HUB_MUST_MATCH
        acc = self.spec.accuracy
        source = self.path(local.dir)
        files = [self.path(acc.task_file), self.path(acc.model_file), *self.data_files(benchmark)]
        return {
            "model": cell.model,
            "scheme": "bf16",
            "model_sha256": local_weights_sha256(source),
            "tokenizer_sha256": tokenizer_sha256(source),
            "task_sha256": sha256_files(files),
            **common,
            "torch": self.envs.version("torch"),
            "machine": machine(),
        }, MUST_MATCH

    def reference_path(self, cell: MatrixCell) -> Path:
        return self.baselines / cell.gpu / cell.model / f"{cell.benchmark}.json"

    def reference(self, cell: MatrixCell, server: VllmServer | None = None) -> tuple[Reference, str | None]:
        """The kind's stored BF16 reference, checked against this run. Under ``update_baselines`` a BF16
        cell (``server`` serves it) first writes it at the reference's samples per item; the note says
        what was written (the run then fails, so that no reference changes silently)."""
        path = self.reference_path(cell)
        samples = 1 if self.deterministic(cell.benchmark or "") else self.reference_samples()
        seed = self.spec.accuracy.seed + REFERENCE_SEED_OFFSET
        current, keys = self.provenance(cell, samples, seed)
        if self.update_baselines and server is not None and cell.scheme == "bf16":
            evaluation = self.evaluate(server, self.evaluation_job(server, cell, samples, seed, "reference"))
            key = {"model": cell.model, "scheme": "bf16", "gpu": cell.gpu, "benchmark": cell.benchmark or ""}
            reference = make_reference(key, current, evaluation.reference_items())
            return reference, save_reference(path, reference)
        self.require(path, f"BF16 reference for {cell.model}/{cell.benchmark}", cell)
        reference = load_reference(path)
        check_comparable(
            path, reference.provenance, current, keys, f"rewrite it with: {self.update_command(cell)}"
        )
        return reference, None

    def recovery_decision(self, cell: MatrixCell) -> Decision:
        benchmark = cell.benchmark or ""
        family = self.catalog.benchmarks[benchmark].family
        return self.rules.recovery_for(
            AccuracyCellKey(cell.model, self.params_b(cell.model), cell.scheme, benchmark, family)
        )

    def cell_cap(self, cell: MatrixCell, reference: Mapping[str, tuple[int, int]], floor: float) -> int:
        """The most samples per item the cell's judge draws: the fewest that catch the benchmark's
        ``detect_drop`` (``samples_to_detect``), never under the kind's ``min_first_samples``."""
        sampling = self.catalog.benchmarks[cell.benchmark or ""].sampling
        drop = sampling.detect_drop if sampling is not None else DETECT_DROP
        most = self.reference_samples()
        return max(
            samples_to_detect(reference, floor, drop, most), min(self.spec.accuracy.min_first_samples, most)
        )

    def reuses_accuracy_reference(self, cell: MatrixCell) -> bool:
        """A BF16 cell of a kind that reuses references, whose stored reference holds for this run."""
        path = self.reference_path(cell)
        reuse = self.spec.accuracy.reuse_reference and not self.update_baselines
        if not (reuse and cell.scheme == "bf16" and path.exists()):
            return False
        try:
            self.reference(cell)
        except QuantgateError:
            return False
        return True

    def reused_reference(self, cell: MatrixCell, reference: Reference, decision: Decision) -> AccuracyOutcome:
        """A BF16 cell that passes on its stored reference: ``reference`` was checked against this run's
        inputs (``reference``: checkpoint, tools, settings, GPU kind), so nothing it measured has moved."""
        path = self.reference_path(cell)
        if self.deterministic(cell.benchmark or ""):
            score = sum(reference.scores().values()) / len(reference.items)
        else:
            score = sum(i.correct for i in reference.items) / sum(i.samples for i in reference.items)
        tokens = mean_output_tokens([(i.samples, i.output_tokens) for i in reference.items])
        reason = "the stored reference was made on this run's inputs"
        verdict = Verdict(
            verdict="pass",
            recovery=1.0,
            low=1.0,
            high=1.0,
            floor=decision.floor,
            margin=0.0,
            more_samples=0,
            items=len(reference.items),
            candidate_samples=0,
            reference_samples=self.reference_samples(),
            assumption=reason,
            detail=f"pass: BF16 reference reused, not measured again ({reason}: {path})",
        )
        return AccuracyOutcome(decision, verdict, path, score, score, (), None, tokens, tokens)

    def judge_accuracy(self, server: VllmServer, cell: MatrixCell) -> AccuracyOutcome:
        """Evaluate, judge against the reference, and top up with fresh seeds while inconclusive.

        With an accuracy budget, the first look keeps as many items as fit in half of it at the probed
        rate, and a top-up is drawn only when the looks' measured pace says it fits in what is left;
        what was cut is in the outcome (``cuts``), and a cell that cannot evaluate ``min_items`` in its
        budget raises ``OverBudget``. Without one, every item is evaluated, with timeouts from the
        catalog's estimate.
        """
        benchmark = cell.benchmark or ""
        if self.deterministic(benchmark):
            return self.judge_deterministic(server, cell)
        budget = self.spec.budget
        first_samples = self.first_samples(benchmark)
        reference, note = self.reference(cell, server if cell.scheme == "bf16" else None)
        decision = self.recovery_decision(cell)
        if cell.scheme == "bf16" and note is None and self.spec.accuracy.reuse_reference:
            return self.reused_reference(cell, reference, decision)
        reference_counts = reference.counts()
        cap = self.cell_cap(cell, reference_counts, decision.floor)
        first_samples = min(first_samples, cap)
        sized = math.isfinite(budget.accuracy_s) and self.spec.accuracy.data is not None
        items: int | None = None
        cuts: list[Cut] = []
        expected: float | None = None
        if sized:
            reference_tokens = mean_output_tokens([(i.samples, i.output_tokens) for i in reference.items])
            tokens = reference_tokens or self.max_tokens(cell)
            chosen, size = self.first_items(server, cell, set(reference_counts), first_samples, tokens)
            cuts += [size.cut] if size.cut else []
            items, expected = size.items, size.seconds
            reference_counts = {k: v for k, v in reference_counts.items() if k in chosen}
        started = time.monotonic()

        def fits(samples: int, looks: Sequence[Evaluation]) -> bool:
            count = len(reference_counts)
            pace = looks[-1].seconds / (looks[-1].job.samples * len(looks[-1].counts))
            left = budget.accuracy_s - (time.monotonic() - started)
            if top_up_fits(samples, count, pace, left):
                return True
            cuts.append(
                Cut(
                    f"top-up of {samples} samples not drawn",
                    f"it needs ~{samples * count * pace:.0f} s, {max(left, 0):.0f} s of the "
                    f"{budget.accuracy_s:.0f} s budget are left",
                )
            )
            return False

        def look(samples: int, number: int) -> Evaluation:
            timeout = None
            line = f"{self.served_name(cell)} {benchmark}: accuracy look {number + 1}, {samples} samples"
            if expected is not None:
                seconds = expected * samples / first_samples
                timeout = self.sized_timeout(seconds, self.spec.accuracy.timeout_s)
                line += f" x {items} items (~{seconds:.0f} s)"
            self.progress(line)
            seed = self.spec.accuracy.seed + number
            job = self.evaluation_job(
                server, cell, samples, seed, f"look{number}", items=items, timeout=timeout
            )
            return self.evaluate(server, job)

        verdict, looks, counts = judge_sequentially(
            look,
            reference_counts,
            decision.floor,
            first_samples,
            self.reference_path(cell),
            cap=cap,
            fits=fits if sized else None,
        )
        score = sum(c for _, c in counts.values()) / sum(n for n, _ in counts.values())
        chosen_reference = [i for i in reference.items if i.item in reference_counts]
        reference_score = sum(i.correct for i in chosen_reference) / sum(i.samples for i in chosen_reference)
        candidate_tokens = mean_output_tokens(
            [(look.counts[item][0], look.output_tokens.get(item)) for look in looks for item in look.counts]
        )
        return AccuracyOutcome(
            decision,
            verdict,
            self.reference_path(cell),
            reference_score,
            score,
            tuple(looks),
            note,
            candidate_tokens,
            mean_output_tokens([(i.samples, i.output_tokens) for i in chosen_reference]),
            cuts=tuple(cuts),
        )

    def first_items(
        self, server: VllmServer, cell: MatrixCell, known: set[str], samples: int, tokens_per_sample: float
    ) -> tuple[set[str], LookSize]:
        """The items a budgeted first look evaluates (the first rows of the task data that fit half the
        cell's accuracy budget at the probed rate; lighteval names an item by its row, so the first N rows
        keep their names) and the sizing; ``OverBudget`` when not even ``min_items`` fit."""
        budget = self.spec.budget
        order = [str(row) for row in range(len(self.items(cell.benchmark or ""))) if str(row) in known]
        size = size_first_look(
            len(order),
            samples,
            tokens_per_sample,
            self.rate(server, cell).batch_tps,
            budget.accuracy_s,
            min_items=min(budget.min_items, len(order)),
            overhead_s=budget.look_overhead_s,
        )
        if size.items == 0:
            assert size.cut is not None
            raise OverBudget(size.cut)
        return set(order[: size.items]), size

    def judge_deterministic(self, server: VllmServer, cell: MatrixCell) -> AccuracyOutcome:
        """One greedy look (log-likelihood or greedy generation), judged per item against the stored
        reference (``judge_recovery_items``). No top-up and no confirmation: a second look gives the
        same answers. With an accuracy budget the look keeps the first items that fit in it, as a
        sampled cell's first look does; a cell that cannot evaluate ``min_items`` raises ``OverBudget``."""
        benchmark = cell.benchmark or ""
        budget = self.spec.budget
        reference, note = self.reference(cell, server if cell.scheme == "bf16" else None)
        decision = self.recovery_decision(cell)
        if cell.scheme == "bf16" and note is None and self.spec.accuracy.reuse_reference:
            return self.reused_reference(cell, reference, decision)
        reference_scores = reference.scores()
        items: int | None = None
        timeout: float | None = None
        cuts: list[Cut] = []
        line = f"{self.served_name(cell)} {benchmark}: accuracy look, greedy, one answer per item"
        if math.isfinite(budget.accuracy_s) and self.spec.accuracy.data is not None:
            tokens = DETERMINISTIC_ITEM_TOKENS * self.max_tokens(cell)
            chosen, size = self.first_items(server, cell, set(reference_scores), 1, tokens)
            cuts += [size.cut] if size.cut else []
            items, timeout = size.items, self.sized_timeout(size.seconds, self.spec.accuracy.timeout_s)
            reference_scores = {k: v for k, v in reference_scores.items() if k in chosen}
            line += f" x {items} items (~{size.seconds:.0f} s)"
        self.progress(line)
        job = self.evaluation_job(
            server, cell, 1, self.spec.accuracy.seed, "look0", items=items, timeout=timeout
        )
        evaluation = self.evaluate(server, job)
        scores = evaluation.scores
        sampling = self.catalog.benchmarks[benchmark].sampling
        drop = sampling.detect_drop if sampling is not None else DETECT_DROP
        verdict = judge_recovery_items(reference_scores, scores, decision.floor, max_margin=drop)
        chosen_reference = [i for i in reference.items if i.item in reference_scores]
        return AccuracyOutcome(
            decision,
            verdict,
            self.reference_path(cell),
            sum(reference_scores.values()) / len(reference_scores),
            sum(scores.values()) / len(scores),
            (evaluation,),
            note,
            mean_output_tokens([(1, evaluation.output_tokens.get(item)) for item in scores]),
            mean_output_tokens([(i.samples, i.output_tokens) for i in chosen_reference]),
            cuts=tuple(cuts),
            metric=self.catalog.benchmarks[benchmark].lighteval_metric,
        )
