"""Every data file loader, fuzzed: a bad file is one ``QuantgateError`` naming the file, never another error.

Each loader gets 500 mutated copies of a real file it reads (the committed catalog, rules, kind file,
published cards, a stored BF16 reference, recorded tool outputs, a lane report, a coverage file, a
pytest-benchmark file, a stored BF16 speed reference): a value replaced by any JSON value (NaN, infinities,
huge or negative numbers, wrong types), a key deleted or renamed, up to three times. The loader either
accepts the file or raises ``QuantgateError`` whose source is that file; anything else fails the test.
Targeted classes that must never pass (NaN, negative counts, correct > samples, unknown schema
versions, duplicated items) are checked one by one below, and the judge's own input checks in
``tests/test_judge.py``.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_results import mutate

from quantgate.benchcompare import load as load_benchmark_file
from quantgate.catalog import load_catalog
from quantgate.cli_report import load_cells
from quantgate.errors import QuantgateError
from quantgate.gate import load_coverage
from quantgate.kinds import load_kind
from quantgate.pipeline import load_speed_reference
from quantgate.published import load_published
from quantgate.rules import load_rules
from quantgate.runners.bench import BenchRun, read_bench_result
from quantgate.store import load_reference

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
EXAMPLES = 500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
BENCH_RUN = BenchRun("multi-stream", workload="random-64x32", input_len=64, output_len=32, num_prompts=32)
COVERAGE = {
    "schema_version": 1,
    "kind": "quantgate-coverage",
    "cells": [
        {"cell_id": "Qwen-7B-fp8-w8a8-h100-aime24", "status": "passed", "reason": None},
        {"cell_id": "Qwen-7B-int8-w8a8-h100-aime24", "status": "skipped", "reason": "no h100"},
    ],
}
SPEED_REFERENCE = {
    "schema_version": 1,
    "gpus": 2,
    "figures": [10.5, 11.0, 10.75],
    "provenance": {"gpu": "h100", "vllm": "0.32.0", "scenario": "multi-stream"},
}

# name -> (the real file, or a document to write, and the loader)
LOADERS: dict[str, tuple[Path | dict[str, Any], Callable[[Path], object]]] = {
    "rules": (REPO / "baselines" / "rules.yaml", load_rules),
    "kind": (REPO / "suites" / "kinds" / "cpu.yaml", load_kind),
    "published": (REPO / "baselines" / "published" / "cards-2025-02.json", load_published),
    "reference": (REPO / "baselines" / "cpu" / "tiny-qwen2" / "aime24.json", load_reference),
    "vllm-bench-result": (
        DATA / "bench" / "multi-stream.random-64x32.r0.json",
        lambda path: read_bench_result(path, BENCH_RUN),
    ),
    "lane-report": (DATA / "lane-report" / "cells.json", load_cells),
    "coverage": (COVERAGE, load_coverage),
    "pytest-benchmark": (DATA / "results" / "pytest_benchmark.json", load_benchmark_file),
    "gpu-speed-reference": (SPEED_REFERENCE, load_speed_reference),
}
CATALOG_FILES = sorted(p.name for p in (REPO / "suites" / "catalog").glob("*.yaml"))
_fresh = itertools.count()


def parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text) if path.suffix == ".yaml" else json.loads(text)


def dump(doc: Any, path: Path) -> None:
    if path.suffix == ".yaml":
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    else:
        path.write_text(json.dumps(doc), encoding="utf-8")


def original(name: str) -> tuple[Any, str]:
    source = LOADERS[name][0]
    if isinstance(source, dict):
        return source, ".json"
    return parse(source), source.suffix


def fresh_dir(root: Path) -> Path:
    """A new directory per example: loaders that cache by path must see each mutation."""
    directory = root / str(next(_fresh))
    directory.mkdir()
    return directory


def load_or_named_error(load: Callable[[Path], object], path: Path, blamed: Path | None = None) -> str:
    """Load; a failure must be a QuantgateError naming the file (``blamed``, default ``path``)."""
    error = outcome(lambda: load(path))
    if error is None:
        return "accepted"
    assert error.source == str(blamed or path), f"{error} names {error.source}, not {blamed or path}"
    assert error.message
    return "refused"


def outcome(action: Callable[[], object]) -> QuantgateError | None:
    """The QuantgateError ``action`` raised, or None; any other exception propagates (a failure)."""
    try:
        action()
    except QuantgateError as error:
        return error
    return None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_original_loads(tmp_path: Path, name: str) -> None:
    doc, suffix = original(name)
    path = tmp_path / f"{name}{suffix}"
    dump(doc, path)
    LOADERS[name][1](path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOADERS))
def test_mutated_files_are_loaded_or_refused_naming_the_file(scratch: Path, name: str) -> None:
    doc, suffix = original(name)
    load = LOADERS[name][1]
    seen: dict[str, int] = {"accepted": 0, "refused": 0}

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        path = fresh_dir(scratch) / f"{name}{suffix}"
        dump(mutate(data, doc), path)
        seen[load_or_named_error(load, path)] += 1

    check()
    print(f"{name}: {seen['accepted']} mutated files accepted, {seen['refused']} refused naming the file")
    assert seen["refused"] > 0, f"no mutation of {name} was ever refused: {seen}"


@pytest.mark.slow
@FUZZ
@given(data=st.data(), file=st.sampled_from(CATALOG_FILES))
def test_mutated_catalog_files_are_loaded_or_refused_naming_a_catalog_file(
    scratch: Path, data: st.DataObject, file: str
) -> None:
    directory = fresh_dir(scratch)
    shutil.copytree(REPO / "suites" / "catalog", directory, dirs_exist_ok=True)
    path = directory / file
    dump(mutate(data, parse(path)), path)
    error = outcome(lambda: load_catalog(directory))
    if error is not None:
        assert error.source is not None
        assert Path(error.source).parent in (directory, directory.resolve()), error


# ---- classes that must never pass ---------------------------------------------------------------


def refused(load: Callable[[Path], object], doc: Any, path: Path) -> QuantgateError:
    dump(doc, path)
    with pytest.raises(QuantgateError) as caught:
        load(path)
    assert caught.value.source == str(path)
    return caught.value


VERSIONED = ["rules", "kind", "published", "reference", "lane-report", "coverage", "gpu-speed-reference"]


@pytest.mark.parametrize("name", VERSIONED)
@settings(max_examples=25, deadline=None)
@given(version=st.integers(-5, 10**6).filter(lambda v: v != 1) | st.sampled_from(["1", 1.5, None, True]))
def test_any_other_schema_version_is_refused(scratch: Path, name: str, version: object) -> None:
    doc, suffix = original(name)
    doc = {**doc, "schema_version": version}
    error = refused(LOADERS[name][1], doc, fresh_dir(scratch) / f"{name}{suffix}")
    assert error.where == "schema_version"


def reference_with(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc, _ = original("reference")
    doc = json.loads(json.dumps(doc))
    edit(doc)
    return doc


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d["items"][3].update(correct=d["items"][3]["samples"] + 1), "items[3]"),
        (lambda d: d["items"][0].update(samples=-1), "items[0].samples"),
        (lambda d: d["items"][0].update(correct=-1), "items[0].correct"),
        (lambda d: d["items"][7].update(output_tokens=math.nan), None),
        (lambda d: d["items"][7].update(output_tokens=-3.0), "items[7].output_tokens"),
        (lambda d: d["items"].append(dict(d["items"][5])), "items"),
        (lambda d: d["items"].clear(), "items"),
    ],
    ids=[
        "correct>samples",
        "negative-samples",
        "negative-correct",
        "nan",
        "negative-tokens",
        "duplicate",
        "empty",
    ],
)
def test_a_reference_with_impossible_counts_is_refused(
    scratch: Path, edit: Callable[[dict[str, Any]], None], where: str | None
) -> None:
    error = refused(load_reference, reference_with(edit), fresh_dir(scratch) / "reference.json")
    if where is not None:
        assert error.where is not None
        assert error.where.startswith(where), error


# ---- the judge's inputs ---------------------------------------------------------------------------

count_values = (
    st.integers(-3, 30) | st.floats(allow_nan=True, allow_infinity=True) | st.none() | st.text(max_size=2)
)
item_counts = st.dictionaries(
    st.sampled_from([f"q{i}" for i in range(6)]),
    st.tuples(count_values, count_values) | st.tuples(count_values) | st.lists(st.integers(0, 9), max_size=3),
    max_size=6,
)


def valid(counts: dict[str, Any]) -> bool:
    return bool(counts) and all(
        isinstance(c, (tuple, list))
        and len(c) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in c)
        and c[0] >= 1
        and 0 <= c[1] <= c[0]
        for c in counts.values()
    )


@FUZZ
@given(reference=item_counts, candidate=item_counts)
def test_the_judge_refuses_every_impossible_input_and_judges_every_possible_one(
    reference: dict[str, Any], candidate: dict[str, Any]
) -> None:
    from quantgate.judge import judge_recovery

    possible = valid(reference) and valid(candidate) and reference.keys() == candidate.keys()
    verdicts: list[str] = []
    error = outcome(lambda: verdicts.append(judge_recovery(reference, candidate, 0.97).verdict))
    if error is not None:
        assert error.where is not None
        solved_nothing = possible and all(c == 0 for _, c in reference.values())
        assert not possible or solved_nothing, f"refused a possible input: {error}"
        return
    assert possible, f"judged an impossible input: {reference} vs {candidate}"
    assert verdicts[0] in ("pass", "fail", "inconclusive")
