"""Per-sequence step cost (Factors.seq_ms): the decode step grows by seq_ms per running
sequence. Fitted from synthetic runs it recovers the value that made them; on this host's
recorded vLLM CPU runs (tests/fixtures/estimate_cpu/loads, host figures recorded with them)
it improves the held-out TPOT at 1 user and in the 64-request burst."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servebench.estimate import catalog, fit, holdout, models
from servebench.estimate.efficiency import Observation
from servebench.estimate.hardware import Hardware
from servebench.estimate.roofline import Deployment, Factors, decode_step

LOADS = Path(__file__).resolve().parents[1] / "fixtures/estimate_cpu/loads"


def test_decode_step_grows_by_seq_ms_per_sequence():
    d = Deployment(models.load("llama-2-7b"), catalog.lookup("a100-80gb"))
    a, b = (decode_step(d, n, 512, Factors(seq_ms=0.5))["s"] - decode_step(d, n, 512, Factors(seq_ms=0.0))["s"]
            for n in (1, 32))
    assert a == pytest.approx(0.5e-3) and b == pytest.approx(32 * 0.5e-3)
    assert Factors.speed_of_light().seq_ms == 0.0


def _synthetic(truth: Factors) -> list[Observation]:
    out = []
    for model, c in ((m, c) for m in ("llama-2-7b", "llama-2-13b") for c in (1, 4, 16, 64)):
        o = Observation(label=f"{model} c{c}", model=models.load(model), hw=catalog.lookup("a100-80gb"), tp=1,
                        concurrency=c, n_in=256, n_out=64, measured={}, lockstep=True)
        p = o.predict(truth)
        o.measured = {k: p[k] for k in ("ttft_ms", "tpot_ms", "output_tok_s")}
        out.append(o)
    return out


def test_fit_recovers_a_known_per_sequence_cost():
    # efficiencies near their priors (few synthetic runs: the prior would pull them); the
    # per-sequence cost 20x its prior, which only the spread of batch sizes can reveal
    truth = Factors(eta_mem=0.6, eta_compute=0.5, step_ms=1.5, seq_ms=0.2)
    cal = fit.calibrate(_synthetic(truth))
    assert "seq_ms" in cal.fitted
    assert cal.factors.seq_ms == pytest.approx(0.2, rel=0.15)
    assert max(abs(e) for r in cal.residuals for e in r["errors"].values()) < 0.05


def test_one_batch_size_leaves_seq_ms_at_its_prior():
    obs = [o for o in _synthetic(Factors(seq_ms=0.2)) if o.concurrency == 16]
    assert "seq_ms" not in fit.calibrate(obs).fitted


def _host(d: Path) -> Hardware:
    f = json.loads((d / "host_hardware.json").read_text())
    peak = max(f["bf16_gflops"], f["fp32_gflops"]) / 1e3
    return Hardware(key="cpu", label="CPU (recorded)", arch="cpu", memory_gib=23.5, bandwidth_gbs=f["bandwidth_gbs"],
                    bf16_tflops=peak, fp16_tflops=peak, fp32_tflops=peak, interconnect="none", link_gbs=0.0, alpha_us=0.0)


def _tpot_errors(heldruns, no_seq: bool) -> dict:
    """Held-out |TPOT error| per load, calibrated on the other runs; no_seq: the model before
    the per-sequence term (seq_ms 0, never fitted)."""
    out = {}
    for i, h in enumerate(heldruns):
        rest = [x.obs for j, x in enumerate(heldruns) if j != i]
        cal = fit.calibrate(rest)
        if no_seq:
            cal.factors = fit.fit(rest, Factors(seq_ms=0.0), ["eta_mem", "eta_compute", "step_ms"])
        row = holdout.prediction(h, cal)["row"]
        out[h.name] = abs(row["tpot_ms"] / h.obs.measured["tpot_ms"] - 1)
    return out


def test_held_out_tpot_improves_at_one_user_and_in_the_burst():
    hs = [holdout.held(d, hw=_host(LOADS)) for d in sorted(LOADS.glob("*-c*")) + sorted(LOADS.glob("*-burst"))]
    assert [h.name for h in hs][-1] == "burst 64" and "closed 1" in [h.name for h in hs]
    before, after = _tpot_errors(hs, no_seq=True), _tpot_errors(hs, no_seq=False)
    assert after["closed 1"] < before["closed 1"]
    assert after["burst 64"] < before["burst 64"]


def _all_errors(heldruns, names: list[str] | None) -> list[float]:
    """Held-out |error| of every TTFT and TPOT; names None: the model as shipped (seq_ms and
    req_ms fitted), else only these factors, seq_ms 0 and req_ms 0 (the model before both)."""
    out = []
    for i, h in enumerate(heldruns):
        rest = [x.obs for j, x in enumerate(heldruns) if j != i]
        cal = fit.calibrate(rest)
        if names:
            cal.factors = fit.fit(rest, Factors(seq_ms=0.0, req_ms=0.0), names)
        row = holdout.prediction(h, cal)["row"]
        out += [abs(row[m] / h.obs.measured[m] - 1) for m in ("ttft_ms", "tpot_ms")]
    return out


def test_req_ms_is_fitted_and_held_out_error_beats_the_model_without_both_terms():
    """h-seqcost's term alone moved the fixed step cost into seq_ms and left the 1-user TTFT
    63 % too fast; the per-request latency takes that part back. (Held out, the 1-user TTFT is
    now extrapolated from the loaded runs' per-request slope, fe_ms, and this set's 4-user run
    lies below that line: -56 %, docs/estimate.md; fitted with it, it is within 10 %.)"""
    import statistics

    hs = [holdout.held(d, hw=_host(LOADS)) for d in sorted(LOADS.glob("*-c*")) + sorted(LOADS.glob("*-burst"))]
    cal = fit.calibrate([h.obs for h in hs])
    assert "req_ms" in cal.fitted and 1.0 < cal.factors.req_ms < 20.0
    one = next(h for h in hs if h.name == "closed 1")
    assert abs(holdout.prediction(one, cal)["row"]["ttft_ms"] / one.obs.measured["ttft_ms"] - 1) < 0.15
    now, before = _all_errors(hs, None), _all_errors(hs, ["eta_mem", "eta_compute", "step_ms"])
    assert statistics.median(now) < statistics.median(before)
