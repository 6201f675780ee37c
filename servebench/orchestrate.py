"""One benchmark run, top to bottom: prompts -> launch -> ready -> warm up -> load -> tear
down -> decode -> metrics -> store. Whatever was measured is written, whatever was started
is stopped, on every exit path (errors and Ctrl-C included)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Callable

from servebench import SCHEMA_VERSION, __version__
from servebench.adapters import ADAPTERS
from servebench.config import RunConfig
from servebench.decode import decode_records
from servebench.launchers import LAUNCHERS, LaunchRequest
from servebench.launchers.base import Server
from servebench.metrics import dist, summarize
from servebench.records import RequestRecord
from servebench.runner import LoadPlan, LoadStats, drive, new_loop
from servebench.schedule import release_offsets_ns
from servebench.signals import shielded
from servebench.specs import load_spec
from servebench import store, workload


class RunError(RuntimeError):
    """A run could not complete; the message is one line. run_dir holds what was measured."""

    def __init__(self, message: str, run_dir: Path | None = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


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


def run(cfg: RunConfig, progress: Callable[[int, int], None] | None = None, on_phase: Callable[[str], None] | None = None) -> Path:
    phase = on_phase or (lambda msg: None)
    spec = load_spec(cfg.backend)
    api = cfg.api or spec.adapter
    if api not in ADAPTERS:
        raise RunError(f"unknown api {api!r} (known: {', '.join(sorted(ADAPTERS))})")
    adapter = ADAPTERS[api]
    model_dir = _model_dir(cfg)
    tokenizer = workload.load_tokenizer(cfg.workload.tokenizer or model_dir or cfg.model)
    phase("building prompts")
    prompts = _prompts(cfg, tokenizer)

    st = RunState(store.new_run_dir(cfg.results_dir, cfg.name, cfg.backend), api=api)
    launcher = LAUNCHERS[cfg.launcher]()
    t_start = time.time()
    try:
        phase(f"starting {cfg.backend} ({cfg.launcher})" if cfg.launcher != "external" else "checking endpoint")
        st.server = launcher.start(_launch_request(cfg, model_dir, api, st.run_dir))
        st.engine_version = _engine_version(st.server.base_url)  # asked now: the server is stopped before run.json
        served = cfg.served_model_name or st.server.info.get("served_model_name") or cfg.model
        if cfg.launcher == "external":
            served = cfg.served_model_name or _served_model(st.server.base_url) or served
        # issue 10: one probe request; fields the server rejects are dropped (recorded in run.json
        # server.info.request_probe + a warning). Lead: move with the session code as is.
        from servebench.probe import before_load
        extra = before_load(st.server, adapter, served, spec.request_extra.get(api), st.warnings)
        st.samplers = _samplers(cfg, st.server, spec.metrics)
        for s in st.samplers:
            s.start()
        phase("running load")
        _drive_all(cfg, st, adapter, prompts, served, progress, extra)
        st.status = "complete"
    except KeyboardInterrupt:
        st.status, st.error = "interrupted", "interrupted by Ctrl-C"
    except Exception as e:  # one line for the user; the run dir keeps what was measured
        st.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _quietly((st.run_dir / "error.log").write_text, traceback.format_exc())  # the whole story, on disk
    finally:
        with shielded():
            for s in st.samplers:
                _quietly(s.stop)
            launcher.stop()
            summary = _write(cfg, st, adapter, model_dir, tokenizer, t_start)
    if st.error:
        raise RunError(st.error, st.run_dir)
    failed, measured = summary["failed"], summary["failed"] + summary["completed"]
    if measured == 0:
        raise RunError("no request was measured", st.run_dir)
    if failed and failed / measured > cfg.max_error_rate:
        top = next(iter(summary["errors"]), "unknown error")
        raise RunError(f"{failed} of {measured} requests failed (first cause: {top})", st.run_dir)
    return st.run_dir


def _model_dir(cfg: RunConfig) -> Path | None:
    """A preset name or local dir; None for a hub id benchmarked through an endpoint."""
    from servebench.presets import resolve_model

    try:
        return resolve_model(cfg.model)
    except ValueError:
        if cfg.launcher != "process" and not cfg.model.startswith((".", "/", "~")):
            # a name the server knows (meta-llama/Llama-2-13b-hf, a served alias): the server
            # loads it; prompts need its tokenizer here (--tokenizer, else the name itself)
            return None
        raise


def _prompts(cfg: RunConfig, tokenizer) -> list[workload.Prompt]:
    w, n = cfg.workload, cfg.load.requests + cfg.load.warmup
    if w.prompts_file:
        return workload.from_jsonl(w.prompts_file, tokenizer, w.output_tokens, n)
    return workload.synthetic(tokenizer, n, w.input_tokens, w.output_tokens, seed=cfg.load.seed)


def _launch_request(cfg: RunConfig, model_dir: Path | None, api: str, run_dir: Path) -> LaunchRequest:
    opts: dict[str, Any] = {**cfg.launcher_options, "adapter": api, "served_model_name": cfg.served_model_name or cfg.model}
    if cfg.endpoint:
        opts["base_url"] = cfg.endpoint
    return LaunchRequest(
        engine=cfg.backend, model=str(model_dir or cfg.model), gpus=cfg.gpus, extra_args=list(cfg.server_args),
        run_dir=run_dir, options=opts,
    )


def _samplers(cfg: RunConfig, server: Server, metric_map: dict) -> list:
    if not cfg.telemetry:
        return []
    from servebench.telemetry import make_samplers

    return make_samplers(server, cfg.gpus, metric_map=metric_map or None)


def _mark(samplers: list) -> None:
    """A sample exactly at a window edge, so counters (energy, server tokens) are read there."""
    for s in samplers:
        _quietly(s.sample_now)


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
        if load.workers > 1:
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
    """--workers N: N processes, one shared t0, records merged back in place (also on Ctrl-C)."""
    from servebench.workers import run_split

    load, w = cfg.load, cfg.load.warmup
    measured = st.records[w:]
    try:
        run_split(base_url, kind, wires, measured, offsets, load.concurrency, duration_ns, load.workers,
                  connections=conns, timeout_s=load.request_timeout_s, progress=progress, stats=st.stats,
                  connect_ns=st.connect_ns, on_t0=lambda: _mark(st.samplers), adapter=st.api)
        _mark(st.samplers)
    finally:
        st.records[w:] = measured


async def _self_check(load, st: RunState) -> None:
    """Measure the client's own floor against the built-in emulator (in a thread: it runs its
    own event loop) and warn when the requested load is beyond it."""
    from servebench import calibrate

    warning = await asyncio.get_running_loop().run_in_executor(
        None, calibrate.self_check, load, st.records[: load.warmup], load.self_check
    )
    if warning:
        st.warnings.append(warning)


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


def _write(cfg: RunConfig, st: RunState, adapter, model_dir, tokenizer, t_start: float) -> dict:
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
    sent = [r for r in st.records if r.sent_ns]
    attempt("requests.parquet", store.write_records, run_dir / "requests.parquet", sent)
    summary = summarize(sent, target_concurrency=cfg.load.concurrency, target_rate=cfg.load.rate)
    summary["status"] = st.status
    summary["error"] = st.error
    summary["warnings"] = list(st.warnings)
    summary["not_released"] = sum(1 for r in st.records if not r.warmup and not r.sent_ns)
    summary["loop_lag_ms"] = dist([v / 1e6 for v in st.stats.loop_lag_ns])
    summary["connections"] = {"opened": len(st.connect_ns), "setup_ms": dist([v / 1e6 for v in st.connect_ns])}
    streamed = summary["output_tokens"]["streamed_total"]
    summary["client"] = {  # servebench's own cost during the load window (decoding comes after)
        "cpu_s": st.stats.cpu_ns / 1e9,
        "cpu_cores": st.stats.cpu_ns / 1e9 / summary["duration_s"] if summary["duration_s"] else None,
        "cpu_us_per_token": st.stats.cpu_ns / 1e3 / streamed if streamed else None,
        "workers": cfg.load.workers,
        "scheduling": st.stats.scheduling,
    }
    start = min((r.sent_ns for r in sent if not r.warmup), default=0)
    end = max((r.end_ns for r in sent if not r.warmup), default=0)
    tel: dict[str, Any] = {}
    for s in st.samplers:
        attempt(f"{s.name} window", s.mark_window, start, end)
        attempt(f"{s.name} samples", s.write, run_dir)
        tel[s.name] = attempt(f"{s.name} summary", s.summary) or {"available": False, "reason": "summary failed"}
    if tel:
        from servebench.telemetry import finalize

        summary["telemetry"] = attempt("telemetry finalize", finalize, tel, summary["output_tokens"]["total"]) or tel
    attempt("run.json", store.write_json, run_dir / "run.json", _run_info(cfg, st, model_dir, tokenizer, t_start))
    attempt("summary.json", store.write_summary, run_dir, summary)
    if sent and cfg.plots:
        from servebench.plots import plot_run

        attempt("timeline plot", plot_run, run_dir)
    if failures and not st.error:
        st.error = "could not write all results: " + "; ".join(failures)
    return summary


def _run_info(cfg: RunConfig, st: RunState, model_dir, tokenizer, t_start: float) -> dict:
    server = st.server
    host: dict[str, Any] = {"hostname": socket.gethostname(), "platform": platform.platform(),
                            "cpu": _cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()}
    for s in st.samplers:
        if hasattr(s, "host_info"):
            host.update(_quietly(s.host_info) or {})
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
        "clock": "time.perf_counter_ns (CLOCK_MONOTONIC)",
    }


def _get_json(url: str) -> Any:
    import httpx

    try:
        r = httpx.get(url, timeout=3.0)
        return r.json() if r.status_code == 200 else None
    except Exception:
        return None


def _engine_version(base_url: str) -> str | None:
    if not base_url.startswith("http"):
        return None
    for path in ("/version", "/info"):  # vLLM/SGLang: /version; TGI, LightLLM: /info
        data = _get_json(base_url.rstrip("/") + path)
        if isinstance(data, dict) and data.get("version"):
            return str(data["version"])
    return None


def _served_model(base_url: str) -> str | None:
    data = _get_json(base_url.rstrip("/") + "/v1/models")
    try:
        return data["data"][0]["id"]
    except (TypeError, KeyError, IndexError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _quietly(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None
