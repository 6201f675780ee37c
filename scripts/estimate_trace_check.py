#!/usr/bin/env python
"""Check `servebench estimate --trace` against the same traces replayed on this host's vLLM CPU.

    servebench launch vllm -m tiny --port 18900 --max-total-tokens 2048 &   # tiny's whole context
    PYTHONPATH=. python scripts/estimate_trace_check.py --endpoint http://127.0.0.1:18900 \
        --out results/estimate-trace [--write]
    PYTHONPATH=. python scripts/estimate_trace_check.py --runs results/estimate-trace   # re-check
    # the prefix cache under eviction: `small` (6 KiB of KV a token) in vLLM CPU's smallest pool
    VLLM_CPU_KVCACHE_SPACE=1 servebench launch vllm -m small --port 18901 --max-total-tokens 2048 &
    PYTHONPATH=. python scripts/estimate_trace_check.py --evict --endpoint http://127.0.0.1:18901 \
        --out results/estimate-trace-evict [--write]

Measured, each with its own seed (the server's prefix cache would otherwise serve one run's
prompts to the next): the four calibration loads of scripts/estimate_cpu_check.py (1, 4 and 16
users and a burst, 128 -> 32 tokens), two more at 1 and 4 users with 1,024-token prompts (the
traces' prompts run to the context), then each trace of TRACES replayed by `servebench run
--trace`. Predicted: `servebench estimate --model tiny --gpu cpu --calibrate RUN... --trace ...`
with the same trace options, as a user runs it (the CLI, in a subprocess), calibrated on the
four short runs, then on all six. Compared: the replay's mean, median and p99 TTFT, mean TPOT,
and the prefix cache's hit rate (vLLM's prefix_cache_hits / queries over the run, from
/metrics). --write puts the tables into docs/estimate.md between the estimate-trace-check markers.

--evict: model `small`, the whole mooncake trace (918 requests, lengths x0.25, as recorded), and
the estimate's KV pool set to the server's 1 GiB (VLLM_CPU_KVCACHE_SPACE; --mem-fraction chosen
so the capacity model leaves exactly that): its distinct prompt blocks are six times the pool,
so the cache evicts; markers estimate-trace-evict.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from docblock import write_block  # noqa: E402
from estimate_cpu_check import host_line, measure, run_dirs  # noqa: E402

START, END = "<!-- estimate-trace-check:start -->", "<!-- estimate-trace-check:end -->"
# (name, trace options shared by `run` and `estimate`): short windows, lengths scaled so that
# tiny's 2,048-token context holds most prompts; mooncake's 512-token blocks become 128, vLLM
# CPU's KV block, so a hit is whole blocks on both sides
TRACES = (("azure", ["--trace", "azure-conv-2023", "--trace-window", "0:40", "--trace-scale-lengths", "0.25"]),
          ("mooncake", ["--trace", "mooncake-conversation", "--trace-window", "0:120", "--trace-scale-lengths", "0.25",
                        "--trace-speed", "2"]))
# --evict: the whole trace at its own speed, so reuse spans minutes and the pool must evict
EVICT = (("mooncake-full", ["--trace", "mooncake-conversation", "--trace-scale-lengths", "0.25"]),)
METRICS = (("TTFT mean", "ttft_ms", "mean", "ttft_ms"), ("TTFT p50", "ttft_ms", "p50", "ttft_ms_p50"),
           ("TTFT p99", "ttft_ms", "p99", "ttft_ms_p99"), ("TPOT mean", "tpot_ms", "mean", "tpot_ms"))


LONG = (("c1-long", 1), ("c4-long", 4))  # 1,024 -> 32 tokens, 32 requests each


def measure_long(endpoint: str, out: Path, model: str, seed: int) -> list[Path]:
    dirs = []
    for i, (name, users) in enumerate(LONG):
        cmd = [sys.executable, "-m", "servebench.cli", "run", "--backend", "vllm", "--model", model, "--endpoint", endpoint,
               "--requests", "32", "--input-tokens", "1024", "--output-tokens", "32", "--concurrency", str(users),
               "--warmup", "2", "--results-dir", str(out), "--name", name, "--no-plots", "--seed", str(seed + i)]
        if subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"error: `{' '.join(cmd[2:])}` failed")
        dirs.append(max(out.glob(f"*-{name}"), key=lambda p: p.stat().st_mtime))
    return dirs


def replay(endpoint: str, out: Path, model: str, seed: int, traces=TRACES) -> list[Path]:
    dirs = []
    for i, (name, opts) in enumerate(traces):
        cmd = [sys.executable, "-m", "servebench.cli", "run", "--backend", "vllm", "--model", model, "--endpoint", endpoint,
               "--warmup", "2", "--results-dir", str(out), "--name", name, "--no-plots", "--seed", str(seed + i), *opts]
        if subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"error: `{' '.join(cmd[2:])}` failed")
        dirs.append(max(out.glob(f"*-{name}"), key=lambda p: p.stat().st_mtime))
    return dirs


def predict(model: str, calib: list[Path], opts: list[str]) -> dict:
    cmd = [sys.executable, "-m", "servebench.cli", "estimate", "--model", model, "--gpu", "cpu", "--engine", "vllm",
           "--json", *[x for d in calib for x in ("--calibrate", str(d))], *opts]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"error: `{' '.join(cmd[2:])}` failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout)


def idle_arrivals(run: Path) -> str | None:
    """From the replay's raw records: how many requests arrived with none in flight, and their
    median TTFT (an idle engine's wake-up shows there; closed-loop calibration runs never idle)."""
    f = run / "requests.parquet"
    if not f.is_file():
        return None
    import pandas as pd

    df = pd.read_parquet(f, columns=["warmup", "input_tokens", "sent_ns", "end_ns", "token_ns"])
    df = df[~df["warmup"]]
    ttft = [(t[0] - s) / 1e6 for t, s in zip(df["token_ns"], df["sent_ns"])]
    sent, end = df["sent_ns"].to_numpy(), df["end_ns"].to_numpy()
    idle = [i for i in range(len(df)) if not ((sent < sent[i]) & (end > sent[i])).any()]
    if not idle:
        return f"{run.name.split('-', 2)[-1]}: no request arrived to an idle server"
    med = sorted(ttft[i] for i in idle)[len(idle) // 2]
    toks = sorted(int(df["input_tokens"].iloc[i]) for i in idle)[len(idle) // 2]
    return (f"{run.name.split('-', 2)[-1]}: {len(idle)} of {len(df)} requests arrived with none in flight; "
            f"their median TTFT {med:.2f} ms (median prompt {toks} tokens)")


def pool_fraction(model: str, kv_gib: float) -> float:
    """The --mem-fraction whose KV pool (roofline.capacity on this host) is kv_gib, as a vLLM CPU
    server given VLLM_CPU_KVCACHE_SPACE=kv_gib has."""
    from servebench.estimate import catalog, models
    from servebench.estimate.roofline import Deployment

    hw, m = catalog.lookup("cpu"), models.load(model)
    return (kv_gib * 2**30 + m.weight_bytes() + Deployment(m, hw).reserve_gib * 2**30) / hw.memory_bytes


def compare(model: str, calib: list[Path], traced: list[Path], traces=TRACES, extra: tuple = ()) -> list[str]:
    lines = ["| trace (requests) | figure | measured | estimate | error | inside the band |", "|---|---|---|---|---|---|"]
    est = None
    for (name, opts), run in zip(traces, traced):
        s = json.loads((run / "summary.json").read_text())
        est = predict(model, calib, [*opts, *extra])
        lvl, (lo, hi) = est["levels"][0], (math.exp(-est["sigma_log"]), math.exp(est["sigma_log"]))
        label = f"{name} ({s['completed']})"
        for what, key, stat, ekey in METRICS:
            m, e = s[key][stat], lvl[ekey]
            lines.append(f"| {label} | {what} ms | {m:.2f} | {e:.2f} | {e / m - 1:+.0%} | "
                         f"{'yes' if e * lo <= m <= e * hi else 'no'} |")
        hit = ((s.get("telemetry") or {}).get("server_metrics") or {}).get("prefix_cache_hit_rate")
        if "prefix_hit_rate" in lvl or hit is not None:
            est_hit = lvl.get("prefix_hit_rate")
            lines.append(f"| {label} | prefix hit rate | {'-' if hit is None else f'{hit:.1%}'} | "
                         f"{'-' if est_hit is None else f'{est_hit:.1%}'} | | |")
    band = f"x{math.exp(-est['sigma_log']):.2f}-x{math.exp(est['sigma_log']):.2f}"
    return [f"Calibrated on {len(calib)} fixed-length runs ({', '.join(d.name.split('-', 2)[-1] for d in calib)}); "
            f"band {band}:", "", *lines]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--endpoint", help="measure against this vLLM CPU server (127.0.0.1)")
    g.add_argument("--runs", type=Path, help="a directory of the runs measured before")
    ap.add_argument("--out", type=Path, default=Path("results/estimate-trace"))
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--seed", type=int, default=501, help="first run's seed (+1 per run)")
    ap.add_argument("--write", action="store_true", help="update docs/estimate.md")
    ap.add_argument("--evict", action="store_true", help="the eviction set: `small`, 1 GiB of KV, the whole mooncake trace")
    a = ap.parse_args()
    traces, extra, start, end = TRACES, (), START, END
    if a.evict:
        a.model = "small" if a.model == "tiny" else a.model
        traces, extra = EVICT, ("--mem-fraction", f"{pool_fraction(a.model, 1):.6f}")
        start, end = (x.replace("trace-check", "trace-evict") for x in (START, END))
    if a.endpoint:
        if not a.endpoint.startswith(("http://127.0.0.1", "http://localhost")):
            print("error: --endpoint must be a server on this host (127.0.0.1)", file=sys.stderr)
            return 2
        short = measure(a.endpoint, a.out, 64, 128, 32, a.model, a.seed)
        long = measure_long(a.endpoint, a.out, a.model, a.seed + 5)
        traced = replay(a.endpoint, a.out, a.model, a.seed + 10, traces)
    else:
        found = run_dirs([a.runs])
        pick = lambda n: max((d for d in found if d.name.endswith(f"-{n}")), key=lambda p: p.name)  # noqa: E731
        traced = [pick(n) for n, _ in traces]
        long = [pick(n) for n, _ in LONG]
        short = [d for d in found if d not in traced and d not in long]
    runs = json.loads((traced[0] / "run.json").read_text())
    text = "\n".join([f"Runs: `servebench run --backend vllm --model {a.model}` against one vLLM CPU server "
                      f"(vLLM {(runs.get('engine') or {}).get('version') or '?'}) on {host_line()}.", "",
                      *compare(a.model, short, traced, traces, extra), "",
                      *compare(a.model, short + long, traced, traces, extra), "",
                      *[f"- {x}" for x in map(idle_arrivals, traced) if x]])
    print(text)
    if a.write:
        write_block(ROOT / "docs/estimate.md", start, end, text, "Trace replays on this host against the estimate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
