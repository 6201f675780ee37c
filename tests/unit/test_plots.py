"""Timeline plots from a synthetic run dir."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from servebench.outputs.plots import PlotError, build, in_flight, plot_run, tokens_per_s

S = 1_000_000_000
T0 = 50 * S  # perf_counter origin of the synthetic run


def make_run(d, gpu=True, process=False, metrics=True):
    rows = [
        # warm-up before t0: must not move t0 or count tokens
        {"sent_ns": T0 - 2 * S, "end_ns": T0 - S, "token_ns": [T0 - S], "token_counts": [1], "warmup": True},
    ]
    for i in range(8):
        sent = T0 + i * S // 2
        toks = [sent + S // 10 * (k + 1) for k in range(20)]  # 20 tokens, 10/s per request
        rows.append({"sent_ns": sent, "end_ns": toks[-1], "token_ns": toks, "token_counts": [1] * 20, "warmup": False})
    pd.DataFrame(rows).to_parquet(d / "requests.parquet")
    t = np.arange(T0 - S, T0 + 7 * S, S // 10)
    if gpu:
        g = pd.DataFrame({"t_ns": np.concatenate([t, t]), "gpu": [0] * len(t) + [1] * len(t),
                          "util_gpu_pct": 80.0, "mem_used_bytes": 20 * 2**30})  # fmt: skip
        g.to_parquet(d / "gpu.parquet")
    if process:
        pd.DataFrame({"t_ns": t, "cpu_cores": 1.5, "rss_bytes": 3 * 2**30, "num_procs": 3}).to_parquet(d / "process.parquet")
    if metrics:
        tm = np.arange(T0 - S, T0 + 7 * S, S)
        pd.DataFrame({"t_ns": tm, "status": 200, "running": 4.0, "waiting": 1.0, "kv_cache_usage": 0.3,
                      "batch_tokens": None, "prompt_tokens_total": 0.0, "generation_tokens_total": 0.0}).to_parquet(d / "server_metrics.parquet")  # fmt: skip


def test_in_flight_and_tokens_per_s_arithmetic():
    x, y = in_flight(np.array([0, 0, S]), np.array([S, 2 * S, 3 * S]), 0)
    # At t=1 s one request ends and one starts: netted, so it never shows 3 (or a dip).
    assert list(x) == [0, 1, 2, 3] and list(y) == [2, 2, 1, 0]
    edges, rate = tokens_per_s(np.array([0, S // 2, S + 1, int(2.2 * S)]), np.array([1, 3, 2, 5]), 0, int(2.5 * S))
    assert list(edges) == [0.0, 1.0, 2.0, 2.5]
    assert rate[0] == 4 and rate[1] == 2 and rate[2] == pytest.approx(5 / 0.5)  # last bin: its own width


def test_build_timeline_panels(tmp_path):
    make_run(tmp_path)
    tl = build(tmp_path)
    assert tl.t0_ns == T0 and tl.window_s == (0.0, pytest.approx(5.5))
    titles = [p.title for p in tl.panels]
    assert titles == ["Requests in flight", "Output tokens/s (1 s bins)", "GPU utilisation", "GPU memory used", "KV-cache use"]  # fmt: skip
    flight = tl.panels[0]
    assert [s.label for s in flight.series] == ["client", "server running", "server waiting"]
    assert flight.series[0].y.max() == 4  # 8 requests of 2 s, one every 0.5 s
    tps = tl.panels[1].series[0]
    assert tps.x[-1] == pytest.approx(5.5) and tps.y[-1] == tps.y[-2]  # bins end at the last response
    assert (tps.y[:-1] * np.diff(tps.x)).sum() == pytest.approx(160)  # 8 x 20 tokens; the warm-up token is out
    assert tps.y.max() == pytest.approx(40)  # 4 requests x 10 tokens/s
    assert tl.panels[4].series[0].y[0] == pytest.approx(30.0)  # fraction -> %
    assert len(tl.panels[2].series) == 2  # one line per GPU


def test_plot_run_writes_png_and_offline_html(tmp_path):
    make_run(tmp_path)
    paths = plot_run(tmp_path)
    assert paths == [str(tmp_path / "timeline.png"), str(tmp_path / "timeline.html")]
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "timeline.html").read_text()
    assert "Plotly.newPlot" in html and "KV-cache use" in html
    assert '<script src="http' not in html and len(html) > 1_000_000  # plotly.js embedded


def test_cpu_run_plots_process_panels(tmp_path):
    make_run(tmp_path, gpu=False, process=True, metrics=False)
    titles = [p.title for p in build(tmp_path).panels]
    assert titles == ["Requests in flight", "Output tokens/s (1 s bins)", "Server CPU", "Server RSS"]
    assert len(plot_run(tmp_path)) == 2


def test_bad_run_dirs_give_one_line_errors(tmp_path):
    with pytest.raises(PlotError, match="no requests.parquet"):
        build(tmp_path)
    pd.DataFrame({"sent_ns": [1], "end_ns": [2]}).to_parquet(tmp_path / "requests.parquet")
    with pytest.raises(PlotError, match=r"missing columns \['token_ns', 'warmup'\]"):
        build(tmp_path)
    pd.DataFrame({"sent_ns": [1], "end_ns": [2], "token_ns": [[2]], "warmup": [True]}).to_parquet(tmp_path / "requests.parquet")  # fmt: skip
    with pytest.raises(PlotError, match="no measured"):
        build(tmp_path)


def test_open_loop_run_plots_offered_load_beside_latency(tmp_path):
    import json

    rows = []
    for i, off in enumerate([0, 0, 0, S // 2, int(1.5 * S), int(1.6 * S)]):  # 4 scheduled in second 0, 2 in second 1
        sent = T0 + off + 1000
        rows.append({"scheduled_ns": T0 + off, "sent_ns": sent, "end_ns": sent + 2 * S, "token_ns": [sent + (i + 1) * S // 100],
                     "token_counts": [1], "warmup": False, "input_tokens": 100 * (i + 1)})
    pd.DataFrame(rows).to_parquet(tmp_path / "requests.parquet")
    (tmp_path / "summary.json").write_text(json.dumps({"schedule": {"send_error_ms": {"p99": 0.001}}}))
    tl = build(tmp_path)
    titles = [p.title for p in tl.panels]
    assert titles[2:] == ["Offered load (scheduled, 1 s bins)", "Offered prompt tokens/s (1 s bins)",
                          "TTFT by send time (worst per 1 s bin)"]
    req, tok, ttft = (tl.panels[k].series[0] for k in (2, 3, 4))
    assert list(req.y[:2]) == pytest.approx([4, 2], rel=1e-3)  # requests/s in full 1 s bins
    assert tok.y[0] == pytest.approx(100 + 200 + 300 + 400, rel=1e-3)
    assert list(ttft.y[:2]) == pytest.approx([40, 60])  # the worst TTFT of the requests sent in each second (ms)
    (tmp_path / "summary.json").write_text(json.dumps({}))  # a closed loop: no schedule, no such panels
    assert len(build(tmp_path).panels) == 2


def test_axis_titles_name_the_metric_beside_its_unit(tmp_path):
    from servebench.outputs.panels import Panel

    make_run(tmp_path)
    assert [p.axis_title for p in build(tmp_path).panels] == [
        "in flight (requests)", "output (tokens/s)", "GPU util (%)", "GPU memory (GiB)", "KV cache (%)"]
    assert Panel("TTFT by send time", "ms", metric="TTFT").axis_title == "TTFT (ms)"
    assert Panel("Something", "GiB").axis_title == "GiB"  # no metric given: the unit alone, as before


def _ragged_run(d, rows=60, group=7):
    """Requests whose counts weigh their stamps, don't match them, or are missing; a request
    without stamps; one that never ended; in small row groups."""
    rng = np.random.default_rng(5)
    out = [{"sent_ns": T0 - S, "end_ns": T0, "token_ns": [T0 - S // 2], "token_counts": [1], "warmup": True}]
    for i in range(rows):
        sent = T0 + i * S // 7
        toks = sorted(int(v) for v in sent + rng.integers(1, 3 * S, int(rng.integers(1, 30))))
        kind = i % 5
        counts = {0: [1] * len(toks), 1: [3] * len(toks), 2: [2] * (len(toks) + 1), 3: None, 4: [1] * len(toks)}[kind]
        out.append({"sent_ns": sent, "end_ns": 0 if i == 11 else toks[-1], "token_ns": None if i == 17 else toks,
                    "token_counts": counts, "warmup": False})
    pd.DataFrame(out).to_parquet(d / "requests.parquet", row_group_size=group)
    return out[1:]


def test_tokens_per_s_read_a_batch_at_a_time_equals_every_stamp_at_once(tmp_path, monkeypatch):
    import servebench.outputs.plots as plots

    rows = _ragged_run(tmp_path)
    monkeypatch.setattr(plots, "_BATCH", 4)  # many passes over few rows: batch edges inside requests' rows
    tl = build(tmp_path)
    stamps, weights = [], []
    for r in rows:
        ts = r["token_ns"] or []
        c = r["token_counts"]
        stamps += ts
        weights += c if c is not None and len(c) == len(ts) else [1] * len(ts)
    last_end = max(r["end_ns"] for r in rows)
    edges, rate = tokens_per_s(np.array(stamps), np.array(weights, dtype=float), T0, last_end)
    tps = tl.panels[1].series[0]
    assert list(tps.x) == list(edges) and list(tps.y[:-1]) == list(rate)
    flight = tl.panels[0].series[0]  # the request that never ended stays in flight to the last stamp
    assert flight.x[-1] == pytest.approx((max(stamps) - T0) / 1e9) and flight.y[-1] == 0


def test_the_timeline_never_reads_every_token_stamp_at_once(tmp_path, monkeypatch):
    """A long run's requests.parquet holds ~12 B a token: the plot reads the token columns a
    batch of rows at a time (issue 20), never the whole column."""
    import pyarrow.parquet as pq

    _ragged_run(tmp_path)
    whole = []
    for mod, name in ((pd, "read_parquet"), (pq, "read_table")):
        real = getattr(mod, name)

        def spy(path, *a, _real=real, **kw):
            cols = kw.get("columns")
            if str(path).endswith("requests.parquet") and (cols is None or "token_ns" in cols):
                whole.append(name)
            return _real(path, *a, **kw)

        monkeypatch.setattr(mod, name, spy)
    real_read = pq.ParquetFile.read

    def file_read(self, columns=None, *a, **kw):
        if columns is None or "token_ns" in columns:
            whole.append("ParquetFile.read")
        return real_read(self, columns, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read", file_read)
    assert build(tmp_path).panels[1].series[0].y.sum() > 0
    assert whole == []
