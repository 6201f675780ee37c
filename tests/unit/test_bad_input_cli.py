"""Bad input that used to end in a traceback, a raw errno or a line about something else
(issue 20): each gets one `error:` line naming the real problem, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest


def sb(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_error(p: subprocess.CompletedProcess, prefix: str = "error:") -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("endpoint,needle", [
    ("http://127.0.0.1:0", "port '0' in http://127.0.0.1:0 is not a TCP port (1-65535)"),
    ("ftp://127.0.0.1:9", "'ftp://127.0.0.1:9' is neither an http(s) URL nor sagemaker://<name>"),
    ("http://:18001", "http://:18001 has no host"),
])
def test_an_endpoint_that_cannot_be_reached_in_principle_is_bad_input(tmp_path, endpoint, needle):
    res = tmp_path / "r"
    p = sb("run", "--endpoint", endpoint, "--model", "tiny", "--requests", "2", "--results-dir", str(res))
    assert p.returncode == 2, p.stderr
    err = one_error(p)
    assert needle in err, err
    assert "refused" not in err and "protocol" not in err
    assert not res.exists()  # nothing started, no run dir


def test_results_dir_naming_a_file_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    for target in (f, f / "below"):
        p = sb("run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--requests", "2",
               "--results-dir", str(target))
        assert p.returncode == 2, p.stderr
        err = one_error(p)
        assert f"{f} is a file, not a directory" in err and "Errno" not in err
    assert f.read_text() == "x"


def test_prompts_file_with_invalid_utf8_names_file_and_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xff\xfe"}\n')
    res = tmp_path / "r"
    p = sb("run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--prompts-file", str(f), "--requests", "2",
           "--results-dir", str(res))
    assert p.returncode == 2, p.stderr
    err = one_error(p)
    assert f"{f}:2: not UTF-8 text (byte 0xff" in err and "codec" not in err
    assert not res.exists()


def test_launch_refuses_an_impossible_port_before_starting_anything():
    p = sb("launch", "vllm", "--model", "tiny", "--port", "99999", timeout=60)
    assert p.returncode == 2, p.stderr
    assert "99999 is not a TCP port (1-65535)" in one_error(p)
    assert p.stderr.count("\n") == 1, p.stderr  # Usage / Try / Error once took three lines
    assert "starting" not in p.stderr


@pytest.mark.parametrize("cmd", [["estimate", "--gpu", "h100-sxm"], ["profile"]])
def test_a_model_path_that_is_no_config_is_named(tmp_path, cmd):
    f = tmp_path / "passwd"
    f.write_text("root:x:0:0:root:/root:/bin/bash\n")
    p = sb(*cmd, "--model", str(f), "--out", str(tmp_path / "o"))
    assert p.returncode == 2, p.stderr
    err = one_error(p)
    assert f"{f} is not a model config.json" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,needle", [
    (["--price", "-3"], "--price -3.0: a deployment's $/hour is a finite number"),
    (["--price", "nan"], "--price nan:"),
    (["--mem-fraction", "5"], "--mem-fraction 5.0: a share of GPU memory, above 0 and at most 1"),
    (["--gpus", "3"], "--gpus 3: meta-llama/Llama-2-7b-hf has 32 attention heads"),
    (["--max-num-seqs", "0"], "--max-num-seqs 0: the engine must run at least 1 sequence"),
])
def test_estimate_refuses_impossible_numbers(tmp_path, args, needle):
    p = sb("estimate", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "h100-sxm", *args, "--out", str(tmp_path / "e.json"))
    assert p.returncode == 2, p.stderr
    assert needle in one_error(p)
    assert not (tmp_path / "e.json").exists() and "nan" not in p.stdout


def test_estimate_still_takes_a_head_divisor_and_a_price(tmp_path):
    p = sb("estimate", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "h100-sxm", "--gpus", "2", "--price", "4",
           "--json")
    assert p.returncode == 0, p.stderr
    assert '"usd_per_1m_output_tokens"' in p.stdout


SWEEP_HEAD = "name: s\nload:\n  concurrency: [1]\n"


@pytest.mark.parametrize("body,needle", [
    ("matrix:\n  engine: [vllm]\n  model: [tiny]\nexclude:\n  - engine: vllm\n",
     "exclude (line 8): removes every server of the matrix, and no `servers:` are listed"),
    ("servers:\n  - engine: vllm\n  - engine: vllm\n    gpus: [a, b]\n",
     "servers[1]: gpus.0 (line 7): Input should be a valid integer"),
    ("servers:\n  - engine: vllm\n    modle: tiny\n", "servers[0]: modle (line 6): Extra inputs are not permitted"),
])
def test_sweep_config_server_errors_name_file_and_line(tmp_path, body, needle):
    f = tmp_path / "s.yaml"
    f.write_text(SWEEP_HEAD + body)
    p = sb("sweep", str(f), "--dry-run", "--results-dir", str(tmp_path / "r"))
    assert p.returncode == 2, p.stderr
    err = one_error(p)
    assert f"{f}: {needle}" in err, err
    assert "--only" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("slo,needle", [
    ("ttft_p99>=5ms", "a latency is bounded from above (<= or <)"),
    ("tpot_p50>1", "a latency is bounded from above"),
    ("ttft_p99<=-5ms", "the bound must be a finite number, 0 or more"),
    ("error_rate<=-0.1", "the bound must be a finite number, 0 or more"),
    ("error_rate>=0.5", "the error rate is bounded from above"),
    ("error_rate<=150%", "error_rate is a share, 0 to 1"),
])
def test_slo_bounds_no_run_could_mean_are_refused(slo, needle):
    from pathlib import Path

    sweep = Path(__file__).resolve().parents[2] / "tests/fixtures/decide/sweep"
    p = sb("recommend", str(sweep), "--slo", slo)
    assert p.returncode == 2, p.stderr
    assert f"SLO bound {slo!r}: {needle}" in one_error(p)


def test_a_goodput_floor_is_still_a_bound():
    from pathlib import Path

    sweep = Path(__file__).resolve().parents[2] / "tests/fixtures/decide/sweep"
    p = sb("recommend", str(sweep), "--slo", "goodput>=0.5,ttft_p95<=2s", "--goodput", "ttft:500")
    assert p.returncode == 0, p.stderr
    assert "goodput>=0.5" in p.stdout


def test_a_sweep_servers_endpoint_is_checked_like_runs(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text('name: e\nservers:\n  - engine: vllm\n    endpoint: "http://:18001"\n')
    p = sb("sweep", str(f), "--dry-run", "--results-dir", str(tmp_path / "r"))
    assert p.returncode == 2, p.stderr
    assert f"{f}: servers[0]: endpoint (line 4): http://:18001 has no host" in one_error(p)


@pytest.mark.parametrize("args,needle", [
    (["--launcher-opt", "ready_timeout_s=nan"], "ready_timeout_s='nan': expected a finite number of seconds above 0"),
    (["--launcher-opt", "ready_timeout_s=abc"], "ready_timeout_s='abc' is not a number of seconds"),
    (["--launcher-opt", "stop_grace_s=-1"], "stop_grace_s='-1': expected a finite number of seconds, 0 or more"),
    (["--launcher", "external"], "--launcher external benchmarks a server that is already up: give --endpoint URL"),
    (["--launcher", "docker", "--endpoint", "http://127.0.0.1:9"], "--launcher docker would start one"),
])
def test_launch_settings_that_would_fail_only_after_the_server_started_are_refused_first(tmp_path, args, needle):
    res = tmp_path / "r"
    p = sb("run", "--model", "tiny", "--requests", "2", "--results-dir", str(res), *args)
    assert p.returncode == 2, p.stderr
    err = one_error(p)
    assert needle in err and "invalid option :" not in err, err
    assert not res.exists()  # nothing started, no run dir


@pytest.mark.parametrize("args,needle", [
    (["--api", "bogus", "--results-dir", "{tmp}/r"], "unknown api 'bogus'"),
    (["--results-dir", "/proc/servebench-none"], "cannot write the run to /proc/servebench-none"),
])
def test_an_unknown_api_or_an_unwritable_results_dir_is_bad_input(tmp_path, args, needle):
    p = sb("run", "--model", "tiny", "--requests", "2", *[a.format(tmp=tmp_path) for a in args])
    assert p.returncode == 2, p.stderr
    assert needle in one_error(p) and not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, msg", [
    (["--prompts-file", "PF", "--input-tokens", "2048"], "--input-tokens is not read with --prompts-file"),
    (["--trace", "azure-conv-2023", "--output-tokens", "5"], "--output-tokens is not read with --trace"),
    (["--trace", "azure-conv-2023", "--input-tokens", "64"], "--input-tokens is not read with --trace"),
    (["--sessions", "PF", "--input-tokens", "64"], "--input-tokens is not read with --sessions FILE"),
])
def test_a_length_the_workload_does_not_read_is_refused_not_dropped(tmp_path, args, msg):
    pf = tmp_path / "p.jsonl"
    pf.write_text('{"prompt": "hello"}\n')
    res = tmp_path / "r"
    p = sb("run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--results-dir", str(res),
           *[str(pf) if a == "PF" else a for a in args])
    assert p.returncode == 2 and msg in one_error(p) and not res.exists(), p.stderr


def test_lengths_the_workload_reads_still_pass_with_a_file(tmp_path):
    """--output-tokens is the default for prompts-file lines without one, and --input-tokens
    sizes synthetic sessions' turns: neither is refused there."""
    from servebench.cli import run
    from servebench.run.options import no_ignored_lengths

    pf = tmp_path / "p.jsonl"
    pf.write_text('{"prompt": "hello"}\n')
    for args in (["--prompts-file", str(pf), "--output-tokens", "4"], ["--sessions", "synthetic", "--input-tokens", "16"],
                 ["--trace", "azure-conv-2023", "--max-input-tokens", "64"]):
        with run.make_context("run", args) as ctx:  # parsed as the command line is: defaults known as defaults
            no_ignored_lengths(ctx.params)
