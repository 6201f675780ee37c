"""Leave-one-run-out check of `servebench estimate` on a user's own runs (issue 19).

Each run is predicted by the estimate calibrated on the *other* runs (and, for comparison,
uncalibrated: the published rows' factors), at the held-out run's own load: closed-loop
users or a burst of its size, its token lengths, dtype and hardware. The prediction goes
through the same path as the CLI (efficiency.load_observation -> fit.calibrate ->
predict.estimate with the simulated scheduler), so what this reports is what a user who
held one of their runs back would have seen. Means, not medians: the calibration fits means
(efficiency.STAT), and the band is checked against the same statistic.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from servebench.estimate import efficiency, fit, predict
from servebench.estimate.efficiency import Observation

CHECKED = ("ttft_ms", "tpot_ms")  # what issue 19 asks of the simulator on this host


@dataclass(slots=True)
class Held:
    """One run as a load the estimate can be asked about."""
    run_dir: Path
    obs: Observation
    load: str  # closed | burst | rate
    level: float  # users, burst size or requests/s

    @property
    def name(self) -> str:
        return f"burst {self.level:g}" if self.load == "burst" else f"{self.load} {self.level:g}"


def held(run_dir: Path, hw_override: str | None = None, hw=None) -> Held:
    """A run dir -> Held. `hw` (a catalog.Hardware) replaces the run's hardware (tests)."""
    obs = efficiency.load_observation(run_dir, hw_override)
    if hw is not None:
        obs.hw = hw
    cfg = json.loads((Path(run_dir) / "run.json").read_text()).get("config") or {}
    load = cfg.get("load") or {}
    if obs.mode == "burst":
        n = json.loads((Path(run_dir) / "summary.json").read_text()).get("completed") or load.get("requests") or 1
        return Held(Path(run_dir), obs, "burst", float(n))
    if obs.mode == "rate":
        return Held(Path(run_dir), obs, "rate", float(load["rate"]))
    return Held(Path(run_dir), obs, "closed", float(load.get("concurrency") or obs.concurrency))


def prediction(h: Held, cal: fit.Calibration, scheduler: str = "sim") -> dict:
    """The estimate's row for the held-out run's load (the CLI's `levels[0]`)."""
    d = h.obs.deployment()
    lvl = max(1, round(h.level))
    out = predict.estimate(d, [lvl], (max(1, round(h.obs.n_in)), max(1, round(h.obs.n_out))), cal,
                           engine=h.obs.engine, lockstep=h.obs.lockstep, load=h.load if scheduler == "sim" else None)
    if not out["levels"]:
        raise ValueError(f"{h.run_dir}: the estimate says the model does not fit ({out['capacity'].get('why')})")
    return {"row": out["levels"][0], "sigma_log": out["sigma_log"], "band": out["band"]}


def _judge(h: Held, p: dict) -> dict:
    row, out = p["row"], {}
    for m in CHECKED:
        v = h.obs.measured.get(m)
        if not v:
            continue
        lo, hi = row[m + "_band"]
        out[m] = {"predicted": row[m], "measured": v, "error": row[m] / v - 1, "band": [lo, hi], "inside": lo <= v <= hi}
    return out


def leave_one_out(heldruns: list[Held], scheduler: str = "sim") -> list[dict]:
    """Per held-out run: the calibrated (on the others) and uncalibrated predictions, judged."""
    if len(heldruns) < 2:
        raise ValueError("leave-one-run-out needs at least 2 runs")
    out = []
    for i, h in enumerate(heldruns):
        rest = [x.obs for j, x in enumerate(heldruns) if j != i]
        cal = fit.calibrate(rest)
        raw = fit.published(h.obs.hw, h.obs.engine)
        pc, pu = prediction(h, cal, scheduler), prediction(h, raw, scheduler)
        out.append({"run": h.run_dir.name, "load": h.name, "calibrated": _judge(h, pc), "uncalibrated": _judge(h, pu),
                    "sigma_log": {"calibrated": pc["sigma_log"], "uncalibrated": pu["sigma_log"]},
                    "factors": cal.factors.as_dict()})
    return out


def summarize(results: list[dict]) -> dict:
    """Median absolute held-out error per metric and how many figures lay inside their band."""
    out = {}
    for kind in ("uncalibrated", "calibrated"):
        per = {m: [abs(r[kind][m]["error"]) for r in results if m in r[kind]] for m in CHECKED}
        allv = [e for v in per.values() for e in v]
        inside = [r[kind][m]["inside"] for r in results for m in CHECKED if m in r[kind]]
        out[kind] = {"median_abs_error": {m: statistics.median(v) for m, v in per.items() if v},
                     "median_abs_error_all": statistics.median(allv) if allv else math.nan,
                     "inside": sum(inside), "figures": len(inside)}
    return out


def table(results: list[dict]) -> list[str]:
    """Markdown: per held-out run, TTFT and TPOT measured vs predicted (calibrated on the others)."""
    lines = ["| held-out run | metric | measured (mean) | predicted | error | band | inside | uncalibrated prediction (error) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for m in CHECKED:
            c, u = r["calibrated"].get(m), r["uncalibrated"].get(m)
            if not c:
                continue
            lo, hi = c["band"]
            lines.append(f"| {r['load']} | {m[:-3].upper()} ms | {_n(c['measured'])} | {_n(c['predicted'])} | "
                         f"{c['error']:+.0%} | {_n(lo)}–{_n(hi)} | {'yes' if c['inside'] else '**no**'} | "
                         f"{_n(u['predicted'])} ({u['error']:+.0%}) |")
    return lines


def _n(v: float) -> str:
    """Two decimals below 10 ms: a 1.47 ms TPOT outside a 1.48 ms band edge must not read 1.5 vs 1.5."""
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"
