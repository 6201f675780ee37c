"""Fixtures shared by the unit tests."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture
def handlers():
    """servebench's signal handlers installed (signals.interruptible), pytest's own put back after."""
    from servebench.signals import interruptible

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interruptible()
    yield
    for s, h in before.items():
        signal.signal(s, h)


@pytest.fixture
def emulated_run(tmp_path):
    """`run(requests)`: one small in-process run against a private emulator (closed loop, two
    streams, 16 -> 4 tokens), returning orchestrate.run's run dir or raising its RunError."""
    from servebench.config import LoadConfig, RunConfig
    from servebench.emulator import start_emulator
    from servebench.run import orchestrate

    def run(requests: int):
        with start_emulator("openai", ttft_ms=2, itl_ms=1) as emu:
            cfg = RunConfig(endpoint=emu.url, launcher="external", model="tiny", results_dir=tmp_path,
                            telemetry=False, load=LoadConfig(requests=requests, concurrency=2, warmup=0, workers=1))
            cfg.workload.input_tokens, cfg.workload.output_tokens = 16, 4
            return orchestrate.run(cfg)

    return run
