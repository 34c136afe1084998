"""Replicas: a served model whose planned cells outlast a limit is split into several placement jobs.

Why: placement and sharding move whole jobs, and a job is a served model's cells back to back on one
set of devices. One served model can be longer than everything else of its shard together (a 70B INT4
model on one H100 plans AIME, MATH-500 and GPQA-Diamond back to back, ~25 h), and then no assignment
of whole served models balances the shards or fits a night. A replica is the same served model
started again on other devices: its cells are spread over ``ceil(total / limit)`` replicas, longest
first onto the least loaded replica (LPT), each replica its own server, lease and xdist unit. Speed
cells go first, a workload's together (its scenarios share the served model's bench runs, warm-up run
included), into as few replicas as hold them within the limit: those need their GPUs alone (speed is
measured on an otherwise idle GPU, as without replicas; the BF16 figures it is judged against are
stored per GPU kind, not per device). The other replicas hold accuracy cells only, so that they may
share GPUs within memory like any accuracy job. Why speed replicas: a 70B INT4 model on one H100
plans ~12 h of speed cells alone, one job longer than a night that no split of whole jobs balances.

**Wider replicas.** An accuracy cell that alone is planned over the limit on its served model's GPUs
(a 70B INT4 model's MATH-500 on one A100, ~23 h) would be longer than any night whatever the split.
Such a cell is served by an accuracy-only replica at a larger tensor-parallel size (``Piece.tp``, chosen
by ``quantgate.matrix``): accuracy is judged per item against the stored BF16 reference, so the TP of
the candidate's server does not change what is measured, while the speed cells keep the catalog's
deployment (the own-TP replicas). Cells of one wider TP are split among themselves (``split_replicas``), after
the served model's own replicas, each wider replica its own job (``replica_job`` names its TP).

The split is a function of the cells' estimates alone (``quantgate.matrix.estimate_cell_seconds``, from
committed files), never of learned durations or of what a run selects: a cell's job is the same on
every runner and in every shard, as its id and its served model are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# A served model planned longer than this is split: one that alone fills most of the nightly's 8 h
# budget on its GPUs. Shorter served models stay whole (each replica costs a server start). The H100
# shards' planned times were within 4 % of each other at limits of 4, 5 and 6 h, against 25.3 h and
# 12.6 h without replicas (benchmarks/plan_makespan.py): the choice is not a knife edge.
REPLICA_LIMIT_S = 6 * 3600.0


@dataclass(frozen=True, kw_only=True)
class Piece:
    """One cell of a served model as the split sees it."""

    name: str
    seconds: float
    exclusive: bool
    tp: int | None = None  # the larger tensor-parallel size of an accuracy-only replica; None: its own
    group: str | None = None  # exclusive pieces of one group stay in one replica; None: the piece alone


def _exclusive_groups(pieces: Sequence[Piece]) -> dict[str, list[Piece]]:
    groups: dict[str, list[Piece]] = {}
    for piece in sorted((p for p in pieces if p.exclusive), key=lambda p: p.name):
        groups.setdefault(piece.group or piece.name, []).append(piece)
    return groups


def exclusive_replica_count(pieces: Sequence[Piece], limit_s: float = REPLICA_LIMIT_S) -> int:
    """Replicas the exclusive pieces take: ``ceil(their total / limit)``, at most one per group, 0
    without exclusive pieces."""
    groups = _exclusive_groups(pieces)
    total = sum(p.seconds for group in groups.values() for p in group)
    return min(len(groups), max(1, math.ceil(total / limit_s - 1e-9))) if groups else 0


def replica_count(pieces: Sequence[Piece], limit_s: float = REPLICA_LIMIT_S) -> int:
    """How many replicas a served model gets: ``ceil(total / limit)``, at most one per accuracy cell
    plus the exclusive pieces' (``exclusive_replica_count``), at least 1 and at least those."""
    total = sum(p.seconds for p in pieces)
    shareable = sum(1 for p in pieces if not p.exclusive)
    exclusive = exclusive_replica_count(pieces, limit_s)
    return max(1, exclusive, min(shareable + exclusive, math.ceil(total / limit_s - 1e-9)))


def split_replicas(pieces: Sequence[Piece], limit_s: float = REPLICA_LIMIT_S) -> dict[str, int]:
    """The replica (1-based) of each piece: the exclusive pieces' groups longest first onto the least
    loaded of the first ``exclusive_replica_count`` replicas, then the others longest first (ties by
    name) onto the replica with the least planned seconds (ties to the lowest number).

    Independent of the order of ``pieces``. Example: speed cells of 1 h and accuracy cells of 5, 3 and
    2 h with a 4 h limit make ceil(11 / 4) = 3 replicas: {speed, 2 h} = 3 h, {5 h}, {3 h}.
    """
    replicas = replica_count(pieces, limit_s)
    load = [0.0] * replicas
    out: dict[str, int] = {}
    groups = _exclusive_groups(pieces)
    speed = range(exclusive_replica_count(pieces, limit_s))
    for _, group in sorted(groups.items(), key=lambda g: (-sum(p.seconds for p in g[1]), g[0])):
        target = min(speed, key=lambda r: (load[r], r))
        for piece in group:
            out[piece.name] = target + 1
            load[target] += piece.seconds
    for piece in sorted((p for p in pieces if not p.exclusive), key=lambda p: (-p.seconds, p.name)):
        target = min(range(replicas), key=lambda r: (load[r], r))
        load[target] += piece.seconds
        out[piece.name] = target + 1
    return out


def assign_replicas(pieces: Sequence[Piece], limit_s: float = REPLICA_LIMIT_S) -> tuple[dict[str, int], int]:
    """The replica (1-based) of each piece and the number of replicas: the pieces at the served model's
    own TP split as ``split_replicas`` does (replicas 1..n), then each wider TP's pieces (narrowest
    first) split among themselves into the replicas after them (they hold accuracy cells only).

    Example: speed cells of 1 h and an accuracy cell of 2 h at the own TP, accuracy cells of 5 h and
    3 h at tp2, with a 6 h limit: {speed, 2 h} in replica 1, {5 h, 3 h} in ceil(8 / 6) = 2 replicas
    (2 and 3): 3 replicas.
    """
    own = [p for p in pieces if p.tp is None]
    out = split_replicas(own, limit_s) if own else {}
    count = max(out.values(), default=0)
    for tp in sorted({p.tp for p in pieces if p.tp is not None}):
        wider = [Piece(name=p.name, seconds=p.seconds, exclusive=False) for p in pieces if p.tp == tp]
        split = split_replicas(wider, limit_s)
        out.update({name: count + replica for name, replica in split.items()})
        count += max(split.values())
    return out, count


def replica_job(served_model: str, replica: int, replicas: int, tp: int | None = None) -> str:
    """The placement job of one replica: the served model's key itself when it is not split; a wider
    replica's name ends with its TP (``Llama-70B/int4-w4a16/a100/tp1/replica-4-of-6-at-tp2``)."""
    if replicas <= 1:
        return served_model
    return f"{served_model}/replica-{replica}-of-{replicas}" + (f"-at-tp{tp}" if tp is not None else "")
