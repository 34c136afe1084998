"""One pipeline for every device kind: a matrix cell's checkpoint, server, evaluation, judge and bench.

``Pipeline`` does the work of one cell (``matrix.MatrixCell``) with the real tools, whatever its kind:
llmcompressor ``oneshot`` for checkpoints built here (``runners.quantize``), vLLM's OpenAI server
(``runners.serve``), lighteval on its own tasks (``runners.evaluate``) and ``vllm bench serve``
(``runners.bench``), each in its own environment (``envs.Envs``). What a kind does differently is data,
its kind file (``quantgate.kinds``): local tiny models or the catalog's checkpoints, the vLLM build's
settings, fixed or catalog sample counts, work sized to a budget from a probed rate or timeouts from the
catalog's estimate, BF16 speed measured in the session or stored.

Accuracy is judged against the kind's stored per-item BF16 reference (``baselines/<kind>/<model>/``),
whose provenance must match this run; the candidate is sampled at the first look's samples per item and
topped up with fresh seeds while the judge says inconclusive. A kind without references fails closed,
naming the command that writes them (``--qg-update-baselines`` on its BF16 cells, which still fails
the run). This module imports no pytest; the glue is ``plugins/lane.py`` and the suites.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

from pydantic import Field

from quantgate.budget import Cut, OverBudget, estimate_run_seconds, size_bench, size_first_look, top_up_fits
from quantgate.catalog import Catalog, Sampling, load_catalog
from quantgate.datafile import Strict, atomic_write_text, load_model
from quantgate.devices.leases import Lease
from quantgate.envs import ROOT, Envs, machine, sha256_file, sha256_files, tokenizer_sha256, tool_context
from quantgate.envs import weights_sha256 as local_weights_sha256
from quantgate.errors import QuantgateError
from quantgate.judge import DEFAULT_CAP, judge_speedup
from quantgate.kinds import KindSpec, LocalModel, ScenarioLoad
from quantgate.matrix import CellKind, MatrixCell, Requirement, estimate_cell_seconds, served_models
from quantgate.outcomes import (
    AccuracyOutcome,
    SpeedOutcome,
    judge_sequentially,
    mean_output_tokens,
    scenario_figures,
)
from quantgate.rules import AccuracyCellKey, Decision, Rules, SpeedCellKey, load_rules
from quantgate.runners.bench import BenchResult, BenchRun, BenchWorker
from quantgate.runners.evaluate import EvalJob, Evaluation, LightevalWorker
from quantgate.runners.probe import Rate, measure_rate
from quantgate.runners.quantize import check_signature, quantize, recipe_path
from quantgate.runners.serve import ServerSpec, VllmServer
from quantgate.store import (
    MUST_MATCH,
    Reference,
    check_comparable,
    load_reference,
    make_reference,
    save_reference,
)

REFERENCE_SEED_OFFSET = 100_000
# A job sized from a probe may take 3x its estimate plus a minute, never less than this: a machine that
# gets busier after the probe must not fail the cell.
MIN_TOOL_TIMEOUT_S = 300.0
# An unsized job (no budget) may take this many times the catalog's estimate plus the slack, never
# less than the floor, before it is stopped as hung.
TIMEOUT_FACTOR = 3.0
TIMEOUT_SLACK_S = 600.0
TIMEOUT_FLOOR_S = 900.0
SPEED_REFERENCE_SCHEMA_VERSION = 1
HUB_MUST_MATCH = ("model_repo", "temperature", "top_p", "max_tokens", "vllm", "lighteval")
SPEED_MUST_MATCH = ("model_repo", "gpu", "scenario", "workload", "load", "vllm")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
PROBE_PROMPT = "Solve: what is 12 + 30? Reply with the number."


class SpeedReference(Strict):
    """``baselines/<kind>/<model>/speed/<target>.json``: BF16's figure per repeat, its GPUs, provenance.

    Why stored for GPU kinds: a kind's shards and xdist workers split a model's schemes across runners
    and processes, so BF16 may run elsewhere or later; and re-measuring BF16 every night costs a
    quarter of a kind's GPU-hours. The provenance (``SPEED_MUST_MATCH``) must hold to judge against it.
    """

    schema_version: int
    gpus: int = Field(ge=1)
    figures: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=2)
    provenance: dict[str, str]


def load_speed_reference(path: Path) -> SpeedReference:
    """A stored BF16 speed reference; any other schema version or a bad field is refused, naming it."""
    return load_model(SpeedReference, path, "BF16 speed reference", SPEED_REFERENCE_SCHEMA_VERSION)


@dataclass(frozen=True)
class Checkpoint:
    """What a served model loads: a local folder (``weights_sha256`` known) or a hub repository."""

    model: str
    scheme: str
    path: Path
    weights_sha256: str | None
    quantize_s: float | None
    reused: bool


def local_cells(spec: KindSpec) -> list[MatrixCell]:
    """A kind file's cells of local models: per model and scheme (BF16 first: its speed is the others'
    reference), its benchmarks, then its scenarios. One served model per (model, scheme)."""
    assert spec.server.max_model_len is not None, "load_kind requires it for local models"
    context = spec.server.max_model_len
    ordered = ["bf16", *(s for s in spec.schemes if s != "bf16")]
    cells: list[MatrixCell] = []
    for model, settings in spec.models.items():
        for scheme in ordered:

            def cell(kind: CellKind, target: str, model: str = model, scheme: str = scheme) -> MatrixCell:
                return MatrixCell(
                    kind,
                    model,
                    scheme,
                    spec.kind,
                    target,
                    f"{model}/{scheme}",
                    Requirement(1, 0.0),
                    context,
                    context,
                )

            cells += [replace(cell("accuracy", b), benchmark=b) for b in settings.benchmarks]
            cells += [replace(cell("performance", s), scenario=s) for s in spec.speed.scenarios]
    return cells


@dataclass
class Pipeline:
    """One session's work on one kind: checkpoints, servers, workers, measurements, references."""

    spec: KindSpec
    envs: Envs
    workdir: Path
    root: Path = ROOT
    baselines: Path = ROOT / "baselines"
    update_baselines: bool = False
    catalog: Catalog = field(default_factory=load_catalog)
    rules: Rules = field(default_factory=load_rules)
    progress: Callable[[str], None] = field(default=lambda line: None)
    speed_cuts: dict[str, Cut] = field(default_factory=dict)
    _worker: LightevalWorker | None = None
    _bench_worker: BenchWorker | None = None
    _pool: ThreadPoolExecutor | None = None
    _quantizing: dict[tuple[str, str], Future[Checkpoint]] = field(default_factory=dict)
    _servers: dict[str, VllmServer] = field(default_factory=dict)
    _starts: list[tuple[str, float]] = field(default_factory=list)
    _start_failed: dict[str, Exception] = field(default_factory=dict)
    _measured: dict[tuple[str, str, str], list[BenchResult]] = field(default_factory=dict)
    _bench_failed: dict[tuple[str, str, str], Exception] = field(default_factory=dict)
    _rates: dict[str, Rate] = field(default_factory=dict)
    _items: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def path(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else self.root / relative

    def tool_env(self) -> dict[str, str]:
        env = {
            "TOKENIZERS_PARALLELISM": "false",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        return {**OFFLINE_ENV, **env} if self.spec.offline else env

    @staticmethod
    def served_name(cell: MatrixCell) -> str:
        return cell.served_model.replace("/", "__")

    def local(self, model: str) -> LocalModel | None:
        return self.spec.models.get(model)

    def params_b(self, model: str) -> float:
        local = self.local(model)
        return local.params_b if local is not None else self.catalog.model(model).params_b

    def close(self) -> None:
        for served in list(self._servers):
            self.stop(served)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for worker in (self._worker, self._bench_worker):
            if worker is not None:
                worker.stop()

    # -- checkpoints --------------------------------------------------------------------------------

    def repository(self, model: str, scheme: str) -> str:
        spec = self.catalog.model(model)
        repo = spec.bf16_repo if scheme == "bf16" else spec.quantized_repos.get(scheme)
        if repo is None:
            raise QuantgateError(self.catalog.file("models"), f"no {scheme} repository", model)
        return repo

    def prepare(self, cells: Iterable[MatrixCell]) -> None:
        """Start quantizing the cells' local checkpoints in the background, one at a time, in order.

        Quantization overlaps with the first server start and the workers' imports; ``wait_quiet``
        holds the rate probe (and so every measured step) until it is done.
        """
        for cell in cells:
            key = (cell.model, cell.scheme)
            if cell.scheme == "bf16" or self.local(cell.model) is None or key in self._quantizing:
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qg-quantize")
            self._quantizing[key] = self._pool.submit(self.build_checkpoint, *key)

    def wait_quiet(self) -> None:
        """Wait for background quantization, so that nothing else runs while speed is measured."""
        for future in list(self._quantizing.values()):
            future.exception()

    def checkpoint(self, cell: MatrixCell) -> Checkpoint:
        """The cell's checkpoint: from the background quantization when one was started for it."""
        future = self._quantizing.get((cell.model, cell.scheme))
        return future.result() if future is not None else self.build_checkpoint(cell.model, cell.scheme)

    def build_checkpoint(self, model: str, scheme: str) -> Checkpoint:
        """A hub repository as the catalog names it; a local BF16 model as committed, or its quantized
        form (built once under ``workdir/checkpoints``, reused while every input matches)."""
        local = self.local(model)
        if local is None:
            return Checkpoint(model, scheme, Path(self.repository(model, scheme)), None, None, True)
        source = self.path(local.dir)
        if scheme == "bf16":
            return Checkpoint(model, scheme, source, self.committed_weights(source), None, True)
        calibration = self.spec.calibration
        assert calibration is not None, "load_kind requires calibration for local models"
        scheme_spec = self.catalog.scheme(scheme)
        key = hashlib.sha256(
            "\0".join(
                (
                    local_weights_sha256(source),
                    tokenizer_sha256(source),
                    sha256_file(recipe_path(scheme)),
                    sha256_file(self.path(calibration.file)),
                    str(calibration.samples),
                    str(calibration.max_seq_length),
                    self.envs.version("llmcompressor"),
                )
            ).encode()
        ).hexdigest()[:12]
        target = self.workdir / "checkpoints" / f"{model}__{scheme}__{key}"
        if (target / "config.json").exists():
            check_signature(target / "config.json", scheme, scheme_spec)
            return Checkpoint(model, scheme, target, local_weights_sha256(target), None, True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        done = quantize(
            self.envs.python("compress"),
            source,
            scheme,
            scheme_spec,
            partial,
            self.log_dir,
            calibration=self.path(calibration.file),
            samples=calibration.samples,
            max_seq_length=calibration.max_seq_length,
            env={**os.environ, **self.tool_env()},
        )
        partial.rename(target)
        return Checkpoint(model, scheme, target, local_weights_sha256(target), done.seconds, False)

    @staticmethod
    def committed_weights(source: Path) -> str:
        """A local BF16 model's weights hash, which must be the one its ``build.json`` records: a model
        changed after its build is refused, naming the file."""
        found = local_weights_sha256(source)
        build = source / "build.json"
        if build.exists():
            recorded = json.loads(build.read_text(encoding="utf-8")).get("weights_sha256")
            single = sorted(source.glob("*.safetensors"))
            if recorded is not None and len(single) == 1 and sha256_file(single[0]) != recorded:
                raise QuantgateError(build, "the weights differ from the build's record", "weights_sha256")
        return found

    # -- serving ------------------------------------------------------------------------------------

    def served_context(self, cell: MatrixCell) -> int:
        """The served model's context: the kind's fixed one, else the longest its matrix cells need
        (whichever cell starts it)."""
        fixed = self.spec.server.max_model_len
        return fixed or served_models(self.catalog)[(cell.model, cell.scheme, cell.gpu)].context_tokens

    def server(self, cell: MatrixCell, lease: Lease | None = None) -> VllmServer:
        """The cell's server, not started: on a lease's GPUs with its tensor-parallel size and memory
        share, or (no lease) on the CPU with no GPU visible."""
        settings = self.spec.server
        args = list(settings.args)
        devices = ""
        if lease is not None:
            args += ["--tensor-parallel-size", str(cell.requirement.count)]
            args += ["--gpu-memory-utilization", f"{lease.gpu_memory_utilization:.2f}"]
            devices = ",".join(str(d) for d in lease.devices)
        spec = ServerSpec(
            model_dir=self.checkpoint(cell).path,
            served_name=self.served_name(cell),
            python=self.envs.python("vllm"),
            log_dir=self.log_dir,
            cpu=self.spec.cpu,
            max_model_len=self.served_context(cell),
            extra_args=tuple(args),
            env={**self.tool_env(), **settings.env, "CUDA_VISIBLE_DEVICES": devices},
            ready_timeout=settings.ready_timeout_s,
        )
        return VllmServer(spec)

    def serve(self, cell: MatrixCell, lease: Lease | None = None) -> VllmServer:
        """The running server of the cell's served model, started by its first cell. With a lease it is
        stopped when the lease is released (before the devices go to another worker); without one,
        starting it stops the kind's other servers (a CPU host holds one at a time). Neither a start
        that failed nor a server that died is retried: each later cell of the served model fails
        with that error (a crash is a finding, not noise to restart past)."""
        if cell.served_model in self._start_failed:
            raise self._start_failed[cell.served_model]
        server = self._servers.get(cell.served_model)
        if server is None:
            if lease is None:
                for other in [s for s in self._servers if s != cell.served_model]:
                    self.stop(other)
            server = self.server(cell, lease)
            self._servers[cell.served_model] = server
            self.progress(f"{self.served_name(cell)}: starting the vLLM server")
            try:
                server.start()
            except Exception as error:
                self._servers.pop(cell.served_model, None)
                self._start_failed[cell.served_model] = error
                raise
            self.progress(f"{self.served_name(cell)}: server ready in {server.start_s or 0.0:.0f} s")
            self._starts.append((cell.served_model, float(server.start_s or 0.0)))
            if lease is not None:
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

    # -- accuracy -----------------------------------------------------------------------------------

    def worker(self) -> LightevalWorker:
        if self._worker is None:
            self._worker = LightevalWorker(self.envs.python("eval"), self.log_dir, self.tool_env())
        return self._worker

    def data_files(self, benchmark: str) -> tuple[Path, Path]:
        """A benchmark's local dataset: its README (the config lighteval's task asks for) and rows."""
        if self.spec.accuracy.data is None:
            raise QuantgateError(None, f"{benchmark}: this kind's tasks read the hub, not local data")
        folder = self.path(self.spec.accuracy.data) / benchmark
        rows = sorted(folder.glob("*.jsonl"))
        if not (folder / "README.md").exists() or len(rows) != 1:
            raise QuantgateError(folder, "expected README.md and one rows file (*.jsonl)", "accuracy.data")
        return folder / "README.md", rows[0]

    def items(self, benchmark: str) -> list[dict[str, object]]:
        """A benchmark's local rows in file order (lighteval names an item by its row), read once."""
        if benchmark not in self._items:
            path = self.data_files(benchmark)[1]
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise QuantgateError(path, f"not a JSON row ({exc})", f"line {number}") from None
                if not isinstance(row, dict):
                    raise QuantgateError(path, "not a JSON object", f"line {number}")
                rows.append(row)
            self._items[benchmark] = rows
        return self._items[benchmark]

    def task_data(self, benchmark: str, count: int | None = None) -> Path:
        """The first ``count`` rows (all by default) of a benchmark as the root lighteval's tasks read
        (``<root>/<benchmark>-<content hash>/``: the README and the rows file). The folder's name
        carries the hash because ``datasets`` caches a local folder by its name, not its rows."""
        readme, rows_file = self.data_files(benchmark)
        text = "".join(json.dumps(row) + "\n" for row in self.items(benchmark)[:count])
        key = hashlib.sha256((readme.read_text(encoding="utf-8") + text).encode()).hexdigest()[:12]
        root = self.workdir / "task-data" / key
        target = root / f"{benchmark}-{key}"
        if not (target / rows_file.name).exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(readme, target / "README.md")
            (target / "rows.tmp").write_text(text, encoding="utf-8")
            (target / "rows.tmp").rename(target / rows_file.name)
        return root

    def sampling(self, benchmark: str) -> Sampling:
        task = self.catalog.benchmarks[benchmark]
        if task.scoring != "sampled" or task.sampling is None or task.lighteval_task is None:
            raise QuantgateError(
                self.catalog.file("benchmarks"),
                "a deterministic (log-likelihood) task needs a log-likelihood backend, which quantgate's "
                "server-backed lighteval model does not implement yet",
                benchmark,
            )
        return task.sampling

    def first_samples(self, benchmark: str) -> int:
        return self.spec.accuracy.first_samples or self.sampling(benchmark).samples

    def reference_samples(self) -> int:
        return self.spec.accuracy.reference_samples or DEFAULT_CAP

    def max_tokens(self, cell: MatrixCell) -> int:
        return self.spec.accuracy.max_tokens or cell.context_tokens

    def timeout(self, cell: MatrixCell, share: float = 1.0) -> float:
        """Seconds before an unsized tool job of ``share`` of the cell's estimated work is stopped: from
        the catalog's estimate, or for a local model (no estimate) the kind's limit of the step."""
        if self.local(cell.model) is not None:
            return self.spec.accuracy.timeout_s if cell.kind == "accuracy" else self.spec.speed.timeout_s
        estimate = estimate_cell_seconds(self.catalog, cell) * share
        return max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * estimate + TIMEOUT_SLACK_S)

    @staticmethod
    def sized_timeout(expected_s: float, cap_s: float) -> float:
        """Seconds before a job sized from a probe is stopped: 3x its estimate plus a minute."""
        return min(cap_s, max(MIN_TOOL_TIMEOUT_S, 60.0 + 3.0 * expected_s))

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
        return EvalJob(
            base_url=server.base_url,
            served_name=self.served_name(cell),
            tokenizer=self.checkpoint(cell).path,
            task_file=self.path(acc.task_file),
            task=f"{task.lighteval_task}@k=1@n={samples}",
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
            fewshot=task.fewshot or 0,
            metric_name=task.lighteval_metric,
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

    def update_command(self, cell: MatrixCell) -> str:
        """The command that (re)writes the BF16 references a cell of this kind is judged against."""
        return f'pytest suites -m {cell.gpu} -k "{cell.model}-bf16-" --qg-update-baselines'

    def require(self, path: Path, what: str, cell: MatrixCell) -> None:
        """Fail closed when a reference is missing, naming the command that writes it."""
        if not path.exists():
            raise QuantgateError(
                path, f"no stored {cell.gpu} {what}; write it with: {self.update_command(cell)}"
            )

    def reference(self, cell: MatrixCell, server: VllmServer | None = None) -> tuple[Reference, str | None]:
        """The kind's stored BF16 reference, checked against this run. Under ``update_baselines`` a BF16
        cell (``server`` serves it) first writes it at the reference's samples per item; the note says
        what was written (the run then fails, so that no reference changes silently)."""
        path = self.reference_path(cell)
        samples, seed = self.reference_samples(), self.spec.accuracy.seed + REFERENCE_SEED_OFFSET
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

    def speed_decision(self, cell: MatrixCell) -> Decision:
        return self.rules.speedup_for(
            SpeedCellKey(
                cell.model,
                self.params_b(cell.model),
                cell.scheme,
                cell.gpu,
                cell.scenario or "",
                cell.workload or "lane",
            )
        )

    def rate(self, server: VllmServer, cell: MatrixCell) -> Rate:
        """The server's generation rates, probed once per served model (``runners.probe``).

        Background quantization is waited for first: the rates size the cell's work to its budget, and
        measured beside a quantization they came out 20-40x low.
        """
        name = self.served_name(cell)
        if name not in self._rates:
            self.wait_quiet()
            local = self.local(cell.model)
            prompt = PROBE_PROMPT
            if local is not None and self.spec.accuracy.data is not None:
                first = self.items(local.benchmarks[0])[0]
                prompt = str(first.get("problem") or first.get("Question") or json.dumps(first))
            acc = self.spec.accuracy
            samples = acc.first_samples or 1
            with server.in_use("rate probe"):
                rate = measure_rate(
                    server.base_url,
                    name,
                    prompt,
                    streams=acc.concurrency * samples,
                    timeout=self.spec.budget.probe_timeout_s,
                )
            self._rates[name] = rate
            self.progress(f"{name}: {rate.detail}")
        return self._rates[name]

    def judge_accuracy(self, server: VllmServer, cell: MatrixCell) -> AccuracyOutcome:
        """Evaluate, judge against the reference, and top up with fresh seeds while inconclusive.

        With an accuracy budget, the first look keeps as many items as fit in half of it at the probed
        rate, and a top-up is drawn only when the looks' measured pace says it fits in what is left;
        what was cut is in the outcome (``cuts``), and a cell that cannot evaluate ``min_items`` in its
        budget raises ``OverBudget``. Without one, every item is evaluated, with timeouts from the
        catalog's estimate.
        """
        benchmark = cell.benchmark or ""
        budget = self.spec.budget
        first_samples = self.first_samples(benchmark)
        reference, note = self.reference(cell, server if cell.scheme == "bf16" else None)
        decision = self.recovery_decision(cell)
        reference_counts = reference.counts()
        sized = math.isfinite(budget.accuracy_s) and self.spec.accuracy.data is not None
        items: int | None = None
        cuts: list[Cut] = []
        expected: float | None = None
        if sized:
            # lighteval names an item by its row in the task data, so the first N rows keep their names.
            order = [str(row) for row in range(len(self.items(benchmark))) if str(row) in reference_counts]
            reference_tokens = mean_output_tokens([(i.samples, i.output_tokens) for i in reference.items])
            size = size_first_look(
                len(order),
                first_samples,
                reference_tokens or self.max_tokens(cell),
                self.rate(server, cell).batch_tps,
                budget.accuracy_s,
                min_items=min(budget.min_items, len(order)),
                overhead_s=budget.look_overhead_s,
            )
            if size.items == 0:
                assert size.cut is not None
                raise OverBudget(size.cut)
            cuts += [size.cut] if size.cut else []
            items, expected = size.items, size.seconds
            chosen = set(order[: size.items])
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
            cap=self.reference_samples(),
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

    def context(self) -> dict[str, str]:
        """One line per fact a reader of the report needs to reproduce the run."""
        acc = self.spec.accuracy
        models = self.spec.models
        data = "local data" if acc.data is not None else "the hub datasets"
        return {
            "lane": f"{', '.join(self.spec.kinds)}: {', '.join(models) or 'catalog models'} x "
            f"{', '.join(self.spec.schemes)}",
            **tool_context(self.envs),
            "accuracy": ", ".join(f"{model}: {', '.join(s.benchmarks)}" for model, s in models.items())
            + f" (lighteval's built-in tasks on {data})",
            "sampling": f"the benchmarks' temperature and top-p, max {acc.max_tokens or 'context'} tokens, "
            f"first look {acc.first_samples or 'catalog'}/item, reference {self.reference_samples()}/item",
            "references": str(self.baselines / self.spec.kind if self.spec.cpu else self.baselines),
        }

    # -- speed --------------------------------------------------------------------------------------

    def loads(self, cell: MatrixCell) -> list[tuple[str, ScenarioLoad, str, int, int]]:
        """(scenario, load, workload name, input and output tokens) of the kind's scenarios for the
        cell's workload: the load's own lengths, else the catalog workload's."""
        out: list[tuple[str, ScenarioLoad, str, int, int]] = []
        for scenario, load in self.spec.speed.scenarios.items():
            if load.input_len is not None and load.output_len is not None:
                lengths = (load.input_len, load.output_len)
                name = f"random-{load.input_len}x{load.output_len}"
            else:
                workload = self.catalog.workloads[cell.workload or ""]
                lengths = (workload.prompt_tokens, workload.output_tokens)
                name = cell.workload or ""
            out.append((scenario, load, name, *lengths))
        return out

    def bench_runs(
        self, cell: MatrixCell, repeats: int | None = None, warm_up: bool = True
    ) -> list[BenchRun]:
        """Every scenario's runs on the cell's workload, repeats interleaved (r0 of each scenario, then
        r1, ...) to spread drift. With ``warm_up`` the plan opens with a discarded run (scenario
        ``warm-up``, the first scenario's load): the first measured run of a fresh server was up to 10x
        slower than the next ones."""
        loads = self.loads(cell)
        plan = [("warm-up", *loads[0][1:], 0)] if warm_up else []
        for repeat in range(self.spec.speed.repeats if repeats is None else repeats):
            plan += [(*entry, repeat) for entry in loads]
        return [
            BenchRun(
                scenario,
                workload=workload,
                input_len=input_len,
                output_len=output_len,
                num_prompts=load.num_prompts,
                max_concurrency=load.max_concurrency,
                request_rate=load.request_rate or math.inf,
                goodput={"ttft": load.goodput.ttft_ms, "tpot": load.goodput.tpot_ms} if load.goodput else {},
                repeat=repeat,
                num_warmups=self.spec.speed.warmups,
                seed=repeat,
            )
            for scenario, load, workload, input_len, output_len, repeat in plan
        ]

    def run_seconds(self, run: BenchRun, rate: Rate) -> float:
        """A run's expected seconds at the probed rates, the tool's warm-up requests included."""
        return estimate_run_seconds(
            run.num_prompts + run.num_warmups,
            run.output_len,
            single_stream=run.max_concurrency == 1,
            request_rate=run.request_rate,
            single_tps=rate.single_tps,
            batch_tps=rate.batch_tps,
            overhead_s=self.spec.budget.run_overhead_s,
        )

    def bench_worker(self) -> BenchWorker:
        """One ``vllm bench serve`` process for the session (vLLM is imported once, not per cell)."""
        if self._bench_worker is None:
            self._bench_worker = BenchWorker(
                self.envs.python("vllm"), self.log_dir, {**os.environ, **self.tool_env()}
            )
        return self._bench_worker

    def bench_dir(self, cell: MatrixCell) -> Path:
        """Where the bench results of the cell's served model and workload go in this run."""
        return self.workdir / "bench" / "__".join(filter(None, (self.served_name(cell), cell.workload)))

    def bench(self, server: VllmServer, cell: MatrixCell) -> list[BenchResult]:
        """The plan of the cell's served model and workload: with a speed budget, as many repeats as fit
        (``OverBudget``: none); without one, the kind's repeats with a timeout from the estimate."""
        name = self.served_name(cell)
        runs = self.bench_runs(cell)
        if not math.isfinite(self.spec.budget.speed_s):
            timeout = self.timeout(cell, len(runs) / self.spec.speed.repeats)
        else:
            rate = self.rate(server, cell)
            plan = self.bench_runs(cell, repeats=1)
            warm_s = self.run_seconds(plan[0], rate)
            repeat_s = sum(self.run_seconds(run, rate) for run in plan[1:])
            size = size_bench(
                self.spec.speed.repeats, repeat_s, warm_s, self.spec.budget.speed_s, rate.detail
            )
            if size.cut is not None:
                self.speed_cuts[name] = size.cut
            if size.repeats == 0:
                assert size.cut is not None
                raise OverBudget(size.cut)
            planned = warm_s + size.repeats * repeat_s
            runs = self.bench_runs(cell, size.repeats)
            timeout = self.sized_timeout(planned, self.spec.speed.timeout_s)
            self.progress(
                f"{name}: vllm bench serve, {size.repeats} repeats x {len(self.spec.speed.scenarios)} "
                f"scenarios after a warm-up run (~{planned:.0f} s)"
            )
        with server.in_use("vllm bench serve"):
            return self.bench_worker().run(
                server.base_url, name, self.checkpoint(cell).path, runs, self.bench_dir(cell), timeout=timeout
            )

    def speed_reference_path(self, cell: MatrixCell) -> Path:
        return self.baselines / cell.gpu / cell.model / "speed" / f"{cell.target}.json"

    def speed_provenance(self, cell: MatrixCell) -> dict[str, str]:
        load = self.spec.speed.scenarios[cell.scenario or ""]  # type: ignore[index]
        return {
            "model_repo": self.repository(cell.model, "bf16")
            if self.local(cell.model) is None
            else cell.model,
            "gpu": cell.gpu,
            "scenario": cell.scenario or "",
            "workload": cell.workload or "",
            "load": json.dumps(load.model_dump(mode="json"), sort_keys=True),
            "vllm": self.envs.version("vllm"),
        }

    def store_speed_reference(self, cell: MatrixCell, figures: list[float], gpus: int) -> str:
        path = self.speed_reference_path(cell)
        reference = {
            "schema_version": SPEED_REFERENCE_SCHEMA_VERSION,
            "gpus": gpus,
            "figures": figures,
            "provenance": self.speed_provenance(cell),
        }
        note = f"{'updated' if path.exists() else 'new'} BF16 speed reference {path}"
        atomic_write_text(path, json.dumps(reference, indent=1, sort_keys=True) + "\n")
        return note

    def bf16_speed(self, cell: MatrixCell, metric: str) -> tuple[list[float], int]:
        """BF16's figures and GPU count for the cell's scenario: this session's measurement (``session``)
        or the kind's stored reference, checked against this run (``stored``)."""
        if self.spec.speed.reference == "stored":
            path = self.speed_reference_path(cell)
            self.require(path, f"BF16 speed reference for {cell.model} {cell.target}", cell)
            stored = load_speed_reference(path)
            fix = f"rewrite it with: {self.update_command(cell)}"
            check_comparable(path, stored.provenance, self.speed_provenance(cell), SPEED_MUST_MATCH, fix)
            return list(stored.figures), stored.gpus
        key = (cell.model, "bf16", cell.workload or "")
        measured = self._measured.get(key)
        failure = self._bench_failed.get(key)
        if measured is None and isinstance(failure, OverBudget):
            raise OverBudget(Cut("speed not judged", f"BF16 speed was not measured ({failure.cut})"))
        if measured is None:
            raise QuantgateError(
                self.baselines / cell.gpu / cell.model,
                f"no BF16 speed measured for {cell.model} in this session (its cell failed or was "
                "deselected); speed is judged against the same session's BF16",
            )
        return scenario_figures(measured, cell.scenario or "", metric), 1

    def judge_speed(self, server: VllmServer, cell: MatrixCell) -> SpeedOutcome:
        """The cell's scenario figures (its served model and workload benched once per session) against
        BF16's. A failed bench fails every scenario of it with that error instead of benching again.

        A BF16 cell is the reference; with stored references and ``update_baselines`` its figures are
        stored (the outcome's note says so, and the run fails). The speedup compares whole servers (the
        cards' definition); when BF16 needs more GPUs than the quantized model, the per-GPU speedup is
        reported beside it.
        """
        key = (cell.model, cell.scheme, cell.workload or "")
        if key in self._bench_failed:
            raise self._bench_failed[key]
        if key not in self._measured:
            self.wait_quiet()
            try:
                self._measured[key] = self.bench(server, cell)
            except Exception as error:
                self._bench_failed[key] = error
                raise
        scenario = cell.scenario or ""
        spec = self.catalog.scenarios[scenario]
        quantized = cell.scheme != "bf16"
        mine = scenario_figures(self._measured[key], scenario, spec.metric, allow_zero=quantized)
        runs = tuple(r for r in self._measured[key] if r.run.scenario == scenario)
        gpus = max(1, cell.requirement.count)
        if not quantized:
            note = None
            if self.update_baselines and self.spec.speed.reference == "stored":
                note = self.store_speed_reference(cell, mine, gpus)
            return SpeedOutcome(
                scenario, spec.metric, spec.higher_is_better, mine, mine, None, None, runs, gpus, gpus, note
            )
        bf16, bf16_gpus = self.bf16_speed(cell, spec.metric)
        decision = self.speed_decision(cell)
        verdict = judge_speedup(
            bf16,
            mine,
            decision.floor,
            higher_is_better=spec.higher_is_better,
            reference_gpus=bf16_gpus,
            candidate_gpus=gpus,
        )
        return SpeedOutcome(
            scenario, spec.metric, spec.higher_is_better, mine, bf16, decision, verdict, runs, gpus, bf16_gpus
        )
