#!/usr/bin/env python
"""Decode step time of Llama-shaped random-weight models vs servebench's estimate.

For a machine with an accelerator and torch (no engine needed): builds each model shape
with random bf16 weights and a preallocated KV cache, times one decode step (all layers,
LM head) at several batch sizes, eagerly and, on CUDA, as a captured CUDA graph (no launch
overhead: the closest a plain PyTorch step gets to its floor), and compares with
servebench.estimate's floor (roofline at peak bandwidth / FLOP/s) for the same shape,
batch and context. Also measures the device's copy bandwidth and bf16 matmul rate beside
the catalog's figures. Writes $OUT/device_estimate_check.json (or --out).

Each point is also judged against what `servebench estimate --gpu <this GPU>` would say:
its factors (fitted on the published rows for the GPU's family, data/published_fit.json)
without the engine's fixed step overhead (a captured graph has none), and its band
exp(+-sigma). `gpu_compared` in the JSON says whether a GPU was measured at all: with
`--device auto` (the default) and no CUDA device, it runs the CPU shapes and says that the
GPU estimate was not checked.

    PYTHONPATH=. python scripts/device_estimate_check.py                   # auto: cuda if torch sees one
    PYTHONPATH=. python scripts/device_estimate_check.py --device cuda     # H200: ~3 min
    PYTHONPATH=. python scripts/device_estimate_check.py --device cpu      # tiny/small, here
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servebench.estimate import catalog, fit, models  # noqa: E402
from servebench.estimate.forward import timings  # noqa: E402
from servebench.estimate.roofline import Deployment, Factors, decode_step  # noqa: E402

DEFAULTS = {"cuda": ("llama-2-7b,llama-2-13b,llama-3-8b,llama-2-70b:40", "1,8,32,128"),
            "cpu": ("tiny,small", "1,4,16")}


class Model:
    """Llama decoder with fused qkv and gate/up weights: the shapes an engine runs."""

    def __init__(self, s, device, dtype, batch, ctx):
        g = torch.Generator(device=device).manual_seed(0)

        def w(*shape):
            return (torch.randn(*shape, device=device, dtype=dtype, generator=g) * 0.02)

        q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
        self.s, self.ctx = s, ctx
        self.emb = w(s.vocab, s.hidden)
        self.layers = [dict(n1=torch.ones(s.hidden, device=device, dtype=dtype), qkv=w(q + 2 * kv, s.hidden),
                            o=w(s.hidden, q), n2=torch.ones(s.hidden, device=device, dtype=dtype),
                            gu=w(2 * s.intermediate, s.hidden), down=w(s.hidden, s.intermediate),
                            k=w(batch, s.kv_heads, ctx + 1, s.head_dim), v=w(batch, s.kv_heads, ctx + 1, s.head_dim))
                       for _ in range(s.layers)]
        self.norm = torch.ones(s.hidden, device=device, dtype=dtype)
        self.head = w(s.vocab, s.hidden)
        self.ids = torch.randint(3, s.vocab, (batch,), device=device, generator=g)

    def step(self):
        s, b = self.s, self.ids.shape[0]
        x = self.emb[self.ids]
        for L in self.layers:
            h = F.rms_norm(x, (s.hidden,), L["n1"])
            q, k, v = F.linear(h, L["qkv"]).split([s.heads * s.head_dim, s.kv_heads * s.head_dim,
                                                  s.kv_heads * s.head_dim], dim=-1)
            L["k"][:, :, self.ctx] = k.view(b, s.kv_heads, s.head_dim)  # this step's K/V into the cache
            L["v"][:, :, self.ctx] = v.view(b, s.kv_heads, s.head_dim)
            a = _sdpa(q.view(b, s.heads, 1, s.head_dim), L["k"], L["v"])
            x = x + F.linear(a.reshape(b, -1), L["o"])
            h = F.rms_norm(x, (s.hidden,), L["n2"])
            gate, up = F.linear(h, L["gu"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, L["down"])
        return F.linear(F.rms_norm(x, (s.hidden,), self.norm), self.head)


def _sdpa(q, k, v):
    try:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    except TypeError:  # torch < 2.5
        rep = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))


def timed(fn, device, steps):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = sorted(timings(fn, sync, steps, warmup=3))
    return times[len(times) // 2] / 1e6  # median ms


def device_rates(device, dtype):
    n = 8192 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    mm_ms = timed(lambda: a @ b, device, 10)
    src = torch.empty(2**28 if device == "cuda" else 2**25, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    cp_ms = timed(lambda: dst.copy_(src), device, 10)
    return {"matmul_tflops": 2 * n**3 / (mm_ms / 1e3) / 1e12, "copy_gbs_read_plus_write": 2 * src.numel() / (cp_ms / 1e3) / 1e9}


def judge(shape, hw, batch: int, ctx: int, measured_ms: float, cal=None) -> dict:
    """The estimate's decode step for this shape on `hw` beside a measured one: error and
    whether the measurement lies inside the band the CLI would print."""
    import math

    cal = cal or fit.published(hw)
    f = cal.factors.with_(step_ms=0.0)  # kernels only: no engine scheduling in a torch step
    est = decode_step(Deployment(shape, hw), batch, ctx, f)["s"] * 1e3
    sigma = cal.sigma_for(hw)
    lo, hi = est * math.exp(-sigma), est * math.exp(sigma)
    return {"estimate_ms": est, "estimate_band_ms": [lo, hi], "estimate_basis": cal.basis,
            "estimate_vs_measured": est / measured_ms - 1, "inside_band": lo <= measured_ms <= hi}


def pick_device(asked: str) -> tuple[str, str | None]:
    """(device, why the GPU estimate is not being checked, or None)."""
    has = torch.cuda.is_available()
    if asked == "cuda" and not has:
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    if asked == "auto":
        asked = "cuda" if has else "cpu"
    if asked == "cpu":
        return "cpu", ("no CUDA device visible to torch: the estimate for a GPU was NOT compared with a measurement "
                       "(run this on the lent device machine); checking this host's CPU instead")
    return "cuda", None


def summarize(points: list[dict]) -> dict:
    errs = sorted(abs(p["estimate_vs_measured"]) for p in points)
    return {"median_abs_estimate_error": errs[len(errs) // 2] if errs else None,
            "inside_band": sum(p["inside_band"] for p in points), "points": len(points)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--models", default=None, help="comma list; NAME:LAYERS cuts the layer count to fit memory")
    ap.add_argument("--batches", default=None)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    args.device, not_compared = pick_device(args.device)
    if not_compared:
        print(f"note: {not_compared}")
    names, batches = DEFAULTS[args.device]
    names, batches = (args.models or names).split(","), [int(b) for b in (args.batches or batches).split(",")]
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    hw = catalog.lookup(torch.cuda.get_device_name() if args.device == "cuda" else "cpu")
    result = {"device": args.device, "hardware": hw.as_dict(), "torch": torch.__version__, "ctx": args.ctx,
              "dtype": str(dtype), "rates": device_rates(args.device, dtype), "points": [],
              "gpu_compared": not_compared is None, "not_compared_why": not_compared}
    print(f"{hw.label}: catalog {hw.bandwidth_gbs:g} GB/s, {hw.bf16_tflops:g} TFLOP/s; measured "
          f"{result['rates']['copy_gbs_read_plus_write']:.0f} GB/s copy, {result['rates']['matmul_tflops']:.1f} TFLOP/s matmul")
    sol = Factors.speed_of_light()
    for spec in names:
        name, _, layers = spec.partition(":")
        mid, cfg = models.find_config(name)
        if layers:
            cfg = dict(cfg, num_hidden_layers=int(layers))
        shape = models.shape(cfg, mid + (f" ({layers} layers)" if layers else ""),
                             dtype="bfloat16" if args.device == "cuda" else "float32")
        for b in batches:
            need = shape.weight_bytes() + b * (args.ctx + 1) * shape.kv_bytes_per_token()
            if args.device == "cuda" and need > 0.85 * torch.cuda.mem_get_info()[0]:
                print(f"skip {shape.name} batch {b}: needs {need / 2**30:.0f} GiB")
                continue
            m = Model(shape, args.device, dtype, b, args.ctx)
            with torch.inference_mode():
                eager = timed(m.step, args.device, args.steps)
                graph = None
                if args.device == "cuda":
                    torch.cuda.synchronize()
                    s = torch.cuda.Stream()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        m.step()
                    torch.cuda.current_stream().wait_stream(s)
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g):
                        m.step()
                    graph = timed(g.replay, args.device, args.steps)
            floor = decode_step(Deployment(shape, hw), b, args.ctx, sol)
            est = decode_step(Deployment(shape, hw), b, args.ctx, Factors(step_ms=0.0))
            best = graph or eager
            p = {"model": shape.name, "params": shape.params, "batch": b, "ctx": args.ctx, "eager_ms": eager,
                 "graph_ms": graph, "floor_ms": floor["s"] * 1e3, "bound": floor["bound"],
                 "efficiency": floor["s"] * 1e3 / best, "estimate_default_ms": est["s"] * 1e3,
                 "estimate_error": est["s"] * 1e3 / best - 1, **judge(shape, hw, b, args.ctx, best)}
            result["points"].append(p)
            print(f"{shape.name:40s} b={b:4d} eager {eager:8.3f} ms  graph {graph or float('nan'):8.3f} ms  "
                  f"floor {p['floor_ms']:8.3f} ms ({p['bound']})  efficiency {p['efficiency']:.2f}  "
                  f"estimate {p['estimate_ms']:.3f} ms ({p['estimate_vs_measured']:+.0%}, "
                  f"{'inside' if p['inside_band'] else 'OUTSIDE'} its band)")
            del m
            if args.device == "cuda":
                torch.cuda.empty_cache()
    effs = sorted(p["efficiency"] for p in result["points"] if p["bound"] == "memory")
    result["median_memory_efficiency"] = effs[len(effs) // 2] if effs else None
    result["summary"] = summarize(result["points"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_estimate_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"median efficiency of memory-bound points: {result['median_memory_efficiency']}")
    sm = result["summary"]
    print(f"estimate vs measured: median |error| {sm['median_abs_estimate_error']}, {sm['inside_band']}/{sm['points']} "
          f"points inside the band" + ("" if not_compared is None else " (CPU only: no GPU compared)"))
    print(out / "device_estimate_check.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
