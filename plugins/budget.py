"""pytest glue for a job's time budget (``--qg-budget``): start a cell only while it fits.

Options and hooks only; the rule is ``quantgate.jobbudget``. Before a matrix cell's devices are leased,
its expected seconds (learned or estimated by placement, plus its served model's start-up when this
process has not started it yet) are checked against the time left (once per cell: a cell's later
tests, such as an accuracy cell's output length, follow its first); a cell that does not fit, and every
cell after it, is skipped as *deferred* and ``plugins.gpu`` writes it so in the coverage file (not run,
neither green nor red). Under xdist every worker keeps the controller's deadline.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from plugins.gpu import STATE, TASK_KEY
from plugins.options import setting
from quantgate.jobbudget import JobBudget, clock, parse_budget

DEFERRED_PROPERTY = "qg_deferred"

BUDGET = pytest.StashKey["JobBudget | None"]()
STARTED = pytest.StashKey[set[str]]()


def pytest_configure(config: pytest.Config) -> None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    start, deadline = time.time(), None
    if workerinput is not None and "qg_deadline" in workerinput:
        start, deadline = workerinput["qg_start"], workerinput["qg_deadline"]
    else:
        text = str(setting(config, "qg_budget") or "")
        try:
            deadline = parse_budget(text, start) if text else None
        except ValueError as exc:
            raise pytest.UsageError(f"quantgate: ini qg_budget: {exc}") from None
    config.stash[BUDGET] = JobBudget(start, deadline) if deadline is not None else None
    config.stash[STARTED] = set()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    budget = node.config.stash[BUDGET]
    node.workerinput["qg_start"] = budget.start if budget is not None else None
    node.workerinput["qg_deadline"] = budget.deadline if budget is not None else None


def pytest_report_header(config: pytest.Config) -> str | None:
    budget = config.stash[BUDGET]
    if budget is None:
        return None
    return f"quantgate: job budget until {clock(budget.deadline)}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Defer the cell when it was verified recently (``--qg-fresh``) or its expected seconds do not fit
    the job budget (before its devices or server)."""
    from plugins.history import FRESH_PROPERTY, recently_verified

    budget = item.config.stash[BUDGET]
    task = item.stash.get(TASK_KEY, None)
    if task is None or item.get_closest_marker("skip"):
        return
    fresh = recently_verified(item, time.time())
    if fresh is not None:
        item.user_properties += [(DEFERRED_PROPERTY, fresh), (FRESH_PROPERTY, True)]
        pytest.skip(fresh)
    if budget is None:
        return
    cell = dict(item.user_properties).get("qg_cell")
    if isinstance(cell, dict):
        # A replica of a served model starts its own server: a GPU cell's start-up is its job's.
        name, served = str(cell["cell_id"]), task.job if task.kind != "cpu" else str(cell["served_model"])
    else:
        name, served = item.nodeid, task.job
    started = item.config.stash[STARTED]
    if name in started:
        return
    expected = task.seconds
    if served not in started:
        expected += item.config.stash[STATE].durations.served_models.get(served, task.startup_s)
    reason = budget.admit(name, expected, time.time())
    if reason is not None:
        item.user_properties.append((DEFERRED_PROPERTY, reason))
        pytest.skip(reason)
    started.update((name, served))
