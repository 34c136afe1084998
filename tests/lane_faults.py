"""Fault injection into the real CPU lane (loaded with ``-p lane_faults`` by ``tests/test_lane_faults.py``).

Nothing here stands in for a tool: the faults happen to the real tools of a real lane run. The real
vLLM server, the real lighteval worker and the real ``vllm bench`` worker are SIGKILLed while a job
runs (0.4 s after the job reached its worker), the real tools' output files are cut in half before
quantgate reads them, the port a server is given is held by
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
TRUNCATED = "tiny-qwen2__int4-w4a16"  # lighteval details and vllm bench results cut in half
SERVER_KILLED_IN_EVALUATION = "tiny-llama__int8-w8a8"
WORKER_AND_SERVER_KILLED = "tiny-llama__int4-w4a16"  # lighteval worker killed, later the server mid-bench
NEVER_READY = "tiny-qwen2__bf16"  # ready timeout shorter than its start
BENCH_WORKER_KILLED = "tiny-qwen2__int8-w8a8"  # the vllm bench worker killed mid-run
KILL_AFTER_S = 0.4


class _ArmOnFlush:
    """A worker's stdin that arms the kill once a job line has been flushed to the worker."""

    def __init__(self, stream: Any, arm: Callable[[], None]) -> None:
        self._stream = stream
        self._arm = arm

    def flush(self) -> None:
        self._stream.flush()
        self._arm()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _run_with_faults(
    call: Callable[[], Any],
    worker: Any,
    server: Any,
    served_name: str,
    *,
    server_killed: str,
    worker_killed: str,
) -> Any:
    """Run ``call``; for the cell ``server_killed`` (``worker_killed``) SIGKILL the server (the worker)
    ``KILL_AFTER_S`` after ``worker`` was handed its job.

    Armed on the job itself, not on a clock started before it: a worker may be (re)started by the job,
    and a kill that landed between jobs would only make the next job start a fresh worker.
    """
    victims = {server_killed: lambda: server.process, worker_killed: lambda: worker.process}
    victim = victims.get(served_name)
    if victim is None:
        return call()
    real_submit = worker.submit
    timers: list[threading.Timer] = []

    def kill() -> None:
        target = victim()
        if target is not None and target.alive():
            os.kill(target.pid, signal.SIGKILL)

    def arm() -> None:
        if not timers:
            timers.append(threading.Timer(KILL_AFTER_S, kill))
            timers[0].start()

    def submit(*args: Any, **kwargs: Any) -> Any:
        worker.start()
        popen = worker.process.popen
        stream = popen.stdin
        popen.stdin = _ArmOnFlush(stream, arm)
        try:
            return real_submit(*args, **kwargs)
        finally:
            popen.stdin = stream

    worker.submit = submit
    try:
        return call()
    finally:
        del worker.submit
        for timer in timers:
            timer.cancel()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def pytest_configure(config: pytest.Config) -> None:
    from quantgate import pipeline
    from quantgate.runners import bench, evaluate, serve

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    config.add_cleanup(holder.close)
    held = {"port": holder.getsockname()[1]}
    real_free_port = serve.free_port

    def free_port(host: str = "127.0.0.1") -> int:
        return held.pop("port", None) or real_free_port(host)

    real_server = pipeline.Pipeline.server

    def server(self: Any, cell: Any, lease: Any = None) -> Any:
        made = real_server(self, cell, lease)
        if self.served_name(cell) == PORT_TAKEN:
            serve.free_port = free_port  # type: ignore[assignment]
        else:
            serve.free_port = real_free_port  # type: ignore[assignment]
        if self.served_name(cell) == NEVER_READY:
            made.spec = dataclasses.replace(made.spec, ready_timeout=3.0)
        return made

    real_evaluate = pipeline.Pipeline.evaluate

    def evaluate_with_faults(
        self: Any,
        server: Any,
        job: Any,
    ) -> Any:
        return _run_with_faults(
            lambda: real_evaluate(self, server, job),
            self.worker(),
            server,
            job.served_name,
            server_killed=SERVER_KILLED_IN_EVALUATION,
            worker_killed=WORKER_AND_SERVER_KILLED,
        )

    real_bench = pipeline.Pipeline.bench

    def bench_with_faults(self: Any, server: Any, cell: Any) -> Any:
        return _run_with_faults(
            lambda: real_bench(self, server, cell),
            self.bench_worker(),
            server,
            self.served_name(cell),
            server_killed=WORKER_AND_SERVER_KILLED,
            worker_killed=BENCH_WORKER_KILLED,
        )

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

    pipeline.Pipeline.server = server  # type: ignore[method-assign]
    pipeline.Pipeline.evaluate = evaluate_with_faults  # type: ignore[method-assign]
    pipeline.Pipeline.bench = bench_with_faults  # type: ignore[method-assign]
    evaluate.read_evaluation = read_evaluation
    bench.read_bench_result = read_bench_result
