"""``quantgate compare OLD.json NEW.json``: pytest-benchmark files compared the right way round.

Throughput that fell is a regression here (``pytest-benchmark compare`` reads every figure as a time).
Exit codes as ``quantgate judge``: 0 when every figure is judged at least ``1 - --fail-worse`` of the
old (default 5 %), 1 on a regression or a benchmark missing from NEW, 3 when repeats are too noisy to
tell (inconclusive, no regression), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json

FAIL_WORSE_HELP = "fail when a figure got worse by more than this fraction (default 0.05 = 5 %%)"


def _fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (or 0%%-99%%), got {text}")
    return value


NAME = "compare"
HELP = "compare two pytest-benchmark files; higher-is-better figures handled as such"


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``compare`` subcommand's arguments; ``quantgate.cli`` registers it with ``run``."""
    from quantgate.benchcompare import DEFAULT_METRICS, METRICS

    parser.add_argument("old", help="the earlier pytest-benchmark JSON file")
    parser.add_argument("new", help="the later pytest-benchmark JSON file")
    parser.add_argument(
        "--metric",
        action="append",
        choices=sorted(METRICS),
        help=f"a figure to compare (repeatable; default {', '.join(DEFAULT_METRICS)})",
    )
    parser.add_argument("--fail-worse", type=_fraction, default=0.05, help=FAIL_WORSE_HELP)
    parser.add_argument("--json", action="store_true", help="print the changes as JSON")


def run(args: argparse.Namespace) -> int:
    from quantgate.benchcompare import DEFAULT_METRICS, compare, load, table

    old, new = load(args.old), load(args.new)
    changes = compare(old, new, args.metric or DEFAULT_METRICS, args.fail_worse)
    regressions = [c for c in changes if c.regression]
    inconclusive = [c for c in changes if c.verdict == "inconclusive"]
    if args.json:
        print(json.dumps([{**c.__dict__, "regression": c.regression} for c in changes], indent=1))
    else:
        for label, loaded in (("old", old), ("new", new)):
            print(f"{label}: {loaded.path} (commit {loaded.commit or '?'}, {loaded.when or '?'})")
        print(table(changes))
        print(
            f"{len(regressions)} regression(s), {len(inconclusive)} inconclusive, "
            f"beyond {args.fail_worse:.0%} in {len(changes)} comparisons"
            if regressions or inconclusive
            else f"no regression beyond {args.fail_worse:.0%} in {len(changes)} comparisons"
        )
    if regressions:
        return 1
    return 3 if inconclusive else 0
