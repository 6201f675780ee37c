"""`servebench sweep` and `compare` end to end as users run them (subprocess), with the
built-in emulator launched as an engine process (tests/fixtures/specs/emulated.yaml): real
launches, readiness, cache resets, teardown, Ctrl-C and resume, in seconds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import yaml

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "emulated.yaml"
CRASH = Path(__file__).resolve().parents[1] / "fixtures" / "fake_engines" / "crash.py"


def sb(*args, timeout=300, cwd=None):
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)


def spec_copy(tmp_path: Path, name: str, args: list[str]) -> Path:
    """The emulated engine under another name, with its timing baked into the spec."""
    data = yaml.safe_load(SPEC.read_text())
    data["name"] = name
    data["process"]["args"] += args
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def emulators_alive(tag: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if tag in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


def index(d: Path) -> dict:
    return json.loads((d / "index.json").read_text())


def cells(d: Path) -> dict[str, dict]:
    return {c["id"]: c for c in index(d)["cells"]}


def write_config(tmp_path: Path, tag: str, **load) -> Path:
    cfg = {
        "name": "resume-test", "results_dir": str(tmp_path / "results"), "telemetry": False,
        "defaults": {"engine": str(SPEC), "model": "tiny", "served_model_name": tag},
        "servers": [{"server_args": ["--ttft-ms", "20", "--itl-ms", "20"]},
                    {"server_args": ["--ttft-ms", "40", "--itl-ms", "20"]}],
        "load": {"concurrency": [1, 2, 4], "requests": 8, "input_tokens": 24, "output_tokens": 20, "warmup": 1, **load},
    }
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_sweep_interrupted_mid_cell_resumes_without_remeasuring(tmp_path):
    tag = f"sweep-{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path, tag)
    sweep_dir = tmp_path / "results" / "resume-test"
    proc = subprocess.Popen([sys.executable, "-m", "servebench.cli", "sweep", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # the second cell has started: Ctrl-C in the middle of it
        if (sweep_dir / "index.json").exists() and cells(sweep_dir)["g00-c0002-r0"]["status"] == "running":
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(f"second cell never started: {proc.communicate()[1][-2000:]}")
    time.sleep(0.6)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "--resume" in err and err.count("error:") == 1
    first = cells(sweep_dir)
    assert first["g00-c0001-r0"]["status"] == "done"
    # interrupted mid-load, or done: the Ctrl-C came while its finished load was being written
    # (then kept, and the sweep still stops: the Ctrl-C is never dropped)
    second = first["g00-c0002-r0"]["status"]
    assert second in ("interrupted", "done")
    assert first["g00-c0004-r0"]["status"] in ("pending", "interrupted")
    assert all(first[c]["status"] == "pending" for c in first if c.startswith("g01"))
    assert not emulators_alive(tag)  # the server was torn down on Ctrl-C
    done_run = sweep_dir / first["g00-c0001-r0"]["run_dir"]
    stamp = json.loads((done_run / "run.json").read_text())["started_at"]
    mtime = (done_run / "requests.parquet").stat().st_mtime_ns

    again = sb("sweep", str(cfg))  # without --resume an existing sweep is never overwritten
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = sb("sweep", str(cfg), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == str(sweep_dir)
    after = cells(sweep_dir)
    assert all(c["status"] == "done" for c in after.values())
    assert after["g00-c0001-r0"]["attempts"] == 1  # finished cell not re-measured
    assert json.loads((done_run / "run.json").read_text())["started_at"] == stamp
    assert (done_run / "requests.parquet").stat().st_mtime_ns == mtime
    if second == "interrupted":
        assert after["g00-c0002-r0"]["attempts"] == 2  # interrupted cell measured again, old attempt kept
        assert (sweep_dir / "runs" / ".attempts" / "g00-c0002-r0.1").is_dir()
    else:
        assert after["g00-c0002-r0"]["attempts"] == 1
    assert not emulators_alive(tag)
    groups = {g["id"]: g for g in index(sweep_dir)["groups"]}
    assert groups["g00"]["launches"] == 2 and groups["g01"]["launches"] == 1  # one launch per group per invocation
    timing = index(sweep_dir)["timing"]
    assert timing["invocations"] == 2 and 0 < timing["overhead_share"] < 1
    for cid, c in after.items():
        run = json.loads((sweep_dir / c["run_dir"] / "run.json").read_text())
        summary = json.loads((sweep_dir / c["run_dir"] / "summary.json").read_text())
        assert run["cell"]["id"] == cid and summary["completed"] == 8
        assert run["session"]["cache_resets"][-1] == {"reset": True, "route": "/reset_prefix_cache", "status": 200}
        twin = after[cid.replace("g00", "g01") if cid.startswith("g00") else cid.replace("g01", "g00")]
        twin_run = json.loads((sweep_dir / twin["run_dir"] / "run.json").read_text())
        assert run["config"]["load"]["seed"] == twin_run["config"]["load"]["seed"]  # same prompts per level
    seeds = {json.loads((sweep_dir / c["run_dir"] / "run.json").read_text())["config"]["load"]["seed"]
             for cid, c in after.items() if cid.startswith("g00")}
    assert len(seeds) == 3  # and a different prompt set per level on one server
    table = (sweep_dir / "sweep.md").read_text()
    assert "### c=1" in table and "### c=4" in table and "emulated/tiny --ttft-ms 20" in table


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    cfg = write_config(tmp_path, "dry")
    p = sb("sweep", str(cfg), "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "2 server group(s), 2 launch(es), 6 cell(s)" in " ".join(p.stderr.split())
    assert not (tmp_path / "results").exists()
    bad = sb("sweep", str(cfg), "--only", "colour=red")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --only: unknown key")


def test_a_model_path_that_does_not_exist_is_refused_before_any_server_starts(tmp_path):
    """Found per group, it failed every cell of the group one launch after another."""
    data = {"results_dir": str(tmp_path / "r"), "load": {"concurrency": [1], "requests": 2},
            "servers": [{"engine": str(SPEC), "model": "tiny"}, {"engine": str(SPEC), "model": str(tmp_path / "gone")},
                        {"engine": "vllm", "model": "./also-gone", "launcher": "docker"},
                        {"engine": "vllm", "model": "meta-llama/Llama-2-7b-hf", "launcher": "docker"}]}
    cfg = tmp_path / "m.yaml"
    cfg.write_text(yaml.safe_dump(data))
    p = sb("sweep", str(cfg), "--dry-run")
    assert p.returncode == 2 and p.stderr.startswith("error: g0") and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.endswith(f": model path not found: {tmp_path / 'gone'} (presets: small, tiny)\n")
    data["servers"][1]["model"] = str(tmp_path)  # a directory: what the process launcher loads
    cfg.write_text(yaml.safe_dump(data))
    p = sb("sweep", str(cfg), "--dry-run")
    assert p.returncode == 2 and p.stderr.endswith(": model path not found: ./also-gone (presets: small, tiny)\n"), p.stderr
    data["servers"][2] = {"engine": str(SPEC), "model": "tyni"}  # a bare word no preset is: a typo of one
    cfg.write_text(yaml.safe_dump(data))
    p = sb("sweep", str(cfg), "--dry-run")
    assert p.returncode == 2 and p.stderr.endswith(": model path not found: tyni (presets: small, tiny)\n"), p.stderr
    # a hub id is the server's to fetch, with docker or as a process (vLLM installed on a GPU host)
    data["servers"][2] = {"engine": "vllm", "model": "meta-llama/Llama-2-7b-hf", "name": "as-a-process"}
    cfg.write_text(yaml.safe_dump(data))
    p = sb("sweep", str(cfg), "--dry-run")
    assert p.returncode == 0 and not (tmp_path / "r").exists(), p.stderr


def test_bad_limit_search_values_are_one_line_errors(tmp_path):
    cfg = write_config(tmp_path, "lim")
    for args, msg in ((["--max-level", "0"], "error: --max-level must be > 0 (the highest load the limit search tries), got 0"),
                      (["--max-load-under", "throughput>=5"], "error: bad SLO term 'throughput>=5'")):
        p = sb("sweep", str(cfg), "--dry-run", *(["--max-load-under", "ttft_p99<=1s"] if "--max-load-under" not in args
                                                  else []), *args)
        assert p.returncode == 2 and p.stderr.startswith(msg) and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = sb("sweep", str(cfg), "--dry-run", "--max-load-under", "ttft_p99<=1s", "--limit-repeats", "0")
    assert p.returncode == 2 and "Invalid value for '--limit-repeats': 0 is not in the range 1<=x<=50" in p.stderr
    data = yaml.safe_load(cfg.read_text())
    (tmp_path / "r0.yaml").write_text(yaml.safe_dump({**data, "limit_repeats": 0}))
    p = sb("sweep", str(tmp_path / "r0.yaml"), "--dry-run", "--max-load-under", "ttft_p99<=1s")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'r0.yaml'}: limit_repeats (line ")
    assert lines[0].endswith("Input should be greater than or equal to 1")


def test_compare_reports_a_failed_engine_and_measures_the_others(tmp_path):
    fast = spec_copy(tmp_path, "fastemu", ["--ttft-ms", "10", "--itl-ms", "2"])
    slow = spec_copy(tmp_path, "slowemu", ["--ttft-ms", "60", "--itl-ms", "6"])
    broken = yaml.safe_load(SPEC.read_text())
    broken.update(name="broken")
    broken["process"] = {"command": ["{python}", str(CRASH)], "args": []}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    p = sb("compare", "--backends", f"{fast},{tmp_path / 'broken.yaml'},{slow}", "--model", "tiny",
           "--concurrency", "1,2", "--requests", "6", "--input-tokens", "24", "--output-tokens", "8",
           "--warmup", "1", "--results-dir", str(tmp_path / "r"), "--no-telemetry")
    assert p.returncode == 1  # one engine failed: said, and the exit code says so
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "server did not start" in errors[0] and "CUDA out of memory" in errors[0]
    d = Path(p.stdout.strip().splitlines()[-1])
    assert d.parent == tmp_path / "r" and "compare" in d.name
    idx = index(d)
    assert idx["kind"] == "compare"
    status = {c["id"]: c["status"] for c in idx["cells"]}
    assert status == {"g00-c0001-r0": "done", "g00-c0002-r0": "done", "g01-c0001-r0": "failed",
                      "g01-c0002-r0": "failed", "g02-c0001-r0": "done", "g02-c0002-r0": "done"}
    md = (d / "compare.md").read_text()
    broken_rows = [ln for ln in md.splitlines() if ln.startswith("| broken/tiny |")]
    assert len(broken_rows) == 2 and all("server did not start" in ln and "\\|" in ln for ln in broken_rows)
    # the faster emulator wins median TTFT and TPOT at both levels (bold = winner); medians,
    # so one scheduling hiccup on a busy test host cannot flip them
    fast_rows = [ln for ln in md.splitlines() if ln.startswith("| fastemu/tiny")]
    assert len(fast_rows) == 2
    for ln in fast_rows:
        cols = [c.strip() for c in ln.split(" | ")[1:]]
        assert cols[2].startswith("**") and cols[4].startswith("**"), ln  # TTFT p50, TPOT p50
    assert not emulators_alive(str(fast)) and not emulators_alive(str(slow))


def test_limit_search_finds_the_emulated_capacity(tmp_path):
    # two streams generate at once; a third waits a whole request (~220 ms) for its first token
    emu = spec_copy(tmp_path, "capped", ["--ttft-ms", "40", "--itl-ms", "20", "--max-running", "2"])
    cfg = {"name": "limit", "results_dir": str(tmp_path / "r"), "telemetry": False,
           "servers": [{"engine": str(emu)}],
           "load": {"concurrency": [1], "requests": 6, "input_tokens": 24, "output_tokens": 10, "warmup": 1}}
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(cfg))
    p = sb("sweep", str(tmp_path / "l.yaml"), "--max-load-under", "ttft_p99<=150ms", "--max-level", "16")
    assert p.returncode == 0, p.stderr[-3000:]
    idx = index(tmp_path / "r" / "limit")
    g = idx["groups"][0]
    lm = g["limit"]
    # c=2 holds and c=3 does not, but the p99 of 6 (or 3 x 6 pooled) requests has no upper 95 %
    # bound: nothing is claimed met, the range tops out at 2, and the note says why
    assert (lm["low"], lm["high"], lm["first_missing"], lm["max_meeting"]) == (None, 2, 3, None)
    assert [t["level"] for t in lm["tried"]] == [1, 2, 4, 3]
    assert "needs 368 or more" in lm["note"] and lm["level"] == 0.95
    # repeats at the boundary only (c=2 undecided, c=3 under the miss at 4, c=1 the walk down), each
    # an ordinary cell; their per-request latencies were judged, not their summaries' p99
    reps = sorted(c["id"] for c in idx["cells"] if "-r" in c["id"])
    assert reps and all(c.rsplit("-r", 1)[0] in ("g00-lim-c0001", "g00-lim-c0002", "g00-lim-c0003") for c in reps)
    assert lm["cells"] == len(idx["cells"]) and next(t for t in lm["tried"] if t["level"] == 2)["runs"] == 3
    assert g["launches"] == 1  # one server for the whole search
    assert "highest concurrency meeting ttft_p99<=150ms: none shown at 95 %, at most 2 (first missing: 3;" in " ".join(
        p.stderr.split())
