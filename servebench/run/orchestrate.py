"""One benchmark run, top to bottom: prompts -> launch -> ready -> warm up -> load -> tear
down -> decode -> metrics -> runfiles. Whatever was measured is written, whatever was started
is stopped, on every exit path (errors and Ctrl-C included)."""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Callable

from servebench.adapters import ADAPTERS
from servebench.config import RunConfig
from servebench.analysis.decode import decode_records
from servebench.launchers.base import Server
from servebench.records import RequestRecord
from servebench.load.loop import LoadPlan, LoadStats, drive, new_loop
from servebench.load.schedule import release_offsets_ns
from servebench.signals import interrupt_cause, shielded
from servebench.engines.specs import load_spec
from servebench.run import writer
from servebench.store import runfiles
from servebench.analysis import verdict
from servebench.load.prompts import Prompt, from_jsonl, load_tokenizer, synthetic
from servebench.run.writer import quietly


class RunError(RuntimeError):
    """A run could not complete; the message is one line. run_dir holds what was measured."""

    def __init__(self, message: str, run_dir: Path | None = None, code: int = verdict.EXIT_FAILED) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.code = code  # the process exit code (servebench.analysis.verdict)

    @property
    def interrupted(self) -> bool:
        return self.code in (130, 143)  # Ctrl-C, SIGTERM (signals.interrupt_cause)


@dataclass
class RunState:
    run_dir: Path
    records: list[RequestRecord] = field(default_factory=list)
    stats: LoadStats = field(default_factory=LoadStats)
    server: Server | None = None
    samplers: list = field(default_factory=list)
    status: str = "failed"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    engine_version: str | None = None
    api: str = ""  # the adapter key in use
    connect_ns: list[int] = field(default_factory=list)  # set-up of connections opened before t0
    exit_code: int = verdict.EXIT_FAILED  # used when error is set
    server_exit: str | None = None  # "was killed by signal 9": a launched server that died on its own
    extra_info: dict = field(default_factory=dict)  # run.json blocks from the caller (sweep cell, session)
    workers: int = 1  # load processes used (--workers, or the auto choice)
    workers_reason: str = ""
    self_check_warning: str | None = None  # a prediction; writer.write weighs it against the verdict
    split: list[dict] = field(default_factory=list)  # --workers ray:N: each actor's node, share and clock


@dataclass
class Prepared:
    """What a measurement needs before any server exists: built once, then reused."""

    spec: Any
    api: str
    adapter: Any
    model_dir: Path | None
    tokenizer: Any
    prompts: list


def prepare(cfg: RunConfig, on_phase: Callable[[str], None] | None = None, tokenizer=None) -> Prepared:
    """Spec, adapter, model and exact-length prompts; raises before anything is started."""
    phase = on_phase or (lambda msg: None)
    spec = load_spec(cfg.backend)
    api = cfg.api or spec.adapter
    if api not in ADAPTERS:
        raise RunError(f"unknown api {api!r} (known: {', '.join(sorted(ADAPTERS))})")
    model_dir = _model_dir(cfg)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.workload.tokenizer or model_dir or cfg.model)
    phase("building prompts")
    return Prepared(spec, api, ADAPTERS[api], model_dir, tokenizer, _prompts(cfg, tokenizer))


def run(cfg: RunConfig, progress: Callable[[int, int], None] | None = None, on_phase: Callable[[str], None] | None = None) -> Path:
    """One cell: a server session opened for one measurement and closed after it."""
    from servebench.run.session import ServerSession

    p = prepare(cfg, on_phase)
    run_dir = runfiles.new_run_dir(cfg.results_dir, cfg.name, cfg.backend)
    session = ServerSession(cfg, p.spec, p.api, p.model_dir, log_dir=run_dir)
    return measure(cfg, p, session, run_dir, progress, on_phase, own_session=True)


def measure(cfg: RunConfig, p: Prepared, session, run_dir: Path, progress: Callable[[int, int], None] | None = None,
            on_phase: Callable[[str], None] | None = None, *, own_session: bool = False,
            run_info: dict | None = None) -> Path:
    """One load against the session's server -> one run directory. With own_session the
    session is opened here and closed before the results are written (the `run` case)."""
    phase = on_phase or (lambda msg: None)
    st = RunState(run_dir, api=p.api)
    t_start = time.time()
    try:
        if own_session:
            session.open(phase)
        st.server = session.server
        st.engine_version = session.engine_version
        # one probe request; fields the server rejects are dropped (recorded in run.json
        # server.info.request_probe, and a warning)
        from servebench.transport.probe import before_load

        extra = before_load(st.server, p.adapter, session.served, p.spec.request_extra.get(p.api), st.warnings,
                            timeout_s=cfg.load.request_timeout_s)
        st.samplers = _samplers(cfg, st.server, p.spec.metrics)
        for s in st.samplers:
            s.start()
        phase("running load")
        _drive_all(cfg, st, p.adapter, p.prompts, session.served, progress, extra)
        st.status = "complete"
    except KeyboardInterrupt:
        cause, st.exit_code = interrupt_cause()
        st.status, st.error = "interrupted", f"interrupted by {cause}"
    except Exception as e:  # one line for the user; the run dir keeps what was measured
        st.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        quietly((st.run_dir / "error.log").write_text, traceback.format_exc())  # the whole story, on disk
    finally:
        with shielded():
            for s in st.samplers:
                quietly(s.stop)
            st.server_exit = quietly(session.exited)  # a launched server that died by itself
            if own_session:
                session.close()
            st.extra_info = {**(run_info or {}), "session": _session_info(session)}
            writer.write(cfg, st, p.adapter, p.model_dir, p.tokenizer, t_start)
    if st.error:  # writer.write judged the run: summary.json says the same
        raise RunError(st.error, st.run_dir, st.exit_code)
    return st.run_dir


def _session_info(session) -> dict:
    return {"launch_s": session.launch_s, "cache_resets": list(session.cache_resets)}


def _model_dir(cfg: RunConfig) -> Path | None:
    """A preset name or local dir; None for a hub id benchmarked through an endpoint."""
    from servebench.engines.presets import resolve_model

    try:
        return resolve_model(cfg.model)
    except ValueError:
        if cfg.launcher != "process" and not cfg.model.startswith((".", "/", "~")):
            # a name the server knows (meta-llama/Llama-2-13b-hf, a served alias): the server
            # loads it; prompts need its tokenizer here (--tokenizer, else the name itself)
            return None
        raise


def _prompts(cfg: RunConfig, tokenizer) -> list[Prompt]:
    w, n = cfg.workload, cfg.load.requests + cfg.load.warmup
    if w.prompts_file:
        return from_jsonl(w.prompts_file, tokenizer, w.output_tokens, n)
    return synthetic(tokenizer, n, w.input_tokens, w.output_tokens, seed=cfg.load.seed)


def _samplers(cfg: RunConfig, server: Server, metric_map: dict) -> list:
    if not cfg.telemetry:
        return []
    from servebench.telemetry import make_samplers

    return make_samplers(server, cfg.gpus, metric_map=metric_map or None)


def _mark(samplers: list) -> None:
    """A sample exactly at a window edge, so counters (energy, server tokens) are read there."""
    for s in samplers:
        quietly(s.sample_now)


def _drive_all(cfg: RunConfig, st: RunState, adapter, prompts, served: str, progress, extra: dict | None) -> None:
    server = st.server
    kind = "sagemaker" if server.base_url.startswith("sagemaker://") else "http"
    load = cfg.load
    reqs = [adapter.build(p.text, p.output_tokens, model=served, extra=extra) for p in prompts]
    st.records = [
        RequestRecord(index=i - load.warmup, warmup=i < load.warmup, input_tokens=p.input_tokens, output_tokens=p.output_tokens)
        for i, p in enumerate(prompts)
    ]
    loop_runner = asyncio.Runner(loop_factory=new_loop)
    try:
        rest = loop_runner.run(_drive_async(cfg, kind, server.base_url, reqs, st, progress))
    finally:
        loop_runner.close()
    if rest is not None:  # --workers N: the measured part runs in N processes (blocking here)
        _drive_workers(cfg, kind, server.base_url, *rest, st, progress)


async def _drive_async(cfg: RunConfig, kind: str, base_url: str, reqs, st: RunState, progress):
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
        offsets = release_offsets_ns(load, len(wires) - w)
        duration_ns = int(load.duration_s * 1e9) if load.duration_s else None
        conns = _connections_needed(cfg, st.records[:w])
        if st.workers > 1 or load.ray_workers:
            return wires[w:], offsets, duration_ns, conns  # the workers open their own connections
        plan = LoadPlan(wires[w:], st.records[w:], offsets, load.concurrency, duration_ns)
        await tr.prepare(conns)
        _mark(st.samplers)
        await drive(tr, plan, perf_counter_ns() + 20_000_000, progress, st.stats, realtime=load.realtime)
        _mark(st.samplers)
    finally:
        st.connect_ns.extend(tr.connect_ns)
        await tr.close()


def _drive_workers(cfg, kind, base_url, wires, offsets, duration_ns, conns, st: RunState, progress) -> None:
    """--workers N: N processes, one shared t0, records merged back in place (also on Ctrl-C);
    ray:N: N actors on a Ray cluster, the same way, their clocks agreed first."""
    from servebench.load.workers import run_split

    load, w = cfg.load, cfg.load.warmup
    measured = st.records[w:]
    split, extra = run_split, {}
    if load.ray_workers:
        from servebench.load.ray_workers import run_split_ray

        split, extra = run_split_ray, {"split": st.split}
    try:
        split(base_url, kind, wires, measured, offsets, load.concurrency, duration_ns, st.workers,
              connections=conns, timeout_s=load.request_timeout_s, progress=progress, stats=st.stats,
              connect_ns=st.connect_ns, on_t0=lambda: _mark(st.samplers), adapter=st.api, **extra)
        _mark(st.samplers)
    finally:
        st.records[w:] = measured


async def _self_check(load, st: RunState) -> None:
    """Measure the client's own floor against the built-in emulator (in a thread: it runs its
    own event loop) and warn when the requested load is beyond it."""
    from servebench.run import calibrate

    warm = st.records[: load.warmup]
    # the per-stream token rate needs token times: undecoded, the warm-up showed none and the
    # self-check never warned (issue 11: 5000 streams on one process, nothing said)
    decode_records(ADAPTERS[st.api], warm)
    chk = await asyncio.get_running_loop().run_in_executor(None, calibrate.check, load, warm, load.self_check)
    st.workers, st.workers_reason = chk.workers, chk.workers_reason
    st.self_check_warning = chk.warning


def _connections_needed(cfg: RunConfig, warm: list[RequestRecord]) -> int:
    """Connections to open before t0: one per request that can be in flight at once."""
    load, n = cfg.load, cfg.load.requests
    if load.mode == "concurrency":
        return min(n, load.concurrency)
    if load.mode == "burst":
        return min(n, load.concurrency or n)
    e2e = [(r.end_ns - r.sent_ns) / 1e9 for r in warm if r.ok]
    guess = int(load.rate * (max(e2e) if e2e else 1.0) * 2) + 4
    return min(n, load.concurrency or n, guess)
