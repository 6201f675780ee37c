#!/usr/bin/env python
"""Validation of `servebench estimate` against published measurements (the tables in
docs/estimate.md): calibrate on some rows, predict others, print the errors as markdown.

    PYTHONPATH=. python scripts/estimate_validation.py [--cpu-runs DIR ...]

--cpu-runs: run dirs of vLLM CPU runs here (tiny and small presets): calibrates on the tiny
runs and predicts the small ones.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servebench.estimate import fit, published  # noqa: E402
from servebench.estimate.efficiency import expand_dirs, load_observation, of_observation  # noqa: E402


def experiment(name, cal, test, rows):
    c = fit.calibrate(cal) if cal else fit.uncalibrated()
    errs = {}
    for o in test:
        for m, e in fit.errors(o, c.factors).items():
            errs.setdefault(m, []).append(e)
    flat = [e for v in errs.values() for e in v]
    logs = [math.log1p(e) for e in flat]
    f = c.factors
    band = c.sigma_for(test[0].hw, test[0].engine)
    inside = sum(abs(x) <= band for x in logs) / len(logs)
    rows.append(f"| {name} | {len(cal)} | {len(test)} | {sum(map(abs, flat)) / len(flat):.0%} | "
                f"{statistics.median(map(abs, flat)):.0%} | {max(flat, key=abs):+.0%} | "
                f"{math.exp(band):.2f}x, {inside:.0%} inside | "
                f"{f.eta_mem:.2f} / {f.eta_compute:.2f} / {f.step_ms:.2g} ms"
                + (f" / {f.alpha_us:.0f} µs" if c.n_runs and 'alpha_us' in c.fitted else "") + " |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-runs", nargs="*", default=[])
    args = ap.parse_args()
    S = {n: published.observations(n) for n in published.set_names()}
    ss, ft, trt = S["seed-study"], S["fastertransformer"], S["trtllm-h200"]
    rows = ["| experiment | calibration rows | predicted rows | mean abs error | median | worst | band (widest leave-one-out miss), rows inside | "
            "fitted eta_mem / eta_compute / step (/ collective) |", "|---|---|---|---|---|---|---|---|"]
    experiment("uncalibrated defaults -> every published row", [], ss + ft + trt, rows)
    a10g = [o for o in ss if o.hw.key == "a10g"]
    p4d = [o for o in ss if o.hw.key != "a10g"]
    experiment("seed study: A10G rows -> A100-40GB rows", a10g, p4d, rows)
    experiment("seed study: A100-40GB rows -> A10G rows", p4d, a10g, rows)
    experiment("FasterTransformer 13B: TP1 -> TP2", ft[:1], ft[1:], rows)
    experiment("TensorRT-LLM H200: TP1 rows -> TP2/TP4 rows", [o for o in trt if o.tp == 1], [o for o in trt if o.tp > 1], rows)
    experiment("seed study (TGI) -> FasterTransformer (other engine)", ss, ft, rows)
    experiment("seed study (TGI, A10G/A100) -> TensorRT-LLM H200 (other engine, other GPU)", ss, trt, rows)
    print("\n".join(rows))
    print("\nLeave-one-out within each set (each row predicted from the others):\n")
    print("| set | rows | LOO mean abs error | by metric | fitted factors |\n|---|---|---|---|---|")
    for n, obs in S.items():
        c = fit.calibrate(obs)
        s = c.summary()
        f = s["factors"]
        by = ", ".join(f"{k} {v:.0%}" for k, v in s["loo_mape_by_metric"].items())
        print(f"| {n} | {len(obs)} | {s['loo_mape']:.0%} | {by} | eta_mem {f['eta_mem']:.2f}, eta_compute "
              f"{f['eta_compute']:.2f}, step {f['step_ms']:.2g} ms, collective {f['alpha_us'] or 0:.0f} µs |")
    print("\nEfficiency (floor / measured) of each published row:\n")
    print("| row | decode bound | floor ms/step | efficiency |\n|---|---|---|---|")
    for o in ss + ft + trt:
        e = of_observation(o)
        eff = ", ".join(f"{k} {v:.2f}" for k, v in e["efficiency"].items())
        print(f"| {o.label} | {e['floor']['decode_bound']} | {e['floor']['decode_step_ms']:.2f} | {eff} |")
    if args.cpu_runs:
        obs = [load_observation(d) for d in expand_dirs([Path(p) for p in args.cpu_runs])]
        tiny = [o for o in obs if o.model.name == "tiny"]
        small = [o for o in obs if o.model.name == "small"]
        c = fit.calibrate(tiny)
        print(f"\nvLLM CPU: calibrated on {len(tiny)} tiny run(s): {c.factors}; sigma {c.sigma:.2f}\n")
        print("| run | metric | predicted | measured | error |\n|---|---|---|---|---|")
        for o in small:
            p = o.predict(c.factors)
            for m, v in o.measured.items():
                print(f"| {o.label} | {m} | {p[m]:.1f} | {v:.1f} | {p[m] / v - 1:+.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
