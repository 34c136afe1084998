"""How far the planning estimates are from the published performance tables, before and after.

Before: ``quantgate.matrix.catalog_cell_seconds``, the catalog's duration model with two crude rates: a
decode time per generated token at batch 1 (``ITL_BASE_S + ITL_PER_B_S x params_b / gpus``) and a
batched decode throughput (``gpus / (params_b x SECONDS_PER_TOKEN_PER_B)`` tokens/s), whatever the scheme
and GPU kind. After: ``quantgate.devices.rates.PublishedRates``, which ``estimate_cell_seconds`` plans
with wherever the cards measured the GPU kind and scheme.

The truth is the cards' own figures (``baselines/published``, vLLM 0.7.2, Feb 2025): single-stream
request latency per workload, and the highest request rate (max QPS) that kept to the cards' limits
(compared as token throughput, ``max QPS x output_tokens``). Where a figure exists the published
estimate *is* that figure (ratio 1.00 by construction), so the "after" column is **held out**: each
figure is predicted from the tables less every figure of its model (the other sizes on the same GPU
kind, scheme and workload, interpolated or extrapolated by parameters per GPU), which is what planning
does for a model or GPU count the cards did not print. Nothing is fitted beyond that interpolation.

Printed per scenario and GPU kind: figures, then before and after (held out) the median ratio
estimate/published and the share within 2x; and the totals per scenario. Accuracy cells are timed with
``ACCURACY_WORKLOAD``'s throughput (reasoning answers are longer than any published workload): that
transfer has no published truth and is not measured here. Run: ``python benchmarks/estimate_error.py``.
No target.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from quantgate.catalog import load_catalog  # noqa: E402
from quantgate.devices.rates import PUBLISHED_FILE, PublishedRates  # noqa: E402
from quantgate.matrix import ITL_BASE_S, ITL_PER_B_S, SECONDS_PER_TOKEN_PER_B  # noqa: E402
from quantgate.published import load_published  # noqa: E402

PUBLISHED = REPO / "baselines" / "published" / PUBLISHED_FILE


def summary(values: Sequence[float]) -> str:
    """Median ratio and share within 2x, or dashes when there is nothing to summarise."""
    if not values:
        return f"{'-':>7} {'-':>6}"
    within = sum(1 for v in values if 0.5 <= v <= 2.0) / len(values)
    return f"{statistics.median(values):>7.2f} {within:>6.0%}"


def main() -> int:
    catalog = load_catalog()
    published = load_published(PUBLISHED, catalog)
    rates = PublishedRates.from_file(PUBLISHED, catalog)
    held_out = {model: rates.without(model) for model in catalog.models}
    before: dict[tuple[str, str], list[float]] = defaultdict(list)
    after: dict[tuple[str, str], list[float]] = defaultdict(list)
    for entry in published.performance:
        model = catalog.models[entry.model]
        output = catalog.workload(entry.workload).output_tokens
        gpus = max(1, int(entry.gpu_count))
        others = held_out[entry.model]
        args = (entry.gpu, entry.scheme, entry.workload, model.params_b, gpus)
        if entry.metric == "latency_s":
            key = ("single-stream", entry.gpu)
            before[key].append(output * (ITL_BASE_S + ITL_PER_B_S * model.params_b / gpus) / entry.value)
            latency = others.latency_s(*args)
            if latency is not None:
                after[key].append(latency / entry.value)
        elif entry.metric == "max_qps":
            key = ("multi-stream", entry.gpu)
            measured_tps = entry.value * output
            before[key].append(gpus / (model.params_b * SECONDS_PER_TOKEN_PER_B) / measured_tps)
            tps = others.tokens_per_s(*args)
            if tps is not None:
                after[key].append(tps / measured_tps)
    print("estimate / published per figure (1.0: exact); after: the published tables less the figure's model")
    head = f"{'scenario':<14} {'gpu':<6} {'figures':>7}"
    print(f"{head}   {'before':>7} {'in 2x':>6}   {'after':>7} {'in 2x':>6}")
    totals: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for key in sorted(before):
        totals[key[0]][0].extend(before[key])
        totals[key[0]][1].extend(after[key])
        print(
            f"{key[0]:<14} {key[1]:<6} {len(before[key]):>7}   {summary(before[key])}   {summary(after[key])}"
        )
    for scenario, (old, new) in totals.items():
        print(
            f"{scenario:<14} {'all':<6} {len(old):>7}   {summary(old)}   {summary(new)}"
            f"   ({len(new)} held-out predictions)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
