"""``quantgate gate COVERAGE... --kinds h100,a100``: the nightly gate over the jobs' coverage files (the
matrix's cells and the cpu kind file's)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    gate = sub.add_parser("gate", help="merge GPU jobs' coverage files; fail on any failed or uncovered cell")
    gate.add_argument("coverage", nargs="+", help="coverage JSON files (quantgate-coverage)")
    gate.add_argument(
        "--kinds",
        required=True,
        help="comma-separated device kinds (h100, cpu, ...) whose every matrix cell must have run",
    )
    gate.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from quantgate.gate import decide
    from quantgate.kinds import load_kind
    from quantgate.matrix import expand
    from quantgate.pipeline import local_cells

    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    cells = expand() + local_cells(load_kind())
    expected = [c.cell_id for c in cells if c.gpu in kinds and c.skip_reason is None]
    result = decide([Path(p) for p in args.coverage], expected, known=[c.cell_id for c in cells])
    print(result.summary())
    return 0 if result.passed else 1
