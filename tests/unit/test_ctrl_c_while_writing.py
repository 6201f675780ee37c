"""A Ctrl-C pressed while a finished load is written is honoured after the files are complete:
never dropped (a sweep used to run on to its end), never cutting the write short."""

from __future__ import annotations

import json
import os
import signal

import pytest

from servebench.config import LoadConfig, RunConfig
from servebench.emulator import start_emulator
from servebench.run import orchestrate, writer




@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_the_write_of_a_complete_run_is_kept_and_honoured(tmp_path, monkeypatch, handlers, sig, code):
    real_write = writer.write

    def write_with_a_ctrl_c(*a, **kw):
        os.kill(os.getpid(), sig)  # the user presses Ctrl-C just as the load ended
        return real_write(*a, **kw)

    monkeypatch.setattr(writer, "write", write_with_a_ctrl_c)
    with start_emulator("openai", ttft_ms=2, itl_ms=1) as emu:
        cfg = RunConfig(endpoint=emu.url, launcher="external", model="tiny", results_dir=tmp_path, telemetry=False,
                        load=LoadConfig(requests=6, concurrency=2, warmup=0, workers=1))
        cfg.workload.input_tokens, cfg.workload.output_tokens = 16, 4
        with pytest.raises(orchestrate.RunError) as e:
            orchestrate.run(cfg)
    assert e.value.code == code and "after the load ended" in str(e.value)
    summary = json.loads((e.value.run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["completed"] == 6
    assert (e.value.run_dir / "requests.parquet").stat().st_size > 0
