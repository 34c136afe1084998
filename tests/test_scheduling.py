"""plugins.scheduling.ServedModelScheduling with mock xdist nodes (the way xdist tests its schedulers)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from plugins.scheduling import GROUPS_FILE, ServedModelScheduling, read_groups


class MockNode:
    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def send_runtest_all(self) -> None:
        raise AssertionError("not used by load/loadgroup")

    def shutdown(self) -> None:
        self.shutting_down = True


def config(workers: int) -> Any:
    option = SimpleNamespace(tx=[f"{workers}*popen"], maxschedchunk=None, loadscopereorder=True, dist="load")
    return SimpleNamespace(
        option=option,
        getvalue=lambda name: getattr(option, name),
        getoption=lambda name, default=None: getattr(option, name, default),
    )


def scheduled(
    ids: list[str],
    workers: int = 2,
    dist: str = "load",
    groups: dict[str, str] | None = None,
    where: Path | None = None,
) -> tuple[ServedModelScheduling, list[MockNode]]:
    if groups is not None:
        assert where is not None
        (where / GROUPS_FILE).write_text(json.dumps(groups))
    sched = ServedModelScheduling(config(workers), None, dist, where)
    nodes = [MockNode(f"gw{n}") for n in range(workers)]
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        assert not sched.collection_is_completed
        sched.add_node_collection(node, ids)
    assert sched.collection_is_completed
    sched.schedule()
    return sched, nodes


def test_plain_tests_keep_xdist_load() -> None:
    ids = [f"tests/test_a.py::test_{n}" for n in range(20)]
    sched, nodes = scheduled(ids)
    assert type(sched.inner).__name__ == "LoadScheduling"
    assert all(node.sent for node in nodes)
    done = {node.gateway.id: 0 for node in nodes}
    while sched.has_pending:
        for node in nodes:
            while done[node.gateway.id] < len(node.sent):
                sched.mark_test_complete(node, node.sent[done[node.gateway.id]])
                done[node.gateway.id] += 1
    assert sorted(i for node in nodes for i in node.sent) == list(range(20))


def test_cells_of_a_served_model_go_to_one_worker_in_collection_order(tmp_path: Path) -> None:
    # longest-first order from the plugin: g-long (2 cells) before g-many (4 cells) before g-short
    ids = [
        "s/test_acc.py::test_cell[Llama-70B-bf16-h100-aime24]",
        "s/test_perf.py::test_cell[Llama-70B-bf16-h100-rag]",
        *[f"s/test_acc.py::test_cell[Qwen-1.5B-bf16-h100-t{n}]" for n in range(4)],
        "s/test_acc.py::test_cell[Qwen-7B-bf16-h100-aime24]",
        "tests/test_plain.py::test_x",
    ]
    groups = {n: ("g-long" if "70B" in n else "g-many" if "1.5B" in n else "g-short") for n in ids[:7]}
    groups["s/test_other.py::not_collected"] = "g-ghost"
    sched, (first, second) = scheduled(ids, groups=groups, where=tmp_path)
    assert type(sched.inner).__name__ == "ServedModelScopes"
    assert sched.config.option.loadscopereorder is False
    assert first.sent[:2] == [0, 1]  # the longest served model first, not the one with most cells
    assert second.sent[:4] == [2, 3, 4, 5]
    for node in (first, second):
        for group in {groups.get(ids[i]) for i in node.sent} - {None}:
            members = [i for i, n in enumerate(ids) if groups.get(n) == group]
            assert set(members) <= set(node.sent)
    sched.mark_test_complete(first, 0)
    sched.mark_test_complete(first, 1)
    assert 6 in first.sent  # g-short goes to the worker that finished first


def test_explicit_loadgroup_without_cells_stays_loadgroup() -> None:
    sched, _ = scheduled(["t.py::a", "t.py::b"], dist="loadgroup")
    assert type(sched.inner).__name__ == "LoadGroupScheduling"


def test_a_node_lost_before_scheduling_is_forgotten() -> None:
    sched = ServedModelScheduling(config(2), None, "load", None)
    gone, kept = MockNode("gw0"), MockNode("gw1")
    sched.add_node(gone)
    sched.add_node(kept)
    sched.add_node_collection(gone, ["t.py::a"])
    assert sched.remove_node(gone) is None
    assert sched.nodes == [kept]
    assert not sched.tests_finished
    assert not sched.has_pending


def test_no_groups_file_means_no_groups(tmp_path: Path) -> None:
    assert read_groups(None) == {}
    assert read_groups(tmp_path) == {}
