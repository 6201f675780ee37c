"""What-if: one deployment's predicted metrics per load level, with bands and cost."""

from __future__ import annotations

import math

from servebench.estimate import fit
from servebench.estimate.fit import Calibration
from servebench.estimate.roofline import Deployment, capacity, link_note, serve

TIME_METRICS = ("ttft_ms", "tpot_ms", "ms_per_token", "e2e_ms")


def _level(d: Deployment, c: int, n_in: int, n_out: int, cal: Calibration, lockstep: bool, load: str | None) -> dict:
    """One level's metrics: the closed formulas (load None) or the simulated scheduler, where a
    level is closed-loop users, a burst's size or a rate in requests/s."""
    if load is None:
        return serve(d, c, n_in, n_out, cal.factors, lockstep=lockstep)
    from servebench.estimate.sim import Load, simulate

    n = max(c * 8, 64) if load != "burst" else c
    p = simulate(d, cal.factors, Load(mode=load, users=c, rate=float(c), requests=n, n_in=n_in, n_out=n_out,
                                      stagger_s=0.0 if lockstep else 1.0))
    b = min(c, capacity(d, n_in + n_out).get("max_batch") or 1)
    step = serve(d, b, n_in, n_out, cal.factors, lockstep=lockstep)
    # the formulas' ms/token is client-side (e2e / output tokens); keep that meaning here
    return {**p, "ms_per_token": p["e2e_ms"] / n_out, "batch": b, "decode_step_ms": step["decode_step_ms"],
            "decode_bound": step["decode_bound"], "prefill_bound": step["prefill_bound"]}


def estimate(d: Deployment, levels: list[int], tokens: tuple[int, int], cal: Calibration,
             price_per_hour: float | None = None, engine: str | None = None, lockstep: bool = True,
             load: str | None = None) -> dict:
    """`tokens`: (input, output) per request."""
    n_in, n_out = tokens
    cap = capacity(d, n_in + n_out)
    workload = {"input_tokens": n_in, "output_tokens": n_out, "arrivals": "lockstep" if lockstep else "spread",
                "load": load or "closed", "scheduler": "simulated" if load else "formula"}
    out = header(d, cal, engine, lockstep, workload, cap)
    if not cap["fits"]:
        return out
    most = 0
    for c in levels:
        p = _level(d, c, n_in, n_out, cal, lockstep, load)
        most = max(most, p.get("peak_in_flight", c))
        out["levels"].append(level_row({"concurrency": c}, p, ("batch", "ttft_ms", "tpot_ms", "ms_per_token", "e2e_ms",
                                                               "output_tok_s", "request_throughput", "queue_ms",
                                                               "decode_step_ms", "decode_bound", "prefill_bound"),
                                       out["sigma_log"], price_per_hour))
    out["front_door_note"] = front_door_note(engine, most)
    return out


def front_door_note(engine: str | None, most: int) -> str | None:
    """When the engine's HTTP server refuses past a default number of requests in flight (its
    spec's front_door: TGI's 128) and the load reaches more: the estimate serves them all, as the
    engine does with the cap raised (servebench raises it when it launches the engine)."""
    from servebench.engines.specs import SpecError, load_spec

    try:
        spec = load_spec(engine) if engine else None
    except SpecError:
        return None
    door = spec.front_door if spec else None
    if door is None or most <= door.default:
        return None
    return (f"{engine} refuses requests past {door.default} in flight at its defaults ({spec.flags.max_concurrent_requests}, "
            f"HTTP 429); this load reaches {most:,}: the estimate serves them all, as {engine} does with the cap raised "
            f"(servebench raises it when it launches {engine})")


def header(d: Deployment, cal: Calibration, engine: str | None, lockstep: bool, workload: dict, cap: dict) -> dict:
    """What every estimate says before its levels: the deployment, its memory, the calibration, the band."""
    sigma = cal.sigma_for(d.hw, engine)
    return {
        "estimate": True,
        "note": "ESTIMATES from a calibrated roofline, not measurements",
        "model": d.model.as_dict(), "hardware": d.hw.as_dict(), "gpus": d.tp, "schedule": d.schedule,
        "admission": {"prompt": "on the prompt's KV blocks, preempting (recompute) when the pool fills",
                      "reserve": "prompt + output reserved"}[d.admit],
        "workload": workload,
        "capacity": cap, "fits": cap["fits"],
        "calibration": cal.summary() if cal.n_runs else {"runs": 0, "factors": cal.factors.as_dict(),
                                                          "basis": cal.basis, "note": (
                                                              "factors fitted on " + cal.basis + ", band from their "
                                                              "leave-one-source-out error" if cal.basis.startswith("published")
                                                              else "default factors")},
        "transfer": cal.transfer(d.hw) if cal.n_runs else "uncalibrated",
        "engine_calibrated": (engine in cal.engines) if cal.n_runs and engine else None,
        "engine_note": engine_note(engine, d.schedule, cal, lockstep),
        "link_note": link_note(d),
        "sigma_log": sigma, "band": f"x{math.exp(-sigma):.2f} .. x{math.exp(sigma):.2f} ({_band_basis(cal, sigma)})",
        "levels": [],
    }


def level_row(row: dict, p: dict, keys: tuple, sigma: float, price_per_hour: float | None) -> dict:
    """One level of the output: the keys of p, the band around every time and the throughput, and cost."""
    lo, hi = math.exp(-sigma), math.exp(sigma)
    row.update({k: p.get(k) for k in keys})  # tpot_ms is absent when every request makes one token
    if "preemptions" in p:  # the simulated scheduler's: requests sent back to recompute (vLLM)
        row["preemptions"] = p["preemptions"]
    for k in TIME_METRICS:
        if row.get(k) is not None:
            row[k + "_band"] = [p[k] * lo, p[k] * hi]
    row["output_tok_s_band"] = [p["output_tok_s"] * lo, p["output_tok_s"] * hi]
    if price_per_hour:
        usd = price_per_hour / (p["output_tok_s"] * 3600) * 1e6
        row["usd_per_1m_output_tokens"] = usd
        row["usd_per_1m_output_tokens_band"] = [usd * lo, usd * hi]
        row["minutes_per_1m_output_tokens"] = 1e6 / p["output_tok_s"] / 60
    return row


def _band_basis(cal: Calibration, sigma: float) -> str:
    """Where the band's width comes from, said beside it: both kinds are a widest held-out miss."""
    if not cal.n_runs:
        return ("the widest leave-one-source-out miss over the published rows" if cal.basis.startswith("published")
                else "the documented default spread")
    if cal.n_runs < 3 and cal.sigma == fit.DEFAULT_SIGMA:
        base = "the uncalibrated spread: fewer than 3 runs"
    else:
        base = "the widest leave-one-run-out miss over your runs"
    return base + ("" if sigma == cal.sigma else ", widened for hardware or engine not among them")


def engine_note(engine: str | None, schedule: str, cal: Calibration, lockstep: bool) -> str:
    """What the engine named changes in these numbers, said beside them. The published rows'
    factors are per GPU family, and per (family, engine) only where a shipped source measured
    that engine beside another on the family; elsewhere, without calibration runs of it, the
    engine is "not modelled" beyond its prefill schedule (which only matters when arrivals are
    spread)."""
    if engine is None:
        return "engine not modelled"
    if not cal.n_runs and cal.basis.startswith("published") and "/" in cal.basis:
        # an engine-specific published group: its efficiency, not only its schedule, is the engine's
        return (f"engine {engine}: efficiency fitted on published sources that compare engines on this GPU family "
                f"({cal.basis.removeprefix('published rows ').strip('()')}; engine versions pooled)"
                + ("" if lockstep else f"; {schedule} prefill schedule"))
    note = _schedule_note(engine, schedule, cal, lockstep)
    if not cal.n_runs and cal.basis.startswith("published"):
        return "engine not modelled (the published fit is per GPU family); " + note
    return note


def _schedule_note(engine: str, schedule: str, cal: Calibration, lockstep: bool) -> str:
    from servebench.estimate.roofline import SCHEDULES

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
