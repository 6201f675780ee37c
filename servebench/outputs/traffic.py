"""The report's lines about what was sent: a trace and how it was cut, clipping, the trace's
ideal prefix reuse, requested vs achieved length mixes, and how well the schedule was kept."""

from __future__ import annotations


def _n(v, nd: int = 0) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def lines(s: dict) -> list[str]:
    out: list[str] = []
    wl = s.get("workload") or {}
    tr = wl.get("trace")
    if tr:
        lo, hi = tr.get("window_s") or (None, None)
        cut = f"window {lo:g}:{'' if hi is None else format(hi, 'g')} s, " if lo is not None else ""
        out.append(f"trace {tr['name']} ({tr['format']}): {tr['requests']:,} of {tr['requests_in_file']:,} requests, "
                   f"{cut}{_n(tr['span_s'], 1)} s of trace at speed {tr['speed']:g} ({_n(tr['replay_s'], 1)} s), "
                   f"lengths x{tr['scale_lengths']:g}")
    cl = wl.get("clipped") or {}
    if cl.get("input") or cl.get("output"):
        out.append(f"clipped: {cl.get('input', 0)} input length(s), {cl.get('output', 0)} output length(s) "
                   f"(max input {cl.get('max_input_tokens') or '-'}, max output {cl.get('max_output_tokens') or '-'}, "
                   f"context {cl.get('context') or '-'})")
    px = wl.get("prefix")
    if px:
        hit = ((s.get("telemetry") or {}).get("server_metrics") or {}).get("prefix_cache_hit_rate")
        out.append(f"prefix reuse (ideal): {px['share']:.1%} of input tokens in a block seen before "
                   f"({px['distinct_blocks']:,} distinct blocks of {px['block_tokens']} tokens); server prefix-cache "
                   + (f"hit rate {hit:.1%}" if hit is not None else "hit rate not exposed")
                   + (f"; cache {wl['prefix_cache_start']}" if wl.get("prefix_cache_start") else ""))
    for what, d in (wl.get("lengths") or {}).items():
        req, got = d.get("requested") or {}, d.get("achieved") or {}
        spec = (d.get("spec") or {}).get("spec")
        out.append(f"{what} tokens{f' {spec}' if spec else ''}: requested mean {_n(req.get('mean'), 1)} "
                   f"p50 {_n(req.get('p50'))} p99 {_n(req.get('p99'))}; achieved mean {_n(got.get('mean'), 1)} "
                   f"p50 {_n(got.get('p50'))} p99 {_n(got.get('p99'))}")
    out += _sessions(s)
    ss = s.get("steady_state") or {}
    if ss.get("applied"):  # else "completed 37" of --requests 40 reads as 3 lost
        out.append(f"steady-state window: {ss['requests_kept']} of {ss['requests_kept'] + ss['requests_left_out']} "
                   f"requests kept ({ss['rule']}), from {ss['start_offset_ns'] / 1e9:.3g} s to "
                   f"{ss['end_offset_ns'] / 1e9:.3g} s after the first send; every figure is over it")
    elif ss:
        out.append(f"steady-state window not applied ({ss['rule']}): figures are over the whole run")
    sc = s.get("schedule")
    if sc and sc.get("send_error_ms", {}).get("n"):
        e = sc["send_error_ms"]
        dev = sc.get("max_minute_deviation")
        out.append(f"schedule: send - scheduled p50 {_n(e['p50'], 3)} ms, p99 {_n(e['p99'], 3)} ms, max {_n(e['max'], 3)} ms"
                   + (f"; worst minute {dev:.1%} off the trace's count" if dev is not None else "")
                   + (" (includes --concurrency slot waits)" if sc.get("capped") else ""))
    return out


def _sessions(s: dict) -> list[str]:
    ss = s.get("sessions")
    if not ss:
        return []
    think = (((s.get("workload") or {}).get("sessions") or {}).get("think_time_s") or {}).get("spec")
    out = [f"sessions: {ss['sessions_completed']} of {ss['sessions']} ran every turn ({ss['turns_sent']} of "
           f"{ss['turns_planned']} turns sent){f'; think time {think} s' if think else ''}; context counted by "
           f"{ss['context_counted_by']}"]
    for t in ss["by_turn"]:
        out.append(f"  turn {t['turn']}: {t['completed']} completed, TTFT p50 {_n(t['ttft_ms']['p50'], 2)} ms "
                   f"p99 {_n(t['ttft_ms']['p99'], 2)} ms, context mean {_n(t['context_tokens']['mean'], 1)} tokens")
    return out
