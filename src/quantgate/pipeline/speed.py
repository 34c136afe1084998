"""The speed stage: bench plans on a warm server, BF16 speed (session or stored), the speedup judge."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from quantgate.budget import Cut, OverBudget, estimate_run_seconds, size_bench
from quantgate.datafile import Strict, atomic_write_text, load_model
from quantgate.devices.durations import estimate_fixed_seconds
from quantgate.errors import QuantgateError
from quantgate.kinds import ScenarioLoad
from quantgate.matrix import (
    MatrixCell,
    planned_capacity,
    planned_latency_s,
    planned_prompts,
    reference_cell,
)
from quantgate.outcomes import (
    SpeedOutcome,
    judge_speed_sequentially,
    scenario_figures,
    speed_judge,
)
from quantgate.rules import Decision, SpeedCellKey
from quantgate.runners.bench import BenchResult, BenchRun, BenchWorker
from quantgate.runners.capacity import (
    SearchSettings,
    dithered_start,
    search_capacity,
    search_state,
    searches,
    step_of,
    step_prompts,
)
from quantgate.runners.probe import Rate
from quantgate.runners.serve import VllmServer
from quantgate.store import (
    check_comparable,
)

if TYPE_CHECKING:
    from quantgate.pipeline.core import PipelineCore as _Core
else:
    _Core = object

from quantgate.pipeline.core import SPEED_MUST_MATCH, SPEED_REFERENCE_SCHEMA_VERSION

# A confirmation's repeats (and the seeds of their prompts) are numbered apart from the series'.
CONFIRMATION_FIRST_REPEAT = 1000
# The warm-up run's prompts are seeded apart from every measured run's: with the first repeat's seed it
# sent that repeat's very prompts, which vLLM's prefix cache then served without their prefill.
WARM_UP_SEED = 2**31 - 1


def search_prompts(load: ScenarioLoad, rate: float | None) -> int:
    """Prompts of a capacity search's step at ``rate``: ``step_s`` seconds of arrivals, at least the
    load's ``num_prompts`` (a fixed count would send them all at once at a high enough rate)."""
    step_s = load.search.step_s if load.search is not None else 0.0
    return step_prompts(load.num_prompts, step_s, rate or 0.0)


def warm_start(
    settings: SearchSettings, results: list[BenchResult], scenario: str, repeat: int, anchor: float
) -> SearchSettings:
    """The next search's first rate: the last finished search's capacity (when above 0), else
    ``anchor``, what is known before any search (``SpeedStage.first_anchor``: BF16's stored capacity
    for a quantized cell of a kind that stores it, else the probed start), offset by a fraction of the
    ``resolution`` that differs per repeat.

    Why a known capacity: the search then needs ~3 steps (that rate, one up or down, one bisection)
    instead of a ladder from the probe's rate. Why the offset (dither): a search reports a rate of its
    grid, and searches started on the same rate walk the same grid, so repeats came out identical
    (135, 135, 135 req/s) and the speed judge saw no spread at all; with starts spread over one
    resolution step (golden-ratio sequence by repeat) each figure is a fresh draw of where the limit
    lies within a step, so the repeats' spread covers the grid's error. Same rule for every scheme, and
    the plans walk it too (``runners.capacity.planned_searches``)."""
    finished = [s for s in searches(results, scenario) if search_state(s).converged]
    capacity = search_state(finished[-1]).capacity if finished else None
    return dithered_start(settings, capacity or anchor, repeat)


class SpeedReference(Strict):
    """``baselines/<kind>/<model>/speed/<target>.json``: BF16's figure per repeat, its GPUs, provenance.

    Why stored for GPU kinds: a kind's shards and xdist workers split a model's schemes across runners
    and processes, so BF16 may run elsewhere or later; and re-measuring BF16 every night costs a
    quarter of a kind's GPU-hours. The provenance (``SPEED_MUST_MATCH``) must hold to judge against it.
    """

    schema_version: int
    gpus: int = Field(ge=1)
    figures: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=2)
    provenance: dict[str, str]


def load_speed_reference(path: Path) -> SpeedReference:
    """A stored BF16 speed reference; any other schema version or a bad field is refused, naming it."""
    return load_model(SpeedReference, path, "BF16 speed reference", SPEED_REFERENCE_SCHEMA_VERSION)


class SpeedStage(_Core):
    """Methods of ``Pipeline`` that judge a cell's speed (``judge_speed``)."""

    def speed_decision(self, cell: MatrixCell) -> Decision:
        return self.rules.speedup_for(
            SpeedCellKey(
                cell.model,
                self.params_b(cell.model),
                cell.scheme,
                cell.gpu,
                cell.scenario or "",
                cell.workload or "lane",
            )
        )

    def loads(self, cell: MatrixCell) -> list[tuple[str, ScenarioLoad, str, int, int]]:
        """(scenario, load, workload name, input and output tokens) of the kind's scenarios for the
        cell's workload: the load's own lengths, else the catalog workload's."""
        out: list[tuple[str, ScenarioLoad, str, int, int]] = []
        for scenario, load in self.spec.speed.scenarios.items():
            if load.input_len is not None and load.output_len is not None:
                lengths = (load.input_len, load.output_len)
                name = f"random-{load.input_len}x{load.output_len}"
            else:
                workload = self.catalog.workloads[cell.workload or ""]
                lengths = (workload.prompt_tokens, workload.output_tokens)
                name = cell.workload or ""
            out.append((scenario, load, name, *lengths))
        return out

    def bench_runs(
        self, cell: MatrixCell, repeats: int | None = None, warm_up: bool = True, first: int = 0
    ) -> list[BenchRun]:
        """Every fixed-load scenario's runs on the cell's workload (a capacity search's steps are chosen
        as it goes: ``search_runs``), repeats interleaved (r0 of each scenario, then r1, ...) to spread
        drift. With ``warm_up`` the plan opens with a discarded run (scenario ``warm-up``, the first
        scenario's load): the first measured run of a fresh server was up to 10x slower than the next
        ones; its prompts are its own (``WARM_UP_SEED``). Repeats (and their seeds) are numbered from
        ``first``."""
        loads = [entry for entry in self.loads(cell) if entry[1].search is None]
        if not loads:
            return []
        plan = [(("warm-up", *loads[0][1:]), first, WARM_UP_SEED)] if warm_up else []
        for repeat in range(first, first + (self.spec.speed.repeats if repeats is None else repeats)):
            plan += [(entry, repeat, repeat) for entry in loads]
        return [
            self.load_run(
                *entry, repeat=repeat, seed=seed, prompts=planned_prompts(self.catalog, cell, entry[1])
            )
            for entry, repeat, seed in plan
        ]

    def load_run(
        self,
        scenario: str,
        load: ScenarioLoad,
        workload: str,
        input_len: int,
        output_len: int,
        *,
        repeat: int,
        rate: float | None = None,
        step: int | None = None,
        search: SearchSettings | None = None,
        prompts: int | None = None,
        seed: int | None = None,
    ) -> BenchRun:
        """One run of a scenario's load: a fixed load's run of ``prompts`` requests (default the load's
        ``num_prompts``; ``matrix.planned_prompts`` sizes a ``duration_s`` load), or a search step at
        ``rate`` with its ``step`` and settings (its seed is the repeat's and the step's, so every step
        offers fresh prompts and arrivals)."""
        fixed = prompts if prompts is not None else load.num_prompts
        return BenchRun(
            scenario,
            workload=workload,
            input_len=input_len,
            output_len=output_len,
            num_prompts=search_prompts(load, rate) if step is not None else fixed,
            max_concurrency=load.max_concurrency,
            request_rate=rate or load.request_rate or math.inf,
            goodput={"ttft": load.goodput.ttft_ms, "tpot": load.goodput.tpot_ms} if load.goodput else {},
            repeat=repeat,
            num_warmups=self.spec.speed.warmups if step in (None, 0) else 0,
            seed=(repeat if seed is None else seed) if step is None else repeat * 100 + step,
            step=step,
            search=search,
        )

    def fixed_timeout(self, cell: MatrixCell, runs: list[BenchRun]) -> float:
        """Seconds before an unsized bench of fixed-load ``runs`` is stopped: the planned seconds of
        those runs on the cell's planned server (``devices.durations.estimate_fixed_seconds``, as the
        plans time them), scaled as ``timeout`` scales an estimate. Why not the cell's estimate: a
        workload's first speed cell benches every fixed scenario, its own and the others' (a
        multi-stream cell's estimate left a BF16 bench 1.3x its planned work)."""
        if self.local(cell.model) is not None:
            return self.timeout(cell)
        latency, capacity = planned_latency_s(self.catalog, cell), planned_capacity(self.catalog, cell)
        planned = sum(
            estimate_fixed_seconds(
                run.num_prompts,
                run.num_warmups,
                latency,
                capacity,
                max_concurrency=run.max_concurrency,
                request_rate=run.request_rate,
            )
            for run in runs
        )
        return self.scaled_timeout(planned)

    def run_seconds(self, run: BenchRun, rate: Rate) -> float:
        """A run's expected seconds at the probed rates, the tool's warm-up requests included."""
        return estimate_run_seconds(
            run.num_prompts + run.num_warmups,
            run.output_len,
            single_stream=run.max_concurrency == 1,
            request_rate=run.request_rate,
            single_tps=rate.single_tps,
            batch_tps=rate.batch_tps,
            overhead_s=self.spec.budget.run_overhead_s,
        )

    def bench_worker(self) -> BenchWorker:
        """One ``vllm bench serve`` process for the session (vLLM is imported once, not per cell)."""
        if self._bench_worker is None:
            self._bench_worker = BenchWorker(
                self.envs.python("vllm"), self.log_dir, {**os.environ, **self.tool_env()}
            )
        return self._bench_worker

    def bench_dir(self, cell: MatrixCell) -> Path:
        """Where the bench results of the cell's served model and workload go in this run."""
        return self.workdir / "bench" / "__".join(filter(None, (self.served_name(cell), cell.workload)))

    def bench(
        self,
        server: VllmServer,
        cell: MatrixCell,
        repeats: int | None = None,
        first: int = 0,
        label: str = "",
    ) -> list[BenchResult]:
        """The plan of the cell's served model and workload: its fixed-load scenarios, then a capacity
        search per repeat of each searched scenario. With a speed budget the fixed runs get as many
        repeats as fit in it (``OverBudget``: none) and each searched scenario, a cell of its own, gets
        the budget again, spent by the clock (a search that runs out is cut and recorded); without one,
        the asked repeats (BF16: the reference's) with a timeout from the estimate. ``label`` names a
        top-up or a confirmation: its own folder, repeats (and seeds) numbered from ``first``, no
        warm-up run (the server is warm)."""
        speed = self.spec.speed
        asked = repeats or (
            speed.reference_repeats or speed.repeats if cell.scheme == "bf16" else speed.repeats
        )
        out = self.bench_dir(cell) / label if label else self.bench_dir(cell)
        results = self.bench_fixed(server, cell, asked, first, label, out)
        for entry in self.loads(cell):
            if entry[1].search is not None:  # its own cell, its own budget
                deadline = time.monotonic() + self.spec.budget.speed_s
                results += self.search_repeats(server, cell, entry, asked, first, out, deadline)
        return results

    def bench_fixed(
        self,
        server: VllmServer,
        cell: MatrixCell,
        asked: int,
        first: int,
        label: str,
        out: Path,
    ) -> list[BenchResult]:
        """The fixed-load scenarios' runs, sized to the speed budget (``bench``)."""
        name = self.served_name(cell)
        speed = self.spec.speed
        runs = self.bench_runs(cell, asked, warm_up=not label, first=first)
        if not runs:
            return []
        budget_s = self.spec.budget.speed_s
        if not math.isfinite(budget_s):
            timeout = self.fixed_timeout(cell, runs)
        else:
            rate = self.rate(server, cell)
            plan = self.bench_runs(cell, repeats=1)
            warm_s = 0.0 if label else self.run_seconds(plan[0], rate)
            repeat_s = sum(self.run_seconds(run, rate) for run in plan[1:])
            size = size_bench(asked, repeat_s, warm_s, budget_s, rate.detail)
            if size.cut is not None and not label:
                self.speed_cuts[name] = size.cut
            if size.repeats == 0:
                assert size.cut is not None
                raise OverBudget(size.cut)
            planned = warm_s + size.repeats * repeat_s
            runs = self.bench_runs(cell, size.repeats, warm_up=not label, first=first)
            timeout = self.sized_timeout(planned, speed.timeout_s)
            what = f" ({label})" if label else ""
            after = "" if label else " after a warm-up run"
            self.progress(
                f"{name}: vllm bench serve{what}, {size.repeats} repeats x {len(plan) - 1} "
                f"fixed-load scenarios{after} (~{planned:.0f} s)"
            )
        with server.in_use("vllm bench serve"):
            return self.bench_worker().run(
                server.base_url,
                name,
                self.checkpoint(cell).path,
                runs,
                out,
                timeout=timeout,
                api_key=server.api_key,
            )

    def search_settings(
        self, server: VllmServer, cell: MatrixCell, load: ScenarioLoad, output_len: int
    ) -> tuple[SearchSettings, Rate | None]:
        """The kind's search settings with its start rate: the kind's, else the probed batched
        generation rate over the output length (the rate that generation alone could keep up with);
        and the probed rates where a budget or the start needs them (``None``: not probed)."""
        search = load.search
        assert search is not None
        probe = search.start_rate is None or math.isfinite(self.spec.budget.speed_s)
        rate = self.rate(server, cell) if probe else None
        start = search.start_rate or (rate.batch_tps / output_len if rate else search.min_rate)
        walk = search.model_dump(exclude={"start_rate", "step_s"})
        settings = SearchSettings(start_rate=min(max(start, search.min_rate), search.max_rate), **walk)
        return settings, rate

    def first_anchor(
        self, cell: MatrixCell, scenario: str, load: ScenarioLoad, start: float
    ) -> tuple[float, str]:
        """Where the cell's first capacity search of ``scenario`` starts (before the dither), and what
        that rate is: for a quantized cell whose kind stores BF16's speed figures and holds a reference
        for this target (``stored_capacity``), BF16's capacity (the median of its figures) times the
        cell's GPUs over BF16's; else ``start`` (the kind's start rate, else the probe's:
        ``search_settings``).

        Why BF16's capacity: it is what is known of this server's load before any search. The probe's
        rate (8 streams alone) sat 3-11 ladder steps below the cards' capacities, each step ~30 s of
        arrivals plus a drain of up to ~156 s on slow cells; from BF16's capacity a search ends in ~3
        steps (that rate, one up or down, one bisection) where the quantized capacity lies within a
        ladder step of it, as the cards' mostly do for schemes served on BF16's GPU count (0.9-1.4x
        BF16's). The rule, its bracket and its figure do not depend on the start, only its steps do.

        Why times the GPUs: BF16's figure is its whole server's, on the GPUs it needed (70B: four H100),
        and a quantized server often runs on fewer (70B INT4: one). No rule or plan records an expected
        speedup (the rules hold floors, the least a cell may show), so the expectation is the same
        throughput per GPU: whole-server parity started those searches 6-16x above the plans' capacity,
        ladders down through overloaded steps. The plans start there too
        (``matrix.reference_capacity``)."""
        stored = self.stored_capacity(cell, scenario)
        if stored is not None:
            capacity, gpus = stored
            mine = max(1, cell.requirement.count)
            per_gpu = f", x {mine}/{gpus} GPUs" if mine != gpus else ""
            return capacity * mine / gpus, f"BF16's stored capacity ({capacity:.3g} req/s{per_gpu})"
        fixed = load.search is not None and load.search.start_rate is not None
        return start, "the kind's start rate" if fixed else "the probe's rate"

    def stored_capacity(self, cell: MatrixCell, scenario: str) -> tuple[float, int] | None:
        """BF16's stored capacity for ``scenario`` on the cell's workload (the median of the reference's
        figures) and its GPUs, where a quantized cell's first search may start from it: the kind stores
        BF16's speed figures (``reference: stored``) and that reference exists and holds for this run
        (``SPEED_MUST_MATCH``, as the judge requires); else ``None`` (a reference that does not hold is
        the judge's to name: ``bf16_speed``)."""
        if cell.scheme == "bf16" or self.spec.speed.reference != "stored":
            return None
        target = "-".join(filter(None, (scenario, cell.workload)))
        twin = dataclasses.replace(cell, scenario=scenario, target=target)
        path = self.speed_reference_path(twin)
        if not path.exists():
            return None
        try:
            stored = load_speed_reference(path)
            check_comparable(path, stored.provenance, self.speed_provenance(twin), SPEED_MUST_MATCH, "")
        except QuantgateError:
            return None
        return statistics.median(stored.figures), stored.gpus

    def search_repeats(
        self,
        server: VllmServer,
        cell: MatrixCell,
        entry: tuple[str, ScenarioLoad, str, int, int],
        asked: int,
        first: int,
        out: Path,
        deadline: float,
    ) -> list[BenchResult]:
        """``asked`` capacity searches of one scenario (one per repeat, ``runners.capacity``), each step
        a one-run plan on the bench worker; a search whose next step does not fit before ``deadline`` is
        cut, recorded in ``speed_cuts``, and no later search starts."""
        scenario, load, workload, input_len, output_len = entry
        name = self.served_name(cell)
        settings, rate = self.search_settings(server, cell, load, output_len)
        earlier = list(self._measured.get((cell.model, cell.scheme, cell.workload or ""), []))
        results: list[BenchResult] = []
        anchor, source = self.first_anchor(cell, scenario, load, settings.start_rate)
        if not any(search_state(s).converged for s in searches(earlier, scenario)):
            self.progress(f"{name}: {scenario} capacity search starts from {source} ({anchor:.3g} req/s)")
        for repeat in range(first, first + asked):
            settings = warm_start(settings, [*earlier, *results], scenario, repeat, anchor)

            def run_at(
                offered: float, step: int, repeat: int = repeat, settings: SearchSettings = settings
            ) -> BenchRun:
                return self.load_run(
                    scenario,
                    load,
                    workload,
                    input_len,
                    output_len,
                    repeat=repeat,
                    rate=offered,
                    step=step,
                    search=settings,
                )

            def seconds(offered: float, repeat: int = repeat) -> float:
                return self.run_seconds(run_at(offered, 1, repeat), rate) if rate else 0.0

            def run_step(offered: float, step: int, repeat: int = repeat) -> BenchResult:
                run = run_at(offered, step, repeat)
                timeout = self.sized_timeout(seconds(offered, repeat), self.spec.speed.timeout_s)
                with server.in_use("vllm bench serve"):
                    return self.bench_worker().run(
                        server.base_url,
                        name,
                        self.checkpoint(cell).path,
                        [run],
                        out,
                        timeout=timeout,
                        api_key=server.api_key,
                    )[0]

            search = search_capacity(run_step, settings, step_seconds=seconds, deadline=deadline)
            results += search.results
            rates = ", ".join(
                f"{r.run.request_rate:.3g}{'+' if step_of(r, settings).passed else '-'}"
                for r in search.results
            )
            self.progress(
                f"{name}: {scenario} capacity search r{repeat}: {search.cut or search.state.reason} "
                f"({len(search.results)} steps [{rates}] in {search.seconds:.1f} s)"
            )
            if search.cut is not None:
                later = first + asked - repeat - 1
                self.note_speed_cut(
                    name,
                    Cut(
                        f"{scenario} capacity",
                        f"search r{repeat} {search.cut}; {later} later searches not run",
                    ),
                )
                break
        return results

    def note_speed_cut(self, name: str, cut: Cut) -> None:
        """Record a cut of the served model's speed work beside any earlier one (the report shows both)."""
        earlier = self.speed_cuts.get(name)
        self.speed_cuts[name] = cut if earlier is None else Cut(earlier.what, f"{earlier.reason}; {cut}")

    def top_up(self, server: VllmServer, cell: MatrixCell, total: int, metric: str) -> list[float] | str:
        """The scenario's figures once its served model and workload have ``total`` repeats (benching the
        missing ones; another scenario's top-up may have run them), or why no more were run."""
        key = (cell.model, cell.scheme, cell.workload or "")
        have = len(scenario_figures(self._measured[key], cell.scenario or "", metric, allow_zero=True))
        if have < total:
            self.progress(
                f"{self.served_name(cell)}: the speed judge is undecided; {total - have} more repeats"
            )
            label = f"top-up-{have}"  # a cut search's top-up leaves ``have``: its folder is taken
            label += f"-{total}" if (self.bench_dir(cell) / label).exists() else ""
            try:
                self._measured[key] += self.bench(server, cell, total - have, first=have, label=label)
            except Exception as error:
                return f"no more repeats were run ({error})"
        figures = scenario_figures(self._measured[key], cell.scenario or "", metric, allow_zero=True)
        if len(figures) < total:  # a capacity search the budget cut: the verdict stands, undecided
            cut = self.speed_cuts.get(self.served_name(cell))
            return f"the top-up gave {len(figures) - have} of {total - have} more repeats ({cut})"
        return figures

    def confirming_figures(
        self, server: VllmServer, cell: MatrixCell, repeats: int, metric: str
    ) -> list[float] | str:
        """The scenario's figures from a fresh bench of its served model and workload (one per session,
        shared by its scenarios), or why there are none."""
        key = (cell.model, cell.scheme, cell.workload or "")
        if key not in self._confirming:
            self.progress(f"{self.served_name(cell)}: a speed cell failed; confirming it with a fresh bench")
            try:
                self._confirming[key] = self.bench(
                    server, cell, repeats, first=CONFIRMATION_FIRST_REPEAT, label="confirm"
                )
            except Exception as error:
                self._confirming[key] = error
        fresh = self._confirming[key]
        if isinstance(fresh, Exception):
            return f"the confirming bench did not run ({fresh})"
        try:
            return scenario_figures(fresh, cell.scenario or "", metric, allow_zero=True)
        except OverBudget as cut:  # capacity searches the budget cut: no confirmation, no verdict
            return f"the confirming bench was cut ({cut.cut})"

    def speed_reference_path(self, cell: MatrixCell) -> Path:
        return self.baselines / cell.gpu / cell.model / "speed" / f"{cell.target}.json"

    def speed_provenance(self, cell: MatrixCell) -> dict[str, str]:
        """What BF16's stored speed figures were measured with, for the cell's scenario: the checkpoint,
        GPU kind, load, warm-ups, vLLM, and for a load sized by time the prompts BF16's runs send
        (``matrix.planned_prompts``: it follows the catalog and the published tables, not the kind
        file alone)."""
        load = self.spec.speed.scenarios[cell.scenario or ""]  # type: ignore[index]
        reference = reference_cell(self.catalog, cell) if load.duration_s is not None else None
        return {
            "model_repo": self.repository(cell.model, "bf16")
            if self.local(cell.model) is None
            else cell.model,
            "gpu": cell.gpu,
            "scenario": cell.scenario or "",
            "workload": cell.workload or "",
            "load": json.dumps(load.model_dump(mode="json"), sort_keys=True),
            "warmups": str(self.spec.speed.warmups),
            "prompts": str(planned_prompts(self.catalog, reference or cell, load)),
            "vllm": self.envs.version("vllm"),
        }

    def store_speed_reference(self, cell: MatrixCell, figures: list[float], gpus: int) -> str:
        path = self.speed_reference_path(cell)
        reference = {
            "schema_version": SPEED_REFERENCE_SCHEMA_VERSION,
            "gpus": gpus,
            "figures": figures,
            "provenance": self.speed_provenance(cell),
        }
        note = f"{'updated' if path.exists() else 'new'} BF16 speed reference {path}"
        atomic_write_text(path, json.dumps(reference, indent=1, sort_keys=True) + "\n")
        return note

    def bf16_speed(self, cell: MatrixCell, metric: str) -> tuple[list[float], int]:
        """BF16's figures and GPU count for the cell's scenario: this session's measurement (``session``)
        or the kind's stored reference, checked against this run (``stored``)."""
        if self.spec.speed.reference == "stored":
            path = self.speed_reference_path(cell)
            self.require(path, f"BF16 speed reference for {cell.model} {cell.target}", cell)
            stored = load_speed_reference(path)
            fix = f"rewrite it with: {self.update_command(cell)}"
            check_comparable(path, stored.provenance, self.speed_provenance(cell), SPEED_MUST_MATCH, fix)
            return list(stored.figures), stored.gpus
        key = (cell.model, "bf16", cell.workload or "")
        measured = self._measured.get(key)
        failure = self._bench_failed.get(key)
        if measured is None and isinstance(failure, OverBudget):
            raise OverBudget(Cut("speed not judged", f"BF16 speed was not measured ({failure.cut})"))
        if measured is None:
            raise QuantgateError(
                self.baselines / cell.gpu / cell.model,
                f"no BF16 speed measured for {cell.model} in this session (its cell failed or was "
                "deselected); speed is judged against the same session's BF16",
            )
        return scenario_figures(measured, cell.scenario or "", metric), 1

    def reuses_speed_reference(self, cell: MatrixCell) -> bool:
        """A BF16 cell of a kind that reuses stored references, whose reference holds for this run."""
        speed = self.spec.speed
        path = self.speed_reference_path(cell)
        stored = speed.reference == "stored" and speed.reuse_reference and not self.update_baselines
        if not (stored and cell.scheme == "bf16" and path.exists()):
            return False
        try:
            stored_reference = load_speed_reference(path)
            check_comparable(
                path, stored_reference.provenance, self.speed_provenance(cell), SPEED_MUST_MATCH, ""
            )
        except QuantgateError:
            return False
        return True

    def reused_speed_reference(self, cell: MatrixCell) -> SpeedOutcome:
        """A BF16 speed cell that reports its stored reference, checked against this run's inputs (a
        changed input is an error that says how to measure it again): nothing is benched."""
        spec = self.catalog.scenarios[cell.scenario or ""]
        figures, gpus = self.bf16_speed(cell, spec.metric)
        note = f"BF16 speed reference reused, not measured again ({self.speed_reference_path(cell)})"
        return SpeedOutcome(
            cell.scenario or "",
            spec.metric,
            spec.higher_is_better,
            figures,
            figures,
            None,
            None,
            (),
            gpus,
            gpus,
            reused=note,
        )

    def judge_speed(self, server: VllmServer, cell: MatrixCell) -> SpeedOutcome:
        """The cell's scenario figures (its served model and workload benched once per session) against
        BF16's. A failed bench fails every scenario of it with that error instead of benching again.

        A BF16 cell is the reference; with stored references and ``update_baselines`` its figures are
        stored (the outcome's note says so, and the run fails). The speedup compares whole servers (the
        cards' definition); when BF16 needs more GPUs than the quantized model, the per-GPU speedup is
        reported beside it.
        """
        key = (cell.model, cell.scheme, cell.workload or "")
        if self.reuses_speed_reference(cell):
            return self.reused_speed_reference(cell)
        if key in self._bench_failed:
            raise self._bench_failed[key]
        if key not in self._measured:
            self.wait_quiet()
            try:
                self._measured[key] = self.bench(server, cell)
            except Exception as error:
                self._bench_failed[key] = error
                raise
        scenario = cell.scenario or ""
        spec = self.catalog.scenarios[scenario]
        quantized = cell.scheme != "bf16"
        mine = scenario_figures(self._measured[key], scenario, spec.metric, allow_zero=quantized)
        runs = tuple(r for r in self._measured[key] if r.run.scenario == scenario)
        gpus = max(1, cell.requirement.count)
        if not quantized:
            note = None
            if self.update_baselines and self.spec.speed.reference == "stored":
                note = self.store_speed_reference(cell, mine, gpus)
            return SpeedOutcome(
                scenario, spec.metric, spec.higher_is_better, mine, mine, None, None, runs, gpus, gpus, note
            )
        bf16, bf16_gpus = self.bf16_speed(cell, spec.metric)
        decision = self.speed_decision(cell)

        judge = speed_judge(
            bf16,
            decision.floor,
            higher_is_better=spec.higher_is_better,
            cap=self.spec.speed.cap,
            reference_gpus=bf16_gpus,
            candidate_gpus=gpus,
        )
        verdict, mine = judge_speed_sequentially(
            judge,
            mine,
            more=lambda total: self.top_up(server, cell, total, spec.metric),
            fresh=lambda repeats: self.confirming_figures(server, cell, repeats, spec.metric),
            confirm_repeats=self.spec.speed.cap,
        )
        runs = tuple(r for r in self._measured[key] if r.run.scenario == scenario)
        return SpeedOutcome(
            scenario, spec.metric, spec.higher_is_better, mine, bf16, decision, verdict, runs, gpus, bf16_gpus
        )
