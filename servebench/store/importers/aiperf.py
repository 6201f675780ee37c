"""AIPerf's profile_export_aiperf.json (GenAI-Perf's successor) -> one imported run.

AIPerf's names differ from servebench's for the same quantities: its inter_token_latency is
per request (latency - TTFT) / (output tokens - 1), servebench's TPOT; its inter_chunk_latency
is every gap between chunks, servebench's ITL when every chunk carried one token (else
missing). It reports no per-request latency / output tokens distribution, so ms/token stays null.
"""

from __future__ import annotations

from pathlib import Path

from servebench.store.importers.common import ImportFailed, Imported, missing, num, read_json, stats

_DIST = {"time_to_first_token": "ttft_ms", "inter_token_latency": "tpot_ms", "inter_chunk_latency": "itl_ms",
         "request_latency": "e2e_ms"}


def _metric(d: dict, name: str) -> dict:
    m = d.get(name)
    if not isinstance(m, dict):
        return {}
    return m if m.get("unit") in (None, "ms", "sec", "requests", "tokens", "requests/sec", "tokens/sec") else {}


def _avg(d: dict, name: str) -> float | None:
    return num(_metric(d, name).get("avg"))


def read(path: Path) -> list[Imported]:
    d = read_json(path, "an AIPerf JSON export")
    if not isinstance(d, dict) or "aiperf_version" not in d:
        raise ImportFailed(f"{path}: not an AIPerf export (no 'aiperf_version'; give profile_export_aiperf.json)")
    cfg = d.get("input_config") or {}
    imp = Imported(name=Path(path).stem, source={"tool": "aiperf", "version": d.get("aiperf_version"), "file": str(path),
                                                  "command": (d.get("run_info") or {}).get("cli_command")})
    s = imp.summary
    done = _avg(d, "completed_request_count") if "completed_request_count" in d else _avg(d, "request_count")
    s["completed"] = int(done) if done is not None else None
    errors = d.get("error_summary")
    s["failed"] = sum(int(e.get("count") or 0) for e in errors) if isinstance(errors, list) else None
    if s["completed"] is not None and s["failed"] is not None and s["completed"] + s["failed"]:
        s["error_rate"] = s["failed"] / (s["completed"] + s["failed"])
    s["duration_s"] = _avg(d, "benchmark_duration")
    s["request_throughput"] = _avg(d, "request_throughput")
    s["output_token_throughput"] = _avg(d, "output_token_throughput")
    s["total_token_throughput"] = _avg(d, "total_token_throughput")
    for name, key in _DIST.items():
        m = _metric(d, name)
        if m:
            scale = 1000.0 if m.get("unit") == "sec" else 1.0
            s[key] = stats(**{k: (num(m.get(src)) * scale if num(m.get(src)) is not None else None)
                              for k, src in (("mean", "avg"), ("p50", "p50"), ("p90", "p90"), ("p95", "p95"),
                                             ("p99", "p99"), ("min", "min"), ("max", "max"), ("std", "std"))})
            s[key]["n"] = _metric(d, name).get("count")
    _chunks_are_tokens(d, s, imp.notes)
    s["input_tokens"].update(server_mean=_avg(d, "input_sequence_length"), total=_avg(d, "total_isl"))
    s["output_tokens"].update(achieved_mean=_avg(d, "output_sequence_length"), total=_avg(d, "total_osl"))
    s["concurrency"]["mean_in_flight"] = _avg(d, "effective_concurrency")
    imp.load = _load(cfg)
    s["concurrency"]["target"] = imp.load.get("concurrency")
    models = ((cfg.get("models") or {}).get("items") or [{}])
    imp.server = {"engine": None, "model": models[0].get("name"), "quantization": None, "hardware": None,
                  "instance_type": None, "gpu_count": None}
    imp.started_at = d.get("start_time")
    imp.notes.append("aiperf does not know the server's engine or hardware")
    return [imp]


def _chunks_are_tokens(d: dict, s: dict, notes: list[str]) -> None:
    """inter_chunk_latency is one gap per chunk; servebench's ITL one per token (a chunk of k
    tokens gives k gaps of gap/k). The same only when the gaps number output tokens - 1 per
    request; otherwise servebench's ITL is not in the file: missing."""
    chunks = _metric(d, "inter_chunk_latency").get("count")
    osl, done = _avg(d, "total_osl"), s["completed"]
    if chunks is None or s["itl_ms"]["n"] is None:
        return
    if osl is None or done is None or int(chunks) != int(osl) - done:
        notes.append(f"AIPerf's inter_chunk_latency has {chunks} chunk gaps, not one per token "
                     f"({'unknown' if osl is None or done is None else int(osl) - done}): servebench's ITL left missing")
        s["itl_ms"] = missing()


def _load(cfg: dict) -> dict:
    phases = [p for p in cfg.get("phases") or [] if p.get("kind") == "profiling"] or [{}]
    p = phases[0]
    prompts = ((cfg.get("datasets") or [{}])[0].get("prompts") or {})
    rate = num(p.get("request_rate") or p.get("rate"))
    conc = p.get("concurrency")
    mode = "rate" if rate else ("concurrency" if conc else None)
    return {"mode": mode, "concurrency": conc, "rate": rate, "requests": p.get("requests"), "duration_s": None,
            "input_tokens": num((prompts.get("isl") or {}).get("mean")),
            "output_tokens": num((prompts.get("osl") or {}).get("mean")),
            "seed": (cfg.get("datasets") or [{}])[0].get("random_seed")}
