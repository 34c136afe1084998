"""The part of ``quantgate prefetch`` that runs inside the evaluation environment.

Run as ``<eval env>/bin/python prefetch_worker.py REQUEST.json`` by ``quantgate.prefetch``: it has the
tools that fetch (huggingface_hub, datasets, lighteval), which quantgate's own environment does not.
The request (JSON) lists models, as hub repositories to download or local folders to verify, and
datasets, as lighteval task names to load through lighteval's own loader
(``LightevalTask.download_dataset_worker``: the same ``datasets.load_dataset`` call, with the same
repository, subset and revision, that a cell's evaluation makes later), from the task file the kind
evaluates with. With ``HF_HUB_OFFLINE=1`` (the cpu kind) the same calls only read what is on disk, so a
missing item fails here, named, before any cell starts.

One line per item on stdout: ``ok model <name>: ...``, ``skip dataset <benchmark>: ...`` (a task the
task file does not define, when the request allows it), or ``MISSING <model|dataset> <name>: <why>``;
exit 0 when nothing is missing, 1 otherwise, 2 on a bad request. The hub token is read by
huggingface_hub from ``HF_TOKEN`` itself (``huggingface_hub/utils/_auth.py``, 1.33.0) and never passed
or printed here; the caller also redacts it from everything this prints. Standard library only at
import: the tools are imported when their items are fetched.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

# What vLLM loads from a checkpoint: weights, config, tokenizer, chat template, generation config.
MODEL_FILES = ["*.safetensors", "*.json", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
GATED_HINT = (
    "the dataset is gated: set HF_TOKEN (the workflow passes secrets.HF_TOKEN) to a token whose account "
    "has accepted its terms on the hub"
)


def _why(exc: BaseException) -> str:
    """One line: the exception's type, the first line of its message and, for the hub's HTTP errors,
    what the server said (``HfHubHTTPError.server_message``: why a gated repository refused)."""
    text = str(exc).strip().splitlines()
    why = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    server = " ".join(str(getattr(exc, "server_message", "") or "").split())
    return f"{why} (the hub says: {server})" if server else why


def _gated(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if "gated" in type(seen).__name__.lower() or "gated" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def local_model(name: str, folder: Path) -> str:
    """Check a local model folder holds what vLLM loads, and that transformers reads its config and
    tokenizer offline; return a one-line summary, or raise with what is missing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder {folder}")
    missing = [f for f in ("config.json", "tokenizer_config.json") if not (folder / f).is_file()]
    if not sorted(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise FileNotFoundError(f"{folder} has no {', '.join(missing)}")
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return f"{folder} ({config.model_type}, vocabulary {len(tokenizer)})"


def hub_model(repo: str) -> str:
    """Download (or find current in the cache) a hub repository's serving files; return its snapshot."""
    # huggingface_hub 1.33.0 (the eval environment): snapshot_download(repo_id, *, allow_patterns, ...)
    # returns the snapshot folder (huggingface_hub/_snapshot_download.py); the token is read from HF_TOKEN.
    hub = importlib.import_module("huggingface_hub")
    path = Path(hub.snapshot_download(repo, allow_patterns=MODEL_FILES))
    if not (path / "config.json").is_file() or not sorted(path.glob("*.safetensors")):
        raise FileNotFoundError(f"{repo}: the snapshot at {path} has no config.json or *.safetensors weights")
    files = sum(1 for p in path.rglob("*") if p.is_file())
    return f"{path} ({files} files)"


def task_table(task_file: Path) -> dict[str, Any]:
    """The task file's lighteval task configs by name (its ``TASKS_TABLE``)."""
    spec = importlib.util.spec_from_file_location("quantgate_prefetch_tasks", task_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {task_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {config.name: config for config in module.TASKS_TABLE}


def dataset(config: Any) -> str:
    """Load a task's dataset as lighteval does and check its evaluation splits are there."""
    from lighteval.tasks.lighteval_task import LightevalTask

    task = LightevalTask(config)
    loaded = LightevalTask.download_dataset_worker(task)
    splits = list(config.evaluation_splits)
    absent = [s for s in splits if s not in loaded]
    if absent:
        raise KeyError(f"split {', '.join(absent)} not in {sorted(loaded)}")
    rows = ", ".join(f"{s} {len(loaded[s])} rows" for s in splits)
    return f"{config.hf_repo} ({config.hf_subset}): {rows}"


def run(request: dict[str, Any]) -> int:
    """Fetch or verify every item of ``request``; print one line each; 0 when none is missing."""
    missing = 0

    def report(ok: bool, what: str, name: str, text: str) -> None:
        nonlocal missing
        missing += not ok
        print(f"{'ok' if ok else 'MISSING'} {what} {name}: {text}", flush=True)

    for model in request["models"]:
        try:
            if "repo" in model:
                report(True, "model", model["name"], hub_model(model["repo"]))
            else:
                report(True, "model", model["name"], local_model(model["name"], Path(model["path"])))
        except Exception as exc:
            report(False, "model", model["name"], _why(exc))
    if request["datasets"]:
        try:
            table = task_table(Path(request["task_file"]))
        except Exception as exc:
            why = f"cannot import {request['task_file']}: {_why(exc)}"
            for item in request["datasets"]:
                report(False, "dataset", item["benchmark"], why)
            return 1
        for item in request["datasets"]:
            name, task = item["benchmark"], item["task"]
            config = table.get(task)
            if config is None:
                text = f"lighteval task {task!r} is not defined by {request['task_file']}"
                if request.get("undefined_tasks") == "skip":
                    print(f"skip dataset {name}: {text}: nothing to fetch", flush=True)
                else:
                    report(False, "dataset", name, text)
                continue
            try:
                report(True, "dataset", name, f"lighteval task {task}, {dataset(config)}")
            except Exception as exc:
                hint = f"; {GATED_HINT}" if _gated(exc) else ""
                where = f"lighteval task {task}, {config.hf_repo} ({config.hf_subset})"
                report(False, "dataset", name, f"{where}: {_why(exc)}{hint}")
    return 1 if missing else 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: prefetch_worker.py REQUEST.json\n")
        return 2
    try:
        request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"prefetch_worker: {argv[0]}: {exc}\n")
        return 2
    return run(request)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
