"""No process outlives a run, however the run ends: SIGTERM, SIGINT, or SIGKILL of pytest itself.

An inner pytest (pytester) starts a real ``ToolProcess`` from a session fixture, as the served-model
fixtures start vLLM: a Python stand-in that starts a grandchild in its process group (as the server
starts its engine) and sleeps, while the test sleeps too. The outer test ends the inner pytest by a
signal and checks, through ``/proc``, that no process carrying the run's environment marker is left:
the tool, its grandchild, the watchdog, pytest. On SIGTERM and SIGINT the fixture's finalizer must
run (an orderly stop, as a server gets); on SIGKILL nothing in pytest runs, and the kernel's
parent-death signal and the watchdog must end the tools. Under xdist (``-n 1``) the signal goes to
the controller and the tools belong to the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from lane_run import pid_alive, processes_with

from quantgate.runners import process as process_module
from quantgate.runners.process import ToolProcess, run_tool

REPO = Path(__file__).resolve().parents[1]

INNER_CONFTEST = """
import signal

pytest_plugins = ["plugins.signals"]
# A shell that starts a job in the background leaves SIGINT ignored, and Python then keeps it so;
# pytest's Ctrl-C handling needs the default back.
signal.signal(signal.SIGINT, signal.default_int_handler)
"""

INNER_TEST = """
import os
import sys
import time
from pathlib import Path

import pytest

from quantgate.runners.process import ToolProcess

OUT = Path(os.environ["QG_ORPHAN_OUT"])
TOOL = '''
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(str(child.pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
'''


@pytest.fixture(scope="session")
def tool():
    grandchild = OUT / "grandchild.pid"
    command = [sys.executable, "-c", TOOL, str(grandchild)]
    process = ToolProcess.start("stand-in server", command, OUT / "tool.log")
    try:
        deadline = time.monotonic() + 30
        while not grandchild.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        (OUT / "pids.tmp").write_text(f"{process.pid} {grandchild.read_text()}")
        (OUT / "pids.tmp").rename(OUT / "pids")
        yield process
    finally:
        process.stop(grace=5.0)
        (OUT / "stopped").write_text("stopped")


def test_runs_until_ended(tool):
    time.sleep(600)
"""


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("sig", "xdist"),
    [
        pytest.param(signal.SIGTERM, False, id="SIGTERM"),
        pytest.param(signal.SIGINT, False, id="SIGINT"),
        pytest.param(signal.SIGKILL, False, id="SIGKILL"),
        # A busy worker is interrupted by execnet 5 s after its controller ended or died.
        pytest.param(signal.SIGTERM, True, id="SIGTERM-xdist", marks=pytest.mark.slow),
        pytest.param(signal.SIGKILL, True, id="SIGKILL-xdist", marks=pytest.mark.slow),
    ],
)
def test_no_process_outlives_the_run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sig: signal.Signals,
    xdist: bool,
) -> None:
    marker = f"QG_ORPHAN_RUN={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("=", 1))
    monkeypatch.setenv("QG_ORPHAN_OUT", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO)]))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TEST)
    pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider -p no:randomly -p no:benchmark -p no:hypothesispytest\n"
    )
    output = tmp_path / "inner.out"
    started = time.monotonic()
    with output.open("wb") as out:
        inner = pytester.popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "test_inner.py",
                *(["-n", "1"] if xdist else ["-p", "no:xdist"]),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = wait_for(lambda: (tmp_path / "pids").exists() or inner.poll() is not None, timeout=25)
        assert ready, "the inner run started no tool in 25 s:\n" + output.read_text()
        assert inner.poll() is None, "the inner run ended early:\n" + output.read_text()
        tool, grandchild = (int(pid) for pid in (tmp_path / "pids").read_text().split())
        assert pid_alive(tool)
        assert pid_alive(grandchild)
        assert processes_with(marker), "the marker does not reach the run's processes"
        inner.send_signal(sig)
        code = inner.wait(timeout=20)
        gone = wait_for(lambda: not processes_with(marker), timeout=25 if xdist else 8)
        assert gone, f"left behind after {sig.name}: {processes_with(marker)}\n" + output.read_text()
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    assert not pid_alive(tool)
    assert not pid_alive(grandchild)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        # Nothing in a SIGKILLed pytest runs; an xdist worker that lost its controller is interrupted
        # by execnet (SIGINT to itself, 5 s later), so its fixtures stop their tools.
        assert (tmp_path / "stopped").exists() == xdist
    else:
        assert code == pytest.ExitCode.INTERRUPTED, output.read_text()
        assert (tmp_path / "stopped").exists(), "the session fixture's finalizer did not run"
    print(f"{sig.name}{' (xdist)' if xdist else ''}: {time.monotonic() - started:.1f} s")


@pytest.mark.skipif(process_module._setpriv() is None, reason="no setpriv --pdeathsig (Linux only)")
def test_a_tool_runs_with_the_parent_death_signal_and_logs_its_own_command(tmp_path: Path) -> None:
    code = """
        import ctypes, signal
        value = ctypes.c_int()
        ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(value))  # PR_GET_PDEATHSIG
        print("pdeathsig", signal.Signals(value.value).name)
    """
    command = [sys.executable, "-c", textwrap.dedent(code)]
    process = ToolProcess.start("stand-in", command, tmp_path / "log.txt")
    try:
        assert process.command == tuple(command)
        assert process.popen.wait(timeout=30) == 0
    finally:
        process.stop(grace=2.0)
    log = (tmp_path / "log.txt").read_text()
    assert "pdeathsig SIGKILL" in log
    assert "setpriv" not in log.splitlines()[0], "the log shows the tool's own command"
    run_tool("stand-in", command, tmp_path / "again.txt", timeout=30)
    assert "pdeathsig SIGKILL" in (tmp_path / "again.txt").read_text()
