"""``quantgate report DIR``: rebuild a stored run's summary and charts from ``DIR/cells.json``.

A CI artifact downloaded days later, or a report whose Markdown was lost, gives back the same
report.md (cells, verdicts, intervals, coverage) and PNG charts; ``--previous`` names the verdicts that
changed against another run's cells.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantgate.cellresult import CellResult
from quantgate.datafile import load_kind
from quantgate.errors import QuantgateError
from quantgate.report import REPORT_SCHEMA_VERSION, read_results

REPORT_KIND = "quantgate-lane-report"


NAME = "report"
HELP = "draw the charts of a lane report directory (cells.json)"


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's arguments; ``quantgate.cli`` registers it with ``run``."""
    parser.add_argument("directory", help="a report directory written by the lane (out/lane)")
    parser.add_argument("--previous", metavar="CELLS_JSON", help="name verdict changes against this run")


def load_cells(path: Path) -> tuple[Mapping[str, Any], list[CellResult]]:
    """A lane report's document and its cell results, each checked (one error naming file and field)."""
    doc = load_kind(path, REPORT_KIND, REPORT_SCHEMA_VERSION)
    if "records" not in doc:
        raise QuantgateError(path, "missing", "records")
    results = read_results(doc, str(path))
    outcomes = doc.get("outcomes", {})
    if not isinstance(outcomes, Mapping):
        raise QuantgateError(path, "must be a mapping of test id to outcome", "outcomes")
    for node, outcome in outcomes.items():
        if not isinstance(outcome, Mapping) or not isinstance(outcome.get("outcome"), str):
            raise QuantgateError(path, "must be {outcome, reason}", f"outcomes.{node}")
    return doc, results


def run(args: argparse.Namespace) -> int:
    from quantgate.report import changes_since, write_report

    directory = Path(args.directory)
    doc, results = load_cells(directory / "cells.json")
    if args.previous:
        load_cells(Path(args.previous))
        changes = changes_since(Path(args.previous), results)
    else:
        changes = ["not compared with another run (quantgate report DIR --previous OTHER/cells.json)"]
    written = write_report(
        directory,
        results,
        outcomes={
            node: (o["outcome"], str(o.get("reason", ""))) for node, o in doc.get("outcomes", {}).items()
        },
        server_starts=doc.get("server_start_s", {}),
        wall_s=float(doc.get("wall_s", 0.0)),
        context=doc.get("context", {}),
        title=str(doc.get("title", "quantgate CPU lane")),
        failures=doc.get("failures", {}),
        changes=changes,
        generated=doc.get("generated"),
    )
    for line in written.summary_lines:
        print(line)
    print(written.markdown)
    return 0
