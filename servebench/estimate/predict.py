"""What-if: one deployment's predicted metrics per load level, with bands and cost."""

from __future__ import annotations

import math

from servebench.estimate.fit import Calibration
from servebench.estimate.roofline import Deployment, capacity, serve

TIME_METRICS = ("ttft_ms", "tpot_ms", "ms_per_token", "e2e_ms")


def estimate(d: Deployment, levels: list[int], n_in: int, n_out: int, cal: Calibration,
             price_per_hour: float | None = None, engine: str | None = None, lockstep: bool = True) -> dict:
    cap = capacity(d, n_in + n_out)
    sigma = cal.sigma_for(d.hw, engine)
    out = {
        "estimate": True,
        "note": "ESTIMATES from a calibrated roofline, not measurements",
        "model": d.model.as_dict(), "hardware": d.hw.as_dict(), "gpus": d.tp, "schedule": d.schedule,
        "workload": {"input_tokens": n_in, "output_tokens": n_out, "arrivals": "lockstep" if lockstep else "spread"},
        "capacity": cap, "fits": cap["fits"],
        "calibration": cal.summary() if cal.n_runs else {"runs": 0, "factors": cal.factors.as_dict(),
                                                          "note": "uncalibrated: default factors"},
        "transfer": cal.transfer(d.hw) if cal.n_runs else "uncalibrated",
        "engine_calibrated": (engine in cal.engines) if cal.n_runs and engine else None,
        "engine_note": engine_note(engine, d.schedule, cal, lockstep),
        "sigma_log": sigma, "band": f"x{math.exp(-sigma):.2f} .. x{math.exp(sigma):.2f} (one sigma, log space)",
        "levels": [],
    }
    if not cap["fits"]:
        return out
    lo, hi = math.exp(-sigma), math.exp(sigma)
    for c in levels:
        p = serve(d, c, n_in, n_out, cal.factors, lockstep=lockstep)
        row = {"concurrency": c, **{k: p[k] for k in ("batch", "ttft_ms", "tpot_ms", "ms_per_token", "e2e_ms",
                                                      "output_tok_s", "request_throughput", "queue_ms",
                                                      "decode_step_ms", "decode_bound", "prefill_bound")}}
        for k in TIME_METRICS:
            row[k + "_band"] = [p[k] * lo, p[k] * hi]
        row["output_tok_s_band"] = [p["output_tok_s"] * lo, p["output_tok_s"] * hi]
        if price_per_hour:
            usd = price_per_hour / (p["output_tok_s"] * 3600) * 1e6
            row["usd_per_1m_output_tokens"] = usd
            row["usd_per_1m_output_tokens_band"] = [usd * lo, usd * hi]
            row["minutes_per_1m_output_tokens"] = 1e6 / p["output_tok_s"] / 60
        out["levels"].append(row)
    return out


def engine_note(engine: str | None, schedule: str, cal: Calibration, lockstep: bool) -> str:
    """What the engine named changes in these numbers, said beside them: no published per-engine
    factors are shipped, so only its prefill schedule (spread arrivals) and calibration runs of
    it make a difference; under lockstep arrivals every uncalibrated engine gets one answer."""
    from servebench.estimate.roofline import SCHEDULES

    if engine is None:
        return "engine not modelled"
    calibrated = bool(cal.n_runs and engine in cal.engines)
    if engine not in SCHEDULES:
        return f"engine {engine} not modelled: treated as a mixed-prefill engine (known: {', '.join(sorted(SCHEDULES))})"
    if calibrated:
        return f"engine {engine}: efficiency fitted on its own runs" + ("" if lockstep else f"; {schedule} prefill schedule")
    if lockstep:
        return (f"engine {engine} not modelled under lockstep arrivals: every engine gets these numbers "
                f"(--arrivals spread models its {schedule} prefill; --calibrate on its runs fits its efficiency)")
    return (f"engine {engine}: modelled by its {schedule} prefill schedule only; efficiency not engine-specific "
            "(--calibrate on its runs fits it)")
