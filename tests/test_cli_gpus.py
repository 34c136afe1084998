"""``quantgate gpus``: the inventory found (or why none), and the fit of the matrix on it."""

from __future__ import annotations

import json
import sys

import pytest
from fake_nvml import H100, fake_nvml

from quantgate.cli import main


def test_no_gpu_says_why(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([], fail="Driver Not Loaded"))
    assert main(["gpus"]) == 0
    assert capsys.readouterr().out == "no GPU inventory: NVML: cannot initialise: Driver Not Loaded\n"


def test_nvml_devices_and_their_fit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([H100, H100]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("GPU inventory: 2x h100 (0-1) from NVML (driver 550.54.15)\n")
    assert "0      h100  NVIDIA H100 80GB HBM3  79.6        79.6      9.0  GPU-00000000-" in out
    lines = {tuple(line.split()[:4]): line for line in out.splitlines()}
    assert lines[("Llama-70B", "bf16", "h100", "4")].endswith("needs 4x h100, 2 here")
    assert lines[("Llama-70B", "int8-w8a8", "h100", "2")].endswith("runs on 2 of 2")


def test_declared_inventory_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", "--declare", "a6000:4"]) == 0
    out = capsys.readouterr().out
    assert "MODEL      SCHEME      GPU    TP  WEIGHTS  ACT+RT  KV    NEED/GPU  BUDGET  STATUS" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("Qwen", "Llama"))]
    assert len(rows) == 6 * 4
    by_key = {(r[0], r[1]): r for r in rows}
    assert by_key[("Llama-70B", "bf16")][3] == "4"
    assert " ".join(by_key[("Llama-70B", "bf16")][-5:]) == "runs on 4 of 4"
    assert "skip: not the scheme's compute path: FP8 W8A8" in " ".join(by_key[("Qwen-7B", "fp8-w8a8")])


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", "--declare", "h100:8", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["inventory"]["devices"]) == 8
    assert {r["status"] for r in doc["fit"]} == {"runs on 1 of 8", "runs on 2 of 8", "runs on 4 of 8"}
    row = next(r for r in doc["fit"] if r["served_model"] == "Llama-70B/bf16/h100/tp4")
    assert row["need_gb"] <= row["budget_gb"] == 72.0


def test_bad_declaration_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", "--declare", "b200:2"]) == 2
    assert capsys.readouterr().err == (
        "quantgate: GPU inventory: b200:2: unknown GPU kind 'b200'; known: a6000, a100, h100, h200, l40s\n"
    )


def test_a_runner_that_expects_gpus_fails_when_nvml_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([], fail="Driver Not Loaded"))
    assert main(["gpus", "--expect", "h100:8"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "quantgate gpus: --expect h100:8: 8x h100 expected, 0 visible from NVML: "
        "cannot initialise: Driver Not Loaded\n"
    )


def test_a_runner_with_fewer_gpus_than_expected_fails_and_one_with_enough_passes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([H100, H100]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main(["gpus", "--expect", "h100:8"]) == 1
    assert "8x h100 expected, 2 visible from NVML" in capsys.readouterr().err
    assert main(["gpus", "--expect", "h100:2"]) == 0
    assert main(["gpus", "--expect", "nonsense:2"]) == 2
