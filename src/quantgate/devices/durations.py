"""Durations of cells and served-model start-ups: learned from earlier runs, kept in a versioned file.

``.quantgate/durations.json`` (``quantgate-durations``) holds each cell's measured seconds (the sum of its
tests' calls) and each served model's start-up; placement plans with them, and a cell never run falls
back to ``quantgate.matrix.estimate_cell_seconds``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from quantgate.datafile import Strict, atomic_write_text, load_model

DURATIONS_SCHEMA_VERSION = 1
DURATIONS_KIND = "quantgate-durations"
DEFAULT_DURATIONS_PATH = Path(".quantgate") / "durations.json"

# Default estimate (see estimate_cell_seconds). Deliberately crude: one measured run replaces it.
STARTUP_BASE_S = 90.0
LOAD_GIB_PER_S = 1.0

NonNegative = Annotated[float, Field(ge=0)]


class _DurationsFile(Strict):
    schema_version: int
    kind: Literal["quantgate-durations"]
    cells: dict[str, NonNegative]
    served_models: dict[str, NonNegative]


@dataclass
class Durations:
    """Learned seconds: per cell id (the test call) and per served model (its start-up)."""

    cells: dict[str, float] = field(default_factory=dict)
    served_models: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> str:
        doc = {
            "schema_version": DURATIONS_SCHEMA_VERSION,
            "kind": DURATIONS_KIND,
            "cells": {k: round(v, 3) for k, v in sorted(self.cells.items())},
            "served_models": {k: round(v, 3) for k, v in sorted(self.served_models.items())},
        }
        return json.dumps(doc, indent=1) + "\n"


def load_durations(path: str | Path) -> Durations:
    """Read a durations file; a missing file is empty, a bad one a ``QuantgateError``."""
    if not Path(path).exists():
        return Durations()
    doc = load_model(_DurationsFile, path, DURATIONS_KIND, DURATIONS_SCHEMA_VERSION)
    return Durations(dict(doc.cells), dict(doc.served_models))


def save_durations(path: str | Path, durations: Durations) -> None:
    """Write atomically (readers see the old file or the new one)."""
    atomic_write_text(path, durations.as_json())


def estimate_startup_seconds(weights_gb: float) -> float:
    """Start-up of a served model: 90 s (engine, CUDA graphs, compilation) + 1 s per GiB of weights."""
    return STARTUP_BASE_S + weights_gb / LOAD_GIB_PER_S
