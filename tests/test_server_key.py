"""Servers only for us: each vLLM server holds a per-start API key, every client sends it, and neither
the key nor the hub token (``HF_TOKEN``) lands in anything a run writes.

Real parts, both tests: the cpu kind's vLLM server for tiny-llama's BF16 checkpoint, and the lane's own
clients (the rate probe, a two-item lighteval look, a two-request ``vllm bench serve``). The first
test asks the server without the key, with a wrong one and with the right one, and runs each client
without the key (refused) and with it. The second runs the smallest lane that writes every kind of
output (``pytest suites -m cpu`` on tiny-llama's BF16 accuracy, output-length and single-stream speed
cells: logs, lighteval's files, bench results, provenance, report, cells.json, coverage, JUnit XML,
pytest-benchmark file) with a recognisable fake ``HF_TOKEN`` in its environment, records each server's
key with ``tests/key_spy.py``, and greps every file the run wrote, and its terminal output, for both.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from lane_run import REPO, copy_lane_project, envs_or_skip, run_lane

from quantgate.kinds import load_kind
from quantgate.pipeline import Pipeline, local_cells
from quantgate.runners.bench import single_stream
from quantgate.runners.probe import measure_rate
from quantgate.runners.process import NO_PROXY, ToolError, bearer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real-tools")]
CPU_KIND = REPO / "suites" / "kinds" / "cpu.yaml"


def status(url: str, api_key: str | None, body: dict[str, object] | None = None) -> int:
    """The HTTP status the server answers ``url`` with (POST of ``body`` when given)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **bearer(api_key)}
    try:
        with NO_PROXY.open(urllib.request.Request(url, data=data, headers=headers), timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_server_answers_only_its_key_and_every_client_sends_it(tmp_path: Path) -> None:
    envs = envs_or_skip()
    spec = load_kind(CPU_KIND)
    lane = Pipeline(spec, envs, tmp_path / "work")
    cell = next(
        c
        for c in local_cells(spec)
        if (c.model, c.scheme, c.benchmark) == ("tiny-llama", "bf16", "gpqa_diamond")
    )
    name = lane.served_name(cell)
    completion = {"model": name, "prompt": "1+1=", "max_tokens": 2}
    try:
        with lane.server(cell) as server:
            key = server.api_key
            assert key is not None
            url = server.base_url
            asked = {
                "GET /health, no key": status(url + "/health", None),
                "GET /v1/models, no key": status(url + "/v1/models", None),
                "GET /v1/models, wrong key": status(url + "/v1/models", key[::-1]),
                "POST /v1/completions, no key": status(url + "/v1/completions", None, completion),
                "POST /v1/completions, key": status(url + "/v1/completions", key, completion),
                "POST /invocations, no key": status(url + "/invocations", None, completion),
                "POST /invocations, key": status(url + "/invocations", key, completion),
                "POST /tokenize, no key": status(url + "/tokenize", None, completion),
                "GET /metrics, no key": status(url + "/metrics", None),
            }
            assert asked == {
                "GET /health, no key": 200,
                "GET /v1/models, no key": 401,
                "GET /v1/models, wrong key": 401,
                "POST /v1/completions, no key": 401,
                "POST /v1/completions, key": 200,
                "POST /invocations, no key": 401,
                "POST /invocations, key": 200,
                "POST /tokenize, no key": 401,
                "GET /metrics, no key": 401,
            }

            with pytest.raises(ToolError, match="Unauthorized"):
                measure_rate(url, name, "1+1=", streams=2, max_tokens=4)
            rate = lane.rate(server, cell)
            assert rate.single_tps > 0, rate.detail

            job = lane.evaluation_job(server, cell, 1, 0, "key", items=2)
            assert key not in repr(job)
            keyless = replace(job, api_key=None, out_dir=job.out_dir.with_name("nokey"))
            with pytest.raises(ToolError, match="401"):
                lane.evaluate(server, keyless)
            look = lane.evaluate(server, job)
            assert len(look.counts) == 2
            assert key not in (job.out_dir / "endpoint.json").read_text()

            runs = [single_stream(num_prompts=2, output_len=4)]
            checkpoint = lane.checkpoint(cell).path
            worker = lane.bench_worker()
            with pytest.raises(ToolError, match="2 of 2 requests failed"):
                worker.run(url, name, checkpoint, runs, tmp_path / "bench-nokey", timeout=300)
            results = worker.run(url, name, checkpoint, runs, tmp_path / "bench", timeout=300, api_key=key)
            assert results[0].completed == 2
    finally:
        lane.close()
    print(f"statuses: {asked}; probe {rate.detail}")


def test_no_file_a_lane_run_writes_holds_the_hub_token_or_a_server_key(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    envs = envs_or_skip()
    copy_lane_project(pytester, "key_spy")
    hub_token = f"hf_qgFakeToken{uuid.uuid4().hex}"
    keys_file = tmp_path / "spy" / "keys.txt"
    keys_file.parent.mkdir()
    monkeypatch.setenv("HF_TOKEN", hub_token)
    monkeypatch.setenv("QG_KEY_SPY_FILE", str(keys_file))
    work = tmp_path / "out"
    run = run_lane(
        pytester,
        "key_spy",
        "tiny-llama-bf16 and (gpqa_diamond or single-stream)",
        CPU_KIND,
        envs,
        work,
        900,
        extra=(f"--junitxml={work / 'report' / 'junit.xml'}",),
    )
    output = run.result.stdout.str() + run.result.stderr.str()
    assert run.result.ret == pytest.ExitCode.OK, output[-4000:]
    keys = [line for line in keys_file.read_text().splitlines() if line]
    assert len(keys) == 1, keys
    secrets = {"HF_TOKEN": hub_token.encode(), "API key": keys[0].encode()}

    written = [p for p in (*work.rglob("*"), *pytester.path.rglob("*")) if p.is_file()]
    kinds = {p.suffix for p in written}
    assert {".log", ".json", ".parquet", ".md", ".xml"} <= kinds, kinds
    found = [
        f"{what} in {path}"
        for path in written
        for what, secret in secrets.items()
        if secret in path.read_bytes()
    ]
    found += [f"{what} in pytest's output" for what, secret in secrets.items() if secret.decode() in output]
    assert found == []
    print(f"lane run {run.wall_s:.0f} s; {len(written)} files grepped, none holds the token or the key")
