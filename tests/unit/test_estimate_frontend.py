"""The shared frontend worker (Factors.fe_ms, servebench/estimate/frontend.py): per-request work
before the engine, shared by the requests in it at the same time. A lone request pays it once;
requests that arrive together (a burst, a lockstep closed loop's waves) pay it once per request
in the wave. Fitted on this host's recorded vLLM CPU runs (tests/fixtures/estimate_cpu/loads-20261206,
host figures recorded with them) it brings the held-out TTFT inside 20 % at 4 and 16 users and
the burst; 0 for published rows, where nothing changes."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from servebench.estimate import catalog, fit, holdout, models
from servebench.estimate.frontend import Frontend
from servebench.estimate.roofline import Deployment, Factors, serve
from servebench.estimate.sim import Load, simulate

from .test_estimate_seqcost import _host

LOADS2 = Path(__file__).resolve().parents[1] / "fixtures/estimate_cpu/loads-20261206"
F = Factors(eta_mem=0.5, eta_compute=0.5, step_ms=1.0, seq_ms=0.0)


def _d() -> Deployment:
    return Deployment(models.load("llama-2-7b"), catalog.lookup("a100-80gb"))


def test_worker_is_shared_equally_by_the_requests_in_it():
    fe = Frontend(fe=1.0, lag=0.25)
    fe.send(0.0, "a")
    fe.send(0.5, "b")
    fe.run(10.0)
    # a alone for 0.5 s, then a and b at half speed each: a ends at 1.5, b (0.5 done) at 2.0
    assert fe.ready[0][0] == pytest.approx(1.75) and fe.arrived(1.75) == ["a"]
    assert fe.next_time() == pytest.approx(2.25) and fe.arrived(2.25) == ["b"]
    assert fe.next_time() is None


def test_a_wave_of_n_waits_n_times_the_work_and_a_lone_request_once():
    d, n = _d(), 16
    lone = [simulate(d, F.with_(**kw), Load(mode="closed", users=1, requests=8, n_in=256, n_out=32))
            for kw in ({"req_ms": 3.0}, {"fe_ms": 2.0, "req_ms": 1.0})]
    # a lone request: the frontend's work is latency like req_ms, nothing else changes
    assert lone[1]["ttft_ms"] == pytest.approx(lone[0]["ttft_ms"], rel=1e-6)
    assert lone[1]["tpot_ms"] == pytest.approx(lone[0]["tpot_ms"], rel=1e-9)
    burst = [simulate(d, F.with_(fe_ms=v), Load(mode="burst", requests=n, n_in=256, n_out=32), detail=True)
             for v in (0.0, 2.0)]
    assert burst[1]["ttft_ms"] - burst[0]["ttft_ms"] == pytest.approx(n * 2.0, rel=1e-6)
    # all of the wave reaches the engine together, as they arrived
    firsts = {round(r.first, 9) for r in burst[1]["requests"]}
    assert len(firsts) == 1
    assert burst[1]["tpot_ms"] == pytest.approx(burst[0]["tpot_ms"], rel=1e-9)


def test_ttft_rises_with_concurrency_under_the_term_in_the_simulator_and_the_formulas():
    d = _d()
    extra = {}
    for users in (1, 4, 16):
        load = Load(mode="closed", users=users, requests=users * 8, n_in=256, n_out=32)
        a, b = simulate(d, F, load), simulate(d, F.with_(fe_ms=2.0), load)
        extra[users] = b["ttft_ms"] - a["ttft_ms"]
        s0, s1 = (serve(d, users, 256, 32, F.with_(fe_ms=v), lockstep=True) for v in (0.0, 2.0))
        assert s1["ttft_ms"] - s0["ttft_ms"] == pytest.approx(users * 2.0)  # the formulas the fit uses agree
        assert s1["tpot_ms"] == pytest.approx(s0["tpot_ms"])
    assert extra[1] == pytest.approx(2.0, rel=1e-6)
    assert extra[4] == pytest.approx(8.0, rel=1e-6) and extra[16] == pytest.approx(32.0, rel=1e-6)
    # spread arrivals (no waves): processor sharing under the other users' requests, never below a lone one's
    spread = [serve(d, 16, 256, 32, F.with_(fe_ms=v))["ttft_ms"] for v in (0.0, 2.0)]
    assert 2.0 < spread[1] - spread[0] < 16 * 2.0


def test_zero_leaves_the_simulator_and_published_factors_as_they_were():
    assert Factors().fe_ms == 0.0 and Factors.speed_of_light().fe_ms == 0.0
    load = Load(mode="closed", users=8, requests=64, n_in=256, n_out=64, stagger_s=0.5)
    d = _d()
    assert simulate(d, F, load) == simulate(d, F.with_(fe_ms=0.0), load)


def _held(d: Path):
    return [holdout.held(x, hw=_host(d)) for x in sorted(d.glob("*-c*")) + sorted(d.glob("*-burst"))]


def test_fitted_on_the_recorded_runs_and_held_out_ttft_improves():
    hs = _held(LOADS2)
    cal = fit.calibrate([h.obs for h in hs])
    assert "fe_ms" in cal.fitted and 1.0 < cal.factors.fe_ms < 5.0  # ~2.5 ms per request of a wave
    res = holdout.leave_one_out(hs)
    ttft = {r["load"]: r["calibrated"]["ttft_ms"]["error"] for r in res}
    for load in ("closed 4", "closed 16", "burst 64"):  # 3 of 4 were -13 %, -46 %, -51 % without it
        assert abs(ttft[load]) < 0.2, (load, ttft)
    assert statistics.median(abs(e) for e in ttft.values()) < 0.2
