"""One real vLLM CPU server for the whole session (helpers for the CLI are in _cli.py).

These tests never skip: CI has no GPU and no other engine, so a skipped integration test
would be a silently untested benchmarker. Without vLLM they fail and say how to fix it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.integration._cli")

from servebench.launchers.base import LaunchRequest  # noqa: E402
from servebench.launchers.process import ProcessLauncher  # noqa: E402
from servebench.engines.presets import resolve_model  # noqa: E402

SERVER_READY_TIMEOUT_S = 900  # cold start on 2 shared cores: import + compile warm-up


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.fail(
            f"vLLM is not importable from {sys.executable}: integration tests need the real "
            "vLLM CPU server; run `bash scripts/setup.sh` and use .venv/bin/python -m pytest",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return resolve_model("tiny")


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    """The shared server; its log is in the session's tmp dir (path in the failure message)."""
    require_vllm()
    launcher = ProcessLauncher()
    run_dir = tmp_path_factory.mktemp("vllm-server")
    req = LaunchRequest(engine="vllm", model=str(tiny_model), run_dir=run_dir,
                        ready_timeout_s=SERVER_READY_TIMEOUT_S)
    try:
        server = launcher.start(req)  # raises LaunchError (one line, log tail) and cleans up
        yield server
    finally:
        launcher.stop()
