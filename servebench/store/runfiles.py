"""Results on disk: results/<run-id>/{run.json, requests.parquet, summary.json, ...}.

requests.parquet keeps the raw perf_counter_ns timestamps (one row per request, per-token
arrival times as a list column), so every summary number can be recomputed from it
(`load_records` + `metrics.summarize`).
"""

from __future__ import annotations

import json
import re
import time
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError

from servebench import SCHEMA_VERSION
from servebench.errors import first_line
from servebench.records import COUNTS, NS, RequestRecord, token_arrays

_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("index", pa.int64()),
    ("warmup", pa.bool_()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("scheduled_ns", pa.int64()),
    ("slot_ns", pa.int64()),
    ("connect_ns", pa.int64()),
    ("sent_ns", pa.int64()),
    ("first_byte_ns", pa.int64()),
    ("end_ns", pa.int64()),
    ("status", pa.int32()),
    ("error", pa.string()),
    ("token_ns", pa.list_(pa.int64())),
    ("token_counts", pa.list_(pa.int32())),
    ("server_input_tokens", pa.int64()),
    ("server_output_tokens", pa.int64()),
    ("finish_reason", pa.string()),
]
# later columns: a run dir written before them reads back with None in their place
_OPTIONAL: list[tuple[str, pa.DataType]] = [
    ("session", pa.int64()),
    ("turn", pa.int64()),
    ("prompt_text", pa.string()),
    ("reply_text", pa.string()),
]


class Summary(BaseModel):
    """summary.json: the fields every reader may rely on; metrics add more (extra=allow)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    status: str  # complete | interrupted | failed
    # None only in an imported run (store/importers): what its source did not measure
    completed: int | None
    failed: int | None
    duration_s: float | None
    request_throughput: float | None
    output_token_throughput: float | None
    total_token_throughput: float | None
    ttft_ms: dict
    tpot_ms: dict
    itl_ms: dict
    e2e_ms: dict
    ms_per_token: dict
    input_tokens: dict
    output_tokens: dict


def new_run_dir(results_dir: Path, name: str | None, backend: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name or backend).strip("-") or "run"
    path = Path(results_dir) / f"{stamp}-{base}"
    n = 1
    while path.exists():
        n += 1
        path = Path(results_dir) / f"{stamp}-{base}-{n}"
    path.mkdir(parents=True)
    return path


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        tmp.replace(path)  # a reader never sees half a file, even after Ctrl-C
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)  # a full disk leaves no empty .tmp behind
        except OSError:  # a read-only dir refuses this too: the first error is the one to tell
            pass
        raise


class DamagedFile(ValueError):
    """A result file that exists but cannot be read as what it should be; the message names it."""


def read_json(path: Path) -> dict:
    """A JSON object from `path`; DamagedFile (naming the file) when it is not one."""
    try:
        data = json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as e:
        raise DamagedFile(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise DamagedFile(f"{path}: not valid JSON (not UTF-8 text)") from None
    except IsADirectoryError:
        raise DamagedFile(f"{path}: a directory, not a file") from None
    if not isinstance(data, dict):
        raise DamagedFile(f"{path}: expected a JSON object, found {type(data).__name__}") from None
    return data


# converted to Arrow a slice at a time: the whole run's per-token lists as one table cost ~60
# bytes a token at the end of a long run, and Arrow's pool kept it after (issue 20)
_SLICE_TOKENS = 1 << 18


def _slices(records: list[RequestRecord]) -> list[list[RequestRecord]]:
    out: list[list[RequestRecord]] = [[]]
    n = 0
    for r in records:
        if n >= _SLICE_TOKENS:
            out.append([])
            n = 0
        out[-1].append(r)
        n += (r.tok.events if r.tok is not None else len(r.token_ns)) + 1
    return out


# the per-token columns: the records hold them as typed arrays (records.py), which go to Arrow
# as one flat buffer and offsets, never as a Python int per token
_PER_TOKEN = {"token_ns": (NS, np.int64), "token_counts": (COUNTS, np.intc)}


def _token_columns(part: list[RequestRecord], types: dict[str, pa.DataType]) -> dict[str, pa.Array]:
    """token_ns and token_counts of a slice, each record's arrays read once (from disk when they
    were spilled after decoding: store/tokens.py)."""
    flat = {name: array(code) for name, (code, _) in _PER_TOKEN.items()}
    offsets = {name: np.zeros(len(part) + 1, dtype=np.int32) for name in _PER_TOKEN}
    for i, r in enumerate(part):
        for name, values in zip(_PER_TOKEN, token_arrays(r)):
            flat[name].extend(values)  # a list too (a record made by hand): same values
            offsets[name][i + 1] = len(flat[name])
    out = {}
    for name, (_, dtype) in _PER_TOKEN.items():
        t, v = types[name], flat[name]
        values = pa.array(np.frombuffer(v, dtype=dtype) if v else np.zeros(0, dtype), type=t.value_type)
        out[name] = pa.ListArray.from_arrays(pa.array(offsets[name]), values, type=t)
    return out


def _columns(part: list[RequestRecord], every: list[tuple[str, pa.DataType]]) -> list[pa.Array]:
    tokens = _token_columns(part, dict(every))
    return [tokens[name] if name in tokens else pa.array([getattr(r, name) for r in part], type=t)
            for name, t in every]


def write_records(path: Path, records: list[RequestRecord]) -> None:
    every = _COLUMNS + _OPTIONAL
    sch = pa.schema([pa.field(name, t) for name, t in every])
    tmp = path.with_suffix(".parquet.tmp")
    try:
        with pq.ParquetWriter(tmp, sch) as out:
            for part in _slices(records):  # one, empty, for no records: the file still has the schema
                out.write_table(pa.Table.from_arrays(_columns(part, every), schema=sch))
                # each row group's encoders take ~35-45 MB the pool keeps; kept across slices it
                # grew with the run (+60 MB at 0.57 M tokens, +110 MB at 3.4 M, issue 20)
                pa.default_memory_pool().release_unused()
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        pa.default_memory_pool().release_unused()  # else the pool keeps the peak for the rest of the run


def load_records(path: Path) -> list[RequestRecord]:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as e:  # truncated or not parquet at all
        raise DamagedFile(f"{path}: unreadable ({first_line(e)})") from None
    missing = [name for name, _ in _COLUMNS if name not in table.column_names]
    if missing:
        raise DamagedFile(f"{path}: missing columns {', '.join(missing)}")
    names = [name for name, _ in _COLUMNS] + [name for name, _ in _OPTIONAL if name in table.column_names]
    rows = table.select([n for n in names if n not in _PER_TOKEN]).to_pylist()
    per_token = {name: _arrays(table.column(name), *_PER_TOKEN[name]) for name in _PER_TOKEN}
    return [RequestRecord(**row, token_ns=ns, token_counts=counts)
            for row, ns, counts in zip(rows, per_token["token_ns"], per_token["token_counts"])]


def _arrays(col: pa.ChunkedArray, code: str, dtype: type) -> list[array]:
    """A list column as one typed array per row (a null row: empty), read from Arrow's buffers."""
    out: list[array] = []
    for chunk in col.chunks:
        offsets = chunk.offsets.to_numpy()  # into chunk.values, which ignores a slice's offset
        values = chunk.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        rows = [array(code, values[offsets[i]:offsets[i + 1]].tobytes()) for i in range(len(chunk))]
        if chunk.null_count:  # a null's offsets may span values (Arrow allows it): it read as no tokens
            rows = [a if ok else array(code) for a, ok in zip(rows, chunk.is_valid().to_pylist())]
        out.extend(rows)
    return out


def check_records(path: Path) -> int:
    """Rows in a requests.parquet, reading its footer and every column chunk (a truncated or
    bit-flipped file fails here); DamagedFile when it cannot be read."""
    try:
        return pq.read_table(path, columns=["index", "sent_ns", "end_ns"]).num_rows
    except (OSError, pa.ArrowException) as e:
        raise DamagedFile(f"{path}: unreadable ({first_line(e)})") from None


def write_summary(run_dir: Path, summary: dict) -> dict:
    checked = Summary(**summary).model_dump(mode="json")
    write_json(run_dir / "summary.json", checked)
    return checked


def load_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"no summary.json in {run_dir}")
    data = read_json(path)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise DamagedFile(f"{path}: schema_version {data.get('schema_version')} (this servebench reads {SCHEMA_VERSION})")
    try:
        return Summary(**data).model_dump(mode="json")
    except ValidationError as e:
        missing = [str(err["loc"][0]) for err in e.errors() if err["type"] == "missing"]
        wrong = [f"{'.'.join(map(str, err['loc']))} ({err['msg']})" for err in e.errors() if err["type"] != "missing"]
        parts = ([f"missing fields: {', '.join(missing)}"] if missing else []) + ([f"bad fields: {'; '.join(wrong)}"] if wrong else [])
        raise DamagedFile(f"{path}: {'; '.join(parts)}") from None
