#!/usr/bin/env python3
"""Client RSS over a long run and CPU per token, side by side for two servebench trees.

    .venv/bin/python scripts/bench_memory.py --variant main=/path/to/main --variant branch=. --minutes 5
    .venv/bin/python scripts/bench_memory.py --variant branch=. --minutes 1 --streams 10   # smoke test
    ... --write-docs        # replace this script's block in docs/performance.md
    # one tree, the spool on and off, alternating, 3 rounds of 60 s each (CPU per token side by side):
    .venv/bin/python scripts/bench_memory.py --variant spool=. --variant memory=. --minutes 1 --settle-s 10 \
        --env spool=SERVEBENCH_SPOOL_MIN_TOKENS=0 --env memory=SERVEBENCH_SPOOL_MIN_TOKENS=1000000000000 --rounds 3

One `servebench emulate` (no token log: it would grow by the run's length) serves every
variant, one after the other, with the same command: `servebench run --duration S
--concurrency C` (closed loop, no warm-up beyond the default, --no-telemetry --no-plots), each
tree's own code (PYTHONPATH=tree, cwd=tree). The client is a child process; its RSS
(psutil, every --sample-s) is logged from start to exit. The load starts when the child holds C
connections to the emulator; "after warm-up" is the RSS --settle-s later; the slope is a
least-squares line through the samples from then to the load's end (when the connections
drop). CPU per token is the run's own `client.cpu_us_per_token` (process CPU over the load
window / streamed tokens), and the child's user+sys over the load window / the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
HEADING = "## Memory over long runs"
BEGIN, END = "<!-- memory:begin -->", "<!-- memory:end -->"
MB = 1024 * 1024


def start_emulator(python: str, port: int, itl_ms: float, ttft_ms: float) -> subprocess.Popen:
    p = subprocess.Popen([python, "-m", "servebench.cli", "emulate", "--port", str(port), "--itl-ms", str(itl_ms),
                          "--ttft-ms", str(ttft_ms)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(c.laddr and c.laddr.port == port and c.status == "LISTEN" for c in psutil.Process(p.pid).net_connections()):
            return p
        time.sleep(0.2)
    p.kill()
    raise SystemExit(f"error: the emulator did not listen on {port}")


def conns_to(proc: psutil.Process, port: int) -> int:
    try:
        return sum(1 for c in proc.net_connections() if c.raddr and c.raddr.port == port and c.status == "ESTABLISHED")
    except psutil.Error:
        return 0


def one(python: str, tree: Path, args, port: int, env: dict[str, str] | None = None) -> dict:
    results = Path(tempfile.mkdtemp(prefix="servebench-mem-"))
    cmd = [python, "-m", "servebench.cli", "run", "--endpoint", f"http://127.0.0.1:{port}", "--model", "tiny",
           "--requests", str(args.requests), "--duration", str(args.minutes * 60), "--concurrency", str(args.streams),
           "--input-tokens", "16", "--output-tokens", str(args.output_tokens), "--results-dir", str(results),
           "--no-telemetry", "--no-plots"]
    t0 = time.monotonic()
    child = subprocess.Popen(cmd, cwd=tree, env={**os.environ, **(env or {}), "PYTHONPATH": str(tree)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = psutil.Process(child.pid)
    samples, load_start, load_end = [], None, None  # (s since start, rss MB, cpu s)
    while child.poll() is None:
        try:
            rss, cpu = proc.memory_info().rss / MB, sum(proc.cpu_times()[:2])
        except psutil.Error:
            break
        now = time.monotonic() - t0
        samples.append((now, rss, cpu))
        held = conns_to(proc, port)
        if load_start is None and held >= args.streams:
            load_start = now
        elif load_start is not None and load_end is None and held == 0 and now > load_start + 5:
            load_end = now
        time.sleep(args.sample_s)
    err = child.stderr.read().decode(errors="replace")
    run_dir = next(results.iterdir(), None)
    summary = json.loads((run_dir / "summary.json").read_text()) if run_dir and (run_dir / "summary.json").exists() else {}
    if not summary or load_start is None:
        raise SystemExit(f"error: no summary from {tree}: {err.strip().splitlines()[-1:] or 'no output'}")
    return figures(samples, load_start, load_end or samples[-1][0], summary, args.settle_s)


def figures(samples: list, start: float, end: float, summary: dict, settle_s: float) -> dict:
    window = [s for s in samples if start + settle_s <= s[0] <= end]
    xs, ys = [s[0] for s in window], [s[1] for s in window]
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
    in_load = [s for s in samples if start <= s[0] <= end]
    tokens = summary["output_tokens"]["streamed_total"]
    cpu_load = in_load[-1][2] - in_load[0][2]
    return {
        "load_s": round(end - start, 1), "tokens": tokens, "tok_s": round(tokens / summary["duration_s"]),
        "completed": summary["completed"], "kept_up": summary["client"].get("kept_up"),
        "read_lag_max_ms": (summary.get("read_lag_ms") or {}).get("max"),
        "rss_settled_mb": round(window[0][1]), "rss_end_mb": round(window[-1][1]),
        "rss_max_load_mb": round(max(s[1] for s in in_load)), "rss_peak_mb": round(max(s[1] for s in samples)),
        "slope_mb_min": round(slope * 60, 2), "samples": n,
        "cpu_us_tok_run": round(summary["client"]["cpu_us_per_token"], 1),
        "cpu_us_tok_ps": round(cpu_load * 1e6 / tokens, 1),
        "trace": [(round(t, 1), round(r)) for t, r, _ in samples[:: max(1, len(samples) // 40)]],
    }


def table(rows: dict, args, cpu: str) -> str:
    head = ("| tree | load s | tokens streamed | tok/s | kept up | RSS after warm-up (MB) | RSS at load end (MB) "
            "| slope (MB/min) | max RSS in load / whole run (MB) | CPU µs/token (run's figure / psutil) |\n"
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    lines = [head] + [
        f"| {k} | {r['load_s']} | {r['tokens']:,} | {r['tok_s']:,} | {r['kept_up']} | {r['rss_settled_mb']} | "
        f"{r['rss_end_mb']} | {r['slope_mb_min']} | {r['rss_max_load_mb']} / {r['rss_peak_mb']} | "
        f"{r['cpu_us_tok_run']} / {r['cpu_us_tok_ps']} |" for k, r in rows.items()]
    note = (f"{time.strftime('%Y-%m-%d')}, {cpu} ({os.cpu_count()} CPUs, {platform.machine()}), shared and busy "
            f"(other engineers' jobs ran beside it). Closed loop, {args.streams} streams, 16 → {args.output_tokens} "
            f"tokens, emulator TTFT {args.ttft_ms} ms ITL {args.itl_ms} ms, --duration {args.minutes * 60:g} s; "
            f"RSS sampled every {args.sample_s} s, \"after warm-up\" = {args.settle_s} s after the load held every "
            f"stream; the trees ran one after the other. Command: `{' '.join(sys.argv)}`")
    return note + "\n\n" + "\n".join(lines)


def med(xs: list[float]) -> float:
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def spread(rows: dict, variants: dict) -> str:
    """Per variant over its rounds: CPU µs/token (the run's figure, then psutil's) min / median / max."""
    lines = ["| variant | rounds | tok/s (median) | CPU µs/token, run's figure: min / median / max "
             "| psutil: min / median / max |", "|---|---:|---:|---:|---:|"]
    for name in variants:
        rs = [r for k, r in rows.items() if k.split("#")[0] == name]
        run, ps, tok = (sorted(r[f] for r in rs) for f in ("cpu_us_tok_run", "cpu_us_tok_ps", "tok_s"))
        lines.append(f"| {name} | {len(rs)} | {med(tok):,.0f} | {run[0]} / {med(run):.1f} / {run[-1]} "
                     f"| {ps[0]} / {med(ps):.1f} / {ps[-1]} |")
    return "\n".join(lines)


def write_docs(body: str) -> None:
    """Replace only this script's block (others own the rest of the file)."""
    text = DOC.read_text()
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + f"\n\n{HEADING}\n\n{block}\n"
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", default=[], help="NAME=TREE (repeatable; default branch=.)")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, help="records made before the run (default: 1.3 x what --duration can send)")
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--sample-s", type=float, default=1.0)
    ap.add_argument("--settle-s", type=float, default=30.0)
    ap.add_argument("--env", action="append", default=[], help="NAME=VAR=VALUE: set VAR for variant NAME's runs")
    ap.add_argument("--rounds", type=int, default=1, help="run the variants this many times, alternating")
    ap.add_argument("--port", type=int, default=18700)
    ap.add_argument("--json", type=Path, help="write every figure and the RSS trace here")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    per_request_s = (args.ttft_ms + args.itl_ms * args.output_tokens) / 1000
    args.requests = args.requests or int(args.streams / per_request_s * args.minutes * 60 * 1.3) + args.streams
    variants = dict(v.split("=", 1) for v in args.variant) if args.variant else {"branch": "."}
    envs: dict[str, dict[str, str]] = {}
    for e in args.env:
        name, var, value = (e.split("=", 2) + ["", ""])[:3]
        if name not in variants or not var or "=" not in e.partition("=")[2]:
            raise SystemExit(f"error: --env {e}: expected NAME=VAR=VALUE with NAME one of {', '.join(variants)}")
        envs.setdefault(name, {})[var] = value
    if args.rounds < 1:
        raise SystemExit("error: --rounds must be 1 or more")
    emu = start_emulator(sys.executable, args.port, args.itl_ms, args.ttft_ms)
    rows = {}
    try:
        for k in range(args.rounds):
            for name, tree in variants.items():
                key = f"{name}#{k + 1}" if args.rounds > 1 else name
                rows[key] = one(sys.executable, Path(tree).resolve(), args, args.port, envs.get(name))
                print(key, json.dumps({k: v for k, v in rows[key].items() if k != "trace"}), flush=True)
    finally:
        emu.terminate()
        emu.wait(10)
    cpu = next((re.sub(r"\s+", " ", line.split(":", 1)[1]).strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    text = table(rows, args, cpu)
    if envs:
        text += "\n\nEnvironment per variant: " + "; ".join(
            f"{n}: {' '.join(f'{k}={v}' for k, v in e.items())}" for n, e in envs.items())
    if args.rounds > 1:
        text += "\n\n" + spread(rows, variants)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
