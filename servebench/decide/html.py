"""The HTML report: one self-contained file (plotly.js inlined from plotly's offline bundle,
no network), with the plots, the tables and the reproduction metadata.

The page records script errors (window.onerror, unhandled rejections) into #sb-errors and, once
loaded, the number of plots that drew into #sb-status: tests open it in headless Chromium and
read both back from the DOM."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from servebench.decide.load import ok_mask
from servebench.decide.names import size_key
from servebench.decide.recommend import pareto_mask
from servebench.outputs.table import Table, cells, heading

MAX_CDF_TRACES = 24
MAX_TIMELINE_RUNS = 8
_ERRORS_JS = """
window.__sbErrors = [];
function __sbRecord(msg) {
  window.__sbErrors.push(String(msg));
  var d = document.getElementById('sb-errors');
  if (d) { d.textContent = window.__sbErrors.join('\\n'); d.setAttribute('data-count', window.__sbErrors.length); }
}
window.onerror = function (m, s, l, c, e) { __sbRecord(m + ' at ' + s + ':' + l); };
window.addEventListener('unhandledrejection', function (e) { __sbRecord('unhandled rejection: ' + (e.reason && e.reason.message || e.reason)); });
"""
_STATUS_JS = """
function __sbStatus() {
  var divs = document.querySelectorAll('div.plotly-graph-div');
  var drawn = 0;
  divs.forEach(function (d) { if (d.querySelector('svg.main-svg') && d.querySelector('.plot-container')) drawn++; });
  var s = document.getElementById('sb-status');
  s.setAttribute('data-plots', divs.length); s.setAttribute('data-drawn', drawn);
  s.textContent = drawn + ' of ' + divs.length + ' plots drawn';
  if (window.__sbErrors.length) { __sbRecord('(page errors above)'); }
}
window.addEventListener('load', function () { __sbStatus(); setTimeout(__sbStatus, 1000); });
"""
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 7px}
th{background:#f4f6f8;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
ul.notes{font-size:12.5px;color:#8a5a00}#sb-errors:empty{display:none}#sb-errors{color:#b00;white-space:pre}
#sb-status{font-size:11px;color:#888}details pre{font-size:11px;background:#f8f8f8;padding:8px;overflow:auto;max-height:400px}
.meta{font-size:12.5px;color:#555}.scroll{overflow-x:auto}
"""


def _table_html(t: Table) -> str:
    parts = [f'<h3 id="t-{html.escape(t.key)}">{html.escape(t.title)}</h3>']
    if len(t.df):
        head = "".join(f"<th>{html.escape(heading(c))}</th>" for c in t.df.columns)
        body = []
        for row, text in zip(t.df.itertuples(index=False, name=None), cells(t.df)):
            tds = "".join(
                f'<td class="num">{html.escape(x)}</td>' if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                else f"<td>{html.escape(x)}</td>" for v, x in zip(row, text))
            body.append(f"<tr>{tds}</tr>")
        parts.append(f'<div class="scroll"><table class="sb-table" data-key="{html.escape(t.key)}"><tr>{head}</tr>{"".join(body)}</table></div>')
    else:
        parts.append("<p><em>nothing to show</em></p>")
    if t.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ul>")
    return "\n".join(parts)


def _series_name(r) -> str:
    return f"{r['source']}: {r['config']}" if r.get("multi") else r["config"]


def _fig_html(fig, n: int) -> str:
    fig.update_layout(template="plotly_white", margin=dict(l=60, r=20, t=90, b=50), legend=dict(font=dict(size=10)))
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"sb-plot-{n}", config={"displaylogo": False})


def curves(df: pd.DataFrame):
    """Throughput vs latency across load levels, one line per configuration."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ok = df[ok_mask(df)].copy()
    if ok.empty:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("latency ms/token (median) vs throughput", "TTFT p99 vs throughput"))
    for i, (name, g) in enumerate(ok.groupby(ok.apply(_series_name, axis=1), sort=True)):
        g = g.sort_values(["concurrency", "rate", "output_token_throughput"], na_position="last")  # in load order
        for col, (y, show) in enumerate((("ms_per_token_p50", True), ("ttft_ms_p99", False)), start=1):
            fig.add_trace(go.Scatter(x=g["output_token_throughput"], y=g[y], mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=show, text=g["load_level"],
                                     marker=dict(color=_color(i)), line=dict(color=_color(i)),
                                     hovertemplate="%{text}<br>%{x:.1f} tok/s<br>%{y:.2f} ms<extra>" + name + "</extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="output tokens/s")
    fig.update_yaxes(title_text="ms", rangemode="tozero")
    fig.update_layout(height=430, title="Throughput vs latency across load levels")
    return fig


def _color(i: int) -> str:
    import plotly.colors

    pal = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3
    return pal[i % len(pal)]


def _cdf_values(run_dir: str, damaged: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    from servebench.analysis import metrics
    from servebench.store.runfiles import DamagedFile, load_records

    p = Path(run_dir) / "requests.parquet"
    if not p.exists():
        return None
    try:
        loaded = load_records(p)
    except DamagedFile as e:  # the rest of the report still stands; the caller names the loss
        damaged.append(str(e))
        return None
    recs = [r for r in loaded if not r.warmup and r.ok]
    ttft = np.array([v / 1e6 for r in recs if (v := metrics.ttft_ns(r)) is not None])
    itl = np.array([g / 1e6 for r in recs for g in metrics.itl_gaps_ns(r)])
    return ttft, itl


def cdfs(df: pd.DataFrame, damaged: list[str] | None = None):
    """TTFT and ITL distributions (empirical CDFs at 200 quantiles) per run; the messages of
    unreadable requests.parquet files go to `damaged`."""
    damaged = [] if damaged is None else damaged
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ok = df[ok_mask(df) & df["run_dir"].map(lambda p: isinstance(p, str))]
    if len(ok) > MAX_CDF_TRACES:  # a big sweep: each configuration at its highest load
        ok = ok.sort_values(["concurrency", "rate"], na_position="first").groupby(["source", "config"]).tail(1)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("TTFT", "ITL"))
    q = np.linspace(0, 1, 201)
    n = 0
    for i, (_, r) in enumerate(ok.iterrows()):
        vals = _cdf_values(r["run_dir"], damaged)
        if vals is None:
            continue
        name = f"{_series_name(r)} @ {r['load_level']}"
        for col, v in enumerate(vals, start=1):
            if len(v):
                fig.add_trace(go.Scatter(x=np.quantile(v, q), y=q, mode="lines", name=name, legendgroup=name,
                                         showlegend=col == 1, line=dict(color=_color(i))), row=1, col=col)
                n += 1
    if not n:
        return None
    fig.update_xaxes(title_text="ms", type="log")
    fig.update_yaxes(title_text="share of requests / gaps", range=[0, 1])
    fig.update_layout(height=430, title="TTFT and inter-token latency distributions (CDF)")
    return fig


def cost_bars(df: pd.DataFrame):
    import plotly.graph_objects as go

    ok = df[ok_mask(df) & df["usd_per_1m"].notna()]
    if ok.empty:
        return None
    fig = go.Figure()
    for i, (lvl, g) in enumerate(ok.groupby("load_level", sort=False)):
        fig.add_trace(go.Bar(x=g.apply(_series_name, axis=1), y=g["usd_per_1m"], name=lvl, marker_color=_color(i),
                             hovertemplate="%{x}<br>$%{y:.4g} per 1M output tokens<extra>" + lvl + "</extra>"))
    fig.update_layout(barmode="group", height=420, title="$ per 1M output tokens by configuration and load",
                      yaxis_title="$ per 1M output tokens")
    return fig


def pareto_plot(df: pd.DataFrame):
    import plotly.graph_objects as go

    ok = df[ok_mask(df) & df["usd_per_1m"].notna() & df["ms_per_token_p50"].notna()]
    if ok.empty:
        return None
    fig = go.Figure()
    for i, (name, g) in enumerate(ok.groupby(ok.apply(_series_name, axis=1), sort=True)):
        fig.add_trace(go.Scatter(x=g["ms_per_token_p50"], y=g["usd_per_1m"], mode="markers", name=name,
                                 text=g["load_level"], marker=dict(size=9, color=_color(i))))
    for model, g in sorted(ok.groupby("family"), key=lambda kv: size_key(kv[0])):
        front = g[pareto_mask(g["usd_per_1m"].to_numpy(float), g["ms_per_token_p50"].to_numpy(float))]
        front = front.sort_values("ms_per_token_p50")
        fig.add_trace(go.Scatter(x=front["ms_per_token_p50"], y=front["usd_per_1m"], mode="lines",
                                 name=f"Pareto front ({model})", line=dict(dash="dash", color="#444")))
    fig.update_layout(height=420, title="Cost vs latency (lower left is better)", xaxis_title="ms/token (median)",
                      yaxis_title="$ per 1M output tokens")
    return fig


def gpu_timelines(df: pd.DataFrame):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs = [r for _, r in df.iterrows() if isinstance(r.get("run_dir"), str) and (Path(r["run_dir"]) / "gpu.parquet").exists()]
    if not runs:
        return None
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, subplot_titles=("GPU memory used (GiB)", "GPU utilisation (%)", "GPU power (W)"))
    for i, r in enumerate(runs[:MAX_TIMELINE_RUNS]):
        gpu = pd.read_parquet(Path(r["run_dir"]) / "gpu.parquet")
        req = pd.read_parquet(Path(r["run_dir"]) / "requests.parquet", columns=["sent_ns", "warmup"]) \
            if (Path(r["run_dir"]) / "requests.parquet").exists() else None
        t0 = int(req.loc[~req["warmup"] & (req["sent_ns"] > 0), "sent_ns"].min()) if req is not None and len(req) else int(gpu["t_ns"].min())
        for g, d in gpu.groupby("gpu"):
            name = f"{_series_name(r)} @ {r['load_level']} GPU {g}"
            x = (d["t_ns"].to_numpy(np.int64) - t0) / 1e9
            for row, (col, scale) in enumerate((("mem_used_bytes", 2**-30), ("util_gpu_pct", 1), ("power_w", 1)), start=1):
                fig.add_trace(go.Scatter(x=x, y=d[col].to_numpy(float) * scale, mode="lines", name=name, legendgroup=name,
                                         showlegend=row == 1, line=dict(color=_color(i), width=1.2)), row=row, col=1)
    fig.update_xaxes(title_text="seconds from the run's first measured send", row=3, col=1)
    fig.update_layout(height=640, title="GPU telemetry (NVML)" + (f", first {MAX_TIMELINE_RUNS} runs" if len(runs) > MAX_TIMELINE_RUNS else ""))
    return fig


def render(df: pd.DataFrame, tables: list[Table], meta: dict[str, dict], *, title: str, inputs: list[str],
           damaged: list[str] | None = None) -> str:
    from plotly.offline import get_plotlyjs

    df = df.copy()
    df["multi"] = df["source"].nunique() > 1
    damaged = [] if damaged is None else damaged
    figs = [("Throughput vs latency", curves(df)), ("Latency distributions", cdfs(df, damaged)), ("Cost", cost_bars(df)),
            ("Cost vs latency", pareto_plot(df)), ("GPU telemetry", gpu_timelines(df))]
    body = [f"<h1>{html.escape(title)}</h1>", '<div id="sb-errors" data-count="0"></div>',
            '<div id="sb-status" data-plots="" data-drawn=""></div>',
            '<p class="meta">inputs: ' + ", ".join(html.escape(i) for i in inputs) + " &middot; definitions: docs/metrics.md, docs/decide.md</p>"]
    first = {t.key: t for t in tables}
    study = [t for t in tables if t.key.split("_")[0] in ("cost", "latency", "throughput")]
    more = [t for t in tables if t not in study and t.key not in ("runs", "comparison", "metadata")]
    body.append("<h2>Recommendation</h2>")
    body += [_table_html(t) for t in study]
    n = 0
    body.append("<h2>Plots</h2>")
    body += [f"<p class='meta'>{html.escape(d)}: the raw records are lost</p>" for d in damaged]
    for heading_, fig in figs:
        if fig is None:
            body.append(f"<p class='meta'>{html.escape(heading_)}: no data to plot</p>")
            continue
        body.append(_fig_html(fig, n))
        n += 1
    body.append("<h2>Pareto fronts, capacity, goodput</h2>")
    body += [_table_html(t) for t in more]
    body.append("<h2>Runs</h2>")
    for key in ("comparison", "runs", "metadata"):
        if key in first:
            body.append(_table_html(first[key]))
    body.append("<h3>run.json of each run</h3>")
    for k, v in meta.items():
        body.append(f"<details><summary>{html.escape(k)}</summary><pre>{html.escape(json.dumps(v, indent=1, default=str))}</pre></details>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
            f"<script>{_ERRORS_JS}</script><script>{get_plotlyjs()}</script><style>{_CSS}</style></head>"
            f"<body data-expected-plots='{n}'>" + "\n".join(body) + f"<script>{_STATUS_JS}</script></body></html>")
