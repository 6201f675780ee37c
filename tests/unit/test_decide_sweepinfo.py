"""A sweep's study assumptions and its limit searches in recommend and report: the assumptions
marked as servebench's choice, each limit as the range its noise allows (never one number), and
a capacity plan that counts on the range's lower end, in console, Markdown and HTML."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from servebench.decide import html, sweepinfo
from servebench.decide.cli import Analysis, analyse
from servebench.outputs import render
from servebench.outputs.summary_tables import metadata

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "tests/fixtures/decide/sweep"
GPTQ, V13 = "vllm/llama-7b/gptq/mystery-gpu", "vllm/llama-13b/ml.g5.12xlarge"
SLO = "ttft_p99<=300ms"
ASSUMED = ["load.output_tokens = 50: the study does not state its output length",
           "repeats: one run per point; the study does not say how many it ran"]
NOTE = "ttft_ms.p99 of 16 requests at 4 has no upper 95 % bound (it needs 59 or more): more requests per level"


def _block(**kw) -> dict:
    return {"slo": SLO, "by": "concurrency", "level": 0.95, "repeats": 3, "cells": 9, "tried": [], "note": None, **kw}


@pytest.fixture()
def searched(tmp_path) -> Path:
    return searched_sweep(tmp_path / "sweep")


def searched_sweep(d: Path) -> Path:
    """The decide fixture sweep copied to d as a limit search left it: g03 a range 5-20, g04 no
    level shown to meet (a note says why), g00 a block from before ranges (exact), g02 under
    another SLO; and the config's assumptions."""
    shutil.copytree(SWEEP, d)
    idx = json.loads((d / "index.json").read_text())
    blocks = {"g03": _block(low=5, high=20, exact=False, max_meeting=5, first_missing=21),
              "g04": _block(low=None, high=4, exact=False, max_meeting=None, first_missing=20, note=NOTE),
              "g00": {"slo": SLO, "by": "concurrency", "max_meeting": 5, "first_missing": 20},
              "g02": _block(slo="ttft_p99<=100ms", low=5, high=5, exact=True, first_missing=6)}
    for g in idx["groups"]:
        if g["id"] in blocks:
            g["limit"] = blocks[g["id"]]
    idx["assumptions"] = ASSUMED
    (d / "index.json").write_text(json.dumps(idx))
    return d


def _tables(d: Path, **opts):
    return {t.key: t for t in analyse([str(d)], Analysis(**opts))[1]}


def test_limits_table_shows_each_search_as_a_range(searched):
    t = _tables(searched)["limits"]
    rows = {r["config"]: r for _, r in t.df.iterrows()}
    assert rows[GPTQ]["limit_range"] == "5-20 (95 %; first missing: 21)"
    assert (rows[GPTQ]["limit_low"], rows[GPTQ]["limit_high"]) == (5, 20)
    assert rows[V13]["limit_range"] == f"none shown at 95 %, at most 4 (first missing: 20; {NOTE})"  # and why
    assert rows["vllm/llama-7b/ml.g5.2xlarge"]["limit_range"] == "5 (first missing: 20)"  # an old exact block
    assert t.notes == [sweepinfo.RANGE_NOTE] and "95 %" in t.title
    md = render.markdown([t])
    assert "| lower end (a plan counts on it) | upper end |" in md and "| 5-20 (95 %; first missing: 21) |" in md


def test_capacity_plan_counts_on_the_lower_end_of_a_searched_limit(searched, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(SWEEP, plain)
    before = _tables(plain, slo=SLO, target_rps=20.0)["capacity"].df.set_index("config")
    assert before.loc[GPTQ, "load_level"] == "20 concurrent"  # the point value met it at 20
    cap = _tables(searched, slo=SLO, target_rps=20.0)["capacity"]
    after = cap.df.set_index("config")
    assert after.loc[GPTQ, "load_level"] == "5 concurrent" and after.loc[GPTQ, "servers"] == 5  # ceil(20 / 4.35)
    assert any(n.startswith(f"{GPTQ}: capacity counted at or below the lower end of its limit search, "
                            "concurrency 5-20 (95 %") for n in cap.notes)
    assert V13 not in after.index  # no level shown to meet: it carries nothing
    assert any(n.startswith(f"{V13}: its limit search showed no concurrency meeting {SLO}") for n in cap.notes)
    tgi = "tgi/llama-7b/ml.g5.12xlarge"  # searched under another SLO: the plan is the measured one
    assert after.loc[tgi, "load_level"] == before.loc[tgi, "load_level"]
    loose = _tables(searched, slo="ttft_p99<=400ms", target_rps=20.0)["capacity"].df.set_index("config")
    assert loose.loc[GPTQ, "load_level"] == "20 concurrent"  # a looser SLO than the search's: not capped


def test_assumptions_marked_in_console_and_markdown(searched):
    t = _tables(searched)["assumptions"]
    assert list(t.df["assumption"]) == ASSUMED and "servebench's choice" in t.title
    md = render.markdown([t])
    assert "| source | assumed (not stated by the study) |" in md and ASSUMED[0] in md
    con = Console(record=True, width=240)
    render.console([t, _tables(searched)["limits"]], con)
    text = con.export_text()
    assert "assumed (not stated by the study)" in text and "5-20 (95 %; first missing: 21)" in text


def test_structured_assumptions_read_alike():
    assert sweepinfo.assumption_text({"field": "load.output_tokens", "value": 128, "why": "not stated"}) == \
        "load.output_tokens = 128: not stated"
    assert sweepinfo.assumption_text({"field": None, "why": "prices as printed"}) == "prices as printed"


def test_no_limit_or_assumption_no_table():
    keys = {t.key for t in analyse([str(SWEEP)], Analysis())[1]}
    assert not keys & {"limits", "assumptions"}


def test_a_sweep_beneath_a_results_folder_is_found(searched):
    found = sweepinfo.sweeps([str(searched.parent)])  # the folder holding the sweep
    assert [p for _, p, _ in found] == [searched]
    assert len(sweepinfo.limits(found)) == 4


def test_html_marks_assumptions_beside_the_decision_and_shows_ranges(searched):
    df, rec, _ = analyse([str(searched)], Analysis(prices=("mystery-gpu=1.0",)))
    meta_table, meta = metadata(df)
    page = html.render(df, rec + [meta_table], meta, title="t", inputs=[str(searched)])
    order = [page.index(s) for s in ('data-key="throughput"', 'id="sb-assumptions"', 'data-key="assumptions"',
                                     'id="sb-plot-0"', 'data-key="limits"')]
    assert order == sorted(order)
    table = re.search(r'<table class="sb-table" data-key="assumptions">(.*?)</table>', page).group(1)
    assert "assumed (not stated by the study)" in table and all(a.split(":")[0] in table for a in ASSUMED)
    limits = re.search(r'<table class="sb-table" data-key="limits">(.*?)</table>', page).group(1)
    assert "5-20 (95 %; first missing: 21)" in limits and "lower end (a plan counts on it)" in limits
