#!/usr/bin/env bash
# First benchmark on a fresh clone: the paper's burst (1000 prompts x 512 tokens in,
# 128 out) against a real vLLM CPU server on the tiny preset model.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# vLLM + transformers only: llama.cpp compiles from source (~12 min on 2 cores), which would
# break the 10-minute quick start; `bash scripts/setup.sh` adds it later.
SERVEBENCH_ENGINES="${SERVEBENCH_ENGINES:-vllm transformers}" bash scripts/setup.sh
exec .venv/bin/servebench run --backend vllm --model tiny --launcher process \
  --requests 1000 --input-tokens 512 --output-tokens 128 "$@"
