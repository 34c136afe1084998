"""The pipeline on a GPU kind without a GPU: stored BF16 references, per-GPU speed, contexts, timeouts.

No GPU is reachable here, so ``RecordedGpuBench`` stands in for ``vllm bench serve`` on a GPU server: it
answers each requested run with a real recorded result of the tool (``tests/data/bench``), its
throughput scaled by a factor the test chooses; a capacity search's step (the kind file's server
scenario) passes while its rate is at most ``CAPACITY`` x that factor. Everything after the tool
(figures per repeat, the searches, the stored BF16 speed reference, the judge with per-GPU figures, the
record and the report) is the real code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from statistics import geometric_mean
from typing import Any

import pytest

from quantgate import paths
from quantgate.catalog import load_catalog
from quantgate.devices.leases import Lease
from quantgate.envs import Envs
from quantgate.errors import QuantgateError
from quantgate.kinds import load_kind
from quantgate.matrix import MatrixCell, estimate_cell_seconds, expand
from quantgate.pipeline import Pipeline
from quantgate.pipeline.core import TIMEOUT_FACTOR, TIMEOUT_FLOOR_S, TIMEOUT_SLACK_S
from quantgate.report import write_report
from quantgate.runners.bench import BenchResult, BenchRun, read_bench_result
from quantgate.runners.capacity import SearchSettings, planned_searches
from quantgate.runners.probe import Rate

RECORDED = Path(__file__).parent / "data" / "bench"
# The stand-in server's capacity (req/s) at factor 1: a search step at a higher rate fails its limits.
CAPACITY = 6.0
# The stand-in server's probed rates: 8 streams of 256 tokens at 40 tokens/s each (start: 1.25 req/s).
PROBED = Rate(single_tps=40.0, batch_tps=320.0, streams=8, seconds=1.0)


class RecordedGpuBench:
    """Stand-in for the bench worker on a GPU machine: recorded real results, throughput x ``factor``;
    ``folders`` the plans of fixed-load runs it was asked for, ``steps`` the search steps."""

    def __init__(self, factor: float, confirming_factor: float | None = None) -> None:
        self.factor = factor
        self.confirming_factor = factor if confirming_factor is None else confirming_factor
        self.folders: list[str] = []
        self.steps: list[BenchRun] = []

    def run(
        self,
        base_url: str,
        served_name: str,
        tokenizer: Path,
        runs: Sequence[BenchRun],
        out_dir: Path,
        **_: Any,
    ) -> list[BenchResult]:
        out_dir.mkdir(parents=True, exist_ok=True)
        factor = self.confirming_factor if out_dir.name == "confirm" else self.factor
        if all(run.step is not None for run in runs):
            self.steps += runs
            return [self.step(run, out_dir, CAPACITY * factor) for run in runs]
        self.folders.append(out_dir.name)
        results = []
        for run in runs:
            recorded = "single-stream" if run.scenario == "warm-up" else run.scenario
            source = RECORDED / f"{recorded}.random-64x32.r{run.repeat % 2}.json"
            result = read_bench_result(source, dataclasses.replace(run, workload="random-64x32"))
            figures = {
                k: v * factor if k.endswith(("throughput", "goodput")) else v
                for k, v in result.figures.items()
            }
            results.append(dataclasses.replace(result, run=run, figures=figures))
        return results

    @staticmethod
    def step(run: BenchRun, out_dir: Path, capacity: float) -> BenchResult:
        """A search step: every request meets the limits up to ``capacity``, half of them above it."""
        source = RECORDED / f"server.random-64x32.r{run.repeat % 2}.json"
        result = read_bench_result(source, run)
        share = 1.0 if run.request_rate <= capacity else 0.5
        figures = {
            **result.figures,
            "request_throughput": run.request_rate,
            "request_goodput": run.request_rate * share,
        }
        path = out_dir / f"{run.name}.json"
        return dataclasses.replace(result, figures=figures, result_path=path)

    def stop(self) -> None:
        pass


class Server:
    """Stand-in for a running GPU server (it is never asked anything: the bench is recorded)."""

    base_url = "http://127.0.0.1:1"
    api_key = "stand-in-key"

    def in_use(self, during: str) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


LEASE = Lease("Qwen-32B/int4-w4a16/h100/tp1", "main", (0,), 80.0, True, 0.9)


def cell(scheme: str) -> MatrixCell:
    target = "multi-stream-multi-turn-chat"
    (found,) = [c for c in expand(kind="performance") if c.cell_id == f"Qwen-32B-{scheme}-h100-{target}"]
    return found


def lane(tmp_path: Path, factor: float, update: bool = False, confirming: float | None = None) -> Pipeline:
    gpu_lane = Pipeline(
        load_kind(paths.kind_file("gpu")),
        Envs(tmp_path / "envs"),
        tmp_path / "work",
        baselines=tmp_path / "baselines",
        update_baselines=update,
    )
    gpu_lane._bench_worker = RecordedGpuBench(factor, confirming)  # type: ignore[assignment]
    gpu_lane.rate = lambda server, cell: PROBED  # type: ignore[method-assign]
    return gpu_lane


def test_a_quantized_model_on_fewer_gpus_gets_a_per_gpu_speedup_too(tmp_path: Path) -> None:
    bf16, int4 = cell("bf16"), cell("int4-w4a16")
    assert (bf16.requirement.count, int4.requirement.count) == (2, 1)
    reference = lane(tmp_path, 1.0, update=True).judge_speed(Server(), bf16)  # type: ignore[arg-type]
    note = reference.reference_note
    assert reference.verdict is None
    path = tmp_path / "baselines" / "h100" / "Qwen-32B" / "speed" / f"{bf16.target}.json"
    assert note == f"new BF16 speed reference {path}"
    stored = json.loads(path.read_text())
    assert stored["gpus"] == 2
    assert stored["figures"] == reference.figures
    assert stored["provenance"]["gpu"] == "h100"

    outcome = lane(tmp_path, 0.8).judge_speed(Server(), int4)  # type: ignore[arg-type]
    assert outcome.reference_note is None
    assert outcome.verdict is not None
    assert len(reference.figures) == 24, "BF16's stored reference has the kind's reference_repeats"
    assert outcome.figures == pytest.approx([0.8 * f for f in reference.figures[:3]], rel=1e-9)
    speedup = geometric_mean(outcome.figures) / geometric_mean(reference.figures)
    assert outcome.verdict.speedup == pytest.approx(speedup, rel=1e-9)
    assert outcome.verdict.per_gpu_speedup == pytest.approx(2 * speedup, rel=1e-9)
    result = outcome.result(int4)
    assert (result.gpus, result.bf16_gpus) == (1, 2)
    assert f"per GPU {2 * speedup:.3f} (1 vs 2 GPUs)" in result.detail
    entries = outcome.benchmark_entries("Qwen-32B", "int4-w4a16", "h100::Qwen-32B")
    assert len(entries) == 3
    assert all(e["extra_info"]["scheme"] == "int4-w4a16" for e in entries)

    text = write_report(
        tmp_path / "report", [result], outcomes={}, wall_s=1.0, context={}
    ).markdown.read_text()
    assert "GPUs BF16 → quantized | speedup per GPU" in text
    assert f"| 2 → 1 | {2 * speedup:.3f} |" in text


def test_a_bf16_speed_cell_without_the_flag_writes_nothing(tmp_path: Path) -> None:
    outcome = lane(tmp_path, 1.0).judge_speed(Server(), cell("bf16"))  # type: ignore[arg-type]
    assert (outcome.verdict, outcome.reference_note) == (None, None)
    assert not (tmp_path / "baselines").exists()


def test_without_a_bf16_reference_the_cell_fails_naming_the_file_and_the_command(tmp_path: Path) -> None:
    """Shards and xdist workers split a model's schemes, so BF16 speed is a stored reference; a kind's
    first night has none, and the error says how to make them."""
    with pytest.raises(QuantgateError) as caught:
        lane(tmp_path, 1.0).judge_speed(Server(), cell("fp8-w8a8"))  # type: ignore[arg-type]
    assert caught.value.source is not None
    assert caught.value.source.endswith("h100/Qwen-32B/speed/multi-stream-multi-turn-chat.json")
    assert 'pytest suites -m h100 -k "Qwen-32B-bf16-" --qg-update-baselines' in str(caught.value)


@pytest.mark.parametrize(
    ("key", "stored_value", "now"),
    [("vllm", "0.31.0", "unknown"), ("prompts", "256", "512"), ("warmups", "4", "1")],
    ids=["another-vllm", "other-prompts", "other-warm-ups"],
)
def test_a_speed_reference_measured_otherwise_is_refused(
    tmp_path: Path, key: str, stored_value: str, now: str
) -> None:
    """Another vLLM, or runs of another size: a load sized by time sends what the catalog and the
    published tables plan (``prompts``), which the kind file alone does not pin."""
    lane(tmp_path, 1.0, update=True).judge_speed(Server(), cell("bf16"))  # type: ignore[arg-type]
    path = tmp_path / "baselines" / "h100" / "Qwen-32B" / "speed" / f"{cell('bf16').target}.json"
    stored = json.loads(path.read_text())
    assert stored["provenance"][key] == now
    stored["provenance"][key] = stored_value
    path.write_text(json.dumps(stored))
    with pytest.raises(QuantgateError, match=rf"{key}: stored '{stored_value}', now '{now}'") as caught:
        lane(tmp_path, 1.0).judge_speed(Server(), cell("int4-w4a16"))  # type: ignore[arg-type]
    assert caught.value.where == "provenance"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"schema_version": 2, "gpus": 2, "figures": [1.0, 1.1], "provenance": {}}, "schema_version"),
        ({"schema_version": 1, "gpus": 0, "figures": [1.0, 1.1], "provenance": {}}, "gpus"),
        ({"schema_version": 1, "gpus": 2, "figures": [1.0], "provenance": {}}, "figures"),
        ({"schema_version": 1, "gpus": 2, "figures": [1.0, -3.0], "provenance": {}}, "figures[1]"),
    ],
)
def test_a_bad_speed_reference_is_refused_naming_the_field(
    tmp_path: Path, content: dict[str, Any], field: str
) -> None:
    path = tmp_path / "baselines" / "h100" / "Qwen-32B" / "speed" / f"{cell('bf16').target}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(content))
    with pytest.raises(QuantgateError) as caught:
        lane(tmp_path, 1.0).judge_speed(Server(), cell("int8-w8a8"))  # type: ignore[arg-type]
    assert caught.value.source == str(path)
    assert caught.value.where is not None
    assert caught.value.where.startswith(field)


def test_without_an_accuracy_reference_the_cell_fails_naming_the_command(tmp_path: Path) -> None:
    (aime,) = [c for c in expand(kind="accuracy") if c.cell_id == "Qwen-7B-int4-w4a16-h100-aime24"]
    with pytest.raises(QuantgateError) as caught:
        lane(tmp_path, 1.0).reference(aime)
    assert caught.value.source is not None
    assert caught.value.source.endswith("h100/Qwen-7B/aime24.json")
    assert 'pytest suites -m h100 -k "Qwen-7B-bf16-" --qg-update-baselines' in str(caught.value)


def server_cell(scheme: str, model: str = "Qwen-32B") -> MatrixCell:
    target = "server-multi-turn-chat"
    (found,) = [c for c in expand(kind="performance") if c.cell_id == f"{model}-{scheme}-h100-{target}"]
    return found


def within_dither(rate: float, anchor: float, resolution: float) -> bool:
    """Whether ``rate`` is ``anchor`` offset by at most half a ``resolution`` step (``dithered_start``)."""
    return abs(math.log(rate / anchor)) <= math.log(resolution) / 2 * (1 + 1e-9)


def search_steps(bench: Any, repeats: Sequence[int]) -> list[list[float]]:
    """The rates the stand-in bench was asked for, per search of the given repeats."""
    assert isinstance(bench, RecordedGpuBench)
    return [[r.request_rate for r in bench.steps if r.repeat == n] for n in repeats]


def test_a_goodput_of_zero_fails_a_quantized_cell_and_is_an_error_for_bf16(tmp_path: Path) -> None:
    """A server that meets the limits at no rate: its searches walk down to the kind's lowest rate and
    find capacity 0, a figure of a quantized cell and an error for BF16 naming its last step."""
    with pytest.raises(QuantgateError, match="capacity is 0") as caught:
        lane(tmp_path, 0.0).judge_speed(Server(), server_cell("bf16"))  # type: ignore[arg-type]
    assert caught.value.where == "request_goodput"
    assert caught.value.source is not None
    assert re.search(r"/server\.multi-turn-chat\.r0\.s\d+\.json$", caught.value.source)
    lane(tmp_path, 1.0, update=True).judge_speed(Server(), server_cell("bf16"))  # type: ignore[arg-type]
    outcome = lane(tmp_path, 0.0).judge_speed(Server(), server_cell("int4-w4a16"))  # type: ignore[arg-type]
    assert outcome.verdict is not None
    assert outcome.verdict.verdict == "fail"
    assert "0 in 3 of 3 runs" in outcome.verdict.detail


def test_a_gpu_server_cell_is_judged_by_the_kind_files_capacity_searches(tmp_path: Path) -> None:
    """gpu.yaml's server scenario is a capacity search the pipeline runs: one search per repeat, each
    step ``step_s`` seconds of Poisson arrivals (at least ``num_prompts``) under the kind's limits; BF16's
    first search from the probe's rate, the others from the last capacity; the figures are the
    capacities found (within one resolution step below the server's), judged like any other figure."""
    load = load_kind(paths.kind_file("gpu")).speed.scenarios["server"]
    search = load.search
    assert search is not None
    assert load.goodput is not None
    assert load.request_rate is None
    writer = lane(tmp_path, 1.0, update=True)
    reference = writer.judge_speed(Server(), server_cell("bf16"))  # type: ignore[arg-type]
    assert len(reference.figures) == 24
    assert all(CAPACITY / search.resolution < f <= CAPACITY for f in reference.figures), reference.figures
    assert len(set(reference.figures)) > 1, "dithered starts: the figures spread over the grid"
    (first_bf16,) = search_steps(writer._bench_worker, [0])
    probed = PROBED.batch_tps / 256  # the probe's rate over multi-turn-chat's output tokens
    assert within_dither(first_bf16[0], probed, search.resolution)

    candidate = lane(tmp_path, 0.8)
    outcome = candidate.judge_speed(Server(), server_cell("int4-w4a16"))  # type: ignore[arg-type]
    bench = candidate._bench_worker
    assert isinstance(bench, RecordedGpuBench)
    capacity = 0.8 * CAPACITY
    assert all(capacity / search.resolution < f <= capacity for f in outcome.figures), outcome.figures
    assert outcome.verdict is not None
    assert outcome.verdict.speedup == pytest.approx(0.8, rel=search.resolution - 1)
    assert all(len(steps) <= 4 for steps in search_steps(bench, [1, 2])), "warm: ~3 steps"
    for run in bench.steps:
        assert run.search is not None
        assert run.search.factor == search.factor
        assert run.goodput == {"ttft": load.goodput.ttft_ms, "tpot": load.goodput.tpot_ms}
        assert run.num_prompts == max(load.num_prompts, math.ceil(run.request_rate * search.step_s))
        assert run.num_warmups == (candidate.spec.speed.warmups if run.step == 0 else 0)


@pytest.mark.parametrize(("model", "gpus"), [("Qwen-7B", (1, 1)), ("Qwen-32B", (2, 1))])
def test_a_quantized_cells_first_search_starts_at_bf16s_stored_capacity(
    tmp_path: Path, model: str, gpus: tuple[int, int]
) -> None:
    """With BF16's capacity stored, a quantized cell's first search starts there (the median of its
    figures, per GPU: x the cell's GPUs over BF16's), dithered per repeat like every later one, and asks
    exactly the rates the plans walk for it (``runners.capacity.planned_searches``, the estimate's walk):
    ~3 steps a search, where the probe's rate laddered up."""
    search = load_kind(paths.kind_file("gpu")).speed.scenarios["server"].search
    assert search is not None
    bf16, int8 = server_cell("bf16", model), server_cell("int8-w8a8", model)
    assert (bf16.requirement.count, int8.requirement.count) == gpus
    reference = lane(tmp_path, 1.0, update=True).judge_speed(Server(), bf16)  # type: ignore[arg-type]
    start = statistics.median(reference.figures) * gpus[1] / gpus[0]

    candidate = lane(tmp_path, 1.1)
    outcome = candidate.judge_speed(Server(), int8)  # type: ignore[arg-type]
    assert outcome.verdict is not None
    asked = search_steps(candidate._bench_worker, range(3))
    assert within_dither(asked[0][0], start, search.resolution)
    assert len({round(steps[0], 9) for steps in asked}) == 3, "each repeat's start dithered apart"
    walk = search.model_dump(exclude={"start_rate", "step_s"})
    planned = planned_searches(SearchSettings(start_rate=start, **walk), 1.1 * CAPACITY, start, 3)
    assert [list(steps) for steps in planned] == asked
    assert all(len(steps) <= 5 for steps in asked), asked
    from_probe = planned_searches(
        SearchSettings(start_rate=PROBED.batch_tps / 256, **walk), 1.1 * CAPACITY, PROBED.batch_tps / 256, 1
    )
    assert len(from_probe[0]) > len(asked[0]) + 1


def test_without_a_bf16_capacity_that_holds_the_first_search_starts_at_the_probes_rate(
    tmp_path: Path,
) -> None:
    """No stored reference, or one of another vLLM (the judge then refuses it, naming the field): the
    first search starts from the probe's rate, as before anything is known."""
    search = load_kind(paths.kind_file("gpu")).speed.scenarios["server"].search
    assert search is not None
    probed = PROBED.batch_tps / 256
    lane(tmp_path, 1.0, update=True).judge_speed(Server(), server_cell("bf16"))  # type: ignore[arg-type]
    path = tmp_path / "baselines" / "h100" / "Qwen-32B" / "speed" / "server-multi-turn-chat.json"
    stored = json.loads(path.read_text())
    stored["provenance"]["vllm"] = "0.31.0"
    path.write_text(json.dumps(stored))
    candidate = lane(tmp_path, 1.0)
    with pytest.raises(QuantgateError, match="vllm"):
        candidate.judge_speed(Server(), server_cell("int8-w8a8"))  # type: ignore[arg-type]
    (first,) = search_steps(candidate._bench_worker, [0])
    assert within_dither(first[0], probed, search.resolution)
    fresh = lane(tmp_path / "fresh", 1.0)  # no reference at all
    with pytest.raises(QuantgateError, match="BF16 speed reference"):
        fresh.judge_speed(Server(), server_cell("int8-w8a8"))  # type: ignore[arg-type]
    (first,) = search_steps(fresh._bench_worker, [0])
    assert within_dither(first[0], probed, search.resolution)


@pytest.mark.slow
def test_a_served_model_starts_with_the_context_its_longest_cell_needs(tmp_path: Path) -> None:
    """Whichever cell starts a served model (a speed cell needs a few hundred tokens), the server gets
    the served model's context, so a later reasoning cell's prompts and answers fit."""
    python = tmp_path / "envs" / "vllm" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    gpu_lane = lane(tmp_path, 1.0)
    cells = [c for c in expand() if c.served_model == cell("int4-w4a16").served_model]
    speed = min((c for c in cells if c.kind == "performance"), key=lambda c: c.context_tokens)
    longest = max(c.context_tokens for c in cells)
    assert speed.context_tokens < longest
    for first in (speed, *(c for c in cells if c.kind == "accuracy")):
        assert gpu_lane.server(first, LEASE).spec.max_model_len == longest


def test_tool_timeouts_follow_the_cell_estimate(tmp_path: Path) -> None:
    """A BF16 MATH-500 look of a 70B model is estimated near an hour: its job and requests may take it."""
    from quantgate.matrix import estimate_cell_seconds

    gpu_lane = lane(tmp_path, 1.0)
    (math_cell,) = [c for c in expand(kind="accuracy") if c.cell_id == "Llama-70B-bf16-h100-math_500"]
    estimate = estimate_cell_seconds(gpu_lane.catalog, math_cell)
    assert estimate > 1800
    job = gpu_lane.evaluation_job(Server(), math_cell, 20, 0, "look0")  # type: ignore[arg-type]
    assert job.timeout >= 3 * estimate
    assert job.endpoint()["timeout"] == job.timeout
    small = gpu_lane.evaluation_job(Server(), math_cell, 2, 0, "look1")  # type: ignore[arg-type]
    assert small.timeout < job.timeout
    assert gpu_lane.timeout(cell("bf16")) >= 900


def test_a_gpu_look_uses_lightevals_own_tasks_without_its_full_registry(tmp_path: Path) -> None:
    """The GPU worker loads the three built-in task modules through ``builtin_tasks.py`` (nothing that
    downloads at import) and reads their hub datasets: no local data root is passed."""
    gpu_lane = lane(tmp_path, 1.0)
    (aime,) = [c for c in expand(kind="accuracy") if c.cell_id == "Qwen-7B-int8-w8a8-h100-aime24"]
    job = gpu_lane.evaluation_job(Server(), aime, 20, 0, "look0")  # type: ignore[arg-type]
    assert job.task_file is not None
    assert job.task_file.name == "builtin_tasks.py"
    assert job.task == "aime24@k=1@n=20"
    assert job.data_dir is None
    assert job.metric == "pass@k:k=1"
    assert "--custom-tasks" in job.args()


@pytest.mark.parametrize("task", ["aime24", "math_500", "gpqa_diamond"])
def test_a_look_reads_the_metric_lighteval_013_writes_with_the_samples_it_drew(
    tmp_path: Path, task: str
) -> None:
    """Files of real lighteval 0.13 runs of its own tasks (4 samples per item, ``@k=1@n=4``): the task's
    own metric name, whatever n asked (``math_500`` writes ``pass@k:k=1&n=1``), and 4 samples per item."""
    import shutil

    from quantgate.runners.evaluate import read_evaluation

    source = Path(__file__).parent / "data" / "lighteval-builtin" / task
    (math_cell,) = [c for c in expand(kind="accuracy") if c.cell_id == f"Qwen-7B-bf16-h100-{task}"]
    job = dataclasses.replace(
        lane(tmp_path, 1.0).evaluation_job(Server(), math_cell, 4, 0, "look0"),  # type: ignore[arg-type]
        out_dir=tmp_path / "out",
    )
    for kind in ("details", "results"):
        target = job.out_dir / kind / "run"
        target.mkdir(parents=True)
        for found in source.glob(f"{kind}_*"):
            shutil.copy(found, target / found.name)
    evaluation = read_evaluation(job, 1.0)
    assert len(evaluation.counts) == 5
    assert set(evaluation.counts.values()) == {(4, 0)}


class RecordedLighteval:
    """Stand-in for the lighteval worker on a GPU machine: a real lighteval 0.13 aime24 run's files."""

    def run(self, job: Any) -> Any:
        import shutil

        from quantgate.runners.evaluate import read_evaluation

        source = Path(__file__).parent / "data" / "lighteval-builtin" / "aime24"
        for kind in ("details", "results"):
            target = job.out_dir / kind / "run"
            target.mkdir(parents=True, exist_ok=True)
            for found in source.glob(f"{kind}_*"):
                shutil.copy(found, target / found.name)
        return read_evaluation(dataclasses.replace(job, samples=4), 1.0)


def test_the_bf16_cell_writes_the_kinds_accuracy_reference_under_the_flag(tmp_path: Path) -> None:
    cells = {
        c.scheme: c
        for c in expand(kind="accuracy")
        if c.cell_id.startswith("Qwen-7B-") and c.cell_id.endswith("-h100-aime24")
    }
    writer = lane(tmp_path, 1.0, update=True)
    writer._worker = RecordedLighteval()  # type: ignore[assignment]
    reference, note = writer.reference(cells["bf16"], Server())  # type: ignore[arg-type]
    path = writer.reference_path(cells["bf16"])
    assert note == f"new reference {path}"
    assert path == tmp_path / "baselines" / "h100" / "Qwen-7B" / "aime24.json"
    assert len(reference.items) == 5
    assert reference.provenance["gpu"] == "h100"
    loaded, none = lane(tmp_path, 1.0).reference(cells["int4-w4a16"])
    assert none is None
    assert loaded.counts() == reference.counts()


def test_a_gpu_bench_measures_a_warm_server_only(tmp_path: Path) -> None:
    """The GPU plan, like the CPU one, opens with a discarded warm-up run (the first run of a fresh
    server was up to 10x slower); the scenarios' repeats are interleaved on the cell's workload."""
    gpu_lane = lane(tmp_path, 1.0)
    runs = gpu_lane.bench_runs(cell("int4-w4a16"))
    assert runs[0].scenario == "warm-up"
    assert [r.scenario for r in runs[1:3]] == ["single-stream", "multi-stream"]
    # its own prompts: with r0's seed it sent r0's single-stream prompts, which vLLM's prefix cache
    # (on by default in 0.32) then served without their prefill
    assert (runs[0].num_prompts, runs[0].input_len) == (runs[1].num_prompts, runs[1].input_len)
    assert runs[0].seed not in {r.seed for r in runs[1:]}
    assert len(runs) == 1 + 3 * 2, "the server scenario is a capacity search, chosen as it goes"
    assert {(r.workload, r.input_len, r.output_len) for r in runs} == {("multi-turn-chat", 512, 256)}
    outcome = lane(tmp_path, 1.0, update=True).judge_speed(Server(), cell("bf16"))  # type: ignore[arg-type]
    assert [r.run.scenario for r in outcome.runs] == ["multi-stream"] * 24, "BF16: reference_repeats"
    assert len(outcome.figures) == 24


def test_a_slow_servers_fixed_runs_are_bounded_by_time_alike_for_every_scheme_per_gpu(tmp_path: Path) -> None:
    """A fixed load's run sends what BF16's planned server finishes in ``duration_s``: a 32B on an H100
    keeps the counts (chat at ~11 req/s), a 70B on four A6000s sends a code-fixing run of 31 requests
    (0.34 req/s, 90 s; 512 were 25 min a run) and one request at a time 8, not 32 (59 s each); INT8 on
    the same four GPUs the same, INT4 on two half as many per run, at least ``min_prompts``."""
    gpu_lane = lane(tmp_path, 1.0)
    fast = {r.scenario: r.num_prompts for r in gpu_lane.bench_runs(cell("int4-w4a16"))}
    assert fast == {"warm-up": 32, "single-stream": 32, "multi-stream": 512}
    slow = {
        c.scheme: c
        for c in expand(kind="performance")
        if c.cell_id.startswith("Llama-70B-")
        and c.cell_id.endswith("-a6000-multi-stream-code-fixing")
        and c.skip_reason is None
    }
    prompts = {
        scheme: {r.scenario: r.num_prompts for r in gpu_lane.bench_runs(c)} for scheme, c in slow.items()
    }
    gpus = {scheme: c.requirement.count for scheme, c in slow.items()}
    assert gpus == {"bf16": 4, "int8-w8a8": 4, "int4-w4a16": 2}
    assert prompts["bf16"] == prompts["int8-w8a8"] == {"warm-up": 8, "single-stream": 8, "multi-stream": 31}
    assert prompts["int4-w4a16"] == {"warm-up": 8, "single-stream": 8, "multi-stream": 16}


def test_an_unsized_bench_is_timed_out_on_its_own_runs_whichever_speed_cell_starts_it(tmp_path: Path) -> None:
    """A workload's first speed cell benches every fixed scenario: BF16's 24 repeats of single- and
    multi-stream after a warm-up run. The timeout is 3x those runs' planned seconds plus the slack,
    the same whether the single- or the multi-stream cell starts them (the multi-stream cell's own
    estimate left ~1.3x the work)."""
    gpu_lane = lane(tmp_path, 1.0)
    cells = {
        c.scenario: c
        for c in expand(kind="performance")
        if c.cell_id.startswith("Qwen-1.5B-bf16-h100-") and c.cell_id.endswith("-stream-code-completion")
    }
    runs = gpu_lane.bench_runs(cells["multi-stream"], 24)
    assert len(runs) == 1 + 24 * 2
    catalog = load_catalog()
    single, multi = (estimate_cell_seconds(catalog, cells[s]) for s in ("single-stream", "multi-stream"))
    planned = single / 4 * 25 + multi / 3 * 24  # per run: 3 repeats and the warm-up run; 3 repeats
    expected = max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * planned + TIMEOUT_SLACK_S)
    assert gpu_lane.fixed_timeout(cells["multi-stream"], runs) == pytest.approx(expected)
    assert gpu_lane.fixed_timeout(cells["single-stream"], runs) == pytest.approx(expected)
    assert expected > gpu_lane.timeout(cells["multi-stream"], len(runs) / 3) * 1.5


def test_what_differs_between_cpu_and_gpu_kinds_is_their_kind_files() -> None:
    cpu, gpu = load_kind(), load_kind(paths.kind_file("gpu"))
    assert (cpu.kinds, cpu.speed.reference, cpu.offline) == (("cpu",), "session", True)
    assert (cpu.speed.cap, gpu.speed.cap, gpu.speed.reference_repeats) == (6, 12, 24)
    assert set(gpu.kinds) == {"a6000", "a100", "h100", "h200", "l40s"}
    assert (gpu.models, gpu.speed.reference, gpu.offline, gpu.accuracy.data) == ({}, "stored", False, None)
    assert gpu.accuracy.task_file == cpu.accuracy.task_file
    assert gpu.accuracy.model_file == cpu.accuracy.model_file


def multi_stream(tmp_path: Path, factor: float, confirming: float | None = None) -> tuple[Any, list[str]]:
    """A stored BF16 reference, then the INT4 cell judged at ``factor`` x BF16's throughput."""
    lane(tmp_path, 1.0, update=True).judge_speed(Server(), cell("bf16"))  # type: ignore[arg-type]
    candidate = lane(tmp_path, factor, confirming=confirming)
    outcome = candidate.judge_speed(Server(), cell("int4-w4a16"))  # type: ignore[arg-type]
    bench = candidate._bench_worker
    assert isinstance(bench, RecordedGpuBench)
    return outcome, bench.folders


def test_an_undecided_speed_cell_is_topped_up_to_the_kinds_cap_and_decided(tmp_path: Path) -> None:
    outcome, folders = multi_stream(tmp_path, 0.99)
    assert folders[1:] == ["top-up-3", "top-up-5", "top-up-8"]
    assert len(outcome.figures) == 12
    assert len(outcome.runs) == 12
    assert outcome.verdict.verdict == "pass", outcome.verdict.detail
    assert outcome.verdict.low < 1.0
    assert outcome.verdict.low >= 1.0 - outcome.verdict.margin


def test_a_failing_speed_cell_is_confirmed_by_a_fresh_bench(tmp_path: Path) -> None:
    outcome, folders = multi_stream(tmp_path, 0.8)
    assert folders[-1] == "confirm"
    assert outcome.verdict.verdict == "fail"
    assert "confirmed on fresh data" in outcome.verdict.detail


def test_a_fail_the_fresh_bench_does_not_repeat_is_inconclusive(tmp_path: Path) -> None:
    outcome, folders = multi_stream(tmp_path, 0.8, confirming=1.1)
    assert folders[-1] == "confirm"
    assert outcome.verdict.verdict == "inconclusive"
    assert "unconfirmed fail" in outcome.verdict.detail
    assert "fresh data: pass" in outcome.verdict.detail


class NoLighteval:
    """Stand-in that fails the test if anything is evaluated."""

    def run(self, job: Any) -> Any:
        raise AssertionError(f"evaluated {job.task} although the BF16 reference holds")


def test_a_bf16_cell_passes_on_its_reference_while_the_inputs_are_the_same(tmp_path: Path) -> None:
    (bf16,) = [c for c in expand(kind="accuracy") if c.cell_id == "Qwen-7B-bf16-h100-aime24"]
    writer = lane(tmp_path, 1.0, update=True)
    writer._worker = RecordedLighteval()  # type: ignore[assignment]
    writer.reference(bf16, Server())  # type: ignore[arg-type]
    nightly = lane(tmp_path, 1.0)
    assert nightly.spec.accuracy.reuse_reference
    nightly._worker = NoLighteval()  # type: ignore[assignment]
    outcome = nightly.judge_accuracy(Server(), bf16)  # type: ignore[arg-type]
    assert outcome.verdict.verdict == "pass"
    assert "BF16 reference reused" in outcome.verdict.detail
    assert outcome.reused
    path = nightly.reference_path(bf16)
    stored = json.loads(path.read_text())
    stored["provenance"]["vllm"] = "0.31.0"
    path.write_text(json.dumps(stored))
    with pytest.raises(QuantgateError, match="vllm"):
        lane(tmp_path, 1.0).judge_accuracy(Server(), bf16)  # type: ignore[arg-type]


def test_a_bf16_speed_cell_reports_its_stored_reference_while_the_inputs_are_the_same(tmp_path: Path) -> None:
    reference = lane(tmp_path, 1.0, update=True).judge_speed(Server(), cell("bf16"))  # type: ignore[arg-type]
    nightly = lane(tmp_path, 1.0)
    outcome = nightly.judge_speed(Server(), cell("bf16"))  # type: ignore[arg-type]
    bench = nightly._bench_worker
    assert isinstance(bench, RecordedGpuBench)
    assert bench.folders == [], "nothing benched"
    assert outcome.figures == reference.figures
    assert outcome.runs == ()
    assert "BF16 speed reference reused" in outcome.result(cell("bf16")).detail
    path = nightly.speed_reference_path(cell("bf16"))
    stored = json.loads(path.read_text())
    stored["provenance"]["vllm"] = "0.31.0"
    path.write_text(json.dumps(stored))
    again = lane(tmp_path, 1.0)
    measured = again.judge_speed(Server(), cell("bf16"))  # type: ignore[arg-type]
    assert len(measured.runs) == 24, "a changed input measures BF16 again"
