"""``quantgate report DIR``: the charts and summary of a stored lane report (``DIR/cells.json``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantgate.datafile import load_kind
from quantgate.errors import QuantgateError
from quantgate.lanereport import REPORT_SCHEMA_VERSION

REPORT_KIND = "quantgate-lane-report"


def add_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="draw the charts of a lane report directory (cells.json)")
    report.add_argument("directory", help="a report directory written by the lane (out/lane)")
    report.set_defaults(func=run)


def load_cells(path: Path) -> Mapping[str, Any]:
    doc = load_kind(path, REPORT_KIND, REPORT_SCHEMA_VERSION)
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
