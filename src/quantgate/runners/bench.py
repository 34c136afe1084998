"""Measure a served model's speed with ``vllm bench serve``: runs as data, one tool process per plan.

What: a ``BenchRun`` says how to load the server (a scenario, a random-token workload, the request
pattern, the seed, goodput limits, a repeat index); ``serve_args`` turns it into the command line a user
would type after ``vllm bench serve``; ``bench`` runs a list of them through ``drivers/bench_serve.py``
in the vllm environment's interpreter and returns, per run, the tool's own result JSON and the figures
read from it (``BenchResult``).

Why this shape: the tool's result file is the record. Every run is an ordinary ``vllm bench serve``
invocation (``--save-result --save-detailed``) whose JSON is kept as the tool wrote it, and the figures
are read back through ``quantgate.results`` like any file a user hands us, so a run made by hand and a
run made here are read the same way. The server's API key reaches the tool in its environment
(``OPENAI_API_KEY``, which ``vllm bench serve`` sends as a bearer token), never in the plan's arguments.
One driver process runs all runs of a plan because ``import vllm`` (about 12 s on two CPU cores) dwarfs
a CPU-sized run (1-5 s).

The three scenarios of ``suites/catalog/scenarios.yaml`` (``single_stream``, ``multi_stream``,
``server``) map onto the tool's options as follows: single stream is ``--max-concurrency 1`` at
``--request-rate inf`` (the next request leaves when the previous one is done); multi stream sends every
prompt at once (``--request-rate inf``, no concurrency cap); server sends Poisson arrivals
(``--burstiness 1``) at a ``--request-rate`` with ``--goodput ttft:X tpot:Y`` (milliseconds): one run at
a fixed rate, or the steps of a capacity search (``runners.capacity``; each step one run, named
``.s<step>``, carrying the search's settings). The defaults, 64 prompt and 32 output tokens with
``--ignore-eos``, fit the tiny CPU models and FP8's slow CPU kernels.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from quantgate.datafile import atomic_write_text
from quantgate.errors import QuantgateError
from quantgate.results import PerfResult, read_result
from quantgate.runners.capacity import SearchSettings
from quantgate.runners.process import CLIENT_KEY_ENV, JobWorker, ToolError, run_tool

DRIVER: Final = Path(__file__).resolve().parent / "drivers" / "bench_serve.py"
TOOL: Final = "vllm bench serve"
SCENARIOS: Final[tuple[str, ...]] = ("single-stream", "multi-stream", "server")
GOODPUT_METRICS: Final[tuple[str, ...]] = ("ttft", "tpot", "e2el")
# The figures every result must carry (the tool's defaults: --percentile-metrics ttft,tpot,itl and
# --metric-percentiles 99); names as quantgate.results reports them.
KEY_FIGURES: Final[tuple[str, ...]] = (
    "request_throughput",
    "output_throughput",
    *(f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl") for stat in ("mean", "median", "p99")),
    "duration_s",
    "completed",
)
# Summaries asked of the tool: its default (ttft,tpot,itl at p99) plus end-to-end latency (which
# quantgate.results turns into ``latency_s``, the single-stream figure) and p90.
PERCENTILE_METRICS: Final = "ttft,tpot,itl,e2el"
METRIC_PERCENTILES: Final = "90,99"
_FIGURE_FIELDS: Final = {"duration_s": "duration"}  # quantgate's name -> the tool's field, where they differ
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RUN_LINE: Final = '{"qg_bench_run": '


@dataclass(frozen=True)
class BenchRun:
    """One ``vllm bench serve`` run: how to load the server and which repeat this is.

    ``request_rate`` is requests per second (``math.inf``: all at once); ``max_concurrency`` caps the
    requests in flight. ``goodput`` maps ``ttft``/``tpot``/``e2el`` to limits in milliseconds.
    ``temperature`` 0 (greedy) keeps the sampling the same for every checkpoint, whatever its
    ``generation_config.json`` says; ``None`` leaves it to the server. ``num_warmups`` requests (the
    tool's own warm-up, not measured) go first: the first requests a fresh server answers are slower.
    """

    scenario: str
    workload: str = "random-64x32"
    input_len: int = 64
    output_len: int = 32
    num_prompts: int = 16
    max_concurrency: int | None = None
    request_rate: float = math.inf
    burstiness: float = 1.0
    seed: int = 0
    ignore_eos: bool = True
    goodput: Mapping[str, float] = field(default_factory=dict)
    repeat: int = 0
    temperature: float | None = 0.0
    num_warmups: int = 0
    dataset: str = "random"
    extra_args: tuple[str, ...] = ()
    step: int | None = None
    search: SearchSettings | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.scenario):
            raise ValueError(f"scenario must be a plain name ([A-Za-z0-9_.-]), got {self.scenario!r}")
        if not _NAME.match(self.workload):
            raise ValueError(f"workload must be a plain name ([A-Za-z0-9_.-]), got {self.workload!r}")
        if self.dataset != "random":
            raise ValueError(f"only the 'random' dataset is supported here, got {self.dataset!r}")
        for name in ("input_len", "output_len", "num_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_concurrency is not None and (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise ValueError(f"max_concurrency must be an integer >= 1 or None, got {self.max_concurrency!r}")
        if math.isnan(self.request_rate) or self.request_rate <= 0:
            raise ValueError(f"request_rate must be > 0 (inf: all at once), got {self.request_rate!r}")
        if not math.isfinite(self.burstiness) or self.burstiness <= 0:
            raise ValueError(f"burstiness must be a finite number > 0, got {self.burstiness!r}")
        if self.step is not None and (self.search is None or self.step < 0):
            raise ValueError(f"step {self.step!r} needs search settings and must be >= 0")
        for name in ("repeat", "num_warmups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        goodput = dict(self.goodput)
        for key, limit in goodput.items():
            if key not in GOODPUT_METRICS:
                raise ValueError(f"goodput limits are {', '.join(GOODPUT_METRICS)}, got {key!r}")
            if not math.isfinite(limit) or limit <= 0:
                raise ValueError(f"goodput limit {key} must be a finite number of ms > 0, got {limit!r}")
        object.__setattr__(self, "goodput", MappingProxyType(goodput))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    @property
    def name(self) -> str:
        """Unique within a plan when scenario, workload, repeat and step are:
        ``single-stream.random-64x32.r0``; a capacity search's step adds ``.s<step>``
        (``server.random-64x32.r0.s2``)."""
        step = "" if self.step is None else f".s{self.step}"
        return f"{self.scenario}.{self.workload}.r{self.repeat}{step}"


def single_stream(num_prompts: int = 8, **kwargs: Any) -> BenchRun:
    """One request at a time: the figure is per-request latency."""
    return BenchRun("single-stream", num_prompts=num_prompts, max_concurrency=1, **kwargs)


def multi_stream(num_prompts: int = 32, **kwargs: Any) -> BenchRun:
    """Every prompt at once: the figure is the throughput the server reaches."""
    return BenchRun("multi-stream", num_prompts=num_prompts, **kwargs)


def server(
    request_rate: float, ttft_ms: float, tpot_ms: float, num_prompts: int = 32, **kwargs: Any
) -> BenchRun:
    """Poisson arrivals at ``request_rate`` per second; goodput against the TTFT and TPOT limits."""
    return BenchRun(
        "server",
        num_prompts=num_prompts,
        request_rate=request_rate,
        goodput={"ttft": ttft_ms, "tpot": tpot_ms},
        **kwargs,
    )


def _number_text(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def serve_args(
    run: BenchRun, base_url: str, served_name: str, tokenizer: Path | str, result_dir: Path | str
) -> list[str]:
    """The arguments a user would type after ``vllm bench serve`` for ``run``.

    The result goes to ``result_dir/<run.name>.json`` with the per-request details (``--save-detailed``).
    """
    args = [
        "--backend",
        "vllm",
        "--base-url",
        base_url,
        "--model",
        served_name,
        "--tokenizer",
        str(tokenizer),
        "--dataset-name",
        run.dataset,
        "--random-input-len",
        str(run.input_len),
        "--random-output-len",
        str(run.output_len),
        "--num-prompts",
        str(run.num_prompts),
        "--request-rate",
        _number_text(run.request_rate),
        "--burstiness",
        _number_text(run.burstiness),
        "--seed",
        str(run.seed),
    ]
    if run.max_concurrency is not None:
        args += ["--max-concurrency", str(run.max_concurrency)]
    if run.ignore_eos:
        args.append("--ignore-eos")
    if run.temperature is not None:
        args += ["--temperature", _number_text(run.temperature)]
    if run.num_warmups:
        args += ["--num-warmups", str(run.num_warmups)]
    if run.goodput:
        args += ["--goodput", *(f"{key}:{_number_text(limit)}" for key, limit in run.goodput.items())]
    args += [
        "--percentile-metrics",
        PERCENTILE_METRICS,
        "--metric-percentiles",
        METRIC_PERCENTILES,
        "--disable-tqdm",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        str(result_dir),
        "--result-filename",
        f"{run.name}.json",
        "--metadata",
        f"scenario={run.scenario}",
        f"workload={run.workload}",
        f"repeat={run.repeat}",
        *([] if run.step is None else [f"step={run.step}"]),
        *run.extra_args,
    ]
    return args


@dataclass(frozen=True)
class BenchResult:
    """One finished run: the tool's result file and what was read from it.

    ``figures`` holds every metric ``quantgate.results`` reads from the file (``KEY_FIGURES`` at least;
    ``request_goodput`` when goodput limits were given). ``latencies_s``, ``ttfts_s`` and
    ``output_lens`` are per successful request, in the tool's order, where the file has them.
    ``run_s`` is the time the tool spent on this run inside the driver, ``driver_s`` the wall time of
    the whole driver process (shared by every run of the plan, imports included).
    """

    run: BenchRun
    result_path: Path
    figures: Mapping[str, float]
    latencies_s: tuple[float, ...] | None
    ttfts_s: tuple[float, ...] | None
    output_lens: tuple[int, ...] | None
    prompt_tokens: int | None
    output_tokens: int | None
    model: str | None
    run_s: float | None
    driver_s: float

    def figure(self, name: str) -> float:
        return self.figures[name]

    @property
    def request_throughput(self) -> float:
        return self.figures["request_throughput"]

    @property
    def output_throughput(self) -> float:
        return self.figures["output_throughput"]

    @property
    def completed(self) -> int:
        return int(self.figures["completed"])

    @property
    def duration_s(self) -> float:
        return self.figures["duration_s"]


def write_plan(path: Path, runs: Sequence[tuple[str, Sequence[str]]]) -> Path:
    """Write the driver's plan file: ``{"runs": [{"name": ..., "args": [...]}, ...]}``."""
    plan = {"runs": [{"name": name, "args": list(args)} for name, args in runs]}
    atomic_write_text(path, json.dumps(plan, indent=1) + "\n")
    return path


def bench(
    python: Path,
    base_url: str,
    served_name: str,
    tokenizer: Path,
    runs: Sequence[BenchRun],
    out_dir: Path,
    log_dir: Path,
    timeout: float = 900.0,
    env: Mapping[str, str] | None = None,
    api_key: str | None = None,
) -> list[BenchResult]:
    """Run every run of ``runs`` against the server at ``base_url`` (with its ``api_key``) in one
    driver process.

    A driver that fails, times out or names a failed run is a ``ToolError`` with the log tail; a run
    with failed requests is a ``ToolError`` too (its figures would describe a broken server). A result
    file that is missing or unreadable is a ``QuantgateError`` naming the file and the field.
    """
    plan = _prepare(base_url, served_name, tokenizer, runs, out_dir)
    log = log_dir / f"bench-{served_name}.log"
    offset = log.stat().st_size if log.exists() else 0
    try:
        command = [str(python), str(DRIVER), "--plan", str(plan)]
        tool_env = {**(env if env is not None else os.environ), CLIENT_KEY_ENV: api_key or ""}
        driver_s = run_tool(f"{TOOL} ({served_name})", command, log, timeout, env=tool_env)
    except ToolError as error:
        raise _named_failure(error, log, offset) from None
    return _collect(runs, out_dir, served_name, log, offset, driver_s)


def _prepare(
    base_url: str, served_name: str, tokenizer: Path, runs: Sequence[BenchRun], out_dir: Path
) -> Path:
    if not runs:
        raise ValueError("no runs to bench")
    names = [run.name for run in runs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"run names must be unique within a plan: {', '.join(twice)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:  # a stale file from an earlier plan must never pass for this run's
        (out_dir / f"{run.name}.json").unlink(missing_ok=True)
    return write_plan(
        out_dir / "bench-plan.json",
        [(run.name, serve_args(run, base_url, served_name, tokenizer, out_dir)) for run in runs],
    )


def _named_failure(error: ToolError, log: Path, offset: int) -> ToolError:
    failed = [r for r in _run_lines(log, offset) if r.get("status") == "error"]
    if failed:
        reason = f"run {failed[-1].get('qg_bench_run')!r} failed: {failed[-1].get('error')}"
        return ToolError(error.tool, reason, log)
    return error


def _collect(
    runs: Sequence[BenchRun], out_dir: Path, served_name: str, log: Path, offset: int, driver_s: float
) -> list[BenchResult]:
    run_seconds: dict[str, float] = {}
    for record in _run_lines(log, offset):
        seconds = record.get("seconds")
        if record.get("status") == "ok" and isinstance(seconds, (int, float)):
            run_seconds[str(record.get("qg_bench_run"))] = float(seconds)
    results = []
    for run in runs:
        path = out_dir / f"{run.name}.json"
        if not path.is_file():
            raise ToolError(f"{TOOL} ({served_name})", f"run {run.name!r} wrote no result file {path}", log)
        result = read_bench_result(path, run, run_s=run_seconds.get(run.name), driver_s=driver_s)
        failed_requests = int(result.figures.get("failed", 0.0))
        if failed_requests:
            raise ToolError(
                f"{TOOL} ({served_name})",
                f"run {run.name!r}: {failed_requests} of {run.num_prompts} requests failed"
                f"{_first_error(path)} (result: {path})",
                log,
            )
        results.append(result)
    return results


class BenchWorker(JobWorker):
    """The vllm environment's ``vllm bench serve``, kept running between plans (``bench_serve.py --serve``).

    Importing vLLM costs ~12 s per process on the CI machine; a lane benches eight servers, so one
    worker imports once (while the first server starts) and runs one plan per served model. A plan
    that fails is a ``ToolError`` naming the run; a worker that dies or hangs is replaced for the next.
    """

    def __init__(self, python: Path, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        command = [str(python), str(DRIVER), "--serve"]
        super().__init__(TOOL, command, log_dir / "bench-worker.log", dict(env) if env is not None else None)

    def run(
        self,
        base_url: str,
        served_name: str,
        tokenizer: Path,
        runs: Sequence[BenchRun],
        out_dir: Path,
        timeout: float = 900.0,
        api_key: str | None = None,
    ) -> list[BenchResult]:
        """Run one plan against the server at ``base_url``; its ``api_key`` goes with the job (stdin)."""
        plan = _prepare(base_url, served_name, tokenizer, runs, out_dir)
        label = f"{TOOL} ({served_name})"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = time.monotonic()
        try:
            job = {"plan": str(plan), "env": {CLIENT_KEY_ENV: api_key or ""}}
            outcome = self.submit(job, out_dir / "bench-done.json", timeout, label)
        except ToolError as error:
            raise _named_failure(error, self.log_path, offset) from None
        if outcome.get("code") != 0:
            ended = ToolError(label, f"the plan ended with status {outcome.get('code')}", self.log_path)
            raise _named_failure(ended, self.log_path, offset)
        return _collect(runs, out_dir, served_name, self.log_path, offset, time.monotonic() - started)


def read_bench_result(
    path: Path, run: BenchRun, *, run_s: float | None = None, driver_s: float = 0.0
) -> BenchResult:
    """Read one ``vllm bench serve`` result file (as the tool wrote it) into a ``BenchResult``."""
    result_file = read_result(path)
    if result_file.kind != "vllm-bench-serve":
        raise QuantgateError(path, f"is a {result_file.kind} file, not a vllm bench serve result")
    perf: PerfResult = result_file.performance[0]
    for name in KEY_FIGURES:
        if name not in perf.metrics:
            raise QuantgateError(path, "missing", _FIGURE_FIELDS.get(name, name))
    details = _details(path, int(perf.metrics["completed"]))
    return BenchResult(
        run=run,
        result_path=path,
        figures=perf.metrics,
        latencies_s=details.get("latencies"),
        ttfts_s=details.get("ttfts"),
        output_lens=_ints(details.get("output_lens")),
        prompt_tokens=perf.prompt_tokens,
        output_tokens=perf.output_tokens,
        model=perf.model,
        run_s=run_s,
        driver_s=driver_s,
    )


# --------------------------------------------------------------------------------------------------
# Per-request details (--save-detailed): read here because quantgate.results keeps only the summary
# --------------------------------------------------------------------------------------------------

_PER_REQUEST: Final = ("latencies", "ttfts", "output_lens")


def _details(path: Path, completed: int) -> dict[str, tuple[float, ...]]:
    """Per-request values of the successful requests, by field; a field the file lacks is left out.

    The tool lists every request, failed ones with latency 0 and a non-empty ``errors`` entry; those
    are dropped. Without ``errors`` (a file saved without ``--save-detailed``) the lists are kept only
    when their length equals ``completed``.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # read_result has read it already; this is a race
        raise QuantgateError(path, f"cannot read: {exc}") from None
    errors = doc.get("errors")
    keep: list[bool] | None = None
    if isinstance(errors, list):
        keep = [not error for error in errors]  # "" for a request that succeeded
    out: dict[str, tuple[float, ...]] = {}
    for key in _PER_REQUEST:
        raw = doc.get(key)
        if raw is None:
            continue
        if not isinstance(raw, list):
            raise QuantgateError(path, f"must be a list, got {type(raw).__name__}", key)
        values = [_per_request_value(path, value, f"{key}[{index}]") for index, value in enumerate(raw)]
        if keep is not None:
            if len(keep) != len(values):
                raise QuantgateError(path, f"has {len(values)} entries but errors has {len(keep)}", key)
            values = [v for v, ok in zip(values, keep, strict=True) if ok]
        if len(values) != completed:
            if keep is not None:
                raise QuantgateError(
                    path, f"has {len(values)} successful entries but completed is {completed}", key
                )
            continue  # without errors the failed requests cannot be told apart
        out[key] = tuple(values)
    return out


def _per_request_value(path: Path, value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QuantgateError(path, f"must be a number, got {value!r}", where)
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise QuantgateError(path, f"must be a finite number >= 0, got {number!r}", where)
    return number


def _ints(values: tuple[float, ...] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(int(v) for v in values)


def _first_error(path: Path) -> str:
    try:
        errors = json.loads(path.read_text(encoding="utf-8")).get("errors")
    except (OSError, ValueError, AttributeError):
        return ""
    first = next((e for e in errors or () if isinstance(e, str) and e), None)
    return f"; first error: {first.strip().splitlines()[-1][:300]}" if first else ""


def _run_lines(log: Path, offset: int) -> list[dict[str, object]]:
    """The driver's per-run JSON lines written to ``log`` after ``offset``."""
    if not log.exists():
        return []
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8", errors="replace")
    records = []
    for line in text.splitlines():
        if line.startswith(_RUN_LINE):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records
