"""One forward pass of a Llama-shaped model, timed per module and per operator (`servebench profile`).

The arXiv study's micro view: time per module (embedding, decoder layer, attention, the
q/k/v/o and MLP projections, SiLU, RMSNorm, LM head) from forward hooks, time per operator
from torch.profiler, and each module's own floor (its bytes / memory bandwidth vs its FLOPs /
peak) so a reader sees which parts are far from the limit. Random weights, built from the
config with transformers' LlamaForCausalLM: nothing is downloaded.

Timing: hooks stamp perf_counter_ns before and after each module (synchronizing first on
CUDA, which serializes the GPU: module times are then exact but the total is a little
longer than unhooked); the unhooked forward is timed separately and both are reported.
Module times are inclusive (a decoder layer contains its attention); "self" rows (attention
core, MLP elementwise, residual adds) are the inclusive time minus the children timed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

ROWS = [  # (row, parent, kind) in display order
    ("embedding", None, "embedding"), ("rotary embedding", None, "rope"),
    ("decoder layers", None, "layer"),
    ("  attention", "decoder layers", "attention"),
    ("    q_proj", "  attention", "linear"), ("    k_proj", "  attention", "linear"),
    ("    v_proj", "  attention", "linear"), ("    o_proj", "  attention", "linear"),
    ("    attention core (self)", "  attention", "attn_core"),
    ("  MLP", "decoder layers", "mlp"),
    ("    gate_proj", "  MLP", "linear"), ("    up_proj", "  MLP", "linear"), ("    down_proj", "  MLP", "linear"),
    ("    SiLU", "  MLP", "silu"), ("    MLP elementwise (self)", "  MLP", "mul"),
    ("  RMSNorm (2 per layer)", "decoder layers", "norm"), ("  residual adds (self)", "decoder layers", "add"),
    ("final RMSNorm", None, "norm"), ("LM head", None, "linear"),
]


def _row_of(name: str, mod) -> str | None:
    t = type(mod).__name__
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("embed_tokens"):
        return "embedding"
    if name.endswith("rotary_emb"):
        return "rotary embedding"
    if t.endswith("DecoderLayer"):
        return "decoder layers"
    if t.endswith("Attention"):
        return "  attention"
    if t.endswith("MLP"):
        return "  MLP"
    if leaf in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        return "    " + leaf
    if leaf == "act_fn":
        return "    SiLU"
    if t.endswith("RMSNorm"):
        return "final RMSNorm" if name.endswith("model.norm") else "  RMSNorm (2 per layer)"
    if name == "lm_head":
        return "LM head"
    return None


def build(config: dict, device: str, dtype: str, layers: int | None = None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in config.items() if k not in ("architectures", "torch_dtype", "dtype")}
    if layers is not None:
        cfg["num_hidden_layers"] = layers
    c = LlamaConfig(**cfg)
    c._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(c)
    return model.to(dtype=getattr(torch, dtype)).eval(), cfg


def floors(shape, hw, phase: str, batch: int, seq: int, act_bytes: int) -> dict[str, dict]:
    """Each row's own floor: max(bytes / bandwidth, FLOPs / peak), summed over layers."""
    m, L = shape, shape.layers
    tok = batch * seq if phase == "prefill" else batch
    ctx = seq if phase == "decode" else seq / 2
    wb, ab = shape.dtype_bytes, act_bytes
    q, kv, h, i, v = m.heads * m.head_dim, m.kv_heads * m.head_dim, m.hidden, m.intermediate, m.vocab

    def lin(n_in, n_out, t=tok, count=L):
        return {"bytes": count * (n_in * n_out * wb + t * (n_in + n_out) * ab), "flops": count * 2 * t * n_in * n_out}

    attn_bytes = L * batch * (seq if phase == "decode" else seq) * 2 * kv * ab + L * tok * 2 * q * ab
    out = {
        "embedding": {"bytes": tok * h * (wb + ab), "flops": 0},
        "    q_proj": lin(h, q), "    k_proj": lin(h, kv), "    v_proj": lin(h, kv), "    o_proj": lin(q, h),
        "    attention core (self)": {"bytes": attn_bytes, "flops": L * 4 * m.heads * m.head_dim * tok * ctx},
        "    gate_proj": lin(h, i), "    up_proj": lin(h, i), "    down_proj": lin(i, h),
        "    SiLU": {"bytes": L * 2 * tok * i * ab, "flops": L * tok * i * 4},
        "    MLP elementwise (self)": {"bytes": L * 3 * tok * i * ab, "flops": L * tok * i},
        "  RMSNorm (2 per layer)": {"bytes": L * 2 * (2 * tok * h * ab + h * wb), "flops": L * 2 * 4 * tok * h},
        "  residual adds (self)": {"bytes": L * 2 * 3 * tok * h * ab, "flops": L * 2 * tok * h},
        "final RMSNorm": {"bytes": 2 * tok * h * ab + h * wb, "flops": 4 * tok * h},
        "LM head": lin(h, v, t=batch, count=1),  # logits of the last position only, as engines do
    }
    out["  attention"] = _sum(out, [k for k in out if k.startswith("    ") and k.strip() in
                                    ("q_proj", "k_proj", "v_proj", "o_proj", "attention core (self)")])
    out["  MLP"] = _sum(out, ["    gate_proj", "    up_proj", "    down_proj", "    SiLU", "    MLP elementwise (self)"])
    out["decoder layers"] = _sum(out, ["  attention", "  MLP", "  RMSNorm (2 per layer)", "  residual adds (self)"])
    bw, peak = hw.bandwidth_gbs * 1e9, hw.peak_flops(shape.compute)
    for r in out.values():
        t_mem, t_cmp = r["bytes"] / bw, r["flops"] / peak
        r.update(floor_ms=max(t_mem, t_cmp) * 1e3, bound="memory" if t_mem >= t_cmp else "compute")
    return out


def _sum(rows, keys):
    return {"bytes": sum(rows[k]["bytes"] for k in keys), "flops": sum(rows[k]["flops"] for k in keys)}


@dataclass(slots=True, frozen=True)
class Setup:
    """Where and how a profile runs (run_profile's keywords besides the hardware)."""

    device: str = "cpu"
    dtype: str | None = None  # None: float32 on CPU, bfloat16 elsewhere
    repeats: int = 5
    layers: int | None = None  # cut the layer count to fit memory


def run_profile(config: dict, name: str, phase: str, batch: int, seq: int, *, hw=None, **setup) -> dict:
    """One profile (Setup's fields as keywords): module and operator times beside their floors."""
    import torch

    from servebench.estimate import catalog, models

    s = Setup(**setup)
    dtype = s.dtype or ("float32" if s.device == "cpu" else "bfloat16")
    model, cfg = build(config, s.device, dtype, s.layers)
    shape = models.shape(cfg, name, dtype=dtype)
    if hw is None:
        hw = catalog.lookup("cpu" if s.device == "cpu" else torch.cuda.get_device_name())
    sync = torch.cuda.synchronize if s.device.startswith("cuda") else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(3, shape.vocab, (batch, seq), generator=gen).to(s.device)
    step_ids = torch.randint(3, shape.vocab, (batch, 1), generator=gen).to(s.device)

    with torch.inference_mode():
        forward = _forward(model, phase, ids, step_ids, seq)
        plain = timings(forward, sync, s.repeats, warmup=1)  # warm-up: allocator, kernels, lazy init
        acc, hooked = _hooked(model, forward, sync, s.repeats)
        ops = _operators(forward, s.device, sync)

    # shares need the same statistic for parts and whole: means over the hooked repeats
    total_ms = sum(hooked) / s.repeats / 1e6
    fl = floors(shape, hw, phase, batch, seq, torch.finfo(getattr(torch, dtype)).bits // 8)
    floor_total = sum(fl[k]["floor_ms"] for k in ("embedding", "decoder layers", "final RMSNorm", "LM head"))
    return {"model": name, "phase": phase, "batch": batch, "seq": seq, "device": s.device, "dtype": dtype,
            "layers": shape.layers, "params": shape.params, "hardware": hw.as_dict(), "repeats": s.repeats,
            "forward_ms": _median(plain) / 1e6, "forward_hooked_ms": total_ms, "floor_ms": floor_total,
            "efficiency": floor_total / (_median(plain) / 1e6), "modules": _module_rows(acc, s.repeats, total_ms, fl),
            "operators": ops,
            "definition": "forward_ms: median unhooked forward; module ms: mean per forward over the hooked repeats; "
                          "share: of the mean hooked forward; "
                          "floor: max(bytes / bandwidth, FLOPs / peak) of that module's own work"}


def timings(fn, sync, repeats: int, warmup: int = 0) -> list[int]:
    """perf_counter_ns of `repeats` calls of fn, each synced before the stop stamp, after
    `warmup` untimed calls. Also the timing loop of scripts/device_estimate_check.py."""
    for _ in range(warmup):
        fn()
    if warmup:
        sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        fn()
        sync()
        out.append(time.perf_counter_ns() - t)
    return out


def _forward(model, phase: str, ids, step_ids, seq: int):
    """The forward pass to time: the whole prompt (prefill), or one token over a `seq` cache."""
    if phase == "prefill":
        return lambda: model(ids, use_cache=False, logits_to_keep=1)
    cache = model(ids, use_cache=True, logits_to_keep=1).past_key_values

    def decode():
        cache.crop(seq)  # every repeat decodes position `seq` over the same cache
        return model(step_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)

    return decode


def _hooked(model, forward, sync, repeats: int) -> tuple[dict[str, list[int]], list[int]]:
    """(ns per row per call, ns per whole forward) with a stamp before and after every module."""
    acc: dict[str, list[int]] = defaultdict(list)
    stack: list[int] = []
    handles = []
    for mname, mod in model.named_modules():
        row = _row_of(mname, mod)
        if row is None:
            continue

        def pre(_m, _a, _r=row):
            sync()
            stack.append(time.perf_counter_ns())

        def post(_m, _a, _o, _r=row):
            sync()
            acc[_r].append(time.perf_counter_ns() - stack.pop())

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        hooked = timings(forward, sync, repeats)
    finally:
        for hd in handles:
            hd.remove()
    return acc, hooked


def _module_rows(acc: dict[str, list[int]], repeats: int, total_ms: float, fl: dict[str, dict]) -> list[dict]:
    """ROWS with their mean ms per forward, share and floor; "self" rows are parent minus children."""
    per_fwd = {r: sum(v) / repeats / 1e6 for r, v in acc.items()}
    calls = {r: len(v) // repeats for r, v in acc.items()}
    per_fwd["    attention core (self)"] = per_fwd.get("  attention", 0) - sum(
        per_fwd.get("    " + p, 0) for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
    per_fwd["    MLP elementwise (self)"] = per_fwd.get("  MLP", 0) - sum(
        per_fwd.get("    " + p, 0) for p in ("gate_proj", "up_proj", "down_proj", "SiLU"))
    per_fwd["  residual adds (self)"] = per_fwd.get("decoder layers", 0) - sum(
        per_fwd.get(p, 0) for p in ("  attention", "  MLP", "  RMSNorm (2 per layer)"))
    rows = []
    for row, parent, kind in ROWS:
        ms = max(per_fwd.get(row, 0.0), 0.0)
        f = fl.get(row)
        rows.append({"module": row.strip(), "depth": (len(row) - len(row.lstrip())) // 2, "kind": kind,
                     "calls": calls.get(row), "ms": ms, "share": ms / total_ms if total_ms else None,
                     "floor_ms": f["floor_ms"] if f else None, "bound": f["bound"] if f else None,
                     "efficiency": (f["floor_ms"] / ms) if f and ms > 0 else None,
                     "bytes": f["bytes"] if f else None, "flops": f["flops"] if f else None})
    return rows


def _median(xs: list[int]) -> float:
    s = sorted(xs)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def _operators(forward, device: str, sync, top: int = 15) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        forward()
        sync()
    cuda = device.startswith("cuda")
    rows = []
    for e in prof.key_averages():
        self_us = (getattr(e, "self_device_time_total", 0) if cuda else e.self_cpu_time_total)
        rows.append({"op": e.key, "calls": e.count, "self_ms": self_us / 1e3})
    total = sum(r["self_ms"] for r in rows) or 1.0
    rows.sort(key=lambda r: -r["self_ms"])
    for r in rows:
        r["share"] = r["self_ms"] / total
    return rows[:top]
