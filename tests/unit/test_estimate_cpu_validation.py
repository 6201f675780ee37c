"""Calibrate on real vLLM CPU runs of `tiny`, predict real runs of `small` (recorded here).

tests/fixtures/estimate_cpu/ holds run.json + summary.json of four real `servebench run`
runs on this 2-core VM (vLLM CPU 0.32.0, 20 requests, 256 in / 64 out, concurrency 1 and 8),
the host measurement the estimate used, and the prediction for `small` that `servebench
estimate` printed from the two tiny runs before the small runs were made. docs/estimate.md
states the errors asserted here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from servebench.estimate import fit, models
from servebench.estimate.catalog import Hardware
from servebench.estimate.efficiency import observation

FIX = Path(__file__).parents[1] / "fixtures" / "estimate_cpu"


def _host() -> Hardware:
    f = json.loads((FIX / "host_hardware.json").read_text())
    peak = max(f["bf16_gflops"], f["fp32_gflops"]) / 1e3
    return Hardware(key="cpu", label="CPU (recorded)", arch="cpu", memory_gib=23.5, bandwidth_gbs=f["bandwidth_gbs"],
                    bf16_tflops=peak, fp16_tflops=peak, fp32_tflops=peak, interconnect="none", link_gbs=0.0, alpha_us=0.0)


def _obs(preset: str):
    out = []
    for d in sorted(FIX.glob(f"*-{preset}-c*")):
        run = json.loads((d / "run.json").read_text())
        summary = json.loads((d / "summary.json").read_text())
        out.append(observation(run, summary, models.find_config(preset)[1], _host(), label=d.name))
    return out


def test_the_recorded_runs_are_what_the_docs_say():
    tiny, small = _obs("tiny"), _obs("small")
    assert [o.concurrency > 0 for o in tiny + small] == [True] * 4
    assert {(o.n_in, o.n_out) for o in tiny + small} == {(256.0, 64.0)}
    assert all(o.engine == "vllm" and o.schedule == "mixed" for o in tiny + small)


def test_tiny_calibration_predicts_small():
    """docs/estimate.md: mean abs error 31% over the 8 predicted figures, 7 of 8 inside the band
    when it was one sigma of 0.6 (the miss: TPOT at concurrency 8, under-predicted ~2.5x); the
    band is now the two runs' widest leave-one-out miss (x0.19-x5.1) and holds all 8."""
    cal = fit.calibrate(_obs("tiny"))
    sigma = cal.sigma_for(_host(), "vllm")
    errors = [e for o in _obs("small") for e in fit.errors(o, cal.factors).values()]
    assert len(errors) == 8
    assert sum(map(abs, errors)) / len(errors) < 0.35
    assert sum(abs(math.log1p(e)) <= sigma for e in errors) >= 7


def test_lockstep_model_beats_the_prediction_made_before_measuring():
    """The prediction file was written by `servebench estimate` from the two tiny runs before
    the small runs existed, with the model of that moment (prompts spread over decode steps).
    The small runs showed fixed-length closed loops move in waves (all prompts of a wave
    prefill together: TTFT 14 s at concurrency 8); the lockstep regime added for that must
    predict the measured runs better than the recorded prediction did."""
    from servebench.estimate.roofline import Deployment, serve

    pred = json.loads((FIX / "prediction_small_before_measuring.json").read_text())
    cal = fit.calibrate(_obs("tiny"))
    d = Deployment(models.load("small"), _host(), 1, max_num_seqs=128)
    small = {1 if o.concurrency < 2 else 8: o for o in _obs("small")}
    before, now = [], []
    for level in pred["levels"]:
        o = small[level["concurrency"]]
        p = serve(d, level["concurrency"], 256, 64, cal.factors, lockstep=True)
        for m in ("ttft_ms", "tpot_ms", "output_tok_s"):
            before.append(abs(level[m] / o.measured[m] - 1))
            now.append(abs(p[m] / o.measured[m] - 1))
    assert sum(now) < 0.6 * sum(before)
