"""Read run, compare and sweep directories into one table: a row per run (or failed cell).

A sweep/compare dir has index.json (groups = server configurations, cells = load points,
runs/<cell>/ = ordinary run dirs; docs/decide.md). A plain run dir has run.json + summary.json;
its labels come from run.json["cell"] when a sweep made it, else from run.json["config"].
A directory holding run dirs (e.g. results/) reads as a collection: every run, compare and
sweep beneath it (find.py); what could not be read is a row of status "skipped" saying why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from servebench.decide.find import find, is_run, is_sweep
from servebench.decide.noise import add_repeat_cis, ci_columns
from servebench.decide.names import config_label, engine_name, model_family  # noqa: F401 (model_family re-exported)
from servebench.errors import first_line

LATENCY = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ms_per_token")
STATS = ("mean", "p50", "p90", "p95", "p99")


class LoadError(ValueError):
    """A directory can't be read (message is one line)."""


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # ValueError: JSON or UTF-8
        raise LoadError(f"cannot read {path}: {first_line(e)}") from None
    if not isinstance(data, dict):
        hint = " (servebench report --rebuild remakes it)" if path.name == "summary.json" else ""
        raise LoadError(f"cannot read {path}: a JSON object is needed, not {type(data).__name__}{hint}")
    return data


def _index(path: Path) -> dict:
    """index.json with its lists checked: a hand-edited or foreign file is named, never a traceback."""
    idx = _json(path)
    for key, need in (("groups", ()), ("cells", ("id",))):
        rows = idx.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in need) for r in rows):
            what = "objects with an id" if need else "objects"
            raise LoadError(f"cannot read {path}: '{key}' must be a list of {what}, got {json.dumps(rows)[:60]}")
    if not idx.get("cells"):
        raise LoadError(f"{path} lists no cells")
    return idx


def kind(path: Path) -> str:
    """'sweep' | 'compare' | 'run' | 'runs' (a folder with runs, compares or sweeps beneath it)."""
    path = Path(path)
    if not path.is_dir():
        raise LoadError(f"{path}: not a directory")
    if is_sweep(path):
        k = _index(path / "index.json").get("kind", "sweep")
        return k if k in ("sweep", "compare") else "sweep"
    if is_run(path):
        return "run"
    if find(path)[0]:
        return "runs"
    raise LoadError(f"{path}: no index.json, summary.json or run directories in it")


def _quant_from_args(args: list[str] | None) -> str | None:
    args = list(args or [])
    for i, a in enumerate(args):
        if a.startswith("--quantization=") or a.startswith("--quantize="):
            return a.split("=", 1)[1]
        if a in ("--quantization", "--quantize", "-q") and i + 1 < len(args):
            return args[i + 1]
    return None


def _server_from_config(run: dict) -> dict:
    """The sweep's server block, rebuilt for a plain `servebench run` directory."""
    cfg = run.get("config") or {}
    lo = cfg.get("launcher_options") or {}
    host = run.get("host") or {}
    tel_gpus = (((run.get("_summary") or {}).get("telemetry") or {}).get("gpu") or {}).get("gpus") or []
    host_gpus = host.get("gpus") or []
    used = tel_gpus or host_gpus
    hardware = lo.get("hardware")
    local = cfg.get("launcher", "process") == "process" and not cfg.get("endpoint")
    if hardware is None and local:
        hardware = used[0].get("name") if used else "cpu"
    gpus = cfg.get("gpus")
    count = len(gpus) if gpus else (len(used) if (local or tel_gpus) else None)
    return {
        "engine": (run.get("engine") or {}).get("name") or cfg.get("backend"),
        "model": run.get("model") or cfg.get("model"),
        "quantization": lo.get("quantize") or lo.get("quantization") or _quant_from_args(cfg.get("server_args")),
        "hardware": hardware,
        "instance_type": lo.get("instance_type"),
        "gpu_count": count if count is not None else (0 if hardware == "cpu" else None),
        "gpus": gpus,
        "launcher": cfg.get("launcher"),
        "engine_args": cfg.get("server_args") or [],
        "label": None,
    }


def _load_from_config(run: dict) -> dict:
    cfg = run.get("config") or {}
    ld, wl = cfg.get("load") or {}, cfg.get("workload") or {}
    mode = "rate" if ld.get("rate") else ("concurrency" if ld.get("concurrency") else "burst")
    trace = wl.get("trace") or {}
    return {"mode": "trace" if trace else mode, "concurrency": ld.get("concurrency"),
            "rate": None if trace else ld.get("rate"), "speed": trace.get("speed"),
            "requests": ld.get("requests"), "duration_s": ld.get("duration_s"),
            "input_tokens": wl.get("input_tokens"), "output_tokens": wl.get("output_tokens"),
            "repeat": 0, "seed": ld.get("seed")}


def _metrics(summary: dict) -> dict[str, Any]:
    out: dict[str, Any] = {k: summary.get(k) for k in (
        "completed", "failed", "error_rate", "duration_s", "request_throughput",
        "output_token_throughput", "total_token_throughput")}
    for m in LATENCY:
        d = summary.get(m) or {}
        for s in STATS:
            out[f"{m}_{s}"] = d.get(s)
    c = summary.get("concurrency") or {}
    out["mean_in_flight"] = c.get("mean_in_flight")
    gpu = (summary.get("telemetry") or {}).get("gpu") or {}
    total = gpu.get("total") or {}
    out["energy_j"] = total.get("energy_j") if gpu.get("available") else None
    out["gpus_measured"] = len(gpu.get("gpus") or []) if gpu.get("available") else 0
    out["warnings"] = len(summary.get("warnings") or [])
    # its figures are over a steady-state window (summary.json's steady_state), or the whole run
    out["steady_state"] = bool((summary.get("steady_state") or {}).get("applied"))
    out.update(ci_columns(summary))  # X_ci_low / X_ci_high, ci: "run" (decide/noise.py)
    return out


def _row(run_dir: Path | None, server: dict, load: dict, *, status: str, error: str | None,
         cell_id: str | None, group: str | None, source: str) -> dict:
    server = {**server, "engine": engine_name(server.get("engine"))}
    row: dict[str, Any] = {"source": source, "cell": cell_id, "group": group, "status": status, "error": error,
                           "run_dir": str(run_dir) if run_dir else None, "engine_version": None, "hostname": None}
    for k in ("engine", "model", "quantization", "hardware", "instance_type", "gpu_count", "launcher"):
        row[k] = server.get(k)
    row["config"] = config_label(server)
    row["family"] = model_family(server.get("model"))
    for k in ("mode", "concurrency", "rate", "speed", "requests", "input_tokens", "output_tokens", "repeat"):
        row[k] = load.get(k)
    row["load_level"] = level(load)
    return row


def level(load: dict) -> str:
    if load.get("mode") == "trace":
        return f"trace x{load.get('speed') or 1:g}"
    if load.get("mode") == "rate" or (load.get("rate") and load.get("mode") != "concurrency"):
        # an imported row may say "rate" without the rate (published tables): say so, never guess
        rate = f"{load['rate']:g}/s" if load.get("rate") is not None else "not stated"
        return f"rate {rate}" + (f" cap {load['concurrency']}" if load.get("concurrency") else "")
    if load.get("concurrency"):
        return f"{load['concurrency']} concurrent"
    return f"burst {load.get('requests')}"


def _fill_from_run(row: dict, run_dir: Path) -> None:
    run = _json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    row["engine_version"] = (run.get("engine") or {}).get("version")
    row["hostname"] = (run.get("host") or {}).get("hostname")
    if run.get("imported"):  # servebench import: what made it, and the price its source states
        row["imported"] = (run.get("source") or {}).get("tool") or "?"
        price = run.get("price") or {}
        row["stated_usd_per_hour"] = price.get("usd_per_hour")
        row["stated_price_source"] = price.get("source")
    s = _json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else None
    if row.get("hardware") is None and row.get("instance_type") is None and run:
        # A sweep server without a hardware label: what the run saw (local launch: its GPUs, or cpu).
        derived = _server_from_config({**run, "_summary": s or {}})
        row["hardware"] = derived["hardware"]
        if row.get("gpu_count") is None:
            row["gpu_count"] = derived["gpu_count"]
    if s is not None:
        row.update(_metrics(s))
        if row["status"] in ("done", None):
            row["status"] = s.get("status", "complete")
        row["error"] = row["error"] or s.get("error")
    elif row["status"] in ("done", None):
        row["status"], row["error"] = "failed", row["error"] or "no summary.json"


def load_run(run_dir: Path, source: str | None = None) -> dict:
    run_dir = Path(run_dir)
    run = _json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    if (run_dir / "summary.json").exists():
        run["_summary"] = _json(run_dir / "summary.json")
    cell = run.get("cell") or {}
    server = cell.get("server") or _server_from_config(run)
    load = cell.get("load") or _load_from_config(run)
    row = _row(run_dir, server, load, status=None, error=run.get("error"), cell_id=cell.get("id") or run_dir.name,
               group=cell.get("group"), source=source or run_dir.name)
    _fill_from_run(row, run_dir)
    return row


def load_sweep(path: Path, source: str | None = None) -> list[dict]:
    path = Path(path)
    idx = _index(path / "index.json")
    groups = {g.get("id"): g for g in idx.get("groups") or []}
    rows = []
    for c in idx.get("cells") or []:
        g = groups.get(c.get("group"), {})
        server = g.get("server") or {}
        status, error = c.get("status"), c.get("error")
        if g.get("status") == "failed" and status != "done":
            status, error = "failed", error or g.get("error")
        run_dir = path / c["run_dir"] if c.get("run_dir") else None
        row = _row(run_dir, server, c.get("load") or {}, status=status, error=error, cell_id=c.get("id"),
                   group=c.get("group"), source=source or idx.get("name") or path.name)
        if run_dir is not None and run_dir.is_dir():
            _fill_from_run(row, run_dir)
        elif status == "done":
            row["status"], row["error"] = "failed", f"run dir {c.get('run_dir')} missing"
        rows.append(row)
    return rows


def load_dir(path: Path, source: str | None = None) -> pd.DataFrame:
    path = Path(path)
    k = kind(path)
    if k == "run":
        rows = [load_run(path, source)]
    elif k == "runs":
        rows = _load_tree(path, source)
    else:
        rows = load_sweep(path, source)
    df = pd.DataFrame(rows)
    for col in _metrics({}):  # no cell measured anything (every server failed to start): still a frame to report
        if col not in df:
            df[col] = float("nan")
    df["kind"] = k
    return df


def _load_tree(path: Path, source: str | None) -> list[dict]:
    """Every run, compare and sweep beneath path; one that cannot be read is a skipped row."""
    found, skipped = find(path)
    rows: list[dict] = []
    for k, p in found:
        try:
            rows += load_sweep(p, source) if k == "sweep" else [load_run(p, source or path.name)]
        except (LoadError, KeyError, TypeError, ValueError, AttributeError) as e:
            skipped.append((p, first_line(e) or type(e).__name__))
    if not rows:  # nothing measured to show: an error, naming what was found and why it was not read
        p, why = skipped[0]
        raise LoadError(f"{path}: nothing readable beneath it ({p}: {why})")
    for p, why in skipped:
        rel = p.relative_to(path).as_posix() if p.is_relative_to(path) else str(p)
        rows.append({"source": source or path.name, "cell": rel, "config": rel, "load_level": "-",
                     "status": "skipped", "error": why, "run_dir": str(p)})
    return rows


def spec_path(spec: str) -> tuple[str | None, Path]:
    """DIR or NAME=DIR -> (NAME or None, DIR); a directory whose own name holds '=' is a DIR."""
    name, sep, p = spec.partition("=")
    return (name, Path(p)) if sep and not Path(spec).exists() else (None, Path(spec))


def load_dirs(specs: list[str]) -> pd.DataFrame:
    """Each spec is DIR or NAME=DIR; the first is the baseline of a comparison."""
    frames = []
    for i, spec in enumerate(specs):
        label, path = spec_path(spec)
        df = load_dir(path, label)
        if label is None and len(specs) > 1:
            df["source"] = path.name  # several inputs: each is one side of the comparison
        df["baseline"] = i == 0
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def merge_repeats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and load point: repeats of it (sweep `repeats: N`) are averaged,
    metric by metric, so a lucky repeat never wins a table. Rows that may not rank stay as they are."""
    if "repeat" not in df or not (df["repeat"].fillna(0) > 0).any():
        return df.assign(repeats=1)
    keys = ["source", "config", "mode", "concurrency", "rate", "speed", "requests", "input_tokens", "output_tokens"]
    ok = ok_mask(df)
    num = [c for c in df.select_dtypes("number").columns if c not in keys + ["repeat"]]
    agg = {c: ("mean" if c in num else "first") for c in df.columns if c not in keys}
    agg["cell"] = lambda s: ",".join(map(str, s))
    merged = df[ok].groupby(keys, dropna=False, sort=False).agg(agg).reset_index()
    merged["repeats"] = df[ok].groupby(keys, dropna=False, sort=False).size().to_numpy()
    merged = add_repeat_cis(merged, df[ok], keys)  # across repeats: ci "repeats"
    rest = df[~ok].assign(repeats=1)
    return pd.concat([merged[df.columns.tolist() + ["repeats"]], rest], ignore_index=True)


def ok_mask(df: pd.DataFrame) -> pd.Series:
    """Rows that may be ranked: a complete run with completed requests. Failed, interrupted,
    pending cells are listed, never ranked (a partial run's numbers cover only part of the load)."""
    done = df["completed"].fillna(0) > 0 if "completed" in df else pd.Series(False, index=df.index)
    if "imported" in df and "completed" in df:  # a published row states no request count: it ranks on what it states
        done |= df["imported"].notna() & df["completed"].isna()
    return done & (df["status"] == "complete")
