"""This host's CPU as 'hardware': memory bandwidth and matmul rate, measured once and cached.

Why measure: a CPU datasheet gives channel bandwidth, not what a server process on a shared
VM sees. The copy benchmark runs one thread per core over buffers far larger than any cache
(numpy releases the GIL while copying), counts bytes read + written, and keeps the best of
several repeats (the least disturbed by neighbours). The matmul rate is the best achieved
FLOP/s of a square GEMM in the dtype the engine computes in: an achieved peak, not a
datasheet one, so efficiencies on a CPU are relative to what this host can do at all.
"""

from __future__ import annotations

import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from servebench.estimate.hardware import Hardware
from servebench.engines.hostcpu import cpu_model

CACHE_VERSION = 3


def cache_path() -> Path:
    base = os.environ.get("SERVEBENCH_HOME") or Path.home() / ".cache" / "servebench"
    return Path(base).expanduser() / "host_hardware.json"




def host_key() -> str:
    return f"{cpu_model()}|{os.cpu_count()}|{platform.node()}"


def measure_copy_gbs(mib: int = 256, repeats: int = 10, threads: int | None = None) -> float:
    """Best read+write copy bandwidth in GB/s with one thread per core."""
    import numpy as np

    threads = threads or os.cpu_count() or 1
    n = mib * 2**20 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)
    chunks = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def part(ab):
        a, b = ab
        np.copyto(dst[a:b], src[a:b])

    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(part, chunks))  # touch pages first
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(part, chunks))
            dt = time.perf_counter() - t
            best = max(best, 2 * src.nbytes / dt / 1e9)
    return best


def measure_matmul_gflops(tokens: int = 256, dim: int = 1024, repeats: int = 10,
                          dtype: str = "float32") -> tuple[float, str]:
    """Best achieved FLOP/s (GFLOP/s) of a linear layer (tokens x dim @ dim x dim), the shape
    of an engine's projections, and what ran it: torch when importable (what the engines
    use), else numpy (float32 only)."""
    try:
        import torch

        dt = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
        x, w = torch.randn(tokens, dim, dtype=dt), torch.randn(dim, dim, dtype=dt)
        mm, how = (lambda: torch.nn.functional.linear(x, w)), f"torch linear {dtype} {tokens}x{dim}x{dim}"
    except ImportError:
        if dtype != "float32":
            raise
        import numpy as np

        x = np.random.default_rng(0).standard_normal((tokens, dim), dtype=np.float32)
        w = np.random.default_rng(1).standard_normal((dim, dim), dtype=np.float32)
        mm, how = (lambda: x @ w), f"numpy float32 {tokens}x{dim}x{dim}"
    mm()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        mm()
        best = max(best, 2 * tokens * dim * dim / (time.perf_counter() - t) / 1e9)
    return best, how


def measure() -> dict:
    bw = measure_copy_gbs()
    fp32, how32 = measure_matmul_gflops(dtype="float32")
    try:
        bf16, how16 = measure_matmul_gflops(dtype="bfloat16")
    except Exception:  # no torch: bf16 is not an option numpy has
        bf16, how16 = fp32, how32
    return {"version": CACHE_VERSION, "host": host_key(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "bandwidth_gbs": bw, "fp32_gflops": fp32, "bf16_gflops": bf16,
            "how": {"bandwidth": "numpy copy, read+write, one thread per core, best of 10, 256 MiB",
                    "fp32": how32, "bf16": how16}}


def host_facts(refresh: bool = False) -> dict:
    """Cached measurement for this host; measured (a few seconds) when missing or stale."""
    path = cache_path()
    if not refresh and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("version") == CACHE_VERSION and data.get("host") == host_key():
                return data
        except (OSError, ValueError):
            pass
    data = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return data


def host_hardware(refresh: bool = False) -> Hardware:
    f = host_facts(refresh)
    import psutil

    mem = psutil.virtual_memory().total / 2**30
    # The floor takes the fastest rate this host reached in either dtype: without AVX512-BF16
    # or AMX, torch's bf16 GEMM is far slower than fp32, yet an engine may upcast (vLLM CPU's
    # bf16 tiny-model prefill ran faster than our bf16 GEMM), so the slower rate is no floor.
    bf16 = fp32 = max(f["bf16_gflops"], f["fp32_gflops"]) / 1e3
    return Hardware(key="cpu", label=f"CPU {f['host'].split('|')[0]} x{os.cpu_count()}", arch="cpu",
                    memory_gib=mem, bandwidth_gbs=f["bandwidth_gbs"], bf16_tflops=bf16, fp16_tflops=bf16, fp32_tflops=fp32,
                    interconnect="none", link_gbs=0.0, alpha_us=0.0,
                    source=f"measured on this host {f['measured_at']} ({cache_path()})", measured=f)
