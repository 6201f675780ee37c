"""Writing one run directory from what a measurement left in its RunState: records first (the
one thing that cannot be remade), then summary.json and run.json, then samples and plots; each
piece on its own, so one failure never loses the rest, and a full disk still ends in one line
that says where the records are (salvage.py). The verdict (status, error, exit code) is judged
here and handed back as an Outcome, so the files and the caller say the same thing."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from servebench import SCHEMA_VERSION, __version__
from servebench.analysis import client_check, fidelity, per_request, select, turns
from servebench.store import redact
from servebench.store import salvage
from servebench.store import runfiles
from servebench.analysis import verdict
from servebench.config import RunConfig
from servebench.load import spooled
from servebench.engines.hostcpu import cpu_model
from servebench.analysis.metrics import dist, summarize
from servebench.records import RequestRecord
from servebench.run.state import Outcome, Prepared, RunState, Written


@dataclass(slots=True)
class _Job:
    """One run directory being written: what every piece reads, and what failed so far."""

    cfg: RunConfig
    st: RunState
    p: Prepared
    secrets: set[str]  # once per run: every status write and the final scrub use the same ones
    failures: list[str] = field(default_factory=list)

    def attempt(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - reported below, never silently lost
            self.failures.append(f"{what}: {e}")
            return None


def write(cfg: RunConfig, st: RunState, p: Prepared) -> Written:
    """Write whatever exists; each piece on its own so one failure never loses the rest.
    Returns the verdict and summary.json as written to the run directory."""
    job, run_dir = _Job(cfg, st, p, redact.secret_values({**cfg.launcher_options, **cfg.env}, cfg.server_args)), st.run_dir
    # a spooled run's token arrays go to disk as they are decoded: the post-load peak no longer
    # grows with the tokens streamed (issue 20); the summary reads them back as it needs them
    job.attempt("decode", spooled.decode_all, p.adapter, st.records, st.spools, run_dir if st.spools else None)
    decoded = not any(f.startswith("decode:") for f in job.failures)  # every spooled row is in memory
    sent = _sent(st.records, job.secrets)

    def make_room() -> bool:  # a nearly full disk: the spool's copy of these rows gives way to them
        if not (decoded and st.spools):
            return False
        spooled.remove(st.spools)
        return True

    records_at, refused = salvage.write_records(run_dir, sent, make_room)  # first: the one thing not remade
    if records_at is not None:  # the spools were the crash copy of these rows
        spooled.remove(st.spools)
    summary = summarize(sent, target_concurrency=cfg.load.concurrency, target_rate=cfg.load.rate,
                        steady_state=cfg.steady_state)
    outcome = _judged(cfg, st, summary)
    _traffic(cfg, st, sent, summary)
    start, end = _window(sent)
    try:
        _client(st, summary, sent, (end - start) / 1e9)
        if not st.records:  # stopped before the load began: every request of it was due, none released
            summary["not_released"] = _prepared_requests(cfg, p)
    finally:
        spooled.remove_lags(st.spools)  # read: the spools' lag files go with them
    _telemetry(job, summary, *_metric_window(summary, start, end))
    # small files next (the status as known now), then the bulky ones: samples and plots
    on_disk = _write_status(job, summary, outcome, run_dir, job.attempt)
    if summary.get("completed") and not job.failures:  # measured vs the hardware floor (docs/estimate.md)
        eff = quietly(_efficiency, run_dir)
        if eff:
            summary["efficiency"] = eff
            on_disk = _write_status(job, summary, outcome, run_dir, job.attempt) or on_disk
    _bulky(job, start, records_at)
    if refused is not None or job.failures:
        outcome = _results_error(outcome, run_dir, records_at, refused, job.failures)
        on_disk = _rewrite_after_failure(job, summary, outcome, records_at) or on_disk
    redact.scrub_dir(run_dir, job.secrets)  # server.log, error.log: whatever the server or a traceback printed
    return Written(outcome, on_disk)


def _sent(records: list[RequestRecord], secrets: set[str]) -> list[RequestRecord]:
    """Every request that was due: sent, or failed before it could be (no connection)."""
    sent = [r for r in records if r.sent_ns or r.error]
    for r in sent:  # a server may echo a credential into its error message
        if r.error:
            r.error = redact.scrub_text(r.error, secrets)
    return sent


def _judged(cfg: RunConfig, st: RunState, summary: dict) -> Outcome:
    """A load that ran to the end is judged on what it measured; any other keeps its cause."""
    if st.status == "complete" and not st.error:
        error = verdict.failure(summary, cfg.max_error_rate, st.server_exit)
        return Outcome("failed" if error else "complete", error, st.exit_code)
    return Outcome(st.status, st.error, st.exit_code)


def _traffic(cfg: RunConfig, st: RunState, sent: list[RequestRecord], summary: dict) -> None:
    """What was offered: a trace or length mix, prefix reuse, how closely the schedule was kept."""
    summary.update(fidelity.blocks(getattr(st.workload, "info", None), sent,  # load.workload: trace, length mix
                                   cfg.load.mode == "rate" or getattr(st.workload, "offsets_ns", None) is not None,
                                   cfg.load.concurrency is not None))
    summary.setdefault("workload", {})["prefix_cache_start"] = fidelity.cache_start(st.extra_info, cfg.launcher)
    sessions = turns.per_turn(st.records)  # multi-turn: TTFT and context by turn index
    if sessions is not None:
        summary["sessions"] = sessions


def _prepared_requests(cfg: RunConfig, p: Prepared) -> int:
    sessions = p.workload.sessions if p.workload is not None else None
    if sessions is not None:
        return sum(len(c.turns) for c in sessions)
    return max(0, len(p.prompts) - cfg.load.warmup)


def _client(st: RunState, summary: dict, sent: list[RequestRecord], whole_s: float) -> None:
    """servebench's own side of the run: warnings, lags, connections, CPU and whether it kept up.
    The CPU time is the whole load's, so it is per second and per token of the whole load, not
    of a steady-state window."""
    stats = st.stats
    summary["warnings"] = list(st.warnings)
    summary["not_released"] = sum(1 for r in st.records if not r.warmup and not r.sent_ns and not r.error)
    summary["loop_lag_ms"] = dist([v / 1e6 for v in stats.loop_lag_ns])
    # about one stamp a token: read a block at a time from where the load left them (issue 20)
    n, lags = spooled.lag_blocks(st.spools, stats.read_lag_ns)
    summary["read_lag_ms"] = select.dist(lags, n)[0]
    summary["connections"] = {"opened": len(st.connect_ns), "setup_ms": dist([v / 1e6 for v in st.connect_ns])}
    streamed = sum(per_request.streamed(r) for r in sent if not r.warmup and r.sent_ns)
    client = summary["client"] = {  # servebench's own cost during the load window (decoding comes after)
        "cpu_s": stats.cpu_ns / 1e9,
        "cpu_cores": stats.cpu_ns / 1e9 / whole_s if whole_s > 0 else None,
        "cpu_us_per_token": stats.cpu_ns / 1e3 / streamed if streamed else None,
        "workers": st.workers,
        "scheduling": stats.scheduling,
        **({"split": st.split, "clock_uncertainty_ms": max(r["clock_uncertainty_ms"] for r in st.split)} if st.split else {}),
    }
    client["verdict"] = client_check.judge(summary)  # did the client keep up? (servebench.analysis.client_check)
    client["kept_up"] = client["verdict"]["kept_up"]
    if st.self_check_warning:
        # a prediction from the warm-up's per-stream token rate times the streams: wrong whenever
        # the server cannot give every stream that rate (a 1000-request burst on vLLM CPU:
        # "needs ~155,864 tokens/s", delivered 1,665). The verdict measured the run, so the
        # prediction is a warning only where the client did not keep up or nothing was judged.
        client["self_check"] = st.self_check_warning
        if client["kept_up"] is not True:
            summary["warnings"].append(st.self_check_warning)


def _window(sent: list[RequestRecord]) -> tuple[int, int]:
    """The measured load's first send and last end (0, 0 when nothing was sent)."""
    start = min((r.sent_ns for r in sent if not r.warmup and r.sent_ns), default=0)
    end = max((r.end_ns for r in sent if not r.warmup and r.sent_ns), default=0)
    return start, end


def _metric_window(summary: dict, start: int, end: int) -> tuple[int, int, int]:
    """The span the summary's throughputs are over and the output tokens completed in it: the
    whole measured load, or its steady-state window (telemetry means, energy and J/token follow)."""
    blk = summary.get("steady_state") or {}
    if blk.get("applied"):
        start, end = start + blk["start_offset_ns"], start + blk["end_offset_ns"]
        return start, end, round(summary["output_token_throughput"] * summary["duration_s"])
    return start, end, summary["output_tokens"]["total"]


def _telemetry(job: _Job, summary: dict, start: int, end: int, tokens: int) -> None:
    tel: dict[str, Any] = {}
    for s in job.st.samplers:
        job.attempt(f"{s.name} window", s.mark_window, start, end)
        tel[s.name] = job.attempt(f"{s.name} summary", s.summary) or {"available": False, "reason": "summary failed"}
    if tel:
        from servebench.telemetry import finalize

        summary["telemetry"] = job.attempt("telemetry finalize", finalize, tel, tokens) or tel


def _bulky(job: _Job, start: int, records_at: Path | None) -> None:
    """Samples and the timeline plot: last, as they are the biggest and the least needed."""
    run_dir = job.st.run_dir
    for s in job.st.samplers:
        job.attempt(f"{s.name} samples", s.write, run_dir)
    if start and job.cfg.plots and records_at == run_dir / "requests.parquet":
        from servebench.outputs.plots import plot_run

        if job.attempt("timeline plot", plot_run, run_dir) is None:
            salvage.remove_partial(run_dir, ("timeline.png", "timeline.html"))


def _rewrite_after_failure(job: _Job, summary: dict, outcome: Outcome, records_at: Path | None) -> dict | None:
    """The files say what the error line says; a rescued records file gets a run dir of its own."""
    run_dir = job.st.run_dir
    salvage.remove_partial(run_dir)
    best_effort = lambda what, fn, *args: quietly(fn, *args)  # noqa: E731 - the error line says it already
    on_disk = _write_status(job, summary, outcome, run_dir, best_effort)
    if records_at is not None and records_at.parent != run_dir:  # rescued: a run dir of its own
        _write_status(job, summary, outcome, records_at.parent, best_effort)
        redact.scrub_dir(records_at.parent, job.secrets)
    return on_disk


def _write_status(job: _Job, summary: dict, outcome: Outcome, where: Path, attempt: Callable[..., Any]) -> dict | None:
    """run.json and summary.json with the status as known now; summary.json as written, or None."""
    summary["status"] = outcome.status
    summary["error"] = outcome.error
    info = redact.scrub(_run_info(job, outcome), job.secrets)
    attempt("run.json", runfiles.write_json, where / "run.json", info)
    return attempt("summary.json", runfiles.write_summary, where, redact.scrub(summary, job.secrets, keys=False))


def _results_error(outcome: Outcome, run_dir: Path, records_at: Path | None, refused: str | None,
                   failures: list[str]) -> Outcome:
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
    if outcome.error:
        return Outcome(outcome.status, f"{outcome.error}; {why}", outcome.exit_code)
    return Outcome("failed", why, verdict.EXIT_RESULTS)


def _run_info(job: _Job, outcome: Outcome) -> dict:
    cfg, st, p = job.cfg, job.st, job.p
    server = st.server
    host: dict[str, Any] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                            "cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()}
    for s in st.samplers:
        if hasattr(s, "host_info"):
            host.update(quietly(s.host_info) or {})
    return {
        "schema_version": SCHEMA_VERSION,
        "servebench_version": __version__,
        "status": outcome.status,
        "error": outcome.error,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.started_at)),
        "config": json.loads(cfg.model_dump_json()),
        "model": cfg.model,
        "model_dir": str(p.model_dir) if p.model_dir else None,
        "tokenizer": getattr(p.tokenizer, "name_or_path", None),
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
