"""`servebench launch` end to end with a fake engine: URL printed, held, torn down on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import psutil

from tests.unit.test_launch_process import fake_spec

CLI = [sys.executable, "-m", "servebench.cli", "launch"]


def test_launch_holds_until_ctrl_c(tmp_path):
    spec = fake_spec(tmp_path, "serve.py", ["--spawn-child", "--pidfile", str(tmp_path / "pids")])
    p = subprocess.Popen(CLI + [spec, "--model", str(tmp_path), "--run-dir", str(tmp_path), "--ready-timeout", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/health").status_code == 200
        pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "stopped" in err
    assert not any(psutil.pid_exists(x) and psutil.Process(x).status() != psutil.STATUS_ZOMBIE for x in pids)


def test_launch_errors_are_one_line(tmp_path):
    r = subprocess.run(CLI + ["nope", "--model", "m"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("Error: unknown engine 'nope'")
    assert "Traceback" not in r.stderr
    spec = fake_spec(tmp_path, "crash.py")
    r = subprocess.run(CLI + [spec, "--model", str(tmp_path), "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error: fake exited with code 3 during start-up")
