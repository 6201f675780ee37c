"""`servebench recommend` and `servebench report` as a user runs them (subprocess, real files)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "tests/fixtures/decide/sweep"
EMU = ROOT / "results/reference/emulator-sweep"
RUN = ROOT / "results/reference/20261121-075723-burst-1000x512-tiny"


def sb(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "servebench.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_recommend_console_states_failures_ties_and_prices():
    p = sb("recommend", SWEEP, "--slo", "ttft_p95<=1ms", "--target-rps", "10", "--goodput", "ttft:500", "tpot:50", "e2el:2000")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for needle in ("Most cost-effective deployment", "Lowest latency deployment", "Highest throughput deployment",
                   "under SLO ttft_p95<=1ms", "never met the SLO", "tie (±", "no price for", "not ranked: ",
                   "Pareto front", "Capacity for 10 req/s", "Goodput"):
        assert needle in out, needle


def test_recommend_csv_carries_the_numbers_unrounded(tmp_path):
    out = tmp_path / "rec.csv"
    p = sb("recommend", SWEEP, "--format", "csv", "-o", out, "--price", "ml.g5.2xlarge=1.41")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out)
    cost = df[df["table"] == "cost"].set_index("model")
    tp = cost.loc["llama-7b", "output_token_throughput"]
    assert cost.loc["llama-7b", "usd_per_hour"] == 1.41
    assert cost.loc["llama-7b", "usd_per_1m"] == pytest.approx(1.41 / (tp * 3600 / 1e6), rel=1e-9)
    assert (df["table"] == "cost:note").any()


def test_report_markdown_of_two_inputs_compares_against_the_baseline(tmp_path):
    out = tmp_path / "r.md"
    p = sb("report", f"fixture={SWEEP}", f"emulators={EMU}", "--format", "md", "-o", out, "--price", "cpu=0.1")
    assert p.returncode == 0, p.stderr
    md = out.read_text()
    assert "## Against the baseline (fixture)" in md and "## All runs" in md and "## Reproduction metadata" in md
    assert "| emulators |" in md and "## Most cost-effective deployment" in md


def test_report_csv_of_a_sweep_has_runs_and_metadata():
    p = sb("report", EMU, "--format", "csv", "--price", "cpu=0.1")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(io.StringIO(p.stdout))
    runs = df[df["table"] == "runs"]
    assert len(runs) == 6 and runs["usd_per_1m"].notna().all()
    meta = df[df["table"] == "metadata"]
    assert len(meta) == 6 and meta["engine"].str.startswith("emulator-").all()


def test_single_run_console_report_is_unchanged():
    p = sb("report", RUN)
    assert p.returncode == 0, p.stderr
    assert "Throughput" in p.stdout and "Latency (ms)" in p.stdout and "vllm" in p.stdout


def test_sweep_console_report_and_html_default_name(tmp_path):
    p = sb("report", SWEEP)
    assert p.returncode == 0 and "All runs" in p.stdout and "Reproduction metadata" in p.stdout
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "report", str(EMU), "--format", "html"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert p.returncode == 0, p.stderr
    html = (tmp_path / "report.html").read_text()
    assert "<script src=" not in html and "cdn." not in html.split("</head>")[1]  # nothing fetched from a network


@pytest.mark.parametrize("args,msg", [
    (("recommend", "/no/such/dir"), "not a directory"),
    (("recommend", SWEEP, "--slo", "ttft<<1"), "SLO bound"),
    (("recommend", SWEEP, "--price", "ml.g5.2xlarge=cheap"), "--price"),
    (("recommend", SWEEP, "--target-rps", "0"), "target-rps"),
    (("report", SWEEP, "--at", "speed=3"), "--at"),
    (("report", "/no/such/dir", "--format", "md"), "not a directory"),
    (("report", RUN, "--target-rps", "0"), "--target-rps must be > 0"),  # 0 is given, not absent
    (("report", RUN, "--trace-growth", "0"), "--trace-growth must be > 0"),
    (("report", RUN, "--max-error-rate", "5"), "--max-error-rate must be between 0 and 1"),
    (("report", RUN, "--price", ROOT / "tests/fixtures/decide/not-utf8.yaml"), "not UTF-8 text (byte 0xff at offset 0)"),
    (("sweep", ROOT / "tests/fixtures/decide/not-utf8.yaml", "--dry-run"), "not UTF-8 text (byte 0xff at offset 0)"),
])
def test_bad_input_is_one_line(args, msg):
    p = sb(*args)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and msg in errors[0], p.stderr


def test_cost_catalog_lists_every_price_with_its_source():
    p = sb("cost", "--catalog", "--format", "csv", "--price", "ml.g5.2xlarge=1.41")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(io.StringIO(p.stdout))
    inst = df[df["table"] == "instances"].set_index("name")
    assert inst.loc["ml.g5.2xlarge", "usd_per_hour"] == 1.41 and "user" in inst.loc["ml.g5.2xlarge", "source"]
    assert inst.loc["ml.p4d.24xlarge", "usd_per_hour"] == 37.69
    assert df["source"].notna().all()


def test_cost_of_runs_states_missing_prices():
    p = sb("cost", SWEEP, "--format", "md")
    assert p.returncode == 0, p.stderr
    assert "vllm/llama-7b/gptq/mystery-gpu: no price (give --price)" in p.stdout


def test_recommend_and_report_on_a_fresh_compare(tmp_path):
    """`servebench compare` (emulated engines, launched as processes) then recommend/report on its
    directory: the format the compare command writes today is the one read here."""
    import yaml

    spec = yaml.safe_load((ROOT / "tests/fixtures/specs/emulated.yaml").read_text())
    names = []
    for name, args in (("quick", ["--ttft-ms", "5", "--itl-ms", "1"]), ("slower", ["--ttft-ms", "40", "--itl-ms", "3"])):
        s = {**spec, "name": name, "process": {**spec["process"], "args": spec["process"]["args"] + args}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(s))
        names.append(str(tmp_path / f"{name}.yaml"))
    p = sb("compare", "--backends", ",".join(names), "--model", "tiny", "--concurrency", "1,2", "--requests", "6",
           "--input-tokens", "16", "--output-tokens", "8", "--warmup", "1", "--results-dir", tmp_path / "r",
           "--name", "cmp", "--no-telemetry", timeout=300)
    assert p.returncode == 0, p.stderr
    d = tmp_path / "r" / "cmp"
    p = sb("recommend", d, "--price", "cpu=0.2", "--format", "csv", "--slo", "ttft_p95<=20ms")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(io.StringIO(p.stdout))
    best = df[df["table"] == "latency"].iloc[0]
    assert best["config"].startswith("quick/tiny") and best["where"] == "cpu"
    assert df[(df["table"] == "cost_slo:note")]["note"].str.contains("slower/tiny: never met the SLO").any()
    p = sb("report", d, "--format", "md", "--price", "cpu=0.2")
    assert p.returncode == 0 and p.stdout.count("| cmp |") == 2 * 4, p.stdout[-2000:]  # all runs + metadata


def test_a_sweep_whose_every_server_failed_is_reported_not_a_traceback(tmp_path):
    (tmp_path / "s.yaml").write_text(
        f"name: dead\nresults_dir: {tmp_path}\nservers: [{{engine: vllm, endpoint: 'http://127.0.0.1:1'}}]\n"
        "load: {concurrency: [1], requests: 2, warmup: 0}\ntelemetry: false\n")
    assert sb("sweep", str(tmp_path / "s.yaml")).returncode == 1
    for cmd in ("report", "recommend", "cost"):
        p = sb(cmd, str(tmp_path / "dead"))
        assert "Traceback" not in p.stderr and p.returncode == 0, (cmd, p.stderr[-500:])
    assert "no measured run to rank" in sb("recommend", str(tmp_path / "dead")).stdout
