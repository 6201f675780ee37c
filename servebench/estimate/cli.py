"""`servebench estimate`: a what-if for hardware you do not own, calibrated on your runs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click

from servebench.estimate.models import QUANT
from servebench.errors import first_line


def _fail(msg: str, code: int = 1):
    click.echo(f"error: {msg}", err=True)
    raise SystemExit(code)


def _levels(value: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter("levels must be >= 1")
    return out


def _speeds(value: str) -> list[float]:
    try:
        out = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not out or not all(math.isfinite(x) and x > 0 for x in out):
        raise click.BadParameter("speeds must be finite and > 0")
    return out


TRACE_ONLY = ("trace_format", "trace_columns", "trace_window", "speeds", "trace_scale_lengths", "requests")
NOT_WITH_TRACE = ("levels", "input_tokens", "output_tokens", "arrivals", "scheduler", "load_mode")


def _given(name: str) -> bool:
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


def _trace_conflict(o: dict) -> str | None:
    """--trace brings its own arrivals and lengths; the options it replaces, or needs, said once."""
    opt = lambda n: "--" + {"levels": "concurrency", "load_mode": "load", "speeds": "trace_speed"}.get(n, n).replace("_", "-")  # noqa: E731
    if o["trace"]:
        clash = [opt(n) for n in NOT_WITH_TRACE if _given(n)]
        return f"{', '.join(clash)}: not with --trace (the trace gives arrivals and lengths; " \
               "--trace-speed sets the levels)" if clash else None
    needs = [opt(n) for n in TRACE_ONLY + ("prefix_cache",) if _given(n)]
    return f"{', '.join(needs)}: only with --trace" if needs else None


# A level simulates 8x its value in requests: 10,000 takes about 5 s, 100,000 over a minute and
# 340 MB, and 100,000,000 never ends, so the cap keeps every accepted level to seconds.
MAX_LEVEL = 10_000


def _bad_numbers(o: dict) -> str | None:
    """The option that would make the estimate impossible (negative cost, >100 % memory), if any."""
    if max(o["levels"]) > MAX_LEVEL:
        return f"--concurrency {max(o['levels']):,}: at most {MAX_LEVEL:,} (users, burst size or req/s per level)"
    if (o["gpus"] is not None and o["gpus"] < 1) or o["input_tokens"] < 1 or o["output_tokens"] < 1:
        return "--gpus, --input-tokens and --output-tokens must be >= 1"
    if o["max_num_seqs"] is not None and o["max_num_seqs"] < 1:
        return f"--max-num-seqs {o['max_num_seqs']}: the engine must run at least 1 sequence"
    if not 0 < o["mem_fraction"] <= 1:  # nan fails this too
        return f"--mem-fraction {o['mem_fraction']}: a share of GPU memory, above 0 and at most 1"
    if o["price"] is not None and not (math.isfinite(o["price"]) and o["price"] >= 0):
        return f"--price {o['price']}: a deployment's $/hour is a finite number, 0 or more"
    return None


def _out_problem(out: Path | None) -> str | None:
    """Why --out cannot take the JSON, if it cannot: checked before the estimate, since a
    directory or a missing folder was a traceback after the work was done and printed."""
    if out is None:
        return None
    if out.is_dir():
        return f"--out {out}: a directory; give a file name (e.g. {out / 'estimate.json'})"
    if not out.parent.is_dir():
        return f"--out {out}: {out.parent} " + ("is not a directory" if out.parent.exists() else "does not exist")
    if out.exists():
        return None if os.access(out, os.W_OK) else f"--out {out}: the file is not writable"
    try:  # creating it is the only sure test (root's os.access says yes to /proc and to read-only folders)
        out.touch(exist_ok=False)
        out.unlink()
    except OSError as e:
        return f"--out {out}: cannot write there ({e.strerror or first_line(e)})"
    return None


def _write_out(out: Path, text: str) -> None:
    try:
        out.write_text(text + "\n")
    except OSError as e:  # the path was checked before the work: a fault now (disk full), not bad input
        _fail(f"cannot write {out}: {e.strerror or first_line(e)} (the estimate above is complete)", 1)


def load_calibration(paths: list[Path], hw_override: str | None, warn):
    """Run/sweep dirs -> fit.Calibration; unplaceable runs are skipped with a warning."""
    from servebench.estimate import efficiency, fit

    obs, skipped = [], []
    for run_dir in efficiency.expand_dirs(paths):
        try:
            obs.append(efficiency.load_observation(run_dir, hw_override))
        except (ValueError, KeyError, FileNotFoundError) as e:
            skipped.append(first_line(e))
    for s in skipped:
        warn(f"calibration: skipped {s}")
    if not obs:
        raise ValueError("no usable calibration run" + (f" ({skipped[0]})" if skipped else ""))
    return fit.calibrate(obs)


@click.command("estimate")
@click.option("--model", required=True, help="Model id (e.g. meta-llama/Llama-2-13b-hf), config.json, model dir or preset.")
@click.option("--gpu", required=True, help="Accelerator: a10g, a100-40gb, a100-80gb, a800, rtx4090, rtx3090, l4, l40s, h100-sxm, h200, ... "
                                            "or cpu; or a cloud instance type (ml.g5.12xlarge: its GPU, and all its GPUs unless --gpus).")
@click.option("--gpus", default=None, type=int, help="GPUs in the tensor-parallel group [default: 1, or the instance's count].")
@click.option("--quant", default="none", show_default=True, type=click.Choice(sorted(QUANT)), help="Weight quantization.")
@click.option("--dtype", default=None, type=click.Choice(["float16", "bfloat16", "float32"]), help="Override the config's dtype.")
@click.option("--kv-dtype", default=None, type=click.Choice(["float16", "bfloat16", "fp8"]), help="KV-cache dtype (default: the model's).")
@click.option("--engine", default="vllm", show_default=True, help="vllm | sglang | trtllm (mixed prefill) | tgi | lightllm (separate prefill).")
@click.option("--concurrency", "levels", default="1,5,10,20", show_default=True, callback=lambda c, p, v: _levels(v))
@click.option("--input-tokens", default=512, show_default=True, type=int)
@click.option("--output-tokens", default=128, show_default=True, type=int)
@click.option("--arrivals", default="lockstep", show_default=True, type=click.Choice(["lockstep", "spread"]),
              help="lockstep: fixed lengths started together (servebench runs: requests move in waves); "
                   "spread: varied lengths, prompts interleave with decoding (production traffic).")
@click.option("--scheduler", default="sim", show_default=True, type=click.Choice(["sim", "formula"]),
              help="sim: a simulated continuous-batching engine (KV admission, prefill schedule); formula: closed-form roofline.")
@click.option("--load", "load_mode", default="closed", show_default=True, type=click.Choice(["closed", "burst", "rate"]),
              help="With --scheduler sim: each --concurrency level is closed-loop users, a burst's size, or a rate in requests/s.")
@click.option("--calibrate", "calib", multiple=True, type=click.Path(path_type=Path), help="Run or sweep dir to fit the efficiency factors on (repeatable).")
@click.option("--calib-hardware", default=None, help="Hardware of the calibration runs when run.json cannot say (e.g. endpoint runs).")
@click.option("--p2p", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="GPU peer access for the all-reduces: auto = off when NCCL_P2P_DISABLE=1 or the GPU has none "
                   "(4090, cloud A10G/L4); off = staged through host memory.")
@click.option("--price", default=None, type=float, help="$/hour for the whole deployment (all --gpus): adds $ per 1M output tokens.")
@click.option("--mem-fraction", default=0.9, show_default=True, type=float, help="Share of GPU memory the engine may use (vLLM gpu_memory_utilization).")
@click.option("--max-num-seqs", default=None, type=int,
              help="Engine's cap on the running batch [default: the engine's: vllm 1024 on GPUs of 70 GiB or more "
                   "other than the A100, else 256, 128 per CPU worker; others 256].")
@click.option("--trace", default=None, metavar="NAME|FILE",
              help="Replay a trace through the simulated engine: azure-conv-2023, mooncake-conversation (shipped) "
                   "or a file, read as `servebench run --trace` reads it (docs/workloads.md).")
@click.option("--trace-format", default=None, help="azure | mooncake | servebench | csv | jsonl (default: detected).")
@click.option("--trace-columns", default=None, metavar="time=COL,input=COL,output=COL",
              help="Column mapping for any CSV/JSONL; time=COL:s|ms|datetime, optional blocks=COL.")
@click.option("--trace-speed", "speeds", default="1", show_default=True, callback=lambda c, p, v: _speeds(v),
              help="Replay K times faster than the trace; comma-separated: one level each.")
@click.option("--trace-window", default=None, metavar="START:END", help="Seconds after the trace's first request.")
@click.option("--trace-scale-lengths", default=1.0, show_default=True, type=float,
              help="Multiply every length (and the prefix block size) by F, as `run` does.")
@click.option("--requests", default=None, type=int, help="The first N requests of the trace's window.")
@click.option("--prefix-cache", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Serve a trace's shared prompt blocks from the KV pool: auto = on for vllm and sglang "
                   "(their default), off for the others.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Also write the JSON here.")
def estimate(**o) -> None:
    """Predict TTFT, TPOT, throughput, KV capacity and cost on hardware you do not own (estimates)."""
    from servebench.estimate import catalog, engines, fit, models, predict, trace
    from servebench.estimate.roofline import ADMITS, SCHEDULES, Deployment

    warn = lambda m: click.echo(f"warning: {m}", err=True)  # noqa: E731
    bad = _trace_conflict(o) or _bad_numbers(o) or _out_problem(o["out"])
    if bad:
        _fail(bad, 2)
    try:
        hw, o["gpus"] = _hardware(o["gpu"], o["gpus"])
        shape = models.load(o["model"], quant=o["quant"], dtype=o["dtype"], kv_dtype=o["kv_dtype"])
    except (KeyError, ValueError) as e:
        _fail(str(e.args[0] if e.args else e), 2)
    if shape.compute == "fp32" and hw.fp32_tflops is None:
        # GPU rows carry tensor-core peaks; a float32 matmul runs on other units, at a rate not in the catalog
        _fail(f"{shape.name} computes in float32, and the catalog has no FP32 peak for {hw.label}: not modelled "
              "(--dtype bfloat16 or float16 estimates it as engines usually serve it)", 2)
    if shape.heads % o["gpus"]:
        # engines split attention heads across the tensor-parallel group; vLLM refuses this too
        _fail(f"--gpus {o['gpus']}: {shape.name} has {shape.heads} attention heads, which {o['gpus']} GPUs "
              "cannot share evenly (tensor parallelism needs a divisor of the head count)", 2)
    try:
        cal = load_calibration(list(o["calib"]), o["calib_hardware"], warn) if o["calib"] else \
            fit.published(hw, o["engine"].lower())
    except (ValueError, KeyError) as e:
        _fail(str(e.args[0] if e.args else e))
    engine = o["engine"].lower()
    caching = {"on": True, "off": False}.get(o["prefix_cache"], engine in trace.PREFIX_CACHE_BY_DEFAULT)
    seqs = o["max_num_seqs"] or engines.max_num_seqs(engine, hw, o["gpus"])
    d = Deployment(shape, hw, o["gpus"], mem_fraction=o["mem_fraction"], max_num_seqs=seqs,
                   schedule=SCHEDULES.get(engine, "mixed"), admit=ADMITS.get(engine, "reserve"),
                   p2p={"on": True, "off": False}.get(o["p2p"]), graphs=engines.cuda_graphs(engine, None),
                   prefix_cache=caching and bool(o["trace"]))
    if o["trace"]:
        try:
            tl = trace.read(o["trace"], o["trace_format"], o["trace_columns"], o["trace_window"], o["requests"],
                            o["trace_scale_lengths"], shape.context)
        except (ValueError, OSError) as e:  # TraceError, pydantic's ValidationError
            _fail(_one_line(e), 2)
        result = trace.estimate(d, tl, o["speeds"], cal, o["price"], engine)
    else:
        result = predict.estimate(d, o["levels"], (o["input_tokens"], o["output_tokens"]), cal, o["price"], engine,
                                  lockstep=o["arrivals"] == "lockstep",
                                  load=o["load_mode"] if o["scheduler"] == "sim" else None)
    result["engine"] = engine
    if catalog.instance(o["gpu"]):
        result["instance_type"] = o["gpu"]
    text = json.dumps(result, indent=2, default=str)
    if o["as_json"]:
        click.echo(text)
    else:
        from servebench.estimate.render import render

        render(result)
    if o["out"]:  # after the output, so that a write fault loses nothing computed
        _write_out(o["out"], text)


def _one_line(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):  # pydantic: the option and why, as `run` says it
        err = errors()[0]
        name = str(err["loc"][0]) if err.get("loc") else "trace"
        opt = "--requests" if name == "requests" else f"--trace-{name}".replace("_", "-")
        return f"{opt}: {err['msg'].removeprefix('Value error, ')}"
    return first_line(e)


def _hardware(name: str, gpus: int | None):
    """(Hardware, GPUs): a GPU name, or an instance type read as its GPU and count (docs/estimate.md)."""
    from servebench.estimate import catalog

    inst = catalog.instance(name)
    if inst is None:
        return catalog.lookup(name), gpus or 1
    hw, count = inst
    if gpus is not None and gpus > count:
        raise ValueError(f"--gpus {gpus}: {name} has {count} {hw.label} GPU(s)")
    return hw, gpus or count
