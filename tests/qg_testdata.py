"""Small data shared by quantgate's tests: an AIME-like set of per-item solve rates and a JSONL writer."""

from __future__ import annotations

import json
from pathlib import Path

# 30 items spread from never to always solved, as on AIME for reasoning models.
AIME_RATES = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.5, 0.55, 0.6, 0.7, 0.8, 0.85, 0.9,
              0.95, 1.0, 1.0, 1.0, 0.0, 0.15, 0.25, 0.35, 0.65, 0.75, 0.9, 1.0, 0.5, 0.6, 0.3]  # fmt: skip


def counts(rates: list[float], samples: int) -> dict[str, tuple[int, int]]:
    """Per-item ``(samples, correct)`` with ``correct`` the rounded expectation."""
    return {f"q{i}": (samples, round(r * samples)) for i, r in enumerate(rates)}


def write_items(path: Path, rates: list[float], samples: int) -> Path:
    """Write quantgate's per-item JSONL for ``rates``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"item": item, "samples": n, "correct": c})
        for item, (n, c) in counts(rates, samples).items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
