#!/usr/bin/env python3
"""Imported vs servebench's own measurement of one load (docs/decide.md): each other tool and
`servebench run` in turn, the same load, N rounds; each tool's file through `servebench import`.

    python3 scripts/import_agreement.py --tools guidellm,aiperf,vllm-bench --rounds 3
    python3 scripts/import_agreement.py --endpoint http://127.0.0.1:18300 --model tiny   # a server that is up

Without --endpoint every run gets a fresh `servebench emulate` (fixed TTFT and ITL) with its own
log, so each run's figures can also be read from the server's side: the emulator's write stamps
of the same requests (`emulator` rows). The emulator is pinned to --server-cpu and every client
to --client-cpu (taskset), so that no client's CPU use slows the server. Tools are found through
GUIDELLM, AIPERF (executables) and VLLM_PYTHON (a Python with vllm) in the environment.

Writes OUT/results.json (every run's figures) and prints the markdown tables of docs/decide.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from servebench.analysis.intervals import overlap, repeats_ci  # noqa: E402

FIGS = ("output_token_throughput", "ttft_ms.p50", "tpot_ms.p50", "itl_ms.p50", "e2e_ms.p50", "ms_per_token.p50")
HEAD = ("tok/s", "TTFT p50", "TPOT p50", "ITL p50", "e2e p50", "ms/token p50")
MEANS = ("ttft_ms.mean", "tpot_ms.mean", "e2e_ms.mean")
# vLLM's own histograms of the same quantities (seconds): its view of each run, as the emulator log
VLLM_HIST = {"ttft_ms.mean": "vllm:time_to_first_token_seconds", "tpot_ms.mean": "vllm:inter_token_latency_seconds",
             "e2e_ms.mean": "vllm:e2e_request_latency_seconds"}
VLLM_BENCH = ("import argparse,sys; from vllm.benchmarks.serve import add_cli_args, main; "
              "p=argparse.ArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


def sb_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu else argv


def start_emulator(a, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "servebench.cli", "emulate", "--format", "openai", "--ttft-ms", str(a.ttft_ms),
            "--itl-ms", str(a.itl_ms), "--port", str(a.port), "--model", a.model, "--tokenizer", a.tokenizer,
            "--log", str(log)]
    p = subprocess.Popen(pinned(a.server_cpu, argv), stdout=subprocess.PIPE, text=True, env=sb_env())
    if not p.stdout.readline():  # the ready line: it listens
        raise SystemExit(f"error: the emulator did not start (exit {p.wait()})")
    return p


def tool_argv(a, tool: str, out: Path) -> tuple[list[str], dict]:
    """The command each tool ran, as tests/fixtures/imports/README.md records it."""
    n, c, i, o, url = str(a.requests), str(a.concurrency), str(a.input_tokens), str(a.output_tokens), a.url
    if tool == "guidellm":
        return [os.environ.get("GUIDELLM", "guidellm"), "run",
                "--backend", f"kind=openai_http,target={url},model={a.model},request_format=/v1/completions",
                "--profile", f"kind=concurrent,streams={c}", "--constraint", f"kind=max_requests,count={n}",
                "--data", f"kind=synthetic_text,prompt_tokens={i},output_tokens={o}",
                "--tokenizer", f"kind=huggingface_auto,model={a.tokenizer}", "--seed", "kind=static,value=0",
                "--output", f"kind=json,path={out / 'guidellm.json'}", "--disable-console-interactive"], \
            {"HF_HUB_OFFLINE": "1"}
    if tool == "aiperf":  # with HF_HUB_OFFLINE=1 AIPerf 0.13 takes a local tokenizer folder for a hub id
        return [os.environ.get("AIPERF", "aiperf"), "profile", "--model", a.model, "--url", url,
                "--endpoint-type", "completions", "--streaming", "--tokenizer", a.tokenizer,
                "--use-server-token-count", "--concurrency", c, "--request-count", n, "--isl", i, "--isl-stddev", "0",
                "--osl", o, "--osl-stddev", "0", "--extra-inputs", "ignore_eos:true", "--random-seed", "0",
                "--ui-type", "simple", "--output-artifact-dir", str(out)], {}
    if tool == "vllm-bench":
        return [os.environ.get("VLLM_PYTHON", sys.executable), "-c", VLLM_BENCH, "--backend", "openai",
                "--base-url", url, "--endpoint", "/v1/completions", "--model", a.model, "--served-model-name", a.model,
                "--tokenizer", a.tokenizer, "--dataset-name", "random", "--random-input-len", i, "--random-output-len", o,
                "--ignore-eos", "--num-prompts", n, "--max-concurrency", c, "--request-rate", "inf", "--seed", "0",
                "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,95,99", "--save-result",
                "--save-detailed", "--result-dir", str(out), "--result-filename", "vllm-bench.json"], {"HF_HUB_OFFLINE": "1"}
    backend = "openai" if a.emulated else "vllm"
    return [sys.executable, "-m", "servebench.cli", "run", "--backend", backend, "--endpoint", url, "--model", a.model,
            "--tokenizer", a.tokenizer, "--requests", n, "--concurrency", c, "--input-tokens", i, "--output-tokens", o,
            "--warmup", "0", "--results-dir", str(out), *a.servebench_args.split()], {}


RESULT = {"guidellm": "guidellm.json", "aiperf": "profile_export_aiperf.json", "vllm-bench": "vllm-bench.json"}


def run_client(a, tool: str, out: Path) -> Path:
    """Run one client; the run directory its figures are in (a tool's file imported)."""
    out.mkdir(parents=True)
    argv, env = tool_argv(a, tool, out)
    p = subprocess.run(pinned(a.client_cpu, argv), capture_output=True, text=True, env={**sb_env(), **env},
                       timeout=a.timeout_s)
    (out / "client.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        raise SystemExit(f"error: {tool} exited {p.returncode}: see {out / 'client.log'}")
    if tool == "servebench":
        return Path(p.stdout.strip().splitlines()[-1])
    imp = subprocess.run([sys.executable, "-m", "servebench.cli", "import", str(out / RESULT[tool]), "--from",
                          "vllm-bench" if tool == "vllm-bench" else tool, "-o", str(out / "imported")],
                         capture_output=True, text=True, env=sb_env())
    if imp.returncode != 0:
        raise SystemExit(f"error: importing {tool}'s file: {imp.stderr.strip()}")
    return Path(imp.stdout.strip().splitlines()[-1])


def figures(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    out = {"output_token_throughput": s.get("output_token_throughput")}
    for f in FIGS[1:] + MEANS:
        m, st = f.split(".")
        out[f] = (s.get(m) or {}).get(st)
    ivs = (s.get("intervals") or {}).get("figures") or {}
    return {"figures": out, "intervals": {f: ivs.get(f) for f in FIGS if ivs.get(f)}}


def emulator_figures(log: Path, a) -> dict:
    """The same figures from the server's side: arrival (kernel receive stamp) and write stamps of
    the requests that asked for the load's output length (a tool's own probe requests left out)."""
    recs = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("kind") == "request"
            and r.get("max_tokens") == a.output_tokens and r.get("outcome") == "ok"]
    ttft = [(r["token_ns"][0] - r["arrival_ns"]) / 1e6 for r in recs]
    gaps = [(y - x) / 1e6 for r in recs for x, y in zip(r["token_ns"], r["token_ns"][1:])]
    tpot = [(r["token_ns"][-1] - r["token_ns"][0]) / 1e6 / (len(r["token_ns"]) - 1) for r in recs]
    e2e = [(r["end_ns"] - r["arrival_ns"]) / 1e6 for r in recs]
    span = (max(r["end_ns"] for r in recs) - min(r["arrival_ns"] for r in recs)) / 1e9
    med = lambda v: float(np.percentile(v, 50))  # noqa: E731 (numpy's linear percentile, as servebench's)
    return {"figures": {"output_token_throughput": sum(len(r["token_ns"]) for r in recs) / span,
                        "ttft_ms.p50": med(ttft), "itl_ms.p50": med(gaps), "tpot_ms.p50": med(tpot),
                        "e2e_ms.p50": med(e2e), "ms_per_token.p50": med([e / a.output_tokens for e in e2e])},
            "requests": len(recs)}


def scrape(url: str) -> dict[str, float]:
    """Every sample of a Prometheus text page summed over its labels."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            key = name.split("{")[0]
            out[key] = out.get(key, 0.0) + float(value)
    return out


def vllm_figures(before: dict, after: dict) -> dict:
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    figs = {f: 1000.0 * d[f"{h}_sum"] / d[f"{h}_count"] for f, h in VLLM_HIST.items() if d.get(f"{h}_count")}
    return {"figures": figs, "requests": d.get("vllm:e2e_request_latency_seconds_count")}


def one_run(a, tool: str, rnd: int, name: str) -> dict:
    out = a.out / name
    a.out.mkdir(parents=True, exist_ok=True)
    emu = start_emulator(a, out.with_suffix(".emulator.jsonl")) if a.emulated else None
    before = None if emu else scrape(a.url)
    try:
        t0 = time.time()
        run_dir = run_client(a, tool, out)
    finally:
        if emu:
            emu.terminate()
            emu.wait(10)
    row = {"round": rnd, "tool": tool, "started": time.strftime("%H:%M:%S", time.gmtime(t0)), "run_dir": str(run_dir),
           **figures(run_dir)}
    if emu:
        row["emulator"] = emulator_figures(out.with_suffix(".emulator.jsonl"), a)
    else:
        row["server"] = vllm_figures(before, scrape(a.url))
    return row


def fmt(v) -> str:
    return "-" if v is None else (f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}")


def tables(rows: list[dict], tools: list[str]) -> str:
    emulated = any("emulator" in r for r in rows)
    lines = ["| round | client | source | " + " | ".join(HEAD) + " |", "|---" * (len(HEAD) + 3) + "|"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['tool']} | its file | " + " | ".join(fmt(r["figures"][f]) for f in FIGS) + " |")
        if emulated:
            lines.append(f"| {r['round']} | {r['tool']} | emulator log | "
                         + " | ".join(fmt(r["emulator"]["figures"][f]) for f in FIGS) + " |")
    lines += ["", "Mean over the rounds with its 95 % interval (repeats); tie: the interval overlaps servebench's.", "",
              "| client | " + " | ".join(HEAD) + " |", "|---" * (len(HEAD) + 1) + "|"]
    own = {f: repeats_ci([r["figures"][f] for r in rows if r["tool"] == "servebench"]) for f in FIGS}
    for t in [*tools, "servebench"]:
        cells = []
        for f in FIGS:
            vals = [r["figures"][f] for r in rows if r["tool"] == t and r["figures"][f] is not None]
            if not vals:
                cells.append("-")
                continue
            iv = repeats_ci(vals)
            tie = "" if t == "servebench" else (" tie" if overlap(iv, own[f]) else " **differs**")
            cells.append(f"{fmt(float(np.mean(vals)))} [{fmt(iv.low)}, {fmt(iv.high)}]{tie}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines + (_client_error(rows, [*tools, "servebench"]) if emulated else _vs_server(rows)))


def _vs_server(rows: list[dict]) -> list[str]:
    """Each client's means beside vLLM's own (its /metrics histograms, before and after the run)."""
    head = ("TTFT mean", "TPOT mean", "e2e mean")
    lines = ["", "Means (ms): its file / vLLM's own /metrics over the same run:", "",
             "| round | client | requests vLLM saw | " + " | ".join(head) + " |", "|---" * (len(head) + 3) + "|"]
    for r in rows:
        cells = [f"{fmt(r['figures'][f])} / {fmt(r['server']['figures'].get(f))}" for f in MEANS]
        lines.append(f"| {r['round']} | {r['tool']} | {r['server']['requests']:.0f} | " + " | ".join(cells) + " |")
    return lines


def _client_error(rows: list[dict], clients: list[str]) -> list[str]:
    """What each client's figure adds to the server's own of the same run (file - emulator log):
    its measurement error, free of the server's run-to-run variation."""
    lines = ["", "Its file minus the emulator's log of the same run, mean (min..max) over the rounds:", "",
             "| client | " + " | ".join(HEAD) + " |", "|---" * (len(HEAD) + 1) + "|"]
    for t in clients:
        cells = []
        for f in FIGS:
            d = [r["figures"][f] - r["emulator"]["figures"][f] for r in rows
                 if r["tool"] == t and r["figures"][f] is not None]
            cells.append(f"{np.mean(d):+.2f} ({min(d):+.2f}..{max(d):+.2f})" if d else "-")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default="guidellm,aiperf,vllm-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--input-tokens", type=int, default=64)
    ap.add_argument("--output-tokens", type=int, default=32)
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--itl-ms", type=float, default=20.0)
    ap.add_argument("--endpoint", default=None, help="a server that is up (vLLM); default: an emulator per run")
    ap.add_argument("--port", type=int, default=18300)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--tokenizer", default=str(Path.home() / ".cache/servebench/models/tiny"))
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--servebench-args", default="", help="more `servebench run` options, e.g. --no-realtime")
    ap.add_argument("--timeout-s", type=float, default=600)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.emulated, a.url = a.endpoint is None, a.endpoint or f"http://127.0.0.1:{a.port}"
    if a.out.exists():
        raise SystemExit(f"error: {a.out} exists (give a new --out)")
    tools = [t for t in a.tools.split(",") if t]
    bad = [t for t in tools if t not in RESULT]
    if bad:
        raise SystemExit(f"error: unknown tool {bad[0]!r} (guidellm, aiperf, vllm-bench)")
    rows = []
    for rnd in range(1, a.rounds + 1):
        for tool in tools:  # each tool, then servebench right after it
            for t, name in ((tool, f"r{rnd}-{tool}"), ("servebench", f"r{rnd}-{tool}-then-servebench")):
                rows.append(one_run(a, t, rnd, name))
                print(json.dumps({k: rows[-1][k] for k in ("round", "tool", "figures")}), file=sys.stderr)
    (a.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "runs": rows},
                                                   indent=1))
    print(tables(rows, tools))


if __name__ == "__main__":
    main()
