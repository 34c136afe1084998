"""Readers of the result files that evaluation and benchmark tools write, with their provenance.

What: ``read_result(path)`` looks at a file's *content* (not only its name), decides which tool wrote
it (one of ``KINDS``) and turns it into a ``ResultFile``: accuracy scores (``AccuracyResult``, with
per-item counts where the file has them), performance numbers (``PerfResult``) and a flat
``provenance`` map (tool commit, model revision, prompt hashes, machine, dates).

Why: the gate compares numbers produced by tools quantgate does not control, and their formats drift
between versions (lighteval renamed its pass@1 metrics, moved its details columns; GuideLLM moved its
version into ``metadata``). A misread number is worse than no number, so every reader is tolerant of
optional fields that older versions lack and strict about wrong values: NaN where a number is
required, negative counts, ``correct > samples``, text where a metric should be, duplicated items.
Every problem ends as one ``QuantgateError`` naming the file and the field path (``results.aime24|0.
pass@k:k=1&n=20``), the line (``line 7``, JSON Lines) or the row (``row 3``, parquet, 0-based);
no other exception type leaves this module.

Kinds and how each is recognised, checked in this order:

* ``lighteval-details``: a parquet file (``PAR1`` magic); or JSON Lines whose records have ``doc``
  and ``metric`` (lighteval since mid-2025; its docs render them ``__doc__``/``__metric__``, and both
  spellings are read) or ``metrics`` with ``predictions``/``example`` (the flat layout before that;
  nested columns that old versions wrote as Python reprs are read with ``ast.literal_eval``).
* ``lighteval-results``: an object with ``config_general`` and ``results`` (or ``results`` keyed by
  ``task|fewshot``).
* ``lm-eval-results``: an object with ``results`` and one of ``lm_eval_version``, ``n-shot``,
  ``n-samples``, ``configs``, ``higher_is_better``, ``group_subtasks``, or ``versions`` + ``config``
  (lm-eval 0.3).
* ``pytest-benchmark``: an object with ``machine_info`` and ``benchmarks``.
* ``guidellm-report``: an object with a ``benchmarks`` list and ``guidellm_version`` (top level or in
  ``metadata``), or a benchmark whose ``type_`` is ``generative_benchmark``. Metrics are taken from
  the ``successful`` requests' distributions.
* ``vllm-bench-latency``: an object with ``avg_latency``.
* ``vllm-bench-throughput``: an object with ``requests_per_second`` and ``tokens_per_second``.
* ``vllm-bench-serve``: an object with ``request_throughput``.
* ``judge-jsonl``: JSON Lines (or one object) with ``item`` and ``samples`` or ``correct`` (in JSON
  Lines ``item`` alone is enough, so a line that lacks a count is reported as such). Its one score
  is named after the file (task = file stem, metric ``pass@1``).

lighteval details, item ids and counts (``_details_result``):

* Item id, chosen once per file: the doc's ``id`` when every row has a non-empty one (current
  lighteval sets it to the document's index in the dataset); otherwise ``query:<16 hex>`` (the first
  16 hex digits of the SHA-256 of the query text, ``doc.query`` or the old ``example`` column) when
  every row has a query; otherwise ``row:<index>`` (0-based row or record position). Two rows with
  the same id are an error.
* A per-sample metric is a *count* metric when it is a mean over samples of a 0/1 score: lighteval's
  ``pass@k`` with ``k=1`` (``pass@k:k=1&n=20``, ``gpqa_pass@k:k=1``), ``avg@n`` and the old
  ``math_pass@1:N_samples``/``gpqa_pass@1:N_samples``. Its ``samples`` is, in the current layout, the
  number of predictions in the row (lighteval 0.13 keeps a task's own metric names whatever ``@n=``
  asks: ``math_500@k=1@n=4`` scores 4 samples and writes ``pass@k:k=1&n=1``; real files in
  ``tests/data/lighteval-builtin``); in the older flat layout the ``n`` in its name (it scored
  ``math_pass@1:1_samples`` on the first of 4 predictions); either, where only one is known.
  ``correct = round(value * samples)``, and ``value * samples`` must lie within
  ``1e-6 * samples`` of that integer, else the file is refused: pass@1 over n is exactly ``c / n``
  (Chen et al.'s estimator telescopes for k = 1), and lighteval counts missing predictions as wrong,
  so this is the count lighteval itself scored. Any other metric whose every value is 0 or 1 counts as one
  sample per item; other metrics (maj@k, F1, ...) carry no counts and are left out.
* ``output_tokens`` is the mean length of the generated token lists in ``model_response.output_tokens``
  and ``output_lengths`` their lengths, one per sample (current layout only).
* The task comes from the file name ``details_{task}_{timestamp}.parquet`` (``lighteval|aime24|0`` →
  ``aime24``, fewshot 0), else from ``doc.task_name``, else from the file name as it is.

Layout: one module per tool's format (``lighteval``, ``lm_eval``, ``vllm_bench``, ``guidellm``,
``pytest_benchmark``, ``judge_jsonl``); ``read`` recognises a file and hands it to its reader;
``fields`` holds the checks that name the field; ``records`` the data every reader returns.

Parquet needs ``pyarrow`` (``pip install 'quantgate[parquet]'``), imported only when a parquet file is
read.
"""

from quantgate.results.read import describe, format_judge_jsonl, iter_result_files, read_result
from quantgate.results.records import (
    GUIDELLM_REPORT_VERSIONS,
    KINDS,
    RESULT_SUFFIXES,
    AccuracyResult,
    ItemOutcome,
    PerfResult,
    ResultFile,
)

__all__ = [
    "GUIDELLM_REPORT_VERSIONS",
    "KINDS",
    "RESULT_SUFFIXES",
    "AccuracyResult",
    "ItemOutcome",
    "PerfResult",
    "ResultFile",
    "describe",
    "format_judge_jsonl",
    "iter_result_files",
    "read_result",
]
