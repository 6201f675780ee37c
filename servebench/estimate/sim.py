"""A small discrete-event simulation of a continuous-batching engine.

The closed formulas in roofline.serve assume a steady batch; real engines admit requests as KV
blocks free up, prefill them whole (TGI 1.x, LightLLM: a prefill is its own forward pass) or in
chunks that ride in decode steps (vLLM, SGLang, TensorRT-LLM in-flight batching), and a burst's
last request waits for many batches. This simulates that, one engine step at a time:

- admission: FIFO while the running batch is under max_num_seqs and the KV pool has blocks for
  the request's prompt + output (Deployment.admit "reserve": TGI, LightLLM, TensorRT-LLM's
  default, none preempts), or, vLLM's ("prompt"), for its prompt alone beyond a 1 % watermark:
  a sequence then takes a block each time its last one fills, and when the pool has none the
  last admitted is preempted, its blocks freed, and it waits first in line to prefill its prompt
  and the tokens it made again (recompute; its first-token time stays);
- a step's time comes from the roofline with fitted efficiencies (StepCost), for the tokens it
  carries: max(max(bytes / (eta_mem * BW), FLOPs / (eta_compute * F)) + all-reduces + kernel
  latency, host launches)
  + fixed step cost + per-sequence work (roofline.step_s: launches overlap the GPU's work);
- load: the same shapes as `servebench run`: closed-loop users (zero think time), a Poisson
  rate, or a burst (every request at t=0); lengths fixed or per request (a trace's mix);
- requests reach the engine through a gate: a plain latency (req_ms), or with fe_ms > 0 (fitted
  on the user's runs only) a shared frontend worker first (frontend.py).

Pure standard library; 1,000 requests take well under a second (scripts/estimate_sim_bench.py).
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from dataclasses import dataclass, field

from servebench.estimate.frontend import Frontend, Lag
from servebench.estimate.roofline import Deployment, Factors, capacity, host_s, kernels_s, link, weight_read_bytes

BLOCK = 16  # tokens per KV block (vLLM's default block size)


@dataclass(frozen=True, slots=True)
class Load:
    mode: str = "closed"  # closed | rate | burst
    users: int = 1  # closed: users; burst: ignored (every request at once)
    rate: float = 0.0  # rate: requests/s
    requests: int = 1000
    n_in: int | tuple = 512  # an int, or one length per request (cycled)
    n_out: int | tuple = 128
    seed: int = 0
    stagger_s: float = 0.0  # closed: users start evenly over this span (k6 ramps; 0: all at t0, in waves)


@dataclass(slots=True)
class StepCost:
    """Linear pieces of one engine step, precomputed from the roofline so a step costs O(1)."""
    mem0: float  # weight read time, s
    mem_ctx: float  # s per KV token read
    cmp_tok: float  # s per token through the weights
    cmp_attn: float  # s per (query token x context token)
    comm0: float  # all-reduce latency and the kernels' latency beyond the roofline per step, s
    comm_tok: float  # all-reduce bandwidth time per token, s
    overhead: float  # fixed cost per step, s (serial: between steps)
    per_seq: float = 0.0  # cost per sequence in the step (decoding or prefilling), s
    host: float = 0.0  # kernel launches per step, s (overlaps the GPU's part: roofline.step_s)

    @staticmethod
    def of(d: Deployment, f: Factors) -> "StepCost":
        m, hw, tp = d.model, d.hw, d.tp
        bw = f.eta_mem * hw.bandwidth_gbs * 1e9
        fl = f.eta_compute * hw.peak_flops(m.compute)
        alpha, link_bw = link(d, f)
        layers2 = 2 * m.layers if tp > 1 else 0
        return StepCost(mem0=weight_read_bytes(m, f) / tp / bw, mem_ctx=m.kv_bytes_per_token(tp) * d.kv_reads / bw,
                        cmp_tok=2 * m.matmul_params / tp / fl, cmp_attn=m.attn_flops(1, 1) / tp / fl,
                        comm0=layers2 * alpha + kernels_s(m, f),
                        comm_tok=layers2 * 2 * (tp - 1) / tp * m.hidden * m.dtype_bytes / link_bw if tp > 1 else 0.0,
                        overhead=f.step_ms / 1e3, per_seq=f.seq_ms / 1e3, host=host_s(m, f, d.graphs))

    def step(self, ctx_tokens: float, tokens: float, attn: float, seqs: int = 0) -> float:
        """ctx_tokens: KV tokens read; tokens: tokens through the weights; attn: sum of q x ctx;
        seqs: sequences in the step (host work per sequence, added: it does not overlap)."""
        gpu = max(self.mem0 + self.mem_ctx * ctx_tokens, self.cmp_tok * tokens + self.cmp_attn * attn) + \
            self.comm0 + self.comm_tok * tokens
        return max(gpu, self.host) + self.overhead + self.per_seq * seqs


@dataclass(slots=True)
class Req:
    n_in: int
    n_out: int
    arrive: float
    user: int = 0
    index: int = 0  # order of issue
    admit: float = -1.0
    first: float = -1.0
    done: float = -1.0
    prefilled: int = 0
    blocks: int = 0
    made: int = 0  # tokens it had made when last preempted (prefilled again with its prompt)
    start: int = 0  # decode step count when it last began decoding
    gen: int = 0  # bumped on preemption: heap entries of an older gen are stale


@dataclass(slots=True)
class _State:
    t: float = 0.0
    free_blocks: int = 0
    waiting: list = field(default_factory=list)  # FIFO of arrived, unadmitted requests
    prefilling: list = field(default_factory=list)  # admitted, prompt not done
    finish: list = field(default_factory=list)  # heap (decode step count at which it ends, seq, req)
    running: int = 0
    peak: int = 0  # largest batch seen (decoding + prefilling)
    ctx: float = 0.0  # KV tokens of decoding requests
    decode_steps: int = 0
    seq: int = 0
    done: list = field(default_factory=list)
    # preempting engines (Deployment.admit == "prompt"): (decode step needing a new block, seq, gen, req)
    grow: list = field(default_factory=list)
    order: list = field(default_factory=list)  # decoding requests by admission (LIFO victims from the end)
    watermark: int = 0
    preemptions: int = 0


def _lengths(v, n: int) -> list[int]:
    if isinstance(v, (int, float)):
        return [int(v)] * n
    v = list(v)
    return [int(v[i % len(v)]) for i in range(n)]


def _arrivals(load: Load) -> tuple[list[Req], int]:
    """Requests known up front (rate, burst) and, for closed loops, the first one per user."""
    n = load.requests
    ins, outs = _lengths(load.n_in, n), _lengths(load.n_out, n)
    if load.mode == "burst":
        return [Req(ins[i], max(outs[i], 1), 0.0, index=i) for i in range(n)], n
    if load.mode == "rate":
        if not load.rate > 0:
            raise ValueError("rate load needs rate > 0")
        rng, t, out = random.Random(load.seed), 0.0, []
        for i in range(n):
            out.append(Req(ins[i], max(outs[i], 1), t, index=i))
            t += rng.expovariate(load.rate)
        return out, n
    if load.mode != "closed":
        raise ValueError(f"unknown load mode {load.mode!r} (closed, rate, burst)")
    u = max(min(load.users, n), 1)
    return [Req(ins[i], max(outs[i], 1), i * load.stagger_s / u, user=i, index=i) for i in range(u)], u


def _admit(s: _State, d: Deployment) -> None:
    while s.waiting and s.running + len(s.prefilling) < d.max_num_seqs:
        r = s.waiting[0]
        if d.admit == "prompt":
            need = math.ceil((r.n_in + r.made) / BLOCK)
            if need > s.free_blocks - s.watermark:
                break
        else:
            need = math.ceil((r.n_in + r.n_out) / BLOCK)
            if need > s.free_blocks:
                break
        s.waiting.pop(0)
        r.blocks, r.admit = need, s.t
        s.free_blocks -= need
        s.prefilling.append(r)
        s.peak = max(s.peak, s.running + len(s.prefilling))


def _start_decoding(s: _State, r: Req, preempting: bool = False) -> None:
    if r.first < 0:
        r.first = s.t
    left = r.n_out - r.made - 1  # decode steps to go: the prefill gave one token
    if left <= 0:
        _finish(s, r)
        return
    s.running += 1
    s.ctx += r.n_in + r.made + 1
    s.seq += 1
    heapq.heappush(s.finish, (s.decode_steps + left, s.seq, r.gen, r))
    if preempting:
        r.start = s.decode_steps
        kv = r.n_in + r.made  # in the cache after the prefill; a step adds one
        heapq.heappush(s.grow, (s.decode_steps + (-kv) % BLOCK + 1, s.seq, r.gen, r))
        s.order.append((r.gen, r))


def _preempt(s: _State) -> None:
    """vLLM's: before a decode step, every sequence whose last block is full needs one more;
    while the pool cannot give them, the last admitted sequence is preempted and recomputed
    (its prompt and the tokens it made so far prefilled again when it is readmitted, first in line).
    "Last admitted" is v1's running order; v0 took the latest arrival, the same in a burst's first wave."""
    step, need = s.decode_steps + 1, []
    while s.grow and s.grow[0][0] <= step:
        _, q, g, r = heapq.heappop(s.grow)
        if g == r.gen and r.done < 0:
            need.append((q, r))
    while len(need) > s.free_blocks and s.order:
        g, v = s.order.pop()
        if g != v.gen:
            continue  # finished or preempted since
        n = v.made + 1 + s.decode_steps - v.start
        s.running -= 1
        s.ctx -= v.n_in + n
        s.free_blocks += v.blocks
        need = [(q, r) for q, r in need if r is not v]
        v.gen += 1
        v.blocks, v.prefilled, v.made = 0, 0, n
        s.waiting.insert(0, v)
        s.preemptions += 1
    for q, r in need:
        s.free_blocks -= 1
        r.blocks += 1
        heapq.heappush(s.grow, (step + BLOCK, q, r.gen, r))


def _finish(s: _State, r: Req) -> None:
    r.done = s.t
    s.free_blocks += r.blocks
    s.done.append(r)
    r.gen += 1


def _step(s: _State, d: Deployment, cost: StepCost, chunk: int | None) -> None:
    """One engine step. Separate-prefill engines run new prompts as their own pass; mixed ones
    put up to `chunk` prompt tokens (None: whole prompts) into the decode step."""
    pre = d.admit == "prompt"
    if d.schedule == "separate" and s.prefilling:
        new, s.prefilling = s.prefilling, []
        toks = sum(r.n_in + r.made for r in new)
        s.t += cost.step(0.0, toks, sum((r.n_in + r.made) ** 2 / 2 for r in new), len(new))
        for r in new:
            _start_decoding(s, r, pre)
        return
    if pre and s.running:
        _preempt(s)  # before the decode step that needs the blocks
    b, budget = s.running, math.inf if chunk is None else chunk
    pf_toks, attn, ready, touched = 0, 0.0, [], 0
    while s.prefilling and budget > 0:
        r = s.prefilling[0]
        touched += 1
        take = int(min(r.n_in + r.made - r.prefilled, budget))
        attn += take * (r.prefilled + take / 2)
        r.prefilled += take
        pf_toks += take
        budget -= take
        if r.prefilled >= r.n_in + r.made:
            ready.append(s.prefilling.pop(0))
    s.t += cost.step(s.ctx, b + pf_toks, s.ctx + attn, b + touched)
    if b:
        s.decode_steps += 1
        s.ctx += b
        while s.finish and s.finish[0][0] <= s.decode_steps:
            _, _, g, r = heapq.heappop(s.finish)
            if g != r.gen:
                continue  # preempted since: it runs again from its recompute
            s.running -= 1
            s.ctx -= r.n_in + r.n_out  # prompt + every token it generated (the first came with its prefill)
            _finish(s, r)
    for r in ready:
        _start_decoding(s, r, pre)


def simulate(d: Deployment, f: Factors, load: Load, chunk: int | None = None, detail: bool = False) -> dict:
    """Run the load through the engine: the summary (see summarize), the peak batch, and with
    detail the requests themselves (Req, in the order they were issued)."""
    cap = capacity(d)
    if not cap["fits"]:
        return {"fits": False, "why": cap.get("why", "model does not fit")}
    pending, issued = _arrivals(load)
    pending.sort(key=lambda r: r.arrive)
    s = _State(free_blocks=cap["kv_tokens"] // BLOCK)
    s.watermark = int(0.01 * s.free_blocks) if d.admit == "prompt" else 0  # vLLM's watermark: 1 % of the blocks
    cost, n_ins, n_outs = StepCost.of(d, f), _lengths(load.n_in, load.requests), _lengths(load.n_out, load.requests)
    # the largest request must fit alone (beyond vLLM's watermark: a preempted one is readmitted
    # with all it made), else it would wait forever and the run end short
    big = max(i + max(o, 1) for i, o in zip(n_ins, n_outs)) if load.requests else 0
    if math.ceil(big / BLOCK) > s.free_blocks - s.watermark:
        return {"fits": False, "why": f"one request of {big} tokens needs more KV than the "
                                      f"{(s.free_blocks - s.watermark) * BLOCK} tokens free"}
    # between the clients and the engine: a plain latency, or the shared frontend worker when fitted
    gate = Frontend(f.fe_ms / 1e3, f.req_ms / 1e3) if f.fe_ms > 0 else Lag(f.req_ms / 1e3)
    for r in pending:
        gate.send(r.arrive, r)
    while len(s.done) < load.requests:
        gate.run(s.t)
        s.waiting += gate.arrived(s.t)
        before = len(s.done)
        _admit(s, d)
        if not (s.running or s.prefilling):
            nxt = gate.next_time()
            if nxt is None:
                break  # nothing in flight and nothing to come: a request larger than the pool
            s.t = max(s.t, nxt)
            continue
        _step(s, d, cost, chunk)
        if load.mode == "closed":
            for r in s.done[before:]:
                if issued < load.requests:
                    gate.send(r.done, Req(n_ins[issued], max(n_outs[issued], 1), r.done, user=r.user, index=issued))
                    issued += 1
    return _result(s, load, cap, detail)


def _result(s: _State, load: Load, cap: dict, detail: bool) -> dict:
    out = {"fits": True, **summarize(s.done, load), "kv_tokens": cap["kv_tokens"], "peak_batch": s.peak,
           "preemptions": s.preemptions}
    if detail:
        out["requests"] = sorted(s.done, key=lambda r: r.index)
    return out


def summarize(done: list[Req], load: Load) -> dict:
    """Means and medians per request; throughput over the steady part of a closed loop (after
    each user's first request) and over the whole run otherwise."""
    if not done:
        return {"completed": 0}
    ttft = [r.first - r.arrive for r in done]
    e2e = [r.done - r.arrive for r in done]
    tpot = [(r.done - r.first) / (r.n_out - 1) for r in done if r.n_out > 1]
    server = [(r.done - r.admit) / r.n_out for r in done]  # TGI's time per token: queue excluded
    by_done = sorted(done, key=lambda r: r.done)
    skip = min(load.users, len(by_done) // 2) if load.mode == "closed" else 0
    t0 = by_done[skip - 1].done if skip else min(r.arrive for r in done)
    span = by_done[-1].done - t0
    toks = sum(r.n_out for r in by_done[skip:])
    out = {"completed": len(done), "makespan_s": by_done[-1].done - min(r.arrive for r in done),
           "output_tok_s": toks / span if span > 0 else float("nan"),
           "request_throughput": (len(by_done) - skip) / span if span > 0 else float("nan"),
           "queue_ms": statistics.fmean(r.admit - r.arrive for r in done) * 1e3}
    for k, v in (("ttft_ms", ttft), ("e2e_ms", e2e), ("tpot_ms", tpot), ("ms_per_token", server)):
        if v:
            out[k] = statistics.fmean(v) * 1e3
            out[k + "_p50"] = statistics.median(v) * 1e3
    return out
