"""The prompt the vLLM server receives is lighteval's own, through the chat template when the served
tokenizer has one, as lighteval's vLLM backend makes it (``fixtures/lane/lighteval_model.py``).

Real parts: the lane's servers for tiny-qwen2 (a chat template) and tiny-llama (none), started with
vLLM's request log at DEBUG level, and one lighteval job each on two items of a built-in task. The
prompts are read from the server's own log; the expected ones are lighteval's prompt forms
(``fixtures/tinymodel/prompt_forms.json``, checked against the installed lighteval by
``tests/test_tinymodel.py``) filled with the items.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from lane_run import REPO, envs_or_skip

from quantgate import paths
from quantgate.kinds import load_kind
from quantgate.pipeline import Pipeline, local_cells

FORMS = json.loads((REPO / "fixtures" / "tinymodel" / "prompt_forms.json").read_text())["forms"]
LOGGED_PROMPT = re.compile(r"details: prompt: ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"), prompt_token_ids")


def received_prompts(log: Path) -> set[str]:
    return {ast.literal_eval(m.group(1)) for m in LOGGED_PROMPT.finditer(log.read_text(errors="replace"))}


@pytest.mark.slow
def test_the_server_receives_lightevals_prompt_through_the_chat_template_when_there_is_one(
    tmp_path: Path,
) -> None:
    envs = envs_or_skip()
    spec = load_kind(paths.kind_file("cpu"))
    logged = spec.server.model_copy(
        update={
            "args": (*spec.server.args, "--enable-log-requests"),
            "env": {**spec.server.env, "VLLM_LOGGING_LEVEL": "DEBUG"},
        }
    )
    lane = Pipeline(spec.model_copy(update={"server": logged}), envs, tmp_path / "work")
    cells = {(c.model, c.benchmark): c for c in local_cells(spec) if c.scheme == "bf16"}
    received: dict[str, set[str]] = {}
    try:
        for model, benchmark in (("tiny-qwen2", "aime24"), ("tiny-llama", "gpqa_diamond")):
            cell = cells[(model, benchmark)]
            with lane.server(cell) as server:
                lane.evaluate(server, lane.evaluation_job(server, cell, 1, 0, "prompt", items=2))
            received[model] = received_prompts(lane.log_dir / f"serve-{lane.served_name(cell)}.log")
    finally:
        lane.close()

    problems = [str(row["problem"]) for row in lane.items("aime24")[:2]]
    chat = {f"<|user|>\n{FORMS['aime24'].format(problem=p)}\n<|assistant|>\n" for p in problems}
    assert received["tiny-qwen2"] == chat

    instruction = FORMS["gpqa_diamond"].split("{problem}")[0]
    questions = {str(row["Question"]) for row in lane.items("gpqa_diamond")[:2]}
    assert len(received["tiny-llama"]) == 2
    for prompt in received["tiny-llama"]:
        assert prompt.startswith(instruction), prompt
        assert prompt.split("\n\n")[1] in questions, prompt
        assert "<|user|>" not in prompt
