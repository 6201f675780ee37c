"""The HTML report's figures: load curves, latency CDFs, cost bars, cost vs latency with one
Pareto front per model, GPU timelines. Every figure takes its colours from one Style so that a
configuration has one colour across the report; every trace carries its configuration in
`meta`, which the page reads back to prove it (decide/html.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from servebench.decide.load import ok_mask
from servebench.decide.names import size_key
from servebench.decide.recommend import pareto_mask
from servebench.outputs import plotstyle as ps

MAX_CDF_TRACES = 24
PATTERNS = ("", "/", "x", ".", "-", "|")  # bars: a second source's bars hatched, same colour
LEGEND = dict(orientation="h", yanchor="top", y=-0.22, x=0, font=dict(size=11))


@dataclass(slots=True)
class Style:
    colours: dict[str, str]  # configuration -> colour, for every plot and table
    symbols: dict[str, str]  # source -> marker symbol (several inputs compared)
    dashes: dict[str, str]  # load level -> dash (CDFs: one line per run)
    multi: bool

    @classmethod
    def of(cls, df: pd.DataFrame) -> "Style":
        ordered = df.sort_values(["concurrency", "rate"], na_position="last") if "rate" in df else df
        return cls(ps.colour_map(df["config"].dropna()), ps.index_map(df["source"].dropna(), ps.SYMBOLS),
                   ps.index_map(ordered["load_level"].dropna(), ps.DASHES), df["source"].nunique() > 1)

    def name(self, r) -> str:
        return f"{r['source']}: {r['config']}" if self.multi else str(r["config"])

    def colour(self, config) -> str:
        return self.colours.get(str(config), "#444444")


def by_series(ok: pd.DataFrame, st: Style):
    """(name, rows in load order) per configuration and source, configurations sorted."""
    for (cfg, src), g in ok.groupby(["config", "source"], sort=True):
        yield st.name(g.iloc[0]), g.sort_values(["concurrency", "rate", "output_token_throughput"], na_position="last")


def _point_trace(g: pd.DataFrame, name: str, st: Style, x: str, y: str):
    import plotly.graph_objects as go

    cfg, colour = g["config"].iloc[0], st.colour(g["config"].iloc[0])
    labels = [ps.short_level(v) for v in g["load_level"]]
    return go.Scatter(x=g[x], y=g[y], mode="lines+markers+text", name=name, legendgroup=name, meta=cfg,
                      text=labels, textposition="top center", textfont=dict(size=10, color=colour),
                      marker=dict(color=colour, size=8, symbol=st.symbols.get(g["source"].iloc[0], "circle")),
                      line=dict(color=colour, width=1.6), error_x=ps.error_bars(g, x, colour),
                      error_y=ps.error_bars(g, y, colour), customdata=g["load_level"])


def curves(df: pd.DataFrame, st: Style):
    """Latency against throughput across load levels, one line per configuration, each point
    labelled with its load level."""
    from plotly.subplots import make_subplots

    ok = df[ok_mask(df)]
    if ok.empty:
        return None
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Latency per output token vs throughput", "Time to first token (p99) vs throughput"))
    for name, g in by_series(ok, st):
        for col, (y, unit) in enumerate((("ms_per_token_p50", "ms/token"), ("ttft_ms_p99", "ms")), start=1):
            t = _point_trace(g, name, st, "output_token_throughput", y)
            t.update(showlegend=col == 1, hovertemplate="%{customdata}<br>%{x:,.1f} tokens/s<br>%{y:,.2f} " + unit
                     + "<extra>" + name + "</extra>")
            fig.add_trace(t, row=1, col=col)
    x = ps.axis(ps.ci_values(ok, "output_token_throughput"), "output throughput (tokens/s)")
    for col, (y, title) in enumerate((("ms_per_token_p50", "latency (ms/token, median)"), ("ttft_ms_p99", "TTFT p99 (ms)")), start=1):
        fig.update_xaxes(**x, row=1, col=col)
        fig.update_yaxes(**ps.axis(ps.ci_values(ok, y), title), row=1, col=col)
        if ok[y].isna().all():  # e.g. published rows without TTFT: say so rather than draw an empty frame
            axis = "" if col == 1 else str(col)
            fig.add_annotation(text=f"{title.split(' (')[0]}: not measured in these runs", showarrow=False,
                               xref=f"x{axis} domain", yref=f"y{axis} domain", x=0.5, y=0.5, font=dict(size=13, color="#8a5a00"))
    fig.update_layout(height=560, title="Throughput vs latency across load levels (labels: load level; c = concurrent requests)",
                      legend=LEGEND)
    return fig


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


def cdfs(df: pd.DataFrame, st: Style, damaged: list[str] | None = None):
    """TTFT and ITL distributions (empirical CDFs at 200 quantiles) per run: colour is the
    configuration, dash the load level. Unreadable requests.parquet files go to `damaged`."""
    damaged = [] if damaged is None else damaged
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ok = df[ok_mask(df) & df["run_dir"].map(lambda p: isinstance(p, str))]
    if len(ok) > MAX_CDF_TRACES:  # a big sweep: each configuration at its highest load
        ok = ok.sort_values(["concurrency", "rate"], na_position="first").groupby(["source", "config"]).tail(1)
    ok = ok.sort_values(["config", "source", "concurrency", "rate"], na_position="last")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Time to first token", "Inter-token latency (gaps between tokens)"))
    q, seen = np.linspace(0, 1, 201), [[], []]
    for _, r in ok.iterrows():
        vals = _cdf_values(r["run_dir"], damaged)
        if vals is None:
            continue
        name, colour = f"{st.name(r)} @ {r['load_level']}", st.colour(r["config"])
        for col, v in enumerate(vals, start=1):
            if len(v):
                seen[col - 1].append(v)
                fig.add_trace(go.Scatter(x=np.quantile(v, q), y=q, mode="lines", name=name, legendgroup=name, meta=r["config"],
                                         showlegend=col == 1, line=dict(color=colour, dash=st.dashes.get(r["load_level"], "solid"), width=1.6),
                                         hovertemplate="%{x:,.2f} ms: %{y:.0%} at or below<extra>" + name + "</extra>"), row=1, col=col)
    if not any(seen):
        return None
    for col, (vals, title) in enumerate(zip(seen, ("TTFT (ms)", "inter-token latency (ms)")), start=1):
        v = np.concatenate(vals) if vals else np.array([1.0])
        v = v[v > 0]  # gaps of 0 (tokens of one chunk) have no place on a log axis
        fig.update_xaxes(**ps.axis([v.min(), v.max()] if v.size else [1.0], title), row=1, col=col)
    fig.update_yaxes(title_text="share of requests (TTFT) / of gaps (ITL)", range=[0, 1.02], tickformat=".0%", col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", col=2)
    fig.update_layout(height=600, title="Latency distributions (CDF; colour: configuration, dash: load level)",
                      legend={**LEGEND, "font": dict(size=10)})
    return fig


def _fmt_usd(v: float) -> str:
    return "-" if not np.isfinite(v) else (f"${v:,.2f}" if v >= 1 else f"${v:.2g}")


def cost_bars(df: pd.DataFrame, st: Style):
    """$ per 1M output tokens, one bar colour per configuration, grouped by load level, each
    bar labelled with its value (and a log axis when one costs 20x another)."""
    import plotly.graph_objects as go

    ok = df[ok_mask(df) & df["usd_per_1m"].notna()]
    if ok.empty:
        return None
    order = list(dict.fromkeys(ok.sort_values(["concurrency", "rate"], na_position="last")["load_level"]))
    fig = go.Figure()
    for name, g in by_series(ok, st):
        colour = st.colour(g["config"].iloc[0])
        pattern = dict(shape=PATTERNS[list(st.symbols).index(g["source"].iloc[0]) % len(PATTERNS)], fgcolor="#ffffff")
        fig.add_trace(go.Bar(x=g["load_level"], y=g["usd_per_1m"], name=name, meta=g["config"].iloc[0],
                             marker=dict(color=colour, pattern=pattern),
                             text=[_fmt_usd(v) for v in g["usd_per_1m"]], cliponaxis=False, textangle=0,
                             textfont=dict(size=10, color="#222222"), error_y=ps.error_bars(g, "usd_per_1m", "#333333"),
                             # an interval's arms cross a label at the bar's end: the label goes to its base
                             **(dict(textposition="inside", insidetextanchor="start") if ps.has_ci(ok, "usd_per_1m")
                                else dict(textposition="outside")),
                             hovertemplate="%{x}<br>$%{y:.4g} per 1M output tokens<extra>" + name + "</extra>"))
    yaxis = ps.axis(ps.ci_values(ok, "usd_per_1m"), "$ per 1M output tokens", prefix="$")
    if yaxis["type"] == "log":  # room above the tallest bar for its label
        yaxis["range"] = [np.log10(min(yaxis["tickvals"])), np.log10(max(yaxis["tickvals"])) + 0.3]
    fig.update_layout(barmode="group", height=520, title="Cost: $ per 1M output tokens by load level (bar: configuration)",
                      xaxis=dict(title_text="load level", categoryorder="array", categoryarray=order), yaxis=yaxis,
                      legend=LEGEND)
    return fig


def pareto_plot(df: pd.DataFrame, st: Style):
    """Cost against latency for every priced run, with each model's Pareto front drawn in its
    own dash and named at its end."""
    import plotly.graph_objects as go

    ok = df[ok_mask(df) & df["usd_per_1m"].notna() & df["ms_per_token_p50"].notna()]
    if ok.empty:
        return None
    fig = go.Figure()
    for name, g in by_series(ok, st):
        t = _point_trace(g, name, st, "ms_per_token_p50", "usd_per_1m")
        t.update(mode="markers+text", hovertemplate="%{customdata}<br>%{x:,.2f} ms/token<br>$%{y:.4g} per 1M<extra>" + name + "</extra>")
        fig.add_trace(t)
    for i, (model, g) in enumerate(sorted(ok.groupby("family"), key=lambda kv: size_key(kv[0]))):
        front = g[pareto_mask(g["usd_per_1m"].to_numpy(float), g["ms_per_token_p50"].to_numpy(float))]
        front = front.sort_values("ms_per_token_p50")
        colour, dash = ps.FRONT_COLOURS[i % len(ps.FRONT_COLOURS)], ps.DASHES[(i + 1) % len(ps.DASHES)]
        fig.add_trace(go.Scatter(x=front["ms_per_token_p50"], y=front["usd_per_1m"], mode="lines+text", meta=f"front:{model}",
                                 name=f"Pareto front: {model}", line=dict(dash=dash, color=colour, width=2),
                                 text=[""] * (len(front) - 1) + [f"front: {model}"], textposition="top left",
                                 textfont=dict(color=colour, size=11), hoverinfo="skip"))
    fig.update_layout(height=560, title="Cost vs latency: lower left is better (one Pareto front per model)", legend=LEGEND,
                      xaxis=ps.axis(ps.ci_values(ok, "ms_per_token_p50"), "latency (ms/token, median)"),
                      yaxis=ps.axis(ps.ci_values(ok, "usd_per_1m"), "$ per 1M output tokens", prefix="$"))
    return fig


def gpu_timelines(df: pd.DataFrame, st: Style, max_runs: int = 8):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs = [r for _, r in df.iterrows() if isinstance(r.get("run_dir"), str) and (Path(r["run_dir"]) / "gpu.parquet").exists()]
    if not runs:
        return None
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, subplot_titles=("GPU memory used", "GPU utilisation", "GPU power"))
    for r in runs[:max_runs]:
        gpu = pd.read_parquet(Path(r["run_dir"]) / "gpu.parquet")
        req = pd.read_parquet(Path(r["run_dir"]) / "requests.parquet", columns=["sent_ns", "warmup"]) \
            if (Path(r["run_dir"]) / "requests.parquet").exists() else None
        t0 = int(req.loc[~req["warmup"] & (req["sent_ns"] > 0), "sent_ns"].min()) if req is not None and len(req) else int(gpu["t_ns"].min())
        for g, d in gpu.groupby("gpu"):
            name = f"{st.name(r)} @ {r['load_level']} GPU {g}"
            x = (d["t_ns"].to_numpy(np.int64) - t0) / 1e9
            line = dict(color=st.colour(r["config"]), width=1.2, dash=st.dashes.get(r["load_level"], "solid"))
            for row, (col, scale) in enumerate((("mem_used_bytes", 2**-30), ("util_gpu_pct", 1), ("power_w", 1)), start=1):
                fig.add_trace(go.Scatter(x=x, y=d[col].to_numpy(float) * scale, mode="lines", name=name, legendgroup=name,
                                         meta=r["config"], showlegend=row == 1, line=line), row=row, col=1)
    for row, unit in enumerate(("memory (GiB)", "utilisation (%)", "power (W)"), start=1):
        fig.update_yaxes(title_text=unit, rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text="seconds from the run's first measured send", row=3, col=1)
    fig.update_layout(height=760, legend=LEGEND,
                      title="GPU telemetry (NVML)" + (f", first {max_runs} runs" if len(runs) > max_runs else ""))
    return fig
