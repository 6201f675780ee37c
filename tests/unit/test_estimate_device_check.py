"""scripts/device_estimate_check.py without a GPU: the comparison with the estimate is tested
with fake measurements on catalog GPUs, the run itself on this host's CPU with `tiny`."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from servebench.estimate import catalog, fit, models
from servebench.estimate.roofline import Deployment, decode_step

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mod():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("device_estimate_check", ROOT / "scripts/device_estimate_check.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def test_judge_compares_a_measurement_with_the_estimate_and_its_band(mod):
    hw = catalog.lookup("h200")
    shape = models.load("llama-2-7b")
    cal = fit.published(hw)
    est = decode_step(Deployment(shape, hw), 8, 512, cal.factors.with_(step_ms=0.0))["s"] * 1e3
    sigma = cal.sigma_for(hw)
    on = mod.judge(shape, hw, 8, 512, est * 1.25, cal)
    assert on["estimate_ms"] == pytest.approx(est)
    assert on["estimate_vs_measured"] == pytest.approx(1 / 1.25 - 1)
    assert on["inside_band"] is (math.log(1.25) <= sigma)
    far = mod.judge(shape, hw, 8, 512, est * math.exp(sigma) * 1.01, cal)  # just past the band's top
    assert far["inside_band"] is False
    assert far["estimate_band_ms"] == pytest.approx([est * math.exp(-sigma), est * math.exp(sigma)])
    # the estimate is the CLI's: published factors for the GPU's family, not the defaults
    assert on["estimate_basis"].startswith("published")


def test_without_cuda_it_says_the_gpu_was_not_compared(mod, monkeypatch):
    monkeypatch.setattr(mod.torch.cuda, "is_available", lambda: False)
    dev, why = mod.pick_device("auto")
    assert dev == "cpu" and "NOT compared" in why
    with pytest.raises(SystemExit, match="^error: "):
        mod.pick_device("cuda")
    monkeypatch.setattr(mod.torch.cuda, "is_available", lambda: True)
    assert mod.pick_device("auto") == ("cuda", None)


def test_summary_counts_points_inside(mod):
    pts = [{"estimate_vs_measured": e, "inside_band": i} for e, i in ((0.1, True), (-0.5, False), (0.3, True))]
    assert mod.summarize(pts) == {"median_abs_estimate_error": 0.3, "inside_band": 2, "points": 3}
    assert mod.summarize([])["median_abs_estimate_error"] is None


def test_cpu_run_writes_the_comparison(mod, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mod.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("sys.argv", ["x", "--models", "tiny", "--batches", "1", "--steps", "2", "--ctx", "32",
                                     "--out", str(tmp_path)])
    assert mod.main() == 0
    out = json.loads((tmp_path / "device_estimate_check.json").read_text())
    assert out["gpu_compared"] is False and "NOT compared" in out["not_compared_why"]
    (p,) = out["points"]
    assert p["batch"] == 1 and p["eager_ms"] > 0 and p["estimate_ms"] > 0
    assert p["estimate_vs_measured"] == pytest.approx(p["estimate_ms"] / p["eager_ms"] - 1)
    assert out["summary"]["points"] == 1
    assert "no GPU compared" in capsys.readouterr().out
