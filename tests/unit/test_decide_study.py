"""The study's three tables rebuilt by recommend from its own inputs (tok/s, ms/token, instance):
every published row comes back in its table, with minutes and $ computed from the catalog price."""

from __future__ import annotations

import json

import pytest

from servebench.decide.load import load_dir
from servebench.decide.prices import price_book
from servebench.decide.recommend import add_costs, study_tables
from tests.unit.test_decide_cost import STUDY_ROWS

GPUS = {"ml.g5.2xlarge": ("a10g", 1), "ml.g5.12xlarge": ("a10g", 4), "ml.p4d.24xlarge": ("a100-40gb", 8)}


def dist(v):
    return {k: v for k in ("mean", "p50", "p90", "p95", "p99", "min", "max")} | {"std": 0.0, "n": 100}


def study_sweep(tmp_path):
    groups, cells = {}, []
    for model, quant, inst, users, ms_tok, tps, _, _ in STUDY_ROWS:
        key = (model, quant, inst)
        if key not in groups:
            gpu, n = GPUS[inst]
            groups[key] = {"id": f"g{len(groups):02d}", "status": "done", "error": None,
                           "server": {"engine": "tgi", "model": f"llama-2-{model.lower()}", "quantization": quant,
                                      "hardware": gpu, "instance_type": inst, "gpu_count": n, "label": None}}
        gid = groups[key]["id"]
        cid = f"{gid}-c{users:04d}-r0"
        run = tmp_path / "runs" / cid
        run.mkdir(parents=True)
        load = {"mode": "concurrency", "concurrency": users, "rate": None, "requests": 100}
        summary = {"schema_version": 1, "status": "complete", "completed": 100, "failed": 0, "error_rate": 0.0,
                   "duration_s": 90.0, "request_throughput": tps / 50, "output_token_throughput": tps,
                   "total_token_throughput": tps * 3, "ttft_ms": dist(100.0), "tpot_ms": dist(ms_tok),
                   "itl_ms": dist(ms_tok), "e2e_ms": dist(ms_tok * 50), "ms_per_token": dist(ms_tok),
                   "input_tokens": {"total": 10000}, "output_tokens": {"total": 5000}}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "run.json").write_text(json.dumps({"cell": {"id": cid, "group": gid, "server": groups[key]["server"], "load": load}}))
        cells.append({"id": cid, "group": gid, "load": load, "status": "done", "error": None, "run_dir": f"runs/{cid}"})
    (tmp_path / "index.json").write_text(json.dumps({"schema_version": 1, "kind": "sweep", "name": "study",
                                                     "groups": list(groups.values()), "cells": cells}))
    return tmp_path


def test_study_tables_come_back_with_computed_cost(tmp_path):
    df = add_costs(load_dir(study_sweep(tmp_path)), price_book())
    tables = {t.key: t.df.set_index("model") for t in study_tables(df, at={"cost": 5, "latency": 1, "throughput": 20})}
    want = {"cost": 5, "latency": 1, "throughput": 20}
    for model, quant, inst, users, ms_tok, tps, pub_min, pub_usd in STUDY_ROWS:
        table = next(k for k, lvl in want.items() if lvl == users)
        row = tables[table].loc[f"llama-2-{model.lower()}"]
        assert (row["where"], row["concurrency"], row["ms_per_token_p50"], row["output_token_throughput"]) == (inst, users, ms_tok, tps)
        assert (row["quantization"] if row["quantization"] == row["quantization"] else None) == quant
        assert row["min_per_1m"] == pytest.approx(1e6 / tps / 60)
        assert row["usd_per_1m"] == pytest.approx(row["usd_per_hour"] / (tps * 3600 / 1e6))
    # The row whose published minutes do not follow from its throughput: the computed value is shown.
    r = tables["throughput"].loc["llama-2-7b"]
    assert round(r["min_per_1m"], 2) == 37.04 and round(r["usd_per_1m"], 2) == 4.38
    # The headline: lowest latency 16.8 ms/token (7B, ml.g5.12xlarge, 1 user).
    lat = tables["latency"]
    assert lat["ms_per_token_p50"].min() == 16.81 and lat["ms_per_token_p50"].idxmin() == "llama-2-7b"
