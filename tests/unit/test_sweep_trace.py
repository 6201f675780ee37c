"""Capacity plans from a trace: a sweep's load as a trace (its speeds as load points) or a length
distribution, the limit search over --trace-speed against an emulated server that saturates,
and `recommend --trace-growth` on the sweep directory that search wrote."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from servebench.decide.traceplan import PlanError, servers_for, trace_plan
from servebench.sweep.config import SweepConfig, SweepConfigError, load_config
from servebench.sweep.limit import closeness
from servebench.sweep.slo_bounds import parse_slo
from servebench.sweep.plan import expand, limit_by, run_config

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "emulated.yaml"

SESSIONS = {"source": "synthetic", "turns": 2, "count": 3, "think_time": 0.1}


def sb(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def trace_file(path: Path, n: int = 6, gap_s: float = 1.0) -> Path:
    """n requests gap_s apart (servebench's own JSONL): the trace's rate is 1 / gap_s."""
    path.write_text("".join(json.dumps({"time_s": i * gap_s, "input_tokens": 24, "output_tokens": 10}) + "\n"
                            for i in range(n)))
    return path


def sweep_cfg(**load) -> SweepConfig:
    return SweepConfig.model_validate({"name": "t", "servers": [{"engine": "vllm", "model": "tiny"}], "load": load})


def test_trace_load_points_are_speeds_passed_to_each_cells_run(tmp_path):
    tr = trace_file(tmp_path / "tr.jsonl")
    cfg = sweep_cfg(trace={"source": str(tr), "window": "1:", "scale_lengths": 0.5, "speed": [1, 2.5]},
                    max_input_tokens=20, max_output_tokens=8, repeats=2)
    plan = expand(cfg)
    assert [c.id for c in plan.cells] == ["g00-trace1-r0", "g00-trace1-r1", "g00-trace2.5-r0", "g00-trace2.5-r1"]
    assert [c.load.level for c in plan.cells][::2] == ["trace x1", "trace x2.5"]
    seeds = [c.load.seed for c in plan.cells]
    assert len(set(seeds)) == 4  # every point and repeat its own prompts
    rc = run_config(cfg, plan.groups[0].server, plan.cells[2].load, tmp_path, "x")
    t = rc.workload.trace
    assert (t.source, t.speed, t.window, t.scale_lengths, t.requests) == (str(tr), 2.5, (1.0, None), 0.5, None)
    assert (rc.workload.max_input_tokens, rc.workload.max_output_tokens, rc.load.rate) == (20, 8, None)
    # `requests` with a trace is the first N of its window, as `run --requests N`
    rc = run_config(cfg := sweep_cfg(trace={"source": str(tr)}, requests=3), plan.groups[0].server,
                    expand(cfg).cells[0].load, tmp_path, "x")
    assert rc.workload.trace.requests == 3
    assert limit_by(cfg, None) == "speed"


def test_distribution_lengths_pass_through_and_old_index_rows_line_up(tmp_path):
    cfg = sweep_cfg(concurrency=[2], input_tokens="lognormal:mean=400,sd=300", output_tokens="uniform:16-64",
                    max_input_tokens=900)
    cell = expand(cfg).cells[0]
    rc = run_config(cfg, expand(cfg).groups[0].server, cell.load, tmp_path, "x")
    assert (rc.workload.input_tokens, rc.workload.output_tokens) == ("lognormal:mean=400,sd=300", "uniform:16-64")
    assert rc.workload.max_input_tokens == 900 and rc.workload.trace is None
    assert "speed" not in cell.as_dict()["load"]  # a sweep indexed before traces resumes unchanged
    assert limit_by(cfg, None) == "concurrency"
    with pytest.raises(SweepConfigError, match="needs a trace load"):
        limit_by(cfg, "speed")


@pytest.mark.parametrize("load, msg", [
    ({"trace": {"source": "azure-conv-2023", "speed": [1, 0]}}, "finite numbers > 0"),
    ({"trace": {"source": "azure-conv-2023", "speed": -2}}, "finite numbers > 0"),
    ({"trace": {"source": "azure-conv-2023", "speed": []}}, "at least one"),
    ({"trace": {"source": "azure-conv-2023", "window": "9:3"}}, "START:END"),
    ({"trace": {"source": "azure-conv-2023"}, "concurrency": [1]}, "a trace brings its own schedule"),
    # sessions as a sweep load (test_sweep_sessions.py)
    ({"sessions": SESSIONS, "trace": {"source": "azure-conv-2023"}}, "sessions are a workload of their own"),
    ({"sessions": {**SESSIONS, "think_time": "gamma:3"}, "concurrency": [1]}, "--think-time 'gamma:3'"),
    ({"sessions": {**SESSIONS, "turns": 0}, "concurrency": [1]}, "greater than or equal to 1"),
    ({"sessions": {"turns": 2}, "concurrency": [1]}, "source"),
    ({"trace": {"source": "azure-conv-2023"}, "input_tokens": "uniform:1-9"}, "a trace brings its own"),
    # a length the workload would not read is refused, not dropped
    ({"concurrency": [1], "prompts_file": "p.jsonl", "input_tokens": 2048}, "not read with prompts_file"),
    ({"sessions": {**SESSIONS, "source": "s.jsonl"}, "concurrency": [1], "input_tokens": 64}, "or a sessions file"),
    ({"concurrency": [1], "input_tokens": "gamma:3"}, "expected a number of tokens or a distribution"),
    ({"concurrency": [1], "output_tokens": 0}, "at least 1 token"),
])
def test_bad_load_is_one_line_naming_field_and_line(tmp_path, load, msg):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"servers": [{"engine": "vllm"}], "load": load}, sort_keys=False))
    with pytest.raises(SweepConfigError, match=msg) as e:
        load_config(p)
    assert "\n" not in str(e.value) and "(line " in str(e.value) and ": load" in str(e.value)
    assert "Value error" not in str(e.value)


def test_dry_run_shows_the_trace_and_the_distribution_and_refuses_a_bad_trace(tmp_path):
    tr = trace_file(tmp_path / "tr.jsonl")
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "r"), "servers": [{"engine": "vllm"}],
                                 "load": {"trace": {"source": str(tr), "scale_lengths": 0.5, "speed": [1, 4]},
                                          "max_input_tokens": 900}}))
    out = sb("sweep", str(p), "--dry-run")
    text = " ".join(out.stderr.split())
    assert out.returncode == 0, out.stderr
    assert f"workload: trace {tr}, lengths x0.5, max input tokens 900; speeds x1, x4" in text
    assert "trace x1, trace x4" in text
    lim = sb("sweep", str(p), "--dry-run", "--max-load-under", "ttft_p99<=1s", "--limit-by", "concurrency")
    assert lim.returncode == 2 and lim.stderr.strip() == (
        "error: --limit-by concurrency: a trace load is searched by its speed (--limit-by speed)")
    d = tmp_path / "d.yaml"
    d.write_text(yaml.safe_dump({"servers": [{"engine": "vllm"}],
                                 "load": {"concurrency": [1], "input_tokens": "uniform:128-512", "output_tokens": 32}}))
    out = sb("sweep", str(d), "--dry-run")
    assert out.returncode == 0 and "workload: input tokens uniform:128-512, output tokens 32" in out.stderr
    (tmp_path / "bad.jsonl").write_text('{"time_s": 0, "input_tokens": 9, "output_tokens": 1}\n'
                                        '{"time_s": "soon", "input_tokens": 9, "output_tokens": 1}\n')
    p.write_text(yaml.safe_dump({"servers": [{"engine": "vllm"}], "load": {"trace": {"source": str(tmp_path / "bad.jsonl")}}}))
    out = sb("sweep", str(p), "--dry-run")  # before any server starts: one line naming file, line and field
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "bad.jsonl:2" in out.stderr and "time_s" in out.stderr


def test_servers_and_margin():
    assert servers_for(10, 3.4) == (3, pytest.approx(3.4 * 3 / 10 - 1))
    assert servers_for(10, 5) == (2, pytest.approx(0.0))  # exactly enough: no spare
    assert servers_for(2, 7.5) == (1, pytest.approx(2.75))


def test_binding_bound_is_the_one_closest_to_its_limit():
    b = parse_slo("ttft_p99<=500ms,tpot_p50<=50ms,error_rate<=0")
    at = closeness(b, {"completed": 5, "ttft_ms": {"p99": 250.0}, "tpot_ms": {"p50": 45.0}, "error_rate": 0.0})
    assert at["binding"] == "tpot_ms.p50<=50"
    assert [r["share"] for r in at["bounds"]] == [pytest.approx(0.5), pytest.approx(0.9), 0.0]
    assert closeness(b, None) is None


def test_plan_rows_for_never_met_and_capped_searches():
    df = pd.DataFrame([{"run_dir": "a", "config": "A", "family": "m", "usd_per_hour": 2.0, "price_source": "s"},
                       {"run_dir": "b", "config": "B", "family": "m", "usd_per_hour": 1.0, "price_source": "s"}])
    trace = {"name": "t", "rate_per_s": 2.0}
    limits = [{"label": "A", "run_dirs": {"a"}, "limit": {"slo": "x", "max_meeting": None, "first_missing": 1.0,
                                                          "trace": trace}},
              {"label": "B", "run_dirs": {"b"}, "limit": {"slo": "x", "max_meeting": 4.0, "first_missing": None,
                                                          "trace": trace, "at_limit": None}}]
    t = trace_plan(df, limits, 10)
    b = t.df.set_index("config").loc["B"]
    assert (b["servers"], b["capacity_rps"], b["usd_per_hour"], b["usd_per_month"]) == (3, 8.0, 3.0, 3.0 * 730)
    assert math.isnan(t.df.set_index("config").loc["A", "usd_per_hour"])
    assert any("A: never met x" in n for n in t.notes) and any("search's cap x4" in n for n in t.notes)
    with pytest.raises(PlanError, match="no trace-speed limit"):
        trace_plan(df, [], 10)


def test_plan_counts_on_the_lower_end_of_a_range_and_says_so():
    df = pd.DataFrame([{"run_dir": "c", "config": "C", "family": "m", "usd_per_hour": 1.0, "price_source": "s"},
                       {"run_dir": "d", "config": "D", "family": "m", "usd_per_hour": 1.0, "price_source": "s"}])
    trace = {"name": "t", "rate_per_s": 2.0}
    why = "ttft_ms.p99 of 18 requests at 2 has no upper 95 % bound (it needs 368 or more)"
    limits = [{"label": "C", "run_dirs": {"c"}, "limit": {"slo": "ttft_p99<=1s", "low": 3.0, "high": 4.5, "level": 0.95,
                                                          "max_meeting": 3.0, "first_missing": 5.0, "trace": trace}},
              {"label": "D", "run_dirs": {"d"}, "limit": {"slo": "ttft_p99<=1s", "low": None, "high": 2.0, "level": 0.95,
                                                          "max_meeting": None, "first_missing": 2.5, "note": why,
                                                          "trace": trace}}]
    t = trace_plan(df, limits, 10)
    c = t.df.set_index("config").loc["C"]
    # 10 / 3 (the lower end), not 10 / 4.5 or a middle: 4 servers, not 3
    assert (c["limit_speed"], c["limit_range"], c["servers"], c["capacity_rps"]) == (3.0, "x3-x4.5 (95 %)", 4, 6.0)
    d = t.df.set_index("config").loc["D"]
    assert d["limit_range"] == "<= x2 (none shown)" and math.isnan(d["usd_per_hour"])
    assert f"D: no speed shown to meet ttft_p99<=1s at 95 % (at most x2; {why})" in t.notes
    assert "limit speed = the lower end of the limit's range" in t.notes[0]


def test_trace_speed_search_on_a_saturating_server_then_a_costed_plan(tmp_path):
    # one request at a time, ~230 ms each: the trace (1 request/s) queues past ~4.3x its rate
    emu = yaml.safe_load(SPEC.read_text())
    emu["name"] = "capped"
    emu["process"]["args"] += ["--ttft-ms", "40", "--itl-ms", "20", "--max-running", "1"]
    (tmp_path / "capped.yaml").write_text(yaml.safe_dump(emu))
    tr = trace_file(tmp_path / "tr.jsonl")
    cfg = {"name": "tplan", "results_dir": str(tmp_path / "r"), "telemetry": False,
           "servers": [{"engine": str(tmp_path / "capped.yaml")}],
           "load": {"trace": {"source": str(tr), "speed": [2]}, "warmup": 1}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    # ttft_max: no request past 300 ms, judged on what was seen (a p99 of 6 requests cannot be
    # bounded at 95 %: test_sweep_cli's search shows that answer)
    p = sb("sweep", str(tmp_path / "s.yaml"), "--max-load-under", "ttft_max<=300ms", "--max-level", "64")
    assert p.returncode == 0, p.stderr[-3000:]
    sweep = tmp_path / "r" / "tplan"
    g = json.loads((sweep / "index.json").read_text())["groups"][0]
    lm = g["limit"]
    # at 4x requests arrive 250 ms apart (no queue); at 8x each waits ~100 ms more than the last
    assert lm["by"] == "speed" and [t["level"] for t in lm["tried"]][:3] == [2, 4, 8]
    assert 4 <= lm["max_meeting"] < 8 and lm["first_missing"] <= lm["max_meeting"] * 1.1
    assert lm["exact"] and lm["low"] == lm["high"] == lm["max_meeting"]  # the emulator's boundary is sharp
    assert g["launches"] == 1
    assert lm["trace"]["rate_per_s"] == pytest.approx(1.0) and lm["at_limit"]["binding"] == "ttft_ms.max<=300"
    assert "highest trace speed (x the trace's rate) meeting ttft_max<=300ms" in " ".join(p.stderr.split())

    out = sb("recommend", str(sweep), "--trace-growth", "10", "--price", "cpu=0.25", "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = [r for r in csv.DictReader(io.StringIO(out.stdout)) if r["table"] == "trace_plan"]
    assert len(rows) == 1
    r, best = rows[0], lm["max_meeting"]
    n = math.ceil(10 / best)
    assert float(r["limit_speed"]) == best and int(float(r["servers"])) == n
    assert float(r["margin"]) == pytest.approx(best * n / 10 - 1)
    assert float(r["usd_per_hour"]) == pytest.approx(0.25 * n) and float(r["usd_per_month"]) == pytest.approx(0.25 * n * 730)
    assert float(r["capacity_rps"]) == pytest.approx(best) and r["binding"].startswith("ttft_ms.max<=300 (")
    assert r["limit_range"] == f"x{best:g} (exact)"
    md = sb("recommend", str(sweep), "--trace-growth", "10", "--price", "cpu=0.25", "--format", "md")
    assert md.returncode == 0 and "## Capacity plan: 10x the trace's traffic under ttft_max<=300ms" in md.stdout
    assert "limit speed = the lower end of the limit's range" in md.stdout

    unpriced = sb("recommend", str(sweep), "--trace-growth", "10")  # the emulator runs on a CPU: no catalog price
    assert unpriced.returncode == 2 and unpriced.stderr.strip().splitlines() == [
        "error: --trace-growth: no price for capped/tiny (cpu): give --price cpu=USD_PER_HOUR (or --onprem)"]
    for bad in ("0", "-3"):
        out = sb("recommend", str(sweep), "--trace-growth", bad, "--price", "cpu=0.25")
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [
            "error: --trace-growth must be > 0 (a multiple of the trace's traffic, e.g. 10)"]


def test_a_length_mix_sweep_sends_the_distribution(tmp_path):
    cfg = {"name": "mix", "results_dir": str(tmp_path / "r"), "telemetry": False,
           "servers": [{"engine": str(SPEC), "server_args": ["--ttft-ms", "5", "--itl-ms", "2"]}],
           "load": {"concurrency": [2], "requests": 8, "warmup": 1, "input_tokens": "uniform:8-40",
                    "output_tokens": "uniform:3-9", "max_input_tokens": 30}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    p = sb("sweep", str(tmp_path / "m.yaml"))
    assert p.returncode == 0, p.stderr[-3000:]
    cell = json.loads((tmp_path / "r" / "mix" / "index.json").read_text())["cells"][0]
    s = json.loads((tmp_path / "r" / "mix" / cell["run_dir"] / "summary.json").read_text())
    lengths = s["workload"]["lengths"]
    assert lengths["input"]["spec"]["spec"] == "uniform:8-40" and lengths["output"]["spec"]["spec"] == "uniform:3-9"
    assert lengths["input"]["requested"]["max"] <= 30 and 3 <= lengths["output"]["requested"]["min"]
    assert s["workload"]["clipped"]["max_input_tokens"] == 30
