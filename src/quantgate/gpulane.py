"""GPU lanes: the matrix's cells on leased GPUs, through the same runners, judge and store as the CPU lane.

What differs from the CPU lane (``quantgate.lane``):

* checkpoints are the cards' repositories (``bf16_repo`` / ``quantized_repos`` in the catalog), served by
  ``vllm serve`` with the tensor-parallel size of the cell's fit, on the devices its lease holds
  (``CUDA_VISIBLE_DEVICES``) and the lease's ``gpu_memory_utilization``; one server per served model,
  stopped when the lease is released;
* accuracy uses lighteval's built-in tasks (``aime24``, ``math_500``, ``gpqa:diamond``) through the same
  custom-model backend and worker, with the metric parametrized to the samples of a look
  (``aime24@k=1@n=20|0``); the reference is the same GPU kind's stored BF16 run
  (``baselines/<gpu>/<model>/<benchmark>.json``);
* speed runs ``vllm bench serve`` on the catalog's workloads with GPU-sized loads (``GPU_LOADS``).

Deterministic (log-likelihood) Open LLM v1 tasks need a log-likelihood backend, which the custom model
does not implement; their cells end with that reason instead of a made-up score. Nothing here has run
on a GPU yet (no device was lent to the sessions that wrote it); the CPU lane exercises every runner.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from quantgate.catalog import Catalog, load_catalog
from quantgate.datafile import Strict, atomic_write_text, load_model
from quantgate.errors import QuantgateError
from quantgate.gpus import Lease, estimate_cell_seconds
from quantgate.judge import DEFAULT_CAP, Verdict, judge_speedup
from quantgate.lane import (
    REFERENCE_SEED_OFFSET,
    ROOT,
    Envs,
    SpeedOutcome,
    judge_sequentially,
    scenario_figures,
)
from quantgate.matrix import MatrixCell, served_models
from quantgate.rules import AccuracyCellKey, Decision, Rules, SpeedCellKey, load_rules
from quantgate.runners.bench import BenchRun, BenchWorker
from quantgate.runners.evaluate import EvalJob, Evaluation, LightevalWorker
from quantgate.runners.serve import ServerSpec, VllmServer
from quantgate.store import Reference, check_comparable, load_reference, make_reference, save_reference

MODEL_FILE = ROOT / "fixtures" / "lane" / "lighteval_model.py"
# lighteval's own aime24, math_500 and gpqa:diamond, imported alone (the full registry imports a module
# that downloads at import); on a GPU runner they read the hub datasets (no QUANTGATE_TASK_DATA).
TASK_FILE = ROOT / "fixtures" / "lane" / "builtin_tasks.py"
# Per-scenario loads on a GPU: enough requests for stable figures in about a minute per run.
GPU_LOADS: dict[str, dict[str, Any]] = {
    "single-stream": {"num_prompts": 32, "max_concurrency": 1},
    "multi-stream": {"num_prompts": 512},
    "server": {"num_prompts": 256, "request_rate": 8.0, "goodput": {"ttft": 2000.0, "tpot": 100.0}},
}
REPEATS = 3
# A tool job may take this many times its estimate (``gpus.estimate_cell_seconds``) plus the slack
# before it is stopped as hung; never less than the floor.
TIMEOUT_FACTOR = 3.0
TIMEOUT_SLACK_S = 600.0
TIMEOUT_FLOOR_S = 900.0
SPEED_REFERENCE_SCHEMA_VERSION = 1
GPU_MUST_MATCH = ("model_repo", "temperature", "top_p", "max_tokens", "vllm", "lighteval")
SPEED_MUST_MATCH = ("model_repo", "gpu", "scenario", "workload", "load", "vllm")


class SpeedReference(Strict):
    """``baselines/<gpu>/<model>/speed/<target>.json``: BF16's figure per repeat, its GPUs, provenance.

    Why stored, not measured beside the quantized cells: a kind's shards and xdist workers split a
    model's schemes across runners and processes, so BF16 may run elsewhere or later; and re-measuring
    BF16 every night costs a quarter of a kind's GPU-hours. The provenance (``SPEED_MUST_MATCH``) must
    hold for a quantized cell to be judged against it.
    """

    schema_version: int
    gpus: int = Field(ge=1)
    figures: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=2)
    provenance: dict[str, str]


@dataclass
class GpuLane:
    """One GPU session's servers, lighteval worker and references."""

    envs: Envs
    workdir: Path
    catalog: Catalog = field(default_factory=load_catalog)
    rules: Rules = field(default_factory=load_rules)
    baselines: Path = ROOT / "baselines"
    update_baselines: bool = False
    _servers: dict[str, VllmServer] = field(default_factory=dict)
    _worker: LightevalWorker | None = None
    _bench_worker: BenchWorker | None = None
    _starts: list[tuple[str, float]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def repository(self, cell: MatrixCell) -> str:
        model = self.catalog.model(cell.model)
        if cell.scheme == "bf16":
            return model.bf16_repo
        repo = model.quantized_repos.get(cell.scheme)
        if repo is None:
            raise QuantgateError(self.catalog.file("models"), f"no {cell.scheme} repository", cell.model)
        return repo

    @staticmethod
    def served_name(cell: MatrixCell) -> str:
        return cell.served_model.replace("/", "__")

    def server_spec(
        self, cell: MatrixCell, devices: tuple[int, ...], memory_utilization: float
    ) -> ServerSpec:
        return ServerSpec(
            model_dir=Path(self.repository(cell)),
            served_name=self.served_name(cell),
            python=self.envs.python("vllm"),
            log_dir=self.log_dir,
            cpu=False,
            max_model_len=self.served_context(cell),
            extra_args=(
                "--tensor-parallel-size",
                str(cell.requirement.count),
                "--gpu-memory-utilization",
                f"{memory_utilization:.2f}",
                "--generation-config",
                "vllm",
            ),
            env={"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in devices)},
            ready_timeout=1800.0,
        )

    def served_context(self, cell: MatrixCell) -> int:
        """The served model's context length: the longest its cells need, whichever cell starts it."""
        return served_models(self.catalog)[(cell.model, cell.scheme, cell.gpu)].context_tokens

    def timeout(self, cell: MatrixCell, share: float = 1.0) -> float:
        """Seconds before a tool job of ``share`` of the cell's estimated work is stopped as hung."""
        estimate = estimate_cell_seconds(self.catalog, cell) * share
        return max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * estimate + TIMEOUT_SLACK_S)

    def serve(self, cell: MatrixCell, lease: Lease) -> VllmServer:
        """The cell's server: started by the first cell of its served model on the lease's devices,
        and stopped when the lease is released (before the devices go to another worker)."""
        server = self._servers.get(cell.served_model)
        if server is None or not server.alive():
            spec = self.server_spec(cell, lease.devices, lease.gpu_memory_utilization)
            server = VllmServer(spec).start()
            self._servers[cell.served_model] = server
            self._starts.append((cell.served_model, float(server.start_s or 0.0)))
            lease.on_release(lambda: self.stop(cell.served_model))
        return server

    def take_starts(self) -> list[tuple[str, float]]:
        """Server starts since the last call: (served model, seconds to ready)."""
        starts, self._starts = self._starts, []
        return starts

    def stop(self, served_model: str) -> None:
        server = self._servers.pop(served_model, None)
        if server is not None:
            server.stop()

    def close(self) -> None:
        for key in list(self._servers):
            self.stop(key)
        for worker in (self._worker, self._bench_worker):
            if worker is not None:
                worker.stop()

    def bench_worker(self) -> BenchWorker:
        """One ``vllm bench serve`` process for the session (vLLM is imported once, not per cell)."""
        if self._bench_worker is None:
            self._bench_worker = BenchWorker(self.envs.python("vllm"), self.log_dir, self.tool_env())
        return self._bench_worker

    def worker(self) -> LightevalWorker:
        if self._worker is None:
            self._worker = LightevalWorker(
                self.envs.python("eval"),
                self.log_dir,
                {"TOKENIZERS_PARALLELISM": "false", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            )
        return self._worker

    def evaluation_job(
        self, server: VllmServer, cell: MatrixCell, samples: int, seed: int, tag: str
    ) -> EvalJob:
        benchmark = self.catalog.benchmarks[cell.benchmark or ""]
        if benchmark.scoring != "sampled" or benchmark.sampling is None or benchmark.lighteval_task is None:
            raise QuantgateError(
                self.catalog.file("benchmarks"),
                "a deterministic (log-likelihood) task needs a log-likelihood backend, which quantgate's "
                "server-backed lighteval model does not implement yet",
                cell.benchmark,
            )
        return EvalJob(
            base_url=server.base_url,
            served_name=self.served_name(cell),
            tokenizer=Path(self.repository(cell)),
            task_file=TASK_FILE,
            task=f"{benchmark.lighteval_task}@k=1@n={samples}",
            model_file=MODEL_FILE,
            data_dir=None,
            samples=samples,
            seed=seed,
            temperature=benchmark.sampling.temperature,
            top_p=benchmark.sampling.top_p,
            max_tokens=cell.context_tokens,
            out_dir=self.workdir / "eval" / self.served_name(cell) / (cell.benchmark or "") / tag,
            fewshot=benchmark.fewshot or 0,
            timeout=self.timeout(cell, samples / benchmark.sampling.samples),
            metric_name=benchmark.lighteval_metric,
        )

    def update_command(self, cell: MatrixCell) -> str:
        """The command that (re)writes the BF16 references a cell of this kind is judged against."""
        return f'pytest suites -m {cell.gpu} -k "{cell.model}-bf16-" --qg-update-baselines'

    def require(self, path: Path, what: str, cell: MatrixCell) -> None:
        """Fail closed when a reference is missing, naming the command that writes it."""
        if not path.exists():
            raise QuantgateError(
                path, f"no stored {cell.gpu} {what}; write it with: {self.update_command(cell)}"
            )

    def accuracy_provenance(self, cell: MatrixCell) -> dict[str, str]:
        sampling = self.catalog.benchmarks[cell.benchmark or ""].sampling
        return {
            "model_repo": self.catalog.model(cell.model).bf16_repo,
            "temperature": str(sampling.temperature if sampling else 0.0),
            "top_p": str(sampling.top_p if sampling else 1.0),
            "max_tokens": str(cell.context_tokens),
            "vllm": self.envs.version("vllm"),
            "lighteval": self.envs.version("lighteval"),
            "gpu": cell.gpu,
        }

    def reference(
        self, cell: MatrixCell, server: VllmServer | None = None
    ) -> tuple[Path, Reference, str | None]:
        """The kind's stored BF16 reference, checked against this run; under ``update_baselines`` a BF16
        cell (``server`` serves it) first writes it from ``DEFAULT_CAP`` samples per item. The note
        says what was written (the run then fails, so that no reference changes silently)."""
        path = self.baselines / cell.gpu / cell.model / f"{cell.benchmark}.json"
        current = self.accuracy_provenance(cell)
        if self.update_baselines and server is not None and cell.scheme == "bf16":
            with server.in_use("reference evaluation"):
                evaluation = self.worker().run(
                    self.evaluation_job(server, cell, DEFAULT_CAP, REFERENCE_SEED_OFFSET, "reference")
                )
            key = {"model": cell.model, "scheme": "bf16", "gpu": cell.gpu, "benchmark": cell.benchmark or ""}
            reference = make_reference(
                key, {**current, "samples": str(DEFAULT_CAP)}, evaluation.reference_items()
            )
            return path, reference, save_reference(path, reference)
        self.require(path, f"BF16 reference for {cell.model}/{cell.benchmark}", cell)
        reference = load_reference(path)
        fix = f"rewrite it with: {self.update_command(cell)}"
        check_comparable(path, reference.provenance, current, GPU_MUST_MATCH, fix)
        return path, reference, None

    def recovery_decision(self, cell: MatrixCell) -> Decision:
        model = self.catalog.model(cell.model)
        benchmark = self.catalog.benchmarks[cell.benchmark or ""]
        return self.rules.recovery_for(
            AccuracyCellKey(cell.model, model.params_b, cell.scheme, cell.benchmark or "", benchmark.family)
        )

    def judge_accuracy(
        self, server: VllmServer, cell: MatrixCell
    ) -> tuple[Decision, Verdict, list[Evaluation], str | None]:
        """Evaluate the cell's benchmark, judge against the reference, top up while inconclusive; the
        last value says which reference was written (``update_baselines``), else ``None``."""
        benchmark = self.catalog.benchmarks[cell.benchmark or ""]
        path, reference, note = self.reference(cell, server)
        decision = self.recovery_decision(cell)

        def look_at(samples: int, look: int) -> Evaluation:
            with server.in_use(f"evaluation look{look}"):
                return self.worker().run(self.evaluation_job(server, cell, samples, look, f"look{look}"))

        verdict, looks, _ = judge_sequentially(
            look_at,
            reference.counts(),
            decision.floor,
            benchmark.sampling.samples if benchmark.sampling else 1,
            path,
        )
        return decision, verdict, looks, note

    def bench_runs(self, cell: MatrixCell) -> list[BenchRun]:
        workload = self.catalog.workloads[cell.workload or ""]
        load = GPU_LOADS[cell.scenario or ""]
        return [
            BenchRun(
                cell.scenario or "",
                workload=cell.workload or "",
                input_len=workload.prompt_tokens,
                output_len=workload.output_tokens,
                num_prompts=int(load["num_prompts"]),
                max_concurrency=load.get("max_concurrency"),
                request_rate=float(load.get("request_rate", math.inf)),
                goodput=load.get("goodput", {}),
                repeat=repeat,
                seed=repeat,
                num_warmups=4,
            )
            for repeat in range(REPEATS)
        ]

    def tool_env(self) -> dict[str, str]:
        return {**os.environ, "TOKENIZERS_PARALLELISM": "false"}

    def bench_dir(self, cell: MatrixCell) -> Path:
        """Where a performance cell's tool results go in this run."""
        return self.workdir / "bench" / cell.cell_id

    def speed_reference_path(self, cell: MatrixCell) -> Path:
        return self.baselines / cell.gpu / cell.model / "speed" / f"{cell.target}.json"

    def speed_provenance(self, cell: MatrixCell) -> dict[str, str]:
        return {
            "model_repo": self.catalog.model(cell.model).bf16_repo,
            "gpu": cell.gpu,
            "scenario": cell.scenario or "",
            "workload": cell.workload or "",
            "load": json.dumps(GPU_LOADS[cell.scenario or ""], sort_keys=True),
            "vllm": self.envs.version("vllm"),
        }

    def speed_reference(self, cell: MatrixCell) -> tuple[list[float], int]:
        """The stored BF16 figures and GPU count of the cell's target, checked against this run."""
        path = self.speed_reference_path(cell)
        self.require(path, f"BF16 speed reference for {cell.model} {cell.target}", cell)
        stored = load_speed_reference(path)
        fix = f"rewrite it with: {self.update_command(cell)}"
        check_comparable(path, stored.provenance, self.speed_provenance(cell), SPEED_MUST_MATCH, fix)
        return list(stored.figures), stored.gpus

    def judge_speed(self, server: VllmServer, cell: MatrixCell) -> tuple[SpeedOutcome, str | None]:
        """Measure the cell; judge a quantized one against the kind's stored BF16 figures.

        A BF16 cell is the reference: under ``update_baselines`` its figures are stored (the note says
        so, and the run fails). The speedup compares whole servers (the cards' definition); when BF16
        needs more GPUs than the quantized model (tensor parallelism), the per-GPU speedup is reported
        beside it.
        """
        spec = self.catalog.scenarios[cell.scenario or ""]
        with server.in_use("vllm bench serve"):
            results = self.bench_worker().run(
                server.base_url,
                self.served_name(cell),
                Path(self.repository(cell)),
                self.bench_runs(cell),
                self.bench_dir(cell),
                timeout=self.timeout(cell),
            )
        mine = scenario_figures(results, cell.scenario or "", spec.metric, allow_zero=cell.scheme != "bf16")
        gpus = cell.requirement.count
        runs = tuple(results)
        if cell.scheme == "bf16":
            note = None
            if self.update_baselines:
                path = self.speed_reference_path(cell)
                reference = {
                    "schema_version": SPEED_REFERENCE_SCHEMA_VERSION,
                    "gpus": gpus,
                    "figures": mine,
                    "provenance": self.speed_provenance(cell),
                }
                note = f"{'updated' if path.exists() else 'new'} BF16 speed reference {path}"
                atomic_write_text(path, json.dumps(reference, indent=1, sort_keys=True) + "\n")
            outcome = SpeedOutcome(
                cell.scenario or "",
                spec.metric,
                spec.higher_is_better,
                mine,
                mine,
                None,
                None,
                runs,
                gpus,
                gpus,
            )
            return outcome, note
        bf16, bf16_gpus = self.speed_reference(cell)
        model = self.catalog.model(cell.model)
        decision = self.rules.speedup_for(
            SpeedCellKey(
                cell.model, model.params_b, cell.scheme, cell.gpu, cell.scenario or "", cell.workload or ""
            )
        )
        verdict = judge_speedup(
            bf16,
            mine,
            decision.floor,
            higher_is_better=spec.higher_is_better,
            reference_gpus=bf16_gpus,
            candidate_gpus=gpus,
        )
        outcome = SpeedOutcome(
            cell.scenario or "",
            spec.metric,
            spec.higher_is_better,
            mine,
            bf16,
            decision,
            verdict,
            runs,
            gpus,
            bf16_gpus,
        )
        return outcome, None


def load_speed_reference(path: Path) -> SpeedReference:
    """A stored BF16 speed reference; any other schema version or a bad field is refused, naming it."""
    return load_model(SpeedReference, path, "BF16 speed reference", SPEED_REFERENCE_SCHEMA_VERSION)
