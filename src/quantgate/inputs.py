"""What a cell's verdict was given on, as short named fingerprints: when one changes, the verdict is stale.

Why: a job with a budget runs part of the matrix each night. The cells whose inputs changed since their
last verdict (a new checkpoint, a new vLLM, a changed setting) run first, and the gate does not let a
deferred cell pass on a verdict given on other inputs. The names say what changed:

* ``checkpoint``: the weights served (a local model's committed weights hash and the scheme's recipe; on
  GPU kinds the catalog's repository for the scheme),
* ``tools``: vLLM, lighteval and llmcompressor as installed in the tool environments,
* ``settings``: the kind file (cpu), or the catalog entries of the cell's model (but its repositories)
  and target (GPU kinds),
* ``device``: the device kind, and the driver when NVML reported one.

Cheap enough for collection: small files hashed, versions read from package metadata, once per model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from quantgate.catalog import Catalog
from quantgate.envs import Envs, sha256_file
from quantgate.kinds import KindSpec
from quantgate.matrix import MatrixCell
from quantgate.runners.quantize import recipe_path

TOOLS = ("vllm", "lighteval", "llmcompressor")


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tool_versions(envs: Envs) -> str:
    return ", ".join(f"{tool} {envs.version(tool)}" for tool in TOOLS)


def local_cell_inputs(
    cell: MatrixCell, spec: KindSpec, kind_file: Path, root: Path, tools: str
) -> dict[str, str]:
    """Inputs of a cell of a kind with local models (the cpu kind)."""
    build = root / spec.models[cell.model].dir / "build.json"
    weights = json.loads(build.read_text()).get("weights_sha256", "") if build.is_file() else "no build.json"
    recipe = "" if cell.scheme == "bf16" else sha256_file(recipe_path(cell.scheme))
    return {
        "checkpoint": digest([weights, cell.scheme, recipe]),
        "tools": tools,
        "settings": digest(kind_file.read_text()),
        "device": cell.gpu,
    }


def catalog_cell_inputs(
    cell: MatrixCell,
    catalog: Catalog,
    tools: str,
    driver: str | None = None,
    settings_cache: dict[tuple[str, str], str] | None = None,
) -> dict[str, str]:
    """Inputs of a cell of the catalog's matrix (GPU kinds); ``settings_cache`` keeps the settings digest
    per (model, target), which thousands of cells share."""
    model = catalog.model(cell.model)
    cache = {} if settings_cache is None else settings_cache
    key = (cell.model, cell.target)
    if key not in cache:
        target: Any = (
            catalog.benchmark(cell.target)
            if cell.kind == "accuracy"
            else [catalog.scenario(str(cell.scenario)), catalog.workload(str(cell.workload))]
        )
        cache[key] = digest([_plain(model, without=("bf16_repo", "quantized_repos")), _plain(target)])
    repository = model.bf16_repo if cell.scheme == "bf16" else model.quantized_repos.get(cell.scheme, "")
    return {
        "checkpoint": str(repository),
        "tools": tools,
        "settings": cache[key],
        "device": cell.gpu + (f", driver {driver}" if driver else ""),
    }


def _plain(value: Any, without: tuple[str, ...] = ()) -> Any:
    """Catalog entries as JSON data; ``without`` leaves fields out (the checkpoint names the repository)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude=set(without)) if callable(dump) else value
