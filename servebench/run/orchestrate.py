"""One benchmark run, top to bottom: prompts -> launch -> ready -> warm up -> load -> tear
down -> decode -> metrics -> runfiles. Whatever was measured is written, whatever was started
is stopped, on every exit path (errors and Ctrl-C included)."""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import TYPE_CHECKING, Callable, Iterator

from servebench.adapters import ADAPTERS
from servebench.adapters.base import Adapter, Request
from servebench.config import LoadConfig, RunConfig
from servebench.analysis.decode import decode_records
from servebench.errors import first_line
from servebench.launchers.base import Server
from servebench.records import RequestRecord
from servebench.load.loop import LoadPlan, drive, new_loop
from servebench.load.schedule import release_offsets_ns
from servebench.load.split import SplitLoad
from servebench.signals import interrupt_cause, shielded
from servebench.engines.specs import load_spec
from servebench.run import frontdoor, writer
from servebench.run.frontdoor import most_in_flight
from servebench.run.state import Prepared, RunState
from servebench.store import runfiles, spool
from servebench.load import spooled
from servebench.analysis import verdict
from servebench.load.prompts import load_tokenizer
from servebench.run.writer import quietly

if TYPE_CHECKING:
    from servebench.load.prompts import Prompt
    from transformers import PreTrainedTokenizerBase

    from servebench.run.session import ServerSession


class RunError(RuntimeError):
    """A run could not complete; the message is one line. run_dir holds what was measured, and
    summary is its summary.json as written (None when none was)."""

    def __init__(self, message: str, run_dir: Path | None = None, code: int = verdict.EXIT_FAILED,
                 summary: dict | None = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.code = code  # the process exit code (servebench.analysis.verdict)
        self.summary = summary

    @property
    def interrupted(self) -> bool:
        return self.code in (130, 143)  # Ctrl-C, SIGTERM (signals.interrupt_cause)


@dataclass(frozen=True, slots=True)
class Measured:
    """A finished measurement: its run directory and its summary.json as written there."""

    run_dir: Path
    summary: dict | None


def prepare(cfg: RunConfig, on_phase: Callable[[str], None] | None = None,
            tokenizer: PreTrainedTokenizerBase | None = None) -> Prepared:
    """Spec, adapter, model and exact-length prompts; raises before anything is started."""
    phase = on_phase or (lambda msg: None)
    spec = load_spec(cfg.backend)
    api = cfg.api or spec.adapter
    if api not in ADAPTERS:
        raise RunError(f"unknown api {api!r} (known: {', '.join(sorted(ADAPTERS))})", code=2)
    model_dir = _model_dir(cfg)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.workload.tokenizer or model_dir or cfg.model)
    phase("building prompts")
    wl = _prompts(cfg, tokenizer)
    return Prepared(spec, api, ADAPTERS[api], model_dir, tokenizer, wl.prompts, wl)


def run(cfg: RunConfig, progress: Callable[[int, int], None] | None = None, on_phase: Callable[[str], None] | None = None) -> Path:
    """One cell: a server session opened for one measurement and closed after it."""
    from servebench.run.session import ServerSession

    p = prepare(cfg, on_phase)
    try:
        run_dir = runfiles.new_run_dir(cfg.results_dir, cfg.name, cfg.backend)
    except OSError as e:  # a read-only disk, a path under /proc: nothing was started
        raise RunError(f"cannot write the run to {cfg.results_dir} ({e.strerror or e}); nothing was started", code=2) from None
    session = ServerSession(cfg, p.spec, p.api, p.model_dir, log_dir=run_dir, in_flight=most_in_flight(cfg))
    return measure(cfg, p, session, run_dir, progress, on_phase, own_session=True).run_dir


def measure(cfg: RunConfig, p: Prepared, session: ServerSession, run_dir: Path,
            progress: Callable[[int, int], None] | None = None, on_phase: Callable[[str], None] | None = None, *,
            own_session: bool = False, run_info: dict | None = None) -> Measured:
    """One load against the session's server -> one run directory. With own_session the
    session is opened here and closed before the results are written (the `run` case).
    RunError (with the summary as written) when the run failed or was interrupted."""
    phase = on_phase or (lambda msg: None)
    st = RunState(run_dir, api=p.api, workload=p.workload)
    try:
        if own_session:
            session.open(phase)
        st.server = session.server
        st.engine_version = session.engine_version
        st.warnings += _said(phase, frontdoor.warning(st.server.base_url, p.spec, most_in_flight(cfg)))
        # one probe request; fields the server rejects are dropped (recorded in run.json
        # server.info.request_probe, and a warning)
        from servebench.transport.probe import before_load

        extra = before_load(st.server, p.adapter, session.served, p.spec.request_extra.get(p.api), st.warnings,
                            timeout_s=cfg.load.request_timeout_s)
        st.samplers = _samplers(cfg, st.server, p.spec.metrics)
        for s in st.samplers:
            s.start()
        phase("running load")
        if p.workload is not None and p.workload.sessions is not None:  # multi-turn: load/session_loop.py
            _drive_sessions(cfg, st, p, session.served, progress, extra)
        else:
            _drive_all(cfg, st, p.adapter, p.prompts, session.served, progress, extra)
        st.status = "complete"
    except KeyboardInterrupt:
        cause, st.exit_code = interrupt_cause()
        st.status, st.error = "interrupted", f"interrupted by {cause}"
    except Exception as e:  # one line for the user; the run dir keeps what was measured
        st.error = first_line(e)
        quietly((st.run_dir / "error.log").write_text, traceback.format_exc())  # the whole story, on disk
    finally:
        with shielded(deliver=False) as held:
            for s in st.samplers:
                quietly(s.stop)
            st.server_exit = quietly(session.exited)  # a launched server that died by itself
            teardown = None
            if own_session:
                try:
                    session.close()
                except Exception as e:  # noqa: BLE001 - what was measured is written whatever the teardown did
                    teardown = f"server teardown failed: {first_line(e)}"
                    st.warnings.append(teardown)
            st.extra_info = {**(run_info or {}), "session": _session_info(session)}
            written = writer.write(cfg, st, p)
    out = written.outcome  # the writer judged the run: summary.json says the same
    if out.error:
        raise RunError(out.error, st.run_dir, out.exit_code, written.summary)
    if teardown:  # results kept; a server may be left running (and billing): said, and not exit 0
        raise RunError(f"{teardown}; the results are kept, check that nothing is left running "
                       "(servebench cleanup)", st.run_dir, 1, written.summary)
    if held:  # Ctrl-C while a finished load was written: kept, then honoured (never dropped)
        cause, code = _cause(held[-1])
        raise RunError(f"interrupted by {cause} after the load ended (its results are complete and kept)",
                       st.run_dir, code, written.summary)
    return Measured(st.run_dir, written.summary)


def _said(phase: Callable[[str], None], warning: str | None) -> list[str]:
    """A warning said before the load (and kept in summary.json)."""
    if warning:
        phase(f"warning: {warning}")
    return [warning] if warning else []


def _cause(signum: int) -> tuple[str, int]:
    import signal

    if signum == signal.SIGINT:
        return "Ctrl-C", 128 + signum
    return signal.Signals(signum).name, 128 + signum


def _session_info(session) -> dict:
    out = {"launch_s": session.launch_s, "cache_resets": list(session.cache_resets)}
    if session.front_door:
        out["front_door"] = dict(session.front_door)
    return out


def _model_dir(cfg: RunConfig) -> Path | None:
    """A preset name or local dir; None for a hub id benchmarked through an endpoint."""
    from servebench.engines.presets import resolve_model, served_by_name

    try:
        return resolve_model(cfg.model)
    except ValueError:
        if served_by_name(cfg.model, cfg.launcher):
            # a name the server knows (meta-llama/Llama-2-13b-hf, a served alias): the server
            # loads it; prompts need its tokenizer here (--tokenizer, else the name itself)
            return None
        raise


def _prompts(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase):
    from servebench.load import workload

    return workload.build(cfg, tokenizer)


def _samplers(cfg: RunConfig, server: Server, metric_map: dict) -> list:
    if not cfg.telemetry:
        return []
    from servebench.telemetry import make_samplers

    return make_samplers(server, cfg.gpus, metric_map=metric_map or None)


def _mark(samplers: list) -> None:
    """A sample exactly at a window edge, so counters (energy, server tokens) are read there."""
    for s in samplers:
        quietly(s.sample_now)


def _drive_sessions(cfg: RunConfig, st: RunState, p: Prepared, served: str,
                    progress: Callable[[int, int], None] | None, extra: dict | None) -> None:
    """Conversations: each turn is built from the previous answer, so one process drives them
    (no --workers split, no self-check: the client's load is a few live sessions)."""
    from servebench.load import session_loop as sl

    st.workers, st.workers_reason = 1, "multi-turn sessions run in one load process"
    st.records = sl.session_records(p.workload, cfg.load.warmup)
    sp = spooled.for_sessions(st.run_dir / spool.NAME, st.api, st.records, cfg.load.realtime)
    st.spools = [sp.path] if sp else []
    job = sl.SessionJob(st.server.base_url, p.adapter, served, extra, cfg.load, p.workload, st.stats, st.connect_ns,
                        progress, on_done=sp.add if sp else None)
    try:
        sl.run_sessions(job, st.records)
    finally:  # the texts the spool took come back first: the client's counts read them
        spooled.finish_sessions(sp, st.records, st.stats, st.warnings)
        if p.tokenizer is not None:
            sl.client_counts(p.tokenizer, st.records)
    _mark(st.samplers)


def _drive_all(cfg: RunConfig, st: RunState, adapter: Adapter, prompts: list[Prompt], served: str,
               progress: Callable[[int, int], None] | None, extra: dict | None) -> None:
    server = st.server
    kind = "sagemaker" if server.base_url.startswith("sagemaker://") else "http"
    load = cfg.load
    # built one at a time as they are encoded: a Request (body dict + JSON) beside its wire bytes
    # was ~3.9 KB of a 512-token request's ~8 KB held through the whole load (docs/performance.md)
    reqs = (adapter.build(p.text, p.output_tokens, model=served, extra=extra) for p in prompts)
    st.records = [
        RequestRecord(index=i - load.warmup, warmup=i < load.warmup, input_tokens=p.input_tokens, output_tokens=p.output_tokens)
        for i, p in enumerate(prompts)
    ]
    loop_runner = asyncio.Runner(loop_factory=new_loop)
    try:
        split = loop_runner.run(_drive_async(cfg, kind, server.base_url, reqs, st, progress))
    finally:
        loop_runner.close()
    if split is not None:  # --workers N: the measured part runs in N processes (blocking here)
        _drive_workers(split, st, load)


async def _drive_async(cfg: RunConfig, kind: str, base_url: str, reqs: Iterator[Request], st: RunState,
                       progress: Callable[[int, int], None] | None) -> SplitLoad | None:
    """Warm up, self-check, then the measured load here; or, with several load processes, the
    measured load handed back for them to drive (they open their own connections)."""
    from servebench.transport import transport_class

    load = cfg.load
    tr = transport_class(kind)(base_url, timeout_s=load.request_timeout_s)
    wires = [tr.encode(r, rec.index) for r, rec in zip(reqs, st.records)]
    w = load.warmup
    try:
        if w:  # same path as the measured requests; records kept, flagged, excluded from metrics
            warm = LoadPlan(wires[:w], st.records[:w], None, min(w, load.concurrency or w))
            await tr.prepare(warm.concurrency)
            await drive(tr, warm, perf_counter_ns(), realtime=load.realtime)
        await _self_check(load, st)
        offsets = release_offsets_ns(load, len(wires) - w, st.workload)
        duration_ns = int(load.duration_s * 1e9) if load.duration_s else None
        conns = _connections_needed(cfg, st.records[:w], offsets if st.workload and st.workload.offsets_ns else None)
        spool_it = spooled.wanted(sum(r.output_tokens for r in st.records[w:]))
        if st.workers > 1 or load.ray_workers:
            return SplitLoad(base_url, kind, wires[w:], st.records[w:], offsets, load.concurrency, duration_ns,
                             st.workers, connections=conns, timeout_s=load.request_timeout_s, adapter=st.api,
                             stats=st.stats, connect_ns=st.connect_ns, progress=progress,
                             on_t0=lambda: _mark(st.samplers), actors=st.split,
                             spool_dir=st.run_dir if spool_it else None,
                             on_records=spooled.spiller(st.run_dir) if spool_it else None)
        sp = spooled.start(st.run_dir / spool.NAME, st.api, realtime=load.realtime) if spool_it else None
        st.spools = [sp.path] if sp else []
        plan = LoadPlan(wires[w:], st.records[w:], offsets, load.concurrency, duration_ns,
                        on_done=sp.add if sp else None, on_lags=sp.add_lags if sp else None)
        await tr.prepare(conns)
        _mark(st.samplers)
        try:
            await drive(tr, plan, perf_counter_ns() + 20_000_000, progress, st.stats, realtime=load.realtime)
        finally:
            spooled.stop(sp, st.stats, st.warnings, keep_lags=True)  # read by the writer a block at a time
        _mark(st.samplers)
    finally:
        if not (st.workers > 1 or load.ray_workers):  # split: the workers' own connections, not the warm-up's
            st.connect_ns.extend(tr.connect_ns)
        await tr.close()
    return None


def _drive_workers(plan: SplitLoad, st: RunState, load: LoadConfig) -> None:
    """--workers N: N processes, one shared t0, records merged back in place (also on Ctrl-C);
    ray:N: N actors on a Ray cluster, the same way, their clocks agreed first."""
    if load.ray_workers:
        from servebench.load.ray_workers import run_split_ray as split
    else:
        from servebench.load.workers import run_split as split
    from servebench.load.schedule import workers_used

    used = workers_used(len(plan.records), load.concurrency, plan.workers)
    if used < plan.workers:  # client.workers is what ran: the client check divides the CPU by it
        st.workers_reason = f"{plan.workers} asked, {used} with a request and a slot each; {st.workers_reason}".rstrip("; ")
    st.workers = used
    try:
        split(plan)
        _mark(st.samplers)
    finally:
        st.records[load.warmup:] = plan.records
        st.spools = spooled.found(st.run_dir)  # the workers' crash copies, removed with the parquet


async def _self_check(load: LoadConfig, st: RunState) -> None:
    """Measure the client's own floor against the built-in emulator (in a thread: it runs its
    own event loop) and warn when the requested load is beyond it."""
    from servebench.run import calibrate

    warm = st.records[: load.warmup]
    # the per-stream token rate needs token times: undecoded, the warm-up showed none and the
    # self-check never warned (issue 11: 5000 streams on one process, nothing said). Decoded
    # once: the writer's decode_records passes over records already decoded.
    decode_records(ADAPTERS[st.api], warm)
    chk = await asyncio.get_running_loop().run_in_executor(None, calibrate.check, load, warm, load.self_check)
    st.workers, st.workers_reason = chk.workers, chk.workers_reason
    st.self_check_warning = chk.warning


def _connections_needed(cfg: RunConfig, warm: list[RequestRecord], trace_offsets: list[int] | None = None) -> int:
    """Connections to open before t0: one per request that can be in flight at once (a trace:
    its busiest stretch, so a burst does not open connections inside its requests' sends)."""
    load, n = cfg.load, cfg.load.requests
    if load.mode == "concurrency":
        return min(n, load.concurrency)
    if load.mode == "burst":
        return min(n, load.concurrency or n)
    e2e = [(r.end_ns - r.sent_ns) / 1e9 for r in warm if r.ok]
    if trace_offsets is not None:
        from servebench.load.schedule import most_released_within

        return min(n, load.concurrency or n, most_released_within(trace_offsets, int((max(e2e) if e2e else 1.0) * 2e9)) + 4)
    guess = int(load.rate * (max(e2e) if e2e else 1.0) * 2) + 4
    return min(n, load.concurrency or n, guess)
