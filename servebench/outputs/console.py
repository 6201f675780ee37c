"""Console report, rebuilt from a run directory alone (summary.json + run.json)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from servebench.store.runfiles import load_summary, read_json
from servebench.analysis.client_check import warning as client_warning
from servebench.outputs.traffic import lines as traffic_lines


def _f(v, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}"


def warnings(s: dict) -> list[str]:
    """Things a reader must not miss: they change what the numbers mean."""
    out = list(s.get("warnings") or [])
    o, i, c = s["output_tokens"], s["input_tokens"], s.get("concurrency") or {}
    if s["failed"]:
        out.append(f"{s['failed']} request(s) failed ({s['error_rate']:.1%}): " + "; ".join(f"{k} x{v}" for k, v in s.get("errors", {}).items()))
    if s.get("not_released"):  # --duration ended, or the load was stopped, before their turn
        out.append(f"{s['not_released']} request(s) never released (--duration ended or the load stopped first): "
                   f"the figures are of the {s['completed'] + s['failed']} sent")
    if o.get("shortfall_requests"):
        out.append(
            f"output shortfall: {o['shortfall_requests']} request(s) produced fewer tokens than requested "
            f"(requested {_f(o['requested_mean'], 1)}, achieved mean {_f(o['achieved_mean'], 1)})"
        )
    if o.get("client_counted"):
        out.append(f"output tokens client-counted for {o['client_counted']} request(s): the server reported no "
                   "usage, so each streamed chunk with text counts as one token")
    if o.get("count_mismatches"):
        out.append(f"{o['count_mismatches']} request(s): server-reported output tokens differ from streamed chunks")
    if i.get("mismatched_requests") and s.get("sessions"):
        out.append(f"{i['mismatched_requests']} turn(s): the server counted the conversation differently from the "
                   "tokenizer's own chat template (the server applies another template)")
    elif i.get("mismatched_requests"):
        out.append(f"{i['mismatched_requests']} request(s): server-counted prompt tokens differ from the requested length")
    tgt = c.get("target")
    if tgt and not s.get("sessions") and s["completed"] >= 2 * tgt and c.get("mean_in_flight", 0) < 0.95 * tgt:
        out.append(f"target concurrency {tgt} not held: mean in flight {c['mean_in_flight']:.2f}")
    cw = client_warning((s.get("client") or {}).get("verdict") or {})
    if cw:
        out.append(cw)
    if rate_short(s):
        r = s["rate"]
        asked = f" (the schedule offered {r['offered']:.2f}/s)" if r.get("offered") else ""
        out.append(f"target rate {r['target']:g}/s not reached: achieved {r['achieved']:.2f}/s{asked}")
    if s.get("status") and s["status"] != "complete":
        out.append(f"run {s['status']}: numbers cover only what was measured before it stopped")
    return out


def rate_short(s: dict) -> bool:
    """Achieved below 95% of what the schedule offered (a capped or overloaded open loop); of the
    target where the offered rate is not known. A short Poisson draw offers less than its
    target by chance, and sending it as drawn is no shortfall."""
    r = s.get("rate") or {}
    want = r.get("offered") or r.get("target")
    return bool(r.get("target") and r.get("achieved") is not None and s["completed"] >= 20
                and r["achieved"] < 0.95 * want)


def _lengths(wl: dict, s: dict) -> str:
    """Requested lengths: the options, or for a prompts file its measured means (the options'
    defaults were never used)."""
    if wl.get("trace"):
        return f"trace {wl['trace']['source']}"
    if wl.get("prompts_file"):
        i, o = s["input_tokens"].get("requested_mean"), s["output_tokens"].get("requested_mean")
        return f"prompts {Path(wl['prompts_file']).name} (mean {_f(i, 1)}→{_f(o, 1)} tokens)"
    return f"{wl.get('input_tokens')}→{wl.get('output_tokens')} tokens"


def render(run_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    s = load_summary(run_dir)
    run = read_json(Path(run_dir) / "run.json") if (Path(run_dir) / "run.json").exists() else {}
    cfg = run.get("config", {})
    load = cfg.get("load", {})
    wl = cfg.get("workload", {})
    mode = "rate %s/s" % load["rate"] if load.get("rate") else (f"concurrency {load['concurrency']}" if load.get("concurrency") else "burst")
    engine = run.get("engine", {})
    console.print(
        f"[bold]{engine.get('name', cfg.get('backend', '?'))}[/] {engine.get('version') or ''}  model={run.get('model', cfg.get('model'))}  "
        f"{mode}  {_lengths(wl, s)}  status={s['status']}"
    )
    console.print(_throughput(s))
    console.print(_latency(s))
    o, i = s["output_tokens"], s["input_tokens"]
    console.print(
        f"tokens: input requested {_f(i['requested_mean'], 1)}, server-counted {_f(i['server_mean'], 1)} | "
        f"output requested {_f(o['requested_mean'], 1)}, achieved {_f(o['achieved_mean'], 1)} "
        f"(server-reported for {o['server_reported']}/{s['completed']})"
    )
    console.print("client: " + ", ".join(_client(s)))
    for line in traffic_lines(s):  # a trace, length mixes, prefix reuse, schedule fidelity
        console.print(line)
    _notes(s, run, console)
    from servebench.estimate.report import render_efficiency  # issue 13: measured vs physical floor

    render_efficiency(run_dir, console, s)


def _throughput(s: dict) -> Table:
    t = Table(title="Throughput", show_header=True, header_style="bold")
    for col in ("completed", "failed", "duration s", "req/s", "output tok/s", "total tok/s", "in flight: target / mean / max"):
        t.add_column(col, justify="right")
    c = s.get("concurrency") or {}
    t.add_row(
        _f(s["completed"]), _f(s["failed"]), _f(s["duration_s"]), _f(s["request_throughput"]),
        _f(s["output_token_throughput"], 1), _f(s["total_token_throughput"], 1),
        f"{_f(c.get('target'))} / {_f(c.get('mean_in_flight'))} / {_f(c.get('max_in_flight'))}",
    )
    return t


def _latency(s: dict) -> Table:
    lat = Table(title="Latency (ms)", show_header=True, header_style="bold")
    lat.add_column("metric")
    for col in ("mean", "p50", "p90", "p95", "p99"):
        lat.add_column(col, justify="right")
    for key, label in (("ttft_ms", "TTFT"), ("itl_ms", "ITL"), ("tpot_ms", "TPOT"), ("e2e_ms", "end-to-end"), ("ms_per_token", "ms/token (e2e/tokens)")):
        d = s[key]
        lat.add_row(label, *(_f(d.get(k)) for k in ("mean", "p50", "p90", "p95", "p99")))
    return lat


def _client(s: dict) -> list[str]:
    """The client's side of the run: its waits, lags, CPU and whether it kept up."""
    client = [f"slot wait p99 {_f((s.get('slot_wait_ms') or {}).get('p99'))} ms", f"dispatch lag p99 {_f((s.get('dispatch_lag_ms') or {}).get('p99'))} ms"]
    if s.get("loop_lag_ms"):
        client.append(f"event-loop lag p99 {_f(s['loop_lag_ms'].get('p99'))} ms")
    cl = s.get("client") or {}
    if cl.get("cpu_us_per_token") is not None:
        client.append(f"CPU {_f(cl['cpu_cores'])} cores, {_f(cl['cpu_us_per_token'], 1)} µs/token")
    if s.get("read_lag_ms") and s["read_lag_ms"].get("p99") is not None:
        client.append(f"read lag p99 {_f(s['read_lag_ms']['p99'])} ms")
    kept = cl.get("kept_up")
    if kept is not None:
        client.append("kept up" if kept else "did NOT keep up")
    rate = s.get("rate") or {}
    if rate.get("target"):
        client.insert(0, f"rate target {_f(rate['target'])}/s achieved {_f(rate.get('achieved'))}/s")
    return client


def _notes(s: dict, run: dict, console: Console) -> None:
    """Telemetry headlines, the server's dtype and the warnings."""
    tel = s.get("telemetry") or {}
    for name, ts in tel.items():
        if isinstance(ts, dict) and ts.get("available") is False:
            console.print(f"telemetry {name}: unavailable ({ts.get('reason')})")
        elif isinstance(ts, dict) and ts.get("headline"):
            console.print(f"telemetry {name}: {ts['headline']}")
    info = (run.get("server") or {}).get("info") or {}
    if (info.get("dtype") or {}).get("dtype"):  # CPU engines: the weights dtype and why (hostcpu)
        console.print(f"server dtype: {info['dtype']['dtype']} ({info['dtype'].get('why')})")
    for w in warnings(s):
        console.print(f"[yellow]warning:[/] {w}")
