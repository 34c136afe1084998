#!/usr/bin/env bash
# The nightly's steps, one command each. `.github/workflows/nightly.yml` runs them on the runners of each
# device kind, and `./run rehearse` runs the same steps here with the cpu kind (tests/test_workflows.py
# checks that both run these steps in the same order). Everything a step writes goes to out/.
#
#   tools/nightly.sh setup                          the project environment (.venv, quantgate and its test tools)
#   tools/nightly.sh envs KIND                      the tool environments in $QG_ENVS (tools/setup_envs.sh): the
#                                                   CPU builds for the cpu kind, the CUDA builds (--cuda) for GPU
#                                                   kinds; a no-op when their stamps match
#   tools/nightly.sh inventory KIND N               fail unless this machine has N devices of KIND (cpu: cores)
#   tools/nightly.sh plan KIND SHARD NAME           where and when each cell of the shard would run (out/plan-NAME.json)
#   tools/nightly.sh prefetch KIND NAME             the checkpoints and datasets of the plan's cells into the Hugging
#                                                   Face cache (HF_TOKEN from the environment, for gated GPQA-Diamond;
#                                                   never printed); the cpu kind verifies its local files offline.
#                                                   Fails naming what is missing, before any cell starts
#   tools/nightly.sh cells KIND N SHARD NAME BUDGET HISTORY FRESH
#                                                   the shard's cells on N xdist workers within BUDGET (8h, 90m,
#                                                   or none), those with the oldest verdicts in HISTORY first,
#                                                   none verified green on the same inputs in the last FRESH
#                                                   days (or none): coverage, JUnit, report; the cells left
#                                                   out are deferred
#   tools/nightly.sh gate KINDS ARTIFACTS HISTORY   fail on any failed or uncovered cell of KINDS over every job;
#                                                   a deferred cell passes only on a green verdict under 7 days
#                                                   old in HISTORY (a verdict file, updated with this night's)
#   tools/nightly.sh compare PREVIOUS ARTIFACTS WORSE
#                                                   each job's pytest-benchmark file against the previous green
#                                                   run's (fails when a figure is worse by more than WORSE)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${QG_VENV:-.venv}

step=${1:-}
shift || true
case "$step" in
  setup)
    if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
    if [ ! -f "$VENV/.qg-installed" ] || [ pyproject.toml -nt "$VENV/.qg-installed" ]; then
      "$VENV/bin/python" -m pip install --quiet --upgrade pip
      "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
      touch "$VENV/.qg-installed"
    fi
    ;;
  envs)
    if [ "$1" = cpu ]; then tools/setup_envs.sh; else tools/setup_envs.sh --cuda; fi
    ;;
  inventory)
    "$VENV/bin/quantgate" gpus --expect "$1:$2"
    ;;
  plan)
    mkdir -p out
    "$VENV/bin/pytest" suites -m "$1" --qg-shard "$2" --collect-only -q -p no:randomly \
      --qg-plan "out/plan-$3.json"
    ;;
  prefetch)
    # The cpu kind's plan places no cells (they need no devices): all of its cells are checked.
    if [ "$1" = cpu ]; then
      "$VENV/bin/quantgate" prefetch --kind cpu
    else
      "$VENV/bin/quantgate" prefetch --kind "$1" --plan "out/plan-$2.json"
    fi
    ;;
  cells)
    mkdir -p out
    budget=()
    if [ "$5" != none ]; then budget=(--qg-budget "$5"); fi
    if [ -f "$6" ]; then
      budget+=(--qg-history "$6")
      if [ "$7" != none ]; then budget+=(--qg-fresh "$7"); fi
    else
      echo "no verdict history at $6: every cell is new"
    fi
    "$VENV/bin/pytest" suites -m "$1" -n "$2" --qg-shard "$3" -p no:randomly "${budget[@]}" \
      --qg-coverage "out/coverage-$4.json" --junitxml "out/junit-$4.xml" --qg-report "out/report-$4"
    ;;
  gate)
    shopt -s nullglob
    files=("$2"/*/coverage-*.json)
    if [ ${#files[@]} -eq 0 ]; then echo "no coverage file under $2: failing closed" >&2; exit 1; fi
    mkdir -p "$(dirname "$3")"
    "$VENV/bin/quantgate" gate "${files[@]}" --kinds "$1" --history "$3"
    ;;
  compare)
    previous=$1 artifacts=$2 worse=$3
    if [ ! -d "$previous" ]; then echo "no earlier green run: nothing to compare"; exit 0; fi
    status=0
    shopt -s nullglob
    for new in "$artifacts"/*/report-*/benchmark.json; do
      old="$previous/${new#"$artifacts"/}"
      if [ ! -f "$old" ]; then echo "warning: no earlier $old to compare with"; continue; fi
      code=0
      "$VENV/bin/quantgate" compare "$old" "$new" --fail-worse "$worse" | tee -a "${GITHUB_STEP_SUMMARY:-/dev/null}" || code=$?
      if [ "$code" -eq 3 ]; then echo "warning: $new: inconclusive against $old (noisy repeats)"; fi
      if [ "$code" -eq 1 ] || [ "$code" -eq 2 ]; then status=1; fi
    done
    exit "$status"
    ;;
  *)
    sed -n '2,27p' "$0" >&2
    exit 2
    ;;
esac
