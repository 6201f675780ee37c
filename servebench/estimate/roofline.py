"""Floors and the serving model that turns them into TTFT, TPOT and throughput.

Per GPU of a tensor-parallel group of T (hardware.md, "How the established estimators model
inference"):
    decode step (batch b, mean context s) = max((W + b*s*K) / (eta_mem*BW),
                                                (2*P*b + attn) / T / (eta_compute*F))
                                            + 2 all-reduces per layer + layers * layer_us = gpu
    step                                   = max(gpu, layers * host_us) + step_ms + b * seq_ms
    prefill of n tokens: the same, gpu = max(W / (eta_mem*BW), (2*P*n + attn) / T / (eta_compute*F))
                                         + 2 all-reduces per layer + layers * layer_us, seq_ms per prompt
layer_us is the kernels' own latency on the GPU (a few us each even in a CUDA graph); host_us
is the host launching them without CUDA graphs (TGI 1.x), which overlaps the GPU's work (step_s).
The fixed step cost and the per-sequence term are host work between steps (sampling,
scheduling, detokenising: vLLM V0/TGI), added (docs/estimate.md "Per-sequence step cost").
    all-reduce of B bytes (ring)           = alpha + 2(T-1)/T * B / (eta_link*link)
W = weight bytes read per step / T, K = KV bytes per token per GPU (times Deployment.kv_reads), P = weights each token
multiplies by, F = dense peak of the compute dtype.

Serving at concurrency c (closed loop, requests of n_in prompt and n_out output tokens), the
running batch is B = min(c, largest batch whose KV fits, max_num_seqs). Two schedules:
- "mixed" (vLLM, SGLang, TensorRT-LLM: chunked prefill / in-flight batching): prompt tokens
  ride in decode steps, so a prefill costs only its FLOPs (the step reads the weights anyway).
  With B requests each prefilling once per n_out-1 steps, a step carries B*n_in/(n_out-1)
  prompt tokens on average:
      step = max(max(mem(B), cmp(B) + B/(n_out-1) * cmp_prefill(n_in)) + comm + kernels, host) + step_ms + seq
      TTFT = max(max(mem(B), cmp(B) + cmp_prefill(n_in)) + comm + kernels, host) + step_ms + seq (+ step/2 when B > 1)
      TPOT = step
- "separate" (TGI 1.x, LightLLM): a prefill is its own forward pass between decode steps,
  so each request sees its own prefill, half a running step on average, n_out-1 decode steps
  and the B-1 other requests' prefills:
      TTFT = prefill + step/2 (B > 1);  TPOT = step + (B-1) * prefill / (n_out-1)
- lockstep (fixed lengths started together: servebench's own runs): the batch moves in waves,
      TTFT = prefill of B prompts at once;  TPOT = step (no prompt tokens ride along)
TTFT also carries req_ms (latency before the engine) and the request's share of the frontend
worker (fe_ms: b * fe_ms for a lockstep wave, fe_ms / (1 - rho) otherwise; estimate/frontend.py).
Then cycle = TTFT + (n_out-1) * TPOT, requests/s X = B / cycle, and when c > B requests wait
for a slot: queue = (c/B - 1) * cycle is added to TTFT. ms/token = e2e / n_out, output
tok/s = X * n_out.
With Factors.speed_of_light() (every efficiency 1, no overheads, no collective latency) this
gives the physical floor that `efficiency` compares measured runs with.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from servebench.estimate.hardware import Hardware
from servebench.estimate.models import ModelShape


@dataclass(frozen=True, slots=True)
class Factors:
    eta_mem: float = 0.7  # achieved / peak memory bandwidth in a decode step (llm-analysis: <= 0.9)
    eta_compute: float = 0.6  # achieved / peak FLOP/s in prefill (llm-analysis: 0.7)
    step_ms: float = 1.0  # fixed cost per engine step: scheduling, launches
    # cost per running sequence per step: sampling, scheduler bookkeeping, detokenising and
    # streaming each request (Python per sequence in vLLM/TGI); an assumed prior, not a
    # published figure: fitted when calibration runs span batch sizes (docs/estimate.md)
    seq_ms: float = 0.01
    # host work once per request before it reaches the engine (HTTP, tokenising, admission):
    # latency added to its TTFT, not engine time (vLLM tokenises outside the engine loop), so
    # it does not slow the other requests' steps. 0 for published rows (their TTFT is the
    # engine's); fitted on the user's runs with seq_ms, which otherwise takes the fixed step
    # cost that used to pay for this and leaves a 1-user TTFT too fast (h-seqcost: 12 % -> 32 %)
    req_ms: float = 0.0
    # the server's frontend as one worker shared by the requests in it (estimate/frontend.py):
    # work per request before the engine (HTTP, validation, tokenising) that requests arriving
    # together wait on in turn. 0 for published rows (no source separates it); fitted only on
    # the user's runs, where TTFT grows ~2.5 ms per request of a wave on a 2-core host
    fe_ms: float = 0.0
    # weight-only int4 kernels (GPTQ/AWQ: dequantised in the matmul) against fp16 ones reading
    # the same bytes: 1 = as efficient. Fitted only on rows or runs that used such weights
    # (older GPTQ kernels fall far short of the 4x byte saving; Marlin nearly reaches it)
    eta_w4: float = 1.0
    layer_us: float = 0.0  # GPU time per layer per step beyond the roofline (small kernels' latency)
    # host time per layer per step launching kernels without CUDA graphs: overlaps the GPU's time
    # (launches are asynchronous), so it shows only where it exceeds it (module doc)
    host_us: float = 0.0
    alpha_us: float | None = None  # latency per all-reduce; None: the hardware row's default
    eta_link: float = 0.7  # achieved / peak link bandwidth in all-reduces

    @staticmethod
    def speed_of_light() -> "Factors":
        return Factors(eta_mem=1.0, eta_compute=1.0, step_ms=0.0, seq_ms=0.0, req_ms=0.0, fe_ms=0.0, eta_w4=1.0, alpha_us=0.0,
                       eta_link=1.0)

    def as_dict(self) -> dict:
        return asdict(self)

    def with_(self, **kw) -> "Factors":
        return replace(self, **kw)


@dataclass(frozen=True, slots=True)
class Deployment:
    model: ModelShape
    hw: Hardware
    tp: int = 1  # GPUs in the tensor-parallel group
    mem_fraction: float = 0.9  # vLLM gpu_memory_utilization / SGLang mem_fraction_static
    reserve_gib: float = 1.5  # activations, CUDA graphs, allocator slack per GPU
    max_num_seqs: int = 256  # engine's cap on the running batch (vLLM default)
    schedule: str = "mixed"  # mixed | separate (see module doc)
    admit: str = "reserve"  # reserve: prompt + output on admission | prompt: vLLM's (preempts, recomputes)
    p2p: bool | None = None  # GPU peer access; None: NCCL_P2P_DISABLE=1 in the env says no, else the catalog
    # times a decode step reads each KV head: 1 for a group-aware attention kernel; the query
    # heads per KV head for one that gives every query head its own pass (engines.kv_reads)
    kv_reads: float = 1.0
    # the engine replays CUDA graphs: no per-layer host launch cost (host_us) to pay (engines.cuda_graphs)
    graphs: bool = False
    # the engine keeps computed prompt blocks for later requests (vLLM's automatic prefix caching,
    # SGLang's radix cache): the simulator serves a trace's shared prefixes from the pool (sim.py)
    prefix_cache: bool = False


# Engines that admit on the prompt's KV blocks and preempt (recompute) when sequences outgrow
# the pool (vLLM's scheduler, v0 and v1); the others reserve prompt + output on admission.
ADMITS = {"vllm": "prompt"}
SCHEDULES = {"vllm": "mixed", "sglang": "mixed", "trtllm": "mixed", "tensorrt-llm": "mixed", "openai": "mixed",
             "tgi": "separate", "lightllm": "separate"}


def weight_read_bytes(m: ModelShape, f: Factors) -> float:
    """Decode weight bytes as an fp16 kernel would see them: weight-only int4 linears count
    1/eta_w4 times their size (their kernels reach a smaller share of the bandwidth)."""
    if m.linear_bytes >= 1 or m.compute != "fp16" or f.eta_w4 == 1.0:
        return m.decode_weight_bytes()
    q = m.layers * m.layer_linear_params * m.linear_bytes
    return m.decode_weight_bytes() + q * (1 / f.eta_w4 - 1)


def kernels_s(m: ModelShape, f: Factors) -> float:
    """GPU time per step beyond the roofline that grows with depth (the kernels' latency)."""
    return m.layers * f.layer_us / 1e6


def host_s(m: ModelShape, f: Factors, graphs: bool = False) -> float:
    """Host time to launch one step's kernels layer by layer (engines without CUDA graphs)."""
    return 0.0 if graphs else m.layers * f.host_us / 1e6


def step_s(gpu: float, host: float, f: Factors, seq: float) -> float:
    """One step's wall time. Launches are asynchronous: the GPU runs layer k while the host
    launches layer k+1, so the step takes the longer of the two, not their sum (the seed
    study's TGI 1.0 rows: 525 us per layer whether the GPU floor is 5.6 or 11 ms; bound
    "host"). The fixed step cost and the per-sequence work run between steps, GPU idle."""
    return max(gpu, host) + f.step_ms / 1e3 + seq


def _bound(t_mem: float, t_cmp: float, gpu: float, host: float) -> str:
    return "host" if host > gpu else "memory" if t_mem >= t_cmp else "compute"


def is_w4(m: ModelShape) -> bool:
    return m.linear_bytes < 1 and m.compute == "fp16"


def spans_batches(batches) -> bool:
    """A per-sequence cost is told apart from the fixed step cost only by steps of different
    batch sizes: at least two, the largest at least twice the smallest."""
    b = [x for x in batches if x and x > 0]
    return len(b) >= 2 and max(b) >= 2 * min(b)


# Without peer access NCCL's ring goes through host memory (its SHM transport): every hop is
# a device-to-host copy and a host-to-device one, so each byte crosses PCIe twice and each hop
# pays two copies' latency instead of one write into the peer.
STAGED_BW = 0.5
STAGED_ALPHA = 2.0
HOST_LINK_GBS = 31.5  # staged transfers go over the card's PCIe (Gen4 x16) to the host, never NVLink


def p2p(d: Deployment) -> bool:
    if d.p2p is not None:
        return d.p2p
    if os.environ.get("NCCL_P2P_DISABLE", "").strip().lower() in ("1", "true", "yes"):
        return False
    return d.hw.p2p or d.hw.interconnect == "nvlink"


def link_note(d: Deployment) -> str | None:
    """What the all-reduces run over, said beside the numbers (None for one GPU)."""
    if d.tp <= 1:
        return None
    if p2p(d):
        return f"{d.tp} GPUs, all-reduces over {d.hw.interconnect} {d.hw.link_gbs:g} GB/s per direction with peer access"
    how = f"PCIe {min(d.hw.link_gbs, HOST_LINK_GBS):g} GB/s per direction"
    why = ("--p2p off" if d.p2p is False else "NCCL_P2P_DISABLE=1" if os.environ.get("NCCL_P2P_DISABLE", "").strip()
           else f"{d.hw.label} has no peer access")
    return (f"{d.tp} GPUs, all-reduces over {how} staged through host memory ({why}): assumed "
            f"x{STAGED_BW:g} bandwidth and x{STAGED_ALPHA:g} latency")


def link(d: Deployment, f: Factors) -> tuple[float, float]:
    """(latency per all-reduce in s, achieved bytes/s per direction) of the TP group's ring.
    A fitted alpha_us is the latency the runs showed, staging included, so it is not scaled;
    the catalog's default is a peer-access figure and is."""
    staged = not p2p(d)
    bw = f.eta_link * 1e9 * (min(d.hw.link_gbs, HOST_LINK_GBS) * STAGED_BW if staged else d.hw.link_gbs)
    if f.alpha_us is not None:
        return f.alpha_us * 1e-6, bw
    return d.hw.alpha_us * 1e-6 * (STAGED_ALPHA if staged else 1.0), bw


def _allreduce_s(d: Deployment, nbytes: float, f: Factors) -> float:
    if d.tp <= 1:
        return 0.0
    alpha, bw = link(d, f)
    return alpha + 2 * (d.tp - 1) / d.tp * nbytes / bw


def decode_step(d: Deployment, batch: float, ctx: float, f: Factors) -> dict:
    m, hw = d.model, d.hw
    w = m.decode_weight_bytes() / d.tp
    kv = batch * ctx * m.kv_bytes_per_token(d.tp) * d.kv_reads
    t_mem = (weight_read_bytes(m, f) / d.tp + kv) / (f.eta_mem * hw.bandwidth_gbs * 1e9)
    flops = (2 * m.matmul_params * batch + m.attn_flops(batch, ctx)) / d.tp
    t_cmp = flops / (f.eta_compute * hw.peak_flops(m.compute))
    t_comm = 2 * m.layers * _allreduce_s(d, batch * m.hidden * m.dtype_bytes, f)
    t_seq = f.seq_ms / 1e3 * batch
    gpu, host = max(t_mem, t_cmp) + t_comm + kernels_s(m, f), host_s(m, f, d.graphs)
    return {"s": step_s(gpu, host, f, t_seq), "memory_s": t_mem, "compute_s": t_cmp, "comm_s": t_comm, "host_s": host,
            "seq_s": t_seq, "bound": _bound(t_mem, t_cmp, gpu, host), "weight_bytes": w, "kv_bytes": kv}


def prefill(d: Deployment, n_tokens: float, seq_len: float, f: Factors) -> dict:
    """n_tokens prompt tokens in one step, in sequences of seq_len (causal: mean context len/2)."""
    m, hw = d.model, d.hw
    t_mem = weight_read_bytes(m, f) / d.tp / (f.eta_mem * hw.bandwidth_gbs * 1e9)
    seqs = max(n_tokens / max(seq_len, 1.0), 1.0)  # one row of logits per sequence prefilled
    flops = (2 * (m.matmul_params - m.lm_head_params) * n_tokens + 2 * m.lm_head_params * seqs
             + m.attn_flops(n_tokens, seq_len / 2)) / d.tp
    t_cmp = flops / (f.eta_compute * hw.peak_flops(m.compute))
    t_comm = 2 * m.layers * _allreduce_s(d, n_tokens * m.hidden * m.dtype_bytes, f)
    t_seq = f.seq_ms / 1e3 * seqs  # host work per sequence prefilled
    gpu, host = max(t_mem, t_cmp) + t_comm + kernels_s(m, f), host_s(m, f, d.graphs)
    return {"s": step_s(gpu, host, f, t_seq), "memory_s": t_mem, "compute_s": t_cmp, "comm_s": t_comm, "host_s": host,
            "seq_s": t_seq, "bound": _bound(t_mem, t_cmp, gpu, host), "flops": flops}


BLOCK = 16  # tokens per KV block (vLLM's default block size)


def watermark_blocks(d: Deployment, blocks: int) -> int:
    """Blocks vLLM keeps free when admitting (1 %); the engines that reserve keep none."""
    return int(0.01 * blocks) if d.admit == "prompt" else 0


def capacity(d: Deployment, seq_tokens: int | None = None) -> dict:
    """Does the model fit, how many KV tokens are left, and the largest batch of seq_tokens each.
    A sequence fits when its whole KV blocks do, beyond vLLM's watermark: the simulator's rule."""
    m = d.model
    usable = d.hw.memory_bytes * d.mem_fraction
    weights = m.weight_bytes() / d.tp
    kv_tok = m.kv_bytes_per_token(d.tp)
    free = usable - weights - d.reserve_gib * 2**30
    tokens = max(int(free // kv_tok), 0)
    room = (tokens // BLOCK - watermark_blocks(d, tokens // BLOCK)) * BLOCK
    out = {"memory_gib": d.hw.memory_gib, "usable_gib": usable / 2**30, "weights_gib": weights / 2**30,
           "reserve_gib": d.reserve_gib, "kv_gib": max(free, 0) / 2**30, "kv_bytes_per_token": kv_tok,
           "kv_tokens": tokens, "fits": free > 0 and (seq_tokens is None or -(-seq_tokens // BLOCK) * BLOCK <= room)}
    if seq_tokens:
        out["max_batch"], out["max_num_seqs"] = min(tokens // seq_tokens, d.max_num_seqs), d.max_num_seqs
    if not out["fits"] and free > 0 and tokens:
        out["why"] = (f"one {seq_tokens}-token sequence needs {-(-seq_tokens // BLOCK)} KV blocks of {BLOCK} tokens; "
                      f"the KV cache holds {tokens:,} tokens, {room:,} of them free to admit one"
                      + (" (vLLM keeps 1 % of its blocks back)" if d.admit == "prompt" else ""))
    elif not out["fits"]:
        need = weights + d.reserve_gib * 2**30 + kv_tok * (seq_tokens or 1)
        out["why"] = (f"needs {need / 2**30:.1f} GiB per GPU (weights {weights / 2**30:.1f} GiB + reserve "
                      f"{d.reserve_gib:g} GiB + KV of one {seq_tokens or 1}-token sequence "
                      f"{kv_tok * (seq_tokens or 1) / 2**30:.2f} GiB); has {usable / 2**30:.1f} GiB usable "
                      f"({d.mem_fraction:g} x {d.hw.memory_gib:g} GiB) on each of {d.tp} GPU(s)")
    return out


def _frontend_s(f: Factors, c: float, b: float, cycle: float, lockstep: bool) -> float:
    """A request's time in the shared frontend worker (estimate/frontend.py). Lockstep: a wave
    of b requests arrives at once and each finishes when all have (b x fe_ms). Otherwise the
    processor-sharing mean under the other users' requests: fe / (1 - rho)."""
    fe = f.fe_ms / 1e3
    if not fe:
        return 0.0
    if lockstep:
        return b * fe
    rho = min(c, b) / max(cycle, 1e-9) * fe * max(c - 1, 0.0) / max(c, 1.0)
    return fe / (1 - min(rho, 0.95))


def batch_cap(d: Deployment, n_in: float, n_out: float) -> float | dict:
    """The running batch the KV cache and max_num_seqs allow for these lengths, or serve()'s
    answer when one sequence does not fit. Independent of the factors."""
    cap = capacity(d, int(n_in + max(n_out, 1.0)))
    if not cap["fits"]:
        return {"fits": False, "why": cap["why"]}
    return cap.get("max_batch") or 0


batch_cap_of = batch_cap  # serve()'s parameter of the same name hides the function there


def serve(d: Deployment, concurrency: float, n_in: float, n_out: float, f: Factors,
          batch_cap: float | None = None, lockstep: bool = False) -> dict:
    """Predicted metrics of a closed loop at `concurrency` (see module doc). batch_cap: a
    measured or known running-batch cap that overrides the KV/max_num_seqs one. lockstep:
    every request has the same lengths and the loop starts them together (servebench's
    fixed-length runs, offline batches), so they stay in waves: the batch prefills together
    (TTFT = one prefill of B prompts) and then decodes with no prompt riding along."""
    if batch_cap is None:
        cap = batch_cap_of(d, n_in, n_out)
        if isinstance(cap, dict):
            return cap
        batch_cap = cap
    n_out = max(n_out, 1.0)
    b = max(min(concurrency, batch_cap), 1.0)
    ctx = n_in + n_out / 2
    step = decode_step(d, b, ctx, f)
    if lockstep:
        pf = prefill(d, b * n_in, n_in, f)
        t_pf = ttft0 = pf["s"]
        tpot = t_dec = step["s"]
    elif d.schedule == "mixed":
        pf = prefill(d, n_in, n_in, f)
        host, comm, seq = step["host_s"], step["comm_s"] + kernels_s(d.model, f), step["seq_s"]
        ride = b / (n_out - 1) if n_out > 1 else b
        t_dec = step_s(max(step["memory_s"], step["compute_s"] + ride * pf["compute_s"]) + comm, host, f, seq)
        # the prompt rides in one step with the batch: one all-reduce of both per layer, one latency
        both = 2 * d.model.layers * _allreduce_s(d, (b + n_in) * d.model.hidden * d.model.dtype_bytes, f)
        ttft0 = step_s(max(step["memory_s"], step["compute_s"] + pf["compute_s"]) + both + kernels_s(d.model, f),
                       host, f, seq)
        ttft0 += t_dec / 2 if b > 1 else 0.0
        tpot = t_dec
        t_pf = ttft0
    else:
        pf = prefill(d, n_in, n_in, f)
        t_pf, t_dec = pf["s"], step["s"]
        ttft0 = t_pf + (t_dec / 2 if b > 1 else 0.0)
        tpot = t_dec + ((b - 1) * t_pf / (n_out - 1) if n_out > 1 else 0.0)
    ttft0 += f.req_ms / 1e3 + _frontend_s(f, concurrency, b, ttft0 + (n_out - 1) * tpot, lockstep)
    cycle = ttft0 + (n_out - 1) * tpot
    queue = max(concurrency / b - 1, 0.0) * cycle
    x = min(concurrency, b) / cycle  # below one request in flight the engine idles in between
    e2e = cycle + queue
    return {"fits": True, "batch": b, "ttft_ms": (ttft0 + queue) * 1e3, "tpot_ms": tpot * 1e3,
            "ms_per_token": e2e / n_out * 1e3, "e2e_ms": e2e * 1e3, "request_throughput": x,
            "output_tok_s": x * n_out, "decode_step_ms": t_dec * 1e3, "prefill_ms": t_pf * 1e3,
            "decode_bound": step["bound"], "prefill_bound": pf["bound"], "queue_ms": queue * 1e3}
