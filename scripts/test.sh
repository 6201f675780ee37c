#!/usr/bin/env bash
# Everything CI runs: build/refresh the environment, then unit + integration tests
# (integration tests start a real vLLM CPU server; they fail, never skip, without one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# arguments replace the default selection, e.g. `scripts/test.sh tests/integration -x`
exec .venv/bin/python -m pytest -q "${@:-tests}"
