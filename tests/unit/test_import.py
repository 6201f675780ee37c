"""servebench import: real files of vllm bench serve, AIPerf and guidellm (tests/fixtures/imports/,
made against vLLM CPU here: see its README) and the seed study's published rows, read back by
cost, recommend, report and estimate --calibrate."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from servebench.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "imports"
STUDY = ROOT / "studies" / "published" / "hf-sagemaker-llama2.csv"


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def imported(tmp_path: Path, fmt: str, *extra: str) -> Path:
    out = tmp_path / "imp"
    r = cli("import", FIX / f"{fmt}.json", "--from", fmt, "-o", out, *extra)
    assert r.exit_code == 0, r.output
    (run,) = [p for p in out.iterdir()]
    return run


def files(run: Path) -> tuple[dict, dict]:
    return json.loads((run / "run.json").read_text()), json.loads((run / "summary.json").read_text())


def test_vllm_bench_per_request_figures_match_its_own(tmp_path):
    src = json.loads((FIX / "vllm-bench.json").read_text())
    run, s = files(imported(tmp_path, "vllm-bench"))
    assert run["source"] == {"tool": "vllm bench serve", "version": None, "file": str(FIX / "vllm-bench.json"), "command": None}
    assert s["completed"] == src["completed"] == 50 and s["failed"] == 0
    assert s["output_token_throughput"] == pytest.approx(src["output_throughput"])
    # recomputed from the per-request lists, servebench's way; vLLM's own aggregates agree
    for ours, theirs in (("ttft_ms", "ttft"), ("tpot_ms", "tpot"), ("e2e_ms", "e2el")):
        assert s[ours]["p50"] == pytest.approx(src[f"median_{theirs}_ms"], rel=1e-9)
        assert s[ours]["mean"] == pytest.approx(src[f"mean_{theirs}_ms"], rel=1e-9)
        assert s[ours]["p99"] == pytest.approx(src[f"p99_{theirs}_ms"], rel=1e-9)
    lat = sorted(l * 1000 / n for l, n in zip(src["latencies"], src["output_lens"]))
    assert s["ms_per_token"]["min"] == pytest.approx(lat[0]) and s["ms_per_token"]["n"] == 50
    assert run["cell"]["load"]["mode"] == "concurrency" and run["cell"]["load"]["concurrency"] == 4
    assert run["engine"] == {"name": None, "version": None}  # vllm bench does not say; nothing invented


def test_aiperf_names_mapped_and_missing_left_null(tmp_path):
    src = json.loads((FIX / "aiperf.json").read_text())
    run, s = files(imported(tmp_path, "aiperf", "--engine", "vllm", "--gpu", "cpu", "--gpu-count", "0"))
    assert run["source"]["tool"] == "aiperf" and run["source"]["version"] == "0.13.0"
    assert run["source"]["command"].startswith("aiperf profile")
    assert s["ttft_ms"]["p50"] == src["time_to_first_token"]["p50"]
    assert s["tpot_ms"]["mean"] == src["inter_token_latency"]["avg"]  # AIPerf's ITL is per request: TPOT
    # 1338 chunk gaps for 1550 token gaps: AIPerf's per-chunk ITL is not servebench's per-token one
    assert all(v is None for v in s["itl_ms"].values())
    assert any("inter_chunk_latency has 1338 chunk gaps" in n for n in run["notes"])
    assert s["e2e_ms"]["p50"] == src["request_latency"]["p50"]
    assert all(v is None for v in s["ms_per_token"].values())
    assert s["output_token_throughput"] == src["output_token_throughput"]["avg"] and s["completed"] == 50
    assert run["cell"]["server"]["engine"] == "vllm"
    assert any("given on the command line" in n for n in run["notes"])


def test_guidellm_tpot_is_servebench_ms_per_token(tmp_path):
    src = json.loads((FIX / "guidellm.json").read_text())
    m = src["benchmarks"][0]["metrics"]
    run, s = files(imported(tmp_path, "guidellm"))
    assert run["source"]["version"] == "0.8.1"
    # recomputed per request as servebench computes its own: to the response's end, where
    # guidellm's per-request figures end at the last token (a fraction of a per cent apart here)
    reqs = src["benchmarks"][0]["requests"]["successful"]
    e2e = [r["request_latency"] * 1000 for r in reqs]
    assert s["ms_per_token"]["mean"] == pytest.approx(sum(ms / r["output_tokens"] for ms, r in zip(e2e, reqs)) / len(reqs))
    tpot = [(ms - r["time_to_first_token_ms"]) / (r["output_tokens"] - 1) for ms, r in zip(e2e, reqs)]
    assert s["tpot_ms"]["mean"] == pytest.approx(sum(tpot) / len(tpot))
    assert s["ms_per_token"]["mean"] == pytest.approx(m["time_per_output_token_ms"]["successful"]["mean"], rel=0.01)
    assert s["tpot_ms"]["mean"] == pytest.approx(m["inter_token_latency_ms"]["successful"]["mean"], rel=0.01)
    assert s["ttft_ms"]["mean"] == pytest.approx(m["time_to_first_token_ms"]["successful"]["mean"], rel=1e-6)
    assert all(v is None for v in s["itl_ms"].values())  # guidellm keeps no token gaps
    assert s["output_token_throughput"] == pytest.approx(m["output_tokens_per_second"]["successful"]["mean"])
    assert run["cell"]["load"]["concurrency"] == 4 and run["cell"]["load"]["output_tokens"] == 32


def test_cost_recommend_report_and_estimate_read_imports(tmp_path):
    out = tmp_path / "imp"
    for fmt in ("vllm-bench", "aiperf", "guidellm"):
        r = cli("import", FIX / f"{fmt}.json", "--from", fmt, "-o", out, "--engine", "vllm", "--gpu", "cpu")
        assert r.exit_code == 0, r.output
    r = cli("cost", out, "--price", "cpu=1", "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert len(rows) == 3 and all(float(x["usd_per_1m"]) > 0 for x in rows)
    r = cli("recommend", out, "--price", "cpu=1", "--format", "csv")
    assert r.exit_code == 0, r.output
    tables = {x["table"] for x in csv.DictReader(io.StringIO(r.output))}
    assert {"cost", "latency", "throughput"} <= tables
    r = cli("report", out / "aiperf", "--format", "md")  # one imported run: a table report, not a records report
    assert r.exit_code == 0, r.output
    assert "vllm/tiny/cpu" in r.output
    r = cli("estimate", "--model", "tiny", "--gpu", "cpu", "--calibrate", out, "--concurrency", "4",
            "--input-tokens", "64", "--output-tokens", "32")
    assert r.exit_code == 0, r.output
    assert "calibrated on 3 run(s)" in r.output


def _study_tables(tmp_path, *prices: str) -> dict[tuple[str, str], dict]:
    out = tmp_path / "pub"
    r = cli("import", STUDY, "--from", "table", "-o", out)
    assert r.exit_code == 0, r.output
    args = ["recommend", out, "--at", "cost=5,latency=1,throughput=20", "--format", "csv"]
    for p in prices:
        args += ["--price", p]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    rows = [x for x in csv.DictReader(io.StringIO(r.output)) if x["table"] in ("cost", "latency", "throughput")]
    return {(x["table"], x["model"]): x for x in rows}


# The study's three tables: (table, model) -> (quant, instance, users, ms/token, tok/s, printed $/1M)
STUDY_ROWS = {
    ("cost", "llama-2-7b"): ("gptq", "ml.g5.2xlarge", 5, 34.25, 120.09, 3.50),
    ("cost", "llama-2-13b"): ("gptq", "ml.g5.2xlarge", 5, 56.24, 71.71, 5.87),
    ("cost", "llama-2-70b"): ("gptq", "ml.g5.12xlarge", 5, 138.35, 33.33, 59.08),
    ("latency", "llama-2-7b"): ("", "ml.g5.12xlarge", 1, 16.81, 61.46, 32.05),
    ("latency", "llama-2-13b"): ("", "ml.g5.12xlarge", 1, 21.00, 47.16, 41.76),
    ("latency", "llama-2-70b"): ("", "ml.p4d.24xlarge", 1, 41.35, 24.51, 427.05),
    ("throughput", "llama-2-7b"): ("", "ml.g5.12xlarge", 20, 43.99, 449.94, 3.97),
    ("throughput", "llama-2-13b"): ("", "ml.p4d.24xlarge", 20, 67.40, 668.02, 15.67),
    ("throughput", "llama-2-70b"): ("", "ml.p4d.24xlarge", 20, 59.80, 321.54, 32.56),
}


def test_study_three_tables_reproduced_from_published_rows(tmp_path):
    got = _study_tables(tmp_path, "ml.g5.2xlarge=1.515", "ml.p4d.24xlarge=37.688")
    assert set(got) == set(STUDY_ROWS)  # one row per model size in each table
    for key, (quant, where, users, ms, tps, usd) in STUDY_ROWS.items():
        r = got[key]
        assert (r["quantization"], r["where"], float(r["concurrency"])) == (quant, where, users), key
        assert float(r["ms_per_token_p50"]) == ms and float(r["output_token_throughput"]) == tps
        computed = float(r["usd_per_1m"])
        if key == ("throughput", "llama-2-7b"):  # the study's one inconsistent row: computed, not copied
            assert round(computed, 2) == 4.38
            continue
        # tok/s is printed to 0.01: the $ per 1M it gives can move by that share of itself
        assert abs(computed - usd) <= usd * 0.005 / tps + 0.005, (key, computed, usd)


def test_printed_prices_are_the_default_and_price_overrides(tmp_path):
    got = _study_tables(tmp_path)
    assert float(got[("cost", "llama-2-7b")]["usd_per_hour"]) == 1.52  # the row's own price, not the catalog's
    assert round(float(got[("cost", "llama-2-7b")]["usd_per_1m"]), 2) == 3.52  # the rounded price's $/1M


def test_published_row_lacks_what_the_table_does_not_give(tmp_path):
    out = tmp_path / "pub"
    assert cli("import", STUDY, "--from", "table", "-o", out).exit_code == 0
    run, s = files(sorted(out.iterdir())[0])
    assert s["completed"] is None and s["duration_s"] is None and s["request_throughput"] is None
    assert s["ms_per_token"]["p50"] == 34.25 and s["ms_per_token"]["mean"] is None
    assert all(v is None for v in s["e2e_ms"].values())
    assert run["source"]["tool"] == "table" and run["source"]["publisher"] == "Hugging Face"
    assert run["price"]["usd_per_hour"] == 1.52 and run["engine"] == {"name": "tgi", "version": "1.0.3"}


def test_estimate_calibrates_on_published_rows_or_says_per_row_why_not(tmp_path):
    """A published row has no request count; it is still a measured point at a stated load."""
    bare = tmp_path / "bare"
    assert cli("import", STUDY, "--from", "table", "-o", bare).exit_code == 0
    r = CliRunner().invoke(main, ["estimate", "--model", "llama-2-7b", "--gpu", "a10g", "--calibrate", str(bare)])
    assert r.exit_code != 0 and "error: no usable calibration run" in r.output
    skipped = [ln for ln in r.output.splitlines() if "calibration: skipped" in ln]
    assert len(skipped) == 9 and all("no input length in the source" in ln for ln in skipped)  # the study gives none
    given = tmp_path / "given"
    assert cli("import", STUDY, "--from", "table", "--input-tokens", "256", "-o", given).exit_code == 0
    r = cli("estimate", "--model", "llama-2-7b", "--gpu", "a10g", "--calibrate", given)
    assert r.exit_code == 0, r.output
    assert "calibrated on 9 run(s) (a100-40gb-sxm, a10g)" in r.output and "skipped" not in r.output
    from servebench.estimate.efficiency import load_observation

    obs = load_observation(sorted(given.iterdir())[0])  # 7B gptq, 5 users on ml.g5.2xlarge
    assert obs.measured == {"ms_per_token": 34.25, "output_tok_s": 120.09}  # the table's median, its tok/s
    assert (obs.concurrency, obs.n_in, obs.n_out, obs.lockstep, obs.engine) == (5.0, 256.0, 50.0, False, "tgi")


@pytest.mark.parametrize("text, why", [
    ("model,load,tokens_per_s,colour\nm,closed,1,red\n", "unknown column 'colour'"),
    ("model,load,tokens_per_s\nm,open,1\n", "load 'open'"),
    ("model,load,tokens_per_s\nm,closed,\n", "has no measurement"),
    ("model,load,tokens_per_s\nm,closed,fast\n", "tokens_per_s 'fast' is not a number"),
])
def test_bad_table_one_line_error(tmp_path, text, why):
    f = tmp_path / "t.csv"
    f.write_text(text)
    r = CliRunner().invoke(main, ["import", str(f), "--from", "table", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and why in r.output and r.output.startswith("error: ")
    assert not (tmp_path / "o").exists()


def test_wrong_format_and_existing_output_refused(tmp_path):
    r = CliRunner().invoke(main, ["import", str(FIX / "aiperf.json"), "--from", "guidellm", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not a guidellm report" in r.output
    imported(tmp_path, "aiperf")
    r = CliRunner().invoke(main, ["import", str(FIX / "aiperf.json"), "--from", "aiperf", "-o", str(tmp_path / "imp")])
    assert r.exit_code == 2 and "exists" in r.output


def test_yaml_table_and_rate_without_rate(tmp_path):
    f = tmp_path / "rows.yaml"
    f.write_text("rows:\n  - {model: m-7b, load: rate, tokens_per_s: 100, gpu: a10g, gpu_count: 1, usd_per_hour: 1.0}\n")
    assert cli("import", f, "--from", "table", "-o", tmp_path / "o").exit_code == 0
    r = cli("cost", tmp_path / "o", "--format", "csv")
    row = next(csv.DictReader(io.StringIO(r.output)))
    assert row["load_level"] == "rate not stated" and float(row["usd_per_hour"]) == 1.0


def test_stated_price_beats_catalog_and_price_beats_stated(tmp_path):
    f = tmp_path / "rows.csv"
    f.write_text("source,model,instance,load,concurrency,tokens_per_s,usd_per_hour\nVendor,m-7b,ml.g5.2xlarge,closed,1,100,2.0\n")
    assert cli("import", f, "--from", "table", "-o", tmp_path / "o").exit_code == 0
    row = next(csv.DictReader(io.StringIO(cli("cost", tmp_path / "o", "--format", "csv").output)))
    assert float(row["usd_per_hour"]) == 2.0 and "Vendor (as published)" in row["price_source"]  # catalog says 1.52
    row = next(csv.DictReader(io.StringIO(cli("cost", tmp_path / "o", "--price", "ml.g5.2xlarge=3", "--format", "csv").output)))
    assert float(row["usd_per_hour"]) == 3.0


def test_stated_lengths_fill_only_what_the_file_lacks(tmp_path):
    run, _ = files(imported(tmp_path, "vllm-bench", "--output-tokens", "32", "--input-tokens", "999"))
    load = run["cell"]["load"]
    assert load["output_tokens"] == 32  # vllm bench records no requested output length
    assert load["input_tokens"] == 64  # the file's own prompt lengths win over the option
    assert any("output_tokens 32: given on the command line" in n for n in run["notes"])


def test_guidellm_sampled_requests_use_its_own_distributions(tmp_path):
    """guidellm --sample-requests N keeps N requests in the file: their p99 is not the run's."""
    src = json.loads((FIX / "guidellm.json").read_text())
    b = src["benchmarks"][0]
    b["requests"]["successful"] = b["requests"]["successful"][:20]
    f = tmp_path / "sampled.json"
    f.write_text(json.dumps(src))
    r = cli("import", f, "--from", "guidellm", "-o", tmp_path / "imp")
    assert r.exit_code == 0, r.output
    run, s = files(tmp_path / "imp" / "sampled")
    ttft, lat = b["metrics"]["time_to_first_token_ms"]["successful"], b["metrics"]["request_latency"]["successful"]
    assert s["ttft_ms"]["p99"] == pytest.approx(ttft["percentiles"]["p99"]) and s["ttft_ms"]["n"] == 50
    assert s["e2e_ms"]["p50"] == pytest.approx(lat["median"] * 1000.0)
    assert s["output_tokens"]["total"] == 1600
    assert all(v is None for v in s["tpot_ms"].values()) and all(v is None for v in s["ms_per_token"].values())
    assert any("keeps 20 of 50" in n for n in run["notes"])


def test_itl_of_tokens_read_together_is_kept_and_said(tmp_path):
    """A real AIPerf file whose ITL median is 0 (events that arrived in one read): its figure is
    AIPerf's and stays, with a note that it describes reads, not the server's pace."""
    r = cli("import", FIX / "aiperf-grouped.json", "--from", "aiperf", "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    run, s = files(tmp_path / "o" / "aiperf-grouped")
    assert s["itl_ms"]["p50"] == 0.0 and s["tpot_ms"]["p50"] == pytest.approx(3.6460, abs=1e-4)
    (note,) = [n for n in run["notes"] if "ITL p50" in n]
    assert "at least half the token gaps are ~0" in note and note in s["warnings"]
    _, fine = files(imported(tmp_path, "aiperf"))  # the ordinary file: no such note
    assert not any("ITL p50" in w for w in fine["warnings"])


def test_vllm_itl_is_per_chunk_so_kept_only_when_a_chunk_is_a_token(tmp_path):
    """vLLM's itls are one gap per streamed chunk; servebench's ITL is one per token."""
    src = json.loads((FIX / "vllm-bench.json").read_text())
    assert sum(map(len, src["itls"])) == 1449 != sum(n - 1 for n in src["output_lens"])  # chunks of several tokens
    run, s = files(imported(tmp_path, "vllm-bench"))
    assert all(v is None for v in s["itl_ms"].values()) and any("1449 chunk gaps" in n for n in run["notes"])
    one = dict(src, itls=[[0.002] * (n - 1) for n in src["output_lens"]])  # one token per chunk: the same
    f = tmp_path / "one.json"
    f.write_text(json.dumps(one))
    assert cli("import", f, "--from", "vllm-bench", "-o", tmp_path / "o").exit_code == 0
    _, s = files(tmp_path / "o" / "one")
    assert s["itl_ms"]["mean"] == pytest.approx(2.0) and s["itl_ms"]["n"] == 1550
    # aggregates only (no --save-detailed): the chunk rule cannot be checked, so no ITL is kept
    agg = {k: v for k, v in src.items() if k not in ("itls", "ttfts", "output_lens", "input_lens", "generated_texts",
                                                      "errors", "start_times")}
    f = tmp_path / "agg.json"
    f.write_text(json.dumps(agg))
    assert cli("import", f, "--from", "vllm-bench", "-o", tmp_path / "a").exit_code == 0
    run, s = files(tmp_path / "a" / "agg")
    assert all(v is None for v in s["itl_ms"].values()) and src["mean_itl_ms"] is not None
    assert s["ttft_ms"]["mean"] == pytest.approx(src["mean_ttft_ms"]) and any("ITL not kept" in n for n in run["notes"])
