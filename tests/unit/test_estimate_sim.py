"""The simulated scheduler (estimate/sim.py), the published-row fit and its leave-one-source-out
evaluation (estimate/pubfit.py), the shipped rows, and what the CLI says about them."""

from __future__ import annotations

import csv
import json
import math
from importlib import resources

import pytest
from click.testing import CliRunner

from servebench.estimate import catalog, fit, models, pubfit
from servebench.estimate.roofline import Deployment, Factors, capacity
from servebench.estimate.sim import Load, simulate

COLUMNS = tuple(("source,citation,engine,engine_version,model,quantization,gpu,gpu_count,instance,concurrency,load,"
           "input_tokens,output_tokens,ms_per_token,tokens_per_s,ttft_ms,usd_per_hour,notes").split(","))


def _dep(**kw) -> Deployment:
    return Deployment(models.load("llama-2-7b"), catalog.lookup("a10g"), 1, **kw)


def _tput(users: int, **kw) -> float:
    return simulate(_dep(**kw), Factors(), Load("closed", users, requests=users * 6, n_in=128, n_out=32))["output_tok_s"]


def test_throughput_rises_with_users_then_saturates_at_the_batch_cap():
    t = {u: _tput(u, max_num_seqs=8) for u in (1, 2, 4, 8, 16, 32)}
    assert t[1] < t[2] < t[4] < t[8]
    assert t[8] > 3 * t[1]  # memory-bound decode: a batch costs little more than one request
    assert t[32] == pytest.approx(t[16], rel=0.05) and t[16] == pytest.approx(t[8], rel=0.10)


def test_kv_blocks_limit_the_running_batch():
    d = _dep(mem_fraction=0.705)  # ~1.9 GiB of KV: a few thousand tokens
    kv = capacity(d)["kv_tokens"]
    per_req = 256 + 256
    r = simulate(d, Factors(), Load("burst", requests=24, n_in=256, n_out=256))
    assert r["completed"] == 24
    assert 1 <= r["peak_batch"] <= kv // per_req < 24
    wide = simulate(_dep(), Factors(), Load("burst", requests=24, n_in=256, n_out=256))
    assert wide["peak_batch"] == 24 and wide["output_tok_s"] > r["output_tok_s"]


def test_burst_ttft_grows_with_position():
    r = simulate(_dep(max_num_seqs=8), Factors(), Load("burst", requests=64, n_in=256, n_out=64), detail=True)
    ttft = [q.first - q.arrive for q in r["requests"]]
    waves = [sum(ttft[i:i + 8]) / 8 for i in range(0, 64, 8)]
    assert waves == sorted(waves) and waves[-1] > 5 * waves[0]


def test_rate_load_is_seeded_and_light_load_has_no_queue():
    a = simulate(_dep(), Factors(), Load("rate", rate=0.2, requests=50, n_in=128, n_out=16, seed=3))
    b = simulate(_dep(), Factors(), Load("rate", rate=0.2, requests=50, n_in=128, n_out=16, seed=3))
    # an arrival waits at most for the step in progress: about one decode step, no queue
    assert a == b and a["queue_ms"] < a["tpot_ms"] and a["completed"] == 50
    with pytest.raises(ValueError, match="rate"):
        simulate(_dep(), Factors(), Load("rate", rate=0.0, requests=5))


def test_separate_prefill_stalls_decoding_more_than_chunked():
    """TGI-style whole prefills pause every running decode; chunks ride along in decode steps."""
    lengths = dict(requests=200, n_in=(2000, 100, 100, 100), n_out=(64,))
    sep = simulate(_dep(schedule="separate"), Factors(), Load("rate", rate=2.0, **lengths))
    mix = simulate(_dep(schedule="mixed"), Factors(), Load("rate", rate=2.0, **lengths), chunk=256)
    assert sep["tpot_ms_p50"] > mix["tpot_ms_p50"]


def test_one_request_at_a_time_is_the_same_under_either_schedule():
    """With nothing to interleave, whole and riding prefills cost the same; a KV-context leak
    between requests (a past bug) made the second request onward differ."""
    runs = [simulate(_dep(schedule=s), Factors(), Load("closed", 1, requests=5, n_in=512, n_out=8), detail=True)
            for s in ("separate", "mixed")]
    a, b = ([(q.first, q.done) for q in r["requests"]] for r in runs)
    assert a == b
    one = a[0][1] - 0.0
    assert all(d - f == pytest.approx(a[0][1] - a[0][0]) for f, d in a) and one > 0


def test_model_that_does_not_fit_is_an_answer():
    d = Deployment(models.load("llama-2-70b"), catalog.lookup("a10g"), 1)
    r = simulate(d, Factors(), Load("closed", 1, requests=2))
    assert r["fits"] is False and "GiB" in r["why"]


# --- fit and leave-one-source-out on a synthetic set ----------------------------------------

def _synthetic(truth: dict) -> list[pubfit.Row]:
    """Rows whose 'published' figures come from the simulator at known per-family factors."""
    out = []
    setups = [("src-a", "a10g", 1, "closed", 4), ("src-a", "a10g", 1, "burst", 64), ("src-b", "a100-80gb", 1, "closed", 1),
              ("src-b", "a100-80gb", 2, "burst", 128), ("src-c", "a100-40gb", 1, "closed", 8), ("src-c", "a10g", 1, "closed", 1)]
    for src, gpu, tp, mode, n in setups:
        hw = catalog.lookup(gpu)
        d = Deployment(models.load("llama-2-7b"), hw, tp, schedule="mixed")
        load = Load(mode, users=n, requests=n * 4 if mode == "closed" else n, n_in=512, n_out=64)
        p = simulate(d, truth[hw.arch], load)
        out.append(pubfit.Row(src, "vllm", hw.arch, d, load, {"tokens_per_s": p["output_tok_s"], "ttft_ms": p["ttft_ms"]},
                              f"{src} {gpu} {mode} {n}"))
    return out


def test_fit_recovers_family_factors_and_loso_error_is_small():
    truth = {"ampere-dc": Factors(eta_mem=0.45, eta_compute=0.3)}
    rows = _synthetic(truth)
    f = pubfit.fit(rows)
    got = f.groups["ampere-dc"]
    assert got.eta_mem == pytest.approx(0.45, rel=0.1) and got.eta_compute == pytest.approx(0.3, rel=0.2)
    assert f.separated == set()
    res = pubfit.loso(rows)
    assert {x["source"] for x in res} == {"src-a", "src-b", "src-c"}
    errs = [abs(math.expm1(e)) for x in res for e in x["log_errors"].values()]
    assert max(errs) < 0.15
    assert all("engine not modelled" in x["engine_note"] for x in res)
    band = pubfit.band_for(res, "src-a")
    assert band == max(abs(e) for x in res if x["source"] != "src-a" for e in x["log_errors"].values())


def test_engine_dimension_only_where_a_source_separates_engines():
    rows = _synthetic({"ampere-dc": Factors(eta_mem=0.45, eta_compute=0.3)})
    assert pubfit._separated(rows) == set()
    rows[1].engine = "tgi"  # src-a now measured vllm and tgi on ampere-dc
    assert pubfit._separated(rows) == {("ampere-dc", "vllm"), ("ampere-dc", "tgi")}
    f = pubfit.fit(rows)
    assert "ampere-dc/tgi" in f.groups
    _, group, note = f.factors_for("ampere-dc", "tgi")
    assert group == "ampere-dc/tgi" and "separates engines" in note
    _, group, note = f.factors_for("hopper", "tgi")
    assert group == "*" and "engine not modelled" in note


def test_band_needs_residuals():
    with pytest.raises(ValueError):
        pubfit.band_for([{"source": "x", "log_errors": {"tokens_per_s": 0.1}}], "x")


# --- the shipped rows -------------------------------------------------------------------------

def test_every_published_row_carries_a_citation_and_its_setup():
    text = resources.files("servebench.estimate").joinpath("data/published_rows.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert tuple(csv.reader(text.splitlines()[:1]).__next__()) == COLUMNS
    assert len(rows) >= 20 and len({r["source"] for r in rows}) >= 4
    for r in rows:
        assert r["source"] and len(r["citation"]) > 20, r
        assert r["engine"] and r["model"] and r["gpu"] and int(r["gpu_count"]) >= 1 and r["output_tokens"], r
        assert r["load"] in ("closed", "burst", "rate") and int(r["concurrency"]) >= 1, r
        assert any(r[k] for k in ("ms_per_token", "tokens_per_s", "ttft_ms")), r
        catalog.lookup(r["gpu"])
        if r["instance"]:
            hw, n = catalog.instance(r["instance"])
            assert hw.key == catalog.lookup(r["gpu"]).key and n >= int(r["gpu_count"])
        if not r["input_tokens"]:
            assert "not published" in r["notes"]  # an unstated length is said, never filled in
    seed = [r for r in rows if r["source"] == "hf-sagemaker-tgi"]
    assert len(seed) == 9 and {r["engine_version"] for r in seed} == {"1.0.3"}


def test_shipped_fit_matches_the_rows():
    data = json.loads(resources.files("servebench.estimate").joinpath("data/published_fit.json").read_text())
    assert data["band_log"] > 0 and "*" in data["groups"]
    for arch in {r.family for r in pubfit.rows()}:
        assert arch in data["groups"]
    assert fit.published(catalog.lookup("a10g")).basis == "published rows (ampere-dc)"
    cal = fit.published(catalog.lookup("a10g"), "tgi")  # TGI is measured beside other engines on ampere-dc
    assert cal.basis == "published rows (ampere-dc/tgi)" and cal.sigma == pytest.approx(data["band_log"])
    assert cal.sigma_for(catalog.lookup("h200"), "tgi") == cal.sigma  # not widened again (issue 19)
    assert fit.published(catalog.lookup("mi300x")).basis == "published rows (*)"  # no CDNA rows
    assert fit.published(catalog.lookup("rtx4090")).basis == "published rows (ada-geforce)"


# --- CLI ----------------------------------------------------------------------------------------

def _cli(*args):
    from servebench.estimate.cli import estimate

    r = CliRunner().invoke(estimate, ["--model", "llama-2-7b", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_cli_instance_type_simulated_scheduler_and_engine_note():
    out = _cli("--gpu", "ml.g5.12xlarge", "--engine", "tgi", "--concurrency", "1,8")
    assert out["gpus"] == 4 and out["hardware"]["key"] == "a10g" and out["instance_type"] == "ml.g5.12xlarge"
    assert out["workload"]["scheduler"] == "simulated" and out["workload"]["load"] == "closed"
    assert out["engine_note"].startswith("engine tgi: efficiency fitted on published sources")
    assert out["calibration"]["basis"] == "published rows (ampere-dc/tgi)"
    other = _cli("--gpu", "ml.g5.12xlarge", "--engine", "sglang", "--concurrency", "1,8")
    assert other["engine_note"].startswith("engine not modelled") and other["calibration"]["basis"] == "published rows (ampere-dc)"
    lo, hi = out["levels"][0]["output_tok_s_band"]
    assert hi / lo == pytest.approx(math.exp(2 * out["sigma_log"]))
    formula = _cli("--gpu", "ml.g5.12xlarge", "--engine", "tgi", "--concurrency", "1,8", "--scheduler", "formula")
    assert formula["workload"]["scheduler"] == "formula"
    burst = _cli("--gpu", "a10g", "--concurrency", "64", "--load", "burst")
    assert burst["levels"][0]["ttft_ms"] > out["levels"][0]["ttft_ms"]


def test_a_staggered_start_does_not_hold_a_finished_users_next_request():
    # 4 users start over 2 s; user 0's short requests end long before user 3 starts. Each next
    # request must reach the engine when sent: the plain path once queued it behind the
    # later-starting users' first requests (sent 0.07 s, admitted at 1.5 s).
    load = Load("closed", 4, requests=12, n_in=16, n_out=2, stagger_s=2.0)
    reqs = simulate(_dep(), Factors(req_ms=0.0), load, detail=True)["requests"]
    firsts = {r.user: r.arrive for r in reqs[:4]}
    assert firsts == pytest.approx({0: 0.0, 1: 0.5, 2: 1.0, 3: 1.5})
    later = [r for r in reqs if r.user == 0 and r.index >= 4]
    assert len(later) >= 5 and all(r.arrive < 1.0 for r in later)
    assert all(r.admit - r.arrive < 0.05 for r in later)


def test_the_plain_latency_gate_delivers_in_send_order_after_its_lag():
    from servebench.estimate.frontend import Lag

    g = Lag(0.002)
    for t, name in ((0.0, "a"), (0.001, "b"), (0.001, "c"), (0.010, "d")):
        g.send(t, name)
    assert g.next_time() == pytest.approx(0.002)
    assert g.arrived(0.0029) == ["a"]
    assert g.arrived(0.003) == ["b", "c"]
    assert g.next_time() == pytest.approx(0.012) and g.arrived(0.0119) == []
    assert g.arrived(0.02) == ["d"] and g.next_time() is None
