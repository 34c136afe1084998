"""pytest glue for the replay suite: ``pytest suites --qg-results DIR``.

Options and hooks only. Cells come from ``quantgate.replay``; each becomes one test whose id is the
cell id, and the test asserts on the cell's outcome. The run fails closed: a results directory that
yields no cell, or a selection in which every cell was unknown, ends red.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plugins.options import setting
from plugins.status import fail_session
from quantgate.errors import QuantgateError

NO_RESULTS = "the replay suite needs --qg-results DIR"
NO_RESULTS_ID = "no-results"

NOTES_KEY = pytest.StashKey[list[str]]()
CELLS_KEY = pytest.StashKey[list[Any]]()
SESSION_KEY = pytest.StashKey[dict[str, Any]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SESSION_KEY] = {"outcomes": {}}
    results = config.getoption("qg_results")
    if results:
        from quantgate.replay import Replay

        try:
            baselines = config.getoption("qg_baselines")
            replay = Replay(
                baselines=Path(baselines) if baselines else None,
                update_baselines=bool(config.getoption("qg_update_baselines", False)),
            )
            cells = replay.cells(results)
            config.stash[NOTES_KEY] = replay.notes
        except QuantgateError as exc:
            raise pytest.UsageError(f"quantgate: {exc}") from None
        if not cells:
            raise pytest.UsageError(f"quantgate: {results} yields no cell (fail closed)")
        config.stash[CELLS_KEY] = cells


def pytest_report_header(config: pytest.Config) -> str | None:
    results = config.getoption("qg_results")
    if not results:
        return None
    return f"quantgate: --qg-results={results} --qg-inconclusive={_inconclusive_mode(config)}"


def _inconclusive_mode(config: pytest.Config) -> str:
    return str(setting(config, "qg_inconclusive") or "fail")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "qg_cell" not in metafunc.fixturenames:
        return
    config = metafunc.config
    if CELLS_KEY not in config.stash:
        placeholder = pytest.param(None, id=NO_RESULTS_ID, marks=pytest.mark.skip(reason=NO_RESULTS))
        metafunc.parametrize("qg_cell", [placeholder])
        return
    params = []
    for cell in config.stash[CELLS_KEY]:
        marks = [getattr(pytest.mark, cell.kind)]
        if not cell.gating:
            marks.append(pytest.mark.informational)
        params.append(pytest.param(cell, id=cell.cell_id, marks=marks))
    metafunc.parametrize("qg_cell", params)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Selecting only the replay suite without results is a usage error, not an all-skipped green run."""
    placeholder = [i for i in items if i.name.endswith(f"[{NO_RESULTS_ID}]")]
    if items and len(placeholder) == len(items):
        raise pytest.UsageError(f"quantgate: {NO_RESULTS}")


def judge_cell(cell, config: pytest.Config, record) -> None:  # type: ignore[no-untyped-def]
    """Turn one cell's outcome into the test's result; used by ``suites/test_replay.py``."""
    record("qg_outcome", cell.outcome)
    record("qg_detail", cell.detail)
    config.stash[SESSION_KEY]["outcomes"][cell.cell_id] = cell
    if cell.outcome == "pass":
        return
    if not cell.gating:
        if cell.outcome in {"fail", "inconclusive"}:
            pytest.xfail(f"{cell.cell_id}: informational ({cell.decision.rule_id}): {cell.detail}")
        pytest.skip(f"{cell.cell_id}: informational, {cell.detail}")
    if cell.outcome == "unknown":
        pytest.fail(f"{cell.cell_id}: no evidence, failing closed: {cell.detail}", pytrace=False)
    if cell.outcome == "inconclusive" and _inconclusive_mode(config) == "xfail":
        pytest.xfail(f"{cell.cell_id}: {cell.detail}")
    pytest.fail(f"{cell.cell_id}: {cell.detail}", pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    if not config.getoption("qg_results") or CELLS_KEY not in config.stash:
        return
    from quantgate.report import accuracy_pivot, replay_markdown, verdict_counts

    judged = [cell.result() for cell in config.stash[SESSION_KEY]["outcomes"].values()]
    if not judged:
        return
    terminalreporter.section("quantgate")
    for note in config.stash.get(NOTES_KEY, []):
        terminalreporter.write_line(f"{note} (baselines changed: this run fails; rerun to gate against them)")
    if any(c.kind == "accuracy" for c in judged):
        for line in accuracy_pivot(judged).splitlines():
            terminalreporter.write_line(line)
    for key, bucket in sorted(verdict_counts(judged).items()):
        terminalreporter.write_line(f"{key}: " + ", ".join(f"{n} {outcome}" for outcome, n in bucket.items()))
    summary = config.getoption("qg_summary")
    if summary:
        from quantgate.charts import draw_replay
        from quantgate.datafile import atomic_write_text

        path = Path(summary)
        path.parent.mkdir(parents=True, exist_ok=True)
        charts = draw_replay(judged, path.parent, path.stem)
        links = "".join(f"![{c.stem}]({c.name})\n" for c in charts)
        text = replay_markdown(judged, "quantgate replay") + (f"\n## Charts\n\n{links}" if links else "")
        atomic_write_text(path, text + "\n")
        terminalreporter.write_line(
            f"summary written to {summary}; charts: {', '.join(c.name for c in charts)}"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not config.getoption("qg_results") or CELLS_KEY not in config.stash:
        return
    if config.stash.get(NOTES_KEY, []):
        fail_session(config, "baselines were written (rerun to gate against them)")
