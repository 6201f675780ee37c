"""HF_TOKEN and AWS credentials never appear in any file servebench writes.

Planted everywhere a run could pick them up: the environment (the launched server prints its
whole env and argv into server.log), a launcher option and a server argument. Then every byte
of the run directory is searched for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from servebench.store.redact import secret_name, secret_values, scrub

FAKES = Path(__file__).resolve().parents[1] / "fixtures" / "fake_engines"

PLANTED = {
    "HF_TOKEN": "hf_PlantedHubToken0123456789",
    "HUGGING_FACE_HUB_TOKEN": "hf_PlantedOldHubToken98765",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDKEYID0001",
    "AWS_SECRET_ACCESS_KEY": "PlantedAwsSecretAccessKey/abcdefghij0123",
    "AWS_SESSION_TOKEN": "PlantedAwsSessionToken+zyxwvu98765",
}
OPT_SECRET = "PlantedLauncherOptionToken42"
ARG_SECRET = "PlantedServerArgToken4242"
ARG_SECRET2 = "PlantedSpacedApiKey777777"


def env_printing_spec(tmp_path: Path) -> Path:
    """A server that prints its whole environment, then its argv (serve.py does), to server.log."""
    spec = tmp_path / "fake.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "fake", "adapter": "openai-completions", "adapters": ["openai-completions"],
        "output_length": {"forced": True, "how": "fake"},
        "process": {"command": ["sh", "-c", 'env; exec "$0" "$@"', "{python}", str(FAKES / "serve.py")],
                    "args": ["--host", "{host}", "--port", "{port}", "--model", "{served_model_name}"]}}))
    return spec


def test_planted_credentials_are_in_no_file_of_the_run_dir(tmp_path):
    spec = env_printing_spec(tmp_path)
    env = {**os.environ, **PLANTED}
    res = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "run", "--backend", str(spec), "--model", "tiny",
                        "--requests", "3", "--concurrency", "1", "--input-tokens", "16", "--output-tokens", "2",
                        "--warmup", "0", "--no-plots", "--results-dir", str(res),
                        "--launcher-opt", f"hf_token={OPT_SECRET}",
                        f"--server-arg=--hf-token={ARG_SECRET}", "--server-arg=--api-key", f"--server-arg={ARG_SECRET2}"],
                       capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    (run_dir,) = [d for d in res.iterdir() if d.is_dir()]
    log = (run_dir / "server.log").read_text()
    assert "HF_TOKEN=" in log and "--hf-token" in log  # the server did print them: the test bites
    files = [f for f in run_dir.rglob("*") if f.is_file()]
    assert {"run.json", "summary.json", "requests.parquet", "server.log"} <= {f.name for f in files}
    for f in files:
        data = f.read_bytes()
        for secret in [*PLANTED.values(), OPT_SECRET, ARG_SECRET, ARG_SECRET2]:
            assert secret.encode() not in data, f"{secret[:12]}... leaked into {f.name}"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["config"]["launcher_options"]["hf_token"] == "<redacted>"
    assert "--hf-token=<redacted>" in run["config"]["server_args"]


def test_secret_names_and_values():
    assert all(secret_name(k) for k in PLANTED)
    assert not any(secret_name(k) for k in ("max_tokens", "input_tokens", "tokenizer", "tokens_per_s", "author"))
    vals = secret_values({"hf_token": OPT_SECRET, "region": "us-west-2"}, ["--api-key", ARG_SECRET, "--x=1"], env=PLANTED)
    assert vals == {*PLANTED.values(), OPT_SECRET, ARG_SECRET}
    out = scrub({"config": {"hf_token": "short", "server_args": [f"--key={ARG_SECRET}"], "output_tokens": 5}}, vals)
    assert out == {"config": {"hf_token": "<redacted>", "server_args": ["--key=<redacted>"], "output_tokens": 5}}


def test_a_server_that_fails_at_start_and_echoes_its_env_leaks_nothing_to_the_terminal(tmp_path):
    spec = tmp_path / "fake.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "fake", "adapter": "openai-completions", "adapters": ["openai-completions"],
        "output_length": {"forced": True, "how": "fake"},
        # a server that dies at start-up, printing its environment and argv as its last words
        "process": {"command": ["sh", "-c", 'env >&2; echo "$@" >&2; echo "fatal: $HF_TOKEN $*" >&2; exit 3', "x"],
                    "args": ["--port", "{port}"]}}))
    env = {**os.environ, **PLANTED}
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "run", "--backend", str(spec), "--model", "tiny",
                        "--requests", "2", "--input-tokens", "16", "--output-tokens", "2", "--warmup", "0",
                        "--no-plots", "--results-dir", str(tmp_path / "results"),
                        f"--server-arg=--hf-token={ARG_SECRET}", "--server-arg=--api-key", f"--server-arg={ARG_SECRET2}"],
                       capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr
    for secret in [*PLANTED.values(), ARG_SECRET, ARG_SECRET2]:
        assert secret not in p.stderr + p.stdout, f"{secret[:12]}... shown in the terminal: {errors[0]}"


def test_an_endpoint_password_is_in_no_file_of_the_run_dir(tmp_path):
    from servebench.emulator.handle import start_emulator

    with start_emulator("openai", ttft_ms=1, itl_ms=1) as emu:
        url = emu.url.replace("http://", "http://bench:Pw-Planted-9@")
        p = subprocess.run([sys.executable, "-m", "servebench.cli", "run", "--endpoint", url, "--model", "tiny",
                            "--requests", "2", "--input-tokens", "16", "--output-tokens", "2", "--warmup", "0",
                            "--no-plots", "--no-telemetry", "--results-dir", str(tmp_path / "results")],
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert "Pw-Planted-9" not in p.stdout + p.stderr
    (run_dir,) = [d for d in (tmp_path / "results").iterdir() if d.is_dir()]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["config"]["endpoint"].startswith("http://bench:<redacted>@127.0.0.1:")  # kept, masked
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert b"Pw-Planted-9" not in f.read_bytes(), f"the endpoint's password leaked into {f.name}"


def test_planted_credentials_are_in_no_file_of_a_sweep(tmp_path):
    # a sweep's server logs are the group's (DIR/servers/gNN/server.log), written by no run
    spec = env_printing_spec(tmp_path)
    res = tmp_path / "results"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "name": "leak", "results_dir": str(res), "defaults": {"launcher": "process", "model": "tiny"},
        "servers": [{"engine": str(spec)}],
        "load": {"concurrency": [1], "requests": 2, "input_tokens": 16, "output_tokens": 2, "warmup": 0}}))
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "sweep", str(tmp_path / "s.yaml")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **PLANTED},
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    logs = list(res.rglob("servers/*/server.log"))
    assert logs and "HF_TOKEN=" in logs[0].read_text()  # the server did print it: the test bites
    for f in (f for f in res.rglob("*") if f.is_file()):
        data = f.read_bytes()
        for secret in PLANTED.values():
            assert secret.encode() not in data, f"{secret[:12]}... leaked into {f.relative_to(res)}"
