"""Fault injection into the real CPU lane (loaded with ``-p lane_faults`` by ``tests/test_lane_faults.py``).

Nothing here stands in for a tool: the faults happen to the real tools of a real lane run. The real
vLLM server, the real lighteval worker and the real ``vllm bench`` worker are SIGKILLed while a job of
theirs runs, the real tools'
output files are cut in half before quantgate reads them, the port a server is given is held by
another socket, and one server gets less time to become ready than it needs. Each fault targets one
cell (served model), so the test can check that only that cell ends.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PORT_TAKEN = "tiny-llama__bf16"  # its first port is held by another socket; the server retries
TRUNCATED = "tiny-llama__fp8-w8a8"  # lighteval details and vllm bench results cut in half
SERVER_KILLED_IN_EVALUATION = "tiny-llama__int8-w8a8"
WORKER_AND_SERVER_KILLED = "tiny-llama__int4-w4a16"  # lighteval worker killed, later the server mid-bench
NEVER_READY = "tiny-qwen2__bf16"  # ready timeout shorter than its start
BENCH_WORKER_KILLED = "tiny-qwen2__int8-w8a8"  # the vllm bench worker killed mid-run
KILL_AFTER_S = 0.4


def _kill_later(pid: Callable[[], int | None]) -> None:
    def kill() -> None:
        target = pid()
        if target is not None:
            os.kill(target, signal.SIGKILL)

    threading.Timer(KILL_AFTER_S, kill).start()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def pytest_configure(config: pytest.Config) -> None:
    from quantgate import lane
    from quantgate.runners import bench, evaluate, serve

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    config.add_cleanup(holder.close)
    held = {"port": holder.getsockname()[1]}
    real_free_port = serve.free_port

    def free_port(host: str = "127.0.0.1") -> int:
        return held.pop("port", None) or real_free_port(host)

    real_server = lane.Lane.server

    def server(self: Any, checkpoint: Any) -> Any:
        made = real_server(self, checkpoint)
        if checkpoint.served_name == PORT_TAKEN:
            serve.free_port = free_port  # type: ignore[assignment]
        else:
            serve.free_port = real_free_port  # type: ignore[assignment]
        if checkpoint.served_name == NEVER_READY:
            made.spec = dataclasses.replace(made.spec, ready_timeout=3.0)
        return made

    real_evaluate = lane.Lane.evaluate

    def evaluate_with_faults(
        self: Any, server: Any, checkpoint: Any, samples: int, seed: int, tag: str
    ) -> Any:
        if checkpoint.served_name == SERVER_KILLED_IN_EVALUATION:
            _kill_later(lambda: server.process.pid if server.process else None)
        if checkpoint.served_name == WORKER_AND_SERVER_KILLED:
            worker = self.worker()
            _kill_later(lambda: worker.process.pid if worker.process else None)
        return real_evaluate(self, server, checkpoint, samples, seed, tag)

    real_bench = lane.Lane.bench

    def bench_with_faults(self: Any, server: Any, checkpoint: Any) -> Any:
        if checkpoint.served_name == WORKER_AND_SERVER_KILLED:
            _kill_later(lambda: server.process.pid if server.process else None)
        if checkpoint.served_name == BENCH_WORKER_KILLED:
            worker = self.bench_worker()
            _kill_later(lambda: worker.process.pid if worker.process else None)
        return real_bench(self, server, checkpoint)

    real_read_evaluation = evaluate.read_evaluation

    def read_evaluation(job: Any, seconds: float) -> Any:
        if job.served_name == TRUNCATED:
            for details in job.out_dir.glob("details/**/details_*.parquet"):
                _truncate(details)
        return real_read_evaluation(job, seconds)

    real_read_bench_result = bench.read_bench_result

    def read_bench_result(path: Path, run: Any, **kwargs: Any) -> Any:
        if path.parent.name == TRUNCATED:
            _truncate(path)
        return real_read_bench_result(path, run, **kwargs)

    lane.Lane.server = server  # type: ignore[method-assign]
    lane.Lane.evaluate = evaluate_with_faults  # type: ignore[method-assign]
    lane.Lane.bench = bench_with_faults  # type: ignore[method-assign]
    evaluate.read_evaluation = read_evaluation
    bench.read_bench_result = read_bench_result
