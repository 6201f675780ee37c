"""The HTML report as a buyer reads it, checked on the figures and the page text (the browser
test, test_report_html_browser.py, checks the same in the drawn DOM): one colour per
configuration everywhere, labelled points, named units, readable log axes, cost bars that stay
readable at 100x, one front per model, intervals drawn when the run table has them and said to
be absent when not, the recommendation first with its reasons, and a stated file size."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servebench.decide import html, noise, report_figs as figs, report_text as words
from servebench.decide.cli import Analysis, analyse
from servebench.outputs import plotstyle as ps
from servebench.outputs.summary_tables import comparison_table, metadata, runs_table

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "tests/fixtures/decide/sweep"
CPU_REF = ROOT / "results/reference/cpu-reference"
REFERENCE = ROOT / "results/reference"


def build(dirs, **opts):
    """What `servebench report --format html` renders: (run table, tables, run.json of each run)."""
    df, rec, _ = analyse([str(d) for d in dirs], Analysis(**opts))
    meta_table, meta = metadata(df)
    tables = [t for t in (comparison_table(df), runs_table(df)) if t is not None] + rec + [meta_table]
    return df, tables, meta


def with_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """The run table as load.py gives it once summary.json has intervals: <column>_ci_low/high,
    here +-10 %; one row has none (null) and one is open above (too few requests for p99)."""
    df = df.copy()
    for col in ("output_token_throughput", "ms_per_token_p50", "ttft_ms_p99"):
        df[f"{col}_ci_low"], df[f"{col}_ci_high"] = df[col] * 0.9, df[col] * 1.1
    ok = df.index[df["completed"].fillna(0) > 0]
    df.loc[ok[0], [c for c in df.columns if c.endswith(("_ci_low", "_ci_high"))]] = np.nan
    df.loc[ok[1], "ttft_ms_p99_ci_high"] = np.nan
    return noise.cost_cis(df)  # as add_costs gives $ per 1M its interval from the throughput's


def traces(fig):
    return [t for t in fig.data if t.meta is not None and not str(t.meta).startswith("front:")]


def colour_of(t) -> str:
    return t.marker.color if t.type == "bar" or "markers" in (t.mode or "") else t.line.color


@pytest.fixture(scope="module")
def reference():
    return build([REFERENCE], prices=("cpu=0.10",))


def test_one_colour_per_configuration_in_every_plot_and_table(reference):
    df, tables, meta = reference
    st = figs.Style.of(df)
    seen: dict[str, set[str]] = {}
    made = [figs.curves(df, st), figs.cdfs(df, st), figs.cost_bars(df, st), figs.pareto_plot(df, st)]
    assert all(f is not None for f in made)
    for fig in made:
        for t in traces(fig):
            seen.setdefault(t.meta, set()).add(colour_of(t))
    configs = set(df.loc[df["completed"].fillna(0) > 0, "config"])
    assert set(seen) == configs and len(configs) >= 6
    assert all(len(c) == 1 for c in seen.values()), seen  # a configuration keeps its colour across plots
    colours = [next(iter(c)) for c in seen.values()]
    assert len(set(colours)) == len(colours)  # and no two configurations share one
    page = html.render(df, tables, meta, title="t", inputs=["x"])
    for cfg, colour in re.findall(r'data-config="([^"]+)" data-colour="([^"]+)"', page):
        assert {colour} == seen[cfg.replace("&quot;", '"')], cfg
    # the same configuration measured standalone and in a sweep: one colour, told apart by marker
    vllm = [t for t in traces(made[0]) if t.meta == "vllm/tiny/cpu" and t.showlegend]
    assert len(vllm) == 2 and len({t.marker.symbol for t in vllm}) == 2


def test_curves_label_points_name_units_and_use_readable_log_ticks(reference):
    df = reference[0]
    fig = figs.curves(df, figs.Style.of(df))
    labels = {x for t in fig.data for x in t.text}
    assert {"c=1", "c=4", "c=16", "burst 1000"} <= labels
    lay = fig.layout
    assert "ms/token" in lay.yaxis.title.text and "TTFT p99 (ms)" in lay.yaxis2.title.text
    assert "tokens/s" in lay.xaxis.title.text
    # 1.75 to 78 ms/token and 0.16k to 6.6k tok/s: log axes with plain 1-2-5 ticks
    assert lay.yaxis.type == "log" and lay.xaxis.type == "log"
    assert list(lay.yaxis.ticktext) == ["1", "2", "5", "10", "20", "50", "100"]
    assert "5k" in lay.xaxis.ticktext


def test_log_ticks_and_linear_axes():
    vals, text = ps.log_ticks(0.0042, 0.79, "$")
    assert text == ["$0.002", "$0.005", "$0.01", "$0.02", "$0.05", "$0.1", "$0.2", "$0.5", "$1"]
    assert ps.axis([2.0, 3.0, 30.0], "ms/token")["type"] == "linear"  # 15x: linear, from zero
    assert ps.axis([1.0, 21.0], "ms/token")["type"] == "log"
    vals, _ = ps.log_ticks(1e-3, 1e6)
    assert len(vals) <= 12 and all(np.isclose(np.log10(v), round(np.log10(v))) for v in vals)  # decades only
    assert ps.short_level("16 concurrent") == "c=16" and ps.short_level("rate 2/s") == "rate 2/s"


def test_cost_bars_readable_when_one_costs_100x_another(reference):
    df = reference[0].copy()
    ok = df.index[df["usd_per_1m"].notna()]
    df.loc[ok[0], "usd_per_1m"] = df.loc[ok, "usd_per_1m"].min() * 0.01
    fig = figs.cost_bars(df, figs.Style.of(df))
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.ticktext[0].startswith("$")
    assert all(t.text is not None and all(x.startswith("$") for x in t.text) for t in fig.data)  # each bar labelled
    assert fig.layout.xaxis.title.text == "load level"


def test_one_pareto_front_per_model_told_apart():
    df, _, _ = build([SWEEP], prices=("ml.g5.2xlarge=1.41", "ml.g5.12xlarge=7.09"))
    fig = figs.pareto_plot(df, figs.Style.of(df))
    fronts = [t for t in fig.data if str(t.meta).startswith("front:")]
    assert sorted(t.name for t in fronts) == ["Pareto front: llama-13b", "Pareto front: llama-7b"]
    assert len({t.line.dash for t in fronts}) == 2 and len({t.line.color for t in fronts}) == 2
    assert all(t.text[-1].startswith("front: ") for t in fronts)  # named where the line ends


def test_intervals_drawn_when_the_table_has_them(reference):
    df = with_intervals(reference[0])
    st = figs.Style.of(df)
    fig = figs.curves(df, st)
    bars = [t.error_y for t in fig.data if t.error_y is not None and t.error_y.array is not None]
    assert bars and all(b.type == "data" and b.symmetric is False for b in bars)
    arms = np.concatenate([np.asarray(b.array, dtype=float) for b in bars])
    assert np.isnan(arms).sum() == 1 and np.nanmax(arms) > 0  # the open end draws no arm
    null = [t for t in fig.data if t.name == "reference: vllm/tiny/cpu"]  # the row whose intervals are null
    assert len(null) == 2 and all(t.error_y.array is None for t in null)
    r = df[df["usd_per_1m_ci_low"].notna()].iloc[0]  # $ per 1M: the throughput interval through the same formula
    assert r["usd_per_1m_ci_low"] < r["usd_per_1m"] < r["usd_per_1m_ci_high"]
    assert np.isclose(r["usd_per_1m_ci_low"], r["usd_per_hour"] * 1e6 / 3600 / r["output_token_throughput_ci_high"])
    page = html.render(df, reference[1], reference[2], title="t", inputs=["x"])
    assert page.count("bars: 95 % confidence intervals") == 3 and "no intervals:" not in page
    page = html.render(df.assign(ci="run"), reference[1], reference[2], title="t", inputs=["x"])
    assert "(per run, over its requests)" in page  # where the intervals come from (load.py's `ci`)


def test_no_intervals_said_and_none_drawn(reference):
    df, tables, meta = reference
    fig = figs.curves(df, figs.Style.of(df))
    assert all(t.error_y.array is None for t in fig.data)
    page = html.render(df, tables, meta, title="t", inputs=["x"])
    assert page.count("no intervals: the runs carry no 95 % confidence intervals") == 3


def test_recommendation_first_with_reasons_and_what_to_buy(reference):
    df, tables, meta = reference
    page = html.render(df, tables, meta, title="t", inputs=["x"])
    order = [page.index(s) for s in ('id="sb-buy"', 'data-key="cost"', 'data-key="latency"', 'data-key="throughput"',
                                     'id="sb-plot-0"', 'data-key="runs"')]
    assert order == sorted(order)
    buy = re.search(r'<ul class="buy" id="sb-buy"><li>(.*?)</li></ul>', page).group(1)
    assert buy == ("tiny: buy vllm/tiny/cpu for the lowest cost ($0.0042 at burst 1000) and the highest throughput "
                   "(6,567 tokens/s at burst 1000); llamacpp/tiny/q8_0/cpu for the lowest latency (1.75 ms/token at 1 concurrent).")
    assert page.count('<tr class="why"><td colspan=') == 3  # one per winning row, under it
    assert ("<b>why it won:</b> lowest latency: 1.75 ms/token; next: llamacpp/tiny/f16/cpu @ 1 concurrent, 2.15 ms/token (18% lower); "
            "no intervals to judge the noise") in page


def test_reason_calls_a_tie_when_the_intervals_overlap(reference):
    df = reference[0].copy()
    df["ms_per_token_p50_ci_low"], df["ms_per_token_p50_ci_high"] = df["ms_per_token_p50"] * 0.8, df["ms_per_token_p50"] * 1.25
    lat = next(t for t in reference[1] if t.key == "latency")
    why = words.reasons(lat, df)[0]
    assert why.text.endswith("a tie within the 95 % intervals") and why.tied_with == "llamacpp/tiny/f16/cpu"
    assert "tied within noise with llamacpp/tiny/f16/cpu" in words.what_to_buy(reference[1], df)[0]
    df["ms_per_token_p50_ci_low"], df["ms_per_token_p50_ci_high"] = df["ms_per_token_p50"] * 0.99, df["ms_per_token_p50"] * 1.01
    assert words.reasons(lat, df)[0].text.endswith("apart beyond the 95 % intervals")


def test_reasons_respect_the_slo_and_the_level_in_the_title():
    df, tables, _ = build([CPU_REF], prices=("cpu=0.10",), slo="ttft_p95<=200ms", at="cost=4")
    cost = next(t for t in tables if t.key == "cost")
    assert "at 4 concurrent" in cost.title
    why = words.reasons(cost, df)[0].text
    assert "@ 4 concurrent" in why and "@ 1 concurrent" not in why
    slo = next(t for t in tables if t.key == "latency_slo")
    for (_, r), w in zip(slo.df.iterrows(), words.reasons(slo, df)):
        nxt = re.search(r"next: (\S+) @ (\d+) concurrent", w.text)
        if nxt:  # the runner-up met the SLO too
            row = df[(df["config"] == nxt.group(1)) & (df["concurrency"] == int(nxt.group(2)))].iloc[0]
            assert row["ttft_ms_p95"] <= 200
    assert "(under SLO ttft_p95<=200ms" in words.what_to_buy(tables, df)[0]


def test_self_contained_library_once_and_size_stated(reference, tmp_path):
    df, tables, meta = reference
    page = html.render(df, tables, meta, title="t", inputs=["x"])
    from plotly.offline import get_plotlyjs

    lib = get_plotlyjs()
    assert page.count(lib[:200]) == 1 and page.count("<script src=") == 0
    size = len(page.encode())
    footer = re.search(r'<footer id="sb-footer">this file: ([\d.]+) MB \(([\d,]+) bytes\)', page)
    assert footer and int(footer.group(2).replace(",", "")) == size
    assert abs(float(footer.group(1)) - size / 1e6) < 0.06


def test_margins_read_as_words():
    assert words._margin("usd_per_1m", True, 1.0, 3.5) == "3.5x lower"
    assert words._margin("output_token_throughput", False, 1.6, 1.0) == "60% higher"
    assert words._margin("usd_per_1m", True, 1.27, 1.2705) == "equal to 0.1 %"  # never "0% lower"
    assert words._margin("usd_per_1m", True, 1.0, 1.004) == "0.4% lower"


def test_an_unmeasured_curve_says_so(reference):
    df = reference[0].assign(ttft_ms_p99=np.nan)  # e.g. published rows: no TTFT
    fig = figs.curves(df, figs.Style.of(df))
    notes = [a.text for a in fig.layout.annotations]
    assert "TTFT p99: not measured in these runs" in notes
    assert not any("latency: not measured" in n for n in notes)


def test_a_model_without_a_winner_is_named_in_what_to_buy():
    df, tables, _ = build([SWEEP], prices=("ml.g5.2xlarge=1.41", "ml.g5.12xlarge=7.09"), slo="ttft_p95<=60ms")
    buy = words.what_to_buy(tables, df)
    assert any(s.startswith("llama-13b: nothing to buy from these runs: no configuration met the SLO ttft_p95<=60ms")
               for s in buy), buy


def test_a_lower_margin_is_in_percent_of_the_next_figure():
    # 1.75 against 2.15: the winner is 18.6 % lower (2.15 is 22.9 % higher)
    assert words._margin("ms_per_token_p50", True, 1.75, 2.15) == "19% lower"
    assert words._margin("usd_per_1m", True, 1.0, 1.5) == "33% lower"
