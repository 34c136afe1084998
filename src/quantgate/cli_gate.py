"""``quantgate gate COVERAGE... --kinds h100,a100``: the nightly gate over the jobs' coverage files (the
matrix's cells and the cpu kind file's)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

NAME = "gate"
HELP = "merge GPU jobs' coverage files; fail on any failed or uncovered cell"


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``gate`` subcommand's arguments; ``quantgate.cli`` registers it with ``run``."""
    parser.add_argument("coverage", nargs="+", help="coverage JSON files (quantgate-coverage)")
    parser.add_argument(
        "--kinds",
        required=True,
        help="comma-separated device kinds (h100, cpu, ...) whose every matrix cell must have run",
    )
    parser.add_argument(
        "--history",
        metavar="FILE",
        default=None,
        help="verdict history (quantgate-verdicts): read to judge deferred cells, then updated with this "
        "run's verdicts; a missing file is an empty history. Default: none (a deferred cell is red)",
    )
    parser.add_argument(
        "--max-age",
        metavar="DAYS",
        type=float,
        default=None,
        help="a deferred cell is green while its last green verdict is at most this old (default 7)",
    )


def run(args: argparse.Namespace) -> int:
    from quantgate.gate import DEFAULT_MAX_AGE_DAYS, decide
    from quantgate.kinds import load_kind
    from quantgate.matrix import expand
    from quantgate.pipeline import local_cells
    from quantgate.verdicts import load_verdicts, save_verdicts, updated

    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    cells = expand() + local_cells(load_kind())
    expected = [c.cell_id for c in cells if c.gpu in kinds and c.skip_reason is None]
    history = load_verdicts(args.history) if args.history else None
    now = datetime.now(UTC)
    result = decide(
        [Path(p) for p in args.coverage],
        expected,
        known=[c.cell_id for c in cells],
        history=history,
        now=now,
        max_age_days=DEFAULT_MAX_AGE_DAYS if args.max_age is None else args.max_age,
    )
    print(result.summary())
    if args.history:
        save_verdicts(args.history, updated(history or {}, result.outcomes, now))
        print(f"verdict history: {args.history}")
    return 0 if result.passed else 1
