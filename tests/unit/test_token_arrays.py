"""Decoded records keep their per-token stamps and counts as typed arrays (8 + 4 bytes a token)
instead of Python int lists (~40-50 bytes): every record stays decoded in memory after the load,
so that was the post-load peak's growth with run length (issue 20). The type changes, nothing
written does: summary.json and requests.parquet are the same bytes as from lists."""

from __future__ import annotations

import copy
import json
import pickle
from array import array
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servebench.adapters import ADAPTERS
from servebench.analysis.decode import decode_record, decode_records
from servebench.analysis.metrics import summarize
from servebench.emulator.handle import start_emulator
from servebench.load.ray_workers import shift_records
from servebench.records import RequestRecord
from servebench.store import runfiles, spool
from tests.unit.test_faults_cli import COMMON, only_run_dir, sb
from tests.unit.test_spool import reference_records

STREAMS = ["vllm_completions", "vllm_chat", "tgi", "lightllm", "sglang", "vllm_truncated", "vllm_400"]


def typed(r: RequestRecord) -> bool:
    return (type(r.token_ns) is array and r.token_ns.typecode == "q"
            and type(r.token_counts) is array and r.token_counts.typecode == "i")


def as_lists(records: list[RequestRecord]) -> list[RequestRecord]:
    """The same records with the per-token fields as the lists they were before."""
    out = copy.deepcopy(records)
    for r in out:
        r.token_ns, r.token_counts = list(r.token_ns), list(r.token_counts)
    return out


def old_write_records(path: Path, records: list[RequestRecord]) -> None:
    """requests.parquet as written when the fields were lists (every column via pa.array of
    Python values, the same slices): the reference for the file's bytes."""
    every = runfiles._COLUMNS + runfiles._OPTIONAL
    sch = pa.schema([pa.field(name, t) for name, t in every])
    with pq.ParquetWriter(path, sch) as out:
        for part in runfiles._slices(records):
            out.write_table(pa.Table.from_arrays(
                [pa.array([getattr(r, name) for r in part], type=t) for name, t in every], schema=sch))


def decoded(name: str, n: int = 40) -> list[RequestRecord]:
    key, records = reference_records(name, n)
    decode_records(ADAPTERS[key], records)
    return records


@pytest.mark.parametrize("name", STREAMS)
def test_decoded_records_hold_typed_arrays_wherever_they_come_from(tmp_path, name):
    records = decoded(name)
    assert all(typed(r) for r in records)
    assert all(typed(r) for r in pickle.loads(pickle.dumps(records)))  # load workers and Ray actors send them so
    shifted = copy.deepcopy(records)
    shift_records(shifted, 1_000)  # a Ray actor's records onto the driver's clock
    assert all(typed(r) for r in shifted)
    assert [list(r.token_ns) for r in shifted] == [[t + 1_000 for t in r.token_ns] for r in records]
    runfiles.write_records(tmp_path / "requests.parquet", records)
    back = runfiles.load_records(tmp_path / "requests.parquet")  # report, recommend, compare read these
    assert all(typed(r) for r in back)
    assert [(list(r.token_ns), list(r.token_counts)) for r in back] == [
        (list(r.token_ns), list(r.token_counts)) for r in records]


def test_salvaged_records_are_decoded_into_typed_arrays(tmp_path):
    key, records = reference_records("vllm_chat", 12)
    sp = spool.Spool(tmp_path / spool.NAME, key, interval_s=0.01)
    for r in records:
        sp.add(r)
    sp.close()
    adapter, rows = spool.records(sp.path)
    salvaged = list(rows)
    decode_records(ADAPTERS[adapter], salvaged)
    assert len(salvaged) == 12 and all(typed(r) and len(r.token_ns) > 0 for r in salvaged)


@pytest.mark.parametrize("name", STREAMS)
def test_summary_and_requests_parquet_are_the_bytes_lists_gave(tmp_path, name, monkeypatch):
    monkeypatch.setattr(runfiles, "_SLICE_TOKENS", 50)  # several row groups, as in a long run
    records = decoded(name)
    lists = as_lists(records)
    assert json.dumps(summarize(records, steady_state=True)) == json.dumps(summarize(lists, steady_state=True))
    runfiles.write_records(tmp_path / "new.parquet", records)
    old_write_records(tmp_path / "old.parquet", lists)
    assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()
    runfiles.write_records(tmp_path / "mixed.parquet", lists)  # records made by hand with lists write the same
    assert (tmp_path / "mixed.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()


def test_an_empty_run_and_null_lists_read_back(tmp_path):
    runfiles.write_records(tmp_path / "a.parquet", [])
    old_write_records(tmp_path / "b.parquet", [])
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert runfiles.load_records(tmp_path / "a.parquet") == []
    # a file another tool wrote may hold a null list: no tokens, not None in the record
    row = {name: [0] for name, _ in runfiles._COLUMNS}
    row.update(error=[None], finish_reason=[None], warmup=[False], token_ns=[None], token_counts=[None])
    sch = pa.schema([pa.field(name, t) for name, t in runfiles._COLUMNS])
    pq.write_table(pa.Table.from_pydict(row, schema=sch), tmp_path / "c.parquet")
    (rec,) = runfiles.load_records(tmp_path / "c.parquet")
    assert typed(rec) and len(rec.token_ns) == 0 and len(rec.token_counts) == 0


def test_a_count_no_requests_parquet_could_hold_fails_its_own_request(tmp_path):
    """An event carrying 2**31 tokens or more (a server's running count jumping) would have
    stopped requests.parquet's int32 column from being written; it fails its own request."""
    ev = b'data: {"text":"a","meta_info":{"prompt_tokens":9,"completion_tokens":%d,"finish_reason":null}}\n\n'
    body = ev % 1 + ev % (2**31 + 1) + b"data: [DONE]\n\n"
    rec = RequestRecord(index=0, sent_ns=1, end_ns=9, status=200, chunks=[(5, body)])
    decode_record(ADAPTERS["sglang"], rec)
    assert rec.error is not None and rec.error.startswith("malformed event (carries 2147483648 tokens")
    assert "\n" not in rec.error and typed(rec) and list(rec.token_counts) == [1]  # the tokens before it kept
    runfiles.write_records(tmp_path / "requests.parquet", [rec])


def test_an_emulator_runs_summary_is_what_lists_give(tmp_path):
    """A real run (emulator, 127.0.0.1): its summary.json's metrics recomputed from its
    requests.parquet are the same with the per-token fields as arrays or as lists."""
    with start_emulator("openai", ttft_ms=5, itl_ms=2) as emu:
        p = sb("run", "--endpoint", emu.url, *COMMON, "--requests", "30", "--concurrency", "4", "--output-tokens",
               "12", "--results-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    run_dir = only_run_dir(tmp_path)
    stored = json.loads((run_dir / "summary.json").read_text())
    records = runfiles.load_records(run_dir / "requests.parquet")
    assert all(typed(r) for r in records) and sum(len(r.token_ns) for r in records) == 30 * 12
    run = json.loads((run_dir / "run.json").read_text())
    conc = run["config"]["load"]["concurrency"]
    now, before = summarize(records, target_concurrency=conc), summarize(as_lists(records), target_concurrency=conc)
    assert json.dumps(now) == json.dumps(before)
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "ms_per_token", "output_tokens", "intervals"):
        assert json.loads(json.dumps(now[key])) == stored[key], key
