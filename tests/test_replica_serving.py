"""Replicas of one served model through the pipeline: each is served at its own tensor-parallel size,
logs to its own file and fails on its own.

No GPU here: a stand-in for CUDA vLLM's ``vllm`` entry point (named as such) sits in the vllm
environment's ``bin``. It is a real process that parses the flags the pipeline passes, records them,
answers ``/health`` and refuses requests without the server's key; on device 0 it crashes at start
(a replica whose GPU is broken). Everything on our side (pipeline, server runner, lease callbacks) is
the real code.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from stand_in_server import SERVE_UNTIL_STOPPED

from quantgate import paths
from quantgate.devices.leases import Lease
from quantgate.envs import Envs
from quantgate.kinds import load_kind
from quantgate.matrix import MatrixCell, expand
from quantgate.pipeline import Pipeline
from quantgate.runners.process import ToolError

SERVED = "Llama-70B/int4-w4a16/h100/tp1"

STAND_IN = (
    """
    import argparse, http.server, json, os, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("model")
    for flag in ("--host", "--port", "--served-model-name", "--tensor-parallel-size"):
        parser.add_argument(flag)
    args, _ = parser.parse_known_args()
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    with open(os.path.join(os.environ["STAND_IN_RECORD"], devices + ".json"), "w") as handle:
        json.dump({"argv": sys.argv[1:], "devices": devices}, handle)
    if devices.split(",")[0] == "0":
        print("RuntimeError: CUDA error: an illegal memory access was encountered"); sys.exit(1)
    key = os.environ.get("VLLM_API_KEY", "")
"""
    + SERVE_UNTIL_STOPPED
)


def _replicas() -> tuple[MatrixCell, MatrixCell, MatrixCell]:
    """Two accuracy cells of one of the served model's own-TP replicas, and one of its wider replica."""
    cells = [c for c in expand(kind="accuracy") if c.served_model == SERVED]
    own = sorted((c for c in cells if c.replica_tp is None), key=lambda c: c.cell_id)
    wide = [c for c in cells if c.replica_tp is not None]
    assert wide
    jobs: dict[str, list[MatrixCell]] = {}
    for cell in own:
        jobs.setdefault(cell.job, []).append(cell)
    (first, second, *_) = max(jobs.values(), key=len)
    return first, second, wide[0]


def _lease(cell: MatrixCell, first: int) -> Lease:
    devices = tuple(range(first, first + cell.requirement.count))
    return Lease(cell.job, "gw0", devices, cell.requirement.memory_gb, False, 0.9)


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    bin_dir = tmp_path / "envs" / "vllm" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").touch()
    vllm = bin_dir / "vllm"
    vllm.write_text(f"#!{sys.executable}\n" + textwrap.dedent(STAND_IN))
    vllm.chmod(0o755)
    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("STAND_IN_RECORD", str(record))
    kind = load_kind(paths.kind_file("gpu"))
    kind = kind.model_copy(update={"server": kind.server.model_copy(update={"ready_timeout_s": 30.0})})
    made = Pipeline(kind, Envs(tmp_path / "envs"), tmp_path / "work", baselines=tmp_path / "baselines")
    yield made
    made.close()


def test_each_replica_is_served_at_its_own_tensor_parallel_size(pipeline: Pipeline) -> None:
    own, _, wide = _replicas()
    assert wide.replica_tp is not None
    for cell, first in ((own, 0), (wide, 4)):
        command = pipeline.server(cell, _lease(cell, first)).spec.command(8000)
        at = command.index("--tensor-parallel-size")
        assert command[at + 1] == str(cell.requirement.count)
        # one checkpoint and one served name: only the devices and their number differ
        assert command[command.index("--served-model-name") + 1] == SERVED.replace("/", "__")
    assert wide.requirement.count == wide.replica_tp > own.requirement.count == 1


def test_replicas_log_and_fail_each_on_their_own(pipeline: Pipeline, tmp_path: Path) -> None:
    """The own-TP replica's GPU crashes its server; the wider replica of the same served model, on the
    same worker and work directory, starts its own server (at its TP) and logs to its own file."""
    own, other, wide = _replicas()
    broken, healthy = _lease(own, 0), _lease(wide, 4)
    with pytest.raises(ToolError) as first:
        pipeline.serve(own, broken)
    with pytest.raises(ToolError) as again:
        pipeline.serve(other, broken)  # the replica's later cells fail with its error, no restart
    assert again.value is first.value
    server = pipeline.serve(wide, healthy)
    assert server.alive()
    assert pipeline.serve(wide, healthy) is server
    started = json.loads((tmp_path / "record" / "4,5,6,7.json").read_text())
    assert started["argv"][started["argv"].index("--tensor-parallel-size") + 1] == str(wide.replica_tp)
    logs = tmp_path / "work" / "logs"
    own_log, wide_log = (logs / f"serve-{c.job.replace('/', '__')}.log" for c in (own, wide))
    assert "illegal memory access" in own_log.read_text()
    assert "illegal memory access" not in wide_log.read_text()
    assert not (logs / f"serve-{SERVED.replace('/', '__')}.log").exists()
    healthy.run_callbacks()  # the lease's release stops its job's server
    assert not server.alive()
