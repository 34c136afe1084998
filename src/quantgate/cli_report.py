"""``quantgate report DIR``: the charts and summary of a stored lane report (``DIR/cells.json``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from quantgate.errors import QuantgateError

REPORT_KIND = "quantgate-lane-report"


def add_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="draw the charts of a lane report directory (cells.json)")
    report.add_argument("directory", help="a report directory written by the lane (out/lane)")
    report.set_defaults(func=run)


def load_cells(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise QuantgateError(path, f"cannot read the lane report: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != REPORT_KIND:
        raise QuantgateError(path, f"not a {REPORT_KIND} file", "kind")
    if doc.get("schema_version") != 1:
        raise QuantgateError(
            path, f"schema_version {doc.get('schema_version')!r} is not one this reads (1)", "schema_version"
        )
    if not isinstance(doc.get("records"), list):
        raise QuantgateError(path, "must be a list", "records")
    return doc


def run(args: argparse.Namespace) -> int:
    from quantgate.charts import draw

    directory = Path(args.directory)
    doc = load_cells(directory / "cells.json")
    for path in draw(doc["records"], directory):
        print(path)
    return 0
