"""How far the catalog's duration model is from the published performance tables.

``quantgate.matrix.estimate_cell_seconds`` plans with two crude rates: a decode time per generated
token at batch 1 (``ITL_BASE_S + ITL_PER_B_S x params_b / gpus``) and a batched decode throughput
(``gpus / (params_b x SECONDS_PER_TOKEN_PER_B)`` tokens/s), whatever the scheme and GPU kind. The model
cards measured both (``baselines/published``, vLLM 0.7.2, Feb 2025): single-stream request latency per
workload, and the highest request rate (max QPS) that kept to the cards' limits. This script compares,
per published figure:

* single stream: the estimate ``output_tokens x ITL`` against the published latency;
* multi stream: the estimate's token throughput against ``max QPS x output_tokens`` (a lower bound of
  what the GPUs decode when batched: prefill and the cards' latency limits cost some of it).

Printed per GPU kind and scheme: the median ratio estimate/published and the share within 2x; and the
figures' spread, so a reader sees how much planning with the published tables would gain. Run:
``python benchmarks/estimate_error.py``. No target: this is the measurement the next planning step
(published throughput where it exists, then learned durations) starts from.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from quantgate.catalog import load_catalog  # noqa: E402
from quantgate.matrix import ITL_BASE_S, ITL_PER_B_S, SECONDS_PER_TOKEN_PER_B  # noqa: E402
from quantgate.published import load_published  # noqa: E402

PUBLISHED = REPO / "baselines" / "published" / "cards-2025-02.json"


def main() -> int:
    catalog = load_catalog()
    published = load_published(PUBLISHED, catalog)
    ratios: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for entry in published.performance:
        model = catalog.models[entry.model]
        workload = catalog.workload(entry.workload)
        gpus = max(1, int(entry.gpu_count))
        if entry.metric == "latency_s":
            estimate = workload.output_tokens * (ITL_BASE_S + ITL_PER_B_S * model.params_b / gpus)
            ratios[("single-stream", entry.gpu, entry.scheme)].append(estimate / entry.value)
        elif entry.metric == "max_qps" and entry.value > 0:
            estimate_tps = gpus / (model.params_b * SECONDS_PER_TOKEN_PER_B)
            measured_tps = entry.value * workload.output_tokens
            ratios[("multi-stream", entry.gpu, entry.scheme)].append(estimate_tps / measured_tps)
    print("estimate / published, per scenario, GPU kind and scheme (1.0: the estimate is exact)")
    head = f"{'scenario':<14} {'gpu':<6} {'scheme':<11} {'figures':>7} {'median':>7}"
    print(f"{head} {'min':>6} {'max':>6} {'within 2x':>9}")
    overall: dict[str, list[float]] = defaultdict(list)
    for (scenario, gpu, scheme), values in sorted(ratios.items()):
        overall[scenario] += values
        within = sum(1 for v in values if 0.5 <= v <= 2.0) / len(values)
        print(
            f"{scenario:<14} {gpu:<6} {scheme:<11} {len(values):>7} {statistics.median(values):>7.2f} "
            f"{min(values):>6.2f} {max(values):>6.2f} {within:>9.0%}"
        )
    for scenario, values in overall.items():
        within = sum(1 for v in values if 0.5 <= v <= 2.0) / len(values)
        print(
            f"{scenario}: {len(values)} figures, median ratio {statistics.median(values):.2f}, "
            f"range {min(values):.2f}-{max(values):.2f}, {within:.0%} within 2x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
