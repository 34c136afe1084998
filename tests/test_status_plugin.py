"""One place decides the exit status (``plugins/status.py``): a reason turns a green session red once,
and a worse status pytest already set stands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
import pytest
from plugins.status import fail_session

pytest_plugins = ["plugins.status"]


def pytest_sessionfinish(session):
    if session.config.getoption("--fail-for", None):
        fail_session(session.config, session.config.getoption("--fail-for"))


def pytest_addoption(parser):
    parser.addoption("--fail-for", default=None)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO)]))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_toy="def test_ok():\n    pass\n")
    return pytester


def test_a_reason_turns_a_green_session_red_and_says_why(suite: pytest.Pytester) -> None:
    assert suite.runpytest_subprocess("-p", "no:randomly").ret == pytest.ExitCode.OK
    result = suite.runpytest_subprocess("-p", "no:randomly", "--fail-for", "references were written")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*quantgate: failing the session: references were written*"])
    result.assert_outcomes(passed=1)


def test_a_worse_status_stands(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("-p", "no:randomly", "--fail-for", "x", "--no-such-option")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
