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


def test_a_second_ctrl_c_after_the_run_stopped_still_gets_the_error_line_and_130(monkeypatch, handlers, emulated_run):
    """The first Ctrl-C was answered (server stopped, files written); a second one that lands
    while the CLI prints the report used to escape as click's bare "Aborted!" with exit 1."""
    from click.testing import CliRunner

    from servebench import cli
    from servebench.outputs import console

    run_dir = emulated_run(6)

    def stopped_by_ctrl_c(*a, **kw):
        raise orchestrate.RunError("interrupted by Ctrl-C", run_dir, 130)

    real_render, rendered = console.render, []

    def render_with_a_second_ctrl_c(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        rendered.append(real_render(*a, **kw))

    monkeypatch.setattr(orchestrate, "run", stopped_by_ctrl_c)
    monkeypatch.setattr(console, "render", render_with_a_second_ctrl_c)
    res = CliRunner().invoke(cli.main, ["run", "--backend", "vllm", "--model", "tiny", "--endpoint", "http://127.0.0.1:9"])
    assert res.exit_code == 130, res.output
    assert "error: interrupted by Ctrl-C" in res.output and "Aborted" not in res.output
    assert rendered  # held, not raised: the report ran to its end


def test_a_second_ctrl_c_while_a_stopped_sweep_writes_its_tables_is_held(monkeypatch, handlers, tmp_path):
    import yaml
    from click.testing import CliRunner

    from servebench import cli
    from servebench.sweep import console as out
    from servebench.sweep import executor

    class StoppedByCtrlC:
        def __init__(self, **kw):
            pass

        def run(self, *a, **kw):
            raise KeyboardInterrupt

    real_finish, finished = out.finish, []

    def finish_with_a_second_ctrl_c(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        finished.append(True)
        real_finish(*a, **kw)

    monkeypatch.setitem(executor.EXECUTORS, "local", StoppedByCtrlC)
    monkeypatch.setattr(out, "finish", finish_with_a_second_ctrl_c)
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({"name": "held", "results_dir": str(tmp_path / "results"), "telemetry": False,
                                   "defaults": {"engine": "vllm", "model": "tiny"},
                                   "servers": [{}], "load": {"concurrency": [1], "requests": 4}}))
    res = CliRunner().invoke(cli.main, ["sweep", str(cfg)])
    assert res.exit_code == 130, res.output
    assert "--resume" in res.output and "Aborted" not in res.output and finished
    assert any((tmp_path / "results").rglob("index.json"))  # the stopped sweep's index was written
