"""`servebench run --trace` end to end against the built-in emulator: each request arrives at
its trace time (the emulator's own arrival log), and summary.json carries the trace, the
clipping, the requested vs achieved lengths and the schedule's fidelity."""

from __future__ import annotations

import json
import subprocess
import sys

from servebench.analysis import fidelity
from servebench.emulator.handle import start_emulator
from servebench.records import RequestRecord
from servebench.store.runfiles import load_records

TIMES = [0.0, 0.0, 0.3, 0.35, 0.8, 1.2]


def sb(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_trace_replay_arrives_on_schedule(tmp_path):
    trace = tmp_path / "own.jsonl"
    lines = [{"time_s": 10 + t, "input_tokens": 30 + 10 * i, "output_tokens": 3 + i} for i, t in enumerate(TIMES)]
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with start_emulator("openai", ttft_ms=5, itl_ms=2) as emu:
        p = sb("run", "--backend", "vllm", "--endpoint", emu.url, "--model", "tiny", "--trace", str(trace),
               "--trace-speed", "0.5", "--max-output-tokens", "6", "--warmup", "1", "--results-dir", str(tmp_path),
               "--no-telemetry")
        emu.stop()
        log = {r["id"]: r for r in emu.records() if r.get("kind") == "request"}
    assert p.returncode == 0, p.stderr
    run_dir = tmp_path / p.stdout.strip().splitlines()[-1].split("/")[-1]
    s = json.loads((run_dir / "summary.json").read_text())
    recs = [r for r in load_records(run_dir / "requests.parquet") if not r.warmup]
    assert s["completed"] == len(TIMES) and [r.input_tokens for r in recs] == [30 + 10 * i for i in range(6)]
    assert [r.output_tokens for r in recs] == [3, 4, 5, 6, 6, 6]
    # the emulator saw them at the trace's times, slowed 2x (--trace-speed 0.5)
    arrivals = [log[str(r.index)]["arrival_ns"] for r in recs]  # X-Request-Id: the record's index
    got = [(a - arrivals[0]) / 1e9 for a in arrivals]
    for want, have in zip(TIMES, got):
        assert abs(have - 2 * want) < 0.1, (got, TIMES)
    sched = [(r.scheduled_ns - recs[0].scheduled_ns) / 1e9 for r in recs]
    assert sched == [2 * t for t in TIMES] or max(abs(a - 2 * b) for a, b in zip(sched, TIMES)) < 1e-6
    wl = s["workload"]
    assert wl["prefix_cache_start"] == "unknown: a server already running, cache not reset"  # --endpoint
    assert wl["trace"]["requests"] == 6 and wl["trace"]["speed"] == 0.5 and wl["trace"]["format"] == "servebench"
    assert wl["clipped"]["output"] == 2 and wl["clipped"]["input"] == 0
    assert wl["lengths"]["output"]["requested"]["max"] == 6 and wl["lengths"]["output"]["achieved"]["max"] == 6
    sc = s["schedule"]
    assert sc["send_error_ms"]["n"] == 6 and sc["send_error_ms"]["min"] >= 0
    assert sc["per_minute"] == [{"minute": 0, "scheduled": 6, "sent": 6}]
    assert "send_error_p99_ms" in s["client"]["verdict"]["checks"]
    rep = sb("report", str(run_dir))
    out = rep.stdout.replace("\n", " ")
    assert rep.returncode == 0 and "(servebench): 6 of 6 requests" in out
    assert "clipped: 0 input length(s), 2 output length(s)" in out and "schedule: send - scheduled p50" in out


def _rec(i, sched, sent):
    return RequestRecord(index=i, scheduled_ns=sched, sent_ns=sent, end_ns=sent + 1, status=200)


def test_schedule_fidelity_numbers():
    m = 60_000_000_000
    recs = [_rec(0, 1_000, 1_000 + 2_000_000), _rec(1, 1_000 + m // 2, 1_000 + m // 2 + 4_000_000),
            _rec(2, 1_000 + m + 5, 1_000 + m + 5)]
    sc = fidelity.schedule(recs, capped=False)
    assert sc["send_error_ms"]["max"] == 4.0 and sc["send_error_ms"]["min"] == 0.0
    assert sc["per_minute"] == [{"minute": 0, "scheduled": 2, "sent": 2}, {"minute": 1, "scheduled": 1, "sent": 1}]
    assert sc["max_minute_deviation"] == 0.0
    late = [_rec(0, 0 + 1, 1), _rec(1, m - 10, m + 50_000_000)]  # sent in the next minute
    sc = fidelity.schedule(late, capped=False)
    assert sc["per_minute"][0] == {"minute": 0, "scheduled": 2, "sent": 1}


def test_client_verdict_flags_a_schedule_not_kept():
    from servebench.analysis.client_check import judge, warning

    s = {"schedule": {"capped": False, "send_error_ms": {"p99": 25.0}}}
    v = judge(s)
    assert v["kept_up"] is False and "the schedule was not kept" in warning(v)
    s["schedule"]["capped"] = True  # slot waits are the server's: not judged
    assert judge(s)["kept_up"] is None


def test_cache_start_is_stated():
    from servebench.analysis.fidelity import cache_start

    assert cache_start({"session": {"cache_resets": [{"reset": True}]}, "cell": {}}, "process").startswith("cold: prefix cache reset")
    assert cache_start({"session": {"cache_resets": []}}, "process") == "cold: server started for this run"
    assert cache_start({"session": {"cache_resets": []}, "cell": {}}, "process").startswith("unknown")  # a reused sweep server
    assert cache_start({"session": {"cache_resets": [{"reset": False, "reason": "engine has no cache-reset route"}]},
                        "cell": {}}, "process") == "unknown: the cache reset failed (engine has no cache-reset route)"
    assert cache_start({"session": {}}, "external") == "unknown: a server already running, cache not reset"
