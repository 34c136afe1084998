"""Replicas: a served model whose planned cells outlast a limit is split into several placement jobs.

Why: placement and sharding move whole jobs, and a job is a served model's cells back to back on one
set of devices. One served model can be longer than everything else of its shard together (a 70B INT4
model on one H100 plans AIME, MATH-500 and GPQA-Diamond back to back, ~25 h), and then no assignment
of whole served models balances the shards or fits a night. A replica is the same served model
started again on other devices: its accuracy cells are spread over ``ceil(total / limit)`` replicas,
longest cell first onto the least loaded replica (LPT), each replica its own server, lease and xdist
unit. Speed cells all stay in replica 1, which needs its GPUs alone (speed is measured on an
otherwise idle GPU, as without replicas), and the other replicas hold accuracy cells only, so that
they may share GPUs within memory like any accuracy job.

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


def replica_count(pieces: Sequence[Piece], limit_s: float = REPLICA_LIMIT_S) -> int:
    """How many replicas a served model gets: ``ceil(total / limit)``, at most one per accuracy cell
    (plus the speed cells' replica), at least 1."""
    total = sum(p.seconds for p in pieces)
    shareable = sum(1 for p in pieces if not p.exclusive)
    most = shareable + (1 if any(p.exclusive for p in pieces) else 0)
    return max(1, min(most, math.ceil(total / limit_s - 1e-9)))


def split_replicas(pieces: Sequence[Piece], limit_s: float = REPLICA_LIMIT_S) -> dict[str, int]:
    """The replica (1-based) of each piece: exclusive pieces in 1, the others longest first (ties by
    name) onto the replica with the least planned seconds (ties to the lowest number).

    Independent of the order of ``pieces``. Example: speed cells of 1 h and accuracy cells of 5, 3 and
    2 h with a 4 h limit make ceil(11 / 4) = 3 replicas: {speed, 2 h} = 3 h, {5 h}, {3 h}.
    """
    replicas = replica_count(pieces, limit_s)
    load = [0.0] * replicas
    out: dict[str, int] = {}
    for piece in sorted(pieces, key=lambda p: p.name):
        if piece.exclusive:
            out[piece.name] = 1
            load[0] += piece.seconds
    for piece in sorted((p for p in pieces if not p.exclusive), key=lambda p: (-p.seconds, p.name)):
        target = min(range(replicas), key=lambda r: (load[r], r))
        load[target] += piece.seconds
        out[piece.name] = target + 1
    return out


def replica_job(served_model: str, replica: int, replicas: int) -> str:
    """The placement job of one replica: the served model's key itself when it is not split."""
    return served_model if replicas <= 1 else f"{served_model}/replica-{replica}-of-{replicas}"
