"""``quantgate prefetch``: everything a kind's cells load, on disk before the first cell starts.

Why: a GPU cell that downloads its checkpoint inside ``vllm serve``'s ready timeout, or its dataset
inside lighteval's run, spends GPU time waiting on the network, times out on a 70B model, and fails
on gated GPQA-Diamond without a token, all as cell failures. A prefetch step before the cells makes
each of those an error of its own, named, before any GPU is leased.

What is fetched is read from the same sources the cells use:

* **models**: a GPU kind's cells serve the catalog's repositories (``bf16_repo`` or
  ``quantized_repos[scheme]``, ``suites/catalog/models.yaml``), downloaded into the Hugging Face cache
  with huggingface_hub's ``snapshot_download`` (serving files only: weights, configs, tokenizer,
  templates); the cpu kind's are the kind file's local models (``fixtures/tinymodel/models/...``),
  checked for their files and read by transformers offline;
* **datasets**: the lighteval tasks of the cells' accuracy benchmarks (the catalog's
  ``lighteval_task``), loaded by lighteval's own loader from the kind's task file
  (``fixtures/lane/builtin_tasks.py``): the hub datasets on GPU kinds (HF_TOKEN from the environment
  for gated GPQA-Diamond), the kind's local folders (``accuracy.data``) on the cpu kind. A task the
  task file does not define is listed as skipped on GPU kinds (its cells fail on their own) and is
  missing on the cpu kind.

The cpu kind is offline (``HF_HUB_OFFLINE=1``): its prefetch only verifies, and fails naming the
missing model or dataset. A GPU kind's cells are all of that kind's runnable cells of the matrix, or
only those of a plan (``--plan``, the file the nightly's plan step writes for its shard).
``--dry-run`` prints what would be fetched and runs nothing. The fetching runs in the evaluation
environment (``quantgate.prefetch_worker``), whose output is passed through line by line with the hub
token redacted: the token is never printed, logged or written by this command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantgate.errors import QuantgateError

EXIT_OK, EXIT_MISSING = 0, 1
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Hub user access tokens ("hf_" and 30-40 letters), redacted even when no variable holds them.
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")
REDACTED = "[redacted]"
WORKER = Path(__file__).resolve().parent / "prefetch_worker.py"


@dataclass(frozen=True)
class ModelItem:
    """A checkpoint the cells serve: a hub ``repo`` (GPU kinds) or a local ``path`` (the cpu kind);
    ``weights_gb``: its weights' size estimated from the catalog's architecture (GPU kinds), for the disk
    the cache needs."""

    name: str
    repo: str | None
    path: Path | None
    cells: tuple[str, ...]
    weights_gb: float | None = None


@dataclass(frozen=True)
class DatasetItem:
    """The dataset of a catalog benchmark, as its lighteval ``task`` loads it."""

    benchmark: str
    task: str
    cells: tuple[str, ...]


@dataclass(frozen=True)
class PrefetchPlan:
    """What one kind's selected cells load; ``task_data`` is the cpu kind's local dataset root."""

    kind: str
    offline: bool
    task_file: Path
    task_data: Path | None
    models: tuple[ModelItem, ...]
    datasets: tuple[DatasetItem, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "offline": self.offline,
            "task_file": str(self.task_file),
            "task_data": str(self.task_data) if self.task_data else None,
            "models": [
                {
                    "name": m.name,
                    "repo": m.repo,
                    "path": str(m.path) if m.path else None,
                    "cells": list(m.cells),
                    "weights_gb": m.weights_gb,
                }
                for m in self.models
            ],
            "datasets": [
                {"benchmark": d.benchmark, "task": d.task, "cells": list(d.cells)} for d in self.datasets
            ],
        }

    def describe(self) -> str:
        """The plan for people: one line per model and dataset, with the cells that use it."""
        verb = "verify (offline)" if self.offline else "download into the Hugging Face cache"
        sizes = [m.weights_gb for m in self.models if m.weights_gb is not None]
        if sizes:
            verb += f" (weights about {sum(sizes):,.0f} GB)"
        lines = [
            f"prefetch for {self.kind}: {verb}: {len(self.models)} models, {len(self.datasets)} datasets"
        ]
        for m in self.models:
            where = m.repo if m.repo else f"{m.name}: {m.path}"
            size = f", about {m.weights_gb:,.1f} GB" if m.weights_gb is not None else ""
            lines.append(f"model {where} ({len(m.cells)} cells{size})")
        for d in self.datasets:
            source = f"from {self.task_data / d.benchmark}" if self.task_data else "from the hub"
            lines.append(
                f"dataset {d.benchmark}: lighteval task {d.task} of {self.task_file.name}, {source} "
                f"({len(d.cells)} cells)"
            )
        return "\n".join(lines)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with the hub token (``HF_TOKEN``/``HUGGING_FACE_HUB_TOKEN``'s values, and anything shaped
    like a hub token) replaced by ``[redacted]``."""
    environ = os.environ if environ is None else environ
    for variable in TOKEN_VARIABLES:
        secret = environ.get(variable, "").strip()
        if secret:
            text = text.replace(secret, REDACTED)
    return TOKEN_PATTERN.sub(REDACTED, text)


def _cell_ids_of_plan(path: Path) -> set[str]:
    """The cell ids a ``--qg-plan`` file places (its entries' node ids end in ``[<cell id>]``)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantgateError(path, f"cannot read the plan: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "quantgate-plan":
        raise QuantgateError(path, "not a quantgate plan (--qg-plan)", "kind")
    ids: set[str] = set()
    for index, entry in enumerate(doc.get("entries", [])):
        node = entry.get("node_id") if isinstance(entry, dict) else None
        match = re.search(r"\[([^\[\]]+)\]$", str(node))
        if not match:
            raise QuantgateError(path, f"no cell id in node id {node!r}", f"entries[{index}].node_id")
        ids.add(match.group(1))
    return ids


def _group(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    grouped: dict[str, list[str]] = {}
    for key, cell in pairs:
        grouped.setdefault(key, []).append(cell)
    return {key: tuple(cells) for key, cells in grouped.items()}


def _cpu_plan(kind_file: Path | None) -> PrefetchPlan:
    from quantgate import paths
    from quantgate.catalog import load_catalog
    from quantgate.kinds import load_kind
    from quantgate.pipeline import local_cells

    catalog = load_catalog()
    path = kind_file or paths.kind_file("cpu")
    spec = load_kind(path, catalog)
    if not spec.cpu:
        raise QuantgateError(path, f"lists {', '.join(spec.kinds)}, not the cpu kind", "kinds")
    root = paths.root()

    def at(relative: Path) -> Path:
        return relative if relative.is_absolute() else root / relative

    cells = local_cells(spec)
    models = _group((c.model, c.cell_id) for c in cells)
    benchmarks = _group((c.benchmark, c.cell_id) for c in cells if c.benchmark is not None)
    return PrefetchPlan(
        kind="cpu",
        offline=True,
        task_file=at(spec.accuracy.task_file),
        task_data=at(spec.accuracy.data) if spec.accuracy.data is not None else None,
        models=tuple(ModelItem(m, None, at(spec.models[m].dir), ids) for m, ids in models.items()),
        datasets=tuple(
            DatasetItem(b, catalog.benchmark(b).lighteval_task or b, ids) for b, ids in benchmarks.items()
        ),
    )


def _gpu_plan(kind: str, kind_file: Path | None, plan_file: Path | None) -> PrefetchPlan:
    from quantgate import paths
    from quantgate.catalog import load_catalog
    from quantgate.devices.fit import weight_bytes_per_gpu
    from quantgate.kinds import load_kind
    from quantgate.matrix import expand, gpu_kinds

    catalog = load_catalog()
    if kind not in gpu_kinds(catalog):
        known = ", ".join(["cpu", *gpu_kinds(catalog)])
        raise QuantgateError(catalog.file("gpus"), f"unknown device kind {kind!r}; known: {known}", "--kind")
    path = kind_file or paths.kind_file("gpu")
    spec = load_kind(path, catalog)
    if kind not in spec.kinds:
        raise QuantgateError(path, f"does not describe the {kind} kind ({', '.join(spec.kinds)})", "kinds")
    cells = [c for c in expand(catalog) if c.gpu == kind and c.skip_reason is None]
    if plan_file is not None:
        wanted = _cell_ids_of_plan(plan_file)
        cells = [c for c in cells if c.cell_id in wanted]

    def repository(model: str, scheme: str) -> str:
        spec_model = catalog.model(model)
        repo = spec_model.bf16_repo if scheme == "bf16" else spec_model.quantized_repos.get(scheme)
        if repo is None:
            raise QuantgateError(catalog.file("models"), f"no {scheme} repository", model)
        return repo

    models = _group((repository(c.model, c.scheme), c.cell_id) for c in cells)
    sizes = {
        repository(c.model, c.scheme): weight_bytes_per_gpu(
            catalog.model(c.model), catalog.scheme(c.scheme), 1
        )
        / 1e9
        for c in cells
    }
    benchmarks = _group((c.benchmark, c.cell_id) for c in cells if c.benchmark is not None)
    task_file = spec.accuracy.task_file
    return PrefetchPlan(
        kind=kind,
        offline=spec.offline,
        task_file=task_file if task_file.is_absolute() else paths.root() / task_file,
        task_data=None,
        models=tuple(ModelItem(repo, repo, None, ids, round(sizes[repo], 1)) for repo, ids in models.items()),
        datasets=tuple(
            DatasetItem(b, catalog.benchmark(b).lighteval_task or b, ids)
            for b, ids in sorted(benchmarks.items())
        ),
    )


def plan_for(kind: str, kind_file: Path | None = None, plan_file: Path | None = None) -> PrefetchPlan:
    """What the selected cells of ``kind`` load (all of the kind's runnable cells, or a plan's)."""
    if kind == "cpu":
        if plan_file is not None:
            raise QuantgateError(
                plan_file, "the cpu kind's plan places no cells; prefetch all of them", "--plan"
            )
        return _cpu_plan(kind_file)
    return _gpu_plan(kind, kind_file, plan_file)


def worker_request(plan: PrefetchPlan) -> dict[str, Any]:
    """The evaluation environment's job (``quantgate.prefetch_worker``)."""
    return {
        "models": [
            {"name": m.name, "repo": m.repo} if m.repo else {"name": m.name, "path": str(m.path)}
            for m in plan.models
        ],
        "datasets": [{"benchmark": d.benchmark, "task": d.task} for d in plan.datasets],
        "task_file": str(plan.task_file),
        "undefined_tasks": "missing" if plan.offline else "skip",
    }


def worker_env(plan: PrefetchPlan, scratch: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: this one (HF_TOKEN included, for huggingface_hub to read), offline and
    pointed at the local task data on the cpu kind, the hub datasets on GPU kinds.

    Offline, ``datasets`` gets an empty cache in ``scratch``: it caches a local folder by its name, not
    its rows (``fixtures/lane/builtin_tasks.py``), so the shared cache could answer for files that
    changed or are gone; verifying means reading the files."""
    env = {
        k: v for k, v in (os.environ if environ is None else environ).items() if k != "QUANTGATE_TASK_DATA"
    }
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # litellm (imported by lighteval) fetches it otherwise
    if plan.offline:
        env.update(OFFLINE_ENV)
        env["HF_DATASETS_CACHE"] = str(scratch / "datasets")
        env["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"  # datasets/config.py: a fresh cache draws them
    if plan.task_data is not None:
        env["QUANTGATE_TASK_DATA"] = str(plan.task_data)
    return env


def fetch(plan: PrefetchPlan, python: Path, out: Any = None) -> int:
    """Run the worker in the evaluation environment ``python``; its lines go to ``out`` redacted.
    Returns the worker's status: 0 all present, 1 something missing."""
    out = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="qg-prefetch-") as scratch:
        request = Path(scratch) / "request.json"
        request.write_text(json.dumps(worker_request(plan)), encoding="utf-8")
        lines: list[str] = []
        with subprocess.Popen(
            [str(python), str(WORKER), str(request)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=worker_env(plan, Path(scratch)),
            cwd=scratch,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                line = redact(line)
                lines.append(line)
                out.write(line)
                out.flush()
            status = process.wait()
    if status not in (EXIT_OK, EXIT_MISSING):
        raise QuantgateError(
            WORKER, f"the prefetch worker failed (exit {status}): {''.join(lines[-5:]).strip()}"
        )
    return status


NAME = "prefetch"
HELP = "download (GPU kinds) or verify (cpu) the models and datasets a kind's cells load"
DESCRIPTION = (
    "Before any cell runs: download the selected cells' checkpoints and lighteval datasets into "
    "the Hugging Face cache (GPU kinds; HF_TOKEN from the environment for gated datasets), or "
    "verify the cpu kind's local models and datasets offline. Exit 0 when everything is there, "
    "1 naming what is missing, 2 on bad input."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``prefetch`` subcommand's arguments; ``quantgate.cli`` registers it with ``run``."""
    parser.add_argument("--kind", required=True, help="device kind: cpu, or a GPU kind such as h100")
    parser.add_argument(
        "--plan", metavar="FILE", help="only the cells of this plan (pytest --qg-plan FILE; GPU kinds)"
    )
    parser.add_argument(
        "--kind-file", metavar="FILE", help="the kind file (default: suites/kinds/cpu.yaml or gpu.yaml)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be fetched; fetch nothing")
    parser.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    """The ``prefetch`` command (see ``add_parser``)."""
    from quantgate.envs import Envs

    if args.json and not args.dry_run:
        raise QuantgateError(None, "prints the plan only: give --dry-run with it", "--json")
    plan = plan_for(
        args.kind,
        Path(args.kind_file) if args.kind_file else None,
        Path(args.plan) if args.plan else None,
    )
    if args.dry_run:
        print(json.dumps(plan.as_dict(), indent=1) if args.json else plan.describe())
        return EXIT_OK
    print(plan.describe(), flush=True)
    status = fetch(plan, Envs.from_environment().python("eval"))
    print(f"prefetch for {plan.kind}: {'complete' if status == EXIT_OK else 'items missing (above)'}")
    return status
