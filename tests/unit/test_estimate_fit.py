"""Efficiency of measured runs, calibration, and validation against published measurements.

The published rows (servebench/estimate/data/published.json) are the seed study's
(TGI 1.0.3 on A10G / A100-40GB), FasterTransformer's 13B on A100-40GB, and TensorRT-LLM's
H200 launch figures. The error bounds asserted here are the ones docs/estimate.md states.
"""

from __future__ import annotations

import functools
import math

import pytest

from servebench.estimate import catalog, fit, models, published
from servebench.estimate.efficiency import Observation, efficiency, of_observation
from servebench.estimate.roofline import Factors


def _sagemaker_run(model: str, instance: str, users: int) -> dict:
    return {"model": model, "engine": {"name": "tgi"},
            "config": {"backend": "tgi", "model": model, "launcher": "sagemaker", "server_args": [],
                       "launcher_options": {"instance_type": instance}, "load": {"concurrency": users},
                       "workload": {"input_tokens": 256, "output_tokens": 50}}}


def _summary(ms_per_token: float, tok_s: float, users: int) -> dict:
    # the study publishes medians; a run dir has both statistics, efficiency reads the mean
    return {"completed": 100, "ms_per_token": {"p50": ms_per_token, "mean": ms_per_token}, "output_token_throughput": tok_s,
            "input_tokens": {"requested_mean": 256.0}, "output_tokens": {"achieved_mean": 50.0},
            "concurrency": {"target": users, "mean_in_flight": float(users)}}


@pytest.mark.parametrize("model,instance,ms,tok_s,lo,hi", [
    ("llama-2-7b", "ml.g5.12xlarge", 16.81, 61.46, 0.33, 0.36),
    ("llama-2-13b", "ml.g5.12xlarge", 21.00, 47.16, 0.51, 0.55),
    ("llama-2-70b", "ml.p4d.24xlarge", 41.35, 24.51, 0.26, 0.28),
])
def test_seed_study_batch1_rows_are_027_to_052_of_the_floor(model, instance, ms, tok_s, lo, hi):
    """hardware.md: the seed study's batch-1 rows reach 0.27-0.52 of the memory floor. Ours
    includes the prefill of a 256-token prompt in the floor, hence 13B at 0.54, not 0.52."""
    name, cfg = models.find_config(model)
    r = efficiency(_sagemaker_run(name, instance, 1), _summary(ms, tok_s, 1), cfg, catalog.instance(instance)[0])
    assert r["available"] and r["hardware"]["gpus"] == (4 if "g5" in instance else 8)
    assert r["floor"]["decode_bound"] == "memory"
    assert lo <= r["efficiency"]["end_to_end"] <= hi
    # decode-only check by hand: weights read per GPU / bandwidth vs the published ms/token;
    # within 10 %: the floor also holds the prefill and the all-reduces' transfer time, which
    # on A10G (no peer access: staged through host memory) is ~8 % of the 7B step
    m = models.shape(cfg)
    hw, tp = catalog.instance(instance)
    assert m.decode_weight_bytes() / tp / (hw.bandwidth_gbs * 1e9) * 1e3 / ms == pytest.approx(
        r["efficiency"]["end_to_end"], rel=0.10)


def test_efficiency_reports_unavailable_without_completed_requests():
    name, cfg = models.find_config("llama-2-7b")
    s = _summary(16.8, 61.0, 1) | {"completed": 0}
    assert efficiency(_sagemaker_run(name, "ml.g5.12xlarge", 1), s, cfg, "a10g")["available"] is False


def _synthetic(truth: Factors) -> list[Observation]:
    out = []
    for model, hw, tp in (("llama-2-7b", "a100-80gb", 1), ("llama-2-13b", "a100-80gb", 2),
                          ("llama-2-70b", "a100-80gb", 4), ("llama-2-7b", "a100-80gb", 4)):
        for c in (1, 16, 64):
            o = Observation(label=f"{model} tp{tp} c{c}", model=models.load(model), hw=catalog.lookup(hw), tp=tp,
                            concurrency=c, n_in=512, n_out=128, measured={})
            p = o.predict(truth)
            o.measured = {k: p[k] for k in ("ttft_ms", "tpot_ms", "output_tok_s")}
            out.append(o)
    return out


TRUTH = Factors(eta_mem=0.45, eta_compute=0.35, step_ms=4.0, alpha_us=40.0, eta_link=0.5)


@functools.cache
def _calibrated() -> fit.Calibration:
    """One calibration on the synthetic runs for both tests that read one: each fit with its
    leave-one-out refits takes minutes on 2 cores (the suite's time budget)."""
    return fit.calibrate(_synthetic(TRUTH))


def test_calibration_recovers_known_factors_and_loo_error_is_small():
    cal = _calibrated()
    f = cal.factors
    # the efficiencies are pinned by the data; step overhead and collective latency both add
    # time per step and trade against each other, so only their effect is checked (errors)
    assert f.eta_mem == pytest.approx(0.45, rel=0.1)
    assert f.eta_compute == pytest.approx(0.35, rel=0.1)
    assert "alpha_us" in cal.fitted and "eta_link" in cal.fitted
    assert max(abs(e) for r in cal.residuals for e in r["errors"].values()) < 0.1
    # 0.06, not 0.05: the per-sequence cost is fitted too (batches 1-64), one more factor
    # that trades with the step overhead and the compute per token when a run is left out;
    # 0.075, not 0.06: with three or more runs measuring TTFT, req_ms and fe_ms have no prior
    # (fit.NO_PRIOR_FROM), and here req_ms takes ~4 ms of TTFT that the step overhead and the
    # collective latency, trading against each other, leave (5.5 % -> 7.0 %)
    assert cal.summary()["loo_mape"] < 0.075
    # the band is the widest of the 36 held-out misses (0.24; their RMS, the band before: 0.09)
    assert cal.sigma < 0.3


def test_bands_widen_for_unmeasured_hardware_and_engines():
    cal = _calibrated()
    assert cal.hardware == [catalog.lookup("a100-80gb").key] and cal.n_runs == 12
    same = cal.sigma_for(catalog.lookup("a100-80gb"), "vllm")
    assert cal.sigma_for(catalog.lookup("a800"), "vllm") > same  # same architecture
    assert cal.sigma_for(catalog.lookup("h200"), "vllm") > cal.sigma_for(catalog.lookup("a800"), "vllm")
    assert cal.sigma_for(catalog.lookup("a100-80gb"), "tgi") > same
    assert fit.uncalibrated().sigma == fit.DEFAULT_SIGMA


def _mape(cal_obs, test_obs):
    f = fit.calibrate(cal_obs).factors if cal_obs else Factors()
    errs = [abs(e) for o in test_obs for e in fit.errors(o, f).values()]
    return sum(errs) / len(errs)


def test_published_seed_study_leave_one_out():
    """Within the seed study (TGI 1.0.3): each of the 9 rows predicted from the other 8."""
    cal = fit.calibrate(published.observations("seed-study"))
    s = cal.summary()
    # docs/estimate.md: 26% before issue 19; 32% with the staged A10G link alone (A10G's
    # all-reduces go through host memory, p4d's NVLink ones do not, while TGI's slowness at
    # TP4/TP8 is about the same on both links); 25% with the int4 kernel factor eta_w4 as well
    assert s["loo_mape"] < 0.30
    assert 0.4 < s["factors"]["eta_mem"] < 0.7  # docs: 0.61


def test_published_calibrate_a10g_rows_predict_a100_rows():
    ss = published.observations("seed-study")
    a10g = [o for o in ss if o.hw.key == "a10g"]
    p4d = [o for o in ss if o.hw.key == "a100-40gb-sxm"]
    assert len(a10g) == 6 and len(p4d) == 3
    # docs: 30% before issue 19, driven by the 13B/20-user row whose two figures disagree; 36%
    # with the staged A10G link (see above) and 41% with eta_w4 fitted too: the A10G rows'
    # GPTQ slowness no longer lowers eta_mem, and p4d's fp16 rows wanted that lower eta_mem
    assert _mape(a10g, p4d) < 0.43
    assert _mape(p4d, a10g) < 0.38  # docs: 33%


def test_published_same_engine_beats_another_engines_calibration():
    ft, trt, ss = (published.observations(n) for n in ("fastertransformer", "trtllm-h200", "seed-study"))
    assert _mape(ft[:1], ft[1:]) < 0.15  # FT TP1 -> TP2: docs 11%
    assert _mape(ss, ft) > 2 * _mape(ft[:1], ft[1:])  # TGI's factors do not transfer to FasterTransformer
    assert _mape(trt, trt) < 0.35


def test_published_uncalibrated_spread_is_the_default_sigma():
    allobs = [o for n in published.set_names() for o in published.observations(n)]
    logs = [math.log1p(e) for o in allobs for e in fit.errors(o, Factors()).values()]
    rms = math.sqrt(sum(x * x for x in logs) / len(logs))
    # 0.57 before issue 19's link model, 0.53 since: the default stays 0.6, never narrower than the data
    assert fit.DEFAULT_SIGMA - 0.1 <= rms <= fit.DEFAULT_SIGMA + 0.05


def test_of_observation_flags_impossible_floors():
    """An efficiency above 1 would mean faster than the hardware allows: the TensorRT-LLM H200
    rows only stay below 1 with their FP8 KV cache, which the data set records."""
    for o in published.observations("trtllm-h200"):
        assert of_observation(o)["efficiency"]["throughput"] < 1.0


def test_an_observation_predicts_anew_when_its_inputs_change():
    """predict keeps the deployment and KV capacity between calls (a fit makes ~10^5): a
    changed input must not be answered from them (holdout.held sets `hw` after loading)."""
    def obs(hw: str, n_in: float = 512) -> Observation:
        return Observation(label="x", model=models.load("llama-2-13b"), hw=catalog.lookup(hw), tp=1, concurrency=64,
                           n_in=n_in, n_out=128, measured={})

    f = Factors()
    o = obs("a10g")
    assert o.predict(f) == obs("a10g").predict(f) and not o.predict(f)["fits"]  # 26 GB of fp16 on 24 GB
    o.hw = catalog.lookup("h100-sxm")
    assert o.predict(f) == obs("h100-sxm").predict(f) and o.predict(f)["fits"]
    o.n_in = 3000
    assert o.predict(f) == obs("h100-sxm", 3000).predict(f) != obs("h100-sxm").predict(f)
    o.batch_cap = 8
    assert o.predict(f)["batch"] == 8
