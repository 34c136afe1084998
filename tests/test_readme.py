"""Every command the README shows parses as written: ``quantgate`` subcommands by their own parser,
``pytest`` lines against the registered options and the paths they name, ``./run`` lines against the
script's cases. A README that drifted from the code (a renamed flag, a suite that moved) fails here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PLACEHOLDERS = {"FILE...": "a.json", "COVERAGE.json...": "c.json", "DIR": "d", "BASE": "b", "FILE": "f"}


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _tokens(line: str) -> list[str]:
    """The command's arguments with optional parts kept (``[--json]`` -> ``--json``)."""
    text = line.replace("[", " ").replace("]", " ")
    return [PLACEHOLDERS.get(token, token) for token in shlex.split(text)]


COMMANDS = _commands()


def test_the_readme_shows_commands_of_each_kind() -> None:
    starts = {line.split()[0] for line in COMMANDS}
    assert starts >= {"./run", "quantgate", "pytest"}, starts


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("quantgate ")])
def test_a_quantgate_command_parses(line: str) -> None:
    from quantgate.cli import build_parser

    build_parser().parse_args(_tokens(line)[1:])


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("pytest ")])
def test_a_pytest_command_uses_registered_options_and_existing_paths(line: str) -> None:
    from plugins.options import BY_NAME

    tokens = _tokens(line)[1:]
    for token in tokens:
        if token.startswith("--qg-"):
            assert token.removeprefix("--").replace("-", "_") in BY_NAME, f"{line}: {token}"
    for token in tokens:
        if token.startswith("suites"):
            assert (ROOT / token).exists(), f"{line}: {token}"


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("./run ")])
def test_a_run_command_is_a_case_of_the_script(line: str) -> None:
    script = (ROOT / "run").read_text()
    assert re.search(rf"^\s+{re.escape(line.split()[1])}\)", script, re.M), line
