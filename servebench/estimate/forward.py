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
    if layers:
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


def run_profile(config: dict, name: str, phase: str, batch: int, seq: int, device: str = "cpu",
                dtype: str | None = None, repeats: int = 5, layers: int | None = None, hw=None) -> dict:
    import torch

    from servebench.estimate import catalog, models

    dtype = dtype or ("float32" if device == "cpu" else "bfloat16")
    model, cfg = build(config, device, dtype, layers)
    shape = models.shape(cfg, name, dtype=dtype)
    if hw is None:
        hw = catalog.lookup("cpu" if device == "cpu" else torch.cuda.get_device_name())
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(3, shape.vocab, (batch, seq), generator=gen).to(device)
    step_ids = torch.randint(3, shape.vocab, (batch, 1), generator=gen).to(device)

    with torch.inference_mode():
        cache = None
        if phase == "decode":
            cache = model(ids, use_cache=True, logits_to_keep=1).past_key_values

        def forward():
            if phase == "prefill":
                return model(ids, use_cache=False, logits_to_keep=1)
            cache.crop(seq)  # every repeat decodes position `seq` over the same cache
            return model(step_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)

        forward()  # warm-up: allocator, kernels, lazy init
        sync()
        plain = []
        for _ in range(repeats):
            t = time.perf_counter_ns()
            forward()
            sync()
            plain.append(time.perf_counter_ns() - t)

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
        hooked = []
        try:
            for _ in range(repeats):
                t = time.perf_counter_ns()
                forward()
                sync()
                hooked.append(time.perf_counter_ns() - t)
        finally:
            for hd in handles:
                hd.remove()
        ops = _operators(forward, device, sync)

    # shares need the same statistic for parts and whole: means over the hooked repeats
    total_ms = sum(hooked) / repeats / 1e6
    per_fwd = {r: sum(v) / repeats / 1e6 for r, v in acc.items()}
    calls = {r: len(v) // repeats for r, v in acc.items()}
    per_fwd["    attention core (self)"] = per_fwd.get("  attention", 0) - sum(
        per_fwd.get("    " + p, 0) for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
    per_fwd["    MLP elementwise (self)"] = per_fwd.get("  MLP", 0) - sum(
        per_fwd.get("    " + p, 0) for p in ("gate_proj", "up_proj", "down_proj", "SiLU"))
    per_fwd["  residual adds (self)"] = per_fwd.get("decoder layers", 0) - sum(
        per_fwd.get(p, 0) for p in ("  attention", "  MLP", "  RMSNorm (2 per layer)"))
    fl = floors(shape, hw, phase, batch, seq, torch.finfo(getattr(torch, dtype)).bits // 8)
    rows = []
    for row, parent, kind in ROWS:
        ms = max(per_fwd.get(row, 0.0), 0.0)
        f = fl.get(row)
        rows.append({"module": row.strip(), "depth": (len(row) - len(row.lstrip())) // 2, "kind": kind,
                     "calls": calls.get(row), "ms": ms, "share": ms / total_ms if total_ms else None,
                     "floor_ms": f["floor_ms"] if f else None, "bound": f["bound"] if f else None,
                     "efficiency": (f["floor_ms"] / ms) if f and ms > 0 else None,
                     "bytes": f["bytes"] if f else None, "flops": f["flops"] if f else None})
    floor_total = sum(fl[k]["floor_ms"] for k in ("embedding", "decoder layers", "final RMSNorm", "LM head"))
    return {"model": name, "phase": phase, "batch": batch, "seq": seq, "device": device, "dtype": dtype,
            "layers": shape.layers, "params": shape.params, "hardware": hw.as_dict(), "repeats": repeats,
            "forward_ms": _median(plain) / 1e6, "forward_hooked_ms": total_ms, "floor_ms": floor_total,
            "efficiency": floor_total / (_median(plain) / 1e6), "modules": rows, "operators": ops,
            "definition": "forward_ms: median unhooked forward; module ms: mean per forward over the hooked repeats; "
                          "share: of the mean hooked forward; "
                          "floor: max(bytes / bandwidth, FLOPs / peak) of that module's own work"}


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
