"""Tool subprocesses: timeouts, log tails, readiness, and no process left behind.

The "tools" here are small Python stand-ins (named as such): they simulate what a real tool does at
the process level, a crash, a hang, a child process, a server that is slow or never ready. The real
tools are exercised by the CPU lane.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quantgate.runners.process import ToolError, ToolProcess, free_port, run_tool, wait_until_ready

PY = sys.executable


def stand_in(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers; treat it as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_run_tool_returns_wall_time(tmp_path: Path) -> None:
    seconds = run_tool("stand-in", stand_in("print('hello')"), tmp_path / "log.txt", timeout=30)
    assert seconds >= 0
    assert "hello" in (tmp_path / "log.txt").read_text()


def test_failure_carries_the_log_tail(tmp_path: Path) -> None:
    code = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(3)"
    with pytest.raises(ToolError) as info:
        run_tool("stand-in", stand_in(code), tmp_path / "log.txt", timeout=30)
    error = info.value
    assert "exited with status 3" in str(error)
    assert "line 99" in error.log_tail
    assert "line 10\n" not in error.log_tail


@pytest.mark.slow
def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """
    started = time.monotonic()
    with pytest.raises(ToolError, match="timed out after 2 s"):
        run_tool("stand-in", stand_in(code), tmp_path / "log.txt", timeout=2)
    assert time.monotonic() - started < 20
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


def test_missing_executable(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="cannot start"):
        run_tool("stand-in", [str(tmp_path / "no-such-tool")], tmp_path / "log.txt", timeout=5)


SERVER = """
    import http.server, sys, time
    delay, port = float(sys.argv[1]), int(sys.argv[2])
    started = time.monotonic()
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ready = time.monotonic() - started > delay
            self.send_response(200 if ready and self.path == "/health" else 503)
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_ready_when_health_answers(tmp_path: Path) -> None:
    port = free_port()
    process = ToolProcess.start(
        "stand-in server", [*stand_in(SERVER), "0.5", str(port)], tmp_path / "log.txt"
    )
    try:
        waited = wait_until_ready(process, f"http://127.0.0.1:{port}/health", timeout=30, poll=0.1)
        assert waited >= 0.5
    finally:
        process.stop()
    assert not process.alive()


def test_never_ready_times_out_and_stops(tmp_path: Path) -> None:
    port = free_port()
    process = ToolProcess.start(
        "stand-in server", [*stand_in(SERVER), "999", str(port)], tmp_path / "log.txt"
    )
    with pytest.raises(ToolError, match=r"not ready at .* within 1 s"):
        wait_until_ready(process, f"http://127.0.0.1:{port}/health", timeout=1, poll=0.1)
    assert not process.alive()


def test_dies_before_ready(tmp_path: Path) -> None:
    code = "import sys; print('CUDA out of memory (stand-in)'); sys.exit(1)"
    process = ToolProcess.start("stand-in server", stand_in(code), tmp_path / "log.txt")
    with pytest.raises(ToolError, match="exited with status 1 before ready") as info:
        wait_until_ready(process, f"http://127.0.0.1:{free_port()}/health", timeout=30, poll=0.1)
    assert "out of memory" in info.value.log_tail


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
