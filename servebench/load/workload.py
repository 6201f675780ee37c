"""What a run sends: its prompts (warm-up first), and for a trace the time of each.

One entry point, build(cfg, tokenizer), called before any server starts, so every bad input
(a trace that does not parse, a length spec, a tokenizer that cannot make the lengths) ends the
run with one line and nothing half-run. Fixed lengths without prefix sharing keep the plain
exact-length prompts (prompts.synthetic); everything else goes through prefix.PrefixPrompts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from servebench.analysis.metrics import dist
from servebench.config import RunConfig
from servebench.load import lengths, traces
from servebench.load.prefix import PrefixPrompts, Shape, ideal_reuse
from servebench.load.prompts import ExactPrompts, Prompt, from_jsonl, synthetic
from servebench.load.schedule import trace_offsets_ns


@dataclass
class Workload:
    prompts: list[Prompt]  # warm-up ones first
    offsets_ns: list[int] | None = None  # release times of the measured ones (a trace), else None
    info: dict = field(default_factory=dict)  # summary.json "workload"
    sessions: list | None = None  # multi-turn: load.sessions.Conversation each (load/session_loop.py drives them)


def build(cfg: RunConfig, tokenizer) -> Workload:
    """The run's prompts. For a trace this also sets cfg.load.requests to the requests taken
    and cfg.load.rate to the replay's mean rate, which size connections and the self-check."""
    w, load = cfg.workload, cfg.load
    if w.trace is not None:
        return _from_trace(cfg, tokenizer)
    if w.sessions is not None:
        from servebench.load import sessions

        convs, warm, info = sessions.build(cfg, tokenizer)
        load.requests = sum(len(c.turns) for c in convs)  # every turn is a request
        return Workload(warm, None, info, convs)
    n = load.requests + load.warmup
    if w.prompts_file:
        return Workload(from_jsonl(w.prompts_file, tokenizer, _fixed_output(w.output_tokens), n), None,
                        {"source": "prompts_file"})
    din = lengths.parse_length(w.input_tokens, "--input-tokens", "input")
    dout = lengths.parse_length(w.output_tokens, "--output-tokens", "output")
    ctx = context_tokens(tokenizer)
    if din.fixed and dout.fixed and ctx and din.fixed + dout.fixed > ctx:
        # exact lengths are the load asked for: refused here, not clipped, nor failed by the server
        raise lengths.WorkloadError(f"--input-tokens {din.fixed} + --output-tokens {dout.fixed} = "
                                    f"{din.fixed + dout.fixed} tokens: over the model's context of {ctx} "
                                    "(its tokenizer's model_max_length)")
    if din.fixed and dout.fixed and not w.prefix_share and not (w.max_input_tokens or w.max_output_tokens):
        return Workload(synthetic(tokenizer, n, din.fixed, dout.fixed, seed=load.seed, warmup=load.warmup), None,
                        {"source": "synthetic"})
    # warm-ups from streams of their own: the measured lengths of a seed do not move with --warmup
    ins = din.sample(load.warmup, random.Random(f"{load.seed}:warmup-input")) + \
        din.sample(load.requests, random.Random(f"{load.seed}:input"))
    outs = dout.sample(load.warmup, random.Random(f"{load.seed}:warmup-output")) + \
        dout.sample(load.requests, random.Random(f"{load.seed}:output"))
    ep = ExactPrompts(tokenizer, load.seed)
    ins, outs, clipped = _clip(ins, outs, w, ctx, ep.specials + 1)
    pick = random.Random(f"{load.seed}:prefix")
    shapes = []
    for i, n_in in enumerate(ins):
        shared = i >= load.warmup and w.prefix_share > 0 and pick.random() < w.prefix_share
        shapes.append(Shape(n_in, (pick.randrange(w.prefix_prompts),) if shared else ()))
    block = w.prefix_tokens or 512
    texts = PrefixPrompts(ep, block, load.seed).build(shapes)
    info = {"source": "synthetic", "clipped": clipped,
            "lengths": {"input": {"spec": din.describe(), "requested": dist(ins[load.warmup:])},
                        "output": {"spec": dout.describe(), "requested": dist(outs[load.warmup:])}}}
    if w.prefix_share:
        info["prefix"] = {**ideal_reuse(shapes[load.warmup:], block), "prefix_share": w.prefix_share,
                          "prefix_prompts": w.prefix_prompts}
    return Workload([Prompt(t, s.input_tokens, o) for t, s, o in zip(texts, shapes, outs)], None, info)


def _fixed_output(spec) -> int:
    d = lengths.parse_length(spec, "--output-tokens", "output")
    if d.fixed is None:
        raise lengths.WorkloadError("--prompts-file takes a fixed --output-tokens (its lines may set their own)")
    return d.fixed


def context_tokens(tokenizer) -> int | None:
    """The model's context from its tokenizer (model_max_length), when it states a real one."""
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < 10_000_000 else None


def _clip(ins: list[int], outs: list[int], w, ctx: int | None, min_input: int):
    """--max-input/--max-output-tokens, input + output within the model's context, and inputs
    at least the special tokens plus one word (a trace scaled down has 1-token prompts)."""
    max_out = min(w.max_output_tokens or math.inf, ctx - min_input if ctx else math.inf)
    outs2 = [int(min(o, max_out)) for o in outs]
    ins2 = [max(min_input, int(min(i, w.max_input_tokens or math.inf, ctx - o if ctx else math.inf)))
            for i, o in zip(ins, outs2)]
    clipped = {"input": sum(a != b for a, b in zip(ins, ins2)), "output": sum(a != b for a, b in zip(outs, outs2)),
               "max_input_tokens": w.max_input_tokens, "max_output_tokens": w.max_output_tokens, "context": ctx,
               "min_input_tokens": min_input}
    return ins2, outs2, clipped


def _from_trace(cfg: RunConfig, tokenizer) -> Workload:
    t, w, load = cfg.workload.trace, cfg.workload, cfg.load
    tr = traces.load_trace(t.source, t.format, t.columns)
    reqs, origin = slice_trace(tr, t)
    ep = ExactPrompts(tokenizer, load.seed)
    scale = lambda n: max(1, round(n * t.scale_lengths))  # noqa: E731
    block = max(1, round(tr.block_tokens * t.scale_lengths)) if tr.block_tokens else 512
    asked = [scale(r.input_tokens) if r.prompt is None else ep.count(r.prompt) for r in reqs]
    ctx = context_tokens(tokenizer)
    ins, outs, clipped = _clip(asked, [scale(r.output_tokens) for r in reqs], w, ctx, ep.specials + 1)
    # a text is sent as given: not clipped, so not counted clipped; its output still fits the context
    ins = [a if r.prompt is not None else n for a, n, r in zip(asked, ins, reqs)]
    clipped["input"] = sum(1 for a, n, r in zip(asked, ins, reqs) if r.prompt is None and a != n)
    if ctx:
        short = [min(o, max(ctx - n, 1)) if r.prompt is not None else o for o, n, r in zip(outs, ins, reqs)]
        clipped["output"] += sum(a != b for a, b in zip(outs, short))
        outs = short
    shapes = [Shape(n, r.blocks or ()) for n, r in zip(ins, reqs)]
    warm = [Shape(min(ins[0], 2 * block), ()) for _ in range(load.warmup)]  # own tokens: no cache warmed
    builder = PrefixPrompts(ep, block, load.seed)
    texts = builder.build(warm + shapes)  # prompt-text requests are built too (cheap), then replaced
    texts = texts[: load.warmup] + [r.prompt or x for r, x in zip(reqs, texts[load.warmup:])]
    outs_all = [outs[0]] * load.warmup + outs
    prompts = [Prompt(x, s.input_tokens, o) for x, s, o in zip(texts, warm + shapes, outs_all)]
    times = [r.t_s - origin for r in reqs]
    offsets = trace_offsets_ns(times, t.speed)
    span = times[-1] - times[0]
    load.requests = len(reqs)
    load.rate = (len(reqs) - 1) / span * t.speed if span > 0 and len(reqs) > 1 else None
    info = {"source": "trace", "clipped": clipped,
            "trace": {"name": t.source, "file": str(tr.path), "format": tr.format, "requests_in_file": len(tr.requests),
                      "requests": len(reqs), "window_s": list(t.window) if t.window else None, "span_s": span, "speed": t.speed,
                      "replay_s": span / t.speed, "mean_rate_per_s": load.rate,
                      "scale_lengths": t.scale_lengths},
            "lengths": {"input": {"requested": dist(ins)}, "output": {"requested": dist(outs)}}}
    if tr.block_tokens:
        info["prefix"] = ideal_reuse(shapes, block)
    return Workload(prompts, offsets, info)


def slice_trace(tr: traces.Trace, t) -> tuple[list[traces.TraceRequest], float]:
    """--trace-window START:END (seconds after the first request) then --requests N (the first N
    of the window). Time zero of the replay is the window's start."""
    first = tr.requests[0].t_s
    start, end = t.window or (0.0, None)
    end = math.inf if end is None else end
    reqs = [r for r in tr.requests if start <= r.t_s - first < end]
    if t.requests:
        reqs = reqs[: t.requests]
    if not reqs:
        raise traces.TraceError(f"{tr.path}: no requests in the window {start:g}:{'' if end == math.inf else f'{end:g}'} s "
                                f"(the trace spans {tr.requests[-1].t_s - first:.1f} s)")
    return reqs, first + start
