"""`estimate --trace`: a production trace replayed through the simulated engine on hardware you
do not own, at one or more replay speeds.

The trace is read and cut exactly as `servebench run --trace` reads it (load.traces, the same
window, first-N and length scaling): arrivals at the trace's own times divided by the speed,
each request's own prompt and output lengths, and its prefix blocks for the engine's prefix
cache. Lengths are the trace's token counts; a row given as prompt text without input_tokens
has none to simulate.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from servebench.estimate import engines, predict
from servebench.estimate.fit import Calibration
from servebench.estimate.roofline import Deployment, capacity
from servebench.estimate.sim import Load, simulate
from servebench.load import traces

# SGLang's radix cache is on unless --disable-radix-cache, vLLM's prefix caching unless
# --no-enable-prefix-caching (V1, the pinned versions); the others are modelled without one
PREFIX_CACHE_BY_DEFAULT = {"vllm", "sglang"}


def prefill_chunk(engine: str | None, hw, tp: int = 1) -> int | None:
    """A step's token budget where the engine's default is known (vLLM's, engines.vllm_batch_defaults);
    others: None (whole prompts in a step, or their own pass)."""
    return engines.vllm_batch_defaults(hw, tp)[0] if engine == "vllm" else None


@dataclass(frozen=True)
class TraceLoad:
    info: dict  # what was replayed, in run's words (workload.json's "trace" block)
    times: tuple[float, ...]  # s after the window's start, at speed 1
    n_in: tuple[int, ...]
    n_out: tuple[int, ...]
    blocks: tuple | None  # per request, its prompt's prefix-block ids; None: the trace has none
    block_tokens: int


def read(source: str, fmt: str | None = None, columns: str | None = None, window: str | None = None,
         requests: int | None = None, scale_lengths: float = 1.0, context: int | None = None) -> TraceLoad:
    """The trace as `servebench run --trace` would replay it (TraceError/ValueError on bad input),
    each request clipped to the model's context as run clips it (load/workload.py _clip)."""
    from servebench.config import TraceConfig
    from servebench.load.prefix import Shape, ideal_reuse
    from servebench.load.workload import slice_trace

    t = TraceConfig(source=source, format=fmt, columns=columns, window=window, requests=requests,
                    scale_lengths=scale_lengths)
    tr = traces.load_trace(t.source, t.format, t.columns)
    reqs, origin = slice_trace(tr, t)
    text = next((r for r in reqs if r.prompt is not None and not r.input_tokens), None)
    if text is not None:
        raise traces.TraceError(f"{tr.path}:{text.line}: a prompt given as text has no token count to simulate "
                                "(estimate reads input_tokens; `servebench run` counts texts under the served tokenizer)")
    scale = lambda n: max(1, round(n * t.scale_lengths))  # noqa: E731  (run's rule, load/workload.py)
    block = max(1, round(tr.block_tokens * t.scale_lengths)) if tr.block_tokens else 0
    n_in, n_out, clipped = _clip([scale(r.input_tokens) for r in reqs], [scale(r.output_tokens) for r in reqs], context)
    times = tuple(r.t_s - origin for r in reqs)
    blocks = tuple(r.blocks or () for r in reqs) if block else None
    span = times[-1] - times[0]
    info = {"name": t.source, "file": str(tr.path), "format": tr.format, "requests_in_file": len(tr.requests),
            "requests": len(reqs), "window_s": list(t.window) if t.window else None, "span_s": span,
            "mean_rate_per_s": (len(reqs) - 1) / span if span > 0 else None, "scale_lengths": t.scale_lengths,
            "input_tokens": _dist(n_in), "output_tokens": _dist(n_out), "clipped": clipped}
    if block:
        info["prefix"] = ideal_reuse([Shape(n, b) for n, b in zip(n_in, blocks)], block)
    return TraceLoad(info, times, n_in, n_out, blocks, block)


def _clip(ins: list[int], outs: list[int], context: int | None) -> tuple[tuple, tuple, dict]:
    """run's rule: the output within the context less one prompt token, then the prompt within
    what the output leaves (the tokenizer's special tokens are not known here: one token)."""
    if not context:
        return tuple(ins), tuple(outs), {"input": 0, "output": 0, "context": None}
    outs2 = [min(o, context - 1) for o in outs]
    ins2 = [max(1, min(i, context - o)) for i, o in zip(ins, outs2)]
    return tuple(ins2), tuple(outs2), {"input": sum(a != b for a, b in zip(ins, ins2)),
                                       "output": sum(a != b for a, b in zip(outs, outs2)), "context": context}


def _dist(v: tuple[int, ...]) -> dict:
    return {"mean": statistics.fmean(v), "p50": statistics.median(v), "max": max(v)}


def load_at(tl: TraceLoad, speed: float) -> Load:
    return Load(mode="trace", requests=len(tl.times), n_in=tl.n_in, n_out=tl.n_out,
                times=tuple(t / speed for t in tl.times), blocks=tl.blocks, block_tokens=tl.block_tokens)


KEYS = ("ttft_ms", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms", "tpot_ms_p99", "e2e_ms", "e2e_ms_p99",
        "output_tok_s", "request_throughput", "queue_ms", "queue_ms_p99", "peak_batch", "makespan_s")


def estimate(d: Deployment, tl: TraceLoad, speeds: list[float], cal: Calibration,
             price_per_hour: float | None = None, engine: str | None = None) -> dict:
    """The trace at each replay speed: percentiles, throughput, queueing, prefix-cache hits."""
    mean_seq = round(tl.info["input_tokens"]["mean"] + tl.info["output_tokens"]["mean"])
    cap = capacity(d, mean_seq)
    workload = {"trace": tl.info, "input_tokens": round(tl.info["input_tokens"]["mean"]),
                "output_tokens": round(tl.info["output_tokens"]["mean"]), "arrivals": "trace", "load": "trace",
                "scheduler": "simulated", "prefix_cache": d.prefix_cache}
    out = predict.header(d, cal, engine, False, workload, cap)
    if not cap["fits"]:
        return out
    rate, chunk = tl.info["mean_rate_per_s"], prefill_chunk(engine, d.hw, d.tp)
    workload["prefill_chunk_tokens"] = chunk
    most = 0
    for k in speeds:
        p = simulate(d, cal.factors, load_at(tl, k), chunk=chunk)
        most = max(most, p.get("peak_in_flight", 0))
        if not p["fits"]:
            out["fits"], cap["fits"], cap["why"] = False, False, p["why"]
            out["levels"] = []
            return out
        row = {"speed": k, "offered_rate_per_s": rate * k if rate else None}
        out["levels"].append(predict.level_row(row, p, KEYS, out["sigma_log"], price_per_hour))
        for key in ("prefix_hit_rate", "prefix_hit_tokens", "prefix_queried_tokens"):
            if key in p:
                row[key] = p[key]
    out["front_door_note"] = predict.front_door_note(engine, most)
    return out
