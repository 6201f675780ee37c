"""compare and sweep against real engines on this CPU (they fail, never skip, without them).

The sweep is interrupted with SIGINT in the middle of a cell and re-run: finished cells are
not re-measured, the interrupted one is, and no server process outlives any step."""

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

from tests.integration.conftest import require_vllm

STEP_TIMEOUT_S = 1500  # two cold vLLM CPU starts on 2 shared cores


def servers_alive(tag: str) -> list[str]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if tag in cmd and "servebench.cli" not in cmd and p.status() != psutil.STATUS_ZOMBIE:
                out.append(cmd[:200])
        except psutil.Error:
            continue
    return out


def cells(d: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((d / "index.json").read_text())["cells"]}


def test_real_sweep_interrupted_and_resumed(tmp_path):
    require_vllm()
    tag = f"sweep-{uuid.uuid4().hex[:8]}"  # served model name: finds this test's servers by command line
    cfg = {
        "name": "real", "results_dir": str(tmp_path / "results"),
        "defaults": {"engine": "vllm", "model": "tiny", "served_model_name": tag, "hardware": "cpu"},
        # one server group: a second one cost a third cold vLLM start (~70 s of the suite's budget),
        # and groups with their own arguments are the emulator sweep's (tests/unit/test_sweep_cli.py)
        "servers": [{"server_args": ["--max-num-seqs", "4"]}],
        # 32 requests: a cell's load lasts ~2 s here (8 took 0.43 s, and a SIGINT 1 s into the
        # cell landed between cells)
        "load": {"concurrency": [1, 2, 4], "requests": 32, "input_tokens": 64, "output_tokens": 16, "warmup": 1},
    }
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    d = tmp_path / "results" / "real"
    proc = subprocess.Popen([sys.executable, "-m", "servebench.cli", "sweep", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + STEP_TIMEOUT_S
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (d / "index.json").exists() and cells(d)["g00-c0002-r0"]["status"] == "running":
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"second cell never started: {proc.communicate(timeout=60)[1][-3000:]}")
        time.sleep(0.5)  # inside the cell (probe, warm-up or load)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    first = cells(d)
    # interrupted mid-load, or done when the Ctrl-C came while its finished load was written:
    # either way the sweep stopped there (a Ctrl-C held during the write used to be dropped)
    second = first["g00-c0002-r0"]["status"]
    assert first["g00-c0001-r0"]["status"] == "done" and second in ("interrupted", "done")
    assert first["g00-c0004-r0"]["status"] in ("pending", "interrupted")
    assert not servers_alive(tag)
    done_parquet = d / first["g00-c0001-r0"]["run_dir"] / "requests.parquet"
    mtime = done_parquet.stat().st_mtime_ns

    p = subprocess.run([sys.executable, "-m", "servebench.cli", "sweep", str(path), "--resume"], capture_output=True,
                       text=True, timeout=STEP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not servers_alive(tag)
    after = cells(d)
    assert all(c["status"] == "done" for c in after.values()) and len(after) == 3
    assert after["g00-c0001-r0"]["attempts"] == 1 and done_parquet.stat().st_mtime_ns == mtime
    assert after["g00-c0002-r0"]["attempts"] == (2 if second == "interrupted" else 1)
    index = json.loads((d / "index.json").read_text())
    assert [g["launches"] for g in index["groups"]] == [2]
    for cid, c in after.items():
        run = json.loads((d / c["run_dir"] / "run.json").read_text())
        summary = json.loads((d / c["run_dir"] / "summary.json").read_text())
        assert summary["completed"] == 32 and summary["failed"] == 0
        assert summary["output_tokens"]["achieved_mean"] == 16 and summary["input_tokens"]["mismatched_requests"] == 0
        # the real engine emptied its prefix cache before the cell
        assert run["session"]["cache_resets"][-1] == {"reset": True, "route": "/reset_prefix_cache", "status": 200}
        assert "--max-num-seqs 4" in run["server"]["info"]["command"]
    assert "### c=4" in (d / "sweep.md").read_text()


def test_real_compare_three_cpu_engines(tmp_path):
    """The command on the card, on this CPU: vLLM, transformers serve and llama.cpp, same workload."""
    require_vllm()
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "compare", "--backends", "vllm,transformers,llamacpp",
                        "--model", "tiny", "--concurrency", "1,4", "--requests", "8", "--input-tokens", "64",
                        "--output-tokens", "16", "--warmup", "1", "--results-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=STEP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    d = Path(p.stdout.strip().splitlines()[-1])
    index = json.loads((d / "index.json").read_text())
    assert [g["server"]["engine"] for g in index["groups"]] == ["vllm", "transformers", "llamacpp"]
    assert all(g["launches"] == 1 for g in index["groups"])  # each engine launched once for both levels
    by_level: dict[int, list[dict]] = {}
    for c in index["cells"]:
        assert c["status"] == "done", c
        run = json.loads((d / c["run_dir"] / "run.json").read_text())
        summary = json.loads((d / c["run_dir"] / "summary.json").read_text())
        assert summary["completed"] == 8 and summary["failed"] == 0
        # the same prompts for every engine at a level: same seed, same exact length (one tokenizer)
        assert summary["input_tokens"]["requested_mean"] == 64
        by_level.setdefault(c["load"]["concurrency"], []).append(run["config"]["load"]["seed"])
        assert summary["output_tokens"]["achieved_mean"] == 16, (c["id"], summary["output_tokens"])
    assert all(len(set(seeds)) == 1 for seeds in by_level.values()) and len({s[0] for s in by_level.values()}) == 2
    md = (d / "compare.md").read_text()
    for level in ("### c=1", "### c=4"):
        assert level in md
    for label in ("vllm/tiny", "transformers/tiny", "llamacpp/tiny"):
        assert md.count(f"| {label} |") == 2
