"""A cell result survives its JSON form unchanged, and a bad record is one error naming file and field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from quantgate.cellresult import CellResult
from quantgate.errors import QuantgateError
from quantgate.matrix import expand

CELLS = {c.cell_id: c for c in expand()}
ACCURACY = dataclasses.replace(
    CellResult.for_cell(CELLS["Qwen-7B-int8-w8a8-h100-aime24"], "accuracy"),
    verdict="pass",
    rule="int8",
    floor=0.97,
    recovery=1.01,
    low=0.98,
    high=1.04,
    looks=(20, 10),
    samples=30,
    cuts=("looks cut to 40 items",),
)
SPEED = dataclasses.replace(
    CellResult.for_cell(CELLS["Qwen-7B-int8-w8a8-h100-single-stream-multi-turn-chat"], "speed"),
    figures=(1.5, 1.6, 1.55),
    bf16_gpus=2,
    per_gpu_speedup=3.1,
    gating=False,
)


def test_a_result_for_a_cell_names_it() -> None:
    assert (SPEED.gpu, SPEED.scenario, SPEED.workload) == ("h100", "single-stream", "multi-turn-chat")
    assert (ACCURACY.cell, ACCURACY.target, ACCURACY.model) == (
        "Qwen-7B-int8-w8a8-h100-aime24",
        "aime24",
        "Qwen-7B",
    )


@pytest.mark.parametrize("result", [ACCURACY, SPEED], ids=["accuracy", "speed"])
def test_a_result_survives_its_json_form(result: CellResult) -> None:
    record = json.loads(json.dumps(result.to_record()))
    assert CellResult.from_record(record, "cells.json", "records[0]") == result


def test_defaults_are_left_out_of_the_json_form() -> None:
    record = SPEED.to_record()
    assert "recovery" not in record
    assert "reused" not in record
    assert record["gating"] is False
    assert record["figures"] == [1.5, 1.6, 1.55]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recovrey": 1.0}, r"cells.json: records\[3\]: unknown field 'recovrey'"),
        ({"floor": "0.97"}, r"cells.json: records\[3\].floor: must be float \| None, got '0.97'"),
        ({"looks": [20, "10"]}, r"records\[3\].looks: must be tuple\[int, \.\.\.\]"),
        ({"gating": 1}, r"records\[3\].gating: must be bool, got 1"),
        ({"kind": "latency"}, r"records\[3\].kind: kind must be one of"),
    ],
)
def test_a_bad_record_names_file_and_field(change: dict[str, object], message: str) -> None:
    record = {**ACCURACY.to_record(), **change}
    with pytest.raises(QuantgateError, match=message):
        CellResult.from_record(record, "cells.json", "records[3]")


def test_a_record_without_its_identity_is_refused() -> None:
    with pytest.raises(QuantgateError, match=r"records\[0\]: missing model, scheme"):
        CellResult.from_record({"cell": "c", "kind": "speed"}, "cells.json", "records[0]")
