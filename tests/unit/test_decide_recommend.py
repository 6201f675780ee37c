"""recommend over the fixture sweep (tests/fixtures/decide/make_sweep.py): a failed cell, a group
that never launched, a tie, a missing price, an SLO nobody meets; and over plain run dirs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servebench.decide.load import LoadError, load_dir, load_dirs
from servebench.decide.prices import price_book
from servebench.decide.recommend import add_costs, capacity, pareto_mask, recommend
from servebench.decide.slo import SloError, add_goodput, goodput, parse_goodput, parse_slo
from servebench.analysis.metrics import summarize
from servebench.records import RequestRecord, counts_array, ns_array
from servebench.store.runfiles import write_records

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "tests/fixtures/decide/sweep"
REFERENCE_RUN = ROOT / "results/reference/20261121-075723-burst-1000x512-tiny"


@pytest.fixture(scope="module")
def df():
    return add_costs(load_dirs([str(SWEEP)]), price_book())


def tables(df, **kw):
    return {t.key: t for t in recommend(df, **kw)}


def test_stored_fixture_is_what_the_generator_makes(tmp_path):
    from tests.fixtures.decide.make_sweep import make

    fresh = make(tmp_path / "sweep")
    for p in sorted(SWEEP.rglob("summary.json")):
        assert json.loads(p.read_text()) == json.loads((fresh / p.relative_to(SWEEP)).read_text()), p
    assert json.loads((SWEEP / "index.json").read_text()) == json.loads((fresh / "index.json").read_text())


def test_rows_carry_labels_metrics_and_cost(df):
    assert len(df) == 18 and set(df["kind"]) == {"sweep"}
    r = df[df["cell"] == "g02-c005-r0"].iloc[0]
    s = json.loads((SWEEP / "runs/g02-c005-r0/summary.json").read_text())
    assert (r["engine"], r["instance_type"], r["gpu_count"], r["concurrency"]) == ("tgi", "ml.g5.12xlarge", 4, 5)
    assert r["output_token_throughput"] == s["output_token_throughput"]
    assert r["ms_per_token_p50"] == s["ms_per_token"]["p50"] and r["ttft_ms_p95"] == s["ttft_ms"]["p95"]
    assert r["usd_per_hour"] == 7.09
    assert r["usd_per_1m"] == pytest.approx(7.09 / (s["output_token_throughput"] * 3600 / 1e6))
    assert r["usd_per_1m_total"] == pytest.approx(7.09 / (s["total_token_throughput"] * 3600 / 1e6))
    assert r["min_per_1m"] == pytest.approx(1e6 / s["output_token_throughput"] / 60)
    gpu = s["telemetry"]["gpu"]["total"]
    assert r["j_per_token"] == pytest.approx(gpu["energy_j"] / s["output_tokens"]["total"])
    assert r["tput_per_gpu"] == pytest.approx(s["output_token_throughput"] / 4)
    assert r["tput_per_user"] == pytest.approx(1000 / s["tpot_ms"]["p50"])


def test_failed_cells_are_stated_not_ranked(df):
    t = tables(df)
    failed = {c for c in df.loc[df["status"] == "failed", "cell"]}
    assert failed == {"g02-c020-r0", "g05-c001-r0", "g05-c005-r0", "g05-c020-r0"}
    notes = " ".join(t["cost"].notes)
    assert "g02-c020-r0" in notes and "server exited: CUDA out of memory" in notes and "server never started" in notes
    # The failed tgi run at 20 measured the highest 7B throughput; it must not win.
    tgi20 = df[df["cell"] == "g02-c020-r0"].iloc[0]
    best7 = t["throughput"].df.set_index("model").loc["llama-7b"]
    assert best7["output_token_throughput"] < tgi20["output_token_throughput"]


def test_tables_pick_the_best_measured_row_per_model(df):
    t = tables(df)
    ok = df[(df["status"] != "failed") & (df["completed"] > 0)]
    for key, col, pick in (("cost", "usd_per_1m", "min"), ("latency", "ms_per_token_p50", "min"),
                           ("throughput", "output_token_throughput", "max")):
        got = t[key].df.set_index("model")[col]
        for model in ("llama-7b", "llama-13b"):
            assert got[model] == getattr(ok[ok["model"] == model][col], pick)(), (key, model)
    assert list(t["cost"].df.columns[:9]) == ["model", "quantization", "where", "concurrency", "ms_per_token_p50",
                                              "output_token_throughput", "usd_per_hour", "min_per_1m", "usd_per_1m"]


def test_tie_is_stated_and_broken_deterministically(df):
    t = tables(df)
    tie = [n for n in t["cost"].notes if "tie" in n]
    assert len(tie) == 1 and "sglang/llama-7b/ml.g5.2xlarge" in tie[0] and "vllm/llama-7b/ml.g5.2xlarge" in tie[0]
    assert t["cost"].df.set_index("model").loc["llama-7b", "config"] == "sglang/llama-7b/ml.g5.2xlarge"
    front = [n for n in t["pareto_cost"].notes if "tie on the front" in n]
    assert len(front) == 2


def test_missing_price_is_stated_and_an_override_fills_it(df):
    t = tables(df)
    assert any("no price for vllm/llama-7b/gptq/mystery-gpu" in n for n in t["cost"].notes)
    assert "mystery-gpu" not in set(t["cost"].df["where"])
    priced = add_costs(load_dirs([str(SWEEP)]), price_book(["mystery-gpu=0.01"]))
    t2 = tables(priced)
    assert not any("no price" in n for n in t2["cost"].notes)
    assert t2["cost"].df.set_index("model").loc["llama-7b", "where"] == "mystery-gpu"  # now cheapest


def test_slo_nobody_meets(df):
    bounds = parse_slo("ttft_p95<=1ms", 0.01)
    t = tables(df, bounds=bounds, target_rps=5)
    for key in ("cost_slo", "latency_slo", "throughput_slo"):
        assert t[key].df.empty
    never = [n for n in t["cost_slo"].notes if "never met the SLO" in n]
    assert len(never) == df["config"].nunique() == 6
    assert any("missed ttft_p95<=1ms (was" in n for n in never)
    assert t["capacity"].df.empty and sum("never met" in n for n in t["capacity"].notes) == 6


def test_slo_filters_and_capacity_uses_highest_level_met(df):
    bounds = parse_slo("ttft_p95<=300ms", 0.01)
    t = tables(df, bounds=bounds, target_rps=10)
    ok = df[(df["status"] != "failed") & (df["completed"] > 0) & (df["ttft_ms_p95"] <= 300) & (df["error_rate"] <= 0.01)]
    best = t["cost_slo"].df.set_index("model")
    for model in ("llama-7b", "llama-13b"):
        cand = ok[(ok["model"] == model) & ok["usd_per_1m"].notna()]
        assert best.loc[model, "usd_per_1m"] == cand["usd_per_1m"].min()
    cap = t["capacity"].df.set_index("config")
    for cfg, g in ok.groupby("config"):
        top = g.sort_values("concurrency").iloc[-1]
        assert cap.loc[cfg, "load_level"] == top["load_level"]
        assert cap.loc[cfg, "servers"] == math.ceil(10 / top["request_throughput"])
        if top["usd_per_hour"] == top["usd_per_hour"]:
            assert cap.loc[cfg, "usd_per_month"] == pytest.approx(cap.loc[cfg, "servers"] * top["usd_per_hour"] * 730)
    assert np.isnan(cap.loc["vllm/llama-7b/gptq/mystery-gpu", "usd_per_hour"])
    assert any("no price: server count only" in n for n in t["capacity"].notes)


def test_at_levels_reproduce_the_study_choice(df):
    t = tables(df, at={"cost": 5, "latency": 1, "throughput": 20})
    assert set(t["cost"].df["concurrency"]) == {5} and set(t["latency"].df["concurrency"]) == {1}
    assert set(t["throughput"].df["concurrency"]) == {20}


def test_pareto_mask_excludes_dominated_ties():
    x = np.array([1.0, 1.0, 2.0, 1.0, 3.0])
    y = np.array([2.0, 3.0, 1.0, 2.0, 3.0])
    # (1,3) ties (1,2) on x and is worse on y: out. (3,3) is dominated. Duplicates (1,2) both stay.
    assert pareto_mask(x, y).tolist() == [True, False, True, True, False]


def test_pareto_fronts_are_non_dominated_and_per_gpu(df):
    t = tables(df)
    front = t["pareto_cost"].df
    ok = df[(df["status"] != "failed") & (df["completed"] > 0) & df["usd_per_1m"].notna()]
    for _, r in front.iterrows():
        m = ok[ok["model"] == r["model"]]
        dominated = ((m["usd_per_1m"] <= r["usd_per_1m"]) & (m["ms_per_token_p50"] <= r["ms_per_token_p50"])
                     & ((m["usd_per_1m"] < r["usd_per_1m"]) | (m["ms_per_token_p50"] < r["ms_per_token_p50"])))
        assert not dominated.any()
    tp = t["pareto_throughput"].df
    r = tp[tp["config"] == "tgi/llama-7b/ml.g5.12xlarge"].iloc[0]
    assert r["devices"] == 4 and r["tput_per_gpu"] == pytest.approx(r["output_token_throughput"] / 4)


def test_goodput_counts_errors_as_misses(df):
    run = SWEEP / "runs/g04-c020-r0"  # 2 of 46 requests failed
    share, good, n, done = goodput(run, {"ttft": 1e9, "tpot": 1e9, "e2el": 1e9})
    assert (good, n, done) == (44, 46, 44) and share == pytest.approx(44 / 46)
    share, good, n, done = goodput(run, {"ttft": 1e-3})
    assert good == done == 0
    g = add_goodput(df, parse_goodput(["ttft:500", "tpot:50", "e2el:2000"]))
    assert g["goodput"].between(0, 1).sum() == 15 and g.loc[g["cell"] == "g05-c001-r0", "goodput"].isna().all()
    assert "goodput" in tables(g)


MS = 10**6


def _req(i: int, sent: int, e2e_ms: float = 50) -> RequestRecord:
    return RequestRecord(index=i, sent_ns=sent, scheduled_ns=sent, slot_ns=sent, end_ns=sent + int(e2e_ms * MS),
                         status=200, token_ns=ns_array([sent + 10 * MS, sent + 20 * MS]),
                         token_counts=counts_array([1, 1]), server_output_tokens=2, decoded=True)


def test_goodput_counts_requests_that_never_connected_as_misses(tmp_path):
    # 6 good, 4 due but refused a connection (sent_ns 0): summary.json counts them failed
    recs = [_req(i, 10**12 + i * MS) for i in range(6)]
    recs += [RequestRecord(index=i, scheduled_ns=10**12 + i * MS, error="connect: Connection refused", decoded=True)
             for i in range(6, 10)]
    write_records(tmp_path / "requests.parquet", recs)
    assert summarize(recs)["failed"] == 4
    assert goodput(tmp_path, {"ttft": 500}) == (0.6, 6, 10, 6)


def test_goodput_under_steady_state_is_over_the_summarys_window(tmp_path):
    # a closed loop of 2: the window opens when 2 are first in flight and closes at the last
    # send; requests sent before it are left out of the share, completions outside it out of the rate
    t0, recs = 10**12, []
    for i, (sent, e2e) in enumerate([(0, 100), (30, 100), (100, 100), (130, 100), (200, 100), (230, 100)]):
        recs.append(_req(i, t0 + sent * MS, e2e))
    write_records(tmp_path / "requests.parquet", recs)
    s = summarize(recs, target_concurrency=2, steady_state=True)
    assert s["steady_state"]["applied"] and s["steady_state"]["requests_left_out"] > 0
    (tmp_path / "summary.json").write_text(json.dumps(s))
    share, good, n, done = goodput(tmp_path, {"e2el": 1e6})
    assert (n, share) == (s["steady_state"]["requests_kept"], 1.0)
    assert done == round(s["request_throughput"] * s["duration_s"])
    row = pd.DataFrame([{"run_dir": str(tmp_path), "duration_s": s["duration_s"]}])
    rate = add_goodput(row, {"e2el": 1e6})["goodput_rps"].iloc[0]
    assert rate == pytest.approx(s["request_throughput"])  # every request good: goodput req/s is req/s


def test_a_gpu_count_left_out_is_priced_at_the_gpus_telemetry_saw():
    # a sweep server with a hardware label and no GPU list (gpu_count 0) that ran on 4 GPUs
    row = {"hardware": "a100", "gpu_count": 0, "gpus_measured": 4, "output_token_throughput": 1000.0,
           "total_token_throughput": 1200.0, "tpot_ms_p50": 20.0, "ms_per_token_p50": 25.0}
    r = add_costs(pd.DataFrame([row]), price_book(["a100=2.0"])).iloc[0]
    assert (r["devices"], r["usd_per_hour"]) == (4, 8.0)
    assert r["usd_per_1m"] == pytest.approx(8.0 / (1000 * 3600 / 1e6))


@pytest.mark.parametrize("bad", ["ttft<<5", "speed_p50<=3", "ttft_p95<=fast", "ttft_p95<=5%"])
def test_bad_slo_is_a_one_line_error(bad):
    with pytest.raises(SloError) as e:
        parse_slo(bad)
    assert "\n" not in str(e.value)


def test_slo_units():
    b = {x.column: x.value for x in parse_slo("ttft_p95<=1s,tpot<=50,e2el_p99<2000ms,error_rate<=1%")}
    assert b == {"ttft_ms_p95": 1000.0, "tpot_ms_p50": 50.0, "e2e_ms_p99": 2000.0, "error_rate": 0.01}
    with pytest.raises(SloError):
        parse_goodput(["ttft=5"])


def test_plain_run_dir_reads_from_its_config():
    r = load_dir(REFERENCE_RUN).iloc[0]
    assert (r["engine"], r["model"], r["hardware"], r["gpu_count"], r["mode"]) == ("vllm", "tiny", "cpu", 0, "burst")
    assert r["load_level"] == "burst 1000" and r["engine_version"] == "0.32.0" and r["completed"] == 1000
    priced = add_costs(load_dir(REFERENCE_RUN), price_book(["cpu=0.2"])).iloc[0]
    assert priced["usd_per_1m"] == pytest.approx(0.2 / (r["output_token_throughput"] * 3600 / 1e6))


def test_unreadable_inputs_are_load_errors(tmp_path):
    with pytest.raises(LoadError):
        load_dir(tmp_path / "missing")
    with pytest.raises(LoadError):
        load_dir(tmp_path)  # empty: no run in it
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(LoadError):
        load_dir(tmp_path)


def test_interrupted_runs_are_listed_not_ranked(df):
    d = df.copy()
    best = d[d["model"] == "llama-13b"]["output_token_throughput"].idxmax()
    d.loc[best, "status"] = "interrupted"
    t = tables(d)
    assert t["throughput"].df.set_index("model").loc["llama-13b", "output_token_throughput"] < d.loc[best, "output_token_throughput"]
    assert any(d.loc[best, "cell"] in n and "interrupted" in n for n in t["cost"].notes)


def test_comparison_against_a_baseline_run():
    from servebench.outputs.summary_tables import comparison_table

    a, b = SWEEP / "runs/g00-c005-r0", SWEEP / "runs/g02-c005-r0"
    d = add_costs(load_dirs([f"base={a}", f"new={b}"]), price_book())
    t = comparison_table(d)
    r = t.df.iloc[0]
    base, new = d.iloc[0], d.iloc[1]
    assert r["source"] == "new" and r["baseline"].startswith("base:")
    assert r["delta_throughput_pct"] == pytest.approx((new["output_token_throughput"] / base["output_token_throughput"] - 1) * 100)
    assert r["delta_usd_per_1m_pct"] == pytest.approx((new["usd_per_1m"] / base["usd_per_1m"] - 1) * 100)


def test_a_real_compare_directory():
    d = add_costs(load_dir(ROOT / "tests/fixtures/decide/compare"), price_book(["cpu=0.05"]))
    assert set(d["kind"]) == {"compare"} and len(d) == 6
    assert set(d["engine"]) == {"fastemu", "broken", "slowemu"}
    ok = d[d["status"] == "complete"]
    assert len(ok) == 4 and set(ok["hardware"]) == {"cpu"} and ok["usd_per_1m"].notna().all()
    t = tables(d)
    fail = [n for n in t["cost"].notes if "broken/tiny" in n]
    assert len(fail) == 1 and "1 concurrent, 4 concurrent" in fail[0] and "CUDA out of memory" in fail[0]


def test_the_compare_fixture_reads_as_the_code_prints_it():
    """compare.md is what `servebench compare` writes from its runs: a stale copy (an old footer)
    would teach a reader words the tables no longer say."""
    from servebench.sweep import compare as cmp
    from servebench.sweep.console import assumed_markdown

    d = ROOT / "tests/fixtures/decide/compare"
    idx = json.loads((d / "index.json").read_text())
    assert (d / "compare.md").read_text() == cmp.markdown(cmp.tables(d)) + assumed_markdown(idx.get("assumptions"))


def test_onprem_cost_uses_the_measured_energy():
    raw = load_dirs([str(SWEEP)])
    raw = raw[raw["cell"] == "g02-c005-r0"].copy()
    raw["instance_type"] = None  # owned A10Gs instead of the SageMaker instance
    m = {"purchase_usd_per_gpu": 3504, "amortisation_years": 2, "utilisation": 0.5, "usd_per_kwh": 0.25, "pue": 1.2}
    r = add_costs(raw, price_book(onprem=m)).iloc[0]
    capex = 4 * 3504 / (2 * 8760 * 0.5)
    power = r["energy_j"] / r["duration_s"] * 1.2 / 1000 * 0.25
    assert r["energy_j"] > 0 and r["usd_per_hour"] == pytest.approx(capex + power)
    assert r["usd_per_1m"] == pytest.approx((capex + power) / (r["output_token_throughput"] * 3600 / 1e6))
    assert "on-prem" in r["price_source"]


def test_renderings_keep_text_with_markup_characters():
    import io as _io

    from rich.console import Console

    from servebench.outputs import render
    from servebench.outputs.table import Table

    t = Table("x", "errors [/bold]", pd.DataFrame({"config": ["vllm [--tp 2]"], "usd_per_1m": [1.5]}),
              ["failed: [/] CUDA | out of memory"])
    buf = _io.StringIO()
    render.console([t], Console(file=buf, width=200))
    out = buf.getvalue()
    assert "vllm [--tp 2]" in out and "failed: [/] CUDA | out of memory" in out
    md = render.markdown([t])
    assert "| vllm [--tp 2] | 1.50 |" in md and "- failed: [/] CUDA | out of memory" in md


def test_model_family_puts_checkpoints_of_one_model_together():
    from servebench.decide.load import model_family

    assert model_family("TheBloke/Llama-2-7B-Chat-GPTQ") == model_family("meta-llama/Llama-2-7b-chat-hf") == "llama-2-7b-chat"
    assert model_family("meta-llama/Llama-2-13b-hf") == "llama-2-13b" != model_family("meta-llama/Llama-2-7b-hf")
    assert model_family("tiny") == "tiny" and model_family(None) is None


def test_repeats_are_averaged_before_ranking(tmp_path):
    import shutil

    from servebench.decide.load import merge_repeats

    d = load_dirs([str(SWEEP)])
    twin = d[d["cell"] == "g00-c005-r0"].copy()
    twin["repeat"], twin["cell"] = 1, "g00-c005-r1"
    twin["output_token_throughput"] = twin["output_token_throughput"] * 3  # a lucky repeat
    m = merge_repeats(pd.concat([d, twin], ignore_index=True))
    row = m[m["cell"] == "g00-c005-r0,g00-c005-r1"].iloc[0]
    base = d[d["cell"] == "g00-c005-r0"].iloc[0]
    assert row["repeats"] == 2 and row["output_token_throughput"] == pytest.approx(2 * base["output_token_throughput"])
    assert len(m) == len(d)  # the failed cells are kept, unmerged
    assert set(m.loc[m["status"] == "failed", "cell"]) == set(d.loc[d["status"] == "failed", "cell"])


def test_the_reason_beside_a_table_quotes_the_cost_the_table_ranked_with_repeats():
    # a second repeat of every cell at 3x the throughput: the table ranks $ per 1M at the mean
    # throughput; the words must quote that, not the mean of each repeat's $ per 1M
    from servebench.decide import html, report_text as words
    from servebench.decide.load import merge_repeats

    d = load_dirs([str(SWEEP)])
    twins = d.copy()
    twins["repeat"], twins["cell"] = 1, twins["cell"] + "-r1"
    twins["output_token_throughput"] = twins["output_token_throughput"] * 3
    raw = pd.concat([d, twins], ignore_index=True)
    book = price_book()
    ranked = add_costs(merge_repeats(raw), book)
    cost = next(t for t in recommend(ranked) if t.key == "cost")
    top = cost.df.iloc[0]
    runner = ranked[(ranked["family"] == top["model"]) & (ranked["config"] != top["config"])
                    & (ranked["concurrency"] == top["concurrency"]) & ranked["usd_per_1m"].notna()]
    runner = runner.sort_values("usd_per_1m").iloc[0]
    priced = add_costs(raw, book)  # per run: the plots' table, which the page is given as df
    page = html.render(priced, [cost], {}, title="t", inputs=["x"], ranked=ranked)
    assert words.value_text("usd_per_1m", runner["usd_per_1m"]) in page
    mean_of_ratios = priced.groupby("config")["usd_per_1m"].mean()[runner["config"]]
    assert words.value_text("usd_per_1m", mean_of_ratios) not in page


def test_a_steady_state_run_and_a_whole_run_are_not_compared_as_the_same_load(tmp_path):
    from servebench.analysis import metrics
    from servebench.outputs.summary_tables import comparison_table
    from servebench.store import runfiles as store
    from tests.fixtures.decide.make_sweep import records

    recs = records((60.0, 20.0, 0.06), 4, 7)
    for name, steady in (("A", False), ("B", True)):
        d = tmp_path / name
        d.mkdir()
        store.write_records(d / "requests.parquet", recs)
        s = metrics.summarize(recs, target_concurrency=4, steady_state=steady)
        s.update(status="complete", error=None, warnings=[])
        store.write_summary(d, s)
        store.write_json(d / "run.json", {"status": "complete", "model": "m", "engine": {"name": "vllm"},
                                          "config": {"backend": "vllm", "model": "m", "launcher": "process",
                                                     "steady_state": steady, "load": {"concurrency": 4, "requests": 14},
                                                     "workload": {"input_tokens": 128, "output_tokens": 50}},
                                          "host": {"gpus": []}})
    df = add_costs(load_dirs([f"A={tmp_path / 'A'}", f"B={tmp_path / 'B'}"]), price_book(["cpu=1"]))
    row = comparison_table(df).df.iloc[0]
    # the same records: any throughput difference would be the window's, not the engine's
    assert row["comparable"] == "no: measured over steady-state window vs whole run"
    assert math.isnan(row["delta_throughput_pct"]) and row["verdict"] == "-"


def test_a_tie_shows_the_best_measured_row_and_the_note_says_so():
    from servebench.decide import report_text as words
    from servebench.decide.recommend import study_tables

    rows = [{"family": "m", "model": "m", "config": cfg, "quantization": None, "where": "x", "concurrency": 4.0,
             "load_level": "4 concurrent", "status": "complete", "completed": 100, "usd_per_hour": 1.0,
             "usd_per_1m": usd, "usd_per_1m_ci_low": lo, "usd_per_1m_ci_high": hi, "ms_per_token_p50": lat,
             "output_token_throughput": 1e6 / 3600 / usd, "min_per_1m": 1.0, "ci": "run"}
            for cfg, usd, lo, hi, lat in (("A", 3.00, 2.5, 3.6, 50.0), ("B", 3.05, 2.6, 3.7, 20.0))]
    df = pd.DataFrame(rows)
    cost = study_tables(df)[0]
    # $3.00 and $3.05 overlap: a tie on cost; the lower measured cost is shown, flagged as a tie
    assert cost.df["config"].tolist() == ["A"] and cost.df["vs_next"].iloc[0].startswith("tie")
    assert cost.notes[0].endswith("(shown: A, the best measured)")
    text = words.reason(cost, cost.df.iloc[0], df).text
    assert "next: B @ 4 concurrent, $3.05 (2% lower); a tie within the 95 % intervals" in text


def test_a_failed_run_is_listed_against_the_baseline_but_never_compared(tmp_path):
    from servebench.analysis import metrics
    from servebench.outputs.summary_tables import comparison_table
    from servebench.store import runfiles as store
    from tests.fixtures.decide.make_sweep import records

    for name, status, errors in (("A", "complete", 0), ("B", "failed", 3)):
        recs = records((60.0, 20.0, 0.06), 4, 7, errors=errors)
        d = tmp_path / name
        d.mkdir()
        store.write_records(d / "requests.parquet", recs)
        s = metrics.summarize(recs, target_concurrency=4)
        s.update(status=status, error=None if errors == 0 else "3 of 14 requests failed", warnings=[])
        store.write_summary(d, s)
        store.write_json(d / "run.json", {"status": status, "model": "m", "engine": {"name": "vllm"},
                                          "config": {"backend": "vllm", "model": "m", "launcher": "process",
                                                     "load": {"concurrency": 4, "requests": 14},
                                                     "workload": {"input_tokens": 128, "output_tokens": 50}},
                                          "host": {"gpus": []}})
    df = add_costs(load_dirs([f"A={tmp_path / 'A'}", f"B={tmp_path / 'B'}"]), price_book(["cpu=1"]))
    row = comparison_table(df).df.iloc[0]
    assert row["comparable"].startswith("no: B ") and "failed (3 of 14 requests failed)" in row["comparable"]
    assert math.isnan(row["delta_throughput_pct"]) and row["verdict"] == "-"


def test_repeats_are_compared_as_their_means_on_both_sides():
    from servebench.decide.load import merge_repeats
    from servebench.outputs.summary_tables import comparison_table

    d = add_costs(load_dir(SWEEP), price_book())
    two = d[d["cell"].isin(["g00-c005-r0", "g02-c005-r0"])]
    rows = []
    for src, cell in (("A", "g00-c005-r0"), ("B", "g02-c005-r0")):
        for k, f in enumerate((0.9, 1.1)):  # two repeats: 90 % and 110 % of the measured throughput
            r = two[two["cell"] == cell].iloc[0].copy()
            r["source"], r["baseline"], r["repeat"] = src, src == "A", k
            r["output_token_throughput"] *= f
            rows.append(r)
    t = comparison_table(merge_repeats(pd.DataFrame(rows)))
    a, b = (two[two["cell"] == c].iloc[0]["output_token_throughput"] for c in ("g00-c005-r0", "g02-c005-r0"))
    assert len(t.df) == 1 and t.df.iloc[0]["delta_throughput_pct"] == pytest.approx((b / a - 1) * 100)
