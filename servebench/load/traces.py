"""Traces: when each request arrived and how long it was, read from a production log.

Formats (docs/workloads.md): the Azure LLM inference CSV (TIMESTAMP, ContextTokens,
GeneratedTokens), Mooncake JSONL (timestamp in ms, input_length, output_length, hash_ids),
servebench's own JSONL (time_s, input_tokens, output_tokens, optional prefix_blocks,
block_tokens, prompt), and any CSV or JSONL given a column mapping
(`time=COL[:s|ms|datetime],input=COL,output=COL[,blocks=COL]`). Every problem is one
TraceError naming the file, the line and the field, raised before anything is started.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from servebench.load.jsonl import objects
from servebench.load.prompts import WorkloadError

DATA = Path(__file__).parent / "traces_data"
SHIPPED = {  # name -> (file, format); sources, licences and the slice: traces_data/README.md
    "azure-conv-2023": ("azure_conv_2023.csv", "azure"),
    "mooncake-conversation": ("mooncake_conversation.jsonl", "mooncake"),
}
SHAPES = {"azure": "csv", "mooncake": "jsonl", "servebench": "jsonl", "csv": "csv", "jsonl": "jsonl"}
FORMATS = tuple(SHAPES)
TIME_UNITS = ("s", "ms", "datetime")
MOONCAKE_BLOCK_TOKENS = 512  # the FAST'25 release's block size


class TraceError(WorkloadError):
    pass


@dataclass(frozen=True)
class Columns:
    """Which column holds what; time's unit None: a datetime if it parses as one, else seconds."""

    time: str
    input: str
    output: str
    time_unit: str | None = None
    blocks: str | None = None
    prompt: str | None = None


NAMED = {
    "azure": Columns("TIMESTAMP", "ContextTokens", "GeneratedTokens", "datetime"),
    "mooncake": Columns("timestamp", "input_length", "output_length", "ms", "hash_ids"),
    "servebench": Columns("time_s", "input_tokens", "output_tokens", "s", "prefix_blocks", "prompt"),
}


@dataclass(slots=True)
class TraceRequest:
    t_s: float  # arrival, seconds from the trace's own origin
    input_tokens: int  # 0 when a prompt text is given (counted under the tokenizer later)
    output_tokens: int
    blocks: tuple[int, ...] | None = None  # prefix-block ids, first block first
    prompt: str | None = None
    line: int = 0


@dataclass
class Trace:
    source: str  # as named by the user
    path: Path
    format: str
    requests: list[TraceRequest]
    block_tokens: int | None  # tokens per prefix block; None: no blocks in this trace


def parse_columns(text: str) -> Columns:
    """`time=COL[:unit],input=COL,output=COL[,blocks=COL][,prompt=COL]` -> Columns."""
    got: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, col = part.partition("=")
        if not eq or key not in ("time", "input", "output", "blocks", "prompt") or not col:
            raise TraceError(f"--trace-columns {text!r}: expected time=COL,input=COL,output=COL "
                             "(optional blocks=COL, prompt=COL; time=COL:s|ms|datetime)")
        got[key] = col
    missing = [k for k in ("time", "input", "output") if k not in got]
    if missing:
        raise TraceError(f"--trace-columns {text!r}: missing {', '.join(missing)}=COL")
    col, _, unit = got["time"].partition(":")
    if unit and unit not in TIME_UNITS:
        raise TraceError(f"--trace-columns: time unit {unit!r} is not one of {', '.join(TIME_UNITS)}")
    return Columns(col, got["input"], got["output"], unit or None, got.get("blocks"), got.get("prompt"))


def resolve(source: str) -> tuple[Path, str | None]:
    """A shipped name or a file path -> (path, the format a shipped trace is in)."""
    if source in SHIPPED:
        name, fmt = SHIPPED[source]
        return DATA / name, fmt
    path = Path(source).expanduser()
    if not path.is_file():
        raise TraceError(f"trace {source!r}: no such file, and not a shipped trace ({', '.join(SHIPPED)})")
    return path, None


def load_trace(source: str, fmt: str | None = None, columns: str | Columns | None = None) -> Trace:
    path, shipped_fmt = resolve(source)
    fmt = fmt or shipped_fmt
    if fmt is not None and fmt not in FORMATS:
        raise TraceError(f"{path}: unknown trace format {fmt!r} (known: {', '.join(FORMATS)})")
    cols = parse_columns(columns) if isinstance(columns, str) else columns
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"cannot read trace {path}: {getattr(e, 'strerror', None) or e}") from None
    lines = text.splitlines()
    first = next(((i, ln) for i, ln in enumerate(lines, 1) if ln.strip()), None)
    if first is None:
        raise TraceError(f"{path}: the trace is empty")
    shape = "jsonl" if first[1].lstrip().startswith("{") else "csv"
    if fmt is not None and SHAPES[fmt] != shape:
        raise TraceError(f"{path}:{first[0]}: not a {fmt} trace (the file is {'JSON lines' if shape == 'jsonl' else 'CSV'})")
    rows = _rows(path, lines, shape)
    found = list(rows[0][1]) if rows else []
    fmt, cols = _detect(path, fmt, cols, found, shape)
    reqs = [_request(path, lineno, row, cols) for lineno, row in rows]
    _check_order(path, reqs, cols)
    block = _block_tokens(path, rows, cols) if cols.blocks else None
    if block is not None:
        _check_blocks(path, reqs, block, cols.blocks)
    if not reqs:
        raise TraceError(f"{path}: no requests in the trace")
    return Trace(source, path, fmt, reqs, block if any(r.blocks for r in reqs) else None)


def _rows(path: Path, lines: list[str], shape: str) -> list[tuple[int, dict]]:
    if shape == "csv":
        reader = csv.DictReader(lines)
        out = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise TraceError(f"{path}:{reader.line_num}: expected {len(reader.fieldnames or [])} comma-separated fields")
            out.append((reader.line_num, row))
        return out
    return objects(path, lines, TraceError)


def _detect(path: Path, fmt: str | None, cols: Columns | None, found: list[str], shape: str) -> tuple[str, Columns]:
    if cols is not None:
        chosen = cols
        fmt = fmt or shape
    elif fmt in NAMED:
        chosen = NAMED[fmt]
    else:
        hits = [name for name, c in NAMED.items() if {c.time, c.input, c.output} <= set(found)]
        if len(hits) != 1:
            raise TraceError(f"{path}: cannot tell the trace format (columns found: {', '.join(found) or 'none'}); "
                             "pass --trace-format azure|mooncake|servebench or --trace-columns time=COL,input=COL,output=COL")
        fmt, chosen = hits[0], NAMED[hits[0]]
    required = [c for c in (chosen.time, chosen.input) if c not in found]
    if chosen.output not in found:
        required.append(chosen.output)
    if chosen is NAMED.get("servebench") and chosen.input in required and chosen.prompt in found:
        required.remove(chosen.input)  # a prompt text gives its own length
    if required:
        raise TraceError(f"{path}: missing column(s) {', '.join(required)} for the {fmt} format "
                         f"(columns found: {', '.join(found) or 'none'})")
    return fmt, chosen


def _request(path: Path, lineno: int, row: dict, c: Columns) -> TraceRequest:
    prompt = row.get(c.prompt) if c.prompt else None
    if prompt is not None and not (isinstance(prompt, str) and prompt):
        raise TraceError(f"{path}:{lineno}: {c.prompt}: expected a non-empty string")
    has_input = c.input in row and row[c.input] not in (None, "")
    return TraceRequest(
        t_s=_time(path, lineno, c.time, row.get(c.time), c.time_unit),
        input_tokens=_length(path, lineno, c.input, row.get(c.input)) if has_input or prompt is None else 0,
        output_tokens=_length(path, lineno, c.output, row.get(c.output)),
        blocks=_blocks(path, lineno, c.blocks, row.get(c.blocks)) if c.blocks and row.get(c.blocks) is not None else None,
        prompt=prompt, line=lineno)


def _time(path: Path, lineno: int, field: str, value, unit: str | None) -> float:
    if value is None or value == "":
        raise TraceError(f"{path}:{lineno}: {field}: missing")
    if unit in (None, "datetime") and isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
            # a naive time is read as UTC: a local zone's DST change would bend the schedule
            return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
        except ValueError:
            if unit == "datetime":
                raise TraceError(f"{path}:{lineno}: {field}: {value!r} is not a date and time "
                                 "(YYYY-MM-DD HH:MM:SS[.ffffff])") from None
    try:
        t = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t) or t < 0:
        raise TraceError(f"{path}:{lineno}: {field}: {value!r} is not a time (a non-negative number of "
                         f"{'ms' if unit == 'ms' else 'seconds'}{'' if unit else ', or a date and time'})")
    return t / 1000 if unit == "ms" else t


def _length(path: Path, lineno: int, field: str, value) -> int:
    if value is None or value == "":
        raise TraceError(f"{path}:{lineno}: {field}: missing")
    n = value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        n = int(value)
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TraceError(f"{path}:{lineno}: {field}: {value!r} is not a number of tokens")
    if n < 1:
        # never sent on: 0 or a negative output length reads as "no limit" on some servers
        raise TraceError(f"{path}:{lineno}: {field}: {n} tokens (a length must be at least 1)")
    return n


def _blocks(path: Path, lineno: int, field: str, value) -> tuple[int, ...]:
    if isinstance(value, str):  # a CSV cell: a JSON list or space-separated ids
        try:
            value = json.loads(value) if value.strip().startswith("[") else [int(x) for x in value.split()]
        except ValueError:
            value = None
    if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise TraceError(f"{path}:{lineno}: {field}: expected a list of integer block ids")
    return tuple(value)


def _check_order(path: Path, reqs: list[TraceRequest], c: Columns) -> None:
    for prev, r in zip(reqs, reqs[1:]):
        if r.t_s < prev.t_s:
            raise TraceError(f"{path}:{r.line}: {c.time}: time goes backwards "
                             f"({r.t_s - reqs[0].t_s:.3f} s after the first request, line {prev.line} was at "
                             f"{prev.t_s - reqs[0].t_s:.3f} s)")


def _block_tokens(path: Path, rows: list[tuple[int, dict]], c: Columns) -> int:
    """Mooncake: 512. The own format: `block_tokens` on any line (all alike), else 512."""
    sizes = {(ln, row["block_tokens"]) for ln, row in rows if "block_tokens" in row}
    values = {v for _, v in sizes}
    for ln, v in sorted(sizes):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise TraceError(f"{path}:{ln}: block_tokens: {v!r} is not a positive integer")
    if len(values) > 1:
        ln = max(ln for ln, _ in sizes)
        raise TraceError(f"{path}:{ln}: block_tokens: lines disagree ({', '.join(map(str, sorted(values)))})")
    return values.pop() if values else MOONCAKE_BLOCK_TOKENS


def _check_blocks(path: Path, reqs: list[TraceRequest], block: int, field: str) -> None:
    """A block id names a prefix: it covers tokens [k*block, (k+1)*block) of every prompt that
    has it at position k. More blocks than the prompt has tokens for, or an id at two
    positions, cannot be built."""
    where: dict[int, tuple[int, int]] = {}
    for r in reqs:
        if not r.blocks:
            continue
        if r.input_tokens and (len(r.blocks) - 1) * block >= r.input_tokens:
            raise TraceError(f"{path}:{r.line}: {field}: {len(r.blocks)} blocks of {block} tokens are longer than "
                             f"the prompt ({r.input_tokens} tokens)")
        for k, b in enumerate(r.blocks):
            k0, line0 = where.setdefault(b, (k, r.line))
            if k0 != k:
                raise TraceError(f"{path}:{r.line}: {field}: block {b} at position {k}, but at {k0} on line {line0} "
                                 "(a block id names a prefix, so it has one position)")
