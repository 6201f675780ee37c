"""Timeline of one run: load, throughput and telemetry on one time axis.

Reads the run dir (requests.parquet, and gpu/process/server_metrics.parquet when present)
and writes timeline.png (matplotlib) and timeline.html (plotly, self-contained so it opens
offline). Time 0 is the first measured (non-warm-up) send; warm-up and start-up show at
negative times; the shaded band is the measured window (first send to last response end).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from servebench.errors import described
from servebench.outputs.panels import Panel, Series, Timeline

GIB = 1024**3
_BATCH = 256  # rows of requests.parquet a step: a few MB of stamps even at 16K tokens a row (a row group is ~256K tokens)


class PlotError(ValueError):
    """The run dir can't be plotted (message is one line)."""


def _read(run_dir: Path, name: str) -> pd.DataFrame | None:
    p = run_dir / name
    if not p.exists():
        return None
    try:
        return pd.read_parquet(p)
    except Exception as e:
        raise PlotError(f"cannot read {p}: {described(e)}") from e


_PER_TOKEN = ("token_ns", "token_counts")


def _requests(run_dir: Path) -> tuple[pd.DataFrame, pq.ParquetFile] | None:
    """requests.parquet without its per-token columns (those are read a batch at a time by
    _tokens: whole, they were the plot's memory, ~30 B a token after a long run, issue 20)."""
    p = run_dir / "requests.parquet"
    if not p.exists():
        return None
    try:
        pf = pq.ParquetFile(p)
        names = pf.schema_arrow.names
        missing = {"sent_ns", "end_ns", "token_ns", "warmup"} - set(names)
        if missing:
            raise PlotError(f"{p}: missing columns {sorted(missing)}")
        return pf.read(columns=[c for c in names if c not in _PER_TOKEN]).to_pandas(), pf
    except PlotError:
        raise
    except Exception as e:
        raise PlotError(f"cannot read {p}: {described(e)}") from e


def _tokens(pf: pq.ParquetFile, keep: np.ndarray, t0_ns: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One pass over the per-token columns, BATCH rows at a time, of the rows `keep` selects:
    output tokens summed into the 1 s bins of `edges` (s from t0), each row's first token
    stamp (0: none), and the last token stamp. A row's counts weigh its stamps when there is
    one per stamp, else every stamp counts 1."""
    sums = np.zeros(len(edges) - 1)
    first = np.zeros(len(keep), dtype=np.int64)
    last, row = 0, 0
    cols = [c for c in _PER_TOKEN if c in pf.schema_arrow.names]
    try:
        for b in pf.iter_batches(batch_size=_BATCH, columns=cols):
            ns = b.column("token_ns")
            lens = pc.list_value_length(ns).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            flat = ns.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
            w = _weights(b.column("token_counts") if "token_counts" in cols else None, lens)
            rows = np.repeat(np.arange(len(lens)), lens)
            k = keep[row:row + len(lens)]
            starts = np.cumsum(lens) - lens
            has = (lens > 0) & k
            first[row:row + len(lens)][has] = flat[starts[has]]
            mine = k[rows]
            if mine.any():
                last = max(last, int(flat[mine].max()))
                sums += np.histogram((flat[mine] - t0_ns) / 1e9, bins=edges, weights=w[mine])[0]
            row += len(lens)
    except Exception as e:
        raise PlotError(f"cannot read token stamps from requests.parquet: {described(e)}") from e
    return sums, first, last


def _weights(counts, lens: np.ndarray) -> np.ndarray:
    w = np.ones(int(lens.sum()))
    if counts is None:
        return w
    clens = pc.list_value_length(counts).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    ok = clens == lens  # a null or mismatched row counts each stamp once
    cflat = counts.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    cvalid = ok[np.repeat(np.arange(len(clens)), np.maximum(clens, 0))]
    w[ok[np.repeat(np.arange(len(lens)), lens)]] = cflat[cvalid]
    return w


def in_flight(sent_ns: np.ndarray, end_ns: np.ndarray, t0_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Step series of requests in flight: +1 at each send, -1 at each end; events at the
    same instant are netted (a closed loop's back-to-back requests don't draw spikes)."""
    t = np.concatenate([end_ns, sent_ns])
    d = np.concatenate([-np.ones(len(end_ns)), np.ones(len(sent_ns))])
    order = np.argsort(t, kind="stable")
    t, level = t[order], np.cumsum(d[order])
    last = np.append(t[1:] != t[:-1], True)  # the level after all events at that instant
    return (t[last] - t0_ns) / 1e9, level[last]


def bin_edges(t0_ns: int, t_end_ns: int, bin_s: float = 1.0) -> np.ndarray:
    """Edges (s from t0) of `bin_s` bins over [t0, t_end]; the last bin may be partial."""
    span = max(t_end_ns - t0_ns, 1) / 1e9
    edges = np.arange(0.0, span, bin_s)
    return np.append(edges, span) if edges[-1] < span else edges


def tokens_per_s(token_ns: np.ndarray, counts: np.ndarray, t0_ns: int, t_end_ns: int, bin_s: float = 1.0):
    """Output tokens per second in bins of `bin_s` from t0 -> (edges, rates), one more edge
    than rates. The last, partial bin is divided by its own width, so the end of the run
    doesn't look like a drop."""
    edges = bin_edges(t0_ns, t_end_ns, bin_s)
    sums, _ = np.histogram((token_ns - t0_ns) / 1e9, bins=edges, weights=counts)
    return edges, sums / np.diff(edges)


def build(run_dir: str | Path) -> Timeline:
    run_dir = Path(run_dir)
    got = _requests(run_dir)
    if got is None:
        raise PlotError(f"{run_dir}: no requests.parquet (not a run dir?)")
    req, pf = got
    keep = ((req["sent_ns"] > 0) & ~req["warmup"].astype(bool)).to_numpy()
    meas = req[keep]
    if meas.empty:
        raise PlotError(f"{run_dir}: no measured (non-warm-up) requests to plot")
    t0 = int(meas["sent_ns"].min())
    last_end = int(meas["end_ns"].max())
    edges = bin_edges(t0, max(last_end, t0 + 1))
    sums, first, last_tok = _tokens(pf, keep, t0, edges)
    meas = meas.assign(first_token_ns=first[keep])
    # A request without an end (failed before any response) stays in flight to the end.
    ends = meas["end_ns"].to_numpy(np.int64)
    ends = np.where(ends > 0, ends, max(last_end, last_tok))

    flight = Panel("Requests in flight", "requests", metric="in flight")
    sends = meas["sent_ns"].to_numpy(np.int64)
    flight.series.append(Series("client", *in_flight(sends, ends, t0), step=True))
    tps = Panel("Output tokens/s (1 s bins)", "tokens/s", metric="output")
    rate = sums / np.diff(edges)
    # Repeat the last rate at the final edge so a step plot draws the last bin too.
    tps.series.append(Series("client", edges, np.append(rate, rate[-1]), step=True))
    from servebench.outputs.offered import panels as offered  # open loops: offered load beside latency

    panels = [flight, tps, *offered(run_dir, meas, t0)] + _server_panels(run_dir, t0, flight)
    return Timeline(t0, (0.0, (last_end - t0) / 1e9), panels)


def _server_panels(run_dir: Path, t0: int, flight: Panel) -> list[Panel]:
    """Panels of the telemetry files a run holds; the server's own queue joins `flight`."""
    panels: list[Panel] = []

    def rel(df: pd.DataFrame) -> np.ndarray:
        return (df["t_ns"].to_numpy(np.int64) - t0) / 1e9

    gpu = _read(run_dir, "gpu.parquet")
    if gpu is not None and not gpu.empty:
        util, mem = Panel("GPU utilisation", "%", metric="GPU util"), Panel("GPU memory used", "GiB", metric="GPU memory")
        for g, df in gpu.groupby("gpu"):
            util.series.append(Series(f"GPU {g}", rel(df), df["util_gpu_pct"].to_numpy(float)))
            mem.series.append(Series(f"GPU {g}", rel(df), df["mem_used_bytes"].to_numpy(float) / GIB))
        panels += [util, mem]
    proc = _read(run_dir, "process.parquet")
    if proc is not None and not proc.empty:
        x = rel(proc)
        panels.append(Panel("Server CPU", "cores", [Series("process tree", x, proc["cpu_cores"].to_numpy(float))], "CPU"))
        if gpu is None or gpu.empty:
            rss = proc["rss_bytes"].to_numpy(float) / GIB
            panels.append(Panel("Server RSS", "GiB", [Series("process tree", x, rss)], "RSS"))
    sm = _read(run_dir, "server_metrics.parquet")
    if sm is not None and not sm.empty:
        sm = sm[sm["status"] == 200]
        for col, label in (("running", "server running"), ("waiting", "server waiting")):
            if sm[col].notna().any():
                flight.series.append(Series(label, rel(sm), sm[col].to_numpy(float), dash=True))
        if sm["kv_cache_usage"].notna().any():
            kv = sm["kv_cache_usage"].to_numpy(float) * 100  # the engines report a fraction
            panels.append(Panel("KV-cache use", "%", [Series("server", rel(sm), kv)], "KV cache"))
    return panels


def _png(tl: Timeline, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(tl.panels)
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(11, 2.1 * n + 0.6), squeeze=False)
    for ax, p in zip(axes[:, 0], tl.panels):
        for s in p.series:
            kw = {"label": s.label, "linestyle": "--" if s.dash else "-", "linewidth": 1.2}
            ax.step(s.x, s.y, where="post", **kw) if s.step else ax.plot(s.x, s.y, **kw)
        if tl.window_s:
            ax.axvspan(*tl.window_s, color="tab:green", alpha=0.07, linewidth=0)
        # Everything plotted is non-negative; a zero baseline keeps flat series honest.
        ax.set_ylim(bottom=0, top=105 if p.unit == "%" else None)
        ax.set_title(p.title, fontsize=9, loc="left")
        ax.set_ylabel(p.axis_title, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(p.series) > 1:
            ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds from first measured send (shaded: measured window)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html(tl: Timeline, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(tl.panels)
    titles = [p.title for p in tl.panels]
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.04)
    for i, p in enumerate(tl.panels, start=1):
        for s in p.series:
            line = {"shape": "hv" if s.step else "linear", "dash": "dash" if s.dash else "solid"}
            trace = go.Scatter(x=s.x, y=s.y, name=f"{p.title}: {s.label}", mode="lines", line=line)
            fig.add_trace(trace, row=i, col=1)
        fig.update_yaxes(title_text=p.axis_title, rangemode="tozero", row=i, col=1)
        if tl.window_s:
            x0, x1 = tl.window_s
            fig.add_vrect(x0=x0, x1=x1, fillcolor="green", opacity=0.07, line_width=0, row=i, col=1)
    fig.update_xaxes(title_text="seconds from first measured send", row=n, col=1)
    fig.update_layout(height=230 * n + 80, showlegend=True, template="plotly_white")
    # Embed plotly.js: the report must open on a machine without network.
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def plot_run(run_dir: str | Path) -> list[str]:
    """Write timeline.png and timeline.html into run_dir; return their paths."""
    run_dir = Path(run_dir)
    tl = build(run_dir)
    png, html = run_dir / "timeline.png", run_dir / "timeline.html"
    _png(tl, png)
    _html(tl, html)
    return [str(png), str(html)]


@click.command("plot")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def plot(run_dir: Path) -> None:
    """Draw timeline.png and timeline.html for a run directory."""
    try:
        for p in plot_run(run_dir):
            click.echo(p)
    except PlotError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a read-only run dir
        raise click.ClickException(f"cannot write the plots in {run_dir}: {e.strerror or e}") from None
