"""The CLI as a user meets it: bad input fails in one line, and `--launcher process` starts,
measures and tears down its own vLLM server."""

from __future__ import annotations

import socket

import psutil
import pytest

from tests.integration._cli import assert_one_line_error, load_run, servebench

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unknown_backend(tmp_path):
    res = servebench("run", "--backend", "nosuch", "--endpoint", f"http://127.0.0.1:{_closed_port()}", "--requests", "2",
                     "--results-dir", str(tmp_path), cwd=tmp_path, timeout=120)
    assert_one_line_error(res, r"unknown engine 'nosuch'")


def test_unreachable_endpoint(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    res = servebench("run", "--backend", "vllm", "--model", "tiny", "--endpoint", url, "--requests", "2",
                     "--results-dir", str(tmp_path), cwd=tmp_path, timeout=120)
    assert_one_line_error(res, r"unreachable")


@pytest.mark.parametrize("launcher", [["--launcher", "process"], ["--endpoint", "http://127.0.0.1:9"]])
def test_missing_model_path(tmp_path, launcher):
    missing = tmp_path / "no-such-model"
    res = servebench("run", "--backend", "vllm", "--model", str(missing), *launcher, "--requests", "2",
                     "--results-dir", str(tmp_path), cwd=tmp_path, timeout=120)
    assert_one_line_error(res, r"model path not found: .*no-such-model")


def test_launcher_process_end_to_end(tiny_model, tmp_path):
    res = servebench("run", "--backend", "vllm", "--model", "tiny", "--launcher", "process",
                     "--requests", "12", "--concurrency", "4", "--input-tokens", "256", "--output-tokens", "32",
                     "--results-dir", str(tmp_path), "--name", "launched", cwd=tmp_path)
    run_dir = res.expect_ok()
    run, summary, df = load_run(run_dir)
    m = df[~df["warmup"]]
    assert summary["completed"] == 12 and summary["failed"] == 0
    assert (m["server_input_tokens"] == 256).all() and (m["server_output_tokens"] == 32).all()

    server = run["server"]
    info = server["info"]
    assert info["launcher"] == "process" and server["time_to_ready_s"] > 0
    assert str(tiny_model) in info["command"]
    assert (run_dir / "server.log").is_file()
    # the launched server is gone once the CLI has returned: no process still runs its
    # command line, and nothing listens on its port
    port = int(info["port"])
    argv = info["argv"]
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-len(argv):] == argv]
    assert not left, f"server processes left behind: {left}"
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
