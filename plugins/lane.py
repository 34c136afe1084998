"""pytest glue for the pipeline's suites: ``pytest suites -m cpu`` and the GPU matrix.

Options, fixtures and hooks only; the work is ``quantgate.pipeline`` (one pipeline for every device
kind, its settings a kind file, ``quantgate.kinds``) and the report ``quantgate.report``.
A matrix test asks for ``qg_server``: its cell's pipeline (the cpu one for cpu cells, the GPU kinds'
for the rest) and the running server of its served model, started by the served model's first cell.
The cpu cells run grouped by served model, BF16 first (its speed is the others' reference), and the
previous server is stopped before the next starts (two cores). A served model whose quantization or
server start fails errors each of its tests with the tool's log tail and the session goes on. After
the run the report (Markdown, cells JSON, pytest-benchmark JSON) is written.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import pytest

from plugins.coverage import VERDICT_PROPERTY
from plugins.options import setting
from plugins.status import fail_session
from quantgate.cellresult import CellResult
from quantgate.errors import QuantgateError

if TYPE_CHECKING:
    from quantgate.envs import Envs
    from quantgate.kinds import KindSpec
    from quantgate.matrix import MatrixCell
    from quantgate.outcomes import AccuracyOutcome
    from quantgate.pipeline import Pipeline
    from quantgate.runners.serve import VllmServer

SESSION_KEY = pytest.StashKey["LaneSession"]()
FACTS_KEY = pytest.StashKey[list[tuple[str, Any]]]()
# What a test learned travels to the controller on its teardown report (an attribute of the report,
# which xdist serializes), so that a parallel run loses no record and the report is written once.
FACTS_ATTRIBUTE = "quantgate_facts"
FAILURE_ATTRIBUTE = "quantgate_failure"


@dataclass(frozen=True)
class Served:
    """A cell's pipeline and the running server of its served model (``None`` for a reused reference)."""

    pipeline: Pipeline
    server: VllmServer | None


@dataclass
class LaneSession:
    """What the lane did in this session: cells, measurements, tool timings, failures."""

    config: pytest.Config
    lane: Pipeline | None = None
    gpu_lane: Pipeline | None = None
    error: str | None = None
    results: list[CellResult] = field(default_factory=list)
    accuracy: dict[str, AccuracyOutcome] = field(default_factory=dict)
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    benchmarks: list[dict[str, Any]] = field(default_factory=list)
    server_starts: dict[str, list[float]] = field(default_factory=dict)
    selected_cells: list[tuple[str, str]] = field(default_factory=list)
    accuracy_cuts: dict[str, str] = field(default_factory=dict)
    references_written: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    current: pytest.Item | None = None
    _spec: KindSpec | None = None

    def spec(self) -> KindSpec:
        """The lane file, read once per session; a bad file is a usage error naming file and field."""
        if self._spec is None:
            from quantgate import paths
            from quantgate.kinds import load_kind

            path = self.config.getoption("qg_lane") or paths.kind_file("cpu")
            try:
                self._spec = load_kind(path)
            except QuantgateError as exc:
                raise pytest.UsageError(f"quantgate: {exc}") from None
        return self._spec

    def envs(self) -> Envs:
        from quantgate.envs import Envs

        given = self.config.getoption("qg_envs")
        return Envs(Path(given)) if given else Envs.from_environment()

    def workdir(self, default: str) -> Path:
        return Path(self.config.getoption("qg_lane_work") or self.config.rootpath / ".quantgate" / default)

    def cells(self) -> list[MatrixCell]:
        """The cpu kind file's matrix cells (``pipeline.local_cells``)."""
        from quantgate.pipeline import local_cells

        return local_cells(self.spec())

    def pipeline(self, kind: str) -> Pipeline:
        """The pipeline of a device kind: the cpu kind file's, or the GPU kinds'."""
        return self.get_lane() if kind == "cpu" else self.get_gpu_lane()

    def get_lane(self) -> Pipeline:
        """The cpu pipeline, built on first use; one that cannot be built fails every cell with the reason.

        Building it starts the lighteval and bench workers (their imports overlap with the first
        server start) and the background quantization of the selected cells.
        """
        if self.lane is None and self.error is None:
            from quantgate.pipeline import Pipeline

            try:
                envs = self.envs()
                for name in ("vllm", "compress", "eval"):
                    envs.python(name)
                lane = Pipeline(
                    self.spec(),
                    envs,
                    self.workdir("lane"),
                    update_baselines=bool(self.config.getoption("qg_update_baselines")),
                )
            except QuantgateError as exc:
                self.error = str(exc)
            else:
                lane.progress = self.say
                lane.worker().start()
                lane.bench_worker().start()
                lane.prepare(c for c in self.cells() if (c.model, c.scheme) in self.selected_cells)
                self.lane = lane
        if self.error is not None or self.lane is None:
            pytest.fail(f"quantgate lane: {self.error}", pytrace=False)
        return self.lane

    def get_gpu_lane(self) -> Pipeline:
        """The GPU kinds' pipeline of a matrix run (``suites/kinds/gpu.yaml``: the catalog's checkpoints,
        ``vllm serve`` on leased devices)."""
        if self.gpu_lane is None:
            from quantgate import paths
            from quantgate.kinds import load_kind
            from quantgate.pipeline import Pipeline

            envs = self.envs()
            try:
                envs.python("vllm")
                envs.python("eval")
            except QuantgateError as exc:
                pytest.fail(f"quantgate GPU lane: {exc}", pytrace=False)
            try:
                spec = load_kind(paths.kind_file("gpu"))
            except QuantgateError as exc:
                raise pytest.UsageError(f"quantgate: {exc}") from None
            self.gpu_lane = Pipeline(
                spec,
                envs,
                self.workdir("gpu"),
                update_baselines=bool(self.config.getoption("qg_update_baselines")),
                progress=self.say,
            )
        return self.gpu_lane

    def say(self, line: str) -> None:
        """A progress line on the terminal while a cell works (quiet under xdist workers)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None or hasattr(self.config, "workerinput"):
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[quantgate {time.monotonic() - self.started:4.0f} s] {line}")
            reporter.flush()

    def record(self, result: CellResult) -> None:
        """A judged cell's result for the report (``kind`` accuracy, speed, quantize)."""
        self._attach("record", result.to_record())

    def add_benchmarks(self, entries: list[dict[str, Any]]) -> None:
        """pytest-benchmark entries of the current test's bench runs."""
        self._attach("benchmarks", entries)

    def server_started(self, cell: str, seconds: float) -> None:
        self._attach("server_start", (cell, seconds))

    def reference_written(self, note: str) -> None:
        """A BF16 reference was (re)written: said in the summary, and the run fails."""
        self._attach("reference_written", note)

    def _attach(self, name: str, value: Any) -> None:
        if self.current is None:
            self.take([(name, value)])
        else:
            self.current.stash.setdefault(FACTS_KEY, []).append((name, value))

    def take(self, facts: list[tuple[str, Any]]) -> None:
        """Fold facts from a test (of this process or an xdist worker) into the session."""
        for name, value in facts:
            if name == "record":
                self.results.append(CellResult.from_record(value, "an xdist worker's facts", "record"))
            elif name == "benchmarks":
                self.benchmarks.extend(dict(entry) for entry in value)
            elif name == "server_start":
                cell, seconds = value
                self.server_starts.setdefault(str(cell), []).append(float(seconds))
            elif name == "reference_written":
                self.references_written.append(str(value))
            else:
                raise ValueError(f"unknown quantgate fact {name!r}")


def end_cell(
    session: LaneSession, node: pytest.Item, cell: MatrixCell, verdict: str, gating: bool, detail: str
) -> None:
    """End a judged cell's test: pass; xfail when informational or inconclusive where inconclusive is
    not a failure (``--qg-inconclusive xfail``, else the cell's kind file); otherwise fail with the
    verdict's one-line detail. The verdict goes to coverage (``VERDICT_PROPERTY``): the gate lets an
    inconclusive gating cell stand on its last green verdict (``quantgate.gate``)."""
    node.user_properties.append((VERDICT_PROPERTY, verdict if gating else "informational"))
    if verdict == "pass":
        return
    if not gating:
        pytest.xfail(f"{cell.cell_id}: informational: {detail}")
    mode = setting(session.config, "qg_inconclusive") or session.pipeline(cell.gpu).spec.inconclusive
    if verdict == "inconclusive" and mode == "xfail":
        pytest.xfail(f"{cell.cell_id}: {detail}")
    pytest.fail(f"{cell.cell_id}: {detail}", pytrace=False)


def over_budget(
    session: LaneSession, cell: MatrixCell, kind: Literal["accuracy", "speed"], reason: str
) -> NoReturn:
    """End a test whose step the cell budget cut: recorded, and informational (xfail), never a pass."""
    cut = f"cut by the cell budget: {reason}"
    session.record(
        dataclasses.replace(CellResult.for_cell(cell, kind), verdict="cut", cuts=(reason,), detail=cut)
    )
    pytest.xfail(f"{cell.cell_id}: informational: cut by the cell budget: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    session = LaneSession(config)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(OutcomeCollector(session), "quantgate-lane-outcomes")


def lane_session(config: pytest.Config) -> LaneSession:
    return config.stash[SESSION_KEY]


def _cpu_cell(item: pytest.Item) -> MatrixCell | None:
    from plugins.matrix import CELL_KEY

    cell = item.stash.get(CELL_KEY, None)
    return cell if cell is not None and cell.gpu == "cpu" else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the cpu cells in the kind file's order (``pipeline.local_cells``: served model by served
    model, BF16 first, its accuracy cells before its speed cells), an accuracy cell's output-length
    test right after it, models with the stalest verdicts first (``plugins.history``); and remember
    which served models the selection needs, so that only those are quantized ahead.

    The matrix's order (tests, then cells) would interleave served models, so that servers would
    restart and BF16 speed, the others' reference, would come last.
    """
    cells = {index: cell for index, item in enumerate(items) if (cell := _cpu_cell(item)) is not None}
    if not cells:
        return
    from plugins.history import staleness

    session = lane_session(config)
    position = {cell.cell_id: n for n, cell in enumerate(session.cells())}
    of_model: dict[str, list[pytest.Item]] = {}
    for slot, cell in cells.items():
        of_model.setdefault(cell.model, []).append(items[slot])
    stale = {model: staleness(members) for model, members in of_model.items()}

    def order(slot: int) -> tuple[tuple[tuple[int, float], int, bool], int]:
        cell, item = cells[slot], items[slot]
        name = getattr(item, "originalname", item.name)
        return (stale[cell.model], position[cell.cell_id], name == "test_output_length"), slot

    slots = list(cells)
    ordered = sorted(slots, key=order)
    moved = [items[slot] for slot in ordered]
    for slot, item in zip(slots, moved, strict=True):
        items[slot] = item
    for slot in ordered:
        cell = cells[slot]
        if (cell.model, cell.scheme) not in session.selected_cells:
            session.selected_cells.append((cell.model, cell.scheme))


@pytest.fixture(scope="session")
def qg_lane_session(pytestconfig: pytest.Config) -> Iterator[LaneSession]:
    session = lane_session(pytestconfig)
    yield session
    if session.lane is not None:
        session.lane.close()
    if session.gpu_lane is not None:
        session.gpu_lane.close()


@pytest.fixture
def qg_server(request: pytest.FixtureRequest, qg_lane_session: LaneSession) -> Served:
    """The test's cell's pipeline and the running server of its served model: on the devices of the
    cell's lease (GPU kinds), or on the CPU with the kind's previous server stopped first. A BF16 cell
    that passes on its stored reference (``reuse_reference``) gets no server and no devices."""
    from plugins.matrix import CELL_KEY

    cell = request.node.stash.get(CELL_KEY, None)
    if cell is None:
        pytest.fail("quantgate: qg_server is for matrix cells", pytrace=False)
    pipeline = qg_lane_session.pipeline(cell.gpu)
    if pipeline.reuses_reference(cell):
        return Served(pipeline, None)
    lease = None if cell.gpu == "cpu" else request.getfixturevalue("qg_lease")
    checkpoint = pipeline.checkpoint(cell)
    server = pipeline.serve(cell, lease)
    for served_model, seconds in pipeline.take_starts():
        qg_lane_session.record(
            CellResult(
                cell=served_model,
                kind="quantize",
                model=checkpoint.model,
                scheme=checkpoint.scheme,
                seconds=checkpoint.quantize_s,
                reused=checkpoint.reused,
            )
        )
        qg_lane_session.server_started(served_model, seconds)
    return Served(pipeline, server)


def _is_lane_test(item: pytest.Item) -> bool:
    return "qg_lane_session" in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    session = lane_session(item.config)
    session.current = item if _is_lane_test(item) else None
    try:
        return (yield)
    finally:
        session.current = None


def failure_of(excinfo: pytest.ExceptionInfo[BaseException]) -> dict[str, str]:
    """Why a lane test failed, in one line, and the failing tool's log (path and last lines)."""
    from quantgate.runners.process import ToolError

    error = excinfo.value
    if isinstance(error, ToolError):
        return {
            "reason": f"{error.tool}: {error.reason}",
            "log": str(error.log_path or ""),
            "tail": error.log_tail,
        }
    if isinstance(error, QuantgateError):
        return {"reason": str(error), "log": "", "tail": ""}
    text = excinfo.exconly().strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return {"reason": first.removeprefix("Failed: "), "log": "", "tail": ""}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if _is_lane_test(item):
        report.quantgate_lane = True  # type: ignore[attr-defined]
        if report.failed and call.excinfo is not None:
            setattr(report, FAILURE_ATTRIBUTE, failure_of(call.excinfo))
        if report.when == "teardown":
            facts: list[tuple[str, Any]] = item.stash.get(FACTS_KEY, [])
            setattr(report, FACTS_ATTRIBUTE, list(facts))
    return report


class OutcomeCollector:
    """Outcomes and facts of lane tests, in the process that reports (the controller under xdist)."""

    def __init__(self, session: LaneSession) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not getattr(report, "quantgate_lane", False):
            return
        facts = getattr(report, FACTS_ATTRIBUTE, None)
        if facts:
            self.session.take([(str(name), value) for name, value in facts])
        if report.when != "call" and report.outcome == "passed":
            return
        reason = ""
        failure = getattr(report, FAILURE_ATTRIBUTE, None)
        if hasattr(report, "wasxfail"):
            reason = report.wasxfail
        elif failure:
            reason = str(failure["reason"])
            self.session.failures[report.nodeid] = {k: str(v) for k, v in failure.items()}
        elif report.outcome != "passed" and report.longreprtext:
            reason = report.longreprtext.strip().splitlines()[-1]
        outcome: str = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        if report.when != "call" and report.outcome == "failed":
            outcome = "error"
        from plugins.budget import DEFERRED_PROPERTY

        deferred = dict(report.user_properties).get(DEFERRED_PROPERTY)
        if report.skipped and deferred:
            outcome, reason = "deferred", str(deferred).removeprefix("deferred: ")
        self.session.outcomes[report.nodeid] = (outcome, reason)


def _gpu_info(config: pytest.Config) -> dict[str, Any] | None:
    from plugins.gpu import STATE

    state = config.stash.get(STATE, None)
    if state is None or not state.inventory.devices:
        return None
    info: dict[str, Any] = state.inventory.machine_info()
    return info


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = lane_session(config)
    if not session.outcomes or hasattr(config, "workerinput"):
        return
    from quantgate.envs import tool_context
    from quantgate.outcomes import benchmark_document
    from quantgate.report import write_report

    directory = Path(config.getoption("qg_report") or config.rootpath / "out" / "lane")
    gpu = _gpu_info(config)
    if session.lane is not None:
        context = session.lane.context()
    else:
        context = tool_context(session.envs())
        if session.error:
            context["lane"] = session.error
    if gpu is not None:
        context["gpus"] = f"{', '.join(gpu['devices'])}; driver {gpu['driver']}, CUDA {gpu['cuda']}"
    benchmark_doc = benchmark_document(session.benchmarks, session.envs(), config.rootpath, gpu)
    written = write_report(
        directory,
        session.results,
        outcomes=session.outcomes,
        benchmark_doc=benchmark_doc,
        server_starts=session.server_starts,
        wall_s=time.monotonic() - session.started,
        context=context,
        failures=session.failures,
        title="quantgate CPU lane" if gpu is None else "quantgate GPU run",
    )
    terminalreporter.section("quantgate lane")
    for line in written.summary_lines:
        terminalreporter.write_line(line)
    for note in session.references_written:
        terminalreporter.write_line(note)
    terminalreporter.write_line(f"report: {written.markdown}")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(written.markdown.read_text(encoding="utf-8") + "\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    lane = lane_session(session.config)
    if lane.references_written:
        fail_session(session.config, "references were written (rerun to gate against them)")
