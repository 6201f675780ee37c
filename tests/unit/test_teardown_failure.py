"""A server teardown that raises never costs the measured results, and never exits 0."""

from __future__ import annotations

import json

import pytest

from servebench.config import LoadConfig, RunConfig
from servebench.emulator import start_emulator
from servebench.run import orchestrate
from servebench.run.session import ServerSession


def test_a_failing_teardown_keeps_the_results_and_fails_the_run(tmp_path, monkeypatch):
    def broken_close(self):
        raise RuntimeError("docker daemon went away\nsecond line")

    monkeypatch.setattr(ServerSession, "close", broken_close)
    with start_emulator("openai", ttft_ms=2, itl_ms=1) as emu:
        cfg = RunConfig(endpoint=emu.url, launcher="external", model="tiny", results_dir=tmp_path, telemetry=False,
                        load=LoadConfig(requests=5, concurrency=2, warmup=0, workers=1))
        cfg.workload.input_tokens, cfg.workload.output_tokens = 16, 4
        with pytest.raises(orchestrate.RunError) as e:
            orchestrate.run(cfg)
    assert e.value.code == 1 and "server teardown failed: docker daemon went away" in str(e.value)
    assert "\n" not in str(e.value) and "servebench cleanup" in str(e.value)
    summary = json.loads((e.value.run_dir / "summary.json").read_text())
    assert summary["completed"] == 5
    assert any("teardown failed" in w for w in summary["warnings"])
    assert (e.value.run_dir / "requests.parquet").stat().st_size > 0
