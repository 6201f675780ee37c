"""Leave-one-run-out check (servebench/estimate/holdout.py, scripts/estimate_cpu_check.py) on
the recorded real vLLM CPU runs of tests/fixtures/estimate_cpu (host figures recorded too, so
nothing here depends on this host's speed)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

from servebench.estimate import fit, holdout

from .test_estimate_cpu_validation import FIX, _host

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("estimate_cpu_check", ROOT / "scripts/estimate_cpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _held(preset="tiny"):
    return [holdout.held(d, hw=_host()) for d in sorted(FIX.glob(f"*-{preset}-c*"))]


def test_held_reads_the_runs_load_and_means():
    hs = _held()
    assert [(h.load, h.level) for h in hs] == [("closed", 1.0), ("closed", 8.0)]
    summary = json.loads((hs[1].run_dir / "summary.json").read_text())
    assert hs[1].obs.measured["ttft_ms"] == summary["ttft_ms"]["mean"]
    assert hs[1].name == "closed 8"


def test_each_run_is_predicted_by_a_fit_on_the_others_only():
    hs = _held()
    res = holdout.leave_one_out(hs)
    assert [r["run"] for r in res] == [h.run_dir.name for h in hs]
    # the held-out prediction is what the estimate gives when calibrated on the other run alone
    other = fit.calibrate([hs[1].obs])
    direct = holdout.prediction(hs[0], other)["row"]
    c = res[0]["calibrated"]
    assert c["ttft_ms"]["predicted"] == pytest.approx(direct["ttft_ms"])
    assert c["tpot_ms"]["predicted"] == pytest.approx(direct["tpot_ms"])
    for r in res:
        for kind in ("calibrated", "uncalibrated"):
            for m, x in r[kind].items():
                lo, hi = x["band"]
                assert x["inside"] == (lo <= x["measured"] <= hi)
                assert x["error"] == pytest.approx(x["predicted"] / x["measured"] - 1)
                # the band is the CLI's: the prediction times exp(+-sigma)
                assert hi / x["predicted"] == pytest.approx(math.exp(r["sigma_log"][kind]))


def test_calibration_on_the_other_tiny_run_beats_the_published_factors_on_tpot():
    """The recorded tiny runs' CPU step (~12 ms) is far from the GPU-fitted factors' ~1-3 ms:
    calibrating on the other run must be nearer, per held-out run."""
    res = holdout.leave_one_out(_held())
    for r in res:
        assert abs(r["calibrated"]["tpot_ms"]["error"]) < abs(r["uncalibrated"]["tpot_ms"]["error"])
    s = holdout.summarize(res)
    assert s["calibrated"]["figures"] == s["uncalibrated"]["figures"] == 4
    assert s["calibrated"]["median_abs_error_all"] < s["uncalibrated"]["median_abs_error_all"]


def test_one_run_cannot_be_left_out():
    with pytest.raises(ValueError, match="at least 2"):
        holdout.leave_one_out(_held()[:1])


def test_table_has_one_row_per_run_and_metric():
    lines = holdout.table(holdout.leave_one_out(_held()))
    assert len(lines) == 2 + 4
    assert lines[2].startswith("| closed 1 | TTFT ms |") and lines[5].startswith("| closed 8 | TPOT ms |")


def test_script_rejects_remote_endpoint_and_missing_runs(tmp_path, capsys):
    mod = _script()
    import sys

    argv = sys.argv
    try:
        sys.argv = ["x", "--endpoint", "http://10.0.0.1:8000"]
        assert mod.main() == 2
        assert capsys.readouterr().err.startswith("error: ")
        sys.argv = ["x", "--runs", str(tmp_path)]  # an empty directory: nothing to leave out
        assert mod.main() == 1
        assert capsys.readouterr().err.startswith("error: ")
    finally:
        sys.argv = argv


def test_script_writes_its_block_into_the_docs(tmp_path, monkeypatch):
    mod = _script()
    runs = tmp_path / "runs"
    for d in sorted(FIX.glob("*-tiny-c*")):
        shutil.copytree(d, runs / d.name)
    doc = tmp_path / "docs" / "estimate.md"
    doc.parent.mkdir()
    doc.write_text(f"before\n{mod.START}\nold\n{mod.END}\nafter\n")
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    monkeypatch.setattr(mod, "published_gain", lambda: ["| published |"])
    real = holdout.held
    monkeypatch.setattr(holdout, "held", lambda d, hw_override=None, hw=None: real(d, hw=_host()))
    monkeypatch.setattr("sys.argv", ["x", "--runs", str(runs), "--write", "--json", str(tmp_path / "r.json")])
    assert mod.main() == 0
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| closed 8 | TPOT ms |" in text and "| published |" in text and "shared and busy" in text
    assert len(json.loads((tmp_path / "r.json").read_text())) == 2
