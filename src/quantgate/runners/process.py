"""Start, watch and stop tool subprocesses so that none outlives its owner.

Each tool starts in its own session (process group); stopping it signals the whole group, SIGTERM
first and SIGKILL after a grace period, so a server's engine and worker processes go with it. Output
goes to a log file whose tail is attached to every failure.

An owner that dies without stopping its tools (SIGKILL, a crash) still takes them along: on Linux
each tool runs under ``setpriv --pdeathsig KILL``, so the kernel kills it with its parent, and a
watchdog process (one per owner, in its own session) signals every group the owner had not stopped
once the owner's end of a pipe closes. The parent-death signal reaches only the tool itself; the
watchdog also reaches its children (vLLM's EngineCore outlives a SIGKILLed API server, vllm#55510).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_TAIL_LINES = 40
WATCHDOG_GRACE_S = 10.0
_PDEATHSIG = ("--pdeathsig", "KILL", "--")
# Readiness probes go straight to loopback, never through a proxy from the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


# The variable a client tool finds the server's API key in: ``vllm bench serve`` sends it as a bearer
# token (vllm/benchmarks/lib/endpoint_request_func.py), and so does quantgate's lighteval worker
# (drivers/lighteval_worker.py). It reaches a tool in its environment, never on its command line.
CLIENT_KEY_ENV = "OPENAI_API_KEY"


def bearer(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header a client of our server sends (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


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
                    _argv(command, env, cwd),
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
        _WATCHDOG.track(popen.pid)
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
                    _WATCHDOG.untrack(self.popen.pid)
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


def _argv(command: Sequence[str], env: Mapping[str, str] | None, cwd: Path | None) -> list[str]:
    """The argv to exec: ``command`` under ``setpriv --pdeathsig KILL`` where that can run.

    The parent-death signal fires when the *thread* that started the tool exits: a thread that starts
    a tool must outlive it (the quantize pool thread waits for its tool). A command that cannot be
    found runs bare, so that it fails to start the way it would without setpriv.
    """
    setpriv = _setpriv()
    if setpriv is None:
        return list(command)
    name = command[0]
    if os.sep in name:
        path = os.path.join(cwd or "", name)
        found = os.path.isfile(path) and os.access(path, os.X_OK)
    else:
        found = shutil.which(name, path=os.pathsep.join(os.get_exec_path(env))) is not None
    return [setpriv, *_PDEATHSIG, *command] if found else list(command)


@functools.cache
def _setpriv() -> str | None:
    """``setpriv`` if it can set the parent-death signal here (Linux, util-linux 2.33 or later)."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return None
    try:
        probe = subprocess.run(
            [setpriv, *_PDEATHSIG, setpriv, "--version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return setpriv if probe.returncode == 0 else None


class _Watchdog:
    """This process's watchdog: told of each tool group started and stopped (``+pgid``/``-pgid``
    lines on a pipe), it stops the groups still listed when the pipe closes, that is when this process
    has exited, however it ended. Started on first use; a forked child starts its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._fd = -1
        self._popen: subprocess.Popen[bytes] | None = None

    def track(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
            if self._popen is None or self._popen.poll() is not None:
                self._start()  # sends every group, this one included
            else:
                self._send(f"+{pgid}\n")

    def untrack(self, pgid: int) -> None:
        with self._lock:
            if pgid in self._groups:
                self._groups.discard(pgid)
                self._send(f"-{pgid}\n")

    def _start(self) -> None:
        self._close()
        read, write = os.pipe()
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-c", "from quantgate.runners.process import watch; watch()"],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError:
            os.close(write)
            return  # no watchdog: the parent-death signal still ends the tools themselves
        finally:
            os.close(read)
        self._fd = write
        self._send("".join(f"+{pgid}\n" for pgid in self._groups))

    def _send(self, text: str) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._fd, text.encode())

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """At exit: close the pipe and give the watchdog a moment to finish (reaped, not a zombie)."""
        self._close()
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=1.0)

    def forget(self) -> None:
        """In a forked child: the parent's watchdog and groups are not the child's."""
        self._lock = threading.Lock()
        self._groups = set()
        self._close()
        self._popen = None


_WATCHDOG = _Watchdog()
atexit.register(_WATCHDOG.close)
os.register_at_fork(after_in_child=_WATCHDOG.forget)


def watch(grace: float = WATCHDOG_GRACE_S) -> None:
    """The watchdog's main loop (stdin: the owner's pipe). At its end, every group still listed gets
    SIGTERM, and SIGKILL after ``grace`` seconds. Groups found empty are dropped as they end, so that
    an id the system reuses later is never signalled."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    pending = b""
    while True:
        if select.select([0], [], [], 1.0)[0]:
            data = os.read(0, 4096)
            if not data:
                break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                pgid = int(line)
                if pgid > 0:
                    groups.add(pgid)
                else:
                    groups.discard(-pgid)
        groups = {pgid for pgid in groups if _group_alive(pgid)}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while groups and time.monotonic() < deadline:
            time.sleep(0.05)
            groups = {pgid for pgid in groups if _group_alive(pgid)}


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
            with NO_PROXY.open(url, timeout=2.0) as response:
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
