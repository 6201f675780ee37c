#!/usr/bin/env python3
"""Client accuracy of `servebench run` as users run it, against the built-in emulator's log.

    python3 scripts/bench_cli_accuracy.py                         # the table (a few minutes)
    python3 scripts/bench_cli_accuracy.py --shapes "500 streams" --repeats 3
    python3 scripts/bench_cli_accuracy.py --variant before=/tmp/sb-old --variant after=.   # side by side
    python3 scripts/bench_cli_accuracy.py --shapes "200 streams" --neighbour 20/40        # a starved client
    python3 scripts/bench_cli_accuracy.py --gpu-host --write-docs  # 16+ cores: 2000/5000 streams, 1 vs 8 workers

Each run is the real CLI in a child process (`python -m servebench.cli run --backend vllm
--endpoint URL ...`), its stderr on a pseudo-terminal so the progress bar renders as in a user's
terminal, telemetry and self-check at their defaults. The server is `servebench emulate` in its
own process (TTFT 50 ms, ITL 10 ms), whose log of when each request arrived (kernel receive
stamp) and each token was written is the truth. The run's requests.parquet is joined with that
log on X-Request-Id and the errors computed by `servebench.run.calibrate.compare`.

Variants (`--variant NAME=PATH[;EXTRA CLI ARGS]`) run the servebench found at PATH (PYTHONPATH):
a checkout of an older commit gives a before/after comparison under the same host conditions,
interleaved run by run. Host conditions are recorded per run: the CPU that other processes
took while the CLI ran (host busy time minus the client's and the emulator's), in cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pty
import resource
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the emulator and the error arithmetic are this checkout's

TTFT_MS, ITL_MS, INPUT_TOKENS = 50.0, 10.0, 512
# name: (requests, concurrency or None for a burst, output tokens)
SHAPES = {"50 streams": (150, 50, 64), "500 streams": (1500, 500, 64), "burst 200": (200, None, 64)}
EXTRA = {"200 streams": (600, 200, 64), "1 stream": (20, 1, 64)}
GPU = {"2000 streams": (6000, 2000, 100), "5000 streams": (15000, 5000, 100)}
BEGIN, END = "<!-- cli-accuracy:begin -->", "<!-- cli-accuracy:end -->"


class Variant:
    def __init__(self, text: str) -> None:
        name, _, rest = text.partition("=")
        path, _, args = (rest or ".").partition(";")
        self.name, self.path, self.args = name, Path(path or ".").resolve(), shlex.split(args)

    def __repr__(self) -> str:
        return self.name


# -- host accounting
def _host_busy_s() -> float:
    """Non-idle CPU seconds of the whole host so far (/proc/stat, all CPUs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


# -- the starving neighbour: a real-time process busy BUSY ms of every PERIOD ms on CPU 0
def _neighbour(busy_ms: float, period_ms: float) -> None:
    os.sched_setaffinity(0, {0})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))  # above the client's SCHED_RR 10
    nxt = time.monotonic()
    while True:
        end = nxt + busy_ms / 1e3
        while time.monotonic() < end:
            pass
        nxt += period_ms / 1e3
        time.sleep(max(0.0, nxt - time.monotonic()))


def run_on_pty(cmd: list[str], env: dict, pin: set[int] | None, timeout_s: float, cwd: Path) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal (the progress bar renders); stdout captured.
    Also the runner of tests/unit/test_accuracy_cli.py."""
    master, slave = pty.openpty()
    import fcntl
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    pre = (lambda: os.sched_setaffinity(0, pin)) if pin else None
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env,
                         preexec_fn=pre, cwd=cwd)
    os.close(slave)
    tty: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:
                return
            if not b:
                return
            tty.append(b)

    th = threading.Thread(target=drain, daemon=True)
    th.start()
    try:
        out, _ = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    th.join(5)
    os.close(master)
    return p.returncode, out.decode(errors="replace"), b"".join(tty).decode(errors="replace")


def run_one(shape: tuple, variant: Variant, work: Path, neighbour: tuple[float, float] | None,
            timeout_s: float, emulator_rt: int = 0) -> dict:
    from servebench.emulator import start_emulator
    from servebench.store.runfiles import load_records

    n, conc, tokens = shape
    nb = None
    if neighbour:
        nb = subprocess.Popen([sys.executable, __file__, "--neighbour-child", f"{neighbour[0]}/{neighbour[1]}"])
    try:
        with start_emulator("openai", TTFT_MS, ITL_MS, log=work / "emu.jsonl") as h:
            if emulator_rt:  # a shared host: keep other processes from delaying the server's writes
                os.sched_setscheduler(h.pid, os.SCHED_RR, os.sched_param(emulator_rt))
            if neighbour:
                os.sched_setaffinity(h.pid, {1})  # the client gets CPU 0, shared with the neighbour
            cmd = [sys.executable, "-m", "servebench.cli", "run", "--backend", "vllm", "--endpoint", h.url,
                   "--model", "tiny", "--requests", str(n), "--input-tokens", str(INPUT_TOKENS),
                   "--output-tokens", str(tokens), "--warmup", "2", "--results-dir", str(work), "--name", "acc",
                   *(["--concurrency", str(conc)] if conc else []), *variant.args]
            env = {**os.environ, "PYTHONPATH": str(variant.path), "TERM": os.environ.get("TERM", "xterm-256color")}
            host0, kids0, emu0, t0 = _host_busy_s(), _children_cpu_s(), _proc_cpu_s(h.pid), time.monotonic()
            # cwd: `python -m` puts it first on sys.path, ahead of PYTHONPATH
            rc, out, tty = run_on_pty(cmd, env, {0} if neighbour else None, timeout_s, variant.path)
            wall = time.monotonic() - t0
            client_cpu, emu_cpu = _children_cpu_s() - kids0, _proc_cpu_s(h.pid) - emu0
            others = (_host_busy_s() - host0 - client_cpu - emu_cpu) / wall
            h.stop()
            emu = h.records()
    finally:
        if nb is not None:
            nb.send_signal(signal.SIGKILL)
            nb.wait()
    lines = out.strip().splitlines()
    run_dir = Path(lines[-1]) if lines else None
    if run_dir is None or not (run_dir / "requests.parquet").exists():
        raise SystemExit(f"{variant.name}: no results (exit {rc}): {tty.strip().splitlines()[-3:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    recs = load_records(run_dir / "requests.parquet")
    row = errors(recs, emu, summary)
    row.update(rc=rc, wall_s=wall, others_cores=others, client_cpu_s=client_cpu, emulator_cpu_s=emu_cpu,
               report_warnings=[ln for ln in out.splitlines() if ln.startswith("warning:")],
               progress_bar="requests" in tty, workers=run.get("workers") or (summary.get("client") or {}).get("workers"))
    return row


def errors(recs, emu: list[dict], summary: dict) -> dict:
    from servebench.run.calibrate import compare
    from servebench.emulator import held
    from servebench.analysis.metrics import dist

    measured = [r for r in recs if not r.warmup]
    ids = {str(r.index) for r in measured}
    log = [e for e in emu if e["id"] in ids]
    acc = compare(measured, log)
    ok = [e for e in log if e["outcome"] == "ok" and e["token_ns"]]
    true_tok_s = sum(len(e["token_ns"]) for e in ok) / ((max(e["end_ns"] for e in ok) - min(e["arrival_ns"] for e in ok)) / 1e9)
    peak, mean = held(log)
    late = [(t - e["start_ns"]) / 1e6 - TTFT_MS - i * ITL_MS for e in ok for i, t in enumerate(e["token_ns"])]
    cl = summary.get("client") or {}
    return {
        **{k: acc[k] for k in ("matched", "causality_violations", "ttft_err_ms", "e2e_err_ms", "itl_err_ms",
                               "send_lag_ms", "recv_first_ms", "recv_last_ms")},
        "failed": summary.get("failed"), "completed": summary.get("completed"),
        "held_peak": peak, "held_mean": mean, "emulator_late_ms": dist(late),
        "tok_s_err_pct": (summary["output_token_throughput"] / true_tok_s - 1) * 100 if true_tok_s else None,
        "true_tok_s": true_tok_s, "loop_lag_ms": summary.get("loop_lag_ms"),
        "client": cl, "client_kept_up": cl.get("kept_up"),
    }


def table(rows: list[dict], variants: bool) -> str:
    def f(v, d=2):
        return "—" if v is None else f"{v:.{d}f}"

    def sg(v):  # signed, 2 decimals
        return "—" if v is None else f"{v:+.2f}"

    head = ["load"] + (["client"] if variants else []) + [
        "TTFT error mean / p99 (ms)", "e2e error mean (ms)", "ITL error p99 (ms)",
        "first-token read lag p50 / p99 (ms)", "last-token read lag p50 / p90 / p99 (ms)", "output tok/s error",
        "held mean / peak", "event-loop lag p99 (ms)", "client kept up", "others' CPU (cores)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t, e, i, a, b = r["ttft_err_ms"], r["e2e_err_ms"], r["itl_err_ms"], r["recv_first_ms"], r["recv_last_ms"]
        ku = r.get("client_kept_up")
        kept = "—" if ku is None else ("yes" if ku else "**no** (warned)" if any("client" in w for w in r["report_warnings"]) else "**no**")
        cells = [r["shape"]] + ([r["variant"]] if variants else []) + [
            f"{sg(t['mean'])} / {sg(t['p99'])}", sg(e["mean"]), sg(i["p99"]),
            f"{f(a['p50'])} / {f(a['p99'])}", f"{f(b['p50'])} / {f(b['p90'])} / {f(b['p99'])}",
            "—" if r["tok_s_err_pct"] is None else f"{r['tok_s_err_pct']:+.1f} %",
            f"{r['held_mean']:.0f} / {r['held_peak']}", f((r.get("loop_lag_ms") or {}).get("p99")), kept,
            f"{r['others_cores']:.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_docs(text: str, name: str = "accuracy") -> None:
    from docblock import write_block

    write_block(ROOT / "docs" / "performance.md", BEGIN.replace("accuracy", name), END.replace("accuracy", name),
                text, "CLI accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neighbour-child", help=argparse.SUPPRESS)
    ap.add_argument("--shapes", default=None, help="comma-separated load names; known: "
                    + ", ".join([*SHAPES, *EXTRA, *GPU]))
    ap.add_argument("--gpu-host", action="store_true",
                    help="the 16-core rows: 2000 and 5000 streams, --workers 1 and --workers 8")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH[;ARGS]",
                    help="servebench checkout to run (PYTHONPATH) and extra CLI args; repeatable (default: this one)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per load and variant, interleaved")
    ap.add_argument("--neighbour", default=None, metavar="BUSY/PERIOD",
                    help="starve the client: pin it to CPU 0 beside a SCHED_FIFO process busy BUSY ms of every PERIOD ms")
    ap.add_argument("--timeout", type=float, default=900.0, help="per CLI run, s")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_cli_accuracy.json"), help="raw results (JSON)")
    ap.add_argument("--write-docs", action="store_true", help="replace the table in docs/performance.md")
    ap.add_argument("--docs-block", default="accuracy", help="which marked block: accuracy (the reference "
                    "table) or side-by-side (a before/after comparison)")
    ap.add_argument("--emulator-rt", type=int, default=0, metavar="PRIO",
                    help="run the emulator under SCHED_RR at PRIO (below the client's 10): on a shared host, "
                         "keeps other processes from making the server late")
    ap.add_argument("--keep", default=None, metavar="DIR", help="keep each run's directory and emulator log here")
    ap.add_argument("--from-json", default=None, metavar="PATH", help="no runs: rebuild the table from a saved --out file")
    a = ap.parse_args()
    if a.from_json:
        saved = json.loads(Path(a.from_json).read_text())
        rows = saved["rows"]
        text = table(rows, len({r["variant"] for r in rows}) > 1) + "\n\n" + saved["note"]
        print(text)
        if a.write_docs:
            write_docs(text, a.docs_block)
        return
    if a.neighbour_child:
        busy, period = (float(x) for x in a.neighbour_child.split("/"))
        _neighbour(busy, period)
        return
    known = {**SHAPES, **EXTRA, **GPU}
    shapes = dict(GPU) if a.gpu_host else dict(SHAPES)
    if a.shapes:
        pick = [x.strip() for x in a.shapes.split(",")]
        if set(pick) - set(known):
            raise SystemExit(f"unknown load(s): {', '.join(sorted(set(pick) - set(known)))}; known: {', '.join(known)}")
        shapes = {k: known[k] for k in pick}
    variants = [Variant(v) for v in a.variant] or (
        [Variant("1 worker=.;--workers 1"), Variant("8 workers=.;--workers 8")] if a.gpu_host else [Variant("servebench=.")])
    neighbour = tuple(float(x) for x in a.neighbour.split("/")) if a.neighbour else None
    rows = []
    for shape, spec in shapes.items():
        for rep in range(a.repeats):
            for v in variants:
                with tempfile.TemporaryDirectory() as d:
                    t = time.time()
                    row = {"shape": shape + (f", neighbour {a.neighbour} ms" if neighbour else ""), "variant": v.name,
                           "repeat": rep, **run_one(spec, v, Path(d), neighbour, a.timeout, a.emulator_rt)}
                    if a.keep:
                        import shutil
                        dest = Path(a.keep) / f"{shape}-{v.name}-{rep}".replace(" ", "_").replace(",", "")
                        shutil.copytree(d, dest, dirs_exist_ok=True)
                rows.append(row)
                print(f"{row['shape']:14s} {v.name:10s} {time.time() - t:5.1f}s  e2e err mean {row['e2e_err_ms']['mean']:+.2f}"
                      f"  ITL err p99 {row['itl_err_ms']['p99']:+.2f}  last read lag p90 {row['recv_last_ms']['p90']:.2f} ms"
                      f"  kept up {row['client_kept_up']}  others {row['others_cores']:.2f} cores", flush=True)
    load = os.getloadavg()
    others = [r["others_cores"] for r in rows]
    note = (f"Emulator TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms (openai format), {INPUT_TOKENS}-token prompts; the CLI "
            f"as users run it (`servebench run --backend vllm --endpoint URL`, progress bar on a terminal, telemetry "
            f"and self-check at their defaults, 2 warm-up requests); errors are client minus emulator log. Host: "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
            f"{f'; emulator under SCHED_RR {a.emulator_rt}' if a.emulator_rt else ''}; other processes took "
            f"{min(others):.2f}–{max(others):.2f} cores during the runs; load average {load[0]:.2f} at the end; "
            f"{time.strftime('%Y-%m-%d')}; `scripts/bench_cli_accuracy.py`.")
    text = table(rows, len(variants) > 1) + "\n\n" + note
    print("\n" + text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "note": note}, indent=1, default=str))
    if a.write_docs:
        write_docs(text, a.docs_block)


if __name__ == "__main__":
    main()
