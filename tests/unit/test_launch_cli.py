"""`servebench launch` end to end with a fake engine: URL printed, held, torn down on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import psutil

from tests.unit.test_launch_process import fake_spec

CLI = [sys.executable, "-m", "servebench.cli", "launch"]


def _ctrl_c(tmp_path, engine_args: list[str], ready_timeout: str, when) -> tuple[int, str, str, list[int]]:
    """Launch the fake engine, send SIGINT once `when(proc)` returns; (exit code, stdout
    after that, stderr, the engine's pids)."""
    spec = fake_spec(tmp_path, "serve.py", [*engine_args, "--pidfile", str(tmp_path / "pids")])
    p = subprocess.Popen(CLI + [spec, "--model", str(tmp_path), "--run-dir", str(tmp_path), "--ready-timeout", ready_timeout],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        when(p)
        pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert not any(psutil.pid_exists(x) and psutil.Process(x).status() != psutil.STATUS_ZOMBIE for x in pids)
    return p.returncode, out, err, pids


def test_launch_holds_until_ctrl_c(tmp_path):
    def serving(p):
        url = p.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/health").status_code == 200

    code, _, err, pids = _ctrl_c(tmp_path, ["--spawn-child"], "30", serving)
    assert code == 0 and "stopped" in err and len(pids) == 2, err


def test_ctrl_c_during_start_up_stops_the_server_and_is_no_success(tmp_path):
    """A script that waits on `launch` must not read exit 0 from a server that never served."""
    def starting(_p):
        deadline = time.monotonic() + 30
        while not (tmp_path / "pids").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)

    code, out, err, _ = _ctrl_c(tmp_path, ["--healthy-after", "600"], "300", starting)
    assert code == 130, err
    assert out == "" and "interrupted during start-up" in err and "stopped" in err


def test_click_usage_errors_are_one_line_too():
    r = subprocess.run([sys.executable, "-m", "servebench.cli", "run", "--concurrency", "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ") and "--concurrency" in r.stderr and "not a valid integer" in r.stderr
    r = subprocess.run([sys.executable, "-m", "servebench.cli"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "error:" not in r.stderr and "Commands:" in r.stderr  # the bare group's help stays help
    r = subprocess.run(CLI + ["vllm", "--model", "tiny", "--port", "x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--port" in r.stderr, r.stderr


def test_launch_errors_are_one_line(tmp_path):
    r = subprocess.run(CLI + ["nope", "--model", "m"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()]  # bad input: one line, exit 2 as run
    assert r.stderr.startswith("error: unknown engine 'nope'")
    assert "Traceback" not in r.stderr
    spec = fake_spec(tmp_path, "crash.py")
    r = subprocess.run(CLI + [spec, "--model", str(tmp_path), "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: fake exited with code 3 during start-up")


def test_dry_run_prints_the_exact_commands_and_starts_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from servebench.launchers import docker as docker_mod
    from servebench.launchers.cli import launch

    def no_daemon(*_a, **_k):
        raise AssertionError("a dry run must not reach the docker daemon")

    monkeypatch.setattr(docker_mod.DockerLauncher, "client", property(no_daemon))
    monkeypatch.setenv("SERVEBENCH_STATE_DIR", str(tmp_path))
    run = CliRunner().invoke
    r = run(launch, ["vllm", "-m", "meta-llama/Llama-2-7b-hf", "--launcher", "docker", "--gpus", "0,1", "--port", "9000",
                     "--env", "NCCL_P2P_DISABLE=1", "--dry-run"])
    assert r.exit_code == 0, r.output
    line = r.output.strip()
    assert line.startswith("docker run --rm --name servebench-vllm-") and "-p 127.0.0.1:9000:8000" in line
    assert "-e NCCL_P2P_DISABLE=1 -e VLLM_SERVER_DEV_MODE=1 vllm/vllm-openai:v0.11.0 --model meta-llama/Llama-2-7b-hf" in line
    r = run(launch, ["vllm", "-m", "meta-llama/Llama-2-7b-hf", "--gpus", "0", "--port", "9000",
                     "--env", "NCCL_P2P_DISABLE=1", "--dry-run"])
    assert r.exit_code == 0 and "CUDA_VISIBLE_DEVICES=0" in r.output and "NCCL_P2P_DISABLE=1" in r.output
    assert "-m vllm.entrypoints.openai.api_server --model meta-llama/Llama-2-7b-hf" in r.output
    r = run(launch, ["tgi", "-m", "meta-llama/Llama-2-70b-hf", "--launcher", "sagemaker", "--instance-type",
                     "ml.p4d.24xlarge", "--role-arn", "arn:aws:iam::1:role/r", "--region", "us-west-2",
                     "--env", "HF_TOKEN=hf_s3cret", "--dry-run"])
    assert r.exit_code == 0, r.output
    import json

    plan = json.loads(r.output)
    assert plan["region"] == "us-west-2" and "hf_s3cret" not in r.output
    assert plan["model"]["PrimaryContainer"]["Environment"]["HF_TOKEN"] == "<redacted>"
    assert plan["endpoint_config"]["ProductionVariants"][0]["InstanceType"] == "ml.p4d.24xlarge"
    # sized for 140 GB of weights, within SageMaker's own 3600 s limit
    assert plan["endpoint_config"]["ProductionVariants"][0]["ContainerStartupHealthCheckTimeoutInSeconds"] == 3400
    assert not list(tmp_path.rglob("*.json"))  # no ledger: nothing was created
    r = run(launch, ["vllm", "-m", "org/m", "--env", "NO-EQUALS", "--dry-run"])
    assert r.exit_code == 2 and "--env: expected NAME=VALUE" in r.output


def test_a_ready_timeout_that_is_no_number_of_seconds_is_refused_before_anything_starts(tmp_path):
    for bad in ("nan", "0", "-1"):
        r = subprocess.run(CLI + ["vllm", "--model", "tiny", "--ready-timeout", bad, "--run-dir", str(tmp_path / bad)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "expected a finite number of seconds above 0" in r.stderr and not (tmp_path / bad).exists()


def test_a_run_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = subprocess.run(CLI + ["vllm", "--model", "tiny", "--run-dir", str(tmp_path / "afile")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: cannot make the server's log dir {tmp_path / 'afile'}: File exists"


def test_launch_refuses_a_model_path_that_is_not_there_as_run_does(tmp_path):
    from click.testing import CliRunner

    from servebench.launchers.cli import launch

    r = CliRunner().invoke(launch, ["vllm", "-m", str(tmp_path / "gone"), "--dry-run"])
    assert r.exit_code == 2 and f"model path not found: {tmp_path / 'gone'}" in r.output  # it reached the engine
    r = CliRunner().invoke(launch, ["vllm", "-m", "org/some-model", "--dry-run"])
    assert r.exit_code == 0 and "--model org/some-model" in r.output
