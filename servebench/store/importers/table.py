"""A table of published rows (CSV, or YAML: a list of rows or {rows: [...]}) -> one run per row.

Columns (docs/decide.md; the estimate's published rows use the same): source, citation, engine,
engine_version, model, quantization, gpu, gpu_count, instance, concurrency, load
(closed|burst|rate), input_tokens, output_tokens, ms_per_token, tokens_per_s, ttft_ms,
usd_per_hour, notes. Any measurement column may be empty. A published table gives one figure per
metric: ms_per_token and ttft_ms are read as the median (what a published table quotes),
tokens_per_s as output tokens per second. A row's usd_per_hour is the price its source states;
`--price` overrides it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from servebench.store.importers.common import Imported, ImportFailed, num, safe_name, stats

COLUMNS = ("source", "citation", "engine", "engine_version", "model", "quantization", "gpu", "gpu_count", "instance",
           "concurrency", "load", "input_tokens", "output_tokens", "ms_per_token", "tokens_per_s", "ttft_ms",
           "usd_per_hour", "notes")
MEASURED = ("ms_per_token", "tokens_per_s", "ttft_ms")
_MODES = {"closed": "concurrency", "burst": "burst", "rate": "rate"}


def _rows(path: Path) -> list[dict]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ImportFailed(f"{path}: cannot read ({e})") from None
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ImportFailed(f"{path}: not YAML ({str(e).splitlines()[0]})") from None
        rows = data.get("rows") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ImportFailed(f"{path}: a YAML table is a list of rows (mappings), or {{rows: [...]}}")
        return rows
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]  # comment lines carry provenance
    return list(csv.DictReader(lines))


def _check(path: Path, rows: list[dict]) -> None:
    if not rows:
        raise ImportFailed(f"{path}: no rows")
    unknown = sorted({k for r in rows for k in r if k not in COLUMNS and k is not None})
    if unknown:
        raise ImportFailed(f"{path}: unknown column {unknown[0]!r} (columns: {', '.join(COLUMNS)})")
    for i, r in enumerate(rows, 1):
        if None in r:
            raise ImportFailed(f"{path}: row {i} has more cells than the header")
        for need in ("model", "load"):
            if not str(r.get(need) or "").strip():
                raise ImportFailed(f"{path}: row {i} has no {need}")
        if str(r["load"]).strip() not in _MODES:
            raise ImportFailed(f"{path}: row {i}: load {r['load']!r} (closed, burst or rate)")
        for k in MEASURED + ("usd_per_hour", "concurrency", "gpu_count", "input_tokens", "output_tokens"):
            v = r.get(k)
            if v not in (None, "") and (num(v) is None or num(v) < 0):
                raise ImportFailed(f"{path}: row {i}: {k} {v!r} is not a number >= 0")
        if all(num(r.get(k)) is None for k in MEASURED):
            raise ImportFailed(f"{path}: row {i} has no measurement (ms_per_token, tokens_per_s or ttft_ms)")


def _text(v) -> str | None:
    v = str(v).strip() if v is not None else ""
    return v or None


def _int(v) -> int | None:
    f = num(v)
    return int(f) if f is not None else None


def read(path: Path) -> list[Imported]:
    rows = _rows(path)
    _check(path, rows)
    out = []
    for i, r in enumerate(rows, 1):
        where = _text(r.get("instance")) or _text(r.get("gpu")) or "unknown"
        quant = _text(r.get("quantization"))
        quant = None if quant and quant.lower() == "none" else quant
        conc = _int(r.get("concurrency"))
        name = safe_name(f"{Path(path).stem}-{i:02d}-{r['model']}-{quant or 'none'}-{where}-c{conc if conc is not None else 'x'}")
        imp = Imported(name=name, source={"tool": "table", "version": None, "file": str(path), "command": None,
                                          "publisher": _text(r.get("source")), "citation": _text(r.get("citation")),
                                          "row": i})
        imp.engine_version = _text(r.get("engine_version"))
        imp.server = {"engine": _text(r.get("engine")), "model": _text(r.get("model")), "quantization": quant,
                      "hardware": _text(r.get("gpu")), "instance_type": _text(r.get("instance")),
                      "gpu_count": _int(r.get("gpu_count"))}
        mode = _MODES[str(r["load"]).strip()]
        imp.load = {"mode": mode, "concurrency": conc, "rate": None, "requests": None, "duration_s": None,
                    "input_tokens": num(r.get("input_tokens")), "output_tokens": num(r.get("output_tokens"))}
        s = imp.summary
        s["output_token_throughput"] = num(r.get("tokens_per_s"))
        s["ms_per_token"] = stats(p50=r.get("ms_per_token"))
        s["ttft_ms"] = stats(p50=r.get("ttft_ms"))
        s["concurrency"]["target"] = conc
        if num(r.get("usd_per_hour")) is not None:
            imp.price = {"usd_per_hour": num(r.get("usd_per_hour")),
                         "source": f"{_text(r.get('source')) or Path(path).name} (as published)"}
        if _text(r.get("notes")):
            imp.notes.append(_text(r.get("notes")))
        imp.notes.append("published row: request counts, duration and all other statistics missing")
        out.append(imp)
    return out
