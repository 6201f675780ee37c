"""Process launcher against fake engine commands (tests/fixtures/fake_engines/)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from servebench.launchers import process as process_mod
from servebench.launchers.base import LaunchError, LaunchRequest
from servebench.launchers.process import ProcessLauncher
from servebench.engines.specs import load_spec

FAKES = Path(__file__).resolve().parents[1] / "fixtures" / "fake_engines"


def fake_spec(tmp_path: Path, script: str, extra: list[str] | None = None, **process) -> str:
    spec = {
        "name": "fake",
        "adapter": "openai-completions",
        "adapters": ["openai-completions"],
        "output_length": {"forced": True, "how": "fake"},
        "flags": {"gpus": "--tp"},
        "process": {
            "command": ["{python}", str(FAKES / script)],
            "args": ["--host", "{host}", "--port", "{port}", "--model", "{served_model_name}"] + (extra or []),
            **process,
        },
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_start_serves_then_stop_kills_group(tmp_path):
    pidfile = tmp_path / "pids"
    spec = fake_spec(tmp_path, "serve.py", ["--spawn-child", "--pidfile", str(pidfile)],
                     env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    launcher = ProcessLauncher(poll_s=0.05)
    req = LaunchRequest(engine=spec, model="/models/tiny", gpus=[2, 3], run_dir=tmp_path / "run",
                        ready_timeout_s=30, options={"served_model_name": "tiny"})
    server = launcher.start(req)
    try:
        assert httpx.get(server.base_url + "/health").status_code == 200
        assert server.adapter == "openai-completions" and server.engine == "fake"
        assert server.time_to_ready_s is not None and 0 < server.time_to_ready_s < 30
        argv = server.info["argv"]
        assert argv[:2] == [sys.executable, str(FAKES / "serve.py")]
        assert argv[argv.index("--model") + 1] == "tiny"
        assert argv[-2:] == ["--tp", "2"]  # GPU count flag from the spec
        assert server.info["env"]["CUDA_VISIBLE_DEVICES"] == "2,3"
        assert server.info["served_model_name"] == "tiny"
        log = (tmp_path / "run" / "server.log").read_text()
        assert "CUDA_VISIBLE_DEVICES=2,3" in log and "POST /v1/completions" in log  # the probe ran
        pids = [int(x) for x in pidfile.read_text().split()]
        assert pids[0] == server.pid and len(pids) == 2
    finally:
        launcher.stop()
    assert all(gone(p) for p in pids)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/health", timeout=1)
    launcher.stop()  # idempotent


def test_sigterm_ignored_escalates_to_sigkill(tmp_path):
    pidfile = tmp_path / "pids"
    spec = fake_spec(tmp_path, "serve.py", ["--spawn-child", "--ignore-sigterm", "--pidfile", str(pidfile)])
    launcher = ProcessLauncher(poll_s=0.05, stop_timeout_s=1.0)
    launcher.start(LaunchRequest(engine=spec, model="m", run_dir=tmp_path, ready_timeout_s=30))
    pids = [int(x) for x in pidfile.read_text().split()]
    t0 = time.monotonic()
    launcher.stop()
    assert time.monotonic() - t0 < 10
    assert all(gone(p) for p in pids)


def test_stop_kills_workers_the_engine_put_in_groups_of_their_own(tmp_path):
    # TGI: shards and router in groups of their own; the launcher exits on SIGTERM, a shard does not
    pidfile = tmp_path / "pids"
    spec = fake_spec(tmp_path, "serve.py", ["--spawn-own-group", "--pidfile", str(pidfile)])
    launcher = ProcessLauncher(poll_s=0.05, stop_timeout_s=1.0)
    launcher.start(LaunchRequest(engine=spec, model="m", run_dir=tmp_path, ready_timeout_s=30))
    leader, worker = [int(x) for x in pidfile.read_text().split()]
    assert os.getpgid(worker) != os.getpgid(leader)
    launcher.stop()
    assert gone(leader) and gone(worker)


def test_a_second_interrupt_during_stop_ends_the_grace_not_the_stop(tmp_path):
    import signal
    import threading

    pidfile = tmp_path / "pids"
    spec = fake_spec(tmp_path, "serve.py", ["--spawn-child", "--ignore-sigterm", "--pidfile", str(pidfile)])
    launcher = ProcessLauncher(poll_s=0.05, stop_timeout_s=60.0)
    launcher.start(LaunchRequest(engine=spec, model="m", run_dir=tmp_path, ready_timeout_s=30))
    pids = [int(x) for x in pidfile.read_text().split()]
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # mid-grace
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):  # held through the stop, delivered after it
        launcher.stop()
    assert time.monotonic() - t0 < 30 and all(gone(p) for p in pids) and launcher.proc is None


def test_stop_returns_only_when_the_killed_group_has_exited(monkeypatch):
    """A SIGKILLed worker exits a moment after the signal (CI saw one still running): stop waits for it."""
    events = []
    alive_after_kill = iter([True, True, True, False])  # three polls still see a member

    def group_alive(pgid):
        if "KILL" in events:
            state = next(alive_after_kill)
            events.append("alive" if state else "gone")
            return state
        return True  # ignores SIGTERM

    monkeypatch.setattr(process_mod, "_group_alive", group_alive)
    monkeypatch.setattr(process_mod, "_descendants", lambda pid, known: known)  # 4242 is no process of ours
    monkeypatch.setattr(process_mod, "_signal_group",
                        lambda pgid, sig: events.append("KILL" if sig == process_mod.signal.SIGKILL else "TERM"))

    class Leader:
        pid = 4242

        def poll(self):
            return None

        def wait(self, timeout=None):
            if timeout is not None:
                raise process_mod.subprocess.TimeoutExpired("fake", timeout)

    launcher = ProcessLauncher(stop_timeout_s=0.1)
    launcher.proc = Leader()
    launcher.stop()
    assert events == ["TERM", "KILL", "alive", "alive", "alive", "gone"]


def test_crash_during_startup_reports_last_log_lines(tmp_path):
    spec = fake_spec(tmp_path, "crash.py")
    launcher = ProcessLauncher(poll_s=0.05)
    with pytest.raises(LaunchError) as ei:
        launcher.start(LaunchRequest(engine=spec, model="m", run_dir=tmp_path, ready_timeout_s=30))
    msg = str(ei.value)
    assert "\n" not in msg
    assert "exited with code 3" in msg and "CUDA out of memory (fake)" in msg
    assert "loading shard 6" in msg and "loading shard 5" not in msg  # only the last 10 lines
    assert launcher.proc is None


def test_never_healthy_times_out_and_leaves_nothing(tmp_path):
    spec = fake_spec(tmp_path, "never_healthy.py", ["--pidfile", str(tmp_path / "pid")])
    launcher = ProcessLauncher(poll_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as ei:
        launcher.start(LaunchRequest(engine=spec, model="m", run_dir=tmp_path, ready_timeout_s=1.5))
    assert time.monotonic() - t0 < 10
    msg = str(ei.value)
    assert "not healthy after 2s" in msg and "HTTP 503" in msg and "never loads" in msg and "\n" not in msg
    assert launcher.proc is None and gone(int((tmp_path / "pid").read_text()))


def test_generation_probe_failure_is_a_launch_error(tmp_path):
    spec = fake_spec(tmp_path, "serve.py", ["--generate-status", "500"])
    launcher = ProcessLauncher(poll_s=0.05)
    with pytest.raises(LaunchError, match=r"first generation request to /v1/completions got HTTP 500: .*model not loaded"):
        launcher.start(LaunchRequest(engine=spec, model="m", run_dir=tmp_path, ready_timeout_s=30))
    assert launcher.proc is None


def test_missing_executable(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "adapter": "tgi", "adapters": ["tgi"],
                                    "output_length": {"forced": False, "how": "-"},
                                    "process": {"command": ["/nonexistent/engine-launcher"]}}))
    with pytest.raises(LaunchError, match=r"cannot start bad: /nonexistent/engine-launcher: No such file"):
        ProcessLauncher().start(LaunchRequest(engine=str(path), model="m", run_dir=tmp_path))


def test_keyboard_interrupt_during_wait_tears_down(tmp_path, monkeypatch):
    spec = fake_spec(tmp_path, "never_healthy.py")
    launcher = ProcessLauncher(poll_s=0.05)
    started = {}

    def interrupted(*a, **k):
        started["pid"] = launcher.proc.pid
        raise KeyboardInterrupt

    monkeypatch.setattr(process_mod, "wait_ready", interrupted)
    with pytest.raises(KeyboardInterrupt):
        launcher.start(LaunchRequest(engine=spec, model="m", run_dir=tmp_path))
    assert gone(started["pid"]) and launcher.proc is None


def test_vllm_cpu_command_and_env(monkeypatch):
    for k in ("VLLM_CPU_KVCACHE_SPACE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    from servebench.engines import hostcpu

    # a CPU host without native bf16 (this one's kind): the spec's cpu_dtype rule adds float32
    monkeypatch.setattr("servebench.launchers.process.choose_dtype",
                        lambda rule, extra, gpus: hostcpu.choose_dtype(rule, extra, gpus, flags={"avx2"}, gpu=False))
    spec = load_spec("vllm")
    launcher = ProcessLauncher(python="/venv/bin/python")
    req = LaunchRequest(engine="vllm", model="/models/tiny", options={"served_model_name": "tiny"})
    assert launcher.command(spec, req, 8123) == [
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/tiny",
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", "8123", "--max-model-len", "1024",
        "--dtype", "float32"]
    env, chosen = launcher.env(spec, req)
    assert chosen == {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_SERVER_DEV_MODE": "1"}
    assert env["PATH"] == os.environ["PATH"]
    # the user's exported value beats the spec default; explicit options beat spec defaults
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    assert launcher.env(spec, req)[0]["VLLM_CPU_KVCACHE_SPACE"] == "4"
    req2 = LaunchRequest(engine="vllm", model="/m", gpus=[0, 1], options={"max_total_tokens": 4096, "quantize": "awq"},
                         extra_args=["--max-num-seqs", "8"])
    argv = launcher.command(spec, req2, 1)
    assert argv[argv.index("--served-model-name") + 1] == "/m"  # defaults to the model
    assert argv[-8:] == ["--tensor-parallel-size", "2", "--quantization", "awq", "--max-model-len", "4096",
                         "--max-num-seqs", "8"]


def test_bad_engine_is_one_line_launch_error(tmp_path):
    with pytest.raises(LaunchError, match=r"^unknown engine 'nope' \(known: .*vllm"):
        ProcessLauncher().start(LaunchRequest(engine="nope", model="m", run_dir=tmp_path))
    with pytest.raises(LaunchError, match=r"does not know quantization 'int3'"):
        ProcessLauncher().start(LaunchRequest(engine="vllm", model="m", run_dir=tmp_path, options={"quantize": "int3"}))


@pytest.mark.parametrize("adapter", ["openai-completions", "openai-chat", "tgi", "lightllm", "sglang"])
def test_readiness_probe_speaks_every_adapter(tmp_path, adapter):
    spec = yaml.safe_load(Path(fake_spec(tmp_path, "serve.py")).read_text())
    spec.update(adapter=adapter, adapters=[adapter])
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(spec))
    launcher = ProcessLauncher(poll_s=0.05)
    server = launcher.start(LaunchRequest(engine=str(path), model="m", run_dir=tmp_path, ready_timeout_s=30))
    launcher.stop()
    path_used = {"openai-completions": "/v1/completions", "openai-chat": "/v1/chat/completions",
                 "tgi": "/generate_stream", "lightllm": "/generate_stream", "sglang": "/generate"}[adapter]
    assert server.adapter == adapter and f"POST {path_used} " in (tmp_path / "server.log").read_text()


def test_a_download_the_disk_cannot_hold_is_refused_before_the_engine_starts(tmp_path, monkeypatch):
    from servebench.launchers import preflight

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: type("U", (), {"free": 2e9})())
    spec = fake_spec(tmp_path, "serve.py", ["--pidfile", str(tmp_path / "pid")])
    launcher = ProcessLauncher(poll_s=0.05)
    with pytest.raises(LaunchError, match=r"meta-llama/Llama-2-7b-hf needs ~15 GB more in the HF cache .* only 2 GB free"):
        launcher.start(LaunchRequest(engine=spec, model="meta-llama/Llama-2-7b-hf", run_dir=tmp_path, ready_timeout_s=30))
    assert launcher.proc is None and not (tmp_path / "pid").exists()
