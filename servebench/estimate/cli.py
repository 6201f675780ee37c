"""`servebench estimate`: a what-if for hardware you do not own, calibrated on your runs."""

from __future__ import annotations

import json
import math
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


def _bad_numbers(o: dict) -> str | None:
    """The option that would make the estimate impossible (negative cost, >100 % memory), if any."""
    if (o["gpus"] is not None and o["gpus"] < 1) or o["input_tokens"] < 1 or o["output_tokens"] < 1:
        return "--gpus, --input-tokens and --output-tokens must be >= 1"
    if o["max_num_seqs"] < 1:
        return f"--max-num-seqs {o['max_num_seqs']}: the engine must run at least 1 sequence"
    if not 0 < o["mem_fraction"] <= 1:  # nan fails this too
        return f"--mem-fraction {o['mem_fraction']}: a share of GPU memory, above 0 and at most 1"
    if o["price"] is not None and not (math.isfinite(o["price"]) and o["price"] >= 0):
        return f"--price {o['price']}: a deployment's $/hour is a finite number, 0 or more"
    return None


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
@click.option("--max-num-seqs", default=256, show_default=True, type=int, help="Engine's cap on the running batch.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Also write the JSON here.")
def estimate(**o) -> None:
    """Predict TTFT, TPOT, throughput, KV capacity and cost on hardware you do not own (estimates)."""
    from servebench.estimate import catalog, engines, fit, models, predict
    from servebench.estimate.roofline import ADMITS, SCHEDULES, Deployment

    warn = lambda m: click.echo(f"warning: {m}", err=True)  # noqa: E731
    bad = _bad_numbers(o)
    if bad:
        _fail(bad, 2)
    try:
        hw, o["gpus"] = _hardware(o["gpu"], o["gpus"])
        shape = models.load(o["model"], quant=o["quant"], dtype=o["dtype"], kv_dtype=o["kv_dtype"])
    except (KeyError, ValueError) as e:
        _fail(str(e.args[0] if e.args else e), 2)
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
    d = Deployment(shape, hw, o["gpus"], mem_fraction=o["mem_fraction"], max_num_seqs=o["max_num_seqs"],
                   schedule=SCHEDULES.get(engine, "mixed"), admit=ADMITS.get(engine, "reserve"),
                   p2p={"on": True, "off": False}.get(o["p2p"]), graphs=engines.cuda_graphs(engine, None))
    result = predict.estimate(d, o["levels"], (o["input_tokens"], o["output_tokens"]), cal, o["price"], engine,
                              lockstep=o["arrivals"] == "lockstep",
                              load=o["load_mode"] if o["scheduler"] == "sim" else None)
    result["engine"] = engine
    if catalog.instance(o["gpu"]):
        result["instance_type"] = o["gpu"]
    text = json.dumps(result, indent=2, default=str)
    if o["out"]:
        Path(o["out"]).write_text(text + "\n")
    if o["as_json"]:
        click.echo(text)
    else:
        render(result)


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


def _width() -> int | None:
    """COLUMNS when set (piped too: outputs/render.py's rule; outputs imports this stage, so
    not from there); else the terminal's; piped without it, 140 rather than rich's 80."""
    import os
    import sys

    cols = os.environ.get("COLUMNS", "").strip()
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    return None if sys.stdout.isatty() else 140


def _f(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


def render(r: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=_width())
    m, hw, cap = r["model"], r["hardware"], r["capacity"]
    params = f"{m['params'] / 1e9:.2f} B" if m["params"] >= 1e9 else f"{m['params'] / 1e6:.1f} M"
    console.print(f"[bold]ESTIMATE[/] (not measured): {m['name']} ({params} params, "
                  f"{m['weight_gib']:.3g} GiB weights) on {r['gpus']}x {hw['label']} "
                  f"({hw['bandwidth_gbs']:.4g} GB/s, {hw['memory_gib']:.3g} GiB each)"
                  + (f" = {r['instance_type']}" if r.get("instance_type") else "") + f", engine {r['engine']}, "
                  f"{r['workload']['input_tokens']}→{r['workload']['output_tokens']} tokens, {r['workload']['arrivals']} arrivals")
    if r.get("engine_note"):
        console.print(f"[yellow]note:[/] {r['engine_note']}")
    if r.get("link_note"):
        console.print(f"link: {r['link_note']}")
    if not r["fits"]:
        console.print(f"[bold red]does not fit:[/] {cap['why']}")
        return
    console.print(f"memory per GPU: weights {cap['weights_gib']:.3g} GiB + reserve {cap['reserve_gib']:g} GiB of "
                  f"{cap['usable_gib']:.1f} GiB usable → KV cache {cap['kv_gib']:.1f} GiB = {cap['kv_tokens']:,} tokens "
                  f"({cap['kv_bytes_per_token'] / 1024:.0f} KiB/token); largest batch {cap['max_batch']:,} "
                  f"sequences of {r['workload']['input_tokens'] + r['workload']['output_tokens']} tokens")
    cal = r["calibration"]
    if cal.get("runs"):
        f = cal["factors"]
        loo = cal.get("loo_mape")
        console.print(f"calibrated on {cal['runs']} run(s) ({', '.join(cal['hardware'])}): eta_mem {f['eta_mem']:.2f}, "
                      f"eta_compute {f['eta_compute']:.2f}, step overhead {f['step_ms']:.2f} ms"
                      + (f", collective {f['alpha_us']:.0f} µs, link {f['eta_link']:.2f}" if "alpha_us" in cal["fitted"] else "")
                      + (f"; leave-one-out error {loo:.0%}" if loo is not None else "")
                      + f"; target hardware: {r['transfer']}")
        if r.get("engine_calibrated") is False:
            console.print(f"[yellow]note:[/] no calibration run used {r['engine']} ({', '.join(cal['engines'])} did): band widened")
    else:
        console.print(f"[yellow]not calibrated on your runs[/]: {cal['note']} (pass --calibrate RUN_DIR to fit them on your runs)")
    t = Table(title="Estimate per concurrency (conc)", header_style="bold", pad_edge=False)
    cols = ["conc", "batch", "TTFT ms", "TPOT ms", "ms/tok", "out tok/s", "range", "bound"]
    has_cost = any("usd_per_1m_output_tokens" in x for x in r["levels"])
    if has_cost:
        cols += ["$/1M", "$ range"]
    for c in cols:
        t.add_column(c, justify="right")
    for x in r["levels"]:
        lo, hi = x["output_tok_s_band"]
        row = [str(x["concurrency"]), _f(x["batch"], 0), _f(x["ttft_ms"]), _f(x["tpot_ms"], 2),
               _f(x["ms_per_token"], 2), _f(x["output_tok_s"]), f"{_f(lo, 0)}–{_f(hi, 0)}", x["decode_bound"][:3]]
        if has_cost:
            clo, chi = x["usd_per_1m_output_tokens_band"]
            row += [_f(x["usd_per_1m_output_tokens"], 2), f"{_f(clo, 2)}–{_f(chi, 2)}"]
        t.add_row(*row)
    console.print(t)
    console.print("bound: what limits a decode step (mem = memory bandwidth, com = compute, hos = host kernel launches)")
    console.print(f"uncertainty: every figure {r['band']}; ranges shown for throughput and cost")
    if any(x["queue_ms"] > 0 for x in r["levels"]):
        console.print("[yellow]note:[/] levels above the largest batch queue: their TTFT includes waiting for a slot")
    hit = [f"{x['preemptions']:,} at {x['concurrency']}" for x in r["levels"] if x.get("preemptions")]
    if hit:
        console.print(f"[yellow]note:[/] the KV cache fills and {r['engine']} preempts requests (recomputed later, "
                      f"their time included): {', '.join(hit)}")
