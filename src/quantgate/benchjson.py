"""Turn ``vllm bench serve`` results into a pytest-benchmark JSON document.

What: ``from_results`` builds, from ``quantgate.runners.bench.BenchResult`` values, the document that
``pytest --benchmark-json`` writes (pytest-benchmark 5.x layout: ``machine_info``, ``commit_info``,
``benchmarks``, ``datetime``, ``version``); ``write_document`` writes it atomically. One benchmark per
run: its ``stats`` are those of the run's per-request end-to-end latencies in seconds (one *round* per
request, one iteration each), and ``extra_info`` carries the tool's own figures (TTFT/TPOT/ITL mean,
median and p99 in ms, tokens/s, requests/s, goodput) with scenario, workload, scheme, model and the path
of the tool's result file.

Why: pytest-benchmark's files are what CI dashboards and ``pytest-benchmark compare`` read, so a
quantized checkpoint's bench runs can be set beside its BF16 original's with tools people already have
(``pytest-benchmark compare --group-by group bf16.json fp8.json``, or ``--between mean,median`` to put
the same run of two files side by side; it matches benchmarks on ``fullname``, so ``fullname`` names
the run and never the scheme or model, which go into ``params`` and ``extra_info``; a file is told apart
by its name).

The statistics follow pytest-benchmark's definitions (``pytest_benchmark.stats.Stats``), re-derived
here: sample standard deviation (0 for one round); quartiles by Tukey's hinges as described on
Wikipedia's "Quartile" page, method 2 (the medians of the lower and upper halves) for an even number of
rounds and method 3 (weighted) for an odd one; ``ld15iqr``/``hd15iqr`` the lowest/highest datum within
1.5 IQR of the quartiles; ``outliers`` ``"<stddev outliers>;<iqr outliers>"``; ``ops`` rounds / total.
The tests check them against pytest-benchmark's own class.

Standard library only and no I/O besides ``write_document``: the caller passes what it knows about the
machine (CPU, the vllm environment's Python, vllm and torch versions) and the commit.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from quantgate.datafile import atomic_write_text
from quantgate.errors import QuantgateError

if TYPE_CHECKING:
    from quantgate.runners.bench import BenchResult

# The pytest-benchmark release whose layout this module writes (``version`` in the document).
LAYOUT_VERSION: Final = "5.1.0"
TOOL: Final = "vllm bench serve"
STATS_FIELDS: Final[tuple[str, ...]] = (
    "min",
    "max",
    "mean",
    "stddev",
    "rounds",
    "median",
    "iqr",
    "q1",
    "q3",
    "iqr_outliers",
    "stddev_outliers",
    "outliers",
    "ld15iqr",
    "hd15iqr",
    "ops",
    "total",
)
# The tool's figures copied into extra_info (quantgate.results names; ms unless the name says otherwise).
EXTRA_FIGURES: Final[tuple[str, ...]] = (
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    *(
        f"{stat}_{metric}_ms"
        for metric in ("ttft", "tpot", "itl", "e2el")
        for stat in ("mean", "median", "std", "p90", "p95", "p99")
    ),
    "duration_s",
    "completed",
    "failed",
)


def latency_stats(samples: Sequence[float], source: str | Path | None = None) -> dict[str, object]:
    """pytest-benchmark's ``stats`` block (without ``data``/``iterations``) for ``samples`` in seconds."""
    data = [_sample(value, source, f"latencies[{index}]") for index, value in enumerate(samples)]
    if not data:
        raise QuantgateError(source, "no per-request latencies to summarise", "latencies")
    ordered = sorted(data)
    rounds = len(ordered)
    total = sum(data)  # in the tool's order, as pytest-benchmark sums its rounds
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if rounds > 1 else 0.0
    q1, q3 = _quartiles(ordered)
    iqr = q3 - q1
    low_fence, high_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    stddev_outliers = sum(1 for v in ordered if not mean - stddev <= v <= mean + stddev)
    iqr_outliers = sum(1 for v in ordered if not low_fence <= v <= high_fence)
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": rounds,
        "median": statistics.median(ordered),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_outliers,
        "stddev_outliers": stddev_outliers,
        "outliers": f"{stddev_outliers};{iqr_outliers}",
        "ld15iqr": next(v for v in ordered if v >= low_fence),
        "hd15iqr": next(v for v in reversed(ordered) if v <= high_fence),
        "ops": rounds / total if total else 0.0,
        "total": total,
    }


def _quartiles(ordered: Sequence[float]) -> tuple[float, float]:
    n = len(ordered)
    if n == 1:
        return ordered[0], ordered[0]
    if n % 2 == 0:  # method 2: medians of the two halves
        return statistics.median(ordered[: n // 2]), statistics.median(ordered[n // 2 :])
    k, r = divmod(n, 4)  # method 3: n = 4k + 1 or 4k + 3
    if r == 1:
        return (
            0.25 * ordered[k - 1] + 0.75 * ordered[k],
            0.75 * ordered[3 * k] + 0.25 * ordered[3 * k + 1],
        )
    return (
        0.75 * ordered[k] + 0.25 * ordered[k + 1],
        0.25 * ordered[3 * k + 1] + 0.75 * ordered[3 * k + 2],
    )


def _sample(value: object, source: str | Path | None, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QuantgateError(source, f"must be a number, got {value!r}", where)
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise QuantgateError(source, f"must be a finite number >= 0, got {number!r}", where)
    return number


def run_id(result: BenchResult) -> str:
    """The parameter id of a run, as pytest would print it: ``random-64x32-r0`` (a capacity search's
    step: ``random-64x32-r0-s2``)."""
    step = "" if result.run.step is None else f"-s{result.run.step}"
    return f"{result.run.workload}-r{result.run.repeat}{step}"


def benchmark_entry(
    result: BenchResult,
    *,
    scheme: str,
    model: str,
    prefix: str = "vllm-bench-serve",
    include_data: bool = True,
) -> dict[str, object]:
    """One pytest-benchmark ``benchmarks[]`` entry for one bench run.

    ``group`` is the scenario and workload (what is comparable), ``name`` ``<scenario>[<workload>-r<repeat>]``
    and ``fullname`` ``<prefix>::<name>``; scheme and model go into ``params`` and ``extra_info``.
    """
    source = result.result_path
    if result.latencies_s is None:
        raise QuantgateError(
            source, "no per-request latencies (was the file saved with --save-detailed?)", "latencies"
        )
    run = result.run
    stats = latency_stats(result.latencies_s, source)
    if include_data:
        stats["data"] = list(result.latencies_s)
    stats["iterations"] = 1
    param = run_id(result)
    name = f"{run.scenario}[{param}]"
    extra: dict[str, object] = {
        "tool": TOOL,
        "scenario": run.scenario,
        "workload": run.workload,
        "scheme": scheme,
        "model": model,
        "served_model": result.model,
        "result_file": str(source),
        "input_len": run.input_len,
        "output_len": run.output_len,
        "num_prompts": run.num_prompts,
        "request_rate": "inf" if math.isinf(run.request_rate) else run.request_rate,
        "max_concurrency": run.max_concurrency,
        "burstiness": run.burstiness,
        "seed": run.seed,
        "repeat": run.repeat,
        "search_step": run.step,
        "goodput_slo_ms": dict(run.goodput),
        "prompt_tokens": result.prompt_tokens,
        "output_tokens": result.output_tokens,
        "run_s": result.run_s,
        "driver_s": result.driver_s,
    }
    for key in EXTRA_FIGURES:
        value = result.figures.get(key)
        if value is not None:
            extra[key] = _sample(value, source, key) if key != "completed" else int(value)
    if "output_throughput" in result.figures:
        extra["tokens_per_s"] = result.figures["output_throughput"]
    return {
        "group": f"{run.scenario} {run.workload}",
        "name": name,
        "fullname": f"{prefix}::{name}",
        "params": {
            "scenario": run.scenario,
            "workload": run.workload,
            "repeat": run.repeat,
            "scheme": scheme,
            "model": model,
        },
        "param": param,
        "extra_info": extra,
        "options": {
            "disable_gc": False,
            "timer": f"{TOOL}: client-side end-to-end latency per request",
            "min_rounds": run.num_prompts,
            "max_time": None,
            "min_time": None,
            "warmup": False,
        },
        "stats": stats,
    }


def machine_info(
    *,
    cpu: Mapping[str, object] | str,
    python: str,
    vllm: str | None,
    torch: str | None,
    gpu: Mapping[str, object] | None = None,
    base: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """``machine_info`` as pytest-benchmark writes it, plus the tool versions.

    ``base`` defaults to what ``platform`` says about this machine (node, system, release, ...);
    ``python`` is the version of the interpreter that ran the tool (the vllm environment's), which is
    also put into ``python_version``. A ``cpu`` string becomes ``{"brand_raw": cpu}``. ``gpu`` (devices,
    driver and CUDA versions from NVML) is added when the run had GPUs.
    """
    info: dict[str, object] = dict(base) if base is not None else platform_info()
    info["cpu"] = {"brand_raw": cpu} if isinstance(cpu, str) else dict(cpu)
    info["python_version"] = python
    info["tool_python_version"] = python
    info["vllm_version"] = vllm
    info["torch_version"] = torch
    if gpu is not None:
        info["gpu"] = dict(gpu)
    return info


def platform_info() -> dict[str, object]:
    """The machine fields pytest-benchmark takes from ``platform`` (no ``cpu``)."""
    return {
        "node": platform.node(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": platform.release(),
        "system": platform.system(),
    }


def commit_info(
    commit: str = "unversioned",
    *,
    time: str | None = None,
    author_time: str | None = None,
    dirty: bool = False,
    project: str = "quantgate",
    branch: str = "(unknown)",
) -> dict[str, object]:
    """``commit_info`` in pytest-benchmark's layout; the caller knows the commit."""
    return {
        "id": commit,
        "time": time,
        "author_time": author_time,
        "dirty": dirty,
        "project": project,
        "branch": branch,
    }


def document(
    benchmarks: Sequence[Mapping[str, object]],
    *,
    machine: Mapping[str, object],
    commit: Mapping[str, object],
    when: datetime | None = None,
    version: str = LAYOUT_VERSION,
) -> dict[str, object]:
    """The whole pytest-benchmark document around ``benchmarks`` entries."""
    if not benchmarks:
        raise ValueError("a pytest-benchmark document needs at least one benchmark")
    fullnames = [str(b.get("fullname")) for b in benchmarks]
    twice = sorted({f for f in fullnames if fullnames.count(f) > 1})
    if twice:
        raise ValueError(f"benchmark fullnames must be unique within a document: {', '.join(twice)}")
    return {
        "machine_info": dict(machine),
        "commit_info": dict(commit),
        "benchmarks": [dict(b) for b in benchmarks],
        "datetime": (when or datetime.now(UTC)).isoformat(),
        "version": version,
    }


def from_results(
    results: Sequence[BenchResult],
    *,
    scheme: str,
    model: str,
    machine: Mapping[str, object],
    commit: Mapping[str, object],
    when: datetime | None = None,
    include_data: bool = True,
) -> dict[str, object]:
    """A pytest-benchmark document with one benchmark per result (all of one scheme and model)."""
    entries = [
        benchmark_entry(result, scheme=scheme, model=model, include_data=include_data) for result in results
    ]
    return document(entries, machine=machine, commit=commit, when=when)


def dumps(doc: Mapping[str, object]) -> str:
    """JSON text as pytest-benchmark writes it (4-space indent); NaN and infinities are refused."""
    return json.dumps(doc, indent=4, allow_nan=False) + "\n"


def write_document(path: str | Path, doc: Mapping[str, object]) -> Path:
    """Write ``doc`` to ``path`` atomically (readers see the old file or the new one)."""
    path = Path(path)
    atomic_write_text(path, dumps(doc))
    return path
