"""The GPU and matrix plugins through pytest itself (pytester), on declared inventories.

A reduced catalog (Qwen-1.5B and Llama-70B, aime24 and gsm8k, two workloads) keeps the matrix small:
64 cells per GPU kind in 8 served models. Toy suites record, from inside each test body, the
``CUDA_VISIBLE_DEVICES`` they receive; runs that depend on it go through ``runpytest_subprocess``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_nvml import H100, fake_nvml

from plugins import PLANNING_PLUGINS

REPO = Path(__file__).resolve().parents[1]
H100_CELLS = 64

TOY_SUITE = """
import json, os, time
import pytest

_started = set()


def _write(**row):
    with open(os.environ["TOY_LOG"], "a") as handle:
        handle.write(json.dumps(row) + "\\n")


@pytest.fixture
def served(qg_lease):
    # what a served-model fixture does: start once per served model, stop in on_release
    if qg_lease.job not in _started:
        _started.add(qg_lease.job)
        devices = list(qg_lease.devices)
        _write(event="start", served=qg_lease.job, devices=devices, t=time.time(),
               cvd=os.environ["CUDA_VISIBLE_DEVICES"])
        qg_lease.on_release(lambda: _write(event="stop", served=qg_lease.job, devices=devices, t=time.time()))
    return qg_lease


def _cell(cell, devices):
    start = time.time()
    if os.environ.get("TOY_KILL_AT") == cell.cell_id:  # a runner killed at its limit (stand-in)
        os.kill(os.getpid(), 9)
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
    _write(event="cell", cell=cell.cell_id, served=cell.served_model, count=cell.requirement.count,
           gpu=cell.gpu, devices=devices, cvd=os.environ.get("CUDA_VISIBLE_DEVICES"),
           order=os.environ.get("CUDA_DEVICE_ORDER"), worker=os.environ.get("PYTEST_XDIST_WORKER", "main"),
           start=start, end=time.time())


def test_accuracy(qg_accuracy_cell, served, qg_devices):
    _cell(qg_accuracy_cell, qg_devices)


def test_performance(qg_performance_cell, served, qg_devices):
    _cell(qg_performance_cell, qg_devices)


def test_plain():
    pass
"""


def _reduced_catalog(directory: Path) -> Path:
    shutil.copytree(REPO / "suites" / "catalog", directory)
    keep = {
        "models.yaml": ("models", {"Qwen-1.5B", "Llama-70B"}),
        "benchmarks.yaml": ("benchmarks", {"aime24", "gsm8k"}),
        # rag, not large-rag: a 70B large-rag capacity search plans 2-3 h, which splits 70B INT4 into
        # replica jobs (tests/test_replica_plugin.py); these tests keep one job per served model.
        "workloads.yaml": ("workloads", {"instruction-following", "rag"}),
    }
    for name, (section, keys) in keep.items():
        doc = yaml.safe_load((directory / name).read_text())
        doc[section] = {k: v for k, v in doc[section].items() if k in keys}
        (directory / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


@pytest.fixture(scope="module")
def reduced_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _reduced_catalog(tmp_path_factory.mktemp("catalog") / "catalog")


@pytest.fixture
def gate(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, reduced_catalog: Path
) -> pytest.Pytester:
    """A project with the two plugins, a toy suite, and the reduced catalog."""
    monkeypatch.setenv("QUANTGATE_CATALOG", str(reduced_catalog))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO)]))
    monkeypatch.setenv("TOY_LOG", str(pytester.path / "log.jsonl"))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeconftest(f"pytest_plugins = {list(PLANNING_PLUGINS)!r}\n")
    pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider -p no:randomly -p no:hypothesispytest -p no:benchmark\n"
        "filterwarnings = error\n"
    )
    pytester.makepyfile(test_toy=TOY_SUITE)
    return pytester


def _log(pytester: pytest.Pytester, event: str) -> list[dict[str, Any]]:
    path = pytester.path / "log.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r["event"] == event]


def _coverage(pytester: pytest.Pytester) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((pytester.path / ".quantgate" / "coverage.json").read_text())
    return doc


def _collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line and not line.startswith(" ")]


Rows = list[dict[str, Any]]


def _check_devices(cells: Rows, starts: Rows, stops: Rows) -> None:
    """Disjoint, contiguous, one worker per served model, released before anyone else uses a GPU."""
    by_served: dict[str, set[tuple[str, str]]] = {}
    for c in cells:
        devices = [int(d) for d in c["cvd"].split(",")]
        assert devices == c["devices"]
        assert c["order"] == "PCI_BUS_ID"
        assert len(devices) == c["count"]
        assert devices == list(range(devices[0], devices[0] + c["count"])), "not contiguous"
        by_served.setdefault(c["served"], set()).add((c["worker"], c["cvd"]))
    assert all(len(v) == 1 for v in by_served.values()), "a served model moved between workers or devices"
    for a, b in itertools.combinations(cells, 2):
        if a["served"] != b["served"] and a["start"] < b["end"] and b["start"] < a["end"]:
            assert not set(a["devices"]) & set(b["devices"]), (a["cell"], b["cell"])
    stop_at = {x["served"]: x["t"] for x in stops}
    held = {s["served"]: (s["t"], stop_at[s["served"]], set(s["devices"])) for s in starts}
    assert set(held) == set(by_served)
    for (a, (a0, a1, da)), (b, (b0, b1, db)) in itertools.combinations(held.items(), 2):
        if da & db:
            assert a1 <= b0 or b1 <= a0, f"{a} and {b} held GPU {sorted(da & db)} at the same time"


# What ``pytest OPTION`` lists, in this order: the markers with their signatures, and each flag's help
# shared with its ini key.
LISTINGS = {
    "--markers": [
        "@pytest.mark.a6000: needs an NVIDIA RTX A6000 (48 GiB, compute capability 8.6)*",
        "@pytest.mark.h100: needs an NVIDIA H100 80GB (80 GiB, compute capability 9.0)*-m h100",
        "@pytest.mark.cpu: runs on the CPU lane with no GPU visible*",
        "@pytest.mark.gpu(kind, count=1, memory_gb=0.0): needs `count` adjacent GPUs of `kind`*",
    ],
    "--help": [
        "*--qg-gpus=SPEC*GPU inventory to place tests on*",
        "*--qg-plan=FILE*",
        "*--qg-shard=K/N*",
        "*--qg-allow-empty*",
        "*--qg-coverage=FILE*",
        "*qg_gpus (string):*GPU inventory to place tests on*",
        "*qg_allow_empty (bool):*",
        "*qg_coverage (string):*",
    ],
}


@pytest.mark.parametrize("option", LISTINGS)
def test_markers_and_help_are_listed(gate: pytest.Pytester, option: str) -> None:
    gate.runpytest(option).stdout.fnmatch_lines(LISTINGS[option])


def test_every_kind_has_a_marker(gate: pytest.Pytester) -> None:
    result = gate.runpytest("--markers")
    for kind in ("a100", "h200", "l40s"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{kind}: *"])


def test_minus_m_selects_exactly_one_kind(gate: pytest.Pytester) -> None:
    everything = _collected(gate.runpytest("--collect-only", "-q", "--qg-gpus", "none"))
    h100 = _collected(gate.runpytest("--collect-only", "-q", "-m", "h100", "--qg-gpus", "none"))
    assert len(everything) == 5 * H100_CELLS + 1
    assert len(h100) == H100_CELLS
    assert set(h100) == {n for n in everything if "-h100-" in n}
    assert "test_toy.py::test_accuracy[Llama-70B-int4-w4a16-h100-aime24]" in h100
    assert "test_toy.py::test_performance[Qwen-1.5B-bf16-h100-single-stream-rag]" in h100


class TestStrictMarkers:
    def test_unknown_keyword_is_a_collection_error_naming_it(self, gate: pytest.Pytester) -> None:
        gate.makepyfile(
            test_marked="import pytest\n\n@pytest.mark.gpu(kind='h100', cont=2)\ndef test_x():\n    pass\n"
        )
        result = gate.runpytest("test_marked.py", "--qg-gpus", "h100:2")
        assert result.ret == pytest.ExitCode.INTERRUPTED
        result.stdout.fnmatch_lines(
            ["*gpu marker got unknown keyword argument 'cont' (allowed: kind, count, memory_gb)"]
        )

    @pytest.mark.parametrize(
        ("mark", "message"),
        [
            ("gpu(kind='b200')", "gpu marker kind must be one of a6000, a100, h100, h200, l40s, got 'b200'"),
            ("gpu(kind='h100', count=0)", "gpu marker count must be a positive integer, got 0"),
            ("gpu('h100', 2, 10, 4)", "gpu marker takes at most 3 arguments"),
            ("gpu('h100', kind='h100')", "gpu marker got 'kind' twice"),
            ("h100(2)", "the h100 marker takes no arguments"),
        ],
    )
    def test_bad_arguments(self, gate: pytest.Pytester, mark: str, message: str) -> None:
        gate.makepyfile(test_marked=f"import pytest\n\n@pytest.mark.{mark}\ndef test_x():\n    pass\n")
        result = gate.runpytest("test_marked.py", "--qg-gpus", "h100:2")
        assert result.ret == pytest.ExitCode.INTERRUPTED
        result.stdout.fnmatch_lines([f"*{message}*"])

    def test_bad_mark_on_a_parameter_errors_that_test(self, gate: pytest.Pytester) -> None:
        gate.makepyfile(
            test_marked="import pytest\n\n"
            "@pytest.mark.parametrize('x', [1, pytest.param(2, marks=pytest.mark.gpu(kind='h100', cnt=1))])\n"
            "def test_x(x):\n    pass\n"
        )
        result = gate.runpytest("test_marked.py", "--qg-gpus", "h100:2")
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(["*test_x?2?: gpu marker got unknown keyword argument 'cnt'*"])


def test_gpu_marked_test_gets_its_devices_and_the_environment_is_restored(
    gate: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "sentinel")
    gate.makepyfile(
        test_marked="import os, pytest\n\n"
        "@pytest.mark.gpu(kind='a6000', count=2)\n"
        "def test_two(qg_devices):\n"
        "    assert qg_devices == [2, 3]\n"  # h100 0-1 first, then a6000 2-5
        "    assert os.environ['CUDA_VISIBLE_DEVICES'] == '2,3'\n\n"
        "@pytest.mark.cpu\n"
        "def test_cpu(qg_devices):\n"
        "    assert qg_devices == [] and os.environ['CUDA_VISIBLE_DEVICES'] == ''\n\n"
        "@pytest.mark.h100\n"
        "def test_kind_alone(qg_devices):\n"
        "    assert os.environ['CUDA_VISIBLE_DEVICES'] == str(qg_devices[0])\n\n"
        "@pytest.mark.gpu(kind='h100', count=4)\n"
        "def test_too_big():\n    pass\n"
    )
    result = gate.runpytest("test_marked.py", "--qg-gpus", "h100:2,a6000:4", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*needs 4x h100; the inventory (2x h100 (0-1), 4x a6000 (2-5)*) has 2"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "sentinel"


@pytest.mark.slow
def test_eight_h100_under_xdist(gate: pytest.Pytester) -> None:
    """-n 3: every served model on one worker; sets disjoint while held; multi-GPU sets contiguous."""
    os.environ["TOY_SLEEP"] = "0.01"
    try:
        result = gate.runpytest_subprocess("-n", "3", "-v", "-m", "h100", "--qg-gpus", "h100:8")
    finally:
        del os.environ["TOY_SLEEP"]
    result.assert_outcomes(passed=H100_CELLS)
    result.stdout.fnmatch_lines(
        [
            "quantgate: GPU inventory: 8x h100 (0-7) from --qg-gpus h100:8; "
            "xdist: each served model on one worker, longest first",
            "scheduling tests via ServedModelScheduling",
        ]
    )
    cells = _log(gate, "cell")
    assert len(cells) == H100_CELLS
    _check_devices(cells, _log(gate, "start"), _log(gate, "stop"))
    sizes = {c["served"]: c["count"] for c in cells}
    assert sizes["Llama-70B/bf16/h100/tp4"] == 4
    assert sizes["Llama-70B/fp8-w8a8/h100/tp2"] == 2
    assert len({c["worker"] for c in cells}) >= 2
    coverage = _coverage(gate)
    assert coverage["counts"] == {"deselected": 4 * H100_CELLS, "passed": H100_CELLS}
    ran = [c for c in coverage["cells"] if c["status"] == "passed"]
    assert all(c["devices"] and c["gpu"] == "h100" for c in ran)
    durations = json.loads((gate.path / ".quantgate" / "durations.json").read_text())
    assert len(durations["cells"]) == H100_CELLS
    assert set(durations["served_models"]) == set(sizes)


@pytest.mark.slow
def test_mixed_inventory_under_xdist(gate: pytest.Pytester) -> None:
    result = gate.runpytest_subprocess("-n", "2", "-m", "h100 or a6000", "--qg-gpus", "h100:2,a6000:4", "-rs")
    # h100: 70B bf16 needs 4 of 2; a6000: fp8 is not the compute path (Qwen-1.5B and Llama-70B)
    result.assert_outcomes(passed=2 * H100_CELLS - 3 * 8, skipped=3 * 8)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]16] *not the scheme's compute path: FP8 W8A8 needs *a6000 has 8.6*"]
    )
    result.stdout.fnmatch_lines(["SKIPPED [[]8] *: needs 4x h100; the inventory (2x h100 (0-1), 4x a6000*"])
    cells = _log(gate, "cell")
    _check_devices(cells, _log(gate, "start"), _log(gate, "stop"))
    for c in cells:
        assert set(c["devices"]) <= ({0, 1} if c["gpu"] == "h100" else {2, 3, 4, 5})
    assert {c["cvd"] for c in cells if c["served"] == "Llama-70B/bf16/a6000/tp4"} == {"2,3,4,5"}


def test_four_a6000_in_one_process(gate: pytest.Pytester) -> None:
    result = gate.runpytest_subprocess("-m", "a6000", "--qg-gpus", "a6000:4")
    result.assert_outcomes(passed=H100_CELLS - 16, skipped=16)
    cells = _log(gate, "cell")
    assert {c["worker"] for c in cells} == {"main"}
    _check_devices(cells, _log(gate, "start"), _log(gate, "stop"))
    assert {c["served"]: c["cvd"] for c in cells}["Llama-70B/bf16/a6000/tp4"] == "0,1,2,3"


class TestFailClosed:
    def test_no_inventory_fails_the_session(self, gate: pytest.Pytester) -> None:
        result = gate.runpytest("-m", "h100", "--qg-gpus", "none")
        result.assert_outcomes(skipped=H100_CELLS)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(
            [
                "quantgate: GPU inventory: no GPU from --qg-gpus none",
                "quantgate: failing the session: all 64 selected matrix cells were skipped (64x no h100 in "
                "the inventory (no GPU, from --qg-gpus none)); failing closed. "
                "Pass --qg-allow-empty to accept a run in which no cell ran.",
            ]
        )
        coverage = _coverage(gate)
        assert coverage["schema_version"] == 1
        assert coverage["counts"] == {"deselected": 4 * H100_CELLS, "skipped": H100_CELLS}
        reasons = {c["reason"] for c in coverage["cells"] if c["status"] == "skipped"}
        assert any(r.startswith("no h100 in the inventory") for r in reasons)

    def test_allow_empty(self, gate: pytest.Pytester) -> None:
        result = gate.runpytest("-m", "h100", "--qg-gpus", "none", "--qg-allow-empty")
        assert result.ret == pytest.ExitCode.OK
        assert _coverage(gate)["counts"]["skipped"] == H100_CELLS

    def test_without_nvml_the_header_says_why(
        self, gate: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([], fail="Driver Not Loaded"))
        result = gate.runpytest("-m", "a100", "--qg-coverage", "cov.json")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(
            [
                "quantgate: GPU inventory: no GPU from NVML: cannot initialise: Driver Not Loaded",
                "*all 64 selected matrix cells were skipped "
                "(48x no a100 in the inventory (no GPU, from NVML); "
                "16x not the scheme's compute path*",
            ]
        )
        counts = json.loads((gate.path / "cov.json").read_text())["counts"]
        assert counts == {"deselected": 256, "skipped": 64}


def test_nvml_inventory_honours_cuda_visible_devices(
    gate: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([H100, H100, "NVIDIA GeForce RTX 4090"]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    result = gate.runpytest("-m", "h100", "-k", "Qwen-1.5B and bf16")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(
        [
            "quantgate: GPU inventory: 1x h100 (1), 1x unknown (NVIDIA GeForce RTX 4090) (2) from NVML "
            "(driver 550.54.15): restricted by CUDA_VISIBLE_DEVICES='1,2'; not in gpus.yaml, never used: *"
        ]
    )
    assert {c["cvd"] for c in _log(gate, "cell")} == {"1"}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2"


def test_plan_with_collect_only(gate: pytest.Pytester) -> None:
    args = ["--collect-only", "-q", "-m", "h100", "--qg-gpus", "h100:8", "-n", "4", "--qg-plan", "plan.json"]
    result = gate.runpytest(*args)
    result.stdout.fnmatch_lines(
        [
            "START*END*WORKER*DEVICES*SERVED MODEL*ITEMS*SHARE",
            "0:00:00 *Llama-70B/int4-w4a16/h100/tp1  8      alone",
            "* Llama-70B/bf16/h100/tp4        8      alone",
            "plan for 4 worker(s) on 8x h100 (0-7): makespan *, lower bound * 64 item(s) placed, 0 skipped",
            "plan written to plan.json",
        ]
    )
    plan = json.loads((gate.path / "plan.json").read_text())
    assert len(plan["entries"]) == H100_CELLS
    assert plan["makespan_s"] >= plan["lower_bound_s"] > 0
    big = {tuple(e["devices"]) for e in plan["entries"] if e["served_model"].startswith("Llama-70B/bf16")}
    assert big in ({(0, 1, 2, 3)}, {(4, 5, 6, 7)})
    assert _coverage(gate)["counts"] == {"collected": H100_CELLS, "deselected": 4 * H100_CELLS}


def test_shards_split_served_models_completely(gate: pytest.Pytester) -> None:
    everything = set(_collected(gate.runpytest("--collect-only", "-q", "--qg-gpus", "none")))
    shards: list[set[str]] = []
    homes: dict[str, set[int]] = {}
    for k in (1, 2, 3):
        shards.append(set(_collected(gate.runpytest("--collect-only", "-q", "--qg-shard", f"{k}/3"))))
        for cell in _coverage(gate)["cells"]:
            if cell["status"] == "collected":
                homes.setdefault(cell["served_model"], set()).add(k)
    assert set().union(*shards) == everything
    assert sum(len(s) for s in shards) == len(everything)
    assert len(homes) == 5 * 8
    assert all(len(v) == 1 for v in homes.values())
    assert min(len(s) for s in shards) > 0


def test_other_dist_modes_are_refused(gate: pytest.Pytester) -> None:
    result = gate.runpytest("--dist", "loadfile", "-m", "h100", "--qg-gpus", "h100:8")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "quantgate: --dist loadfile would spread the cells of one served model over several workers; "
            "leave --dist out (-n then keeps each served model on one worker) or pass --dist loadgroup"
        ]
    )


def test_a_broken_catalog_is_one_collection_error(
    gate: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUANTGATE_CATALOG", str(gate.path / "missing"))
    result = gate.runpytest("--qg-gpus", "none")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            f"quantgate: GPU inventory: no GPU from nothing (the catalog did not load): {gate.path}*",
            f"quantgate: {gate.path / 'missing'}: catalog directory not found (set QUANTGATE_CATALOG*",
        ]
    )
    assert "During handling" not in result.stdout.str()


@pytest.fixture
def no_env_leak() -> Iterator[None]:
    before = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    yield
    assert {k: os.environ.get(k) for k in before} == before


def test_in_process_runs_leave_the_environment_alone(gate: pytest.Pytester, no_env_leak: None) -> None:
    result = gate.runpytest("-m", "l40s", "-k", "Qwen and bf16", "--qg-gpus", "l40s:1")
    result.assert_outcomes(passed=8)


def _cells_by_status(pytester: pytest.Pytester) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for cell in _coverage(pytester)["cells"]:
        out.setdefault(str(cell["status"]), []).append(cell)
    return out


@pytest.mark.slow
def test_a_job_budget_defers_what_does_not_fit_and_a_gate_reads_it(gate: pytest.Pytester) -> None:
    """Learned 0.05 s per cell, a 1 s budget for 64 cells of 0.05 s: some run, the rest are deferred."""
    from quantgate.gate import decide

    os.environ["TOY_SLEEP"] = "0.05"
    try:
        first = gate.runpytest_subprocess("-m", "h100", "--qg-gpus", "h100:8")
        first.assert_outcomes(passed=H100_CELLS)
        result = gate.runpytest_subprocess("-m", "h100", "--qg-gpus", "h100:8", "--qg-budget", "1.5s")
    finally:
        del os.environ["TOY_SLEEP"]
    result.stdout.fnmatch_lines(["quantgate: job budget until *UTC"])
    assert result.ret == 0
    cells = _cells_by_status(gate)
    ran, deferred = cells.get("passed", []), cells.get("deferred", [])
    assert ran, cells.keys()
    assert deferred, cells.keys()
    assert len(ran) + len(deferred) == H100_CELLS
    assert deferred[0]["reason"].startswith("needs ~")
    closed = [c for c in deferred if c["reason"].startswith("the job budget closed at")]
    assert len(closed) == len(deferred) - 1
    assert _coverage(gate)["complete"] is True
    ids = {c["cell_id"] for c in ran + deferred}
    verdict = decide([gate.path / ".quantgate" / "coverage.json"], ids)
    assert not verdict.passed
    assert len(verdict.problems) == len(deferred)
    assert all(" deferred (" in p for p in verdict.problems)


def test_a_budget_that_fits_nothing_fails_closed(gate: pytest.Pytester) -> None:
    result = gate.runpytest_subprocess("-m", "h100", "--qg-gpus", "h100:8", "--qg-budget", "0")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*all 64 selected matrix cells were skipped (*longer than the whole job budget (0 s)*"]
    )
    assert set(_cells_by_status(gate)) == {"deferred", "deselected"}


def test_a_killed_job_leaves_the_verdicts_it_finished(gate: pytest.Pytester) -> None:
    """SIGKILL in the middle (a runner's limit): coverage names what finished and what did not run."""
    from quantgate.gate import decide

    plan = gate.runpytest("--collect-only", "-q", "-m", "h100", "--qg-gpus", "h100:8")
    order = [c["cell_id"] for c in _coverage(gate)["cells"] if c["status"] == "collected"]
    assert len(order) == H100_CELLS, plan.outlines[-3:]
    os.environ["TOY_KILL_AT"] = order[20]
    try:
        gate.runpytest_subprocess("-m", "h100", "--qg-gpus", "h100:8")
    finally:
        del os.environ["TOY_KILL_AT"]
    doc = _coverage(gate)
    assert doc["complete"] is False
    cells = _cells_by_status(gate)
    assert len(cells["passed"]) == 20
    assert len(cells["collected"]) + len(cells.get("None", [])) == H100_CELLS - 20
    verdict = decide([gate.path / ".quantgate" / "coverage.json"], order)
    assert verdict.problems[0] == "coverage.json: written by a job that did not finish (killed or crashed)"
    assert len(verdict.problems) == 1 + H100_CELLS - 20
    assert verdict.counts["passed"] == 20


@pytest.mark.slow
def test_with_a_history_changed_then_stalest_served_models_run_first(
    gate: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, reduced_catalog: Path, tmp_path: Path
) -> None:
    """A new INT8 checkpoint of Qwen-1.5B runs first, then Llama-70B FP8 (verdicts 5 days old), then the
    rest (1 day old); the cells carry their inputs into the coverage file and the history."""
    from datetime import UTC, datetime, timedelta

    from quantgate.verdicts import Outcome, save_verdicts, updated

    gate.runpytest_subprocess("-m", "h100", "--qg-gpus", "h100:8").assert_outcomes(passed=H100_CELLS)
    rows = [c for c in _coverage(gate)["cells"] if c["status"] == "passed"]
    assert {tuple(sorted(c["inputs"])) for c in rows} == {("checkpoint", "device", "settings", "tools")}
    now = datetime.now(UTC)
    history = {}
    for age, pick in ((5, lambda c: c["served_model"].startswith("Llama-70B/fp8")), (1, lambda c: True)):
        outcomes = [
            Outcome(c["node_id"], c["cell_id"], "passed", "", c["inputs"])
            for c in rows
            if pick(c) and c["node_id"] not in history
        ]
        history = updated(history, outcomes, now - timedelta(days=age))
    save_verdicts(gate.path / "verdicts.json", history)

    catalog = tmp_path / "catalog"
    shutil.copytree(reduced_catalog, catalog)
    models = yaml.safe_load((catalog / "models.yaml").read_text())
    repos = models["models"]["Qwen-1.5B"]["quantized_repos"]
    repos["int8-w8a8"] = repos["int8-w8a8"].replace("RedHatAI/", "neuralmagic/")
    (catalog / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    monkeypatch.setenv("QUANTGATE_CATALOG", str(catalog))
    result = gate.runpytest_subprocess(
        "--collect-only", "-q", "-m", "h100", "--qg-gpus", "h100:8", "--qg-history", "verdicts.json"
    )
    order = [line.split("[")[1].rstrip("]") for line in _collected(result)]
    assert len(order) == H100_CELLS
    served = list(dict.fromkeys(cell_id.split("-h100-")[0] for cell_id in order))
    assert served[:2] == ["Qwen-1.5B-int8-w8a8", "Llama-70B-fp8-w8a8"], served
    without = gate.runpytest_subprocess("--collect-only", "-q", "-m", "h100", "--qg-gpus", "h100:8")
    assert [line.split("[")[1].rstrip("]") for line in _collected(without)] != order


@pytest.mark.slow
def test_fresh_verdicts_are_not_run_again(gate: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """--qg-fresh 3: cells verified green a day ago on the same inputs are deferred with the reason, the
    rest run; with a changed checkpoint or a verdict older than the limit a cell runs; the gate accepts
    the deferred ones on the history."""
    from datetime import UTC, datetime, timedelta

    from quantgate.gate import decide
    from quantgate.verdicts import Outcome, load_verdicts, save_verdicts, updated

    gate.runpytest_subprocess("-m", "h100", "--qg-gpus", "h100:8").assert_outcomes(passed=H100_CELLS)
    rows = [c for c in _coverage(gate)["cells"] if c["status"] == "passed"]
    now = datetime.now(UTC)
    fresh = [Outcome(c["node_id"], c["cell_id"], "passed", "", c["inputs"]) for c in rows[:10]]
    old = [Outcome(c["node_id"], c["cell_id"], "passed", "", c["inputs"]) for c in rows[10:20]]
    changed = [
        Outcome(c["node_id"], c["cell_id"], "passed", "", {**c["inputs"], "checkpoint": "another"})
        for c in rows[20:25]
    ]
    history = updated(updated({}, fresh + changed, now - timedelta(days=1)), old, now - timedelta(days=4))
    save_verdicts(gate.path / "verdicts.json", history)
    result = gate.runpytest_subprocess(
        "-m", "h100", "--qg-gpus", "h100:8", "--qg-history", "verdicts.json", "--qg-fresh", "3"
    )
    result.assert_outcomes(passed=H100_CELLS - 10, skipped=10)
    deferred = {c["cell_id"]: c["reason"] for c in _coverage(gate)["cells"] if c["status"] == "deferred"}
    assert set(deferred) == {o.cell_id for o in fresh}
    assert all(r.startswith("verified 1.0 days ago on the same inputs") for r in deferred.values()), deferred
    cells = [c["cell_id"] for c in rows]
    verdict = decide(
        [gate.path / ".quantgate" / "coverage.json"],
        cells,
        history=load_verdicts(gate.path / "verdicts.json"),
    )
    assert verdict.passed, verdict.summary()
    history = updated({}, [Outcome(c["node_id"], c["cell_id"], "passed", "", c["inputs"]) for c in rows], now)
    save_verdicts(gate.path / "verdicts.json", history)
    idle = gate.runpytest_subprocess(
        "-m", "h100", "--qg-gpus", "h100:8", "--qg-history", "verdicts.json", "--qg-fresh", "3"
    )
    idle.assert_outcomes(skipped=H100_CELLS)
    assert idle.ret == pytest.ExitCode.OK, "a night with every cell fresh is not an empty run"
    bad = gate.runpytest_subprocess("-m", "h100", "--qg-gpus", "h100:8", "--qg-fresh", "3")
    assert "--qg-fresh needs --qg-history" in bad.stderr.str()
