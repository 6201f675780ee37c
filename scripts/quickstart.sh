#!/usr/bin/env bash
# First benchmark on a fresh clone: the paper's burst (1000 prompts x 512 tokens in,
# 128 out) against a real vLLM CPU server on the tiny preset model.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/servebench run --backend vllm --model tiny --launcher process \
  --requests 1000 --input-tokens 512 --output-tokens 128 "$@"
