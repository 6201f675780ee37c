"""Server and client faults made to happen for real against `servebench run` (a child process,
as users run it): the emulator acts the server fault out (`--fault`), the disk is a real tmpfs
that fills up, signals are real signals. Each run must end marked (summary.json and run.json
say what the exit code says), with what was measured on disk, any launched server stopped,
one `error:` line and a meaningful exit code (servebench.analysis.verdict)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

from servebench.emulator.handle import start_emulator
from servebench.store.runfiles import load_records

COMMON = ["--model", "tiny", "--input-tokens", "16", "--warmup", "0", "--no-telemetry", "--no-plots"]


def sb(*args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def one_error(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr
    return errors[0]


def stored(run_dir: Path) -> tuple[dict, dict, list]:
    summary = json.loads((run_dir / "summary.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    return summary, run, load_records(run_dir / "requests.parquet")


def only_run_dir(results: Path) -> Path:
    dirs = [d for d in results.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def emulator_spec(tmp_path: Path, *emulate_args: str) -> Path:
    """A user spec that launches the built-in emulator like any engine (--launcher process)."""
    spec = tmp_path / "emu.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "emu", "adapter": "openai-completions", "adapters": ["openai-completions"],
        "output_length": {"forced": True, "how": "emulator"},
        "process": {"command": ["{python}", "-m", "servebench.cli", "emulate"],
                    "args": ["--format", "openai", "--host", "{host}", "--port", "{port}",
                             "--model", "{served_model_name}", *emulate_args]}}))
    return spec


def test_server_killed_mid_run_fails_every_request_it_owed(tmp_path):
    """The issue's case: 20 requests at concurrency 2, the server killed after ~1 s. Every
    request that was due and not served is a failure, even with --max-error-rate 0.5."""
    spec = emulator_spec(tmp_path, "--ttft-ms", "20", "--itl-ms", "20", "--fault", "kill-after=1s")
    res = tmp_path / "results"
    p = sb("run", "--backend", str(spec), *COMMON, "--requests", "20", "--concurrency", "2", "--output-tokens", "20",
           "--max-error-rate", "0.5", "--results-dir", str(res))
    assert p.returncode == 1, p.stderr
    err = one_error(p)
    assert "the server was killed by signal 9 during the load" in err and "requests failed" in err
    summary, run, records = stored(only_run_dir(res))
    assert summary["status"] == run["status"] == "failed" and summary["error"] in err
    assert summary["completed"] + summary["failed"] == 20 and summary["failed"] >= 10 and summary["not_released"] == 0
    assert any("cannot connect" in k for k in summary["errors"])
    assert len(records) == 20 and sum(r.ok for r in records) == summary["completed"]
    assert "request(s) failed" in sb("report", str(only_run_dir(res))).stdout  # the report shows them


def test_every_request_failing_is_a_failed_run_in_the_files_too(tmp_path):
    with start_emulator("openai", ttft_ms=5, itl_ms=1, faults=["status=500"]) as emu:
        p = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "6", "--concurrency", "2", "--output-tokens", "4",
               "--results-dir", str(tmp_path))
    assert p.returncode == 1
    err = one_error(p)
    summary, run, _ = stored(only_run_dir(tmp_path))
    assert summary["status"] == run["status"] == "failed"
    assert summary["error"] and summary["error"] in err and "6 of 6 requests failed" in err


def test_server_that_stops_sending_but_keeps_the_connection_times_out(tmp_path):
    with start_emulator("openai", ttft_ms=5, itl_ms=5, faults=["hang-after=12"]) as emu:
        p = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "6", "--concurrency", "2", "--output-tokens", "5",
               "--timeout", "1.5", "--results-dir", str(tmp_path))
    assert p.returncode == 1
    assert "timeout: no complete response after 1.5s" in one_error(p)
    summary, _, records = stored(only_run_dir(tmp_path))
    assert summary["status"] == "failed" and summary["completed"] >= 2 and summary["failed"] >= 1
    assert len(records) == 6
    for r in records:  # a hung stream keeps the tokens it did get, and no more than were sent
        assert len(r.token_ns) <= 5


def test_5xx_storm_is_counted_and_judged_by_max_error_rate(tmp_path):
    with start_emulator("openai", ttft_ms=5, itl_ms=1, faults=["status=503:0.4"], seed=3) as emu:
        strict = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "30", "--concurrency", "4",
                    "--output-tokens", "3", "--results-dir", str(tmp_path / "strict"))
        lenient = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "30", "--concurrency", "4",
                     "--output-tokens", "3", "--max-error-rate", "0.9", "--results-dir", str(tmp_path / "lenient"))
    assert strict.returncode == 1 and "HTTP 503" in one_error(strict)
    s, _, _ = stored(only_run_dir(tmp_path / "strict"))
    assert s["status"] == "failed" and 3 <= s["failed"] <= 25 and s["completed"] + s["failed"] == 30
    assert all(k.startswith("HTTP 503") for k in s["errors"])
    assert lenient.returncode == 0, lenient.stderr
    s2, _, _ = stored(only_run_dir(tmp_path / "lenient"))
    assert s2["status"] == "complete" and s2["error"] is None and s2["failed"] > 0
    assert "request(s) failed" in lenient.stdout  # still shown


def test_connection_resets_mid_stream(tmp_path):
    with start_emulator("openai", ttft_ms=5, itl_ms=2, faults=["reset:0.5"], seed=1) as emu:
        p = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "20", "--concurrency", "4", "--output-tokens", "10",
               "--results-dir", str(tmp_path))
    assert p.returncode == 1
    assert "requests failed" in one_error(p)
    summary, _, records = stored(only_run_dir(tmp_path))
    reset = [r for r in records if r.error and "connection" in r.error]
    assert reset and len(reset) == summary["failed"] and summary["completed"] == 20 - len(reset)
    assert all(len(r.token_ns) < 10 for r in reset)  # cut short, never padded


def test_malformed_event_mid_stream_fails_the_request_without_inventing_tokens(tmp_path):
    with start_emulator("openai", ttft_ms=5, itl_ms=2, faults=["garbage-after=3"]) as emu:
        p = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "4", "--concurrency", "2", "--output-tokens", "8",
               "--results-dir", str(tmp_path))
    assert p.returncode == 1
    assert "malformed event" in one_error(p)
    summary, _, records = stored(only_run_dir(tmp_path))
    assert summary["failed"] == 4
    assert all(len(r.token_ns) == 3 and "malformed event" in r.error for r in records)


def test_slow_response_headers_hit_the_request_timeout(tmp_path):
    with start_emulator("openai", ttft_ms=5, itl_ms=1, faults=["slow-headers=3s"]) as emu:
        p = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "3", "--concurrency", "3", "--output-tokens", "3",
               "--timeout", "1", "--results-dir", str(tmp_path))
    assert p.returncode == 1
    assert "timeout" in one_error(p)
    summary, _, records = stored(only_run_dir(tmp_path))
    assert summary["failed"] == 3 and all(r.first_byte_ns == 0 and r.sent_ns for r in records)


def in_mount(opts: str, mnt: Path, out: Path, argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """argv with `mnt` a tmpfs mounted with `opts` in a private mount namespace (the mount is
    seen by nothing else and goes with the child); the dir is copied to `out` afterwards."""
    unshare = shutil.which("unshare")
    assert unshare, "these tests need util-linux unshare"
    mnt.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    script = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 3; "$@"; rc=$?; '
              'cp -a "$0/." "$OUT_DIR/"; exit $rc')
    return subprocess.run([unshare, "-rm", "sh", "-c", script, str(mnt), opts, str(mnt), "x", *argv],
                          capture_output=True, text=True, timeout=300, env={**env, "OUT_DIR": str(out)},
                          stdin=subprocess.DEVNULL)


def _with_tmpfs(size: str, results: Path, out: Path, argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return in_mount(f"size={size}", results, out, argv, env)


def test_results_disk_full_rescues_the_records_and_report_rebuilds(tmp_path):
    rescue = tmp_path / "rescue"
    env = {**os.environ, "SERVEBENCH_RESCUE_DIR": str(rescue)}
    with start_emulator("openai", ttft_ms=5, itl_ms=1) as emu:
        p = _with_tmpfs("4k", tmp_path / "mnt", tmp_path / "after", [
            sys.executable, "-m", "servebench.cli", "run", "--endpoint", emu.url, *COMMON, "--requests", "5",
            "--output-tokens", "30", "--results-dir", str(tmp_path / "mnt")], env)
    assert p.returncode != 99, "tmpfs mount failed: " + p.stderr
    assert p.returncode == 3, p.stderr
    err = one_error(p)
    assert "results disk full" in err and "records rescued to" in err and str(rescue) in err
    kept = only_run_dir(rescue)
    records = load_records(kept / "requests.parquet")
    assert len(records) == 5 and all(r.ok for r in records)
    assert not list((tmp_path / "after").rglob("*.tmp"))  # no half-written leftovers
    rep = sb("report", "--rebuild", str(kept))
    assert rep.returncode == 0, rep.stderr
    summary = json.loads((kept / "summary.json").read_text())
    assert summary["completed"] == 5 and summary["status"] == "failed" and "disk full" in summary["error"]


def test_results_disk_nearly_full_keeps_records_and_summary_and_says_so(tmp_path):
    with start_emulator("openai", ttft_ms=5, itl_ms=1) as emu:
        args = [sys.executable, "-m", "servebench.cli", "run", "--endpoint", emu.url, "--model", "tiny",
                "--input-tokens", "16", "--warmup", "0", "--no-telemetry", "--requests", "5", "--output-tokens", "30",
                "--results-dir", str(tmp_path / "mnt")]
        p = _with_tmpfs("256k", tmp_path / "mnt", tmp_path / "after", args, dict(os.environ))
    assert p.returncode == 3, p.stderr
    err = one_error(p)
    assert "results disk full" in err and "timeline plot" in err and "report --rebuild" in err
    run_dir = only_run_dir(tmp_path / "after")
    summary, run, records = stored(run_dir)
    assert len(records) == 5 and summary["completed"] == 5
    assert summary["status"] == run["status"] == "failed" and "disk full" in summary["error"]
    assert not (run_dir / "timeline.html").exists() and not list(run_dir.glob("*.tmp"))
    (run_dir / "summary.json").unlink()  # the derived files all come back from the records
    rep = sb("report", "--rebuild", str(run_dir))
    assert rep.returncode == 0, rep.stderr
    assert (run_dir / "timeline.html").is_file() and (run_dir / "timeline.png").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["completed"] == 5


def _launched_run(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, list[str], Path]:
    spec = emulator_spec(tmp_path, "--ttft-ms", "20", "--itl-ms", "50")
    res = tmp_path / "results"
    p = subprocess.Popen([sys.executable, "-m", "servebench.cli", "run", "--backend", str(spec), *COMMON,
                          "--requests", "200", "--output-tokens", "20", "--concurrency", "2", "--results-dir", str(res),
                          *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(p.stderr.readline, "")), daemon=True)
    reader.start()
    p.reader = reader  # joined before stderr is checked: it alone reads the pipe
    deadline = time.monotonic() + 180
    while not any("running load" in ln for ln in err) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.1)
    assert any("running load" in ln for ln in err), "".join(err)
    return p, err, res


def _assert_stopped_cleanly(p, err, res, server_tree, code: int, cause: str) -> None:
    assert p.returncode == code, "".join(err)
    errors = [ln for ln in err if ln.startswith("error:")]
    assert len(errors) == 1 and f"interrupted by {cause}" in errors[0], "".join(err)
    assert not any("Traceback" in ln for ln in err)
    for proc in server_tree:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, proc
    summary, run, records = stored(only_run_dir(res))
    assert summary["status"] == run["status"] == "interrupted" and cause in summary["error"]
    assert 0 < sum(r.ok for r in records) < 200


def test_sigterm_is_reported_as_sigterm_with_exit_143(tmp_path):
    p, err, res = _launched_run(tmp_path)
    try:
        tree = psutil.Process(p.pid).children(recursive=True)
        assert tree
        time.sleep(2.5)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=90)
        p.reader.join(30)
    finally:
        if p.poll() is None:
            p.kill()
    _assert_stopped_cleanly(p, err, res, tree, 143, "SIGTERM")


def test_second_ctrl_c_during_teardown_still_stops_the_server_and_writes(tmp_path):
    p, err, res = _launched_run(tmp_path)
    try:
        tree = psutil.Process(p.pid).children(recursive=True)
        assert tree
        time.sleep(2.5)
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)  # the first one is being handled: the load is cancelled, teardown starts
        p.send_signal(signal.SIGINT)
        p.wait(timeout=90)
        p.reader.join(30)
    finally:
        if p.poll() is None:
            p.kill()
    _assert_stopped_cleanly(p, err, res, tree, 130, "Ctrl-C")


def test_a_run_stopped_before_its_load_began_counts_every_request_not_released(tmp_path):
    # completed + failed + not_released = --requests holds even when nothing was released
    spec = tmp_path / "dead.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "dead", "adapter": "openai-completions", "adapters": ["openai-completions"],
        "output_length": {"forced": True, "how": "emulator"},
        "process": {"command": ["sh", "-c", "echo no GPU found >&2; exit 3"], "args": []}}))
    p = sb("run", "--backend", str(spec), *COMMON, "--requests", "7", "--output-tokens", "4",
           "--results-dir", str(tmp_path / "res"))
    assert p.returncode != 0 and "no GPU found" in one_error(p)
    summary, _, _ = stored(only_run_dir(tmp_path / "res"))
    assert (summary["completed"], summary["failed"], summary["not_released"]) == (0, 0, 7)
