"""vLLM bench result files: latency, throughput and serve."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from quantgate.errors import QuantgateError
from quantgate.results.fields import (
    _add_provenance,
    _count,
    _join,
    _list,
    _mapping,
    _number,
    _optional_count,
    _optional_number,
    _optional_str,
    _required,
    _what,
)
from quantgate.results.records import (
    PerfResult,
    ResultFile,
    _is_number,
)


def _vllm_latency(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "vllm-bench-latency"
    metrics = {"latency_s": _number(path, _required(path, doc, "avg_latency"), "avg_latency", minimum=0.0)}
    percentiles = doc.get("percentiles")
    if percentiles is not None:
        for key, value in _mapping(path, percentiles, "percentiles").items():
            where = _join("percentiles", key)
            try:
                level = float(key)
            except ValueError:
                raise QuantgateError(path, "percentile key must be a number", where) from None
            if not 0 <= level <= 100:
                raise QuantgateError(path, "percentile key must lie in 0..100", where)
            metrics[f"p{key}_latency_s"] = _number(path, value, where, minimum=0.0)
    samples: tuple[float, ...] | None = None
    latencies = doc.get("latencies")
    if latencies is not None:
        values = _list(path, latencies, "latencies")
        samples = (
            tuple(_number(path, v, f"latencies[{i}]", minimum=0.0) for i, v in enumerate(values)) or None
        )
    perf = PerfResult(str(path), kind, None, None, path.stem, "latency", metrics, samples, None, None)
    return ResultFile(str(path), kind, None, (), (perf,), {"tool": "vllm bench latency"})


def _vllm_throughput(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "vllm-bench-throughput"
    elapsed = _number(path, _required(path, doc, "elapsed_time"), "elapsed_time", minimum=0.0)
    num_requests = _count(path, _required(path, doc, "num_requests"), "num_requests")
    total_tokens = _count(path, _required(path, doc, "total_num_tokens"), "total_num_tokens")
    metrics = {
        "request_throughput": _number(
            path, _required(path, doc, "requests_per_second"), "requests_per_second", minimum=0.0
        ),
        "total_token_throughput": _number(
            path, _required(path, doc, "tokens_per_second"), "tokens_per_second", minimum=0.0
        ),
        "elapsed_s": elapsed,
        "num_requests": float(num_requests),
    }
    output_tokens = _optional_count(path, doc, "total_output_tokens", "")
    prompt_tokens: int | None = None
    if output_tokens is not None:
        if output_tokens > total_tokens:
            raise QuantgateError(path, f"exceeds total_num_tokens ({total_tokens})", "total_output_tokens")
        prompt_tokens = total_tokens - output_tokens
        if elapsed > 0:
            metrics["output_throughput"] = output_tokens / elapsed
    perf = PerfResult(
        str(path), kind, None, None, path.stem, "offline", metrics, None, prompt_tokens, output_tokens
    )
    return ResultFile(str(path), kind, None, (), (perf,), {"tool": "vllm bench throughput"})


_SERVE_STAT = re.compile(r"^(?:mean|median|std|p\d+(?:\.\d+)?)_(?:ttft|tpot|itl|e2el)_ms$")
_SERVE_RATES: Final = (
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "request_goodput",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
)


# A serve result from a vintage or fork without throughput still has some of these (and ``completed``
# or ``duration``): it is read as one, with the figures it lacks named in its provenance (``missing``).
SERVE_LATENCY_KEYS: Final = frozenset(
    f"{stat}_{what}_ms" for stat in ("mean", "median", "p99") for what in ("ttft", "tpot", "itl", "e2el")
)
_SERVE_FIGURES: Final = (
    "request_throughput",
    "output_throughput",
    "duration",
    "completed",
    "total_input_tokens",
    "total_output_tokens",
)


_SERVE_SETTINGS: Final = (
    "backend",
    "burstiness",
    "date",
    "endpoint_type",
    "label",
    "max_concurrency",
    "model_id",
    "num_prompts",
    "ramp_up_end_rps",
    "ramp_up_start_rps",
    "ramp_up_strategy",
    "request_rate",
    "tokenizer_id",
)


def _serve_metrics(path: Path, doc: Mapping[str, object]) -> dict[str, float]:
    """Throughputs, rates, counts and latency statistics; a file with neither throughput nor latency
    is refused."""
    metrics: dict[str, float] = {}
    for key in ("request_throughput", "output_throughput"):
        if key in doc:
            metrics[key] = _number(path, doc[key], key, minimum=0.0)
    for key in _SERVE_RATES[2:]:
        value = _optional_number(path, doc, key, "", minimum=0.0)
        if value is not None:
            metrics[key] = value
    if "duration" in doc:
        metrics["duration_s"] = _number(path, doc["duration"], "duration", minimum=0.0)
    if "completed" in doc:
        metrics["completed"] = float(_count(path, doc["completed"], "completed"))
    failed = _optional_count(path, doc, "failed", "")
    if failed is not None:
        metrics["failed"] = float(failed)
    for key, stat in doc.items():
        if _SERVE_STAT.match(key):
            metrics[key] = _number(path, stat, key, minimum=0.0)
    if "mean_e2el_ms" in metrics:
        metrics["latency_s"] = metrics["mean_e2el_ms"] / 1000.0
    if not any(key in metrics for key in ("request_throughput", *SERVE_LATENCY_KEYS)):
        raise QuantgateError(
            path, "a vllm bench serve result needs a throughput or a latency", "request_throughput"
        )
    return metrics


def _serve_load(path: Path, doc: Mapping[str, object]) -> str | None:
    """The offered load as ``request_rate=R, max_concurrency=C`` (what was set of the two)."""
    rate = doc.get("request_rate")
    if isinstance(rate, str):
        if rate.strip().lower() not in ("inf", "infinity"):
            raise QuantgateError(path, f'must be a number or "inf", got {_what(rate)}', "request_rate")
        rate_text: str | None = "inf"
    elif _is_number(rate) and isinstance(rate, float) and math.isinf(rate) and rate > 0:
        rate_text = "inf"
    elif rate is None:
        rate_text = None
    else:
        rate_text = f"{_number(path, rate, 'request_rate', minimum=0.0):g}"
    concurrency = _optional_count(path, doc, "max_concurrency", "")
    parts = []
    if rate_text is not None:
        parts.append(f"request_rate={rate_text}")
    if concurrency is not None:
        parts.append(f"max_concurrency={concurrency}")
    return ", ".join(parts) or None


def _serve_provenance(doc: Mapping[str, object]) -> dict[str, str]:
    """The run's settings, the figures an older or forked vintage left out, and ``--metadata`` entries."""
    provenance: dict[str, str] = {"tool": "vllm bench serve"}
    _add_provenance(provenance, "", doc, list(_SERVE_SETTINGS))
    missing = [key for key in _SERVE_FIGURES if key not in doc]
    if missing:
        provenance["missing"] = ", ".join(missing)
    for key, entry in doc.items():  # --metadata KEY=VALUE entries are strings at the top level
        if key not in _SERVE_SETTINGS and isinstance(entry, str) and entry:
            provenance.setdefault(key, entry)
    return provenance


def _vllm_serve(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "vllm-bench-serve"
    metrics = _serve_metrics(path, doc)
    perf = PerfResult(
        source=str(path),
        kind=kind,
        tool_version=None,
        model=_optional_str(doc.get("model_id")),
        name=path.stem,
        scenario=_serve_load(path, doc),
        metrics=metrics,
        samples=None,
        prompt_tokens=_optional_count(path, doc, "total_input_tokens", ""),
        output_tokens=_optional_count(path, doc, "total_output_tokens", ""),
    )
    return ResultFile(str(path), kind, None, (), (perf,), _serve_provenance(doc))
