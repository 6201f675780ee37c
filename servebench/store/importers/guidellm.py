"""guidellm's benchmarks JSON (`--output kind=json`) -> one imported run per benchmark.

guidellm's names differ from servebench's: its TPOT is latency / output tokens per request
(servebench's ms/token) and its ITL is (latency - TTFT) / (output tokens - 1) (servebench's
TPOT). It keeps no gap between tokens, so servebench's ITL stays null. Distributions are
computed from the per-request records the file keeps, as servebench computes its own, when it
keeps them all (a sample: `_sampled`).
"""

from __future__ import annotations

from pathlib import Path

from servebench.store.importers.common import ImportFailed, Imported, dist, num, read_json, stats


def read(path: Path) -> list[Imported]:
    d = read_json(path, "a guidellm JSON report")
    benches = d.get("benchmarks") if isinstance(d, dict) else None
    if not isinstance(benches, list) or not benches:
        raise ImportFailed(f"{path}: not a guidellm report (no 'benchmarks' list)")
    meta = d.get("metadata") or {}
    source = {"tool": "guidellm", "version": meta.get("guidellm_version"), "file": str(path), "command": None}
    data = ((d.get("config") or {}).get("spec") or {}).get("data") or [{}]
    out = []
    for i, b in enumerate(benches):
        imp = Imported(name=f"{Path(path).stem}-{i}" if len(benches) > 1 else Path(path).stem, source=dict(source))
        _fill(imp, b, data[0] if isinstance(data[0], dict) else {})
        imp.notes.append("guidellm does not record its command line, the server's engine or hardware")
        out.append(imp)
    return out


def _total(m: dict, name: str) -> float | None:
    return num(((m.get(name) or {}).get("successful") or {}).get("mean"))


def _fill(imp: Imported, b: dict, data: dict) -> None:
    m, s = b.get("metrics") or {}, imp.summary
    totals = m.get("request_totals") or {}
    s["completed"], s["failed"] = totals.get("successful"), totals.get("errored")
    if isinstance(s["completed"], int) and isinstance(s["failed"], int) and s["completed"] + s["failed"]:
        s["error_rate"] = s["failed"] / (s["completed"] + s["failed"])
    s["duration_s"] = num(b.get("duration"))
    s["request_throughput"] = _total(m, "requests_per_second")
    s["output_token_throughput"] = _total(m, "output_tokens_per_second")
    s["total_token_throughput"] = _total(m, "tokens_per_second")
    reqs = [r for r in ((b.get("requests") or {}).get("successful") or []) if isinstance(r, dict)]
    if reqs and isinstance(s["completed"], int) and len(reqs) < s["completed"]:
        _sampled(imp, m, len(reqs))
    elif reqs:
        _per_request(s, reqs)
        outs = [r["output_tokens"] for r in reqs if isinstance(r.get("output_tokens"), int)]
        ins = [r["prompt_tokens"] for r in reqs if isinstance(r.get("prompt_tokens"), int)]
        s["output_tokens"].update(achieved_mean=sum(outs) / len(outs) if outs else None, total=sum(outs) if outs else None)
        s["input_tokens"].update(server_mean=sum(ins) / len(ins) if ins else None, total=sum(ins) if ins else None)
    else:
        imp.notes.append("no per-request records in the report: latency distributions missing")
    s["concurrency"]["mean_in_flight"] = _total(m, "request_concurrency")
    cfg = b.get("config") or {}
    strat, backend = cfg.get("strategy") or {}, cfg.get("backend") or {}
    kind = strat.get("type_")
    conc = strat.get("streams") if kind in ("concurrent", "synchronous") else strat.get("max_concurrency")
    rate = num(strat.get("rate")) if kind in ("constant", "poisson", "async") else None
    mode = {"concurrent": "concurrency", "synchronous": "concurrency", "throughput": "burst"}.get(kind, "rate" if rate else None)
    imp.load = {"mode": mode, "concurrency": 1 if kind == "synchronous" else conc, "rate": rate,
                "requests": _max_requests(cfg), "duration_s": None,
                "input_tokens": num(data.get("prompt_tokens")), "output_tokens": num(data.get("output_tokens"))}
    s["concurrency"]["target"] = imp.load["concurrency"]
    imp.server = {"engine": None, "model": backend.get("model"), "quantization": None, "hardware": None,
                  "instance_type": None, "gpu_count": None}


def _per_request(s: dict, reqs: list[dict]) -> None:
    """TTFT as recorded; e2e, TPOT and ms/token from its latency and output tokens, servebench's
    way (guidellm's own per-request TPOT and ITL end at the last token, not at the response's end)."""
    s["ttft_ms"] = dist([v for r in reqs if (v := num(r.get("time_to_first_token_ms"))) is not None])
    e2e = [(num(r.get("request_latency")), num(r.get("time_to_first_token_ms")), r.get("output_tokens")) for r in reqs]
    e2e = [(lat * 1000.0, ttft, n) for lat, ttft, n in e2e if lat is not None]
    s["e2e_ms"] = dist([ms for ms, _, _ in e2e])
    s["tpot_ms"] = dist([(ms - ttft) / (n - 1) for ms, ttft, n in e2e if ttft is not None and isinstance(n, int) and n > 1])
    s["ms_per_token"] = dist([ms / n for ms, _, n in e2e if isinstance(n, int) and n > 0])


def _sampled(imp: Imported, m: dict, kept: int) -> None:
    """The file keeps a sample of its requests (--sample-requests, 20 by default in some
    versions): a p99 of those is not the run's. TTFT and latency come from guidellm's own
    distributions over every request; its TPOT and time per output token distributions are
    weighted by tokens, not per request, so they stay missing."""
    s = imp.summary
    for key, name, scale in (("ttft_ms", "time_to_first_token_ms", 1.0), ("e2e_ms", "request_latency", 1000.0)):
        d = (m.get(name) or {}).get("successful") or {}
        pct = d.get("percentiles") or {}
        scaled = {k: (v * scale if (v := num(x)) is not None else None) for k, x in (
            ("mean", d.get("mean")), ("p50", d.get("median")), ("p90", pct.get("p90")), ("p95", pct.get("p95")),
            ("p99", pct.get("p99")), ("min", d.get("min")), ("max", d.get("max")), ("std", d.get("std_dev")))}
        s[key] = stats(**scaled, n=d.get("count"))
    for part, name in (("output_tokens", "output_token_count"), ("input_tokens", "prompt_token_count")):
        d = (m.get(name) or {}).get("successful") or {}
        s[part].update({"achieved_mean" if part == "output_tokens" else "server_mean": num(d.get("mean")),
                        "total": num(d.get("total_sum"))})
    imp.notes.append(f"the file keeps {kept} of {s['completed']} requests (guidellm --sample-requests): TTFT and "
                     "latency from guidellm's distributions over all; TPOT and ms/token missing (its are token-weighted)")


def _max_requests(cfg: dict) -> int | None:
    c = ((cfg.get("constraints") or {}).get("max_requests") or {}).get("args") or {}
    return c.get("count")
