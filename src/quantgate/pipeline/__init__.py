"""One pipeline for every device kind: a matrix cell's checkpoint, server, evaluation, judge and bench.

``Pipeline`` does the work of one cell (``matrix.MatrixCell``) with the real tools, whatever its kind:
llmcompressor ``oneshot`` for checkpoints built here (``runners.quantize``), vLLM's OpenAI server
(``runners.serve``), lighteval on its own tasks (``runners.evaluate``) and ``vllm bench serve``
(``runners.bench``), each in its own environment (``envs.Envs``). What a kind does differently is data,
its kind file (``quantgate.kinds``): local tiny models or the catalog's checkpoints, the vLLM build's
settings, fixed or catalog sample counts, work sized to a budget from a probed rate or timeouts from the
catalog's estimate, BF16 speed measured in the session or stored.

Accuracy is judged against the kind's stored per-item BF16 reference (``baselines/<kind>/<model>/``),
whose provenance must match this run; the candidate is sampled at the first look's samples per item and
topped up with fresh seeds while the judge says inconclusive. A kind without references fails closed,
naming the command that writes them (``--qg-update-baselines`` on its BF16 cells, which still fails
the run). This package imports no pytest; the glue is ``plugins/lane.py`` and the suites.

Layout: ``core`` (checkpoints, servers, workers, task data, timeouts, the probe), ``accuracy`` (looks,
references, ``judge_accuracy``) and ``speed`` (bench plans, BF16 speed, ``judge_speed``); ``Pipeline``
is the three together. The stages are mixins that type-check against the core (``_Core``), so each
module stays readable on its own and one object keeps the session's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantgate.matrix import MatrixCell
from quantgate.pipeline.accuracy import AccuracyStage
from quantgate.pipeline.core import Checkpoint, PipelineCore, local_cells
from quantgate.pipeline.speed import SpeedReference, SpeedStage, load_speed_reference


@dataclass
class Pipeline(AccuracyStage, SpeedStage, PipelineCore):
    """One session's work on one kind: checkpoints, servers, workers, measurements, references."""

    def reuses_reference(self, cell: MatrixCell) -> bool:
        """Whether the cell is a BF16 cell that passes on its stored reference (no server needed)."""
        if cell.kind == "accuracy":
            return self.reuses_accuracy_reference(cell)
        return self.reuses_speed_reference(cell)


__all__ = ["Checkpoint", "Pipeline", "SpeedReference", "load_speed_reference", "local_cells"]
