"""Ctrl-C during `servebench run --launcher process`: the launched server (here the built-in
emulator, started through a user spec file like any engine) is gone afterwards, and what was
measured so far is on disk."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import psutil

from servebench.store.runfiles import load_records
from tests.unit.test_faults_cli import emulator_spec


def test_sigint_mid_run_leaves_no_server_and_keeps_partial_results(tmp_path):
    spec = emulator_spec(tmp_path, "--ttft-ms", "20", "--itl-ms", "50")
    res = tmp_path / "results"
    p = subprocess.Popen([sys.executable, "-m", "servebench.cli", "run", "--backend", str(spec), "--model", "tiny",
                          "--requests", "200", "--input-tokens", "16", "--output-tokens", "20", "--concurrency", "2",
                          "--warmup", "0", "--results-dir", str(res), "--no-telemetry"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(iter(p.stderr.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not any("running load" in line for line in err) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert any("running load" in line for line in err), "".join(err)
        server_tree = psutil.Process(p.pid).children(recursive=True)
        assert server_tree  # the emulator (and nothing else) was launched
        time.sleep(2.5)  # ~2 s of load: some requests done, most not
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    for proc in server_tree:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, proc
    run_dirs = [d for d in res.iterdir() if d.is_dir()]
    assert len(run_dirs) == 1 and (run_dirs[0] / "server.log").is_file()
    records = load_records(run_dirs[0] / "requests.parquet")
    done = [r for r in records if r.ok]
    assert 0 < len(done) < 200
