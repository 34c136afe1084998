"""pytest glue for the verdict history (``--qg-history FILE``): the stalest cells run first.

Options, hooks and one ordering key; the data is ``quantgate.verdicts`` and ``quantgate.inputs``. Every
selected matrix cell carries its inputs (checkpoint, tools, settings, device) into the coverage file,
where the gate compares them with the history. With a history, served models run in this order: those
with a test that has no verdict or whose inputs changed since it, then the rest by their oldest
verdict, and within a served model on a GPU kind its cells likewise (a served model may hold more work
than one night); so that a job's budget (``--qg-budget``) defers the cells whose verdicts are freshest.
Among equals placement's own order (longest first; the cpu kind file's, BF16 first) stands. With
``--qg-fresh DAYS`` a cell verified green on the same inputs within DAYS is not run again
(``recently_verified``): the nightly spends GPU-hours only on what is stale or changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from quantgate.errors import QuantgateError
from quantgate.verdicts import Verdict, load_verdicts

HISTORY = pytest.StashKey[dict[str, Verdict] | None]()
FRESH_DAYS = pytest.StashKey[float | None]()
# Set on a test deferred because its verdict is fresh: not run by choice (coverage marks the row).
FRESH_PROPERTY = "qg_fresh"
INPUTS = pytest.StashKey[dict[str, str]]()
TOOLS = pytest.StashKey[str]()
SETTINGS = pytest.StashKey[dict[tuple[str, str], str]]()


def pytest_configure(config: pytest.Config) -> None:
    from plugins.options import setting

    given = str(setting(config, "qg_history") or "")
    try:
        config.stash[HISTORY] = load_verdicts(Path(given)) if given else None
    except QuantgateError as exc:
        raise pytest.UsageError(f"quantgate: {exc}") from None
    fresh = str(setting(config, "qg_fresh") or "")
    try:
        days = float(fresh) if fresh else None
    except ValueError:
        days = -1.0
    if days is not None and not (days > 0 and math.isfinite(days)):
        raise pytest.UsageError(
            f"quantgate: --qg-fresh / ini qg_fresh: {fresh!r} is not a number of days > 0"
        )
    if days is not None and not given:
        raise pytest.UsageError("quantgate: --qg-fresh needs --qg-history (the verdicts it reads)")
    config.stash[FRESH_DAYS] = days


def recently_verified(item: pytest.Item, now: float) -> str | None:
    """Why the item need not run (its last verdict green, on the same inputs, younger than
    ``--qg-fresh``), or ``None``."""
    days = item.config.stash.get(FRESH_DAYS, None)
    history = item.config.stash.get(HISTORY, None)
    if days is None or history is None:
        return None
    last = history.get(item.nodeid)
    if last is None or not last.green or last.changed(cell_inputs(item)):
        return None
    age = (now - last.at.timestamp()) / 86400.0
    if age >= days:
        return None
    return f"verified {age:.1f} days ago on the same inputs ({last.status}; --qg-fresh {days:g})"


def cell_inputs(item: pytest.Item) -> dict[str, str]:
    """The inputs of the item's matrix cell ({} for other items), computed once per item."""
    if INPUTS in item.stash:
        return item.stash[INPUTS]
    from plugins.matrix import CELL_KEY

    cell = item.stash.get(CELL_KEY, None)
    inputs: dict[str, str] = {} if cell is None else _inputs(item.config, cell)
    item.stash[INPUTS] = inputs
    return inputs


def _inputs(config: pytest.Config, cell: Any) -> dict[str, str]:
    from quantgate.inputs import catalog_cell_inputs, local_cell_inputs, tool_versions

    if TOOLS not in config.stash:
        from quantgate.envs import Envs

        given = config.getoption("qg_envs", None)
        config.stash[TOOLS] = tool_versions(Envs(Path(given)) if given else Envs.from_environment())
    tools = config.stash[TOOLS]
    if cell.gpu == "cpu":
        from plugins.lane import lane_session
        from quantgate import paths

        kind_file = Path(config.getoption("qg_lane") or paths.kind_file("cpu"))
        return local_cell_inputs(cell, lane_session(config).spec(), kind_file, paths.root(), tools)
    from plugins.gpu import STATE

    state = config.stash[STATE]
    driver = state.inventory.machine_info().get("driver") if state.inventory.devices else None
    assert state.catalog is not None, "matrix cells exist only when the catalog loaded"
    if SETTINGS not in config.stash:
        config.stash[SETTINGS] = {}
    return catalog_cell_inputs(cell, state.catalog, tools, driver, config.stash[SETTINGS])


def staleness(items: Iterable[pytest.Item]) -> tuple[int, float]:
    """Sort key of a served model's items: (0, 0) when one has no verdict or changed inputs, else
    (1, its oldest verdict's time); (1, 0) for everything when no history was given. Items longer
    than the whole job budget are left out: no night runs them, and they must not keep their served
    model first in line every night."""
    oldest = float("inf")
    for item in items:
        history = item.config.stash.get(HISTORY, None)
        if history is None:
            return (1, 0.0)
        if _longer_than_the_budget(item):
            continue
        last = history.get(item.nodeid)
        if last is None or last.changed(cell_inputs(item)):
            return (0, 0.0)
        oldest = min(oldest, last.at.timestamp())
    return (1, oldest)


def _longer_than_the_budget(item: pytest.Item) -> bool:
    from plugins.budget import BUDGET
    from plugins.gpu import TASK_KEY

    budget = item.config.stash.get(BUDGET, None)
    task = item.stash.get(TASK_KEY, None)
    return budget is not None and task is not None and task.seconds + task.startup_s > budget.whole_s


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Attach each selected cell's inputs to the cell its reports carry (and so to the coverage file)."""
    for item in items:
        for index, (name, value) in enumerate(item.user_properties):
            if name == "qg_cell" and isinstance(value, dict):
                item.user_properties[index] = (name, {**value, "inputs": cell_inputs(item)})
