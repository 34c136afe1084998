"""``quantgate prefetch``: the plan checked against the catalog, and the fetch run for real.

The cpu kind's prefetch runs in the real evaluation environment, offline: the committed tiny models and
task data pass, and a kind file pointing at a missing model or dataset fails naming it. A GPU kind's
fetch runs the real huggingface_hub against a hub on loopback (``HF_ENDPOINT``) that refuses the token
and echoes it back in its error: the command names the repository and never prints the token.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantgate import paths
from quantgate.catalog import load_catalog
from quantgate.cli import main
from quantgate.envs import Envs
from quantgate.matrix import expand
from quantgate.prefetch import REDACTED, redact

TOKEN = "hf_" + "Q" * 10 + "prefetchTestToken" + "7" * 6


def _json_plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["prefetch", "--dry-run", "--json", *args]) == 0
    plan: dict[str, Any] = json.loads(capsys.readouterr().out)
    return plan


def test_the_h100_plan_is_every_runnable_h100_cells_checkpoint_and_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalog = load_catalog()
    plan = _json_plan(capsys, "--kind", "h100")
    runnable = [c for c in expand(catalog) if c.gpu == "h100" and c.skip_reason is None]
    assert runnable, "the catalog has runnable h100 cells"
    expected_repos = set()
    for model_key, model in catalog.models.items():
        for scheme in catalog.schemes:
            if any(c.model == model_key and c.scheme == scheme for c in runnable):
                expected_repos.add(model.bf16_repo if scheme == "bf16" else model.quantized_repos[scheme])
    assert {m["repo"] for m in plan["models"]} == expected_repos
    assert all(m["path"] is None for m in plan["models"])
    tasks = {d["benchmark"]: d["task"] for d in plan["datasets"]}
    assert tasks == {
        b: catalog.benchmarks[b].lighteval_task for b in {c.benchmark for c in runnable if c.benchmark}
    }
    assert tasks["gpqa_diamond"] == "gpqa:diamond"
    assert plan["offline"] is False
    assert plan["task_file"] == str(paths.root() / "fixtures" / "lane" / "builtin_tasks.py")
    cells = {cell for m in plan["models"] for cell in m["cells"]}
    assert cells == {c.cell_id for c in runnable}
    sizes = {m["repo"]: m["weights_gb"] for m in plan["models"]}
    for model in catalog.models.values():  # BF16 weights: about 2 bytes per parameter
        if model.bf16_repo in sizes:
            assert sizes[model.bf16_repo] == pytest.approx(2 * model.params_b, rel=0.05), model.bf16_repo


def test_a_plan_file_narrows_the_prefetch_to_its_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = "suites/test_matrix.py::test_accuracy[Llama-8B-fp8-w8a8-h100-math_500]"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"kind": "quantgate-plan", "entries": [{"node_id": node}]}))
    plan = _json_plan(capsys, "--kind", "h100", "--plan", str(plan_file))
    assert [m["repo"] for m in plan["models"]] == ["RedHatAI/DeepSeek-R1-Distill-Llama-8B-FP8-dynamic"]
    assert [(d["benchmark"], d["task"]) for d in plan["datasets"]] == [("math_500", "math_500")]


def test_the_dry_run_prints_what_would_be_fetched(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prefetch", "--kind", "a6000", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("prefetch for a6000: download into the Hugging Face cache (weights about ")
    assert "model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (" in "\n".join(out)
    assert any(
        line.startswith("dataset gpqa_diamond: lighteval task gpqa:diamond of builtin_tasks.py")
        for line in out
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "tpu"], "unknown device kind 'tpu'; known: cpu, "),
        (["--kind", "h100", "--plan", "{missing}"], "cannot read the plan"),
        (["--kind", "h100", "--plan", "{not_a_plan}"], "kind: not a quantgate plan (--qg-plan)"),
        (["--kind", "cpu", "--plan", "{not_a_plan}"], "--plan: the cpu kind's plan places no cells"),
        (["--kind", "h100", "--kind-file", "{cpu_kind}"], "kinds: does not describe the h100 kind (cpu)"),
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    not_a_plan = tmp_path / "coverage.json"
    not_a_plan.write_text(json.dumps({"kind": "quantgate-coverage"}))
    files = {"missing": tmp_path / "none.json", "not_a_plan": not_a_plan, "cpu_kind": paths.kind_file("cpu")}
    assert main(["prefetch", "--dry-run", *(a.format(**files) for a in args)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("quantgate: ")
    assert message in err


def test_json_without_dry_run_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prefetch", "--kind", "cpu", "--json"]) == 2
    assert (
        capsys.readouterr().err.strip() == "quantgate: --json: prints the plan only: give --dry-run with it"
    )


def test_redact_removes_the_token_however_it_is_held() -> None:
    assert redact(f"Bearer {TOKEN}.", {}) == f"Bearer {REDACTED}."
    assert (
        redact("token=secret-value-123", {"HUGGING_FACE_HUB_TOKEN": "secret-value-123"})
        == f"token={REDACTED}"
    )
    assert redact("nothing here", {"HF_TOKEN": ""}) == "nothing here"


# -- real runs ---------------------------------------------------------------------------------------


@pytest.fixture
def eval_env() -> Envs:
    envs = Envs.from_environment(paths.root())
    python = envs.directory / "eval" / "bin" / "python"
    if not python.exists():
        if os.environ.get("QG_REQUIRE_ENVS") == "1":
            pytest.fail(f"QG_REQUIRE_ENVS=1 but there is no eval environment at {python.parent.parent}")
        pytest.skip(f"no eval environment at {python.parent.parent} (tools/setup_envs.sh eval)")
    return envs


@pytest.mark.slow
@pytest.mark.usefixtures("eval_env")
def test_the_cpu_kind_verifies_its_local_models_and_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prefetch", "--kind", "cpu"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    for model in ("tiny-llama", "tiny-qwen2"):
        assert f"ok model {model}: " in out
    # every row of the committed files was read (not a stale cache entry of the same folder name)
    for benchmark, split in (("gpqa_diamond", "train"), ("aime24", "train"), ("math_500", "test")):
        rows = paths.root() / "fixtures/tinymodel/models/tasks" / benchmark / f"{split}.jsonl"
        line = next(x for x in out.splitlines() if x.startswith(f"ok dataset {benchmark}: "))
        assert line.endswith(f"{split} {len(rows.read_text().splitlines())} rows"), line
    assert out.rstrip().endswith("prefetch for cpu: complete")


@pytest.mark.slow
@pytest.mark.usefixtures("eval_env")
def test_a_missing_local_model_or_dataset_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(paths.kind_file("cpu").read_text())
    doc["models"]["tiny-llama"]["dir"] = str(tmp_path / "no-llama")
    data = tmp_path / "tasks"
    for benchmark in ("aime24", "math_500"):  # gpqa_diamond's folder is missing
        shutil.copytree(paths.root() / "fixtures/tinymodel/models/tasks" / benchmark, data / benchmark)
    doc["accuracy"]["data"] = str(data)
    kind_file = tmp_path / "cpu.yaml"
    kind_file.write_text(yaml.safe_dump(doc))
    assert main(["prefetch", "--kind", "cpu", "--kind-file", str(kind_file)]) == 1
    out = capsys.readouterr().out
    assert f"MISSING model tiny-llama: FileNotFoundError: no model folder {tmp_path / 'no-llama'}" in out
    assert "ok model tiny-qwen2: " in out
    missing = [line for line in out.splitlines() if line.startswith("MISSING dataset gpqa_diamond: ")]
    assert len(missing) == 1, out
    assert "lighteval task gpqa:diamond" in missing[0]
    assert str(data / "gpqa_diamond") in missing[0]
    assert "ok dataset aime24: " in out
    assert out.rstrip().endswith("prefetch for cpu: items missing (above)")


class _RefusingHub(http.server.BaseHTTPRequestHandler):
    """A hub on loopback that refuses every request, quoting the credentials it was sent."""

    def _refuse(self) -> None:
        said = f"Invalid credentials in Authorization header: {self.headers.get('Authorization', '')}"
        body = json.dumps({"error": said}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Message", said)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.usefixtures("eval_env")
def test_a_gpu_fetch_names_the_refused_repository_and_never_shows_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, refusing_hub: str
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", refusing_hub)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    node = "suites/test_matrix.py::test_speed[Qwen-1.5B-int4-w4a16-h100-single-stream-code-completion]"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"kind": "quantgate-plan", "entries": [{"node_id": node}]}))
    assert main(["prefetch", "--kind", "h100", "--plan", str(plan_file)]) == 1
    out = capsys.readouterr().out
    repo = "RedHatAI/DeepSeek-R1-Distill-Qwen-1.5B-quantized.w4a16"
    assert f"MISSING model {repo}: HfHubHTTPError: Client error '401 Unauthorized'" in out
    assert f"the hub says: Invalid credentials in Authorization header: Bearer {REDACTED}" in out
    assert TOKEN not in out
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def test_a_task_file_that_does_not_import_names_every_dataset_it_leaves_missing(
    tmp_path: Path, eval_env: Envs
) -> None:
    from quantgate.prefetch import WORKER

    request = tmp_path / "request.json"
    missing = tmp_path / "no_tasks.py"
    datasets = [{"benchmark": "aime24", "task": "aime24"}, {"benchmark": "math_500", "task": "math_500"}]
    request.write_text(json.dumps({"models": [], "datasets": datasets, "task_file": str(missing)}))
    done = subprocess.run(
        [str(eval_env.python("eval")), str(WORKER), str(request)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"MISSING dataset {b}: cannot import {missing}: FileNotFoundError: [Errno 2] No such file or "
        f"directory: '{missing}'"
        for b in ("aime24", "math_500")
    ]


class _LoopbackHub(http.server.BaseHTTPRequestHandler):
    """The three hub routes huggingface_hub 1.33.0's ``snapshot_download`` uses
    (``huggingface_hub/_snapshot_download.py``, ``hf_api.py``, ``file_download.py``): the repository's
    revision (``/api/models/<repo>/revision/<rev>``: its commit), its file tree
    (``/api/models/<repo>/tree/<commit>``) and each file (``/<repo>/resolve/<commit>/<file>``, HEAD for
    its commit, ETag and size, GET for its bytes). Serves ``files`` as repository ``repo``."""

    repo = ""
    files: dict[str, bytes] = {}  # noqa: RUF012 - set per test on a subclass
    commit = "0123456789abcdef0123456789abcdef01234567"
    authorizations: list[str] = []  # noqa: RUF012

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> None:
        path = self.path.split("?")[0]
        self.authorizations.append(f"{self.command} {path}: {self.headers.get('Authorization', '')}")
        api = f"/api/models/{self.repo}/"
        if path.startswith(api + "revision/"):
            siblings = [{"rfilename": name} for name in self.files]
            info = {"id": self.repo, "sha": self.commit, "siblings": siblings}
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        elif path.startswith(api + "tree/"):
            tree = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in self.files.items()
            ]
            self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"})
        elif path.startswith(f"/{self.repo}/resolve/{self.commit}/"):
            name = path.removeprefix(f"/{self.repo}/resolve/{self.commit}/")
            data = self.files.get(name)
            if data is None:
                self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"})
                return
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            self._send(200, data, {"X-Repo-Commit": self.commit, "ETag": etag})
        else:
            self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})

    do_GET = do_HEAD = _route

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
@pytest.mark.usefixtures("eval_env")
def test_a_gpu_fetch_downloads_the_serving_files_into_the_hub_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real snapshot_download against a hub on loopback serving the tiny Llama as the plan's
    repository: its serving files land in the cache (HF_HOME), other files do not, the token is sent
    to the hub (gated repositories need it) and printed nowhere."""
    repo = "RedHatAI/DeepSeek-R1-Distill-Qwen-1.5B-quantized.w4a16"
    source = paths.root() / "fixtures/tinymodel/models/llama"
    files = {p.name: p.read_bytes() for p in sorted(source.iterdir()) if p.is_file()}
    files["original/consolidated.pth"] = b"not a serving file"
    hub = type("Hub", (_LoopbackHub,), {"repo": repo, "files": files, "authorizations": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.delenv("HF_DATASETS_OFFLINE")
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # this hub serves plain HTTP files, no Xet storage
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        node = "suites/test_matrix.py::test_speed[Qwen-1.5B-int4-w4a16-h100-single-stream-code-completion]"
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(json.dumps({"kind": "quantgate-plan", "entries": [{"node_id": node}]}))
        status = main(["prefetch", "--kind", "h100", "--plan", str(plan_file)])
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert status == 0, out
    snapshot = tmp_path / "hf" / "hub" / "models--RedHatAI--DeepSeek-R1-Distill-Qwen-1.5B-quantized.w4a16"
    snapshot = snapshot / "snapshots" / _LoopbackHub.commit
    assert f"ok model {repo}: {snapshot} ({len(files) - 1} files)" in out
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(n for n in files if "/" not in n)
    assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert f"GET /api/models/{repo}/revision/main: Bearer {TOKEN}" in hub.authorizations
    fetched = [line for line in hub.authorizations if "/resolve/" in line]
    assert fetched, "files were fetched"
    assert all(line.endswith(f": Bearer {TOKEN}") for line in fetched), "the token goes with every file"
    assert not any("consolidated.pth" in line for line in fetched), "only serving files are fetched"
    assert TOKEN not in out
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def _shard_plan(tmp_path: Path, shard: str) -> Path:
    """The plan the nightly's plan step writes for one h100 shard (``tools/nightly.sh plan``), from a
    declared inventory (this machine has no NVML)."""
    name = shard.replace("/", "-")
    plan = tmp_path / f"plan-{name}.json"
    command = ["pytest", "suites", "-m", "h100", "--qg-gpus", "h100:8", "--qg-shard", shard, "--collect-only"]
    command += [
        "-q",
        "-p",
        "no:randomly",
        "--qg-plan",
        str(plan),
        "--qg-coverage",
        str(tmp_path / f"{name}.json"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=paths.root(),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return plan


@pytest.mark.slow
def test_the_shards_plans_split_the_kinds_prefetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each shard fetches what its own plan places, and the two shards together what the kind needs."""
    whole = _json_plan(capsys, "--kind", "h100")
    shards = [
        _json_plan(capsys, "--kind", "h100", "--plan", str(_shard_plan(tmp_path, s))) for s in ("1/2", "2/2")
    ]
    for shard, plan_file in zip(shards, sorted(tmp_path.glob("plan-*.json")), strict=True):
        placed = {
            e["node_id"].rsplit("[", 1)[1].rstrip("]") for e in json.loads(plan_file.read_text())["entries"]
        }
        assert {c for m in shard["models"] for c in m["cells"]} == placed
    repos = [{m["repo"] for m in shard["models"]} for shard in shards]
    assert all(repos), "each shard has models to fetch"
    assert repos[0] | repos[1] == {m["repo"] for m in whole["models"]}
