"""`servebench run` end to end against the built-in emulator, for every engine format: the
whole path (prompts -> transport -> decode -> metrics -> store -> report) on real sockets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from servebench.emulator.handle import start_emulator
from servebench.analysis.metrics import summarize
from servebench.store.runfiles import load_records

FORMATS = [("openai", "vllm"), ("openai", "openai"), ("tgi", "tgi"), ("lightllm", "lightllm"), ("sglang", "sglang")]


def sb(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("fmt,backend", FORMATS)
def test_run_against_emulated_engine_writes_consistent_results(tmp_path, fmt, backend):
    with start_emulator(fmt, ttft_ms=30, itl_ms=5) as emu:
        p = sb("run", "--backend", backend, "--endpoint", emu.url, "--model", "tiny", "--requests", "12",
               "--input-tokens", "40", "--output-tokens", "8", "--concurrency", "3", "--warmup", "1",
               "--results-dir", str(tmp_path), "--no-telemetry")
    assert p.returncode == 0, p.stderr
    assert "Throughput" in p.stdout and "TTFT" in p.stdout  # the run's console report, before its directory
    run_dir = tmp_path / p.stdout.strip().splitlines()[-1].split("/")[-1]
    assert run_dir.is_dir()
    summary = json.loads((run_dir / "summary.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    records = load_records(run_dir / "requests.parquet")
    assert run["config"]["backend"] == backend and run["status"] == "complete"
    assert run["engine"]["version"]  # asked while the server was up (/version or /info)
    assert len(records) == 13 and sum(r.warmup for r in records) == 1
    assert summary["completed"] == 12 and summary["failed"] == 0
    assert summary["output_tokens"]["achieved_mean"] == 8
    # the stored summary is a pure function of the stored records
    again = summarize(records, target_concurrency=3)
    for key in ("completed", "duration_s", "output_token_throughput", "ttft_ms", "itl_ms", "e2e_ms", "tpot_ms"):
        assert again[key] == summary[key], key
    assert 29 <= summary["ttft_ms"]["p50"] < 40  # emulated TTFT 30 ms
    assert 4 <= summary["itl_ms"]["p50"] < 7  # emulated ITL 5 ms
    # `report` rebuilds the console report from disk alone
    rep = sb("report", str(run_dir))
    assert rep.returncode == 0 and "TTFT" in rep.stdout and "12" in rep.stdout


def test_server_errors_exit_nonzero_and_keep_measurements(tmp_path):
    with start_emulator("openai", ttft_ms=5, itl_ms=1, fail_rate=0.5, fail_mode="error", seed=1) as emu:
        p = sb("run", "--endpoint", emu.url, "--model", "tiny", "--requests", "20", "--input-tokens", "16",
               "--output-tokens", "4", "--concurrency", "4", "--warmup", "0", "--results-dir", str(tmp_path),
               "--no-telemetry")
    assert p.returncode == 1
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "requests failed" in err[0]
    run_dir = tmp_path / p.stdout.strip().splitlines()[-1].split("/")[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failed"] > 0 and summary["completed"] > 0
    assert summary["completed"] + summary["failed"] == 20
    assert any("500" in k for k in summary["errors"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--backend", "nope"], "unknown engine 'nope'"),
        (["--endpoint", "http://127.0.0.1:9"], "unreachable"),
        (["--model", "/no/such/model", "--endpoint", "http://127.0.0.1:9"], "model path not found"),
        (["--concurrency", "0"], "invalid option"),
        (["--launcher", "teleport"], "unknown launcher"),
        (["--backend", "openai"], "benchmark a running server with --endpoint URL"),
        (["--backend", "openai", "--endpoint", "http://127.0.0.1:9", "--model", "some-alias"], "pass --tokenizer DIR"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    p = sb("run", "--model", "tiny", "--requests", "2", "--results-dir", str(tmp_path), *args)
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], p.stderr
    assert "Traceback" not in p.stderr


def test_report_of_missing_dir_is_one_line(tmp_path):
    p = sb("report", str(tmp_path / "none"))
    assert p.returncode == 1 and p.stderr.startswith("error:") and "Traceback" not in p.stderr


def test_endpoint_model_may_be_a_served_name_with_a_local_tokenizer(tmp_path):
    from servebench.engines.presets import resolve_model

    with start_emulator("openai", ttft_ms=5, itl_ms=1) as emu:
        p = sb("run", "--backend", "openai", "--endpoint", emu.url, "--model", "served-alias", "--tokenizer",
               str(resolve_model("tiny")), "--requests", "4", "--input-tokens", "24", "--output-tokens", "3",
               "--warmup", "0", "--results-dir", str(tmp_path), "--no-telemetry", "--no-plots")
    assert p.returncode == 0, p.stderr
    run_dir = tmp_path / p.stdout.strip().splitlines()[-1].split("/")[-1]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["model_dir"] is None and run["tokenizer"].endswith("tiny")
    assert json.loads((run_dir / "summary.json").read_text())["input_tokens"]["requested_mean"] == 24
