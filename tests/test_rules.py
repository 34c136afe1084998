"""Rules as data: exactly one rule decides every cell of the matrix; precedence and bad files."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from quantgate.catalog import load_catalog
from quantgate.errors import QuantgateError
from quantgate.kinds import load_kind
from quantgate.rules import (
    AccuracyCellKey,
    Rules,
    SpeedCellKey,
    check_known_keys,
    default_rules_path,
    load_rules,
)

CATALOG = load_catalog()
NEXT = len(load_rules().recovery)  # the index of a rule appended to the file


def accuracy_cells() -> list[AccuracyCellKey]:
    """The matrix's quantized cells and the lane's cells (BF16 too: it is judged against its reference)."""
    lane = load_kind()
    return [
        AccuracyCellKey(m, spec.params_b, s, b, bench.family)
        for (m, spec), s, (b, bench) in itertools.product(
            CATALOG.models.items(), [s for s in CATALOG.schemes if s != "bf16"], CATALOG.benchmarks.items()
        )
    ] + [
        AccuracyCellKey(m, spec.params_b, s, b, CATALOG.benchmarks[b].family)
        for (m, spec), s in itertools.product(lane.models.items(), lane.schemes)
        for b in spec.benchmarks
    ]


def speed_cells() -> list[SpeedCellKey]:
    return [
        SpeedCellKey(m, spec.params_b, s, g, sc, w)
        for (m, spec), s, g, sc, w in itertools.product(
            CATALOG.models.items(),
            [s for s in CATALOG.schemes if s != "bf16"],
            CATALOG.gpus,
            CATALOG.scenarios,
            CATALOG.workloads,
        )
    ]


def test_every_cell_is_decided_by_exactly_one_rule() -> None:
    rules = load_rules()
    decided = [rules.recovery_for(cell) for cell in accuracy_cells()]
    decided += [rules.speedup_for(cell) for cell in speed_cells()]
    assert len(decided) == len(accuracy_cells()) + len(speed_cells())
    used = {part for d in decided for part in d.rule_id.split("+")}
    assert used == {r.id for r in rules.recovery} | {r.id for r in rules.speedup}, "a rule decides no cell"


def test_rule_selectors_name_catalog_and_lane_keys() -> None:
    lane = load_kind()
    check_known_keys(
        load_rules(),
        schemes=CATALOG.schemes,
        models=[*CATALOG.models, *lane.models],
        benchmarks=CATALOG.benchmarks,
        families={b.family for b in CATALOG.benchmarks.values()} | {m.family for m in lane.models.values()},
        gpus=CATALOG.gpus,
        scenarios=CATALOG.scenarios,
        workloads=CATALOG.workloads,
    )


@pytest.mark.parametrize(
    ("model", "scheme", "bench", "rule", "floor"),
    [
        ("Qwen-32B", "fp8-w8a8", "aime24", "fp8-near-lossless", 0.99),
        ("Qwen-1.5B", "int8-w8a8", "reasoning_avg", "int8-small", 0.97),
        ("Llama-8B", "int8-w8a8", "gpqa_diamond", "int8-near-lossless", 0.99),
        ("Qwen-7B", "int4-w4a16", "aime24", "int4-7b-plus", 0.97),
        ("Qwen-1.5B", "int4-w4a16", "reasoning_avg", "int4-small", 0.94),
        ("Qwen-1.5B", "int4-w4a16", "aime24", "small-models-per-benchmark+int4-small", 0.94),
        ("Qwen-1.5B", "int8-w8a8", "gsm8k", "openllm-v1-per-task+int8-small", 0.97),
    ],
)
def test_the_seed_claims(model: str, scheme: str, bench: str, rule: str, floor: float) -> None:
    spec = CATALOG.models[model]
    decision = load_rules().recovery_for(
        AccuracyCellKey(model, spec.params_b, scheme, bench, CATALOG.benchmarks[bench].family)
    )
    assert (decision.rule_id, decision.floor) == (rule, floor)
    assert decision.gating == ("+" not in rule)


def write_rules(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "rules.yaml"
    shutil.copy(default_rules_path(), path)
    path.write_text(path.read_text().replace("\nspeedup:\n", extra + "\nspeedup:\n"))
    return path


def test_a_new_model_threshold_is_one_entry_and_outranks_size_rules(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path, "  - {id: qwen7b-tight, model: Qwen-7B, scheme: int4-w4a16, floor: 0.99, source: t}"
    )
    rules = load_rules(path)
    spec = CATALOG.models["Qwen-7B"]
    decision = rules.recovery_for(
        AccuracyCellKey("Qwen-7B", spec.params_b, "int4-w4a16", "aime24", "reasoning")
    )
    assert (decision.rule_id, decision.floor) == ("qwen7b-tight", 0.99)


def test_equally_specific_rules_are_an_error(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "  - {id: clash, scheme: fp8-w8a8, floor: 0.5, source: t}")
    spec = CATALOG.models["Qwen-7B"]
    with pytest.raises(QuantgateError, match="'fp8-near-lossless' and 'clash' are equally specific"):
        load_rules(path).recovery_for(
            AccuracyCellKey("Qwen-7B", spec.params_b, "fp8-w8a8", "aime24", "reasoning")
        )


@pytest.mark.parametrize(
    ("entry", "where", "message"),
    [
        (
            "  - {id: x, scheme: fp8-w8a8, floor: 0.9, mode: maybe, source: t}",
            f"recovery[{NEXT}].mode",
            "'gate' or",
        ),
        ("  - {id: x, floor: -1, source: t}", f"recovery[{NEXT}].floor", "greater than 0"),
        ("  - {id: x, floor: 0.9, source: t, colour: red}", f"recovery[{NEXT}].colour", "unknown field"),
        ("  - {id: fp8-near-lossless, floor: 0.9, source: t}", f"recovery[{NEXT}].id", "duplicated rule id"),
        (
            "  - {id: x, floor: 0.9, source: t, min_params_b: 9, max_params_b: 2}",
            f"recovery[{NEXT}]",
            "above",
        ),
    ],
)
def test_bad_rules_name_file_and_field(tmp_path: Path, entry: str, where: str, message: str) -> None:
    path = write_rules(tmp_path, entry)
    with pytest.raises(QuantgateError) as info:
        load_rules(path)
    assert str(path) in str(info.value)
    assert where in str(info.value)
    assert message in str(info.value)


def test_unknown_selector_value_is_refused(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "  - {id: x, scheme: int3-w3a16, floor: 0.9, source: t}")
    with pytest.raises(QuantgateError, match=rf"recovery\[{NEXT}\]\.scheme: unknown scheme 'int3-w3a16'"):
        check_known_keys(
            load_rules(path),
            schemes=CATALOG.schemes,
            models=[*CATALOG.models, *load_kind().models],
            benchmarks=CATALOG.benchmarks,
            families={b.family for b in CATALOG.benchmarks.values()},
            gpus=CATALOG.gpus,
            scenarios=CATALOG.scenarios,
            workloads=CATALOG.workloads,
        )


def test_unmatched_cell_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("schema_version: 1\nrecovery: []\nspeedup: []\n")
    with pytest.raises(QuantgateError, match="no recovery rule decides cell Qwen-7B/fp8-w8a8/aime24"):
        load_rules(path).recovery_for(AccuracyCellKey("Qwen-7B", 7.6, "fp8-w8a8", "aime24", "reasoning"))


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("schema_version: 2\nrecovery: []\nspeedup: []\n")
    with pytest.raises(QuantgateError, match="schema_version: version 2 is not supported"):
        load_rules(path)


def test_the_readme_threshold_example_tightens_exactly_its_cells(tmp_path: Path) -> None:
    """The README's worked example, applied as written: one entry under ``recovery:`` decides its cells."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Adding a threshold", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    text = default_rules_path().read_text()
    head, speedup = text.split("\nspeedup:", 1)
    path = tmp_path / "rules.yaml"
    path.write_text(head.rstrip("\n") + "\n" + example + "\nspeedup:" + speedup)
    before, after = load_rules(), load_rules(path)
    qwen7b = CATALOG.model("Qwen-7B")
    for benchmark in ("aime24", "math_500", "gpqa_diamond"):
        cell = AccuracyCellKey("Qwen-7B", qwen7b.params_b, "int4-w4a16", benchmark, "reasoning")
        assert before.recovery_for(cell).floor == 0.97
        assert after.recovery_for(cell).rule_id == "qwen7b-int4-tight"
        assert after.recovery_for(cell).floor == 0.98
    untouched = [c for c in accuracy_cells() if not (c.model == "Qwen-7B" and c.scheme == "int4-w4a16")]

    def decided(rules: Rules, cell: AccuracyCellKey) -> tuple[str, float, str]:
        decision = rules.recovery_for(cell)
        return decision.rule_id, decision.floor, decision.mode

    assert [decided(after, c) for c in untouched] == [decided(before, c) for c in untouched]
