"""`servebench profile`: where one forward pass spends its time, each module beside its floor.

Measurement in forward.py; here the command, the tables and the chart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import NoReturn

import click

from servebench.errors import first_line
from servebench.estimate.forward import run_profile


def chart(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["modules"] if r["ms"] > 0 and r["depth"] > 0 or r["module"] in ("embedding", "LM head", "final RMSNorm")]
    names = [("· " * r["depth"]) + r["module"] for r in rows][::-1]  # matplotlib drops leading spaces
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    y = range(len(rows))
    ax.barh(y, [r["ms"] for r in rows][::-1], color="#4c72b0", label="measured")
    ax.barh(y, [r["floor_ms"] or 0 for r in rows][::-1], color="#dd8452", height=0.4, label="floor")
    ax.set_yticks(list(y), names, fontsize=8)
    ax.set_xlabel("ms per forward")
    ax.set_title(f"{result['model']} {result['phase']} batch {result['batch']} seq {result['seq']} on "
                 f"{result['hardware']['label']} ({result['dtype']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(result: dict, console) -> None:
    from rich.table import Table

    r = result
    console.print(f"[bold]{r['model']}[/] {r['phase']} batch {r['batch']} seq {r['seq']} on {r['hardware']['label']} "
                  f"({r['device']}, {r['dtype']}, {r['layers']} layers, {r['params'] / 1e6:.1f} M params): forward "
                  f"{r['forward_ms']:.3f} ms ({r['forward_hooked_ms']:.3f} ms with module hooks), floor "
                  f"{r['floor_ms']:.3f} ms, efficiency {r['efficiency']:.2f}")
    t = Table(title="Time per module (per forward)", header_style="bold")
    for c in ("module", "calls", "ms", "share", "floor ms", "floor/ms", "bound"):
        t.add_column(c, justify="left" if c == "module" else "right")
    for m in r["modules"]:
        t.add_row("  " * m["depth"] + m["module"], str(m["calls"] or "-"), f"{m['ms']:.3f}",
                  f"{m['share']:.1%}" if m["share"] is not None else "-",
                  f"{m['floor_ms']:.4f}" if m["floor_ms"] is not None else "-",
                  f"{m['efficiency']:.2f}" if m["efficiency"] else "-", m["bound"] or "-")
    console.print(t)
    o = Table(title="Top operators (torch.profiler, self time)", header_style="bold")
    for c in ("operator", "calls", "self ms", "share"):
        o.add_column(c, justify="left" if c == "operator" else "right")
    for op in r["operators"]:
        o.add_row(op["op"], str(op["calls"]), f"{op['self_ms']:.3f}", f"{op['share']:.1%}")
    console.print(o)


def check_positions(cfg: dict, name: str, phase: str, seq: int) -> None:
    """Refuse a context the model has no positions for: its rotary/learned positions end there,
    and the attention of a 100,000-token prefill on a 2,048-position model ran on past 90 s
    and 1 GB before any error."""
    lm = cfg.get("text_config", cfg)
    limit = lm.get("max_position_embeddings") or lm.get("n_positions") or lm.get("max_seq_len")
    need = seq + 1 if phase == "decode" else seq  # decode writes position `seq` after the context
    if isinstance(limit, int) and need > limit:
        raise ValueError(f"--seq {seq:,} ({phase}) needs {need:,} positions; {name} has {limit:,} "
                         f"(max_position_embeddings): use --seq {limit - 1 if phase == 'decode' else limit} or less")


def _working_set(shape, batch: int, seq: int, dbytes: int) -> float:
    """Bytes a forward holds beside the weights, roughly: the token ids (int64), one layer's
    activations at a time (hidden states, the MLP's three intermediates, the attention scores
    where SDPA falls back to the plain kernel) and the KV cache a decode keeps for every layer.
    Decode runs the prefill that fills its cache, so both phases pay the prefill's share."""
    tokens = batch * seq
    per_token = 4 * shape.hidden + 3 * shape.intermediate + shape.heads * seq
    kv = 2 * shape.layers * shape.kv_heads * shape.head_dim  # counted for a prefill too: a little over
    return tokens * (8 + (per_token + kv) * dbytes)


def _check_memory(cfg: dict, name: str, device: str, dtype: str | None, layers: int | None,
                  batch: int = 1, seq: int = 1) -> None:
    """Refuse up front what would exhaust memory (an OOM kill leaves no error line; a batch of
    100,000,000 allocated until the host swapped, with no end in sight)."""
    import torch

    from servebench.estimate import models

    shape = models.shape(dict(cfg, **({"num_hidden_layers": layers} if layers is not None else {})), name)
    dbytes = 4 if (dtype or ("float32" if device == "cpu" else "bfloat16")) == "float32" else 2
    nbytes = shape.params * dbytes
    if device.startswith("cuda"):
        free = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    if nbytes > 0.7 * free:
        raise ValueError(f"{name} needs {nbytes / 2**30:.1f} GiB of weights, {free / 2**30:.1f} GiB free on {device}: "
                         f"use --layers N (e.g. --layers {max(1, int(shape.layers * 0.7 * free / nbytes))}) or a smaller model")
    work = _working_set(shape, batch, seq, dbytes)
    if nbytes + work > 0.7 * free:
        raise ValueError(f"--batch {batch:,} --seq {seq:,} needs about {work / 2**30:,.1f} GiB of activations and KV cache "
                         f"beside {nbytes / 2**30:.1f} GiB of weights, {free / 2**30:.1f} GiB free on {device}: "
                         "use a smaller --batch or --seq")


def _fail(msg: str, code: int) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    raise SystemExit(code)


def _bad_options(o: dict) -> str | None:
    if o["batch"] < 1 or o["seq"] < 1 or o["repeats"] < 1:
        return "--batch, --seq and --repeats must be >= 1"
    if o["layers"] is not None and o["layers"] < 1:  # 0 once read as "not given": the full model ran
        return f"--layers {o['layers']}: at least 1 decoder layer"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", o["device"]):  # torch's own error lists its 20 device types
        return f"--device {o['device']}: cpu, cuda or cuda:N"
    return None


def _make_out(out: Path) -> bool:
    """Create --out before the forward pass, so an unwritable one is refused before minutes of
    profiling; True when this call created it (it is removed again if the profile fails)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: a file, not a directory")
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot create the directory ({e.strerror or first_line(e)})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the directory is not writable")
    return made


def _measure(o: dict) -> tuple[dict, Path]:
    """The checks that need the model's config, then --out, then the forward pass."""
    from servebench.estimate import models

    name, cfg = models.find_config(o["model"])
    models.shape(cfg, name)  # a broken config (0 heads) first: the other checks read its dimensions
    check_positions(cfg, name, o["phase"], o["seq"])
    _check_memory(cfg, name, o["device"], o["dtype"], o["layers"], o["batch"], o["seq"])
    out = o["out"] or Path("results") / time.strftime("profile-%Y%m%d-%H%M%S")
    made = _make_out(out)
    try:
        return run_profile(cfg, name, o["phase"], o["batch"], o["seq"], device=o["device"], dtype=o["dtype"],
                           repeats=o["repeats"], layers=o["layers"]), out
    except BaseException:
        if made:  # no empty directory left behind by a profile that failed
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


@click.command("profile")
@click.option("--model", default="tiny", show_default=True, help="tiny | small | config.json | model dir | shipped model id.")
@click.option("--phase", default="decode", show_default=True, type=click.Choice(["prefill", "decode"]))
@click.option("--batch", default=1, show_default=True, type=int)
@click.option("--seq", default=512, show_default=True, type=int, help="Prompt length (prefill) or context length (decode).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N")
@click.option("--dtype", default=None, type=click.Choice(["float32", "bfloat16", "float16"]), help="Default: float32 on CPU, bfloat16 on CUDA.")
@click.option("--layers", default=None, type=int, help="Override the layer count (to fit a big shape in memory).")
@click.option("--repeats", default=5, show_default=True, type=int)
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Directory for profile.json and profile.png (default results/profile-<time>).")
@click.option("--json", "as_json", is_flag=True)
def profile(**o) -> None:
    """Time per module and per operator of one forward pass, each beside its own floor."""
    from rich.console import Console

    bad = _bad_options(o)
    if bad:
        _fail(bad, 2)
    try:
        import torch
    except ImportError:
        click.echo("error: servebench profile needs torch (pip install torch)", err=True)
        raise SystemExit(1)
    if o["device"].startswith("cuda") and not torch.cuda.is_available():
        click.echo("error: --device cuda but torch sees no CUDA device", err=True)
        raise SystemExit(1)
    try:
        result, out = _measure(o)
    except (KeyError, ValueError) as e:
        _fail(str(e.args[0] if e.args else e), 2)
    except RuntimeError as e:  # out of memory, unsupported dtype on this device
        _fail(first_line(e), 1)
    try:
        (out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
        chart(result, out / "profile.png")
    except OSError as e:  # checked writable before the forward: a fault now (disk full), not bad input
        _fail(f"cannot write the profile to {out}: {e.strerror or first_line(e)}", 1)
    if o["as_json"]:
        click.echo(json.dumps(result, indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 120)
        render(result, console)
        console.print(f"chart: {out / 'profile.png'}")
    click.echo(str(out))
