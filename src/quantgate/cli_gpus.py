"""``quantgate gpus``: which GPUs are here, and what of the matrix they can run.

Before a GPU run a user should see what quantgate will see: the devices NVML reports (restricted by
``CUDA_VISIBLE_DEVICES``) mapped to catalog kinds, or, when there are none, why. With ``--declare
h100:8`` (no hardware needed) or when devices are found, it also prints the fit of every model x
scheme on each kind present: the served model's tensor-parallel size, per-GPU memory (weights,
activations and runtime, KV cache) against the 0.9 budget, and whether the inventory can hold it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from quantgate.catalog import Catalog, load_catalog
from quantgate.devices.inventory import Inventory, InventoryUnavailable, declared_inventory, nvml_inventory
from quantgate.errors import QuantgateError

EXIT_OK = 0
EXIT_MISSING = 1


NAME = "gpus"
HELP = "show the GPU inventory and which served models fit on it"
DESCRIPTION = (
    "List the GPUs NVML reports (honouring CUDA_VISIBLE_DEVICES) or say why there are none; "
    "with --declare, or when GPUs are found, show the fit of every model x scheme on them."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``gpus`` subcommand's arguments; ``quantgate.cli`` registers it with ``run``."""
    parser.add_argument(
        "--declare",
        metavar="SPEC",
        help="plan for this inventory instead of asking NVML, e.g. h100:8,a6000:4",
    )
    parser.add_argument(
        "--expect",
        metavar="KIND:N",
        help="a runner's check: exit 1 with the reason unless NVML shows at least N GPUs of KIND "
        "(cpu:N: at least N usable CPU cores, the cpu kind's workers)",
    )
    parser.add_argument("--json", action="store_true", help="print the inventory and fit as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the inventory (and fit); 0, 1 when ``--expect`` is not met (NVML unreadable included), or
    (through ``quantgate.cli``) 2 on a bad ``--declare``/``--expect``."""
    if args.expect is not None and args.expect.partition(":")[0] == "cpu":
        return expect_cpu(args.expect)
    catalog = load_catalog()
    if args.declare is not None:
        inventory = declared_inventory(args.declare, catalog, source=f"--declare {args.declare}")
    else:
        try:
            inventory = nvml_inventory(catalog)
        except InventoryUnavailable as exc:
            inventory = Inventory((), "NVML", exc.message)
    rows = fit_rows(catalog, inventory)
    if args.json:
        json.dump({"inventory": inventory.as_dict(), "fit": rows}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _print_inventory(inventory, sys.stdout)
        if rows:
            sys.stdout.write("\n")
            _write_rows(_fit_table(rows), sys.stdout)
    if args.expect is not None:
        missing = unmet_expectation(args.expect, catalog, inventory)
        if missing:
            sys.stderr.write(f"quantgate gpus: --expect {args.expect}: {missing}\n")
            return EXIT_MISSING
    return EXIT_OK


def expect_cpu(spec: str, cores: int | None = None) -> int:
    """The cpu kind's runner check: at least N CPU cores usable by this process (its affinity)."""
    count = spec.partition(":")[2]
    if not count.isdigit() or int(count) < 1:
        raise QuantgateError(None, f"cpu:N needs a positive number of cores, got {spec!r}", "--expect")
    have = cores if cores is not None else len(os.sched_getaffinity(0))
    sys.stdout.write(f"cpu: {have} usable cores\n")
    if have < int(count):
        sys.stderr.write(f"quantgate gpus: --expect {spec}: {count} cores expected, {have} usable\n")
        return EXIT_MISSING
    return EXIT_OK


def unmet_expectation(spec: str, catalog: Catalog, inventory: Inventory) -> str | None:
    """Why ``inventory`` does not hold what ``KIND:N`` expects, or ``None`` when it does."""
    expected = declared_inventory(spec, catalog, source=f"--expect {spec}")
    for kind in sorted({d.kind for d in expected.devices if d.kind is not None}):
        need, have = expected.count(kind), inventory.count(kind)
        if have < need:
            why = f": {inventory.note}" if inventory.note else ""
            return f"{need}x {kind} expected, {have} visible from {inventory.source}{why}"
    return None


def fit_rows(catalog: Catalog, inventory: Inventory) -> list[dict[str, Any]]:
    """One row per model x scheme x GPU kind present in ``inventory``."""
    from quantgate.matrix import served_models

    present = {d.kind for d in inventory.devices if d.kind is not None}
    rows: list[dict[str, Any]] = []
    for (model, scheme, gpu), served in served_models(catalog).items():
        if gpu not in present:
            continue
        estimate = served.fit.estimate
        count = served.requirement.count
        have = inventory.count(gpu)
        if served.skip_reason is not None:
            status = f"skip: {served.skip_reason}"
        elif have < count:
            status = f"needs {count}x {gpu}, {have} here"
        else:
            status = f"runs on {count} of {have}"
        rows.append(
            {
                "model": model,
                "scheme": scheme,
                "gpu": gpu,
                "served_model": served.key,
                "tp": served.fit.tp,
                "weights_gb": round(estimate.weights_gb, 2) if estimate else None,
                "activation_gb": round(estimate.activation_gb + estimate.runtime_gb, 2) if estimate else None,
                "kv_gb": round(estimate.kv_gb, 2) if estimate else None,
                "need_gb": round(estimate.need_gb, 2) if estimate else None,
                "budget_gb": round(estimate.capacity_gb, 2) if estimate else None,
                "status": status,
            }
        )
    return rows


def _print_inventory(inventory: Inventory, out: TextIO) -> None:
    if not inventory.devices:
        out.write(
            f"no GPU inventory: {inventory.source}" + (f": {inventory.note}" if inventory.note else "") + "\n"
        )
        return
    out.write(f"GPU inventory: {inventory.describe()}\n")
    rows: list[tuple[str, ...]] = [("INDEX", "KIND", "NAME", "MEMORY GiB", "FREE GiB", "CC", "UUID")]
    for d in inventory.devices:
        rows.append(
            (
                str(d.index),
                d.kind or "-",
                d.name,
                f"{d.memory_gb:.1f}",
                f"{d.free_gb:.1f}",
                f"{d.compute_capability:.1f}" if d.compute_capability else "-",
                d.uuid or "-",
            )
        )
    _write_rows(rows, out)


def _fit_table(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    table: list[tuple[str, ...]] = [
        ("MODEL", "SCHEME", "GPU", "TP", "WEIGHTS", "ACT+RT", "KV", "NEED/GPU", "BUDGET", "STATUS")
    ]

    def gib(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for r in rows:
        table.append(
            (
                r["model"],
                r["scheme"],
                r["gpu"],
                str(r["tp"] or "-"),
                gib(r["weights_gb"]),
                gib(r["activation_gb"]),
                gib(r["kv_gb"]),
                gib(r["need_gb"]),
                gib(r["budget_gb"]),
                r["status"],
            )
        )
    return table


def _write_rows(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
