"""report / recommend / cost on damaged or foreign files (issue 20): one line naming the file,
never a traceback, never a line about another file, and never a run's own file overwritten."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "tests/fixtures/decide/sweep"
RUN = ROOT / "results/reference/20261121-075723-burst-1000x512-tiny"


def sb(*args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servebench.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_error(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("text,needle", [
    ("[]", "a JSON object is needed, not list"),
    ('{"cells": null}', "'cells' must be a list of objects with an id, got null"),
    ('{"cells": [1]}', "'cells' must be a list of objects with an id"),
    ('{"groups": [null], "cells": [{"id": "x"}]}', "'groups' must be a list of objects"),
    ("not json {", "Expecting value"),
])
@pytest.mark.parametrize("cmd", ["report", "recommend", "cost"])
def test_an_index_of_the_wrong_shape_is_named(tmp_path, text, needle, cmd):
    (tmp_path / "index.json").write_text(text)
    p = sb(cmd, tmp_path)
    assert p.returncode == 1, p.stderr
    err = one_error(p)
    assert f"{tmp_path / 'index.json'}" in err and needle in err, err
    assert "summary.json" not in err  # it used to blame a file a sweep never has


def test_a_half_written_sweep_says_the_cell_was_not_finished(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(SWEEP, sweep)
    idx = json.loads((sweep / "index.json").read_text())
    cell = idx["cells"][0]
    cell["status"], cell["error"] = "running", None  # the sweep died before marking it done
    (sweep / "index.json").write_text(json.dumps(idx))
    done = json.loads((sweep / cell["run_dir"] / "summary.json").read_text())["completed"]
    assert done > 0
    p = sb("recommend", sweep)
    assert p.returncode == 0, p.stderr
    out = " ".join(p.stdout.split())
    assert "running: no completed request" not in out
    assert f"running: the sweep did not finish this cell (sweep --resume runs it); its run dir holds {done} completed" in out


@pytest.fixture()
def run_copy(tmp_path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(RUN, d)
    return d


def test_html_report_of_a_truncated_parquet_writes_the_rest_and_names_the_loss(tmp_path, run_copy):
    p = run_copy / "requests.parquet"
    p.write_bytes(p.read_bytes()[:3000])
    out = tmp_path / "r.html"
    rep = sb("report", run_copy, "--format", "html", "-o", out)
    assert rep.returncode == 1, rep.stderr
    err = one_error(rep)
    assert f"{p}: unreadable" in err and "the raw records are lost" in err
    assert "raw records are lost" in out.read_text()  # the report itself says so too


def test_md_report_of_a_summary_that_is_a_list_is_one_line(run_copy):
    (run_copy / "summary.json").write_text("[]")
    rep = sb("report", run_copy, "--format", "md")
    assert rep.returncode == 1, rep.stderr
    err = one_error(rep)
    assert f"{run_copy / 'summary.json'}" in err and "JSON object is needed" in err and "--rebuild" in err


@pytest.mark.parametrize("name,fmt", [("summary.json", "html"), ("run.json", "md"), ("requests.parquet", "csv")])
def test_report_refuses_to_overwrite_a_runs_own_files(run_copy, name, fmt):
    before = (run_copy / name).read_bytes()
    rep = sb("report", run_copy, "--format", fmt, "-o", run_copy / name)
    assert rep.returncode == 2, rep.stderr
    assert "is a results file of the run" in one_error(rep)
    assert (run_copy / name).read_bytes() == before


def test_report_may_still_write_beside_a_run(run_copy):
    rep = sb("report", run_copy, "--format", "md", "-o", run_copy / "report.md")
    assert rep.returncode == 0, rep.stderr
    assert (run_copy / "report.md").read_text().startswith("#")
