#!/usr/bin/env python
"""How long the simulated scheduler takes for 1,000 requests, and for a shipped trace replayed
with vLLM's prefix cache and chunked prefill (a benchmark, not a test).

    PYTHONPATH=. python scripts/estimate_sim_bench.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servebench.estimate import catalog, models  # noqa: E402
from servebench.estimate.roofline import Deployment, Factors  # noqa: E402
from servebench.estimate import trace  # noqa: E402
from servebench.estimate.sim import Load, simulate  # noqa: E402


def main() -> int:
    d = Deployment(models.load("llama-2-7b"), catalog.lookup("a10g"), 1)
    vllm = Deployment(d.model, d.hw, 1, admit="prompt")  # admits on the prompt, preempts when the pool fills
    # `estimate --trace mooncake-conversation` on 4x H100 with Llama-3.1-8B, as in docs/estimate.md
    h100 = Deployment(models.load("llama-3-8b"), catalog.lookup("h100-sxm"), 4, admit="prompt", prefix_cache=True)
    moon = trace.read("mooncake-conversation")
    chunk = trace.prefill_chunk("vllm", h100.hw)
    for name, dep, load in (("closed, 1 user (50,000 steps)", d, Load("closed", 1, requests=1000, n_in=256, n_out=50)),
                            ("closed, 32 users", d, Load("closed", 32, requests=1000, n_in=256, n_out=50)),
                            ("rate 10/s", d, Load("rate", rate=10.0, requests=1000, n_in=256, n_out=50)),
                            ("burst of 1000", d, Load("burst", requests=1000, n_in=512, n_out=128)),
                            ("burst of 1000, preempting", vllm, Load("burst", requests=1000, n_in=512, n_out=128))):
        t = time.perf_counter()
        r = simulate(dep, Factors(), load)
        print(f"{name:32s} {(time.perf_counter() - t) * 1e3:7.1f} ms   {r['output_tok_s']:8.1f} tok/s"
              f"   {r['preemptions']:5d} preempted")
    for name, dep, load, ch in (("mooncake trace (918), x1", h100, trace.load_at(moon, 1.0), chunk),
                                ("mooncake trace (918), x2", h100, trace.load_at(moon, 2.0), chunk)):
        t = time.perf_counter()
        r = simulate(dep, Factors(), load, chunk=ch)
        print(f"{name:32s} {(time.perf_counter() - t) * 1e3:7.1f} ms   {r['output_tok_s']:8.1f} tok/s"
              f"   {r['preemptions']:5d} preempted   {r['prefix_hit_rate']:.1%} prefix hits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
