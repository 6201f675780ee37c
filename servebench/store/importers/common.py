"""What every importer builds: one run directory (run.json + summary.json) per measured point.

An imported run holds what its source measured and nothing else: a field the source does not
give is null (docs/decide.md, "Importing other tools' results"). run.json names the source
(tool, version, file, command when known) and marks the run `imported`, so that readers which
need servebench's own records (requests.parquet) know there are none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from servebench import SCHEMA_VERSION, __version__
from servebench.store.runfiles import write_json, write_summary

STAT_KEYS = ("mean", "p50", "p90", "p95", "p99", "min", "max", "std", "n")
LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ms_per_token")


class ImportFailed(ValueError):
    """A source file cannot be imported (message is one line, naming the file)."""


def read_json(path: Path, what: str) -> Any:
    """The file's JSON, or ImportFailed naming it as not `what` (unreadable, or not JSON)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ImportFailed(f"{path}: not {what} ({e})") from None


def dist(values: Sequence[float]) -> dict[str, float | None]:
    """The definition of analysis.metrics.dist (numpy's linear percentiles), restated here
    because store/ sits below analysis/ and may not import it."""
    if len(values) == 0:
        return missing()
    a = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {"mean": float(a.mean())}
    for p, v in zip((50, 90, 95, 99), np.percentile(a, (50, 90, 95, 99))):
        out[f"p{p}"] = float(v)
    out.update(min=float(a.min()), max=float(a.max()), std=float(a.std()), n=int(a.size))
    return out


def missing() -> dict[str, None]:
    return {k: None for k in STAT_KEYS}


def stats(**given: float | None) -> dict[str, float | None]:
    """A distribution of which only the given statistics are known; the rest stay null."""
    out: dict[str, Any] = missing()
    for k, v in given.items():
        if k not in out:
            raise KeyError(k)
        out[k] = num(v)
    return out


def num(v: Any) -> float | None:
    """A finite number, or None (a source's "", null, NaN or text is not a measurement)."""
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def empty_summary() -> dict[str, Any]:
    """Every summary.json field a reader looks for, null until the source gives it."""
    return {
        "schema_version": SCHEMA_VERSION, "status": "complete", "completed": None, "failed": None,
        "error_rate": None, "duration_s": None, "request_throughput": None, "output_token_throughput": None,
        "total_token_throughput": None, **{m: missing() for m in LATENCIES},
        "input_tokens": {"requested_mean": None, "server_mean": None, "total": None},
        "output_tokens": {"requested_mean": None, "achieved_mean": None, "total": None},
        "concurrency": {"target": None, "mean_in_flight": None, "max_in_flight": None},
        "warnings": [],
    }


@dataclass
class Imported:
    """One measured point of a source, in servebench's terms."""

    name: str
    source: dict  # tool, version, file, command (None when the source does not say)
    server: dict = field(default_factory=dict)  # engine, model, quantization, hardware, instance_type, gpu_count
    load: dict = field(default_factory=dict)  # mode, concurrency, rate, requests, input_tokens, output_tokens
    summary: dict = field(default_factory=empty_summary)
    engine_version: str | None = None
    started_at: str | None = None
    price: dict | None = None  # {"usd_per_hour", "source"}: a price the source itself states
    notes: list[str] = field(default_factory=list)


SERVER_KEYS = ("engine", "model", "quantization", "hardware", "instance_type", "gpu_count")
LOAD_KEYS = ("mode", "concurrency", "rate", "requests", "duration_s", "input_tokens", "output_tokens")


def run_json(imp: Imported) -> dict:
    server = {k: imp.server.get(k) for k in SERVER_KEYS}
    load = {**{k: imp.load.get(k) for k in LOAD_KEYS}, "repeat": 0, "seed": imp.load.get("seed")}
    out = {
        "schema_version": SCHEMA_VERSION, "servebench_version": __version__, "status": "complete", "error": None,
        "imported": True, "source": imp.source, "started_at": imp.started_at,
        "model": server["model"], "engine": {"name": server["engine"], "version": imp.engine_version},
        "host": {"hostname": None, "gpus": []},
        "cell": {"id": imp.name, "group": None, "server": {**server, "label": None}, "load": load},
        "notes": imp.notes,
    }
    if imp.price:
        out["price"] = imp.price
    return out


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def write_run(out_dir: Path, imp: Imported) -> Path:
    """DIR/<name>/{run.json, summary.json}; an existing directory is never written over."""
    path = Path(out_dir) / safe_name(imp.name)
    if path.exists():
        raise ImportFailed(f"{path} exists: import into a new -o DIR (nothing is written over)")
    path.mkdir(parents=True)
    write_summary(path, {**imp.summary, "source": imp.source, "imported": True})
    write_json(path / "run.json", run_json(imp))
    return path


def with_overrides(imp: Imported, given: dict) -> Imported:
    """What the user states on the command line (--engine, --gpu, ...) fills what the file
    leaves unsaid; it never replaces what the file says."""
    for k, v in given.items():
        part = imp.load if k in LOAD_KEYS else imp.server
        if v is not None and part.get(k) is None:
            part[k] = v
            imp.notes.append(f"{k} {v!r}: given on the command line, not in the source file")
    return imp


def grouped_reads(imp: Imported) -> Imported:
    """A tool's ITL is one gap per event as its client saw it: events that arrived in one read
    share a stamp and give gaps of 0. When that is at least half of them while TPOT is not near 0,
    its ITL percentiles describe how the tokens were grouped into reads (a server writing them
    together, or the tool reading late), not the server's pace: said, not changed."""
    s = imp.summary
    itl, tpot = s["itl_ms"].get("p50"), s["tpot_ms"].get("p50")
    if itl is not None and tpot is not None and tpot >= 0.5 and itl < 0.05 * tpot:
        msg = (f"ITL p50 {itl:.2f} ms with TPOT p50 {tpot:.2f} ms: at least half the token gaps are ~0 "
               "(tokens that arrived in one read); the ITL percentiles describe reads, TPOT the pace")
        imp.notes.append(msg)
        s["warnings"].append(msg)
    return imp

