"""The ``quantgate`` command: ``judge``, ``replay``, ``compare``, ``gate``, ``inspect``, ``gpus``, ``report``,
``prefetch``.

Each subcommand is registered by ``main``'s parser (``judge`` and ``replay`` here, the others by their
``cli_<name>`` module). Bad input ends with one line ``quantgate: <file>: <field or line>: <what is
wrong>`` on stderr and exit status 2, never a traceback. ``judge`` and ``compare`` exit 0 on pass, 1 on
fail, 3 on inconclusive; ``gate`` 0 when the night is green, 1 when it is not.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from types import ModuleType

from quantgate.errors import QuantgateError

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INCONCLUSIVE = 0, 1, 2, 3


def _per_item(path: str, metric: str | None) -> dict[str, tuple[int, int]]:
    from quantgate.replay import item_counts, per_item_result
    from quantgate.results import read_result

    return item_counts(per_item_result(read_result(path), metric))


def _run_judge(args: argparse.Namespace) -> int:
    from quantgate.judge import judge_recovery

    reference = _per_item(args.reference, args.metric)
    candidate = _per_item(args.candidate, args.metric)
    try:
        verdict = judge_recovery(reference, candidate, args.floor, confidence=args.confidence, cap=args.cap)
    except QuantgateError as exc:
        raise QuantgateError(f"{args.reference} vs {args.candidate}", exc.message, exc.where) from None
    if args.json:
        print(json.dumps(verdict.as_dict(), indent=1))
    else:
        print(verdict.detail)
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}[verdict.verdict]


def _run_replay(args: argparse.Namespace) -> int:
    from quantgate import paths
    from quantgate.replay import Replay, counts
    from quantgate.report import replay_markdown

    results = args.results or paths.published_dir()
    cells = Replay().cells(results)
    title = f"quantgate replay of {results}"
    if args.json:
        print(json.dumps({"cells": [c.as_dict() for c in cells], "counts": counts(cells)}, indent=1))
    else:
        print(replay_markdown([c.result() for c in cells], title))
    if args.markdown:
        from quantgate.datafile import atomic_write_text

        atomic_write_text(args.markdown, replay_markdown([c.result() for c in cells], title) + "\n")
    return EXIT_PASS


def _floor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 2.0:
        raise argparse.ArgumentTypeError(f"must be a recovery ratio in (0, 2], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantgate", description="Gate quantized LLMs on recovery and speed."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    judge = sub.add_parser("judge", help="judge per-item candidate results against a reference")
    judge.add_argument(
        "--reference", required=True, help="JSONL {item, samples, correct} or lighteval details"
    )
    judge.add_argument("--candidate", required=True, help="same format, same items")
    judge.add_argument("--floor", required=True, type=_floor, help="recovery floor, e.g. 0.97")
    judge.add_argument(
        "--confidence", type=float, default=None, help="one-sided confidence at the sample cap"
    )
    judge.add_argument(
        "--cap", type=int, default=None, help="most candidate samples per item a top-up may ask"
    )
    judge.add_argument("--metric", help="which per-item metric to judge when a file has several")
    judge.add_argument("--json", action="store_true", help="print the verdict as JSON")
    judge.set_defaults(func=_run_judge)

    replay = sub.add_parser(
        "replay", help="judge every result file under a directory (e.g. baselines/published)"
    )
    replay.add_argument(
        "results",
        nargs="?",
        help="directory or file of results (default: the published model-card figures, baselines/published)",
    )
    replay.add_argument("--json", action="store_true", help="print cells and counts as JSON")
    replay.add_argument("--markdown", help="also write the summary table to this file")
    replay.set_defaults(func=_run_replay)

    from quantgate import cli_compare, cli_gate, cli_gpus, cli_inspect, cli_report, prefetch

    for command in (cli_compare, cli_gate, cli_inspect, cli_gpus, cli_report, prefetch):
        register(sub, command)
    return parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: ModuleType) -> None:
    """A subcommand module's ``NAME``, ``HELP``, optional ``DESCRIPTION``, ``configure(parser)`` for its
    arguments and ``run(args)`` for its work, registered the same way for every module."""
    parser = sub.add_parser(
        command.NAME, help=command.HELP, description=getattr(command, "DESCRIPTION", None)
    )
    command.configure(parser)
    parser.set_defaults(func=command.run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "confidence", None) is None and args.command == "judge":
        from quantgate.judge import DEFAULT_CAP, DEFAULT_CONFIDENCE

        args.confidence = DEFAULT_CONFIDENCE
        args.cap = args.cap or DEFAULT_CAP
    elif args.command == "judge" and args.cap is None:
        from quantgate.judge import DEFAULT_CAP

        args.cap = DEFAULT_CAP
    try:
        return int(args.func(args))
    except QuantgateError as exc:
        print(f"quantgate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
