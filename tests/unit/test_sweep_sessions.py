"""Multi-turn sessions as a sweep's load: `load.sessions` (run's --sessions options) sent at each
concurrency (live sessions) or rate (session starts), checked as `run` checks them, the session
file read before any server starts, and a sweep against the emulator whose cells ran
conversations through the chat endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servebench.emulator.handle import start_emulator
from servebench.store.runfiles import load_records
from servebench.sweep.config import SweepConfig, SweepConfigError
from servebench.sweep.plan import check_load, expand, run_config

SESSIONS = {"source": "synthetic", "turns": 2, "count": 3, "think_time": 0.1}


def _cfg(**load) -> SweepConfig:
    return SweepConfig.model_validate({"name": "s", "servers": [{"engine": "vllm", "model": "tiny"}], "load": load})


def test_each_cell_runs_the_sessions_at_its_load_point(tmp_path):
    cfg = _cfg(sessions=SESSIONS, concurrency=[1, 2], rate=[0.5], input_tokens=12, output_tokens=4)
    plan = expand(cfg)
    assert [c.load.level for c in plan.cells] == ["c=1", "c=2", "rate=0.5/s"]
    for cell in plan.cells:
        rc = run_config(cfg, plan.groups[0].server, cell.load, tmp_path, "x")
        sc = rc.workload.sessions
        assert (sc.source, sc.turns, sc.count, sc.think_time) == ("synthetic", 2, 3, 0.1)
        assert rc.api == "openai-chat"  # conversations go through the chat endpoint
        assert (rc.load.concurrency, rc.load.rate) == (cell.load.concurrency, cell.load.rate)
        assert (rc.workload.input_tokens, rc.workload.output_tokens) == (12, 4)
    assert "sessions synthetic, turns 2, count 3, think time 0.1; input tokens 12" in cfg.load.describe()
    plain = _cfg(concurrency=[1])
    g = expand(plain).groups[0]
    assert run_config(plain, g.server, g.cells[0].load, tmp_path, "x").workload.sessions is None


def test_a_bad_session_file_is_refused_before_any_server_starts(tmp_path):
    f = tmp_path / "chats.jsonl"
    f.write_text(json.dumps({"turns": ["hi", "more"]}) + "\n" + json.dumps({"turns": ["ok", ""]}) + "\n")
    cfg = _cfg(sessions={"source": str(f)}, concurrency=[1])
    with pytest.raises(SweepConfigError, match=rf"{f}:2: turns\[1\]\.user: empty turn"):
        check_load(cfg)
    f.write_text(json.dumps({"turns": ["hi", "more"]}) + "\n")
    check_load(cfg)  # a good file passes


def test_a_sessions_sweep_runs_conversations_in_every_cell(tmp_path):
    with start_emulator("openai-chat", ttft_ms=5, itl_ms=2) as emu:
        cfg = {"name": "chat", "results_dir": str(tmp_path / "r"), "telemetry": False, "plots": False,
               "servers": [{"engine": "vllm", "model": "tiny", "endpoint": emu.url}],
               "load": {"sessions": SESSIONS, "concurrency": [1, 3], "input_tokens": 12, "output_tokens": 3,
                        "warmup": 0}}
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
        p = subprocess.run([sys.executable, "-m", "servebench.cli", "sweep", str(tmp_path / "s.yaml")],
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    sweep = tmp_path / "r" / "chat"
    cells = json.loads((sweep / "index.json").read_text())["cells"]
    assert [c["load"]["concurrency"] for c in cells] == [1, 3] and all(c["status"] == "done" for c in cells)
    for c in cells:
        d = Path(sweep / c["run_dir"])
        s = json.loads((d / "summary.json").read_text())
        assert s["sessions"]["sessions_completed"] == 3 and s["sessions"]["turns_sent"] == 6
        recs = [r for r in load_records(d / "requests.parquet") if not r.warmup]
        for r in (r for r in recs if r.turn == 2):
            prev = next(q for q in recs if q.session == r.session and q.turn == 1)
            assert prev.reply_text and prev.reply_text in r.prompt_text  # turn 2 carries turn 1's answer
