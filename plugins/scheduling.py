"""The pytest-xdist scheduler quantgate installs for ``-n N`` (``--dist load``, the default, or loadgroup).

Why a scheduler at all: all cells of one served model must run on one worker, back to back, in the
plugin's longest-first collection order, and the controller sees nothing of an item but its node id
(pytest-dev/pytest-xdist#709). xdist's ``loadgroup`` gets groups into node ids by rewriting
``item._nodeid`` on the workers; pytest 9.2 keeps node ids elsewhere (``Node._id``), so with
pytest-xdist 3.8 that rewrite silently does nothing. And making every ``-n`` run ``loadgroup``
slowed quantgate's own CPU test suite from 31 s to 43 s on two cores (one test per round trip
instead of ``load``'s batches).

So the grouping travels as data: during collection, worker ``gw0`` writes ``groups.json`` (node id ->
served model, for every test that needs GPUs) into the run's shared lease directory, before it
reports its collection. When every collection is in, ``ServedModelScheduling.schedule()`` reads it
and picks:

* no groups -> xdist's own ``LoadScheduling`` (``LoadGroupScheduling`` if ``--dist loadgroup`` was
  asked for): exactly what the run would do without quantgate;
* groups -> ``ServedModelScopes``, a ``LoadScopeScheduling`` whose only change is the scope of a node
  id (its served model, or the node id itself), with reordering by test count off so that served
  models are handed out longest first, as collected.

Everything else is delegated; calls that arrive before the choice (workers coming up, their
collections) are replayed into the chosen scheduler. Example scopes::

    tests/test_judge.py::test_pass                                   -> tests/test_judge.py::test_pass
    suites/test_matrix.py::test_accuracy[Qwen-7B-bf16-h100-aime24]   -> Qwen-7B/bf16/h100/tp1
    suites/test_matrix.py::test_speed[Qwen-7B-bf16-h100-server-rag]  -> Qwen-7B/bf16/h100/tp1

When xdist lets a plugin give the controller an item's group (pytest-dev/pytest-xdist#709, open), this
module and ``groups.json`` can go: ``loadgroup`` with the served model as the group is the same policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

GROUPS_FILE = "groups.json"


def read_groups(directory: Path | None) -> dict[str, str]:
    """The node id -> served model map a worker wrote into ``directory`` (empty when there is none)."""
    if directory is None or not (directory / GROUPS_FILE).exists():
        return {}
    groups: dict[str, str] = json.loads((directory / GROUPS_FILE).read_text())
    return groups


def scopes_scheduler(config: pytest.Config, log: Any, groups: Mapping[str, str]) -> Any:
    """A ``LoadScopeScheduling`` whose scope of a node id is its served model (built lazily: xdist)."""
    from xdist.scheduler import LoadScopeScheduling

    class ServedModelScopes(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return groups.get(nodeid, nodeid)

    return ServedModelScopes(config, log)


class ServedModelScheduling:
    """A ``xdist.scheduler.Scheduling`` that picks plain ``load`` or served-model scopes at ``schedule()``."""

    def __init__(self, config: pytest.Config, log: Any, dist: str, groups_dir: Path | None) -> None:
        from xdist.workermanage import parse_tx_spec_config

        self.config = config
        self.log = log
        self.dist = dist
        self.groups_dir = groups_dir
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

        collected = {n for ids in self._collections.values() for n in ids}
        groups = {n: g for n, g in read_groups(self.groups_dir).items() if n in collected}
        if groups:
            self.config.option.loadscopereorder = False  # keep the longest-first collection order
            return scopes_scheduler(self.config, self.log, groups)
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
