"""A sweep whose results disk is read-only or fills (issue 20): one `error:` line, exit 2
before anything starts or 3 once something was measured, never a chained traceback, and
index.json never left saying a cell is running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.unit.test_faults_cli import in_mount

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "emulated.yaml"


def _config(tmp_path: Path) -> Path:
    cfg = {"name": "full", "telemetry": False,
           "defaults": {"engine": str(SPEC), "model": "tiny"},
           "servers": [{"server_args": ["--ttft-ms", "2", "--itl-ms", "1"]}],
           "load": {"concurrency": [1, 2, 3], "requests": 4, "input_tokens": 16, "output_tokens": 8, "warmup": 0}}
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


_in_mount = in_mount  # one tmpfs helper for every disk test


def one_error(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr and "During handling" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


def _sweep(cfg: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "servebench.cli", "sweep", str(cfg), "--results-dir", str(results)]


def test_sweep_into_a_read_only_results_dir_is_one_line_and_starts_nothing(tmp_path):
    cfg = _config(tmp_path)
    p = _in_mount("ro,size=1m", tmp_path / "mnt", tmp_path / "after", _sweep(cfg, tmp_path / "mnt"), dict(os.environ))
    assert p.returncode != 99, "tmpfs mount failed: " + p.stderr
    assert p.returncode == 2, p.stderr
    err = one_error(p)
    assert "cannot write the sweep to" in err and "Read-only file system" in err and "nothing was started" in err
    assert "starting server" not in p.stderr


def test_sweep_on_a_disk_that_fills_stops_with_exit_3_and_no_cell_running(tmp_path):
    cfg = _config(tmp_path)
    env = {**os.environ, "SERVEBENCH_RESCUE_DIR": str(tmp_path / "rescue")}
    p = _in_mount("size=36k", tmp_path / "mnt", tmp_path / "after", _sweep(cfg, tmp_path / "mnt"), env)
    assert p.returncode != 99, "tmpfs mount failed: " + p.stderr
    assert p.returncode == 3, p.stderr
    err = one_error(p)
    assert err.startswith("error: results disk full") and "the sweep stopped" in err and "--resume" in err
    idx = json.loads((tmp_path / "after" / "full" / "index.json").read_text())
    statuses = [c["status"] for c in idx["cells"]]
    assert "running" not in statuses, statuses
    assert "failed" in statuses  # the cell the disk refused says so, with why
    assert any("disk full" in (c["error"] or "") for c in idx["cells"])
    # what was measured is on disk: the records of at least one cell
    assert list((tmp_path / "after" / "full" / "runs").glob("*/requests.parquet"))
    assert not list((tmp_path / "after").rglob("*.tmp"))


def test_server_overhead_stays_a_share_when_groups_ran_side_by_side(tmp_path):
    """Two groups on two nodes at once: 53 s of start/stop in a 48 s wall used to read
    "111.6 % of 48 s wall"; it is a share of the groups' own time."""
    import io

    from rich.console import Console

    from servebench.sweep import console as out
    from servebench.sweep.index import SweepIndex
    from servebench.sweep.local import account

    index = SweepIndex.create(tmp_path, "sweep", "par")
    index.data["groups"] = [{"id": "g00", "launch_s": 20.0, "teardown_s": 6.5},
                            {"id": "g01", "launch_s": 20.0, "teardown_s": 6.5}]
    account(index, wall_s=48.0, measure_s=50.0)
    t = json.loads((tmp_path / "index.json").read_text())["timing"]
    assert t["server_overhead_s"] == pytest.approx(53.0) and t["group_s"] == pytest.approx(103.0)
    assert 0 < t["overhead_share"] < 1 and t["overhead_share"] == pytest.approx(53 / 103)
    buf = io.StringIO()
    out.finish(index, tmp_path, "sweep", False, Console(file=buf, width=300))
    line = buf.getvalue()
    assert "server start/stop 53 s = 51.5% of the groups' 103 s (start/stop + load; 48 s wall; groups ran side by side)" in line
    assert "111" not in line


def _full_run(tmp_path: Path, size: str) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """A run (telemetry on: the emulator's /metrics are scraped) into a tmpfs of `size`."""
    from servebench.emulator import start_emulator

    env = {**os.environ, "SERVEBENCH_RESCUE_DIR": str(tmp_path / "rescue")}
    with start_emulator("openai", ttft_ms=5, itl_ms=1) as emu:
        p = _in_mount(f"size={size}", tmp_path / "mnt", tmp_path / "after", [
            sys.executable, "-m", "servebench.cli", "run", "--endpoint", emu.url, "--model", "tiny",
            "--input-tokens", "16", "--warmup", "0", "--requests", "5", "--output-tokens", "30",
            "--results-dir", str(tmp_path / "mnt")], env)
    assert p.returncode != 99, "tmpfs mount failed: " + p.stderr
    dirs = [d for d in (tmp_path / "after").iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return p, dirs[0], env


@pytest.mark.parametrize("size", ["4k", "12k"])
def test_a_full_disk_leaves_no_empty_samples_file(tmp_path, size):
    p, run_dir, _ = _full_run(tmp_path, size)
    assert p.returncode == 3, p.stderr
    assert "server_metrics samples" in one_error(p)  # the samples were among what the disk refused
    empty = [f.name for f in run_dir.iterdir() if f.stat().st_size == 0]
    assert not empty, empty
    assert not (run_dir / "server_metrics.parquet").exists()


def test_report_of_a_run_dir_whose_records_were_rescued_points_there(tmp_path):
    p, run_dir, env = _full_run(tmp_path, "4k")
    assert p.returncode == 3 and "records rescued to" in p.stderr, p.stderr
    kept = tmp_path / "rescue" / run_dir.name
    assert (kept / "requests.parquet").is_file() and not (run_dir / "requests.parquet").exists()
    rep = subprocess.run([sys.executable, "-m", "servebench.cli", "report", str(run_dir)], capture_output=True,
                         text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert rep.returncode == 1, rep.stderr
    err = one_error(rep)
    assert f"records were rescued to {kept / 'requests.parquet'}" in err
    assert f"servebench report --rebuild {kept}" in err
