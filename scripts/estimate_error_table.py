#!/usr/bin/env python
"""Regenerate the error tables of docs/estimate.md from the shipped published rows.

    PYTHONPATH=. python scripts/estimate_error_table.py [--write]

Before: the seed study's nine rows through the closed-form roofline with default factors
(what issue 19 measured). After: every source predicted by the simulator with efficiencies
fitted on the other sources only (leave-one-source-out), its band sized from the other
sources' held-out residuals. --write replaces the block between the markers in
docs/estimate.md and writes servebench/estimate/data/published_fit.json (factors fitted on
every row + the band the CLI shows).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from servebench.estimate import catalog, models, pubfit  # noqa: E402
from servebench.estimate.roofline import Deployment, Factors, link_note, serve  # noqa: E402
from servebench.estimate.sim import Load, simulate  # noqa: E402

START, END = "<!-- estimate-error-table:start -->", "<!-- estimate-error-table:end -->"


def _pct(x: float) -> str:
    return f"{x:+.0%}"


def before_after(res: list[dict]) -> list[str]:
    out = ["| row | ms/token published → before → after | tok/s published → before → after | after inside band |",
           "|---|---|---|---|"]
    seed = [r for r in pubfit.rows() if r.source == "hf-sagemaker-tgi"]
    after = {x["row"]: x for x in res if x["source"] == "hf-sagemaker-tgi"}
    band = pubfit.band_for(res, "hf-sagemaker-tgi")
    for r in seed:
        n_in, n_out = r.load.n_in, r.load.n_out
        # "before" is the model issue 19 measured: peer access everywhere, no per-sequence cost
        old = serve(Deployment(r.d.model, r.d.hw, r.d.tp, p2p=True), r.load.users, n_in, n_out, Factors(seq_ms=0.0),
                    lockstep=True)
        a = after[r.label]
        cells = []
        for m, k in (("ms_per_token", "ms_per_token"), ("tokens_per_s", "output_tok_s")):
            pub = r.measured.get(m)
            if pub is None:
                cells.append("(not used: contradicts the row's tok/s)")
                continue
            p = a["predicted"][m]
            cells.append(f"{pub:g} → {old[k]:.1f} ({_pct(old[k] / pub - 1)}) → {p:.1f} ({_pct(p / pub - 1)})")
        inside = all(abs(e) <= band for e in a["log_errors"].values())
        out.append(f"| {r.label} | {cells[0]} | {cells[1]} | {'yes' if inside else 'no'} |")
    return out


def per_source(res: list[dict]) -> tuple[list[str], dict]:
    out = ["| held-out source | rows | median abs error: ms/token | tok/s | TTFT | TPOT | all | band (×) | rows inside |",
           "|---|---|---|---|---|---|---|---|---|"]
    agg = {"ms_per_token": [], "tokens_per_s": [], "ttft_ms": [], "tpot_ms": [], "inside": 0, "rows": 0}
    for src in sorted({x["source"] for x in res}):
        xs = [x for x in res if x["source"] == src]
        band = pubfit.band_for(res, src)

        def med(metric):
            v = [abs(math.expm1(x["log_errors"][metric])) for x in xs if metric in x["log_errors"]]
            return (f"{statistics.median(v):.0%}" if v else "-"), v

        cells = []
        for m in ("ms_per_token", "tokens_per_s", "ttft_ms", "tpot_ms"):
            s, v = med(m)
            cells.append(s)
            if m in agg:
                agg[m] += v
        allv = [abs(math.expm1(e)) for x in xs for e in x["log_errors"].values()]
        inside = sum(all(abs(e) <= band for e in x["log_errors"].values()) for x in xs)
        agg["inside"] += inside
        agg["rows"] += len(xs)
        out.append(f"| {src} | {len(xs)} | {' | '.join(cells)} | {statistics.median(allv):.0%} | "
                   f"×{math.exp(-band):.2f}–×{math.exp(band):.2f} | {inside}/{len(xs)} |")
    return out, agg


def _held(res: list[dict], src: str) -> list[dict]:
    """The source's held-out results in row order (labels repeat: Hamel's engines share one)."""
    return [x for x in res if x["source"] == src]


def within_source(res: list[dict], sources=("hf-sagemaker-tgi", "trtllm-h200-blog")) -> list[str]:
    """What calibrating on one's own runs buys: each row of a source predicted by factors fitted
    on that source's other rows (same engine, same setup) instead of on the other sources."""
    out = ["| source | rows | median abs error, fitted on the other sources | fitted on its own other rows |", "|---|---|---|---|"]
    for src in sources:
        rs = [r for r in pubfit.rows() if r.source == src]
        own, other = [], []
        for i, (r, x) in enumerate(zip(rs, _held(res, src))):
            f, _, _ = pubfit.fit(rs[:i] + rs[i + 1:]).factors_for(r.family, r.engine)
            own += [abs(math.expm1(e)) for e in pubfit.log_errors(r, f).values()]
            other += [abs(math.expm1(e)) for e in x["log_errors"].values()]
        out.append(f"| {src} | {len(rs)} | {statistics.median(other):.0%} | {statistics.median(own):.0%} |")
    return out


def ordering(fitted: pubfit.Fitted) -> list[str]:
    """The arXiv study's platforms: Llama 2 7B, 8 GPUs, burst of 1000 x 512 prompts, TGI."""
    out = []
    m = models.load("llama-2-7b")
    for gpu, p2p in (("a800", None), ("rtx4090", None), ("rtx3090", None), ("rtx4090", True)):
        hw = catalog.lookup(gpu)
        f, group, _ = fitted.factors_for(hw.arch, "tgi")
        d = Deployment(m, hw, 8, schedule="separate", p2p=p2p)
        p = simulate(d, f, Load(mode="burst", requests=1000, n_in=512, n_out=128))
        name = hw.label + (" with peer access (`--p2p on`)" if p2p else "")
        out.append(f"| {name} | {link_note(d)} | {group} | {p['output_tok_s']:,.0f} |")
    return ["| platform (8 GPUs, TP8) | link | factors from | predicted tok/s |", "|---|---|---|---|", *out]


def in_sample(everything: pubfit.Fitted, res: list[dict]) -> list[str]:
    """Every row predicted by the factors fitted on all rows (its own included), beside the
    held-out figure: the gap is what fitting a source's own rows hides."""
    out = ["| source | rows | median abs error in sample | held out |", "|---|---|---|---|"]
    for src in sorted({r.source for r in pubfit.rows()}):
        rs = [r for r in pubfit.rows() if r.source == src]
        ins = [abs(math.expm1(e)) for r in rs for e in pubfit.log_errors(r, everything.factors_for(r.family, r.engine)[0]).values()]
        held = [abs(math.expm1(e)) for x in _held(res, src) for e in x["log_errors"].values()]
        out.append(f"| {src} | {len(rs)} | {statistics.median(ins):.0%} | {statistics.median(held):.0%} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="update docs/estimate.md and data/published_fit.json")
    args = ap.parse_args()
    res = pubfit.loso()
    src_rows, agg = per_source(res)
    lines = ["### Issue 19's table, before and after (seed study held out)", "", *before_after(res), "",
             "### Leave-one-source-out error per source", "", *src_rows, "",
             "Overall (every held-out row): median absolute error " + ", ".join(
                 f"{statistics.median(agg[m]):.1%} on {name} ({len(agg[m])} figures)" for m, name in
                 (("ms_per_token", "ms/token"), ("tokens_per_s", "tok/s"), ("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"))
                 if agg[m]) + f"; {agg['inside']}/{agg['rows']} held-out rows inside their band.", ""]
    lines += ["### Calibrating on the same engine's runs (leave one row out within a source)", "", *within_source(res), ""]
    everything = pubfit.fit(list(pubfit.rows()))
    lines += ["### In sample (fitted on every row) against held out", "", *in_sample(everything, res), ""]
    lines += ["### The arXiv study's platforms (4090 vs 3090)", "", *ordering(everything), ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        doc = ROOT / "docs/estimate.md"
        d = doc.read_text()
        if START not in d:
            raise SystemExit(f"error: {doc} has no {START} marker")
        head, rest = d.split(START, 1)
        doc.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])
        band = pubfit.band_for(res)
        (ROOT / "servebench/estimate/data/published_fit.json").write_text(json.dumps(
            {"_about": "Written by scripts/estimate_error_table.py: factors fitted on every published row; band_log = "
                       "the widest leave-one-source-out |log error|", **everything.as_dict(), "band_log": band}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
