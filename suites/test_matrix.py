"""The GPU matrix: one test per (model, scheme, GPU kind, benchmark or workload) cell.

``pytest suites -m h100 -n 8`` selects the H100 cells; the GPU plugin leases each served model's devices,
and the cells of one served model share one ``vllm serve`` (started by the first, stopped when the lease
is released). Accuracy and speed are judged against the same kind's stored BF16 references
(``baselines/<gpu>/<model>/``), which the BF16 cells write under ``--qg-update-baselines``. Written for
GPU runners: without a GPU of the kind the cells are skipped with the reason and the run ends red (fail
closed).
"""

from __future__ import annotations

from plugins.lane import LaneSession, end_cell
from quantgate.gpus import Lease
from quantgate.matrix import MatrixCell
from quantgate.pipeline import Pipeline
from quantgate.runners.serve import VllmServer


def serve(cell: MatrixCell, lease: Lease, session: LaneSession) -> tuple[Pipeline, VllmServer]:
    gpu_lane: Pipeline = session.get_gpu_lane()
    server = gpu_lane.serve(cell, lease)
    for served_model, seconds in gpu_lane.take_starts():
        session.server_started(served_model, seconds)
    return gpu_lane, server


def test_accuracy(qg_accuracy_cell: MatrixCell, qg_lease: Lease, qg_lane_session: LaneSession) -> None:
    gpu_lane, server = serve(qg_accuracy_cell, qg_lease, qg_lane_session)
    outcome = gpu_lane.judge_accuracy(server, qg_accuracy_cell)
    decision, verdict = outcome.decision, outcome.verdict
    if outcome.reference_note:
        qg_lane_session.reference_written(outcome.reference_note)
    qg_lane_session.record(
        cell=qg_accuracy_cell.cell_id,
        kind="accuracy",
        model=qg_accuracy_cell.model,
        scheme=qg_accuracy_cell.scheme,
        benchmark=qg_accuracy_cell.benchmark,
        verdict=verdict.verdict,
        gating=decision.gating,
        rule=decision.rule_id,
        floor=decision.floor,
        recovery=verdict.recovery,
        low=verdict.low,
        high=verdict.high,
        samples=verdict.candidate_samples,
        looks=[look.job.samples for look in outcome.looks],
        detail=verdict.detail,
        answers=outcome.answers,
        cut_answers=outcome.cut_answers,
    )
    end_cell(qg_lane_session, qg_accuracy_cell.cell_id, verdict.verdict, decision.gating, verdict.detail)


def test_speed(qg_performance_cell: MatrixCell, qg_lease: Lease, qg_lane_session: LaneSession) -> None:
    gpu_lane, server = serve(qg_performance_cell, qg_lease, qg_lane_session)
    outcome = gpu_lane.judge_speed(server, qg_performance_cell)
    if outcome.reference_note:
        qg_lane_session.reference_written(outcome.reference_note)
    qg_lane_session.add_benchmarks(
        outcome.benchmark_entries(
            qg_performance_cell.model,
            qg_performance_cell.scheme,
            f"{qg_performance_cell.gpu}::{gpu_lane.served_name(qg_performance_cell)}",
        )
    )
    qg_lane_session.record(
        cell=qg_performance_cell.cell_id,
        kind="speed",
        model=qg_performance_cell.model,
        scheme=qg_performance_cell.scheme,
        scenario=qg_performance_cell.scenario,
        **outcome.as_record(),
    )
    if outcome.verdict is None or outcome.decision is None:
        return
    end_cell(
        qg_lane_session,
        qg_performance_cell.cell_id,
        outcome.verdict.verdict,
        outcome.decision.gating,
        outcome.verdict.detail,
    )
