"""``fixtures/lane/builtin_tasks.py`` in the real evaluation environment: lighteval's own task objects,
with the data redirected only when ``QUANTGATE_TASK_DATA`` is set (the CPU lane), the hub datasets
otherwise (a GPU runner), and a content-hashed folder found by its benchmark id."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from lane_run import REPO

from quantgate.envs import Envs

SHOW = """
import json, builtin_tasks as b
print(json.dumps({t.name: [t.hf_repo, t.hf_subset, t.generation_size, t.prompt_function.__module__]
                  for t in b.TASKS_TABLE}))
"""


def _configs(env: dict[str, str]) -> dict[str, list[object]]:
    python = Envs.from_environment(REPO).directory / "eval" / "bin" / "python"
    if not python.exists():
        if os.environ.get("QG_REQUIRE_ENVS") == "1":
            pytest.fail(f"QG_REQUIRE_ENVS=1 but there is no eval environment at {python.parent.parent}")
        pytest.skip(f"no eval environment at {python.parent.parent} (tools/setup_envs.sh eval)")
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUANTGATE_")}
    done = subprocess.run(
        [str(python), "-c", SHOW],
        cwd=REPO / "fixtures" / "lane",
        env={**base, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    configs: dict[str, list[object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return configs


@pytest.mark.slow
def test_without_local_data_the_tasks_are_lightevals_own_with_their_hub_datasets() -> None:
    configs = _configs({})
    assert configs["aime24"][:2] == ["HuggingFaceH4/aime_2024", "default"]
    assert configs["math_500"][:2] == ["HuggingFaceH4/MATH-500", "default"]
    assert configs["gpqa:diamond"][:2] == ["Idavidrein/gpqa", "gpqa_diamond"]
    assert configs["arc:challenge"][:2] == ["allenai/ai2_arc", "ARC-Challenge"]
    assert configs["gsm8k"][:2] == ["openai/gsm8k", "main"]
    assert {c[3] for c in configs.values()} == {
        f"lighteval.tasks.tasks.{module}"
        for module in ("aime", "math_500", "gpqa", "arc", "hellaswag", "truthfulqa", "winogrande", "gsm8k")
    }


@pytest.mark.slow
def test_local_data_redirects_only_the_dataset_and_finds_a_hashed_folder(tmp_path: Path) -> None:
    (tmp_path / "aime24-0123abcd").mkdir()
    (tmp_path / "math_500").mkdir()
    configs = _configs({"QUANTGATE_TASK_DATA": str(tmp_path), "QUANTGATE_MAX_TOKENS": "40"})
    assert configs["aime24"][0] == str((tmp_path / "aime24-0123abcd").resolve())
    assert configs["math_500"][0] == str((tmp_path / "math_500").resolve())
    assert configs["gpqa:diamond"][1] == "gpqa_diamond"
    # the reasoning tasks' and GSM8K's limits are capped at 40; the others' (-1, ARC's and HellaSwag's 1) stay
    assert {name: c[2] for name, c in configs.items() if c[2] != 40} == {
        "arc:challenge": 1,
        "winogrande": -1,
        "truthfulqa:mc": -1,
        "hellaswag": 1,
    }
    assert configs["aime24"][2] == configs["gsm8k"][2] == 40
