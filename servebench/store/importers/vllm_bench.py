"""`vllm bench serve --save-result` JSON -> one imported run.

With --save-detailed the file holds every request (ttfts, itls, latencies, output_lens, errors
in seconds), and the distributions are computed from them exactly as servebench computes its
own: TPOT = (latency - TTFT) / (output tokens - 1), ms/token = latency / output tokens, ITL =
every gap when every streamed chunk carried one token (vLLM's gaps are per chunk: otherwise
missing). Without it only vLLM's aggregate keys exist (mean_/median_/std_/pNN_<metric>_ms);
those are copied and everything else (ms/token among them) stays null.
"""

from __future__ import annotations

from pathlib import Path

from servebench.store.importers.common import ImportFailed, Imported, dist, missing, num, read_json, stats

# vLLM's metric names -> servebench's
# its itl is per streamed chunk: without the requests, whether every chunk held one token (the
# rule for keeping it as servebench's per-token ITL) cannot be checked, so it is not taken
_AGG = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2el": "e2e_ms"}


def read(path: Path) -> list[Imported]:
    d = read_json(path, "a vllm bench serve JSON")
    if not isinstance(d, dict) or "completed" not in d or "output_throughput" not in d:
        raise ImportFailed(f"{path}: not a vllm bench serve result (no 'completed' / 'output_throughput'; "
                           "was it written with --save-result?)")
    imp = Imported(name=Path(path).stem, source={"tool": "vllm bench serve", "version": None, "file": str(path),
                                                  "command": None})
    imp.notes.append("vllm bench serve does not record its vLLM version or command line")
    s = imp.summary
    s["completed"] = d.get("completed")
    s["failed"] = d.get("failed")
    if isinstance(s["completed"], int) and isinstance(s["failed"], int) and s["completed"] + s["failed"]:
        s["error_rate"] = s["failed"] / (s["completed"] + s["failed"])
    s["duration_s"] = num(d.get("duration"))
    s["request_throughput"] = num(d.get("request_throughput"))
    s["output_token_throughput"] = num(d.get("output_throughput"))
    s["total_token_throughput"] = num(d.get("total_token_throughput"))
    s["input_tokens"]["total"] = d.get("total_input_tokens")
    s["output_tokens"]["total"] = d.get("total_output_tokens")
    if not _per_request(d, s, imp.notes):
        for name, key in _AGG.items():
            s[key] = stats(mean=d.get(f"mean_{name}_ms"), p50=d.get(f"median_{name}_ms"), std=d.get(f"std_{name}_ms"),
                           **{p: d.get(f"{p}_{name}_ms") for p in ("p90", "p95", "p99")})
        imp.notes.append("no per-request data (--save-detailed): aggregate figures only; ms_per_token missing; "
                         "ITL not kept (vLLM's is per streamed chunk, and without the requests it cannot be "
                         "checked that every chunk held one token)")
    conc = d.get("max_concurrency")
    rate = num(d.get("request_rate"))
    imp.load = {"mode": "concurrency" if conc and rate is None else ("rate" if rate is not None else "burst"),
                "concurrency": conc, "rate": rate, "requests": d.get("num_prompts"), "duration_s": None,
                "input_tokens": _mean(d.get("input_lens")), "output_tokens": None}
    imp.server = {"engine": None, "model": d.get("model_id"), "quantization": None, "hardware": None,
                  "instance_type": None, "gpu_count": None}
    s["concurrency"]["target"] = conc
    imp.started_at = d.get("date")
    return [imp]


def _mean(xs) -> float | None:
    xs = [x for x in xs or [] if isinstance(x, (int, float))]
    return sum(xs) / len(xs) if xs else None


def _itl(ok: list[int], itls, outs: list, notes: list[str]) -> dict:
    """vLLM's ITL is one gap per streamed chunk; servebench's is one per token (a chunk of k
    tokens gives k gaps of gap/k). Equal only when every chunk carried one token: the gaps
    count says so. Otherwise the per-token gaps are not in the file: missing."""
    gaps = [itls[i] if isinstance(itls, list) and isinstance(itls[i], list) else None for i in ok]
    if any(g is None for g in gaps):
        return missing()
    n_gaps, n_tok = sum(len(g) for g in gaps), sum(outs[i] - 1 for i in ok)
    if n_gaps != n_tok:
        notes.append(
            f"vLLM's ITL has {n_gaps} chunk gaps for {n_tok} token gaps (chunks of several tokens): "
            "not servebench's per-token ITL, left missing")
        return missing()
    return dist([g * 1000.0 for gs in gaps for g in gs])


def _per_request(d: dict, s: dict, notes: list[str]) -> bool:
    """Distributions from --save-detailed's per-request lists; False when they are absent."""
    lat, ttft, itls, outs = d.get("latencies"), d.get("ttfts"), d.get("itls"), d.get("output_lens")
    errs = d.get("errors") or [""] * len(lat or [])
    if not (isinstance(lat, list) and isinstance(ttft, list) and isinstance(outs, list) and len(lat) == len(ttft) == len(outs)):
        return False
    ok = [i for i in range(len(lat)) if not errs[i] and outs[i]]
    ms = 1000.0
    s["ttft_ms"] = dist([ttft[i] * ms for i in ok])
    s["e2e_ms"] = dist([lat[i] * ms for i in ok])
    s["tpot_ms"] = dist([(lat[i] - ttft[i]) * ms / (outs[i] - 1) for i in ok if outs[i] > 1])
    s["ms_per_token"] = dist([lat[i] * ms / outs[i] for i in ok])
    s["itl_ms"] = _itl(ok, itls, outs, notes)
    s["output_tokens"]["achieved_mean"] = _mean([outs[i] for i in ok])
    s["input_tokens"]["server_mean"] = _mean([(d.get("input_lens") or [None] * len(lat))[i] for i in ok])
    return True
