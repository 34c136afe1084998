"""pytest glue for GPUs: markers, the inventory, placement of tests on devices, plan, shards, coverage.

Options and hooks only; the decisions are ``quantgate.devices``'. What a run does:

* **markers** ``h100``, ``a100``, ``a6000``, ``h200``, ``l40s``, ``cpu`` (one per catalog GPU kind) and
  ``gpu(kind, count=1, memory_gb=0.0)``, registered with their signatures; their arguments are checked
  strictly at collection (an unknown keyword is an error naming it).
* **inventory**: ``--qg-gpus h100:8`` declares one (plans, dry runs); otherwise NVML is asked. The
  report header says which was used and what it holds.
* **placement**: every test that needs GPUs (matrix cells, ``gpu``-marked tests) becomes a ``Task`` of
  a job (its served model). Jobs no device set could hold are skipped with the reason. Items are
  reordered so that jobs run longest first, each job's items back to back.
* **devices reach the test** per item: in ``pytest_runtest_setup``, after skip marks and before any
  fixture starts a tool, the worker takes a lease on the job's devices and sets
  ``CUDA_VISIBLE_DEVICES`` (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``); after the job's last item the
  lease's ``on_release`` callbacks run (a served-model fixture stops its server there) and the devices
  go back. A fixed per-worker slice (``pytest_configure_node``) was rejected: a worker that runs a
  4-GPU 70B job and then 1-GPU jobs would idle three GPUs, and a slice fixed before collection cannot
  know the jobs.
* **under pytest-xdist** (``-n N``): cells of one served model must share a worker. The controller
  sees only node ids (pytest-dev/pytest-xdist#709), so worker ``gw0`` writes the node id -> served
  model map of its collection into the run's shared directory, and ``plugins.scheduling`` (installed
  for ``--dist load``, the default, and ``loadgroup``) hands each served model to one worker as one
  unit, in our longest-first order; runs without GPU tests keep xdist's plain ``load``. (Cells also
  carry ``xdist_group(<served model>)``, but xdist's node-id rewrite behind ``loadgroup`` is a no-op
  on pytest 9.2, so nothing depends on it.) Which worker gets a unit does not matter: devices are
  leased at run time from a file all workers share (``quantgate.devices.leases.DeviceLeases``: first come
  first served, EASY backfilling), not fixed per worker. Other ``--dist`` modes with matrix cells
  are a collection error.
* ``--qg-plan FILE`` writes the simulated plan (JSON) and prints it as a table; ``--qg-shard K/N``
  keeps one of N duration-balanced shards of served models.
* **coverage and fail closed**: ``plugins.coverage`` (each selected cell's outcome, written as cells
  end; a run in which every selected cell was skipped fails unless ``--qg-allow-empty``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plugins.history import staleness
from plugins.options import setting
from plugins.scheduling import GROUPS_FILE
from quantgate.catalog import Catalog, load_catalog
from quantgate.datafile import atomic_write_text
from quantgate.devices.durations import Durations, load_durations
from quantgate.devices.inventory import Inventory, InventoryUnavailable, declared_inventory, nvml_inventory
from quantgate.devices.leases import DeviceLeases, Lease
from quantgate.devices.placement import (
    Job,
    LongestFirstPlacement,
    Plan,
    Task,
    build_jobs,
    make_plan,
    shard_of_groups,
)
from quantgate.errors import QuantgateError

DEFAULT_LEASE_TIMEOUT_S = 21600.0
DEFAULT_TASK_SECONDS = 60.0
GPU_MARKER_KWARGS = ("kind", "count", "memory_gb")
SEED_KINDS = ("a6000", "a100", "h100", "h200", "l40s", "cpu")
GROUPING_DISTS = ("load", "loadgroup")

TASK_KEY = pytest.StashKey[Task]()
MARKER_ERROR = pytest.StashKey[str]()
STATE = pytest.StashKey["GpuSession"]()


@dataclass
class GpuSession:
    """Per-process state of this plugin (``config.stash[STATE]``)."""

    inventory: Inventory
    catalog: Catalog | None
    worker_id: str | None
    workers: int
    lease_dir: Path | None
    owns_lease_dir: bool
    durations: Durations
    saved_env: dict[str, str | None]
    leases: DeviceLeases | None = None
    current: Lease | None = None
    jobs: dict[str, Job] = field(default_factory=dict)
    plan: Plan | None = None
    plan_text: str | None = None
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)
    deselected: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    empty_failure: str | None = None
    coverage_written: Path | None = None
    manifest_merged: bool = False

    @property
    def is_worker(self) -> bool:
        return self.worker_id is not None


# -- options and configuration -----------------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``load`` (the default of ``-n``) and ``loadgroup`` go through ``plugins.scheduling``."""
    dist = config.getoption("dist", "no")
    if dist not in GROUPING_DISTS:
        return None
    from plugins.scheduling import ServedModelScheduling

    return ServedModelScheduling(config, log, dist, config.stash[STATE].lease_dir)


def path_option(config: pytest.Config, name: str) -> Path:
    given = config.getoption(name)
    if given:
        return Path(given)
    return config.rootpath / str(config.getini(name))


def _distributing(config: pytest.Config) -> bool:
    return (
        not config.getoption("collectonly")
        and config.getoption("dist", "no") != "no"
        and bool(config.getoption("tx", None))
    )


def _load_catalog() -> tuple[Catalog | None, str | None]:
    try:
        return load_catalog(), None
    except QuantgateError as exc:
        return None, str(exc)


def pytest_configure(config: pytest.Config) -> None:
    catalog, catalog_error = _load_catalog()
    _register_markers(config, catalog)
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    saved = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    if workerinput is not None and "qg_inventory" in workerinput:
        # Workers plan from the controller's inventory and durations: every worker must order its
        # collection identically, whatever NVML or the durations file say a moment later.
        durations = Durations(**workerinput["qg_durations"])
        state = GpuSession(
            inventory=Inventory.from_dict(workerinput["qg_inventory"]),
            catalog=catalog,
            worker_id=str(workerinput["workerid"]),
            workers=int(workerinput["workercount"]),
            lease_dir=Path(workerinput["qg_lease_dir"]),
            owns_lease_dir=False,
            durations=durations,
            saved_env=saved,
        )
    else:
        try:
            durations = load_durations(path_option(config, "qg_durations"))
        except QuantgateError as exc:
            raise pytest.UsageError(f"quantgate: {exc}") from None
        inventory = _resolve_inventory(config, catalog, catalog_error)
        distributing = _distributing(config)
        numprocesses = getattr(config.option, "numprocesses", None)
        workers = int(numprocesses) if isinstance(numprocesses, int) and numprocesses > 0 else 1
        lease_dir = Path(tempfile.mkdtemp(prefix="quantgate-leases-")) if distributing else None
        state = GpuSession(
            inventory=inventory,
            catalog=catalog,
            worker_id=None,
            workers=workers,
            lease_dir=lease_dir,
            owns_lease_dir=lease_dir is not None,
            durations=durations,
            saved_env=saved,
        )
    config.stash[STATE] = state


def _resolve_inventory(
    config: pytest.Config, catalog: Catalog | None, catalog_error: str | None
) -> Inventory:
    spec = str(setting(config, "qg_gpus") or "")
    if catalog is None:
        return Inventory((), "nothing (the catalog did not load)", catalog_error)
    if spec:
        source = "--qg-gpus" if config.getoption("qg_gpus") else "ini qg_gpus"
        try:
            return declared_inventory(spec, catalog, source=f"{source} {spec}")
        except QuantgateError as exc:
            raise pytest.UsageError(f"quantgate: {exc}") from None
    try:
        return nvml_inventory(catalog)
    except InventoryUnavailable as exc:
        return Inventory((), "NVML", exc.message)


def _register_markers(config: pytest.Config, catalog: Catalog | None) -> None:
    if catalog is not None:
        for key, gpu in catalog.gpus.items():
            if gpu.memory_gb is None:
                config.addinivalue_line(
                    "markers",
                    f"{key}: runs on the CPU lane with no GPU visible (CUDA_VISIBLE_DEVICES is emptied)",
                )
            else:
                config.addinivalue_line(
                    "markers",
                    f"{key}: needs an {gpu.name} ({gpu.memory_gb:g} GiB, compute capability "
                    f"{gpu.compute_capability:.1f}); matrix cells of this kind carry it, select them with "
                    f"-m {key}",
                )
    else:
        for key in SEED_KINDS:
            config.addinivalue_line("markers", f"{key}: a GPU kind of the catalog (catalog did not load)")
    config.addinivalue_line(
        "markers",
        "gpu(kind, count=1, memory_gb=0.0): needs `count` adjacent GPUs of `kind` (a catalog key) with "
        "`memory_gb` GiB each (0: the whole GPU); quantgate leases them per test, sets "
        "CUDA_VISIBLE_DEVICES, and skips the test when the inventory cannot hold it",
    )
    if not config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line(
            "markers", "xdist_group(name): tests of one group run on one worker (pytest-xdist's marker)"
        )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand every xdist worker the controller's inventory and the shared lease directory."""
    state = node.config.stash[STATE]
    node.workerinput["qg_inventory"] = state.inventory.as_dict()
    node.workerinput["qg_lease_dir"] = str(state.lease_dir)
    node.workerinput["qg_dist"] = node.config.getoption("dist", "no")
    node.workerinput["qg_durations"] = {
        "cells": state.durations.cells,
        "served_models": state.durations.served_models,
    }


def dist_mode(config: pytest.Config) -> str:
    """The controller's ``--dist`` (workers re-parse the command line and see the default)."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None and "qg_dist" in workerinput:
        return str(workerinput["qg_dist"])
    return str(config.getoption("dist", "no"))


def pytest_report_header(config: pytest.Config) -> str:
    state = config.stash[STATE]
    line = f"quantgate: GPU inventory: {state.inventory.describe()}"
    if _distributing(config) and config.getoption("dist", "no") in GROUPING_DISTS:
        line += "; xdist: each served model on one worker, longest first"
    return line


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    _release(state)
    if state.owns_lease_dir and state.lease_dir is not None:
        shutil.rmtree(state.lease_dir, ignore_errors=True)


# -- collection --------------------------------------------------------------------------------------


def _gpu_need(item: pytest.Item, kinds: Sequence[str]) -> tuple[str, int, float] | None:
    """(kind, count, memory_gb) from an item's ``gpu`` or kind marker; ``ValueError`` when malformed."""
    marked = sorted({m.name for m in item.iter_markers() if m.name in kinds})
    for name in marked:
        if any(m.args or m.kwargs for m in item.iter_markers(name)):
            raise ValueError(f"the {name} marker takes no arguments")
    mark = item.get_closest_marker("gpu")
    if mark is None:
        if len(marked) > 1:
            raise ValueError(f"marked for several GPU kinds ({', '.join(marked)}); use one")
        return (marked[0], 1, 0.0) if marked else None
    unknown = [k for k in mark.kwargs if k not in GPU_MARKER_KWARGS]
    if unknown:
        raise ValueError(
            f"gpu marker got unknown keyword argument {unknown[0]!r} "
            f"(allowed: {', '.join(GPU_MARKER_KWARGS)})"
        )
    if len(mark.args) > len(GPU_MARKER_KWARGS):
        raise ValueError(f"gpu marker takes at most {len(GPU_MARKER_KWARGS)} arguments")
    values: dict[str, Any] = dict(zip(GPU_MARKER_KWARGS, mark.args, strict=False))
    twice = sorted(set(values) & set(mark.kwargs))
    if twice:
        raise ValueError(f"gpu marker got {twice[0]!r} twice")
    values.update(mark.kwargs)
    kind, count, memory = values.get("kind"), values.get("count", 1), values.get("memory_gb", 0.0)
    gpu_kinds = [k for k in kinds if k != "cpu"]
    if not isinstance(kind, str) or kind not in gpu_kinds:
        raise ValueError(f"gpu marker kind must be one of {', '.join(gpu_kinds)}, got {kind!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"gpu marker count must be a positive integer, got {count!r}")
    if isinstance(memory, bool) or not isinstance(memory, int | float) or memory < 0:
        raise ValueError(f"gpu marker memory_gb must be a number >= 0, got {memory!r}")
    if marked and marked != [kind]:
        raise ValueError(f"marked {', '.join(marked)} but gpu(kind={kind!r})")
    return kind, count, float(memory)


def _marker_task(item: pytest.Item, state: GpuSession) -> Task | None:
    """The task of a test marked ``gpu(...)`` or with a kind (``h100``, ``cpu``), or None."""
    need = _gpu_need(item, list(state.catalog.gpus) if state.catalog is not None else list(SEED_KINDS))
    if need is None:
        return None
    kind, count, memory = need
    if kind == "cpu":
        return Task(
            node_id=item.nodeid,
            job=item.nodeid,
            kind="cpu",
            count=0,
            memory_gb=0.0,
            shareable=True,
            seconds=0.0,
            estimate_s=0.0,
        )
    group = item.get_closest_marker("xdist_group")
    job = item.nodeid
    if group is not None:
        job = str(group.args[0] if group.args else group.kwargs.get("name", item.nodeid))
    seconds = state.durations.cells.get(_plain_id(item.nodeid), DEFAULT_TASK_SECONDS)
    return Task(
        node_id=item.nodeid,
        job=job,
        kind=kind,
        count=count,
        memory_gb=memory,
        shareable=False,
        seconds=seconds,
        estimate_s=DEFAULT_TASK_SECONDS,
    )


def _plain_id(node_id: str) -> str:
    """A node id without the ``@group`` suffix xdist's loadgroup adds."""
    at = node_id.rfind("@")
    return node_id[:at] if at > node_id.rfind("]") and at > node_id.rfind("::") else node_id


def _cell_of(item: pytest.Item) -> dict[str, Any] | None:
    for name, value in item.user_properties:
        if name == "qg_cell" and isinstance(value, dict):
            return value
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Check the function's GPU markers strictly; a bad one is a collection error naming it."""
    try:
        _marker_task(metafunc.definition, metafunc.config.stash[STATE])
        return
    except ValueError as exc:
        problem = f"quantgate: {metafunc.definition.nodeid}: {exc}"
    pytest.fail(problem, pytrace=False)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = config.stash[STATE]
    tasks: dict[str, Task] = {}
    for item in items:
        task = item.stash.get(TASK_KEY, None)
        if task is None:
            try:
                task = _marker_task(item, state)
            except ValueError as exc:  # marks added after pytest_generate_tests checked the function's
                item.stash[MARKER_ERROR] = f"quantgate: {item.nodeid}: {exc}"
                continue
            if task is not None:
                item.stash[TASK_KEY] = task
        if task is not None:
            tasks[item.nodeid] = task

    shard = config.getoption("qg_shard")
    if shard is not None:
        items[:] = _apply_shard(config, state, items, tasks, shard)

    policy = LongestFirstPlacement(state.inventory)
    runnable = [
        i
        for i in items
        if i.nodeid in tasks and tasks[i.nodeid].kind != "cpu" and not i.get_closest_marker("skip")
    ]
    jobs = build_jobs(tasks[i.nodeid] for i in runnable)
    runnable_ids = {i.nodeid for i in runnable}
    why_not = {job.key: policy.unplaceable(job) for job in jobs}
    skipped: list[tuple[str, str, str]] = []
    for item in runnable:
        key = tasks[item.nodeid].job
        reason = why_not[key]
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"quantgate: {reason}"))
            skipped.append((item.nodeid, key, reason))
    placeable = [job for job in jobs if why_not[job.key] is None]
    state.jobs = {job.key: job for job in placeable}
    items_of: dict[str, list[pytest.Item]] = {}
    for item in runnable:
        items_of.setdefault(tasks[item.nodeid].job, []).append(item)
    best = policy.best_order(placeable, state.workers)
    ordered = sorted(best, key=lambda job: staleness(items_of.get(job.key, [])))
    rank = {job.key: n for n, job in enumerate(ordered)}

    def position(pair: tuple[int, pytest.Item]) -> tuple[int, int, tuple[int, float], int]:
        index, item = pair
        task = tasks.get(item.nodeid)
        if task is None or task.job not in rank or item.get_closest_marker("skip"):
            return (0, 0, (0, 0.0), index)
        return (1, rank[task.job], staleness([item]), index)

    items[:] = [item for _, item in sorted(enumerate(items), key=position)]

    unplaced = {node_id for node_id, _, _ in skipped}
    for item in items:
        cell = _cell_of(item)
        if cell is None:
            continue
        mark = item.get_closest_marker("skip")
        reason = None
        if mark is not None:
            reason = str(mark.kwargs.get("reason", mark.args[0] if mark.args else "")).removeprefix(
                "quantgate: "
            )
            if item.nodeid not in unplaced:
                skipped.append((item.nodeid, cell["served_model"], reason))
        state.selected[item.nodeid] = {**cell, "reason": reason}

    if config.getoption("qg_plan") and (not state.is_worker or state.worker_id == "gw0"):
        placed = [t for job in placeable for t in job.tasks]
        state.plan = make_plan(placed, state.inventory, state.workers, skipped)
        state.plan_text = state.plan.table()
        atomic_write_text(
            Path(config.getoption("qg_plan")), json.dumps(state.plan.as_dict(), indent=1) + "\n"
        )
        if state.is_worker and state.lease_dir is not None:
            atomic_write_text(state.lease_dir / "plan.txt", state.plan_text + "\n")
    if state.worker_id == "gw0" and state.lease_dir is not None:
        # For the controller, which sees only node ids: the coverage manifest, and the served model of
        # every item that needs GPUs (plugins.scheduling keeps each on one worker). Written before
        # this worker reports its collection, so the scheduler finds it.
        manifest = {"selected": state.selected, "deselected": state.deselected}
        atomic_write_text(state.lease_dir / "collection.json", json.dumps(manifest))
        groups = {
            i.nodeid: tasks[i.nodeid].job
            for i in items
            if tasks.get(i.nodeid) and (i.nodeid in runnable_ids or _is_cpu_cell(i, tasks))
        }
        atomic_write_text(state.lease_dir / GROUPS_FILE, json.dumps(groups))


def _is_cpu_cell(item: pytest.Item, tasks: dict[str, Task]) -> bool:
    """A cell of the cpu kind: placed nowhere, but its job (a model's schemes) stays on one worker."""
    return tasks[item.nodeid].kind == "cpu" and _cell_of(item) is not None


def _apply_shard(
    config: pytest.Config,
    state: GpuSession,
    items: list[pytest.Item],
    tasks: dict[str, Task],
    shard: tuple[int, int],
) -> list[pytest.Item]:
    k, n = shard
    groups: dict[str, float] = {}
    group_of: dict[str, str] = {}
    references: set[str] = set()
    for item in sorted(items, key=lambda i: _plain_id(i.nodeid)):
        task = tasks.get(item.nodeid)
        if task is None or item.get_closest_marker("skip") is not None:
            # runs nothing (not planned, or off its kind's compute path): a group of its own of no
            # weight, which moves no other group (as quantgate.matrix.shard)
            group_of[item.nodeid] = _plain_id(item.nodeid)
            groups[group_of[item.nodeid]] = 0.0
            continue
        group_of[item.nodeid] = task.job
        # GPU-seconds, as quantgate.matrix.shard weighs cells: the same split on every runner.
        groups[task.job] = groups.get(task.job, 0.0) + task.estimate_s * max(1, task.count)
        references.update([task.job] if task.reference else [])
    assignment = shard_of_groups(groups, n, references)
    keep = [i for i in items if assignment[group_of[i.nodeid]] == k]
    drop = [i for i in items if assignment[group_of[i.nodeid]] != k]
    for item in drop:
        cell = _cell_of(item)
        if cell is not None:
            state.deselected[item.nodeid] = {**cell, "reason": f"not in shard {k}/{n}"}
    if drop:
        config.hook.pytest_deselected(items=drop)
    return keep


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    for item in items:
        cell = _cell_of(item)
        if cell is not None:
            state = item.config.stash[STATE]
            state.deselected.setdefault(item.nodeid, {**cell, "reason": "deselected (-m/-k or similar)"})


# -- running -----------------------------------------------------------------------------------------


def _set_env(devices: Sequence[int] | None, state: GpuSession) -> None:
    if devices is None:
        for name, value in state.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"


def _timeout(config: pytest.Config) -> float:
    return float(setting(config, "qg_lease_timeout"))


def _release(state: GpuSession) -> None:
    lease, state.current = state.current, None
    try:
        if lease is not None and state.leases is not None:
            state.leases.release(lease)
    finally:
        _set_env(None, state)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Lease the item's devices (after skip marks, before fixtures) and make them the visible ones."""
    state = item.config.stash[STATE]
    if MARKER_ERROR in item.stash:
        pytest.fail(item.stash[MARKER_ERROR], pytrace=False)
    task = item.stash.get(TASK_KEY, None)
    if task is None:
        return
    if task.kind == "cpu":
        _set_env([], state)
        return
    if state.current is not None and state.current.job == task.job:
        item.user_properties.append(("qg_devices", list(state.current.devices)))
        return
    job = state.jobs.get(task.job)
    if job is None:
        pytest.fail(f"quantgate: {task.job} was not placed at collection", pytrace=False)
    _release(state)
    if state.leases is None:
        if state.lease_dir is None:
            state.lease_dir = Path(tempfile.mkdtemp(prefix="quantgate-leases-"))
            state.owns_lease_dir = True
        owner = state.worker_id or f"main-{os.getpid()}"
        state.leases = DeviceLeases(state.lease_dir, state.inventory, owner)
    try:
        lease = state.leases.acquire(job, _timeout(item.config))
    except QuantgateError as exc:
        pytest.fail(f"quantgate: {exc}", pytrace=False)
    state.current = lease
    _set_env(lease.devices, state)
    item.user_properties.append(("qg_devices", list(lease.devices)))
    item.user_properties.append(("qg_lease_wait_s", round(lease.waited_s, 3)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last item of a job: stop what the lease's callbacks stop, then free the devices."""
    try:
        return (yield)
    finally:
        state = item.config.stash[STATE]
        task = item.stash.get(TASK_KEY, None)
        following = nextitem.stash.get(TASK_KEY, None) if nextitem is not None else None
        if task is not None and task.kind == "cpu":
            _set_env(None, state)
        elif state.current is not None and (following is None or following.job != state.current.job):
            _release(state)


@pytest.fixture
def qg_lease(request: pytest.FixtureRequest) -> Lease:
    """The devices leased for this test's served model; register the server's stop with ``on_release``."""
    state = request.config.stash[STATE]
    task = request.node.stash.get(TASK_KEY, None)
    if task is None or state.current is None or state.current.job != task.job:
        pytest.fail("quantgate: qg_lease is for matrix cells and gpu-marked tests", pytrace=False)
    return state.current


@pytest.fixture
def qg_devices(request: pytest.FixtureRequest) -> list[int]:
    """Indices of the GPUs assigned to this test (what CUDA_VISIBLE_DEVICES holds); [] when none."""
    state = request.config.stash[STATE]
    task = request.node.stash.get(TASK_KEY, None)
    if task is None or state.current is None or state.current.job != task.job:
        return []
    return list(state.current.devices)
