"""pytest glue for the coverage matrix: each selected cell's outcome, written as cells end; fail closed.

Registered on the controller (or the only process). Every report of a matrix cell (under xdist, from the
workers) becomes a coverage row: status (passed, failed, error, xfailed, xpassed, skipped, deferred, or
collected when it never ran), reason, devices, and the judge's verdict where a cell was judged. The file
(``--qg-coverage``, default ``.quantgate/coverage.json``) is rewritten after every cell with
``"complete": false`` and once more when the session ends, so a job killed at its runner's limit still
leaves what it finished. A session in which every selected cell was skipped fails unless
``--qg-allow-empty``; measured durations go to ``--qg-durations`` and plan the next run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from plugins.budget import DEFERRED_PROPERTY
from plugins.gpu import STATE, GpuSession, path_option
from plugins.history import FRESH_PROPERTY
from plugins.options import setting
from plugins.status import fail_session
from quantgate.datafile import atomic_write_text
from quantgate.devices.durations import Durations, save_durations

COVERAGE_SCHEMA_VERSION = 1
RAN = ("passed", "failed", "error", "xfailed", "xpassed")
# The judge's word on a cell (pass, fail, inconclusive, informational), set by the test that judged it.
VERDICT_PROPERTY = "qg_verdict"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    state = config.stash[STATE]
    if not state.is_worker:
        config.pluginmanager.register(OutcomeRecorder(config, state), "quantgate-outcomes")


class OutcomeRecorder:
    """Registered on the controller (or the only process): turns reports of cells into coverage rows.

    A plugin object rather than a module hook because ``pytest_runtest_logreport`` gets no config;
    under xdist the reports arrive here from the workers, with the ``qg_cell`` and ``qg_devices``
    user properties set on the worker.
    """

    def __init__(self, config: pytest.Config, state: GpuSession) -> None:
        self.config = config
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        cell = props.get("qg_cell")
        if not isinstance(cell, dict):
            return
        record = self.state.outcomes.setdefault(
            report.nodeid, {**cell, "node_id": report.nodeid, "status": None, "reason": None, "devices": None}
        )
        if "qg_devices" in props:
            record["devices"] = props["qg_devices"]
        if report.when == "setup":
            waited = props.get("qg_lease_wait_s", 0.0)
            record["setup_s"] = max(
                0.0, report.duration - (waited if isinstance(waited, float | int) else 0.0)
            )
        if report.when == "call":
            record["duration_s"] = report.duration
            if VERDICT_PROPERTY in props:
                record["verdict"] = props[VERDICT_PROPERTY]
        wasxfail = hasattr(report, "wasxfail")
        if report.skipped and DEFERRED_PROPERTY in props:
            record["status"] = "deferred"
            record["fresh"] = FRESH_PROPERTY in props
            record["reason"] = str(props[DEFERRED_PROPERTY]).removeprefix("deferred: ")
        elif report.failed:
            record["status"] = "failed" if report.when == "call" else "error"
        elif report.skipped and record["status"] is None:
            record["status"] = "xfailed" if wasxfail else "skipped"
            record["reason"] = _skip_reason(report)
        elif report.passed and report.when == "call" and record["status"] is None:
            record["status"] = "xpassed" if wasxfail else "passed"
        if report.when == "teardown":
            _write_coverage(self.config, self.state, complete=False)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ").removeprefix("quantgate: ")
    return str(longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash[STATE]
    if state.is_worker:
        return
    cells = _write_coverage(config, state, complete=True)
    ran = [c for c in cells if c["status"] in RAN]
    selected = [c for c in cells if c["status"] != "deselected"]
    tried = [c for c in selected if c["status"] not in (None, "collected") and not _fresh(c)]
    allow = bool(setting(config, "qg_allow_empty"))
    if tried and not ran and not allow:
        reasons = _top_reasons(tried)
        state.empty_failure = (
            f"all {len(tried)} selected matrix cells were skipped ({reasons}); failing closed. "
            "Pass --qg-allow-empty to accept a run in which no cell ran."
        )
        fail_session(config, state.empty_failure)
    if ran:
        _learn_durations(config, state, ran)


def _fresh(cell: dict[str, Any]) -> bool:
    """Deferred because verified recently (``--qg-fresh``): not run by choice, and the gate decides."""
    return cell["status"] == "deferred" and bool(cell.get("fresh"))


def _write_coverage(config: pytest.Config, state: GpuSession, complete: bool) -> list[dict[str, Any]]:
    """Write the coverage file (also after each cell, so a killed job leaves what it finished)."""
    _merge_worker_manifest(state)
    cells = _coverage_cells(state)
    if cells or config.getoption("qg_coverage"):
        path = path_option(config, "qg_coverage")
        atomic_write_text(path, _coverage_json(_coverage_doc(config, state, cells, complete)))
        state.coverage_written = path
    return cells


def _merge_worker_manifest(state: GpuSession) -> None:
    if state.lease_dir is None or state.manifest_merged:
        return
    manifest = state.lease_dir / "collection.json"
    if manifest.exists():
        state.manifest_merged = True
        doc = json.loads(manifest.read_text())
        state.selected.update(doc.get("selected", {}))
        for node_id, cell in doc.get("deselected", {}).items():
            state.deselected.setdefault(node_id, cell)
    plan = state.lease_dir / "plan.txt"
    if plan.exists() and state.plan_text is None:
        state.plan_text = plan.read_text().rstrip("\n")


def _coverage_cells(state: GpuSession) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for node_id, cell in state.selected.items():
        record = state.outcomes.get(node_id)
        out.append(
            record
            if record is not None
            else {**cell, "node_id": node_id, "status": "collected", "devices": None}
        )
        seen.add(node_id)
    for node_id, record in state.outcomes.items():
        if node_id not in seen:
            out.append(record)
            seen.add(node_id)
    for node_id, cell in state.deselected.items():
        if node_id not in seen:
            out.append({**cell, "node_id": node_id, "status": "deselected", "devices": None})
    return out


def _coverage_doc(
    config: pytest.Config, state: GpuSession, cells: list[dict[str, Any]], complete: bool
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for cell in cells:
        status = str(cell["status"])
        counts[status] = counts.get(status, 0) + 1
    shard = config.getoption("qg_shard")
    return {
        "schema_version": COVERAGE_SCHEMA_VERSION,
        "kind": "quantgate-coverage",
        "inventory": state.inventory.describe(),
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "complete": complete,
        "counts": dict(sorted(counts.items())),
        "cells": cells,
    }


def _coverage_json(doc: dict[str, Any]) -> str:
    """The document with one cell per line: readable, diffable, and fast for thousands of cells."""
    head = {k: v for k, v in doc.items() if k != "cells"}
    lines = ",\n".join("  " + json.dumps(cell, sort_keys=True) for cell in doc["cells"])
    return json.dumps(head, indent=1)[:-2] + ',\n "cells": [\n' + lines + "\n ]\n}\n"


def _top_reasons(cells: Sequence[dict[str, Any]], limit: int = 3) -> str:
    reasons: dict[str, int] = {}
    for cell in cells:
        reason = str(cell.get("reason") or cell["status"])
        reasons[reason] = reasons.get(reason, 0) + 1
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "; ".join(f"{n}x {reason}" for reason, n in ranked[:limit])
    return text + (f"; {len(ranked) - limit} more reasons" if len(ranked) > limit else "")


def _learn_durations(config: pytest.Config, state: GpuSession, ran: Sequence[dict[str, Any]]) -> None:
    learned = Durations(dict(state.durations.cells), dict(state.durations.served_models))
    startup: dict[str, float] = {}
    calls: dict[str, float] = {}
    for cell in ran:
        if "duration_s" in cell:
            cell_id = str(cell["cell_id"])
            calls[cell_id] = calls.get(cell_id, 0.0) + float(cell["duration_s"])
        served = str(cell["served_model"])
        startup[served] = max(startup.get(served, 0.0), float(cell.get("setup_s", 0.0)))
    learned.cells.update(calls)
    learned.served_models.update(startup)
    save_durations(path_option(config, "qg_durations"), learned)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash[STATE]
    if state.plan_text is None and state.coverage_written is None and state.empty_failure is None:
        return
    terminalreporter.section("quantgate")
    if state.plan_text is not None:
        for line in state.plan_text.splitlines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"plan written to {config.getoption('qg_plan')}")
    if state.coverage_written is not None:
        doc = json.loads(state.coverage_written.read_text())
        counts = ", ".join(f"{n} {status}" for status, n in doc["counts"].items())
        terminalreporter.write_line(f"coverage: {counts} -> {state.coverage_written}")
