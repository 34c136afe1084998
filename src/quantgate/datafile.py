"""Loading of quantgate's own versioned data files (YAML or JSON) into validated, frozen models.

Every data file carries ``schema_version``; a file of another version is refused with a message that
says which versions this quantgate reads (the asv rule: never guess at an unknown layout). Validation
errors from pydantic are turned into one ``QuantgateError`` naming the file, the field path and, for
enumerations, the allowed values.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from quantgate.errors import QuantgateError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for data models: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicated mapping keys instead of keeping the last one."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicated key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _reject_constant(token: str) -> float:
    raise ValueError(f"{token} is not a number quantgate accepts")


def load_document(path: str | Path) -> Any:
    """Parse a YAML (``.yaml``/``.yml``) or JSON file, gzipped or not (``.json.gz``); any failure is a
    ``QuantgateError``."""
    path = Path(path)
    inner = Path(path.stem) if path.suffix == ".gz" else path
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise QuantgateError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    except (UnicodeDecodeError, EOFError):
        raise QuantgateError(path, "not UTF-8 text") from None
    try:
        if inner.suffix in {".yaml", ".yml"}:
            return yaml.load(text, Loader=_UniqueKeyLoader)
        return json.loads(text, parse_constant=_reject_constant)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise QuantgateError(path, f"invalid YAML: {problem}", where) from None
    except (json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise QuantgateError(path, f"invalid JSON: {exc.msg}", f"line {exc.lineno}") from None
        raise QuantgateError(path, f"invalid JSON: {exc}") from None


def check_schema_version(doc: Any, path: str | Path, kind: str, supported: int) -> Mapping[str, Any]:
    """Return ``doc`` as a mapping whose ``schema_version`` equals ``supported``, else raise."""
    if not isinstance(doc, Mapping):
        raise QuantgateError(path, f"a {kind} file must be a mapping at the top level, got {_type(doc)}")
    if "schema_version" not in doc:
        raise QuantgateError(
            path, f"missing; this quantgate reads {kind} version {supported}", "schema_version"
        )
    version = doc["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise QuantgateError(path, f"must be an integer, got {version!r}", "schema_version")
    if version != supported:
        hint = "upgrade quantgate" if version > supported else "migrate the file"
        raise QuantgateError(
            path,
            f"version {version} is not supported (this quantgate reads {supported}; {hint})",
            "schema_version",
        )
    return doc


def format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate(model: type[M], data: Any, path: str | Path, prefix: str = "") -> M:
    """Validate ``data`` against ``model``; the first problem becomes a ``QuantgateError``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = format_location(tuple(first["loc"]))
        if prefix:
            where = f"{prefix}.{where}" if where != "(top level)" else prefix
        more = exc.error_count() - 1
        message = first["msg"]
        if first.get("type") == "extra_forbidden":
            message = "unknown field"
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise QuantgateError(path, message, where) from None


def load_kind(path: str | Path, kind: str, supported: int) -> Mapping[str, Any]:
    """Load a JSON/YAML document whose ``kind`` field is ``kind`` and whose version is ``supported``."""
    doc = load_document(path)
    if not isinstance(doc, Mapping) or doc.get("kind") != kind:
        raise QuantgateError(path, f"not a {kind} file", "kind")
    return check_schema_version(doc, path, kind, supported)


def load_model(model: type[M], path: str | Path, kind: str, supported: int) -> M:
    """Load, version-check and validate one data file."""
    doc = check_schema_version(load_document(path), path, kind, supported)
    return validate(model, doc, path)


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
