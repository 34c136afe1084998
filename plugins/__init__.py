"""quantgate's pytest plugins; the root ``conftest.py`` loads them all."""

from __future__ import annotations

from typing import Final

# What a project needs to collect, place and plan a matrix suite without running its lane: the toy
# projects of tests/test_gpu_plugin.py and benchmarks/plan_makespan.py load these, in this order.
PLANNING_PLUGINS: Final = (
    "plugins.options",
    "plugins.status",
    "plugins.history",
    "plugins.gpu",
    "plugins.budget",
    "plugins.coverage",
    "plugins.matrix",
)
