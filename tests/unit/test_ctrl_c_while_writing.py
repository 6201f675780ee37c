"""A Ctrl-C pressed while a finished load is written is honoured after the files are complete:
never dropped (a sweep used to run on to its end), never cutting the write short."""

from __future__ import annotations

import json
import os
import signal

import pytest

from servebench.run import orchestrate, writer




@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_the_write_of_a_complete_run_is_kept_and_honoured(monkeypatch, handlers, emulated_run, sig, code):
    real_write = writer.write

    def write_with_a_ctrl_c(*a, **kw):
        os.kill(os.getpid(), sig)  # the user presses Ctrl-C just as the load ended
        return real_write(*a, **kw)

    monkeypatch.setattr(writer, "write", write_with_a_ctrl_c)
    with pytest.raises(orchestrate.RunError) as e:
        emulated_run(6)
    assert e.value.code == code and "after the load ended" in str(e.value)
    summary = json.loads((e.value.run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["completed"] == 6
    assert (e.value.run_dir / "requests.parquet").stat().st_size > 0
