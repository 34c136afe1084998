"""Run llmcompressor ``oneshot`` with a recipe file on a local model; executed by the quantize environment.

Usage: python oneshot.py --model DIR --recipe FILE --out DIR [--calibration FILE.jsonl] [--samples N]
       [--max-seq-length N] [--seed N]

The calibration file holds one JSON object per line with a ``text`` field. Nothing is fetched from a
hub: the model, tokenizer and calibration data are local. The compressed checkpoint and tokenizer are
written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--calibration")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    kwargs = {}
    if args.calibration:
        from datasets import Dataset

        with open(args.calibration, encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle if line.strip()]
        texts = texts[: args.samples]
        dataset = Dataset.from_dict({"text": texts}).map(
            lambda row: tokenizer(row["text"], truncation=True, max_length=args.max_seq_length),
            remove_columns=["text"],
        )
        kwargs = {
            "dataset": dataset,
            "num_calibration_samples": len(texts),
            "max_seq_length": args.max_seq_length,
        }
    started = time.monotonic()
    oneshot(model=model, recipe=args.recipe, **kwargs)
    elapsed = time.monotonic() - started
    model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)
    print(json.dumps({"oneshot_s": round(elapsed, 3)}))


if __name__ == "__main__":
    main()
