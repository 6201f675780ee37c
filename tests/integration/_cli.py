"""Helpers to drive the real `servebench` CLI and read what a run stored."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

CLI_TIMEOUT_S = 600


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def run_dir(self) -> Path:
        lines = self.stdout.strip().splitlines()
        assert lines, f"no stdout; stderr:\n{self.stderr[-3000:]}"
        return Path(lines[-1])

    def expect_ok(self) -> Path:
        assert self.rc == 0, f"servebench run failed (rc={self.rc}):\n{self.stderr[-3000:]}"
        return self.run_dir


def servebench(*args: str, cwd: Path, timeout: float = CLI_TIMEOUT_S) -> CliResult:
    """The real CLI in a child process, as a user runs it (no in-process shortcuts)."""
    p = subprocess.run([sys.executable, "-m", "servebench.cli", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return CliResult(p.returncode, p.stdout, p.stderr)


def prom_counter(base_url: str, name: str) -> float:
    """Sum of a Prometheus counter over its label sets, read straight from /metrics."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    pat = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", re.M)
    values = [float(v) for v in pat.findall(text)]
    assert values, f"{name} not in {base_url}/metrics"
    return sum(values)


def load_run(run_dir: Path) -> tuple[dict, dict, pd.DataFrame]:
    for f in ("run.json", "summary.json", "requests.parquet"):
        assert (run_dir / f).is_file(), f"{f} missing in {run_dir}"
    run = json.loads((run_dir / "run.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    return run, summary, pd.read_parquet(run_dir / "requests.parquet")


def assert_one_line_error(res: CliResult, pattern: str) -> None:
    assert res.rc != 0
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert re.search(pattern, errors[0]), errors[0]
