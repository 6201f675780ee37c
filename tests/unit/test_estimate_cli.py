"""`servebench estimate` end to end (CliRunner), run-directory efficiency, the host cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from servebench.cli import main
from servebench.estimate import efficiency, hostbw

# The committed single run (not the reference sweep beside it): a burst on the tiny model.
REF = Path(__file__).parents[2] / "results" / "reference" / "20261121-075723-burst-1000x512-tiny"


def _run(*args):
    return CliRunner().invoke(main, ["estimate", *args], catch_exceptions=False)


def test_estimate_json_has_every_level_band_and_cost():
    r = _run("--model", "meta-llama/Llama-2-13b-hf", "--gpu", "a800-80gb-sxm", "--gpus", "8",
             "--concurrency", "1,5,10,20", "--price", "2.10", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["estimate"] is True and out["fits"] and out["gpus"] == 8
    assert [x["concurrency"] for x in out["levels"]] == [1, 5, 10, 20]
    for x in out["levels"]:
        lo, hi = x["tpot_ms_band"]
        assert lo < x["tpot_ms"] < hi
        assert x["usd_per_1m_output_tokens"] == pytest.approx(2.10 / (x["output_tok_s"] * 3600) * 1e6)
    tput = [x["output_tok_s"] for x in out["levels"]]
    assert tput == sorted(tput)


def test_estimate_70b_fp16_on_one_24gb_card_says_does_not_fit():
    r = _run("--model", "llama-2-70b", "--gpu", "rtx4090", "--gpus", "1")
    assert r.exit_code == 0
    assert "does not fit" in r.output and "128.5 GiB" in r.output and "21.6 GiB usable" in r.output
    assert "ESTIMATE" in r.output


def test_estimate_bad_input_is_one_line_error():
    r = _run("--model", "llama-2-7b", "--gpu", "tpu-v9")
    assert r.exit_code == 2 and "error: unknown GPU 'tpu-v9'" in r.output
    r = _run("--model", "nope-7b", "--gpu", "a10g")
    assert r.exit_code == 2 and "error: unknown model" in r.output
    r = _run("--model", "llama-2-7b", "--gpu", "a10g", "--calibrate", "/nonexistent/dir")
    assert r.exit_code == 1 and "error: not a run or sweep directory" in r.output


def _gpu_run_dir(tmp_path: Path, name: str, concurrency: int, gpu: str = "NVIDIA A10G") -> Path:
    """A copy of the reference run's files, relabelled as a run on a GPU (so no host
    measurement is involved) at one concurrency."""
    d = tmp_path / name
    d.mkdir()
    run = json.loads((REF / "run.json").read_text())
    run["host"]["gpus"] = [{"gpu": 0, "name": gpu}]
    run["config"]["load"]["concurrency"] = concurrency
    (d / "run.json").write_text(json.dumps(run))
    shutil.copy(REF / "summary.json", d / "summary.json")
    return d


def test_run_dir_efficiency_from_nvml_name(tmp_path):
    r = efficiency.run_efficiency(_gpu_run_dir(tmp_path, "a", 4))
    assert r["available"], r
    assert r["hardware"]["key"] == "a10g" and r["model"]["name"] == "tiny"
    for v in r["efficiency"].values():
        assert 0 < v < 1  # a 0.7M-parameter model on a GPU is nowhere near the floor
    assert "of the floor" in r["headline"]


def test_run_dir_efficiency_explains_unknown_hardware(tmp_path):
    d = _gpu_run_dir(tmp_path, "b", 4, gpu="Some Future GPU")
    r = efficiency.run_efficiency(d)
    assert r["available"] is False and "unknown GPU" in r["reason"]


def test_sweep_dir_expands_to_done_cells(tmp_path):
    sweep = tmp_path / "sw"
    (sweep / "runs").mkdir(parents=True)
    _gpu_run_dir(sweep / "runs", "g00-c001-r0", 1)
    _gpu_run_dir(sweep / "runs", "g00-c004-r0", 4)
    cells = [{"id": "g00-c001-r0", "status": "done", "run_dir": "runs/g00-c001-r0"},
             {"id": "g00-c004-r0", "status": "done", "run_dir": "runs/g00-c004-r0"},
             {"id": "g00-c016-r0", "status": "failed", "run_dir": "runs/g00-c016-r0"}]
    (sweep / "index.json").write_text(json.dumps({"schema_version": 1, "kind": "sweep", "cells": cells}))
    dirs = efficiency.expand_dirs([sweep])
    assert [p.name for p in dirs] == ["g00-c001-r0", "g00-c004-r0"]
    r = _run("--model", "small", "--gpu", "a10g", "--calibrate", str(sweep), "--json", "--concurrency", "1,4")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    cal = out["calibration"]
    assert cal["runs"] == 2 and cal["hardware"] == ["a10g"] and len(cal["loo"]) == 2
    assert out["transfer"] == "same"


def test_host_cache_is_reused_and_keyed_by_host(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEBENCH_HOME", str(tmp_path))
    facts = {"version": hostbw.CACHE_VERSION, "host": hostbw.host_key(), "measured_at": "t",
             "bandwidth_gbs": 12.5, "fp32_gflops": 40.0, "bf16_gflops": 4.0, "how": {}}
    hostbw.cache_path().parent.mkdir(parents=True, exist_ok=True)
    hostbw.cache_path().write_text(json.dumps(facts))
    hw = hostbw.host_hardware()
    assert hw.bandwidth_gbs == 12.5 and hw.arch == "cpu"
    # the floor uses the fastest dtype this host reached (an engine may upcast)
    assert hw.peak_flops("fp16") == pytest.approx(40e9) and hw.peak_flops("fp32") == pytest.approx(40e9)


def test_copy_benchmark_measures_something_plausible():
    gbs = hostbw.measure_copy_gbs(mib=16, repeats=2)
    assert 0.1 < gbs < 2000


def test_report_shows_the_efficiency_line(tmp_path):
    from rich.console import Console

    from servebench.outputs import console as report

    d = _gpu_run_dir(tmp_path, "r", 4)
    console = Console(record=True, width=200)
    report.render(d, console)
    text = console.export_text()
    assert "efficiency vs the 1x A10G (AWS g5) floor: of the floor: decode" in text
    # a run whose hardware cannot be placed says why, and the rest of the report is intact
    d2 = _gpu_run_dir(tmp_path, "r2", 4, gpu="Mystery GPU")
    console = Console(record=True, width=200)
    report.render(d2, console)
    text = console.export_text()
    assert "efficiency: unavailable (" in text and "unknown GPU 'Mystery GPU'" in text and "Latency (ms)" in text
