"""``quantgate compare``: pytest-benchmark files compared with the right direction per figure.

The files are made by ``quantgate.benchjson`` from real recorded ``vllm bench serve`` results
(``tests/data/bench``); the "slower" run is the same recorded results with their throughput figures
scaled, standing in for a slower build of the server.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from test_bench import compare as pytest_benchmark_compare
from test_bench import machine, recorded

from quantgate import benchjson
from quantgate.benchcompare import compare, load
from quantgate.cli import main

PLAIN = Path(__file__).parent / "data" / "results" / "pytest_benchmark.json"


def document(
    throughput_factor: float = 1.0, latency_factor: float = 1.0, repeats: tuple[int, ...] = (0, 1)
) -> dict[str, Any]:
    results = [result for repeat in repeats for result in recorded(repeat)]
    doc = benchjson.from_results(
        results,
        scheme="int8-w8a8",
        model="tiny-llama",
        machine=machine(),
        commit=benchjson.commit_info("abc"),
    )
    doc = copy.deepcopy(doc)
    for entry in doc["benchmarks"]:
        for key in ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput"):
            if key in entry["extra_info"]:
                entry["extra_info"][key] *= throughput_factor
        for key in ("mean", "median"):
            entry["stats"][key] *= latency_factor
    return doc


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_repeats_are_one_benchmark_and_every_figure_is_read(tmp_path: Path) -> None:
    loaded = load(write(tmp_path / "a.json", document()))
    assert sorted(loaded.figures) == [
        "vllm-bench-serve::multi-stream[random-64x32]",
        "vllm-bench-serve::server[random-64x32]",
        "vllm-bench-serve::single-stream[random-64x32]",
    ]
    assert len(loaded.figures["vllm-bench-serve::server[random-64x32]"]["request_goodput"]) == 2


def test_throughput_that_fell_is_a_regression_though_every_time_is_unchanged(tmp_path: Path) -> None:
    old = load(write(tmp_path / "old.json", document()))
    new = load(write(tmp_path / "new.json", document(throughput_factor=0.5)))
    changes = compare(old, new, threshold=0.05)
    worse = {(c.benchmark.split("::")[1], c.metric) for c in changes if c.regression}
    assert ("multi-stream[random-64x32]", "request_throughput") in worse
    assert ("server[random-64x32]", "request_goodput") in worse
    assert not [c for c in changes if c.metric in ("mean", "mean_ttft_ms") and c.regression]
    falls = [c.speedup for c in changes if c.metric == "output_throughput"]
    assert falls == pytest.approx([0.5] * 3)


def test_lower_latency_is_better_and_higher_throughput_is_better(tmp_path: Path) -> None:
    old = load(write(tmp_path / "old.json", document(repeats=(0,))))
    new = load(write(tmp_path / "new.json", document(1.25, 0.8, repeats=(0,))))
    changes = compare(old, new, metrics=("mean", "request_throughput"))
    assert {round(c.speedup or 0, 6) for c in changes} == {1.25}
    assert {c.verdict for c in changes} == {"pass"}


def test_single_figures_are_compared_exactly_and_the_command_says_so_by_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = write(tmp_path / "old.json", document(repeats=(0,)))
    assert main(["compare", str(old), str(old)]) == 0
    assert "no regression beyond 5% in" in capsys.readouterr().out
    slower = write(tmp_path / "slower.json", document(throughput_factor=0.9, repeats=(0,)))
    assert main(["compare", str(old), str(slower), "--fail-worse", "15%"]) == 0
    assert main(["compare", str(old), str(slower)]) == 1
    assert "**FAIL**" in capsys.readouterr().out
    fewer = document(repeats=(0,))
    fewer["benchmarks"] = [b for b in fewer["benchmarks"] if not b["name"].startswith("server")]
    assert main(["compare", str(old), str(write(tmp_path / "fewer.json", fewer))]) == 1
    assert "| vllm-bench-serve::server[random-64x32] | - | - | | | not in" in capsys.readouterr().out


def test_repeats_give_an_interval_a_clear_drop_fails_and_noise_is_inconclusive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = write(tmp_path / "old.json", document())
    halved = write(tmp_path / "halved.json", document(throughput_factor=0.5))
    assert main(["compare", str(old), str(halved), "--metric", "request_throughput"]) == 1
    capsys.readouterr()
    assert main(["compare", str(old), str(old), "--metric", "request_throughput"]) == 3
    out = capsys.readouterr().out
    assert "| inconclusive |" in out
    assert "x1.000 [" in out
    assert main(["compare", str(old), str(old), "--metric", "request_throughput", "--fail-worse", "70%"]) == 0


def test_a_plain_pytest_benchmark_file_compares_by_its_times(tmp_path: Path) -> None:
    changes = compare(load(PLAIN), load(PLAIN))
    assert {"mean", "ops"} <= {c.metric for c in changes}
    assert not [c for c in changes if c.regression]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(version="2.0.0"), "version"),
        (lambda d: d.update(benchmarks=[]), "benchmarks"),
        (
            lambda d: d["benchmarks"][1].update(fullname=d["benchmarks"][0]["fullname"]),
            "benchmarks[1].fullname",
        ),
        (lambda d: d["benchmarks"][0]["stats"].update(mean=-1.0), "benchmarks[0].stats.mean"),
        (
            lambda d: d["benchmarks"][2]["extra_info"].update(request_throughput="fast"),
            "benchmarks[2].extra_info",
        ),
    ],
)
def test_bad_files_are_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, field: str
) -> None:
    doc = document()
    edit(doc)
    bad = write(tmp_path / "bad.json", doc)
    assert main(["compare", str(bad), str(bad)]) == 2
    assert f"quantgate: {bad}: {field}" in capsys.readouterr().err


def test_pytest_benchmark_compare_accepts_what_quantgate_compare_reads(tmp_path: Path) -> None:
    old = write(tmp_path / "0001_old.json", document())
    new = write(tmp_path / "0002_new.json", document(throughput_factor=0.5))
    theirs = pytest_benchmark_compare(tmp_path, str(old), str(new))
    assert theirs.returncode == 0, theirs.stderr
    assert "multi-stream[random-64x32-r0]" in theirs.stdout
    assert "0001_old" in theirs.stdout
    assert "0002_new" in theirs.stdout
    assert main(["compare", str(old), str(new)]) == 1
