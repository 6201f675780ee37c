"""How close did a measured run come to the physical limit?

Each measured run becomes an Observation (model shape, hardware, GPUs, load, measured
metrics). Its floor is the serving model (roofline.serve) at speed of light: every
efficiency 1, no step overhead, no collective latency, at the run's own load and running
batch. Efficiency = floor / measured for times (TTFT, TPOT, ms/token) and measured / ceiling
for throughput: 1.0 is the hardware's limit, 0.3 means 3.3x slower than the limit.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from servebench.estimate import catalog, models
from servebench.estimate.hardware import Hardware
from servebench.estimate.models import ModelShape
from servebench.estimate.roofline import (ADMITS, SCHEDULES, Deployment, Factors, batch_cap, capacity, decode_step,
                                          prefill, serve)
from servebench.errors import first_line

METRICS = ("ttft_ms", "tpot_ms", "ms_per_token", "output_tok_s")
STAT = "mean"  # statistic of a run's latency distributions that efficiency and calibration use


@dataclass(slots=True)
class Observation:
    label: str
    model: ModelShape
    hw: Hardware
    tp: int
    concurrency: float  # requests in flight the load held (closed loop) or released at once (burst)
    n_in: float
    n_out: float
    measured: dict  # any of METRICS
    batch_cap: float | None = None  # the server's running batch, when it was observed
    mode: str = "concurrency"
    schedule: str = "mixed"
    engine: str = "vllm"
    lockstep: bool = False  # fixed lengths, started together (see roofline.serve)
    meta: dict = field(default_factory=dict)
    # (inputs, deployment, batch cap or the no-fit answer): a fit predicts each observation
    # ~10^5 times with only the factors changing (a third of the time went to rebuilding these)
    _fixed: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def deployment(self) -> Deployment:
        return Deployment(self.model, self.hw, self.tp, schedule=self.schedule, admit=ADMITS.get(self.engine, "reserve"))

    def predict(self, f: Factors) -> dict:
        d, cap = self._fixed_parts()
        if isinstance(cap, dict):
            return dict(cap)
        return serve(d, self.concurrency, self.n_in, self.n_out, f, cap, self.lockstep)

    def _fixed_parts(self) -> tuple[Deployment, float | dict]:
        """What predict needs that the factors do not change, kept while the inputs stay the
        same objects and values (a test may set `hw` after loading)."""
        key = (self.tp, self.schedule, self.engine, self.n_in, self.n_out, self.batch_cap)
        c = self._fixed
        if c is None or c[0] is not self.model or c[1] is not self.hw or c[2] != key:
            d = self.deployment()
            cap: float | dict = self.batch_cap if self.batch_cap is not None else batch_cap(d, self.n_in, self.n_out)
            c = self._fixed = (self.model, self.hw, key, d, cap)
        return c[3], c[4]


# --- reading a run ----------------------------------------------------------------------

def _arg(args: list[str], *names: str) -> str | None:
    """Value of an engine flag in a server-args list ('--tp 4', '--tp=4')."""
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def run_tp(run_json: dict) -> int:
    cfg = run_json.get("config") or {}
    server = (run_json.get("cell") or {}).get("server") or {}
    if server.get("gpu_count"):
        return int(server["gpu_count"])
    args = [str(a) for a in cfg.get("server_args") or []]
    v = _arg(args, "--tensor-parallel-size", "-tp", "--tp", "--tp-size", "--num-shard")
    if v and v.isdigit():
        return int(v)
    opts = cfg.get("launcher_options") or {}
    for k in ("num_gpus", "SM_NUM_GPUS", "num_shard"):
        if str(opts.get(k, "")).isdigit():
            return int(opts[k])
    if opts.get("instance_type") and (hit := catalog.instance(str(opts["instance_type"]))):
        return hit[1]
    if cfg.get("gpus"):
        return len(cfg["gpus"])
    return 1


def run_quant(run_json: dict) -> tuple[str | None, str | None]:
    """(quantization, dtype) the server ran with, as far as run.json says."""
    cfg = run_json.get("config") or {}
    server = (run_json.get("cell") or {}).get("server") or {}
    args = [str(a) for a in cfg.get("server_args") or []]
    q = server.get("quantization") or (cfg.get("launcher_options") or {}).get("quantize") or \
        _arg(args, "--quantization", "--quantize", "-q")
    q = {"gptq_marlin": "gptq", "awq_marlin": "awq", "marlin": "gptq"}.get(q, q) if q else None
    return q, _arg(args, "--dtype")


def run_hardware(run_json: dict) -> tuple[Hardware | None, str]:
    """The run's accelerator and how we know it; (None, reason) when we cannot tell."""
    server = (run_json.get("cell") or {}).get("server") or {}
    if server.get("hardware"):
        try:
            return catalog.lookup(str(server["hardware"])), "sweep label"
        except KeyError as e:
            return None, str(e.args[0])
    gpus = (run_json.get("host") or {}).get("gpus") or []
    if gpus:
        try:
            return catalog.lookup(gpus[0]["name"]), "NVML device name"
        except KeyError as e:
            return None, str(e.args[0])
    it = ((run_json.get("config") or {}).get("launcher_options") or {}).get("instance_type")
    if it and (hit := catalog.instance(str(it))):
        return hit[0], f"instance type {it}"
    from servebench.telemetry.gpus import is_local

    host = (run_json.get("host") or {}).get("hostname")
    if is_local(str((run_json.get("server") or {}).get("base_url") or "")) and host == socket.gethostname():
        return catalog.lookup("cpu"), "this host's CPU (no GPU in run.json)"
    return None, "unknown hardware: no NVML device, instance type or sweep label in run.json"


def run_model_config(run_json: dict) -> tuple[str, dict] | None:
    d = run_json.get("model_dir")
    if d and (Path(d) / "config.json").is_file():
        import json

        return str(run_json.get("model") or d), json.loads((Path(d) / "config.json").read_text())
    try:
        return models.find_config(str(run_json.get("model") or (run_json.get("config") or {}).get("model")))
    except (KeyError, ValueError, OSError):
        return None


def observation(run_json: dict, summary: dict, model_config: dict, hw: Hardware, label: str = "") -> Observation:
    cfg = run_json.get("config") or {}
    cell_load = ((run_json.get("cell") or {}).get("load")) or {}
    load = cfg.get("load") or {}
    quant, dtype = run_quant(run_json)
    engine = str((run_json.get("engine") or {}).get("name") or cfg.get("backend") or "vllm").lower()
    shape = models.shape(model_config, str(run_json.get("model") or "model"), quant, dtype)
    i, o = summary.get("input_tokens") or {}, summary.get("output_tokens") or {}
    work = cfg.get("workload") or {}
    n_in = i.get("server_mean") or i.get("requested_mean") or work.get("input_tokens") or cell_load.get("input_tokens") or 1
    n_out = o.get("achieved_mean") or o.get("requested_mean") or work.get("output_tokens") or cell_load.get("output_tokens") or 1
    imported = bool(run_json.get("imported"))
    conc = summary.get("concurrency") or {}
    target = cell_load.get("concurrency") or load.get("concurrency")
    rate = cell_load.get("rate") or load.get("rate")
    mode = "rate" if rate else ("concurrency" if target else "burst")
    in_flight = conc.get("mean_in_flight") or target or 1
    sm = (summary.get("telemetry") or {}).get("server_metrics") or {}
    # the server's running-batch peak caps the batch, but only when /metrics was scraped often
    # enough to see it (1 s scrapes of a 2 s run saw a peak of 1 with 4 requests in flight)
    running = (sm.get("running") or {}) if (sm.get("scrapes") or 0) >= 10 else {}
    # servebench's synthetic prompts have exact lengths and the loop starts every slot at t0,
    # so a closed loop or burst stays in waves unless lengths vary (a prompts file, a shortfall)
    # (another tool's load or a published table: nothing says its requests started together)
    fixed = not imported and not work.get("prompts_file") and not o.get("shortfall_requests")
    # Means, not medians: the serving model is a mean-value model, and only means obey
    # Little's law with the measured throughput (a skewed run's p50 e2e says 30% more tok/s
    # than it delivered). Published rows keep whatever statistic their source gives.
    measured = {k: _figure(summary, k, imported) for k in ("ttft_ms", "tpot_ms", "ms_per_token")}
    measured["output_tok_s"] = summary.get("output_token_throughput")
    return Observation(label=label or str(run_json.get("model")), model=shape, hw=hw, tp=run_tp(run_json),
                       concurrency=float(in_flight), n_in=float(n_in), n_out=float(n_out),
                       measured={k: v for k, v in measured.items() if v}, batch_cap=running.get("peak"), mode=mode,
                       schedule=SCHEDULES.get(engine, "mixed"), engine=engine, lockstep=fixed and mode != "rate")


def _figure(summary: dict, name: str, imported: bool) -> float | None:
    """The run's mean; an imported source that gives only a median (a published table) is
    read at its median, as the estimator's own published rows are."""
    d = summary.get(name) or {}
    return d.get(STAT) if d.get(STAT) is not None or not imported else d.get("p50")


# --- the efficiency figures -------------------------------------------------------------

def of_observation(obs: Observation) -> dict:
    sol = obs.predict(Factors.speed_of_light())
    d = obs.deployment()
    if not sol.get("fits"):
        return {"available": False, "reason": sol.get("why", "model does not fit")}
    sol_f = Factors.speed_of_light()
    step = decode_step(d, sol["batch"], obs.n_in + obs.n_out / 2, sol_f)
    pf = prefill(d, obs.n_in, obs.n_in, sol_f)
    m = obs.measured
    eff = {}
    for k in ("ttft_ms", "tpot_ms", "ms_per_token"):
        if m.get(k):
            eff[k] = sol[k] / m[k]
    if m.get("output_tok_s"):
        eff["output_tok_s"] = m["output_tok_s"] / sol["output_tok_s"]
    names = {"ttft_ms": "prefill", "tpot_ms": "decode", "ms_per_token": "end_to_end", "output_tok_s": "throughput"}
    cap = capacity(d)
    out = {
        "available": True,
        "definition": "floor/measured for TTFT, TPOT, ms/token (p50); measured/ceiling for output tok/s; "
                      "floor = roofline at peak bandwidth and FLOP/s, no overheads, same load and batch",
        "hardware": {"key": obs.hw.key, "label": obs.hw.label, "bandwidth_gbs": obs.hw.bandwidth_gbs,
                     "peak_tflops": obs.hw.peak_flops(obs.model.compute) / 1e12, "gpus": obs.tp},
        "model": {"name": obs.model.name, "params": obs.model.params, "weight_gib_per_gpu": cap["weights_gib"],
                  "kv_bytes_per_token_per_gpu": cap["kv_bytes_per_token"], "compute": obs.model.compute},
        "load": {"mode": obs.mode, "concurrency": obs.concurrency, "batch": sol["batch"], "input_tokens": obs.n_in,
                 "output_tokens": obs.n_out},
        "floor": {"decode_step_ms": step["s"] * 1e3, "decode_bound": step["bound"], "prefill_ms": pf["s"] * 1e3,
                  "prefill_bound": pf["bound"], **{k: sol[k] for k in METRICS}},
        "measured": dict(m),
        "efficiency": {names[k]: v for k, v in eff.items()},
        "ratio": {names[k]: (1 / v) for k, v in eff.items() if v},  # measured / floor (x slower than the limit)
    }
    e = out["efficiency"]
    parts = [f"{n} {e[n]:.2f}" for n in ("decode", "prefill", "end_to_end", "throughput") if n in e]
    out["headline"] = (f"of the floor: {', '.join(parts)} (decode {step['bound']}-bound, floor "
                       f"{step['s'] * 1e3:.3g} ms/step at batch {sol['batch']:.3g} on {obs.tp}x {obs.hw.label})")
    return out


def efficiency(run_json: dict, summary: dict, model_config: dict, hw: Hardware | dict | str) -> dict:
    """Pure: floors and efficiency of one measured run. hw: a Hardware, a catalog name, or a
    dict of Hardware fields (e.g. a stored host measurement)."""
    if isinstance(hw, str):
        hw = catalog.lookup(hw)
    elif isinstance(hw, dict):
        hw = Hardware(**{k: v for k, v in hw.items() if k in Hardware.__slots__})
    if not (summary.get("completed") or 0):
        return {"available": False, "reason": "no completed requests"}
    return of_observation(observation(run_json, summary, model_config, hw))


def load_observation(run_dir: Path, hw_override: str | None = None) -> Observation:
    """Run directory -> Observation; ValueError with a one-line reason when it cannot be placed."""
    from servebench.store.runfiles import load_summary, read_json

    run_dir = Path(run_dir)
    run_json = read_json(run_dir / "run.json")
    summary = load_summary(run_dir)
    if hw_override:
        hw, _ = catalog.lookup(hw_override), "given"
    else:
        hw, why = run_hardware(run_json)
        if hw is None:
            raise ValueError(f"{run_dir}: {why}")
    mc = run_model_config(run_json)
    if mc is None:
        raise ValueError(f"{run_dir}: model config not found for {run_json.get('model')!r}")
    if run_json.get("imported"):
        _usable_import(run_dir, run_json, summary)
    elif not summary.get("completed"):
        raise ValueError(f"{run_dir}: no completed requests")
    obs = observation(run_json, summary, mc[1], hw, label=run_dir.name)
    obs.meta["run_dir"] = str(run_dir)
    return obs


def _usable_import(run_dir: Path, run_json: dict, summary: dict) -> None:
    """An imported run (a published row has no request count) places on the model when it
    says the load and at least one figure; otherwise the one thing missing, and how to give it."""
    load = (run_json.get("cell") or {}).get("load") or {}
    i, o = summary.get("input_tokens") or {}, summary.get("output_tokens") or {}
    if not (i.get("server_mean") or load.get("input_tokens")):
        raise ValueError(f"{run_dir}: no input length in the source (import it with --input-tokens N to state one)")
    if not (o.get("achieved_mean") or load.get("output_tokens")):
        raise ValueError(f"{run_dir}: no output length in the source (import it with --output-tokens N)")
    if not (load.get("concurrency") or (summary.get("concurrency") or {}).get("mean_in_flight")):
        raise ValueError(f"{run_dir}: no concurrency in the source (the model needs the requests in flight)")
    if not any(_figure(summary, k, True) for k in ("ttft_ms", "tpot_ms", "ms_per_token")) \
            and not summary.get("output_token_throughput"):
        raise ValueError(f"{run_dir}: no TTFT, TPOT, ms/token or tok/s in the source")


def run_efficiency(run_dir: Path, hw_override: str | None = None) -> dict:
    """Efficiency of a stored run; {'available': False, 'reason': ...} when it cannot be computed."""
    try:
        return of_observation(load_observation(run_dir, hw_override))
    except (ValueError, KeyError, FileNotFoundError) as e:
        return {"available": False, "reason": first_line(e)}


def expand_dirs(paths: list[Path]) -> list[Path]:
    """Run dirs as given; a sweep dir (index.json + runs/) -> its done cells' run dirs; a
    directory of run dirs -> each of them."""
    import json

    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "run.json").is_file():
            out.append(p)
        elif (p / "index.json").is_file():
            idx = json.loads((p / "index.json").read_text())
            out += [p / c["run_dir"] for c in idx.get("cells", []) if c.get("status") == "done" and c.get("run_dir")]
        elif p.is_dir():
            out += sorted(q for q in p.iterdir() if (q / "run.json").is_file())
            out += sorted(q for q in (p / "runs").iterdir() if (q / "run.json").is_file()) if (p / "runs").is_dir() else []
        else:
            raise ValueError(f"not a run or sweep directory: {p}")
    if not out:
        raise ValueError(f"no run directories under {', '.join(map(str, paths))}")
    return out


