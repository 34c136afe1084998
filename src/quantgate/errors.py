"""The one error type quantgate raises for bad input.

Every problem with a file a user gave us (catalog, rules, baselines, tool output, judge input) ends as a
single ``QuantgateError`` that names the file and the field or line at fault, so the CLI can print one
line and exit 2 and pytest can show it without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class QuantgateError(ValueError):
    """Bad input: ``source`` is the file (or other origin), ``where`` the field path or line."""

    def __init__(self, source: str | Path | None, message: str, where: str | None = None) -> None:
        self.source = str(source) if source is not None else None
        self.where = where
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.where) if p]
        return ": ".join([*parts, self.message])
