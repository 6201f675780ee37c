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
  rate, a burst (every request at t=0), or a trace's own arrival times; lengths fixed or per
  request (a trace's mix); with the engine's prefix cache on, the prompt blocks a trace says are
  shared are served from the KV pool while they stay there (prefixcache.py);
- requests reach the engine through a gate: a plain latency (req_ms), or with fe_ms > 0 (fitted
  on the user's runs only) a shared frontend worker first (frontend.py).

Pure standard library; 1,000 requests take well under a second (scripts/estimate_sim_bench.py).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

from servebench.estimate.frontend import Frontend, Lag
from servebench.estimate.prefixcache import PrefixCache
from servebench.estimate.simstats import summarize
from servebench.estimate.roofline import (BLOCK, Deployment, Factors, capacity, host_s, kernels_s, link,
                                          watermark_blocks, weight_read_bytes)



@dataclass(frozen=True, slots=True)
class Load:
    mode: str = "closed"  # closed | rate | burst | trace
    users: int = 1  # closed: users; burst: ignored (every request at once)
    rate: float = 0.0  # rate: requests/s
    requests: int = 1000
    n_in: int | tuple = 512  # an int, or one length per request (cycled)
    n_out: int | tuple = 128
    seed: int = 0
    stagger_s: float = 0.0  # closed: users start evenly over this span (k6 ramps; 0: all at t0, in waves)
    times: tuple | None = None  # trace: each request's arrival, s from the first
    blocks: tuple | None = None  # per request (cycled), its prompt's leading prefix-block ids
    block_tokens: int = 0  # tokens per prefix block


@dataclass(slots=True)
class StepCost:
    """Linear pieces of one engine step, precomputed from the roofline so a step costs O(1)."""
    mem0: float  # weight read time, s
    mem_ctx: float  # s per KV token read
    cmp_tok: float  # s per token through the decoder's weights
    cmp_seq: float  # s per sequence through the LM head (logits of its last position)
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
                        cmp_tok=2 * (m.matmul_params - m.lm_head_params) / tp / fl,
                        cmp_seq=2 * m.lm_head_params / tp / fl, cmp_attn=m.attn_flops(1, 1) / tp / fl,
                        comm0=layers2 * alpha + kernels_s(m, f),
                        comm_tok=layers2 * 2 * (tp - 1) / tp * m.hidden * m.dtype_bytes / link_bw if tp > 1 else 0.0,
                        overhead=f.step_ms / 1e3, per_seq=f.seq_ms / 1e3, host=host_s(m, f, d.graphs))

    def step(self, ctx_tokens: float, tokens: float, attn: float, seqs: int = 0) -> float:
        """ctx_tokens: KV tokens read; tokens: tokens through the weights; attn: sum of q x ctx;
        seqs: sequences in the step (one row of logits each; host work per sequence, added: it
        does not overlap)."""
        gpu = max(self.mem0 + self.mem_ctx * ctx_tokens,
                  self.cmp_tok * tokens + self.cmp_seq * seqs + self.cmp_attn * attn) + \
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
    ids: tuple = ()  # prefix-block ids of its prompt
    held: list = field(default_factory=list)  # of those, the ones it holds in the prefix cache
    hit: int = 0  # prefix blocks served from the cache at its last admission


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
    cache: PrefixCache | None = None


def _lengths(v, n: int) -> list[int]:
    if isinstance(v, (int, float)):
        return [int(v)] * n
    v = list(v)
    return [int(v[i % len(v)]) for i in range(n)]


def _ids(load: Load, i: int) -> tuple:
    return tuple(load.blocks[i % len(load.blocks)]) if load.blocks else ()


def _arrivals(load: Load) -> tuple[list[Req], int]:
    """Requests known up front (rate, burst, trace) and, for closed loops, the first one per user."""
    n = load.requests
    ins, outs = _lengths(load.n_in, n), _lengths(load.n_out, n)
    if load.mode in ("burst", "trace"):
        if load.mode == "trace" and len(load.times or ()) != n:
            raise ValueError("trace load needs one arrival time per request")
        at = load.times if load.mode == "trace" else [0.0] * n
        return [Req(ins[i], max(outs[i], 1), at[i], index=i, ids=_ids(load, i)) for i in range(n)], n
    if load.mode == "rate":
        if not load.rate > 0:
            raise ValueError("rate load needs rate > 0")
        rng, t, out = random.Random(load.seed), 0.0, []
        for i in range(n):
            out.append(Req(ins[i], max(outs[i], 1), t, index=i, ids=_ids(load, i)))
            t += rng.expovariate(load.rate)
        return out, n
    if load.mode != "closed":
        raise ValueError(f"unknown load mode {load.mode!r} (closed, rate, burst, trace)")
    u = max(min(load.users, n), 1)
    return [Req(ins[i], max(outs[i], 1), i * load.stagger_s / u, user=i, index=i, ids=_ids(load, i))
            for i in range(u)], u


def _admit(s: _State, d: Deployment) -> None:
    c = s.cache
    while s.waiting and s.running + len(s.prefilling) < d.max_num_seqs:
        r = s.waiting[0]
        k, n_free = c.match(r.ids, r.n_in) if c and r.ids else (0, 0)
        hb = c.hb if c else 0
        if d.admit == "prompt":
            need = max(math.ceil((r.n_in + r.made) / BLOCK) - k * hb, 0)
            room = s.free_blocks - s.watermark
        else:
            need = max(math.ceil((r.n_in + r.n_out) / BLOCK) - k * hb, 0)
            room = s.free_blocks
        if need + n_free * hb > room:  # cached blocks nobody holds are free KV: taking them counts
            break
        s.waiting.pop(0)
        r.blocks, r.admit = need, s.t
        s.free_blocks -= need
        if c and r.ids:
            r.held, moved = c.take(r.ids, k, r.n_in + r.made)
            s.free_blocks -= moved
            c.evict(s.free_blocks)
            r.hit, r.prefilled = k, k * c.bt
        elif c:  # vLLM queries every prompt: one without block ids is all misses
            c.queried += r.n_in + r.made
        s.prefilling.append(r)
        s.peak = max(s.peak, s.running + len(s.prefilling))


def _start_decoding(s: _State, r: Req, preempting: bool = False) -> None:
    if s.cache and r.ids:  # its prompt's blocks can be shared from now on
        r.blocks -= s.cache.publish(r.ids, r.hit, r.n_in, r.held)
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
        s.free_blocks += v.blocks + (s.cache.release(v.held) if s.cache else 0)
        need = [(q, r) for q, r in need if r is not v]
        v.gen += 1
        v.blocks, v.prefilled, v.made, v.hit = 0, 0, n, 0
        s.waiting.insert(0, v)
        s.preemptions += 1
    for q, r in need:
        s.free_blocks -= 1
        r.blocks += 1
        heapq.heappush(s.grow, (step + BLOCK, q, r.gen, r))
    if s.cache:
        s.cache.evict(s.free_blocks)


def _finish(s: _State, r: Req) -> None:
    r.done = s.t
    s.free_blocks += r.blocks + (s.cache.release(r.held) if s.cache else 0)
    s.done.append(r)
    r.gen += 1


def _step(s: _State, d: Deployment, cost: StepCost, chunk: int | None) -> None:
    """One engine step. Separate-prefill engines run new prompts as their own pass; mixed ones
    fill the decode step up to `chunk` tokens with prompt tokens (None: whole prompts)."""
    pre = d.admit == "prompt"
    if d.schedule == "separate" and s.prefilling:
        new, s.prefilling = s.prefilling, []
        toks = sum(r.n_in + r.made - r.prefilled for r in new)  # a prefix-cache hit is not prefilled
        s.t += cost.step(0.0, toks, sum(((r.n_in + r.made) ** 2 - r.prefilled ** 2) / 2 for r in new), len(new))
        for r in new:
            _start_decoding(s, r, pre)
        return
    if pre and s.running:
        _preempt(s)  # before the decode step that needs the blocks
    # chunk: the step's token budget (vLLM's max_num_batched_tokens): decodes first, prompts share the rest
    b = s.running
    budget = math.inf if chunk is None else max(chunk - b, 1)
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
    s.watermark = watermark_blocks(d, s.free_blocks)
    if d.prefix_cache and load.blocks and load.block_tokens >= BLOCK:  # smaller: no whole KV block to share
        s.cache = PrefixCache(load.block_tokens, BLOCK)
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
                    gate.send(r.done, Req(n_ins[issued], max(n_outs[issued], 1), r.done, user=r.user, index=issued,
                                          ids=_ids(load, issued)))
                    issued += 1
    return _result(s, load, cap, detail)


def _result(s: _State, load: Load, cap: dict, detail: bool) -> dict:
    out = {"fits": True, **summarize(s.done, load), "kv_tokens": cap["kv_tokens"], "peak_batch": s.peak,
           "preemptions": s.preemptions, **(s.cache.stats() if s.cache else {})}
    if detail:
        out["requests"] = sorted(s.done, key=lambda r: r.index)
    return out
