"""judge-jsonl: quantgate's own per-item format (one line per item: samples and correct)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from quantgate.errors import QuantgateError
from quantgate.results.fields import (
    _what,
)
from quantgate.results.records import ItemOutcome, Record, ResultFile, _is_count, _is_number, _Scores

_JUDGE_FIELDS: Final = frozenset({"item", "samples", "correct", "output_tokens"})


def _judge_result(path: Path, records: Sequence[Record]) -> ResultFile:
    kind = "judge-jsonl"
    outcomes: list[ItemOutcome] = []
    first_seen: dict[str, str] = {}
    for where, record in records:
        if not isinstance(record, dict):
            raise QuantgateError(path, f"each line must hold a JSON object, got {_what(record)}", where)
        unknown = sorted(str(k) for k in record if k not in _JUDGE_FIELDS)
        if unknown:
            raise QuantgateError(
                path, f"unknown field {unknown[0]!r} (fields: item, samples, correct, output_tokens)", where
            )
        for key in ("item", "samples", "correct"):
            if key not in record:
                raise QuantgateError(path, f"missing {key!r}", where)
        item = record["item"]
        if not isinstance(item, str) or not item:
            raise QuantgateError(path, f"'item' must be a non-empty string, got {_what(item)}", where)
        samples = record["samples"]
        correct = record["correct"]
        if not _is_count(samples) or samples < 1:
            raise QuantgateError(path, f"'samples' must be an integer >= 1, got {_what(samples)}", where)
        if not _is_count(correct) or correct < 0:
            raise QuantgateError(path, f"'correct' must be an integer >= 0, got {_what(correct)}", where)
        if correct > samples:
            raise QuantgateError(path, f"'correct' ({correct}) exceeds 'samples' ({samples})", where)
        tokens = record.get("output_tokens")
        if tokens is not None and (not _is_number(tokens) or not math.isfinite(tokens) or tokens < 0):
            raise QuantgateError(
                path, f"'output_tokens' must be a finite number >= 0, got {_what(tokens)}", where
            )
        if item in first_seen:
            raise QuantgateError(path, f"duplicated item {item!r} (first on {first_seen[item]})", where)
        first_seen[item] = where
        outcomes.append(ItemOutcome(item, samples, correct, None if tokens is None else float(tokens)))
    result = _Scores(str(path), kind).of_items(path.stem, "pass@1", outcomes)
    return ResultFile(str(path), kind, None, (result,), (), {"tool": "quantgate"})
