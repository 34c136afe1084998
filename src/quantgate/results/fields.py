"""Value helpers shared by the readers: every check names the file and the field; metric and task names."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from quantgate.errors import QuantgateError
from quantgate.results.records import _is_count, _is_number


def _what(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _join(where: str, key: object) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def _mapping(path: Path, value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise QuantgateError(path, f"must be an object, got {_what(value)}", where)
    return value


def _list(path: Path, value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise QuantgateError(path, f"must be a list, got {_what(value)}", where)
    return value


def _required(path: Path, doc: Mapping[str, object], key: str, where: str = "") -> object:
    if key not in doc:
        raise QuantgateError(path, "missing", _join(where, key))
    return doc[key]


def _number(
    path: Path, value: object, where: str, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    if not _is_number(value):
        raise QuantgateError(path, f"must be a number, got {_what(value)}", where)
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise QuantgateError(path, "number out of range", where) from None
    if not math.isfinite(number):
        raise QuantgateError(path, f"must be a finite number, got {number!r}", where)
    if minimum is not None and number < minimum:
        raise QuantgateError(path, f"must be >= {minimum:g}, got {number!r}", where)
    if maximum is not None and number > maximum:
        raise QuantgateError(path, f"must be <= {maximum:g}, got {number!r}", where)
    return number


def _count(path: Path, value: object, where: str, *, minimum: int = 0) -> int:
    """An integer count; a float with an integral value (as pandas writes them) is accepted."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not _is_count(value):
        raise QuantgateError(path, f"must be an integer, got {_what(value)}", where)
    assert isinstance(value, int)
    if value < minimum:
        raise QuantgateError(path, f"must be an integer >= {minimum}, got {value}", where)
    return value


def _optional_number(
    path: Path, doc: Mapping[str, object], key: str, where: str, **bounds: float
) -> float | None:
    value = doc.get(key)
    return None if value is None else _number(path, value, _join(where, key), **bounds)


def _optional_count(path: Path, doc: Mapping[str, object], key: str, where: str) -> int | None:
    value = doc.get(key)
    return None if value is None else _count(path, value, _join(where, key))


def _dict_or_empty(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def _add_provenance(
    provenance: dict[str, str], prefix: str, doc: object, keys: Iterable[str] | None = None
) -> None:
    """Copy the scalar entries of ``doc`` (all, or ``keys``) into ``provenance`` as ``prefix + key``."""
    if not isinstance(doc, dict):
        return
    for key in keys if keys is not None else doc:
        text = _scalar_text(doc.get(key))
        if text is not None and text != "":
            provenance[f"{prefix}{key}"] = text


def _stderr(path: Path, value: object, where: str) -> float | None:
    """A standard error: absent, null, "N/A" or NaN mean unknown; otherwise a finite number >= 0."""
    if value is None or value == "N/A" or value == "":
        return None
    if _is_number(value) and isinstance(value, float) and math.isnan(value):
        return None
    return _number(path, value, where, minimum=0.0)


# --------------------------------------------------------------------------------------------------
# Metric and task names
# --------------------------------------------------------------------------------------------------

_OLD_SAMPLES = re.compile(r"^(?P<base>.*pass@1):(?P<n>\d+)_samples$")
_PARAMS = re.compile(r"^[A-Za-z_]\w*=[^&=]*(?:&[A-Za-z_]\w*=[^&=]*)*$")


def _metric_params(name: str) -> tuple[str, dict[str, str]]:
    """Split ``pass@k:k=1&n=20`` into ``("pass@k", {"k": "1", "n": "20"})``; no params → ``{}``."""
    base, sep, tail = name.rpartition(":")
    if sep and _PARAMS.match(tail):
        return base, dict(part.split("=", 1) for part in tail.split("&"))
    return name, {}


def _samples_in_name(name: str) -> int | None:
    """Samples per item named by a lighteval metric (``...:n=64``, ``math_pass@1:4_samples``), else None."""
    old = _OLD_SAMPLES.match(name)
    if old:
        n = int(old["n"])
        return n if n >= 1 else None
    _, params = _metric_params(name)
    n_text = params.get("n", "")
    if n_text.isdigit() and int(n_text) >= 1:
        return int(n_text)
    return None


def _is_mean_over_samples(name: str) -> bool:
    """True for lighteval metrics whose per-item value is (number correct) / (samples)."""
    if _OLD_SAMPLES.match(name):
        return True
    base, params = _metric_params(name)
    if base.endswith("pass@k") and params.get("k") == "1":
        return True
    return base.endswith("avg@n")


def _split_task_key(path: Path, key: str, where: str) -> tuple[str, int | None]:
    """``lighteval|aime24|0`` / ``aime24|0`` / ``aime24@n=20|0`` → ``("aime24", 0)``."""
    parts = key.split("|")
    if len(parts) > 3:
        raise QuantgateError(path, f"task key {key!r} is not task|fewshot or suite|task|fewshot", where)
    task = parts[1] if len(parts) == 3 else parts[0]
    task = task.split("@")[0].strip()
    if not task:
        raise QuantgateError(path, f"task key {key!r} names no task", where)
    if len(parts) == 1:
        return task, None
    fewshot = parts[-1].strip()
    if not fewshot.isdigit():
        raise QuantgateError(path, f"fewshot {parts[-1]!r} in task key {key!r} is not a whole number", where)
    return task, int(fewshot)
