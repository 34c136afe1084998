"""The one place that decides a session's exit status beyond pytest's own: fail closed, with the reason.

Why: three plugins used to edit ``session.exitstatus`` each in their own ``pytest_sessionfinish``
(coverage when every selected cell was skipped, the lane when it wrote a reference, replay when a
gating cell had no outcome), in an order nobody chose. Now each calls ``fail_session(config, reason)``
and this plugin's last-running hook turns a passing session red once, keeping any worse status pytest
already set (interrupted, internal error, usage error). The reasons are printed at the end.
"""

from __future__ import annotations

from typing import Any

import pytest

REASONS = pytest.StashKey[list[str]]()


def fail_session(config: pytest.Config, reason: str) -> None:
    """Make the session end red (``TESTS_FAILED``) for ``reason``, whatever its tests did."""
    config.stash.setdefault(REASONS, []).append(reason)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.stash.get(REASONS, []) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for reason in config.stash.get(REASONS, []):
        terminalreporter.write_line(f"quantgate: failing the session: {reason}", red=True, bold=True)
