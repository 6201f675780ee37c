"""`servebench run` against the emulator writes the intervals block, and `--steady-state` its
window; `report --rebuild` gives the same numbers back from requests.parquet."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from servebench.emulator.handle import start_emulator


def sb(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True, timeout=timeout)


def _run(tmp_path, url, *extra):
    p = sb("run", "--endpoint", url, "--model", "tiny", "--requests", "40", "--input-tokens", "16",
           "--output-tokens", "6", "--concurrency", "4", "--warmup", "0", "--results-dir", str(tmp_path),
           "--no-telemetry", "--no-plots", *extra)
    assert p.returncode == 0, p.stderr
    return tmp_path / p.stdout.strip().splitlines()[-1].split("/")[-1]


def test_run_summary_carries_intervals_and_steady_state_window(tmp_path):
    with start_emulator("openai", ttft_ms=10, itl_ms=2) as emu:
        plain = _run(tmp_path / "a", emu.url)
        steady = _run(tmp_path / "b", emu.url, "--steady-state")
    s = json.loads((plain / "summary.json").read_text())
    assert "steady_state" not in s
    figs = s["intervals"]["figures"]
    assert figs["request_throughput"]["method"] == "batch-means"
    assert figs["ttft_ms.p50"]["low"] <= s["ttft_ms"]["p50"] <= figs["ttft_ms.p50"]["high"]
    t = json.loads((steady / "summary.json").read_text())
    w = t["steady_state"]
    assert w["applied"] is True and w["requests_kept"] + w["requests_left_out"] == 40
    assert w["requests_kept"] == t["completed"] < 40 and 0 <= w["start_offset_ns"] < w["end_offset_ns"]
    assert json.loads((steady / "run.json").read_text())["config"]["steady_state"] is True
    before = t
    assert sb("report", "--rebuild", str(steady)).returncode == 0
    after = json.loads((steady / "summary.json").read_text())
    assert after["steady_state"] == before["steady_state"] and after["intervals"] == before["intervals"]


def test_sweep_key_steady_state_reaches_every_cell(tmp_path):
    from servebench.sweep.config import load_config
    from servebench.sweep.plan import expand, run_config

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "steady_state": True,
                                    "servers": [{"engine": "vllm", "model": "tiny", "endpoint": "http://127.0.0.1:9"}],
                                    "load": {"concurrency": [1, 2], "requests": 4}}))
    cfg, _ = load_config(path)
    p = expand(cfg)
    rcs = [run_config(cfg, g.server, c.load, tmp_path, c.id) for g in p.groups for c in g.cells]
    assert len(rcs) == 2 and all(rc.steady_state for rc in rcs)
    path.write_text(path.read_text().replace("steady_state: true", "steady_state: false"))
    cfg, _ = load_config(path)
    g = expand(cfg).groups[0]
    assert run_config(cfg, g.server, g.cells[0].load, tmp_path, "x").steady_state is False
