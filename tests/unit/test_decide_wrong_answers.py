"""Issue 18, "wrong answers with no warning": each test reproduces what a new user met on the
committed results (results/reference/: a standalone burst run, the cpu-reference sweep, the
emulator sweep) and checks that the answer is now right or says why it is not."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "results/reference"
BURST = REF / "20261121-075723-burst-1000x512-tiny"
CPU = REF / "cpu-reference"
SWEEP = ROOT / "tests/fixtures/decide/sweep"


def sb(*args, env=None, timeout=180):
    full = {**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "servebench.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full)


def tables(p) -> pd.DataFrame:
    assert p.returncode == 0, p.stderr
    return pd.read_csv(io.StringIO(p.stdout))


# --- a directory is searched for everything beneath it ---------------------------------------

def test_recommend_on_a_results_folder_reads_its_sweeps_too():
    df = tables(sb("recommend", REF, "--format", "csv"))
    lat = df[df["table"] == "latency"].set_index("model")
    # cpu-reference's llama.cpp q8_0 at 1 concurrent: 1.75 ms/token, not the burst run's 77.77
    assert lat.loc["tiny", "ms_per_token_p50"] == pytest.approx(1.75, abs=0.005)
    assert lat.loc["tiny", "config"] == "llamacpp/tiny/q8_0/cpu"


def test_report_on_a_results_folder_lists_every_run_beneath_it():
    runs = tables(sb("report", REF, "--format", "csv"))
    runs = runs[runs["table"] == "runs"]
    assert len(runs) == 1 + 8 + 6  # the burst run, cpu-reference's 8 cells, emulator-sweep's 6
    assert runs["status"].eq("complete").all()


def test_what_cannot_be_read_beneath_a_folder_is_named_with_why(tmp_path):
    shutil.copytree(BURST, tmp_path / "a" / "burst")
    (tmp_path / "b" / "broken-sweep").mkdir(parents=True)
    (tmp_path / "b" / "broken-sweep" / "index.json").write_text("{not json")
    (tmp_path / "c").mkdir()
    shutil.copy(BURST / "requests.parquet", tmp_path / "c" / "requests.parquet")
    df = tables(sb("report", tmp_path, "--format", "csv"))
    runs = df[df["table"] == "runs"].set_index("config")
    assert runs.loc["vllm/tiny/cpu", "status"] == "complete"
    assert runs.loc["b/broken-sweep", "status"] == "skipped" and runs.loc["c", "status"] == "skipped"
    notes = " ".join(df.loc[df["table"] == "cost:note", "note"])
    assert "b/broken-sweep" in notes and "cannot read" in notes
    assert "c: skipped: measurements without run.json or summary.json" in notes
    rec = sb("recommend", tmp_path, "--slo", "ttft_p95<=1000ms")
    assert "b/broken-sweep: skipped: cannot read" in rec.stdout and "b/broken-sweep: never met" not in rec.stdout
    assert "b/broken-sweep: no price" not in sb("cost", tmp_path).stdout
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "c")
    p = sb("recommend", tmp_path)  # nothing readable at all: one line, not an empty table
    assert p.returncode == 1 and p.stderr.startswith("error: ") and "nothing readable beneath it" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# --- report compares level by level, says which way is better --------------------------------

def test_report_of_different_loads_gives_no_difference_and_says_why(tmp_path):
    out = tmp_path / "r.md"
    p = sb("report", f"A={BURST}", f"B={CPU / 'runs/g00-c0001-r0'}", "--format", "md", "-o", out)
    assert p.returncode == 0, p.stderr
    md = out.read_text()
    assert "-97.52" not in md and "-92.22" not in md
    row = next(line for line in md.splitlines() if line.startswith("| B |"))
    assert "no: load 1 concurrent vs burst 1000; tokens in/out 256/32 vs 512/128" in row
    assert "no baseline run at the same load" in md


def test_a_standalone_run_and_a_sweep_cell_of_one_configuration_share_a_label():
    df = tables(sb("report", f"A={BURST}", f"B={CPU / 'runs/g00-c0001-r0'}", "--format", "csv"))
    runs = df[df["table"] == "runs"].set_index("source")
    assert runs.loc["A", "config"] == runs.loc["B", "config"] == "vllm/tiny/cpu"


def test_labels_are_the_sweeps_labels():
    from servebench.decide.names import config_label
    from servebench.sweep.config import ServerPoint

    for kw in ({"engine": "vllm", "hardware": "cpu", "gpu_count": 0},
               {"engine": "tgi", "model": "llama-7b", "quantization": "gptq", "instance_type": "ml.g5.12xlarge", "gpu_count": 4},
               {"engine": "vllm", "hardware": "a100", "gpu_count": 2, "server_args": ["--tp", "2"]},
               {"engine": "my-engine.yaml", "model": "m", "hardware": "a10g", "gpus": [0, 1, 2]}):
        sp = ServerPoint(**kw)
        server = {**sp.model_dump(), "engine_args": sp.server_args, "label": None}
        assert config_label(server) == sp.label


def test_report_compares_the_same_load_and_says_which_way_is_better():
    a, b = CPU / "runs/g00-c0001-r0", CPU / "runs/g01-c0001-r0"  # vllm and transformers at 1 concurrent
    df = tables(sb("report", f"A={a}", f"B={b}", "--format", "csv"))
    row = df[df["table"] == "comparison"].iloc[0]
    assert row["comparable"] == "yes" and row["baseline"] == "A: vllm/tiny/cpu @ 1 concurrent"
    mine = json.loads((b / "summary.json").read_text())
    base = json.loads((CPU / "runs/g00-c0001-r0/summary.json").read_text())
    tput = (mine["output_token_throughput"] / base["output_token_throughput"] - 1) * 100
    lat = (mine["ms_per_token"]["p50"] / base["ms_per_token"]["p50"] - 1) * 100
    assert row["delta_throughput_pct"] == pytest.approx(tput) and tput < 0
    assert row["delta_latency_pct"] == pytest.approx(lat) and lat < 0
    assert row["verdict"] == "better: latency; worse: throughput"
    md = sb("report", f"A={a}", f"B={b}", "--format", "md").stdout
    assert "throughput vs baseline % (higher is better)" in md and "latency vs baseline % (lower is better)" in md


# --- --at and unpriced runs ---------------------------------------------------------------

def test_at_a_level_not_measured_lists_the_levels_that_exist():
    p = sb("recommend", CPU, "--at", "cost=5,latency=1", "--price", "cpu=0.1")
    assert p.returncode == 0, p.stderr
    assert "tiny: no measured run at 5 concurrent to rank (concurrency levels measured: 1, 4)" in p.stdout
    assert "Lowest latency deployment at 1 concurrent" in p.stdout


def test_unpriced_runs_are_called_unpriced():
    p = sb("recommend", CPU, "--format", "md")
    assert p.returncode == 0, p.stderr
    cost = p.stdout.split("## Most cost-effective deployment")[1].split("## ")[0]
    assert "every run unpriced" in cost and "give --price" in cost
    assert "no measured run" not in cost


# --- ordering, number formats, console width --------------------------------------------

def test_models_sort_by_size_not_as_text():
    from servebench.decide.names import size_key

    names = ["llama-2-70b", "llama-2-13b", "llama-2-7b", "tiny", "opt-1.3b", "smollm-135m"]
    assert sorted(names, key=size_key) == ["smollm-135m", "opt-1.3b", "llama-2-7b", "llama-2-13b", "llama-2-70b", "tiny"]
    df = tables(sb("recommend", SWEEP, "--format", "csv"))
    assert df.loc[df["table"] == "latency", "model"].tolist() == ["llama-7b", "llama-13b"]


def test_one_number_format_per_column():
    from servebench.outputs import render
    from servebench.outputs.table import Table

    t = Table("x", "x", pd.DataFrame({"usd_per_hour": [0.1, 1.52, float("nan")], "n": [24.0, 1000.0, 3.0],
                                       "j": [0.0123, 2.5, 0.5]}))
    md = render.markdown([t])
    assert "| 0.10 | 24 | 0.012 |" in md and "| 1.52 | 1,000 | 2.500 |" in md and "| - | 3 | 0.500 |" in md
    p = sb("cost", CPU, "--price", "cpu=0.1", "--format", "md")
    assert "0.1000" not in p.stdout and "| 0.10 |" in p.stdout


@pytest.mark.parametrize("cols", [100, 140, 200])
def test_console_tables_honour_columns_and_never_cut_a_word(cols):
    from rich.cells import cell_len

    p = sb("recommend", SWEEP, "--price", "cpu=0.1", env={"COLUMNS": str(cols)})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= cols
    # every instance type and configuration label whole on its line (rich would fold `ml.g5.2|xlarge`)
    for line in lines:
        for part in re.findall(r"ml\.g5\.\S*", line):
            assert re.match(r"ml\.g5\.(2|12)xlarge", part), line
        for part in re.findall(r"(?:vllm|tgi|sglang)/\S*", line):
            assert re.match(r"(vllm|tgi|sglang)/llama-(7b|13b)/", part), line


def test_console_table_too_narrow_for_its_words_is_shown_row_by_row():
    p = sb("recommend", SWEEP, "--price", "cpu=0.1", env={"COLUMNS": "80"})
    assert p.returncode == 0, p.stderr
    assert "one block per row" in p.stdout and "sglang/llama-7b/ml.g5.2xlarge" in p.stdout


def test_onprem_source_says_power_is_not_in_a_price_without_energy():
    df = tables(sb("cost", BURST, "--onprem", "purchase_usd_per_gpu=30000,amortisation_years=4,usd_per_kwh=0.15",
                   "--format", "csv"))
    src = df.loc[df["table"] == "cost", "price_source"].iloc[0]
    assert "+ measured power" not in src and "power not included" in src
    assert "power not included" in " ".join(df["note"].dropna())


# --- estimate -----------------------------------------------------------------------------

def _estimate(*args):
    from click.testing import CliRunner

    from servebench.cli import main

    return CliRunner().invoke(main, ["estimate", "--model", "meta-llama/Llama-2-7b-hf", *args], catch_exceptions=False)


def test_estimate_takes_an_instance_type():
    r = _estimate("--gpu", "ml.g5.12xlarge", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["gpus"] == 4 and out["hardware"]["key"] == "a10g" and out["instance_type"] == "ml.g5.12xlarge"
    assert json.loads(_estimate("--gpu", "ml.g5.12xlarge", "--gpus", "2", "--json").output)["gpus"] == 2
    r = _estimate("--gpu", "ml.g5.12xlarge", "--gpus", "8")
    assert r.exit_code == 2 and "ml.g5.12xlarge has 4" in r.output


def test_estimate_says_when_the_engine_changes_nothing():
    # no published source measures sglang or lightllm beside another engine on an A10G's family
    a = json.loads(_estimate("--gpu", "a10g", "--engine", "sglang", "--json").output)
    b = json.loads(_estimate("--gpu", "a10g", "--engine", "lightllm", "--json").output)
    assert [x["output_tok_s"] for x in a["levels"]] == [x["output_tok_s"] for x in b["levels"]]
    assert "lightllm not modelled under lockstep arrivals" in b["engine_note"]
    # tgi and vllm are (published rows compare them on ampere-dc), and the note says so
    t = json.loads(_estimate("--gpu", "a10g", "--engine", "tgi", "--json").output)
    v = json.loads(_estimate("--gpu", "a10g", "--engine", "vllm", "--json").output)
    assert [x["output_tok_s"] for x in t["levels"]] != [x["output_tok_s"] for x in v["levels"]]
    assert "efficiency fitted on published sources" in t["engine_note"]
    s = json.loads(_estimate("--gpu", "a10g", "--engine", "tgi", "--arrivals", "spread", "--json").output)
    assert "separate prefill schedule" in s["engine_note"]
    assert "engine foo not modelled" in _estimate("--gpu", "a10g", "--engine", "foo").output


def test_estimate_doc_names_sources_not_a_developers_path():
    text = (ROOT / "docs/estimate.md").read_text()
    assert not re.search(r"(/work/|/home/|/Users/)", text)
    assert "LLM-Viewer" in text and "aiconfigurator" in text


def test_estimate_table_honours_columns_when_piped():
    from rich.cells import cell_len

    for cols in (90, 160):
        p = sb("estimate", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "a10g", env={"COLUMNS": str(cols)})
        assert p.returncode == 0, p.stderr
        assert max(cell_len(line) for line in p.stdout.splitlines()) <= cols
