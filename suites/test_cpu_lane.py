"""The CPU lane as tests: ``pytest suites -m cpu`` (what ``./run main`` runs).

Each (tiny model, scheme) is a cell served once: its quantization is checked against the scheme's
signature, its accuracy judged against the stored BF16 reference, and its speed in each scenario
judged against the same session's BF16 measurements.
"""

from __future__ import annotations

import json

import pytest

from plugins.lane import LaneSession, Served, end_cell, over_budget
from quantgate.budget import OverBudget
from quantgate.envs import sha256_file

pytestmark = pytest.mark.cpu


def test_quantization(qg_served: Served, qg_lane_session: LaneSession) -> None:
    """The served checkpoint is what the scheme says: its signature, or no quantization for BF16."""
    checkpoint = qg_served.checkpoint
    config = json.loads((checkpoint.path / "config.json").read_text(encoding="utf-8"))
    if checkpoint.scheme == "bf16":
        assert "quantization_config" not in config
        built = json.loads((checkpoint.path / "build.json").read_text(encoding="utf-8"))
        weights = sorted(checkpoint.path.glob("*.safetensors"))
        assert len(weights) == 1, f"expected one weights file in {checkpoint.path}"
        assert sha256_file(weights[0]) == built["weights_sha256"], "weights differ from build.json"
    else:
        assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert qg_served.server.alive(), "the server died"


@pytest.mark.accuracy
def test_accuracy(qg_served: Served, qg_benchmark: str, qg_lane_session: LaneSession) -> None:
    """Recovery against the stored BF16 reference, paired per item, topped up while inconclusive."""
    lane = qg_lane_session.get_lane()
    checkpoint = qg_served.checkpoint
    cell = f"{checkpoint.model}-{checkpoint.scheme}-{qg_benchmark}"
    key = (f"{checkpoint.model}__{checkpoint.scheme}", qg_benchmark)
    try:
        outcome = lane.judge_accuracy(qg_served.server, qg_served.cell(qg_benchmark))
    except OverBudget as cut:
        qg_lane_session.accuracy_cuts[key] = str(cut.cut)
        over_budget(qg_lane_session, cell, "accuracy", checkpoint, str(cut.cut), benchmark=qg_benchmark)
    qg_lane_session.accuracy[key] = outcome
    if outcome.reference_note:
        qg_lane_session.reference_written(outcome.reference_note)
    qg_lane_session.record(
        cell=cell,
        kind="accuracy",
        model=checkpoint.model,
        scheme=checkpoint.scheme,
        benchmark=qg_benchmark,
        verdict=outcome.verdict.verdict,
        gating=outcome.decision.gating,
        rule=outcome.decision.rule_id,
        floor=outcome.decision.floor,
        score=outcome.score,
        reference_score=outcome.reference_score,
        recovery=outcome.verdict.recovery,
        low=outcome.verdict.low,
        high=outcome.verdict.high,
        samples=outcome.verdict.candidate_samples,
        looks=[look.job.samples for look in outcome.looks],
        seconds=outcome.seconds,
        detail=outcome.verdict.detail,
        output_tokens=outcome.output_tokens,
        reference_output_tokens=outcome.reference_output_tokens,
        length_ratio=outcome.length_ratio,
        tokens_per_solved=outcome.tokens_per_solved,
        seconds_per_solved=outcome.seconds_per_solved,
        cuts=[str(c) for c in outcome.cuts],
        answers=outcome.answers,
        cut_answers=outcome.cut_answers,
    )
    detail = outcome.verdict.detail
    if outcome.cuts:
        detail += "; cut by the cell budget: " + "; ".join(str(c) for c in outcome.cuts)
    gating = outcome.decision.gating and not outcome.undecided_in_budget
    end_cell(qg_lane_session, cell, outcome.verdict.verdict, gating, detail)


@pytest.mark.speed
def test_output_length(qg_served: Served, qg_benchmark: str, qg_lane_session: LaneSession) -> None:
    """Reasoning-aware speed: answers as long as the reference's, within the lane's range."""
    checkpoint = qg_served.checkpoint
    key = (f"{checkpoint.model}__{checkpoint.scheme}", qg_benchmark)
    outcome = qg_lane_session.accuracy.get(key)
    cut = qg_lane_session.accuracy_cuts.get(key)
    cell = f"{key[0]} {qg_benchmark}"
    if outcome is None and cut is not None:
        pytest.xfail(f"{cell}: informational: no accuracy run, {cut}")
    if outcome is None:
        pytest.fail(f"{cell}: no accuracy run of this cell in the session (fail closed)")
    low, high = qg_lane_session.get_lane().spec.accuracy.output_length
    ratio = outcome.length_ratio
    assert ratio is not None, "lighteval recorded no output token counts"
    assert low <= ratio <= high, (
        f"mean output tokens {outcome.output_tokens:.2f} vs reference {outcome.reference_output_tokens:.2f} "
        f"(ratio {ratio:.3f}, allowed {low}-{high}); {outcome.tokens_per_solved:.1f} tokens per solved item"
    )


@pytest.mark.speed
def test_speed(qg_served: Served, qg_scenario: str, qg_lane_session: LaneSession) -> None:
    """Speedup over BF16 in one scenario, from repeated measurements of this session."""
    lane = qg_lane_session.get_lane()
    checkpoint = qg_served.checkpoint
    cell = f"{checkpoint.model}-{checkpoint.scheme}-{qg_scenario}"
    served_name = f"{checkpoint.model}__{checkpoint.scheme}"
    try:
        outcome = lane.judge_speed(qg_served.server, qg_served.cell(qg_scenario))
    except OverBudget as cut:
        over_budget(qg_lane_session, cell, "speed", checkpoint, str(cut.cut), scenario=qg_scenario)
    qg_lane_session.add_benchmarks(
        outcome.benchmark_entries(checkpoint.model, checkpoint.scheme, f"lane::{served_name}")
    )
    qg_lane_session.record(
        cell=cell,
        kind="speed",
        model=checkpoint.model,
        scheme=checkpoint.scheme,
        scenario=qg_scenario,
        cuts=[str(cut)] if (cut := lane.speed_cuts.get(served_name)) else [],
        **outcome.as_record(),
    )
    if outcome.verdict is None:
        return
    end_cell(qg_lane_session, cell, outcome.verdict.verdict, outcome.decision.gating, outcome.verdict.detail)
