"""Start, watch and stop tool subprocesses so that none outlives its owner.

Each tool starts in its own session (process group); stopping it signals the whole group, SIGTERM
first and SIGKILL after a grace period, so a server's engine and worker processes go with it. Output
goes to a log file whose tail is attached to every failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_TAIL_LINES = 40
# Readiness probes go straight to loopback, never through a proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ToolError(RuntimeError):
    """A tool failed: which one, how, and the tail of its log."""

    def __init__(self, tool: str, reason: str, log_path: Path | None = None) -> None:
        self.tool = tool
        self.reason = reason
        self.log_path = log_path
        self.log_tail = read_tail(log_path) if log_path else ""
        text = f"{tool}: {reason}"
        if log_path:
            text += f" (log: {log_path})"
        if self.log_tail:
            text += "\n--- last lines of the log ---\n" + self.log_tail
        super().__init__(text)


def read_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ToolProcess:
    """A running tool in its own process group, logging to ``log_path``."""

    tool: str
    command: tuple[str, ...]
    log_path: Path
    popen: subprocess.Popen[bytes]
    started: float

    @classmethod
    def start(
        cls,
        tool: str,
        command: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin_pipe: bool = False,
    ) -> ToolProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    list(command),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ToolError(
                    tool, f"cannot start {command[0]!r}: {exc.strerror or exc}", log_path
                ) from None
        return cls(tool, tuple(command), log_path, popen, time.monotonic())

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the tool to exit; past ``timeout`` stop it and raise."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ToolError(self.tool, f"timed out after {timeout:g} s", self.log_path) from None

    def stop(self, grace: float = 10.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.popen.poll() is not None and not _group_alive(self.popen.pid):
                    return
                time.sleep(0.05)
        self.popen.poll()

    def log_tail(self) -> str:
        return read_tail(self.log_path)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_tool(
    tool: str,
    command: Sequence[str],
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> float:
    """Run a tool to completion; return its wall time in seconds or raise ``ToolError``."""
    process = ToolProcess.start(tool, command, log_path, env, cwd)
    try:
        code = process.wait(timeout)
    finally:
        process.stop(grace=2.0)
    if code != 0:
        raise ToolError(tool, f"exited with status {code}", log_path)
    return time.monotonic() - process.started


def wait_until_ready(process: ToolProcess, url: str, timeout: float, poll: float = 0.5) -> float:
    """Poll ``url`` until it answers 200; fail early if the process dies. Returns seconds waited."""
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive():
            raise ToolError(
                process.tool, f"exited with status {process.popen.returncode} before ready", process.log_path
            )
        try:
            with _NO_PROXY.open(url, timeout=2.0) as response:
                if response.status == 200:
                    return time.monotonic() - process.started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            process.stop()
            raise ToolError(process.tool, f"not ready at {url} within {timeout:g} s", process.log_path)
        time.sleep(poll)


class JobWorker:
    """A tool kept running between jobs: one JSON line per job on its stdin, the outcome in a done file.

    Importing a tool (lighteval, vLLM) costs more than a tiny job, so a lane keeps one process per tool.
    ``submit`` writes the job, waits for the ``done`` file the tool writes atomically and returns its
    content. A worker that dies or outlives ``timeout`` is stopped and the job is a ``ToolError`` with
    the log tail; the next job starts a fresh worker.
    """

    def __init__(
        self, tool: str, command: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.tool = tool
        self.command = tuple(command)
        self.log_path = log_path
        self.env = env
        self.process: ToolProcess | None = None

    def start(self) -> None:
        """Start the tool now (its import then overlaps with other work), unless it is running."""
        if self.process is None or not self.process.alive():
            self.process = ToolProcess.start(
                self.tool, self.command, self.log_path, self.env, stdin_pipe=True
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5.0)
            self.process = None

    def submit(self, request: Mapping[str, object], done: Path, timeout: float, label: str) -> dict[str, Any]:
        done.unlink(missing_ok=True)
        self.start()
        assert self.process is not None
        assert self.process.popen.stdin is not None
        started = time.monotonic()
        try:
            self.process.popen.stdin.write((json.dumps({**request, "done": str(done)}) + "\n").encode())
            self.process.popen.stdin.flush()
        except OSError:
            self.stop()
            raise ToolError(label, f"the {self.tool} worker is gone", self.log_path) from None
        while not done.exists():
            if not self.process.alive():
                code = self.process.popen.returncode
                self.stop()
                raise ToolError(label, f"the {self.tool} worker exited with status {code}", self.log_path)
            if time.monotonic() - started > timeout:
                self.stop()
                raise ToolError(label, f"timed out after {timeout:g} s", self.log_path)
            time.sleep(0.1)
        outcome: dict[str, Any] = json.loads(done.read_text(encoding="utf-8"))
        return outcome

    def __enter__(self) -> JobWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
