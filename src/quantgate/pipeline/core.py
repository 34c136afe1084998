"""The pipeline's core: checkpoints, servers, the lighteval worker, task data, timeouts, the probe.

``Pipeline`` (``quantgate.pipeline``) adds the accuracy and speed stages to it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from quantgate import paths
from quantgate.budget import Cut
from quantgate.catalog import Catalog, Sampling, load_catalog
from quantgate.devices.leases import Lease
from quantgate.envs import Envs, sha256_file, tokenizer_sha256, tool_context
from quantgate.envs import weights_sha256 as local_weights_sha256
from quantgate.errors import QuantgateError
from quantgate.judge import DEFAULT_CAP
from quantgate.kinds import KindSpec, LocalModel
from quantgate.matrix import CellKind, MatrixCell, Requirement, estimate_cell_seconds, served_models
from quantgate.rules import Rules, load_rules
from quantgate.runners.bench import BenchResult, BenchWorker
from quantgate.runners.evaluate import LightevalWorker
from quantgate.runners.probe import Rate, measure_rate
from quantgate.runners.quantize import check_signature, quantize, recipe_path
from quantgate.runners.serve import ServerSpec, VllmServer

REFERENCE_SEED_OFFSET = 100_000
# Deterministic tasks (Open LLM v1): greedy, one answer per item.
GREEDY = Sampling(temperature=0.0, top_p=1.0, samples=1)
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
SPEED_MUST_MATCH = ("model_repo", "gpu", "scenario", "workload", "load", "warmups", "prompts", "vllm")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
PROBE_PROMPT = "Solve: what is 12 + 30? Reply with the number."


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
class PipelineCore:
    """One session's state on one kind: checkpoints, servers, workers, measurements, references."""

    spec: KindSpec
    envs: Envs
    workdir: Path
    root: Path = field(default_factory=paths.root)
    baselines: Path = field(default_factory=paths.baselines_dir)
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
    _confirming: dict[tuple[str, str, str], list[BenchResult] | Exception] = field(default_factory=dict)
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

    @staticmethod
    def job_name(cell: MatrixCell) -> str:
        """The cell's job as a file name: its server's log is named by it (two replicas of one served
        model may run at once on workers sharing the work directory)."""
        return cell.job.replace("/", "__")

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
            # the cell's own count: a wider accuracy-only replica is served at its larger TP
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
            log_name=self.job_name(cell),
        )
        return VllmServer(spec)

    def serve(self, cell: MatrixCell, lease: Lease | None = None) -> VllmServer:
        """The running server of the cell's job (its served model, or one replica of it), started by
        its first cell. With a lease it is stopped when the lease is released (before the devices go to
        another worker); without one, starting it stops the kind's other servers (a CPU host holds one
        at a time). Neither a start that failed nor a server that died is retried: each later cell of
        the job fails with that error (a crash is a finding, not noise to restart past). Servers and
        failed starts are kept per job: another replica of the served model on this worker has its
        own devices and TP, and starts its own server."""
        job = cell.job
        if job in self._start_failed:
            raise self._start_failed[job]
        server = self._servers.get(job)
        if server is None:
            if lease is None:
                for other in [s for s in self._servers if s != job]:
                    self.stop(other)
            server = self.server(cell, lease)
            self._servers[job] = server
            self.progress(f"{self.job_name(cell)}: starting the vLLM server")
            try:
                server.start()
            except Exception as error:
                self._servers.pop(job, None)
                self._start_failed[job] = error
                raise
            self.progress(f"{self.job_name(cell)}: server ready in {server.start_s or 0.0:.0f} s")
            self._starts.append((cell.served_model, float(server.start_s or 0.0)))
            if lease is not None:
                lease.on_release(lambda: self.stop(job))
        return server

    def take_starts(self) -> list[tuple[str, float]]:
        """Server starts since the last call: (served model, seconds to ready)."""
        starts, self._starts = self._starts, []
        return starts

    def stop(self, job: str) -> None:
        """Stop the server of a job (``MatrixCell.job``), if one runs."""
        server = self._servers.pop(job, None)
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
        """A sampled benchmark's settings; a deterministic one's are greedy, one answer per item."""
        task = self.catalog.benchmarks[benchmark]
        if task.lighteval_task is None:
            raise QuantgateError(self.catalog.file("benchmarks"), "not a lighteval task", benchmark)
        if task.scoring == "deterministic" or task.sampling is None:
            return GREEDY
        return task.sampling

    def deterministic(self, benchmark: str) -> bool:
        """One answer per item (log-likelihood or greedy): judged once, per item, without top-ups."""
        return self.catalog.benchmarks[benchmark].scoring == "deterministic"

    def fewshot(self, benchmark: str) -> int:
        """The task's few-shot count: the kind's where it sets one, else the catalog's."""
        kind = self.spec.accuracy.fewshot
        return kind if kind is not None else self.catalog.benchmarks[benchmark].fewshot or 0

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
        return self.scaled_timeout(estimate_cell_seconds(self.catalog, cell) * share)

    @staticmethod
    def scaled_timeout(estimate_s: float) -> float:
        """Seconds before an unsized tool job estimated at ``estimate_s`` is stopped as hung."""
        return max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * estimate_s + TIMEOUT_SLACK_S)

    @staticmethod
    def sized_timeout(expected_s: float, cap_s: float) -> float:
        """Seconds before a job sized from a probe is stopped: 3x its estimate plus a minute."""
        return min(cap_s, max(MIN_TOOL_TIMEOUT_S, 60.0 + 3.0 * expected_s))

    def update_command(self, cell: MatrixCell) -> str:
        """The command that (re)writes the BF16 references a cell of this kind is judged against."""
        return f'pytest suites -m {cell.gpu} -k "{cell.model}-bf16-" --qg-update-baselines'

    def require(self, path: Path, what: str, cell: MatrixCell) -> None:
        """Fail closed when a reference is missing, naming the command that writes it."""
        if not path.exists():
            raise QuantgateError(
                path, f"no stored {cell.gpu} {what}; write it with: {self.update_command(cell)}"
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
                    api_key=server.api_key,
                )
            self._rates[name] = rate
            self.progress(f"{name}: {rate.detail}")
        return self._rates[name]

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
