#!/usr/bin/env python
"""Check `servebench estimate` against this host's real vLLM CPU runs, leave one run out.

    # measure (a vLLM CPU server you started, e.g. `servebench launch vllm -m tiny --port 18900`)
    PYTHONPATH=. python scripts/estimate_cpu_check.py --endpoint http://127.0.0.1:18900 --out results/estimate-cpu
    # re-check runs measured before (a directory of run dirs, or run dirs)
    PYTHONPATH=. python scripts/estimate_cpu_check.py --runs results/estimate-cpu [--write]

Loads (issue 19): closed loop at 1, 4 and 16 users and one burst, each `--requests` requests of
`--input-tokens` / `--output-tokens`, distinct seeds (a shared server's prefix cache would
otherwise make the later runs' prefill free). Each run is then predicted by the estimate with
the simulated scheduler, calibrated on the other runs, and checked against the run's mean TTFT
and TPOT and the band the estimate states; uncalibrated (the published rows' factors) beside it.
A second table says what calibration buys on the published rows (held-out error with default
factors, fitted on the other sources, fitted on the same source's other rows). --write puts
both tables into docs/estimate.md between the estimate-cpu-check markers.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from servebench.estimate import holdout, pubfit  # noqa: E402
from servebench.estimate.roofline import Factors  # noqa: E402

START, END = "<!-- estimate-cpu-check:start -->", "<!-- estimate-cpu-check:end -->"
LOADS = (("c1", ["--concurrency", "1"]), ("c4", ["--concurrency", "4"]), ("c16", ["--concurrency", "16"]), ("burst", []))


def measure(endpoint: str, out: Path, requests: int, n_in: int, n_out: int, model: str, seed: int = 101) -> list[Path]:
    """One `servebench run` per load; returns the run dirs (the newest of each name)."""
    out.mkdir(parents=True, exist_ok=True)
    dirs = []
    for seed, (name, extra) in enumerate(LOADS, start=seed):
        cmd = [sys.executable, "-m", "servebench.cli", "run", "--backend", "vllm", "--model", model, "--endpoint", endpoint,
               "--requests", str(requests), "--input-tokens", str(n_in), "--output-tokens", str(n_out), "--warmup", "2",
               "--results-dir", str(out), "--name", name, "--no-plots", "--seed", str(seed), *extra]
        if subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"error: `{' '.join(cmd[2:])}` failed")
        dirs.append(max(out.glob(f"*-{name}"), key=lambda p: p.stat().st_mtime))
    return dirs


def run_dirs(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        out += [p] if (p / "run.json").is_file() else sorted(d for d in p.iterdir() if (d / "run.json").is_file())
    return out


def published_gain() -> list[str]:
    """Held-out error on the published rows: default factors, fitted on the other sources
    (leave one source out), fitted on the same source's other rows (leave one row out: what
    calibrating on one's own runs of the same engine and setup is)."""
    allrows = list(pubfit.rows())
    other: dict[str, list[dict]] = {}  # per source, in its rows' order: labels are not unique
    for x in pubfit.loso(allrows):  # (Hamel's fp16 TGI and CTranslate2 rows share theirs)
        other.setdefault(x["source"], []).append(x)
    lines = ["| source | rows | default factors (uncalibrated) | fitted on the other sources | fitted on its own other rows |",
             "|---|---|---|---|---|"]
    tot = {"d": [], "o": [], "s": []}
    for src in sorted({r.source for r in allrows}):
        rs = [r for r in allrows if r.source == src]
        d = [abs(math.expm1(e)) for r in rs for e in pubfit.log_errors(r, Factors()).values()]
        o = [abs(math.expm1(e)) for x in other[src] for e in x["log_errors"].values()]
        s = []
        if len(rs) > 1:
            for i, r in enumerate(rs):
                f, _, _ = pubfit.fit(rs[:i] + rs[i + 1:]).factors_for(r.family, r.engine)
                s += [abs(math.expm1(e)) for e in pubfit.log_errors(r, f).values()]
        tot["d"] += d
        tot["o"] += o
        tot["s"] += s
        lines.append(f"| {src} | {len(rs)} | {statistics.median(d):.0%} | {statistics.median(o):.0%} | "
                     + (f"{statistics.median(s):.0%} |" if s else "- (one row) |"))
    lines.append(f"| all | {len(allrows)} | {statistics.median(tot['d']):.0%} | {statistics.median(tot['o']):.0%} | "
                 f"{statistics.median(tot['s']):.0%} |")
    return lines


def host_line() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, {platform.node()}"


def report(results: list[dict], pub: list[str], runs: list[Path]) -> str:
    s = holdout.summarize(results)
    first = json.loads((runs[0] / "run.json").read_text())
    w = (first.get("config") or {}).get("workload") or {}
    lines = [f"Runs: {len(runs)} × `servebench run --backend vllm --model {first.get('config', {}).get('model', 'tiny')}` "
             f"({w.get('input_tokens')} in / {w.get('output_tokens')} out, "
             f"{((first.get('config') or {}).get('load') or {}).get('requests')} requests each) on {host_line()}; "
             "the host is shared and busy (other benchmarks on the same 2 cores): timings swing run to run.", "",
             *holdout.table(results), ""]
    lines += ["What calibration on the other runs buys here (median absolute held-out error):", "",
              "| estimate | TTFT | TPOT | all | figures inside their band |", "|---|---|---|---|---|"]
    for kind, what in (("uncalibrated", "uncalibrated (published rows' factors)"), ("calibrated", "calibrated on the other runs")):
        k = s[kind]
        per = " | ".join(f"{k['median_abs_error'][m]:.0%}" if m in k["median_abs_error"] else "-" for m in holdout.CHECKED)
        lines.append(f"| {what} | {per} | {k['median_abs_error_all']:.0%} | {k['inside']}/{k['figures']} |")
    if pub:
        lines += ["", "What calibration buys on the published rows (median absolute held-out error, every stated figure):",
                  "", *pub, ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--endpoint", help="measure against this vLLM CPU server (127.0.0.1)")
    g.add_argument("--runs", nargs="+", type=Path, help="run dirs, or a directory of them, measured before")
    ap.add_argument("--out", type=Path, default=Path("results/estimate-cpu"))
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--input-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=101, help="first load's seed (+1 per load): a new one per set "
                    "against the same server, or its prefix cache makes the prefills free")
    ap.add_argument("--json", type=Path, help="also write the per-run results here")
    ap.add_argument("--write", action="store_true", help="update docs/estimate.md")
    ap.add_argument("--no-published", action="store_true", help="skip the published rows' passes (most of the "
                    "run time; for iterating on the CPU runs, not with --write)")
    a = ap.parse_args()
    if a.endpoint and not a.endpoint.startswith(("http://127.0.0.1", "http://localhost")):
        print("error: --endpoint must be a server on this host (127.0.0.1)", file=sys.stderr)
        return 2
    if a.write and a.no_published:
        print("error: --write needs the published rows' table: drop --no-published", file=sys.stderr)
        return 2
    runs = measure(a.endpoint, a.out, a.requests, a.input_tokens, a.output_tokens, a.model, a.seed) if a.endpoint else run_dirs(a.runs)
    try:
        results = holdout.leave_one_out([holdout.held(d) for d in runs])
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    text = report(results, [] if a.no_published else published_gain(), runs)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1) + "\n")
    if a.write:
        doc = ROOT / "docs/estimate.md"
        d = doc.read_text()
        if START not in d:
            print(f"error: {doc} has no {START} marker", file=sys.stderr)
            return 1
        head, rest = d.split(START, 1)
        doc.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
