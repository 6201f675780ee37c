"""`servebench estimate`'s text output: the deployment, its memory and calibration, then a table
per concurrency level, or per replay speed for a trace."""

from __future__ import annotations


def _width() -> int | None:
    """COLUMNS when set (piped too: outputs/render.py's rule; outputs imports this stage, so
    not from there); else the terminal's; piped without it, 140 rather than rich's 80."""
    import os
    import sys

    cols = os.environ.get("COLUMNS", "").strip()
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    return None if sys.stdout.isatty() else 140


def _f(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


def render(r: dict, console=None) -> None:
    from rich.console import Console

    console = console or Console(width=_width())
    m, hw, cap = r["model"], r["hardware"], r["capacity"]
    params = f"{m['params'] / 1e9:.2f} B" if m["params"] >= 1e9 else f"{m['params'] / 1e6:.1f} M"
    console.print(f"[bold]ESTIMATE[/] (not measured): {m['name']} ({params} params, "
                  f"{m['weight_gib']:.3g} GiB weights) on {r['gpus']}x {hw['label']} "
                  f"({hw['bandwidth_gbs']:.4g} GB/s, {hw['memory_gib']:.3g} GiB each)"
                  + (f" = {r['instance_type']}" if r.get("instance_type") else "") + f", engine {r['engine']}, "
                  + (_trace_line(r["workload"]) if "trace" in r["workload"] else
                     f"{r['workload']['input_tokens']}→{r['workload']['output_tokens']} tokens, {r['workload']['arrivals']} arrivals"))
    if r.get("engine_note"):
        console.print(f"[yellow]note:[/] {r['engine_note']}")
    if r.get("link_note"):
        console.print(f"link: {r['link_note']}")
    if r.get("front_door_note"):
        console.print(f"[yellow]note:[/] {r['front_door_note']}")
    if not r["fits"]:
        console.print(f"[bold red]does not fit:[/] {cap['why']}")
        return
    console.print(f"memory per GPU: weights {cap['weights_gib']:.3g} GiB + reserve {cap['reserve_gib']:g} GiB of "
                  f"{cap['usable_gib']:.1f} GiB usable → KV cache {cap['kv_gib']:.1f} GiB = {cap['kv_tokens']:,} tokens "
                  f"({cap['kv_bytes_per_token'] / 1024:.0f} KiB/token); largest batch {cap['max_batch']:,} "
                  f"sequences of {r['workload']['input_tokens'] + r['workload']['output_tokens']} tokens"
                  + (" (the trace's mean)" if "trace" in r["workload"] else "")
                  + (f", the engine's cap (max_num_seqs {cap['max_num_seqs']:,})"
                     if cap.get("max_num_seqs") == cap["max_batch"] else ""))
    _calibration(r, console)
    if "trace" in r["workload"]:
        _trace_table(r, console)
    else:
        _levels_table(r, console)


def _calibration(r: dict, console) -> None:
    cal = r["calibration"]
    if cal.get("runs"):
        f = cal["factors"]
        loo = cal.get("loo_mape")
        console.print(f"calibrated on {cal['runs']} run(s) ({', '.join(cal['hardware'])}): eta_mem {f['eta_mem']:.2f}, "
                      f"eta_compute {f['eta_compute']:.2f}, step overhead {f['step_ms']:.2f} ms"
                      + (f", collective {f['alpha_us']:.0f} µs, link {f['eta_link']:.2f}" if "alpha_us" in cal["fitted"] else "")
                      + (f"; leave-one-out error {loo:.0%}" if loo is not None else "")
                      + f"; target hardware: {r['transfer']}")
        if r.get("engine_calibrated") is False:
            console.print(f"[yellow]note:[/] no calibration run used {r['engine']} ({', '.join(cal['engines'])} did): band widened")
    else:
        console.print(f"[yellow]not calibrated on your runs[/]: {cal['note']} (pass --calibrate RUN_DIR to fit them on your runs)")


def _levels_table(r: dict, console) -> None:
    from rich.table import Table

    t = Table(title="Estimate per concurrency (conc)", header_style="bold", pad_edge=False)
    cols = ["conc", "batch", "TTFT ms", "TPOT ms", "ms/tok", "out tok/s", "range", "bound"]
    has_cost = any("usd_per_1m_output_tokens" in x for x in r["levels"])
    if has_cost:
        cols += ["$/1M", "$ range"]
    for c in cols:
        t.add_column(c, justify="right")
    for x in r["levels"]:
        lo, hi = x["output_tok_s_band"]
        row = [str(x["concurrency"]), _f(x["batch"], 0), _f(x["ttft_ms"]), _f(x["tpot_ms"], 2),
               _f(x["ms_per_token"], 2), _f(x["output_tok_s"]), f"{_f(lo, 0)}–{_f(hi, 0)}", x["decode_bound"][:3]]
        if has_cost:
            clo, chi = x["usd_per_1m_output_tokens_band"]
            row += [_f(x["usd_per_1m_output_tokens"], 2), f"{_f(clo, 2)}–{_f(chi, 2)}"]
        t.add_row(*row)
    console.print(t)
    console.print("bound: what limits a decode step (mem = memory bandwidth, com = compute, hos = host kernel launches)")
    console.print(f"uncertainty: every figure {r['band']}; ranges shown for throughput and cost")
    if any(x["queue_ms"] > 0 for x in r["levels"]):
        console.print("[yellow]note:[/] levels above the largest batch queue: their TTFT includes waiting for a slot")
    hit = [f"{x['preemptions']:,} at {x['concurrency']}" for x in r["levels"] if x.get("preemptions")]
    if hit:
        console.print(f"[yellow]note:[/] the KV cache fills and {r['engine']} preempts requests (recomputed later, "
                      f"their time included): {', '.join(hit)}")


def _trace_line(w: dict) -> str:
    t, i, o = w["trace"], w["trace"]["input_tokens"], w["trace"]["output_tokens"]
    pre = t.get("prefix")
    cache = "no prefix blocks in the trace" if not pre else (
        f"prefix cache {'on' if w['prefix_cache'] else 'off'} ({pre['share']:.1%} of prompt tokens in blocks seen before)")
    return (f"trace {t['name']}: {t['requests']:,} requests over {t['span_s']:,.0f} s"
            + (f" (lengths x{t['scale_lengths']:g})" if t["scale_lengths"] != 1 else "")
            + f", prompts mean {i['mean']:,.0f} / p50 {i['p50']:,.0f} / max {i['max']:,} tokens, outputs mean "
            f"{o['mean']:,.0f}; {cache}" + _clipped(t.get("clipped") or {}))


def _clipped(c: dict) -> str:
    if not (c.get("input") or c.get("output")):
        return ""
    return (f"; clipped to the model's {c['context']:,}-token context as `run` clips them: {c['input']:,} prompt(s), "
            f"{c['output']:,} output(s)")


def _trace_table(r: dict, console) -> None:
    from rich.table import Table

    t = Table(title="Estimate per replay speed (the trace's arrivals, K times faster)", header_style="bold",
              pad_edge=False)
    cols = ["speed", "req/s", "peak batch", "TTFT ms", "p99", "TPOT ms", "p99", "queue ms", "out tok/s", "range"]
    has_cost = any("usd_per_1m_output_tokens" in x for x in r["levels"])
    cached = any("prefix_hit_rate" in x for x in r["levels"])
    cols += (["prefix hit"] if cached else []) + (["$/1M", "$ range"] if has_cost else [])
    for c in cols:
        t.add_column(c, justify="right")
    for x in r["levels"]:
        lo, hi = x["output_tok_s_band"]
        row = [f"x{x['speed']:g}", _f(x["offered_rate_per_s"], 2), _f(x["peak_batch"], 0), _f(x["ttft_ms"]),
               _f(x["ttft_ms_p99"]), _f(x["tpot_ms"], 2), _f(x["tpot_ms_p99"], 2), _f(x["queue_ms"]),
               _f(x["output_tok_s"]), f"{_f(lo, 0)}–{_f(hi, 0)}"]
        if cached:
            row.append(f"{x['prefix_hit_rate']:.1%}")
        if has_cost:
            clo, chi = x["usd_per_1m_output_tokens_band"]
            row += [_f(x["usd_per_1m_output_tokens"], 2), f"{_f(clo, 2)}–{_f(chi, 2)}"]
        t.add_row(*row)
    console.print(t)
    console.print("queue: arrival to admission (a preempted request: to its readmission); a queue that grows with "
                  "the speed is a deployment that does not keep up; out tok/s: the trace's tokens over the replay")
    console.print(f"uncertainty: every time and throughput {r['band']}; ranges shown for throughput and cost")
    hit = [f"{x['preemptions']:,} at x{x['speed']:g}" for x in r["levels"] if x.get("preemptions")]
    if hit:
        console.print(f"[yellow]note:[/] the KV cache fills and {r['engine']} preempts requests (recomputed later, "
                      f"their time included): {', '.join(hit)}")
