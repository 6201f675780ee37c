"""Writing one run directory from what a measurement left in its RunState: records first (the
one thing that cannot be remade), then summary.json and run.json, then samples and plots; each
piece on its own, so one failure never loses the rest, and a full disk still ends in one line
that says where the records are (salvage.py)."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from servebench import SCHEMA_VERSION, __version__
from servebench.analysis import client_check, fidelity
from servebench.store import redact
from servebench.store import salvage
from servebench.store import runfiles
from servebench.analysis import verdict
from servebench.config import RunConfig
from servebench.analysis.decode import decode_records
from servebench.engines.hostcpu import cpu_model
from servebench.analysis.metrics import dist, summarize

if TYPE_CHECKING:
    from servebench.run.orchestrate import RunState


def write(cfg: RunConfig, st: RunState, adapter, model_dir, tokenizer, t_start: float) -> dict:
    """Write whatever exists; each piece on its own so one failure never loses the rest."""
    run_dir = st.run_dir
    failures: list[str] = []

    def attempt(what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - reported below, never silently lost
            failures.append(f"{what}: {e}")
            return None

    attempt("decode", decode_records, adapter, st.records)
    # every request that was due: sent, or failed before it could be (no connection)
    sent = [r for r in st.records if r.sent_ns or r.error]
    secrets = redact.secret_values(cfg.launcher_options, cfg.server_args)
    for r in sent:  # a server may echo a credential into its error message
        if r.error:
            r.error = redact.scrub_text(r.error, secrets)
    records_at, refused = salvage.write_records(run_dir, sent)  # first: the one thing not remade
    summary = summarize(sent, target_concurrency=cfg.load.concurrency, target_rate=cfg.load.rate)
    if st.status == "complete" and not st.error:
        st.error = verdict.failure(summary, cfg.max_error_rate, st.server_exit)
        st.status = "failed" if st.error else "complete"
    summary["warnings"] = list(st.warnings)
    summary["not_released"] = sum(1 for r in st.records if not r.warmup and not r.sent_ns and not r.error)
    summary["loop_lag_ms"] = dist([v / 1e6 for v in st.stats.loop_lag_ns])
    summary["read_lag_ms"] = dist(np.asarray(st.stats.read_lag_ns, dtype=np.float64) / 1e6)
    summary["connections"] = {"opened": len(st.connect_ns), "setup_ms": dist([v / 1e6 for v in st.connect_ns])}
    streamed = summary["output_tokens"]["streamed_total"]
    summary["client"] = {  # servebench's own cost during the load window (decoding comes after)
        "cpu_s": st.stats.cpu_ns / 1e9,
        "cpu_cores": st.stats.cpu_ns / 1e9 / summary["duration_s"] if summary["duration_s"] else None,
        "cpu_us_per_token": st.stats.cpu_ns / 1e3 / streamed if streamed else None,
        "workers": st.workers,
        "scheduling": st.stats.scheduling,
        **({"split": st.split, "clock_uncertainty_ms": max(r["clock_uncertainty_ms"] for r in st.split)} if st.split else {}),
    }
    summary.update(fidelity.blocks(getattr(st.workload, "info", None), sent,  # load.workload: trace, length mix
                                   cfg.load.mode == "rate" or getattr(st.workload, "offsets_ns", None) is not None,
                                   cfg.load.concurrency is not None))
    summary.setdefault("workload", {})["prefix_cache_start"] = fidelity.cache_start(st.extra_info, cfg.launcher)
    summary["client"]["verdict"] = client_check.judge(summary)  # did the client keep up? (servebench.analysis.client_check)
    summary["client"]["kept_up"] = summary["client"]["verdict"]["kept_up"]
    if st.self_check_warning:
        # a prediction from the warm-up's per-stream token rate times the streams: wrong whenever
        # the server cannot give every stream that rate (a 1000-request burst on vLLM CPU:
        # "needs ~155,864 tokens/s", delivered 1,665). The verdict measured the run, so the
        # prediction is a warning only where the client did not keep up or nothing was judged.
        summary["client"]["self_check"] = st.self_check_warning
        if summary["client"]["kept_up"] is not True:
            summary["warnings"].append(st.self_check_warning)
    start = min((r.sent_ns for r in sent if not r.warmup and r.sent_ns), default=0)
    end = max((r.end_ns for r in sent if not r.warmup and r.sent_ns), default=0)
    tel: dict[str, Any] = {}
    for s in st.samplers:
        attempt(f"{s.name} window", s.mark_window, start, end)
        tel[s.name] = attempt(f"{s.name} summary", s.summary) or {"available": False, "reason": "summary failed"}
    if tel:
        from servebench.telemetry import finalize

        summary["telemetry"] = attempt("telemetry finalize", finalize, tel, summary["output_tokens"]["total"]) or tel
    # small files next (the status as known now), then the bulky ones: samples and plots
    _write_status(cfg, st, summary, model_dir, tokenizer, t_start, run_dir, attempt)
    if summary.get("completed") and not failures:  # measured vs the hardware floor (docs/estimate.md)
        eff = quietly(_efficiency, run_dir)
        if eff:
            summary["efficiency"] = eff
            _write_status(cfg, st, summary, model_dir, tokenizer, t_start, run_dir, attempt)
    for s in st.samplers:
        attempt(f"{s.name} samples", s.write, run_dir)
    if start and cfg.plots and records_at == run_dir / "requests.parquet":
        from servebench.outputs.plots import plot_run

        if attempt("timeline plot", plot_run, run_dir) is None:
            salvage.remove_partial(run_dir, ("timeline.png", "timeline.html"))
    if refused is not None or failures:
        _results_error(st, run_dir, records_at, refused, failures)
        salvage.remove_partial(run_dir)
        best_effort = lambda what, fn, *args: quietly(fn, *args)  # noqa: E731 - the error line says it already
        _write_status(cfg, st, summary, model_dir, tokenizer, t_start, run_dir, best_effort)  # the files say it too
        if records_at is not None and records_at.parent != run_dir:  # rescued: a run dir of its own
            _write_status(cfg, st, summary, model_dir, tokenizer, t_start, records_at.parent, best_effort)
            redact.scrub_dir(records_at.parent, secrets)
    redact.scrub_dir(run_dir, secrets)  # server.log, error.log: whatever the server or a traceback printed
    return summary


def _write_status(cfg, st: RunState, summary: dict, model_dir, tokenizer, t_start: float, where: Path, attempt) -> None:
    summary["status"] = st.status
    summary["error"] = st.error
    secrets = redact.secret_values(cfg.launcher_options, cfg.server_args)
    info = redact.scrub(_run_info(cfg, st, model_dir, tokenizer, t_start), secrets)
    attempt("run.json", runfiles.write_json, where / "run.json", info)
    attempt("summary.json", runfiles.write_summary, where, redact.scrub(summary, secrets, keys=False))


def _results_error(st: RunState, run_dir: Path, records_at: Path | None, refused: str | None, failures: list[str]) -> None:
    """One line: what was not written, why, and where the measured records are."""
    if records_at is None:
        kept = f"the measured records were not saved ({refused}; no rescue dir took them either)" if salvage.disk_full(
            OSError(refused)) else f"requests.parquet not written ({refused})"
    elif records_at.parent != run_dir:
        kept = f"records rescued to {records_at} ({refused} in {run_dir})"
    else:
        kept = f"records kept in {records_at}"
    missing = sorted({f.split(":", 1)[0] for f in failures})
    full = any(salvage.disk_full(OSError(f)) for f in [refused or "", *failures])
    what = "results disk full" if full else "could not write all results"
    cause = salvage.one_line(OSError(failures[0].split(": ", 1)[-1])) if failures else ""
    why = f"{what}: {kept}" + (f"; not written: {', '.join(missing)} ({cause})" if missing else "")
    if records_at is not None:
        why += f"; rebuild them with `servebench report --rebuild {records_at.parent}`"
    if st.error:
        st.error = f"{st.error}; {why}"
    else:
        st.error, st.status, st.exit_code = why, "failed", verdict.EXIT_RESULTS


def _run_info(cfg: RunConfig, st: RunState, model_dir, tokenizer, t_start: float) -> dict:
    server = st.server
    host: dict[str, Any] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                            "cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()}
    for s in st.samplers:
        if hasattr(s, "host_info"):
            host.update(quietly(s.host_info) or {})
    return {
        "schema_version": SCHEMA_VERSION,
        "servebench_version": __version__,
        "status": st.status,
        "error": st.error,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "config": json.loads(cfg.model_dump_json()),
        "model": cfg.model,
        "model_dir": str(model_dir) if model_dir else None,
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "engine": {"name": cfg.backend, "version": st.engine_version},
        "server": {"base_url": server.base_url, "time_to_ready_s": server.time_to_ready_s, "info": server.info} if server else None,
        "host": host,
        "workers": {"count": st.workers, "reason": st.workers_reason,  # load processes and why
                    **({"split": st.split} if st.split else {})},
        "clock": "time.perf_counter_ns (CLOCK_MONOTONIC)",
        **st.extra_info,
    }


def _efficiency(run_dir: Path) -> dict:
    """From the files just written, so a stored run and this one are judged alike; never
    fails the run (unknown hardware or model: available false, with the reason)."""
    from servebench.estimate.efficiency import run_efficiency

    return run_efficiency(run_dir)


def quietly(fn, *args):
    """fn(*args), or None if it raised: for what must never stop a run from being written."""
    try:
        return fn(*args)
    except Exception:
        return None
