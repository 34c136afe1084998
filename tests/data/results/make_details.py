"""Write the lighteval per-sample details fixtures next to this script (run once; outputs are committed).

Three layouts lighteval has written (see ``quantgate.results``):

* ``lighteval_details_aime24_new.parquet``: current layout, one row per document with the struct
  columns ``doc``, ``model_response`` and ``metric`` (lighteval's ``Detail`` dataclass through
  ``datasets``), 10 documents x 8 samples, metrics ``pass@k:k=1&n=8`` and ``extractive_match``.
* ``lighteval_details_gsm8k_old.parquet``: the flat layout before mid-2025 (``example``,
  ``predictions``, ``metrics``, ``gold``, ...; no document id), metrics ``math_pass@1:1_samples``
  and ``math_pass@1:4_samples``.
* ``lighteval_details_gpqa.jsonl``: the current layout as JSON Lines, metric ``gpqa_pass@k:k=1``
  (no ``n`` in the name: the number of predictions counts).

The correct counts are fixed below so the tests can check them. Run: ``python3 make_details.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent

AIME_CORRECT = [8, 7, 0, 3, 5, 8, 1, 0, 6, 4]  # of 8 samples each
GSM8K_CORRECT = [4, 3, 0, 2, 4, 1]  # of 4 samples each; the first `correct` samples are right
GPQA_CORRECT = [2, 0, 3, 1, 4, 2]  # of 4 predictions each


def pass_at_1(n: int, c: int) -> float:
    """Unbiased pass@k estimator for k = 1, evaluated the way lighteval does (product form)."""
    if n - c < 1:
        return 1.0
    product = 1.0
    for m in range(n - c + 1, n + 1):
        product *= 1.0 - 1.0 / m
    return 1.0 - product


def token_ids(seed: int, length: int) -> list[int]:
    return [(seed * 7919 + i * 104729) % 151_000 for i in range(length)]


def new_layout_row(
    task: str, index: int, n: int, correct: int, metric: str, answer: int
) -> dict[str, object]:
    texts = [f"... so the answer is $\\boxed{{{answer if s < correct else answer + 1}}}$." for s in range(n)]
    return {
        "doc": {
            "query": f"Problem {index}: find the remainder when N_{index} is divided by 1000.",
            "choices": [str(answer)],
            "gold_index": 0,
            "instruction": None,
            "id": str(index),
            "task_name": task,
            "num_samples": n,
            "generation_size": 32768,
            "stop_sequences": [],
            "use_logits": False,
        },
        "model_response": {
            "input": f"<|im_start|>user\nProblem {index} ...<|im_end|>\n<|im_start|>assistant\n",
            "input_tokens": token_ids(index, 6),
            "text": texts,
            "output_tokens": [token_ids(index * 100 + s, 4 + (index + s) % 5) for s in range(n)],
            "text_post_processed": None,
            "reasonings": [],
            "logprobs": [],
            "truncated_tokens_count": 0,
            "padded_tokens_count": 0,
        },
        # The first `correct` samples are right: extractive_match (first sample only) is 1 iff correct > 0.
        "metric": {metric: pass_at_1(n, correct), "extractive_match": 1.0 if correct > 0 else 0.0},
    }


def write_new_parquet() -> None:
    rows = [
        new_layout_row("aime24|0", i, 8, c, "pass@k:k=1&n=8", 100 + i) for i, c in enumerate(AIME_CORRECT)
    ]
    pq.write_table(pa.Table.from_pylist(rows), HERE / "lighteval_details_aime24_new.parquet")


def write_old_parquet() -> None:
    rows = []
    for i, c in enumerate(GSM8K_CORRECT):
        question = f"Janet has {i + 3} ducks that lay {i + 12} eggs a day. How many eggs in a week?"
        gold = str((i + 12) * 7)
        rows.append(
            {
                "example": question,
                "full_prompt": f"Question: {question}\nAnswer:",
                "instruction": "",
                "num_effective_few_shots": 0,
                "num_asked_few_shots": 0,
                "predictions": [f"The answer is {gold if s < c else 0}" for s in range(4)],
                "input_tokens": [],
                "cont_tokens": [],
                "truncated": [0],
                "padded": [0],
                "gold": [gold],
                "pred_logits": [],
                "choices": [],
                "gold_index": [],
                "metrics": {
                    "math_pass@1:1_samples": 1.0 if c >= 1 else 0.0,
                    "math_pass@1:4_samples": c / 4,
                },
                "specifics": {"extracted_predictions": [gold if c else "0"]},
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), HERE / "lighteval_details_gsm8k_old.parquet")


def write_jsonl() -> None:
    lines = []
    for i, c in enumerate(GPQA_CORRECT):
        row = new_layout_row("gpqa:diamond|0", 40 + i, 4, c, "gpqa_pass@k:k=1", i % 4)
        row["doc"]["choices"] = ["A", "B", "C", "D"]  # type: ignore[index]
        lines.append(json.dumps(row, ensure_ascii=False))
    (HERE / "lighteval_details_gpqa.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_new_parquet()
    write_old_parquet()
    write_jsonl()
