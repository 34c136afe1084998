"""Every quantgate option and marker, registered once.

Why one place: options used to be registered by the plugin that first needed them and read by others
(``--qg-inconclusive`` in replay, read by the lane, which ignored its ini key). Here each option is one
``Option``: its flag, its ini key where it has one (the same help text for both, as pytest-timeout
does), its type. ``setting(config, name)`` is how every plugin reads one: the flag, else the ini key,
else the default. Markers that several plugins use (``accuracy``, ``speed``, ``informational``) are
registered here too; the GPU kind markers come from the catalog (``plugins.gpu``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from quantgate.errors import QuantgateError


def _shard(text: str) -> tuple[int, int]:
    from quantgate.devices.placement import parse_shard

    try:
        return parse_shard(text)
    except QuantgateError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _budget(text: str) -> str:
    from quantgate.jobbudget import parse_budget

    try:
        parse_budget(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


@dataclass(frozen=True)
class Option:
    """One option: ``--qg-x`` (dest ``qg_x``) and, when ``ini`` is set, the ini key ``qg_x``."""

    flag: str
    help: str
    metavar: str | None = None
    ini: bool = False
    ini_type: str | None = None
    default: Any = None
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False

    @property
    def name(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


OPTIONS = (
    # devices, placement, coverage (plugins.gpu)
    Option(
        "--qg-gpus",
        "GPU inventory to place tests on, as KIND:COUNT[,KIND:COUNT...] (e.g. h100:8 or h100:4,a6000:4) "
        "or 'none'; declared inventories are for plans and dry runs. Default: ask NVML",
        "SPEC",
        ini=True,
        default="",
    ),
    Option(
        "--qg-plan",
        "write the run plan (which served model runs on which devices, when) to this JSON file and print "
        "it as a table; also with --collect-only. Default: no plan",
        "FILE",
    ),
    Option(
        "--qg-shard",
        "run shard K of N (e.g. 2/4): whole served models, balanced by their catalog-estimated duration, "
        "identical on every machine. Default: everything",
        "K/N",
        parse=_shard,
    ),
    Option(
        "--qg-allow-empty",
        "let a session pass in which every selected matrix cell was skipped (e.g. -m h100 on a machine "
        "without H100). Default: fail closed",
        ini=True,
        ini_type="bool",
        default=False,
        switch=True,
    ),
    Option(
        "--qg-coverage",
        "where to write the coverage matrix: every selected cell with its outcome, skip reason and devices "
        "(JSON). Default: .quantgate/coverage.json in the rootdir",
        "FILE",
        ini=True,
        default=".quantgate/coverage.json",
    ),
    Option(
        "--qg-durations",
        "learned durations of cells and served-model start-ups (JSON); read to plan, updated after a run. "
        "Default: .quantgate/durations.json in the rootdir",
        "FILE",
        ini=True,
        default=".quantgate/durations.json",
    ),
    Option(
        "--qg-lease-timeout",
        "seconds a test waits for its GPUs before it errors. Default: 21600",
        "SECONDS",
        ini=True,
        default="21600",
        parse=_seconds,
    ),
    # the job's budget and the verdict history (plugins.budget, plugins.history)
    Option(
        "--qg-budget",
        "the job's time budget: a duration (90m, 8h, 45s, seconds) or an end time (ISO 8601 with a zone). "
        "A matrix cell starts only while its expected seconds fit in what is left; it and every later "
        "cell are then deferred (not run, neither green nor red; named in the coverage file). Default: none",
        "TIME",
        ini=True,
        default="",
        parse=_budget,
    ),
    Option(
        "--qg-history",
        "verdict history (quantgate-verdicts, as `quantgate gate --history` writes it): served models "
        "whose cells have no verdict or changed inputs run first, then the longest without one. "
        "Default: none",
        "FILE",
        ini=True,
        default="",
    ),
    Option(
        "--qg-fresh",
        "with --qg-history: a cell whose last verdict is green, on the same inputs and younger than DAYS "
        "is not run again (deferred: 'verified N days ago'; the gate accepts it until --max-age), so "
        "a nightly verifies each cell about once in DAYS and stops when nothing is stale. Default: "
        "run every cell",
        "DAYS",
        ini=True,
        default="",
    ),
    # the pipeline's suites (plugins.lane)
    Option(
        "--qg-lane",
        "the kind file (models, schemes, tool settings) of the cpu suite. Default: suites/kinds/cpu.yaml",
        "FILE",
    ),
    Option(
        "--qg-envs",
        "directory of the tool environments (vllm, compress, eval). Default: $QG_ENVS or .envs",
        "DIR",
    ),
    Option(
        "--qg-lane-work",
        "where the pipeline keeps quantized checkpoints, tool outputs and logs (reused between runs). "
        "Default: .quantgate/<kind> in the rootdir",
        "DIR",
    ),
    Option(
        "--qg-report",
        "directory for the report: report.md, cells.json, benchmark.json. Default: out/lane",
        "DIR",
    ),
    Option(
        "--qg-update-baselines",
        "write new BF16 references (per item, with provenance) before judging; the run still fails, so "
        "that no baseline changes silently",
        switch=True,
    ),
    Option(
        "--qg-inconclusive",
        "how an inconclusive gating cell ends: 'fail' (red: a gate does not pass on missing evidence) or "
        "'xfail' (reported, not red). Default: the kind file's (cpu: xfail; GPU kinds and replay: fail)",
        ini=True,
        default="",
        choices=("fail", "xfail"),
    ),
    # the replay of published figures (plugins.replay)
    Option(
        "--qg-results",
        "judge every result file under this directory (published cards or per-item runs)",
        "DIR",
    ),
    Option("--qg-summary", "write the Markdown summary of the replay to this file", "FILE"),
    Option(
        "--qg-baselines",
        "judge per-item runs against the BF16 references stored here (<model>/<benchmark>.json, with "
        "provenance) instead of the BF16 runs next to them; with --qg-update-baselines, write them from "
        "those runs",
        "DIR",
    ),
)
BY_NAME = {option.name: option for option in OPTIONS}
MARKERS = (
    "accuracy: a recovery cell judged against its BF16 reference",
    "speed: a speedup cell judged against its BF16 reference",
    "informational: a cell whose rule reports but never gates",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quantgate")
    for option in OPTIONS:
        if option.switch:
            group.addoption(option.flag, action="store_true", default=None, help=option.help)
        else:
            group.addoption(
                option.flag,
                metavar=option.metavar,
                default=None,
                type=option.parse,
                choices=option.choices,
                help=option.help,
            )
        if option.ini:
            parser.addini(option.name, option.help, type=option.ini_type, default=option.default)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)


def setting(config: pytest.Config, name: str) -> Any:
    """The option's flag, else its ini key (parsed like the flag), else its default."""
    option = BY_NAME[name]
    given = config.getoption(name)
    if given is not None:
        return given
    if not option.ini:
        return option.default
    text = config.getini(name)
    if option.ini_type == "bool":
        return bool(text)
    if text in ("", None):
        return (
            option.default
            if option.parse is None or option.default in ("", None)
            else option.parse(option.default)
        )
    if option.choices is not None and text not in option.choices:
        raise pytest.UsageError(f"quantgate: ini {name}: {text!r} is not one of {', '.join(option.choices)}")
    if option.parse is not None:
        try:
            return option.parse(str(text))
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"quantgate: ini {name}: {exc}") from None
    return text
