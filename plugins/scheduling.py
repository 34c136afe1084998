"""The pytest-xdist scheduler quantgate installs for ``-n N`` (``--dist load``, the default, or loadgroup).

Why a scheduler at all: all cells of one served model must run on one worker, back to back, in the
plugin's longest-first collection order. xdist's ``loadgroup`` does the grouping, from node ids that
the workers suffix with ``@<served model>`` (the controller sees nothing else of an item,
pytest-dev/pytest-xdist#709), but it re-sorts groups by test count (``--loadscope-reorder``), and
making every ``-n`` run ``loadgroup`` slowed quantgate's own CPU test suite from 31 s to 43 s on two
cores (one test per round trip instead of ``load``'s batches).

So this class decides once, in ``schedule()``, when every worker's collection is in:

* no node id carries a group suffix -> xdist's ``LoadScheduling`` (or ``LoadGroupScheduling`` if
  ``--dist loadgroup`` was asked for), exactly as without quantgate;
* some do -> ``LoadGroupScheduling`` with reordering off, so served models go to workers in the
  collection order.

Everything else is delegated; calls that arrive before the choice (workers coming up, their
collections) are replayed into the chosen scheduler. Example node ids and the work units they form::

    tests/test_judge.py::test_pass                                     -> its own unit
    suites/test_accuracy.py::test_cell[Qwen-7B-bf16-h100-aime24]@Qwen-7B/bf16/h100/tp1   -> unit
    suites/test_performance.py::test_cell[Qwen-7B-bf16-h100-rag-...]@Qwen-7B/bf16/h100/tp1  -> same unit
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest


def has_group(node_id: str) -> bool:
    """Whether xdist's loadgroup rewrite suffixed ``node_id`` with ``@<group>``."""
    return node_id.rfind("@") > node_id.rfind("]")


class ServedModelScheduling:
    """A ``xdist.scheduler.Scheduling`` that picks ``load`` or ``loadgroup`` from the collection."""

    def __init__(self, config: pytest.Config, log: Any = None, dist: str = "load") -> None:
        from xdist.workermanage import parse_tx_spec_config

        self.config = config
        self.log = log
        self.dist = dist
        self.numnodes = len(parse_tx_spec_config(config))
        self.inner: Any = None
        self._nodes: list[Any] = []
        self._collections: dict[Any, list[str]] = {}

    # -- before the choice ----------------------------------------------------------------------------

    @property
    def nodes(self) -> list[Any]:
        return list(self.inner.nodes) if self.inner is not None else list(self._nodes)

    @property
    def collection_is_completed(self) -> bool:
        if self.inner is not None:
            return bool(self.inner.collection_is_completed)
        return len(self._collections) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        return self.inner is not None and bool(self.inner.tests_finished)

    @property
    def has_pending(self) -> bool:
        return self.inner is not None and bool(self.inner.has_pending)

    def add_node(self, node: Any) -> None:
        if self.inner is not None:
            self.inner.add_node(node)
        else:
            self._nodes.append(node)

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        if self.inner is not None:
            self.inner.add_node_collection(node, collection)
        else:
            self._collections[node] = list(collection)

    def remove_node(self, node: Any) -> str | None:
        if self.inner is not None:
            crashed: str | None = self.inner.remove_node(node)
            return crashed
        if node in self._nodes:
            self._nodes.remove(node)
        self._collections.pop(node, None)
        return None

    def schedule(self) -> None:
        if self.inner is None:
            self.inner = self._choose()
            for node in self._nodes:
                self.inner.add_node(node)
            for node in self._nodes:
                if node in self._collections:
                    self.inner.add_node_collection(node, self._collections[node])
        self.inner.schedule()

    def _choose(self) -> Any:
        from xdist.scheduler import LoadGroupScheduling, LoadScheduling

        grouped = any(has_group(n) for ids in self._collections.values() for n in ids)
        if grouped:
            self.config.option.loadscopereorder = False  # keep the longest-first collection order
            return LoadGroupScheduling(self.config, self.log)
        if self.dist == "loadgroup":
            return LoadGroupScheduling(self.config, self.log)
        return LoadScheduling(self.config, self.log)

    # -- after the choice -----------------------------------------------------------------------------

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        self.inner.mark_test_complete(node, item_index, duration)

    def mark_test_pending(self, item: str) -> None:
        self.inner.mark_test_pending(item)

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        self.inner.remove_pending_tests_from_node(node, indices)
