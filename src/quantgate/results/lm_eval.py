"""lm-evaluation-harness results files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from quantgate.errors import QuantgateError
from quantgate.results.fields import (
    _add_provenance,
    _dict_or_empty,
    _join,
    _mapping,
    _number,
    _optional_str,
    _required,
    _stderr,
)
from quantgate.results.records import (
    AccuracyResult,
    ResultFile,
    _is_number,
    _Scores,
)

_LM_EVAL_NON_METRICS: Final = frozenset({"alias", "name", "sample_len", "samples", "sample_count"})


def _lm_eval_results(path: Path, doc: Mapping[str, object]) -> ResultFile:
    kind = "lm-eval-results"
    results = _mapping(path, _required(path, doc, "results"), "results")
    tool_version = _optional_str(doc.get("lm_eval_version"))
    config = _dict_or_empty(doc.get("config"))
    model = _optional_str(doc.get("model_name")) or _pretrained(config.get("model_args"))
    n_shot = _dict_or_empty(doc.get("n-shot"))

    provenance: dict[str, str] = {"tool": "lm-evaluation-harness"}
    _add_provenance(
        provenance,
        "",
        doc,
        (
            "lm_eval_version",
            "git_hash",
            "upper_git_hash",
            "date",
            "transformers_version",
            "model_name",
            "model_name_sanitized",
            "model_source",
            "start_time",
            "end_time",
            "total_evaluation_time_seconds",
        ),
    )
    _add_provenance(
        provenance, "config.", config, ("model", "model_args", "batch_size", "limit", "bootstrap_iters")
    )
    n_samples = doc.get("n-samples")
    if isinstance(n_samples, dict):
        for task_name, counts in n_samples.items():
            _add_provenance(provenance, f"n-samples.{task_name}.", counts, ("original", "effective"))

    file_scores = _Scores(str(path), kind, tool_version, model)
    out: list[AccuracyResult] = []
    for task, scores in results.items():
        where = _join("results", task)
        scores = _mapping(path, scores, where)
        fewshot_raw = n_shot.get(task)
        fewshot = fewshot_raw if isinstance(fewshot_raw, int) and not isinstance(fewshot_raw, bool) else None
        fewshot = fewshot if fewshot is not None and fewshot >= 0 else None
        for key, value in scores.items():
            base, comma, filter_name = key.partition(",")
            if key in _LM_EVAL_NON_METRICS or base.endswith("_stderr"):
                continue
            if not comma and not _is_number(value):
                continue  # old-style metadata such as a string alias
            metric_where = _join(where, key)
            number = _number(path, value, metric_where)
            stderr_key = f"{base}_stderr{comma}{filter_name}"
            stderr = _stderr(path, scores.get(stderr_key), _join(where, stderr_key))
            out.append(file_scores.score(str(task), key, number, stderr, None, fewshot))
    if not out:
        raise QuantgateError(path, "no metrics in any task", "results")
    return ResultFile(str(path), kind, tool_version, tuple(out), (), provenance)


def _pretrained(model_args: object) -> str | None:
    if isinstance(model_args, dict):
        return _optional_str(model_args.get("pretrained")) or _optional_str(model_args.get("model"))
    if isinstance(model_args, str):
        for part in model_args.split(","):
            key, _, value = part.partition("=")
            if key.strip() in ("pretrained", "model") and value.strip():
                return value.strip()
    return None
