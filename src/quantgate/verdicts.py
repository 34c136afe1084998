"""The verdict history: each test's last verdict and when it was given, carried from night to night.

Why: a job with a budget (``--qg-budget``) defers the cells that do not fit, so a night judges part of
the matrix. The gate accepts a deferred test only while its last verdict is green and younger than a
limit (7 days by default); this file is where that verdict is kept. The gate reads it and writes it
back with the night's verdicts (``quantgate gate --history FILE``); the nightly carries it from one
run to the next as an artifact. Keys are node ids (a cell may have several tests). Versioned like every
data file of the project; other versions are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field

from quantgate.datafile import Strict, atomic_write_text, load_model

VERDICTS_KIND = "quantgate-verdicts"
VERDICTS_SCHEMA_VERSION = 1
GREEN = ("passed", "xfailed")
RED = ("failed", "error", "xpassed")


class _Entry(Strict):
    cell_id: str
    status: Literal["passed", "xfailed", "failed", "error", "xpassed"]
    at: AwareDatetime
    reason: str = ""
    inputs: dict[str, str] = Field(default_factory=dict)


class _VerdictsFile(Strict):
    schema_version: int
    kind: Literal["quantgate-verdicts"]
    tests: dict[str, _Entry]


@dataclass(frozen=True)
class Verdict:
    """A test's last verdict: its cell, ``passed``/``xfailed``/``failed``/..., when, why, and the inputs
    it was given on (checkpoint, tool versions, settings: ``quantgate.inputs``)."""

    cell_id: str
    status: str
    at: datetime
    reason: str = ""
    inputs: Mapping[str, str] = field(default_factory=dict)

    def changed(self, inputs: Mapping[str, str]) -> list[str]:
        """Names of the inputs that differ from ``inputs`` (none when either side has none)."""
        if not self.inputs or not inputs:
            return []
        return sorted(k for k in self.inputs.keys() | inputs.keys() if self.inputs.get(k) != inputs.get(k))

    @property
    def green(self) -> bool:
        return self.status in GREEN

    def age_days(self, now: datetime) -> float:
        return (now - self.at).total_seconds() / 86400.0


def load_verdicts(path: str | Path) -> dict[str, Verdict]:
    """Read a history file; a missing file is an empty history, a bad one a ``QuantgateError``."""
    if not Path(path).exists():
        return {}
    doc = load_model(_VerdictsFile, path, VERDICTS_KIND, VERDICTS_SCHEMA_VERSION)
    return {test: Verdict(e.cell_id, e.status, e.at, e.reason, e.inputs) for test, e in doc.tests.items()}


def updated(history: Mapping[str, Verdict], outcomes: Iterable[Outcome], at: datetime) -> dict[str, Verdict]:
    """``history`` with the verdicts of the tests that ran at ``at``."""
    out = dict(history)
    for o in outcomes:
        if o.status in GREEN or o.status in RED:
            out[o.test] = Verdict(o.cell_id, o.status, at, o.reason, dict(o.inputs))
    return out


@dataclass(frozen=True)
class Outcome:
    """One test's outcome in a night's coverage files, with the inputs its cell was given."""

    test: str
    cell_id: str
    status: str
    reason: str
    inputs: Mapping[str, str] = field(default_factory=dict)


def save_verdicts(path: str | Path, verdicts: Mapping[str, Verdict]) -> None:
    tests = {
        test: {
            "cell_id": v.cell_id,
            "status": v.status,
            "at": v.at.isoformat(),
            "reason": v.reason,
            "inputs": dict(v.inputs),
        }
        for test, v in sorted(verdicts.items())
    }
    doc = {"schema_version": VERDICTS_SCHEMA_VERSION, "kind": VERDICTS_KIND, "tests": tests}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
