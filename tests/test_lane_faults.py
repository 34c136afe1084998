"""Faults injected into a real CPU-lane run end only the affected cells, with reason and log tail.

One run of ``pytest suites -m cpu`` on three cells of each tiny model (no FP8: its CPU kernel is up to 50x
slower on some hosts, and the faults need no particular scheme), with the
faults of ``tests/lane_faults.py``: the real vLLM server SIGKILLed mid-evaluation (Llama INT8) and
mid-bench (Llama INT4), the real lighteval worker SIGKILLed mid-job (Llama INT4), the real ``vllm bench``
worker SIGKILLed mid-run (Qwen2 INT8), lighteval's details and ``vllm bench``'s results cut in half
(Qwen2 INT4), the first port of a server held by another socket (Llama BF16: the server retries and the
cell passes), and a server not ready in time (Qwen2 BF16). The checks: Llama BF16 passes, and so do
Qwen2 INT8's tests that the fault does not touch; each faulted test fails with the fault named and, for a
tool, its log tail in report.md; the session reaches its report; no process of the run is left.

Needs the vllm, compress and eval environments (``tools/setup_envs.sh``; ``./run tests`` builds them).
Without them the test is skipped, unless ``QG_REQUIRE_ENVS=1``: then it fails.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lane_run import REPO, prepare_lane, processes_with, run_lane


@pytest.mark.slow
def test_faults_end_only_their_cells_with_the_reason_and_leave_no_process(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    envs, marker = prepare_lane(pytester, monkeypatch, "lane_faults")
    lane_file = tmp_path / "lane.yaml"
    # Fewer repeats, goodput limits no loaded CI machine misses (the healthy cell must stay healthy), and
    # cell budgets no loaded machine reaches: beside the other tests of `./run tests -n 2` vLLM's CPU
    # threads share their cores and a probe measured 11 tokens/s instead of 230, so a budget cut the
    # bench of the cell whose bench worker is to be killed (tests/test_slow_host.py covers budgets).
    lane_text = (REPO / "suites" / "kinds" / "cpu.yaml").read_text()
    lane_file.write_text(
        lane_text.replace("repeats: 3", "repeats: 2")
        .replace("{ttft_ms: 500, tpot_ms: 50}", "{ttft_ms: 60000, tpot_ms: 10000}")
        .replace("accuracy_s: 40", "accuracy_s: 100000")
        .replace("speed_s: 60", "speed_s: 100000")
    )
    for edited in ("repeats: 2", "ttft_ms: 60000", "accuracy_s: 100000", "speed_s: 100000"):
        assert edited in lane_file.read_text()
    run = run_lane(pytester, "lane_faults", "bf16 or int8 or int4", lane_file, envs, tmp_path, 1500)
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED, run.result.stdout.str()[-3000:]
    report = tmp_path / "report"
    by_test = run.outcomes

    def of(cell: str) -> dict[str, tuple[str, str]]:
        return {test: outcome for test, outcome in by_test.items() if f"[{cell}" in test}

    # per served model: its accuracy cells' two tests and three speed tests (llama 3 benchmarks, qwen2 2)
    assert len(by_test) == 3 * 9 + 3 * 7, sorted(by_test)
    healthy = of("tiny-llama-bf16")
    assert len(healthy) == 9
    assert {o for o, _ in healthy.values()} <= {"passed", "xfailed"}, healthy

    killed = "vllm server (tiny-llama__int8-w8a8): exited with status -9"
    assert by_test["test_accuracy[tiny-llama-int8-w8a8-cpu-gpqa_diamond]"] == (
        "failed",
        f"{killed} during evaluation look0",
    )
    assert by_test["test_output_length[tiny-llama-int8-w8a8-cpu-gpqa_diamond]"][0] == "failed"
    for scenario in ("single-stream", "multi-stream", "server"):
        after = by_test[f"test_speed[tiny-llama-int8-w8a8-cpu-{scenario}]"]
        assert after == ("failed", f"{killed} before vllm bench serve")

    worker = by_test["test_accuracy[tiny-llama-int4-w4a16-cpu-gpqa_diamond]"]
    assert worker[0] == "failed"
    assert "the lighteval worker exited with status -9" in worker[1], worker
    bench_kill = by_test["test_speed[tiny-llama-int4-w4a16-cpu-single-stream]"]
    assert bench_kill == (
        "failed",
        "vllm server (tiny-llama__int4-w4a16): exited with status -9 during vllm bench serve",
    )

    for benchmark in ("aime24", "math_500"):
        details = by_test[f"test_accuracy[tiny-qwen2-int4-w4a16-cpu-{benchmark}]"]
        assert details[0] == "failed"
        assert ".parquet" in details[1], details
    for scenario in ("single-stream", "multi-stream", "server"):
        truncated = by_test[f"test_speed[tiny-qwen2-int4-w4a16-cpu-{scenario}]"]
        assert truncated[0] == "failed"
        assert ".json" in truncated[1], truncated

    bench_worker = of("tiny-qwen2-int8-w8a8")
    for test in ("test_accuracy", "test_output_length"):
        for benchmark in ("aime24", "math_500"):
            outcome = bench_worker[f"{test}[tiny-qwen2-int8-w8a8-cpu-{benchmark}]"][0]
            assert outcome in ("passed", "xfailed"), bench_worker
    for scenario in ("single-stream", "multi-stream", "server"):
        outcome, reason = bench_worker[f"test_speed[tiny-qwen2-int8-w8a8-cpu-{scenario}]"]
        assert outcome == "failed"
        assert "worker exited with status -9" in reason, reason

    never = of("tiny-qwen2-bf16")
    assert {o for o, _ in never.values()} == {"error"}, never
    assert all("not ready at http://127.0.0.1:" in r and "within 3 s" in r for _, r in never.values())

    text = (report / "report.md").read_text()
    assert "## Failures: reason and the failing tool's log" in text
    assert "serve-tiny-llama__int8-w8a8.log`:" in text
    assert "serve-tiny-qwen2__bf16.log`:" in text
    serve_log = (tmp_path / "work" / "logs" / "serve-tiny-llama__bf16.log").read_text()
    assert "Address already in use" in serve_log or "Errno 98" in serve_log
    time.sleep(1.0)
    assert processes_with(marker) == [], "processes of the run are still alive"
    print(f"fault run: {run.wall_s:.0f} s, {len(by_test)} tests")
