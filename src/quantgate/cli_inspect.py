"""``quantgate inspect FILE...``: show what quantgate reads from tool result files.

Before a result file feeds a gate, a user should be able to see which kind quantgate recognised, which
tool version wrote it and exactly which cells (task x metric) and performance metrics it yields. This
command prints that as a table, or as a JSON list with ``--json``. A directory argument stands for
every result file under it. A file that cannot be read is reported on stderr as one
``quantgate: <error>`` line; the other files are still shown and the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from quantgate.errors import QuantgateError
from quantgate.results import KINDS, ResultFile, describe, iter_result_files, read_result

EXIT_OK = 0
EXIT_BAD_INPUT = 2


NAME = "inspect"
HELP = "show the kind, tool version and cells/metrics quantgate reads from result files"
DESCRIPTION = (
    "Recognise each result file (" + ", ".join(KINDS) + ") and print the tool version and the "
    "accuracy cells and performance metrics it yields. Exit status 2 if any file cannot be read."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``inspect`` subcommand's arguments; ``quantgate.cli`` registers it with ``run``."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="result file, or a directory of them")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of tables")


def run(args: argparse.Namespace) -> int:
    """Inspect ``args.files``; return 0, or 2 when any file (or directory) could not be read."""
    status = EXIT_OK
    described: list[dict[str, object]] = []
    for path in _expand(args.files):
        try:
            if isinstance(path, QuantgateError):
                raise path
            result = read_result(path)
        except QuantgateError as exc:
            print(f"quantgate: {exc}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        if args.json:
            described.append(describe(result))
        else:
            _print_table(result, sys.stdout)
    if args.json:
        json.dump(described, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    return status


def _expand(files: Sequence[str]) -> list[Path | QuantgateError]:
    """Files as given; a directory becomes its result files (or an error when it holds none)."""
    paths: list[Path | QuantgateError] = []
    for name in files:
        path = Path(name)
        if path.is_dir():
            found = iter_result_files(path)
            if not found:
                paths.append(
                    QuantgateError(path, "no result files (*.json, *.jsonl, *.parquet) in this directory")
                )
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def _fmt(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.4g}"


def _print_table(result: ResultFile, out: TextIO) -> None:
    out.write(f"{result.path}\n")
    out.write(f"  kind: {result.kind}   tool version: {result.tool_version or '-'}\n")
    if result.accuracy:
        rows: list[tuple[str, ...]] = [
            ("TASK", "FEWSHOT", "METRIC", "VALUE", "STDERR", "N/ITEM", "ITEMS", "MODEL")
        ]
        for r in result.accuracy:
            rows.append(
                (
                    r.task,
                    _fmt(r.fewshot),
                    r.metric,
                    _fmt(r.value),
                    _fmt(r.stderr),
                    _fmt(r.samples_per_item),
                    _fmt(None if r.items is None else len(r.items)),
                    r.model or "-",
                )
            )
        _write_rows(rows, out)
    if result.performance:
        perf_rows: list[tuple[str, ...]] = [("NAME", "SCENARIO", "METRIC", "VALUE", "SAMPLES", "MODEL")]
        for p in result.performance:
            samples = _fmt(None if p.samples is None else len(p.samples))
            for key in sorted(p.metrics):
                perf_rows.append(
                    (p.name, p.scenario or "-", key, _fmt(p.metrics[key]), samples, p.model or "-")
                )
        _write_rows(perf_rows, out)
    out.write("\n")


def _write_rows(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        out.write("\n")
