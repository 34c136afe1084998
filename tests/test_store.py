"""Per-item references: validation, provenance refusal, atomic writes under SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgate.errors import QuantgateError
from quantgate.store import check_comparable, load_reference, make_reference, save_reference

CELL = {"model": "tiny-llama", "scheme": "bf16", "gpu": "cpu", "benchmark": "addition"}
PROVENANCE = {"model_sha256": "abc", "vllm": "0.32.0", "temperature": "0.6", "top_p": "0.95", "seed": "0"}


def reference(correct: int = 3, **provenance: str):  # type: ignore[no-untyped-def]
    items = [{"item": f"q{i}", "samples": 4, "correct": correct} for i in range(5)]
    return make_reference(CELL, {**PROVENANCE, **provenance}, items)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    assert save_reference(path, reference()).startswith("new reference")
    loaded = load_reference(path)
    assert loaded.counts() == {f"q{i}": (4, 3) for i in range(5)}


def test_update_with_other_provenance_says_so(tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    save_reference(path, reference())
    note = save_reference(path, reference(vllm="0.33.0"))
    assert note == f"updated reference {path} with different provenance: vllm"


def test_comparison_across_provenance_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QuantgateError, match=r"provenance: .*vllm: stored '0.32.0', now '0.33.0'"):
        check_comparable(tmp_path / "ref.json", reference().provenance, {**PROVENANCE, "vllm": "0.33.0"})
    check_comparable(tmp_path / "ref.json", reference().provenance, {**PROVENANCE, "seed": "1"})


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        pytest.param(lambda d: d.update(schema_version=2), "schema_version", id="version"),
        pytest.param(lambda d: d.update(kind="other"), "kind", id="kind"),
        pytest.param(lambda d: d["items"][0].update(correct=9), "items[0]", id="correct>samples"),
        pytest.param(lambda d: d["items"][1].update(samples=-1), "items[1].samples", id="negative"),
        pytest.param(lambda d: d["items"].append(dict(d["items"][0])), "appears twice", id="duplicate"),
        pytest.param(lambda d: d["items"][0].update(output_tokens=float("nan")), "NaN", id="nan"),
        pytest.param(lambda d: d.update(items=[]), "items", id="empty"),
    ],
)
def test_bad_reference_names_the_field(tmp_path: Path, mutate, where: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ref.json"
    save_reference(path, reference())
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(QuantgateError) as info:
        load_reference(path)
    assert str(path) in str(info.value)
    assert where in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 64), st.integers(0, 64)), min_size=1, max_size=20))
def test_any_valid_counts_round_trip(
    tmp_path_factory: pytest.TempPathFactory, pairs: list[tuple[int, int]]
) -> None:
    items = [{"item": f"q{i}", "samples": n, "correct": min(c, n)} for i, (n, c) in enumerate(pairs)]
    path = tmp_path_factory.mktemp("ref") / "ref.json"
    save_reference(path, make_reference(CELL, PROVENANCE, items))
    assert load_reference(path).counts() == {d["item"]: (d["samples"], d["correct"]) for d in items}


WRITER = """
    import os, pathlib, sys, time
    sys.path.insert(0, {src!r})
    from quantgate.store import make_reference, save_reference
    real_fsync = os.fsync
    def slow_disk_fsync(fd):  # stands in for a slow disk, so that kills often land inside a write
        time.sleep(0.03)
        real_fsync(fd)
    os.fsync = slow_disk_fsync
    cell = {{"model": "m", "scheme": "bf16", "gpu": "cpu", "benchmark": "b"}}
    n = 0
    while True:
        n += 1
        items = [{{"item": f"q{{i}}", "samples": 8, "correct": n % 9}} for i in range(2000)]
        save_reference({path!r}, make_reference(cell, {{"run": f"{attempt}-{{n}}"}}, items))
        pathlib.Path({started!r}).touch()
"""


KILLS = 40


@pytest.mark.slow
def test_sigkill_during_updates_leaves_old_or_new_never_broken(tmp_path: Path) -> None:
    """Each writer replaces the file at least once, then is killed at a random point of its later updates."""
    path = tmp_path / "ref.json"
    started = tmp_path / "started"
    save_reference(path, make_reference(CELL, {"run": "0"}, [{"item": "q0", "samples": 8, "correct": 1}]))
    src = str(Path(__file__).resolve().parents[1] / "src")
    delays = random.Random(6).sample(range(0, 400, 5), KILLS)
    for attempt, delay_ms in enumerate(delays):
        started.unlink(missing_ok=True)
        code = textwrap.dedent(WRITER.format(src=src, path=str(path), attempt=attempt, started=str(started)))
        writer = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 120
        while not started.exists():
            assert writer.poll() is None, "the writer exited"
            assert time.monotonic() < deadline, "the writer never finished a first update"
            time.sleep(0.01)
        time.sleep(delay_ms / 1000)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        assert load_reference(path).provenance["run"].startswith(f"{attempt}-")
    torn_writes = list(tmp_path.glob(".ref.json.*.tmp"))
    print(f"{KILLS} kills, {len(torn_writes)} inside a write (temporary file left), file intact after each")
    assert torn_writes, "no kill landed inside a write: the test did not test anything"
