"""The matrix suite for every device kind: one test per (model, scheme, kind, benchmark or workload) cell.

``pytest suites -m h100 -n 8`` runs the H100 cells; ``pytest suites -m cpu`` (the main job) the cpu
kind's cells, tiny local models, through the same tests and pipeline (``quantgate.pipeline``). A
cell's served model is started by its first cell and shared by the rest: on a GPU kind on the devices
its lease holds (stopped when the lease is released), on the CPU one at a time. Accuracy is judged
against the kind's stored BF16 references (``baselines/<kind>/<model>/``), which the BF16 cells write
under ``--qg-update-baselines``; speed against BF16's, measured in the session (cpu) or stored (GPU
kinds). Without a device of the kind the cells are skipped with the reason and the run ends red.
"""

from __future__ import annotations

import pytest

from plugins.lane import LaneSession, Served, end_cell, over_budget
from quantgate.budget import OverBudget
from quantgate.matrix import MatrixCell


def test_accuracy(
    qg_accuracy_cell: MatrixCell,
    qg_server: Served,
    qg_lane_session: LaneSession,
    request: pytest.FixtureRequest,
) -> None:
    """Recovery against the stored BF16 reference, paired per item, topped up while inconclusive."""
    cell = qg_accuracy_cell
    try:
        outcome = qg_server.pipeline.judge_accuracy(qg_server.server, cell)
    except OverBudget as cut:
        qg_lane_session.accuracy_cuts[cell.cell_id] = str(cut.cut)
        over_budget(qg_lane_session, cell, "accuracy", str(cut.cut))
    qg_lane_session.accuracy[cell.cell_id] = outcome
    if outcome.reference_note:
        qg_lane_session.reference_written(outcome.reference_note)
    qg_lane_session.record(outcome.result(cell))
    detail = outcome.verdict.detail
    if outcome.cuts:
        detail += "; cut by the cell budget: " + "; ".join(str(c) for c in outcome.cuts)
    gating = outcome.decision.gating and not outcome.undecided_in_budget
    end_cell(qg_lane_session, request.node, cell, outcome.verdict.verdict, gating, detail)


@pytest.mark.speed
@pytest.mark.usefixtures("qg_server")
def test_output_length(qg_accuracy_cell: MatrixCell, qg_lane_session: LaneSession) -> None:
    """Reasoning-aware speed: answers as long as the reference's, within the kind's range (a model that
    thinks longer is not faster, whatever its tokens per second)."""
    cell = qg_accuracy_cell
    pipeline = qg_lane_session.pipeline(cell.gpu)
    outcome = qg_lane_session.accuracy.get(cell.cell_id)
    cut = qg_lane_session.accuracy_cuts.get(cell.cell_id)
    if outcome is None and cut is not None:
        pytest.xfail(f"{cell.cell_id}: informational: no accuracy run, {cut}")
    if outcome is None:
        pytest.fail(f"{cell.cell_id}: no accuracy run of this cell in the session (fail closed)")
    if outcome.reused:
        return
    low, high = pipeline.spec.accuracy.output_length
    ratio = outcome.length_ratio
    assert ratio is not None, "lighteval recorded no output token counts"
    assert low <= ratio <= high, (
        f"mean output tokens {outcome.output_tokens:.2f} vs reference {outcome.reference_output_tokens:.2f} "
        f"(ratio {ratio:.3f}, allowed {low}-{high}); {outcome.tokens_per_solved:.1f} tokens per solved item"
    )


def test_speed(
    qg_performance_cell: MatrixCell,
    qg_server: Served,
    qg_lane_session: LaneSession,
    request: pytest.FixtureRequest,
) -> None:
    """Speedup over BF16 in one scenario on one workload, from repeated measurements of a warm server."""
    cell = qg_performance_cell
    pipeline = qg_server.pipeline
    try:
        outcome = pipeline.judge_speed(qg_server.server, cell)
    except OverBudget as cut:
        over_budget(qg_lane_session, cell, "speed", str(cut.cut))
    if outcome.reference_note:
        qg_lane_session.reference_written(outcome.reference_note)
    qg_lane_session.add_benchmarks(
        outcome.benchmark_entries(cell.model, cell.scheme, f"{cell.gpu}::{pipeline.served_name(cell)}")
    )
    budget_cut = pipeline.speed_cuts.get(pipeline.served_name(cell))
    qg_lane_session.record(outcome.result(cell, cuts=[str(budget_cut)] if budget_cut else []))
    if outcome.verdict is None or outcome.decision is None:
        return
    end_cell(
        qg_lane_session,
        request.node,
        cell,
        outcome.verdict.verdict,
        outcome.decision.gating,
        outcome.verdict.detail,
    )
