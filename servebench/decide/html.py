"""The HTML report: one self-contained file (plotly.js inlined once from plotly's offline
bundle, no network), the recommendation first (what to buy, then the three tables with the
reason each row won, then the study assumptions they rest on, marked as such), then the plots,
the other tables (limit searches as ranges among them) and the reproduction metadata. Figures:
decide/report_figs.py; words: decide/report_text.py; colours: outputs/plotstyle.py.

The page records script and console errors into #sb-errors, and once loaded the number of plots
that drew into #sb-status, every trace's configuration and colour into #sb-colors, and the
interval bars drawn into #sb-status's data-errorbars: tests open it in headless Chromium and
read them back from the DOM."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from servebench.decide import report_figs as figs
from servebench.decide import report_text as words
from servebench.outputs import plotstyle as ps
from servebench.outputs.table import Table, cells, heading

_ERRORS_JS = """
window.__sbErrors = [];
function __sbRecord(msg) {
  window.__sbErrors.push(String(msg));
  var d = document.getElementById('sb-errors');
  if (d) { d.textContent = window.__sbErrors.join('\\n'); d.setAttribute('data-count', window.__sbErrors.length); }
}
window.onerror = function (m, s, l, c, e) { __sbRecord(m + ' at ' + s + ':' + l); };
window.addEventListener('unhandledrejection', function (e) { __sbRecord('unhandled rejection: ' + (e.reason && e.reason.message || e.reason)); });
(function () { var orig = console.error; console.error = function () { __sbRecord('console.error: ' + Array.prototype.join.call(arguments, ' ')); return orig.apply(console, arguments); }; })();
"""
_STATUS_JS = """
function __sbColour(t) {
  if (t.type === 'bar' || (t.mode || '').indexOf('markers') >= 0) { return t.marker && t.marker.color; }
  return t.line && t.line.color;
}
function __sbStatus() {
  var divs = document.querySelectorAll('div.plotly-graph-div');
  var drawn = 0, traces = [];
  divs.forEach(function (d) {
    if (d.querySelector('svg.main-svg') && d.querySelector('.plot-container')) drawn++;
    (d._fullData || []).forEach(function (t) { traces.push({plot: d.id, meta: t.meta, name: t.name, colour: __sbColour(t)}); });
  });
  var bars = 0;
  document.querySelectorAll('g.errorbar path').forEach(function (p) { if ((p.getAttribute('d') || '').length > 2) bars++; });
  var s = document.getElementById('sb-status');
  s.setAttribute('data-plots', divs.length); s.setAttribute('data-drawn', drawn); s.setAttribute('data-errorbars', bars);
  s.textContent = drawn + ' of ' + divs.length + ' plots drawn';
  document.getElementById('sb-colors').textContent = JSON.stringify(traces);
  if (window.__sbErrors.length) { __sbRecord('(page errors above)'); }
}
window.addEventListener('load', function () { __sbStatus(); setTimeout(__sbStatus, 1000); });
"""
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 7px}
th{background:#f4f6f8;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.why td{font-size:12px;color:#333;background:#fbfbf6;border-top:none}
ul.notes{font-size:12.5px;color:#8a5a00}#sb-errors:empty{display:none}#sb-errors{color:#b00;white-space:pre}
#sb-status{font-size:11px;color:#888}#sb-colors{display:none}details pre{font-size:11px;background:#f8f8f8;padding:8px;overflow:auto;max-height:400px}
.meta{font-size:12.5px;color:#555}.scroll{overflow-x:auto}td[data-config]{white-space:nowrap}.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
ul.buy{font-size:15px;line-height:1.5;background:#f3f8ee;border:1px solid #cfe3bf;padding:10px 10px 10px 30px}
table[data-key=assumptions] td{background:#fff8e6;font-style:italic}p.ci{font-size:12.5px;color:#555;margin:0 0 18px}footer{margin-top:40px;font-size:12px;color:#666;border-top:1px solid #ddd;padding-top:8px}
"""
_CONFIG_COLUMNS = ("config",)
_CI_SOURCE = {"run": "per run, over its requests", "repeats": "Student t across repeats"}
# What each figure draws intervals of, when the run table carries them.
_CI = {"Throughput vs latency": ("output_token_throughput", "ms_per_token_p50", "ttft_ms_p99"), "Cost": ("usd_per_1m",),
       "Cost vs latency": ("ms_per_token_p50", "usd_per_1m")}


def _cell(col: str, v, text: str, st: figs.Style) -> str:
    if col in _CONFIG_COLUMNS and isinstance(v, str) and v in st.colours:
        c = st.colour(v)
        return (f'<td data-config="{html.escape(v)}" data-colour="{c}"><span class="sw" style="background:{c}"></span>'
                f"{html.escape(text)}</td>")
    if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)):
        return f'<td class="num">{html.escape(text)}</td>'
    return f"<td>{html.escape(text)}</td>"


def _table_html(t: Table, st: figs.Style, why: list[words.Reason] | None = None) -> str:
    parts = [f'<h3 id="t-{html.escape(t.key)}">{html.escape(t.title)}</h3>']
    if len(t.df):
        cols = list(t.df.columns)
        head = "".join(f"<th>{html.escape(heading(c))}</th>" for c in cols)
        body = []
        for i, (row, text) in enumerate(zip(t.df.itertuples(index=False, name=None), cells(t.df))):
            body.append("<tr>" + "".join(_cell(c, v, x, st) for c, v, x in zip(cols, row, text)) + "</tr>")
            if why:  # a full-width row under its winner: a wide table never scrolls the reason out of sight
                body.append(f'<tr class="why"><td colspan="{len(cols)}"><b>why it won:</b> {html.escape(why[i].text)}</td></tr>')
        parts.append(f'<div class="scroll"><table class="sb-table" data-key="{html.escape(t.key)}"><tr>{head}</tr>{"".join(body)}</table></div>')
    else:
        parts.append("<p><em>nothing to show</em></p>")
    if t.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ul>")
    return "\n".join(parts)


def _fig_html(fig, n: int) -> str:
    fig.update_layout(template="plotly_white", margin=dict(l=90, r=40, t=90, b=60))
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"sb-plot-{n}", config={"displaylogo": False})


def _ci_caption(df: pd.DataFrame, cols: tuple[str, ...]) -> str:
    have = [c for c in cols if ps.has_ci(df, c)]
    if not have:
        return ("no intervals: the runs carry no 95 % confidence intervals for "
                + ", ".join(heading(c) for c in cols) + " (points are single measurements)")
    missing = [heading(c) for c in cols if c not in have]
    # load.py says in `ci` where a row's intervals come from: the run's own, or across repeats
    methods = sorted({_CI_SOURCE.get(str(m), str(m)) for m in df["ci"].dropna()}) if "ci" in df else []
    return ("bars: 95 % confidence intervals of " + ", ".join(heading(c) for c in have)
            + (f" ({', '.join(methods)})" if methods else "") + "; an interval open above draws no upper arm"
            + (f"; no intervals for {', '.join(missing)}" if missing else ""))


def _recommendation(df: pd.DataFrame, tables: list[Table], st: figs.Style) -> list[str]:
    study = [t for t in tables if words.study_key(t)]
    body = ["<h2>What to buy</h2>"]
    buy = words.what_to_buy(study, df)
    body.append('<ul class="buy" id="sb-buy">' + "".join(f"<li>{html.escape(s)}</li>" for s in buy) + "</ul>"
                if buy else "<p><em>no ranked run: nothing to recommend</em></p>")
    body.append('<p class="meta">generated from the three tables below (the ones under the SLO when one is given); '
                "definitions: docs/metrics.md, docs/decide.md</p>")
    body.append("<h2>Recommendation</h2>")
    body += [_table_html(t, st, words.reasons(t, df) if len(t.df) else None) for t in study]
    return body


def _plots(df: pd.DataFrame, st: figs.Style, damaged: list[str]) -> tuple[list[str], int]:
    made = [("Throughput vs latency", figs.curves(df, st)), ("Latency distributions", figs.cdfs(df, st, damaged)),
            ("Cost", figs.cost_bars(df, st)), ("Cost vs latency", figs.pareto_plot(df, st)),
            ("GPU telemetry", figs.gpu_timelines(df, st))]
    body = ["<h2>Plots</h2>"] + [f"<p class='meta'>{html.escape(d)}: the raw records are lost</p>" for d in damaged]
    n = 0
    for head, fig in made:
        if fig is None:
            body.append(f"<p class='meta'>{html.escape(head)}: no data to plot</p>")
            continue
        body.append(_fig_html(fig, n))
        if head in _CI:
            body.append(f'<p class="ci" data-plot="sb-plot-{n}">{html.escape(_ci_caption(df, _CI[head]))}</p>')
        n += 1
    return body, n


def _with_size(page: str, lib_bytes: int) -> str:
    """The footer states the file's own size: filled in until the number no longer changes it."""
    size = len(page.encode())
    for _ in range(4):
        text = (f"this file: {size / 1e6:.1f} MB ({size:,} bytes), of which the plotting library (plotly.js, "
                f"embedded once) {lib_bytes / 1e6:.1f} MB; self-contained, nothing is fetched")
        head, _, tail = page.rpartition("@@SB-SIZE@@")  # the footer is last: a run.json may hold anything
        out = head + text + tail
        if len(out.encode()) == size:
            return out
        size = len(out.encode())
    return out


def render(df: pd.DataFrame, tables: list[Table], meta: dict[str, dict], *, title: str, inputs: list[str],
           damaged: list[str] | None = None, ranked: pd.DataFrame | None = None) -> str:
    """ranked: the table the recommendations ranked (repeats averaged, then priced: decide.cli.analyse);
    the words beside them read it, so they quote the figures the tables show."""
    from plotly.offline import get_plotlyjs

    st = figs.Style.of(df)  # add_costs gave $ per 1M its interval (decide/noise.cost_cis)
    damaged = [] if damaged is None else damaged
    first = {t.key: t for t in tables}
    study = [t for t in tables if words.study_key(t)]
    more = [t for t in tables if t not in study and t.key not in ("runs", "comparison", "metadata", "assumptions")]
    body = [f"<h1>{html.escape(title)}</h1>", '<div id="sb-errors" data-count="0"></div>',
            '<div id="sb-status" data-plots="" data-drawn="" data-errorbars=""></div><div id="sb-colors"></div>',
            '<p class="meta">inputs: ' + ", ".join(html.escape(i) for i in inputs) + "</p>"]
    body += _recommendation(df if ranked is None else ranked, study, st)
    if "assumptions" in first:  # next to the decision they bear on, marked as servebench's choice
        body += ['<h2 id="sb-assumptions">Assumptions (not stated by the study)</h2>', _table_html(first["assumptions"], st)]
    plots, n = _plots(df, st, damaged)
    body += plots
    body.append("<h2>Pareto fronts, capacity, limits, goodput</h2>")
    body += [_table_html(t, st) for t in more]
    body.append("<h2>Runs</h2>")
    body += [_table_html(first[k], st) for k in ("comparison", "runs", "metadata") if k in first]
    body.append("<h3>run.json of each run</h3>")
    for k, v in meta.items():
        body.append(f"<details><summary>{html.escape(k)}</summary><pre>{html.escape(json.dumps(v, indent=1, default=str))}</pre></details>")
    body.append('<footer id="sb-footer">@@SB-SIZE@@</footer>')
    lib = get_plotlyjs()
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
            f"<script>{_ERRORS_JS}</script><script>{lib}</script><style>{_CSS}</style></head>"
            f"<body data-expected-plots='{n}'>" + "\n".join(body) + f"<script>{_STATUS_JS}</script></body></html>")
    return _with_size(page, len(lib.encode()))
