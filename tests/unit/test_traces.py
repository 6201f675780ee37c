"""Trace parsing: every format, detection, column mappings, slicing, and every bad input as one
line naming the file, the line and the field (servebench.load.traces, docs/workloads.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from servebench.config import RunConfig
from servebench.load import traces
from servebench.load.schedule import release_offsets_ns, trace_offsets_ns
from servebench.load.traces import TraceError, load_trace


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n" \
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.2224670,879,55\n"
MOONCAKE = "".join(json.dumps(o) + "\n" for o in [
    {"timestamp": 0, "input_length": 1000, "output_length": 10, "hash_ids": [0, 1]},
    {"timestamp": 0, "input_length": 700, "output_length": 3, "hash_ids": [0, 2]},
    {"timestamp": 2500, "input_length": 512, "output_length": 7, "hash_ids": [3]}])


def test_azure_csv_detected_and_datetimes_to_seconds(tmp_path):
    tr = load_trace(str(write(tmp_path, "a.csv", AZURE)))
    assert tr.format == "azure" and tr.block_tokens is None
    assert [r.input_tokens for r in tr.requests] == [374, 396, 879]
    assert [r.output_tokens for r in tr.requests] == [44, 109, 55]
    t = [r.t_s - tr.requests[0].t_s for r in tr.requests]
    assert t == pytest.approx([0, 4.314579, 4.541877], abs=1e-6)
    assert [r.line for r in tr.requests] == [2, 3, 4]


def test_mooncake_detected_ms_and_blocks(tmp_path):
    tr = load_trace(str(write(tmp_path, "m.jsonl", MOONCAKE)))
    assert tr.format == "mooncake" and tr.block_tokens == 512
    assert [r.t_s for r in tr.requests] == [0, 0, 2.5]
    assert tr.requests[1].blocks == (0, 2)


def test_own_format_with_block_size_and_prompt(tmp_path):
    lines = [{"time_s": 0.5, "input_tokens": 100, "output_tokens": 4, "prefix_blocks": [7], "block_tokens": 64},
             {"time_s": 1.0, "prompt": "hello there", "output_tokens": 5}]
    tr = load_trace(str(write(tmp_path, "own.jsonl", "".join(json.dumps(x) + "\n" for x in lines))))
    assert tr.format == "servebench" and tr.block_tokens == 64
    assert tr.requests[1].prompt == "hello there" and tr.requests[1].input_tokens == 0


@pytest.mark.parametrize("unit,values,expect", [
    ("ms", ["0", "1500"], [0, 1.5]), ("s", ["2", "3.25"], [2, 3.25]),
    ("datetime", ["2024-01-01T00:00:00", "2024-01-01T00:00:01.5"], None)])
def test_mapped_csv_with_time_units(tmp_path, unit, values, expect):
    text = "when,prompt_len,gen_len\n" + "".join(f"{v},10,2\n" for v in values)
    tr = load_trace(str(write(tmp_path, "x.csv", text)), columns=f"time=when:{unit},input=prompt_len,output=gen_len")
    t = [r.t_s for r in tr.requests]
    assert tr.format == "csv"
    if expect is None:
        assert t[1] - t[0] == pytest.approx(1.5)
    else:
        assert t == expect


def test_mapped_jsonl_and_default_time_unit(tmp_path):
    text = '{"t": "2024-01-01 00:00:00", "i": 5, "o": 1}\n{"t": "2024-01-01 00:00:02", "i": 6, "o": 2}\n'
    tr = load_trace(str(write(tmp_path, "x.jsonl", text)), columns="time=t,input=i,output=o")
    assert tr.format == "jsonl" and tr.requests[1].t_s - tr.requests[0].t_s == 2


def test_shipped_traces_by_name():
    az = load_trace("azure-conv-2023")
    mc = load_trace("mooncake-conversation")
    assert az.format == "azure" and len(az.requests) == 4424
    assert az.requests[-1].t_s - az.requests[0].t_s < 900
    assert mc.format == "mooncake" and len(mc.requests) == 918 and mc.block_tokens == 512
    assert mc.requests[-1].t_s < 300


@pytest.mark.parametrize("name,text,columns,fmt,pattern", [
    ("a.csv", AZURE.replace("374", "-3"), None, None, r"a\.csv:2: ContextTokens: -3 tokens"),
    ("a.csv", AZURE.replace("109", "many"), None, None, r"a\.csv:3: GeneratedTokens: 'many' is not a number"),
    ("a.csv", AZURE.replace("2023-11-16 18:15:51.2224670", "yesterday"), None, None,
     r"a\.csv:4: TIMESTAMP: 'yesterday' is not a date and time"),
    ("a.csv", AZURE.replace("18:15:51.2224670", "18:15:40.0"), None, None,
     r"a\.csv:4: TIMESTAMP: time goes backwards"),
    ("a.csv", "when,a,b\n1,2,3\n", None, None,
     r"a\.csv: cannot tell the trace format \(columns found: when, a, b\)"),
    ("a.csv", AZURE, "time=TIMESTAMP,input=Nope,output=GeneratedTokens", None,
     r"a\.csv: missing column\(s\) Nope for the csv format"),
    ("a.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", None, "azure",
     r"missing column\(s\) GeneratedTokens"),
    ("m.jsonl", MOONCAKE.replace('"hash_ids": [0, 1]', '"hash_ids": [0, 1, 9]'), None, None,
     r"m\.jsonl:1: hash_ids: 3 blocks of 512 tokens are longer than the prompt \(1000 tokens\)"),
    ("m.jsonl", MOONCAKE.replace('"hash_ids": [3]', '"hash_ids": [1]'), None, None,
     r"m\.jsonl:3: hash_ids: block 1 at position 0, but at 1 on line 1"),
    ("m.jsonl", MOONCAKE.replace('"timestamp": 2500', '"timestamp": "soon"'), None, None,
     r"m\.jsonl:3: timestamp: 'soon' is not a time"),
    ("m.jsonl", MOONCAKE.replace('"output_length": 3', '"output_length": 0'), None, None,
     r"m\.jsonl:2: output_length: 0 tokens"),
    ("m.jsonl", MOONCAKE + "{not json\n", None, None, r"m\.jsonl:4: not a JSON object"),
    ("m.jsonl", MOONCAKE, None, "azure", r"m\.jsonl:1: not a azure trace"),
    ("e.csv", "", None, None, r"e\.csv: the trace is empty"),
])
def test_bad_traces_are_one_line_naming_file_line_field(tmp_path, name, text, columns, fmt, pattern):
    with pytest.raises(TraceError, match=pattern) as e:
        load_trace(str(write(tmp_path, name, text)), fmt=fmt, columns=columns)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("columns,pattern", [
    ("time=a,input=b", "missing output=COL"), ("time=a:hours,input=b,output=c", "time unit 'hours'"),
    ("when=a,input=b,output=c", "expected time=COL")])
def test_bad_column_mappings(columns, pattern):
    with pytest.raises(TraceError, match=pattern):
        traces.parse_columns(columns)


def test_unknown_source_and_format(tmp_path):
    with pytest.raises(TraceError, match="no such file, and not a shipped trace"):
        load_trace("no-such-trace")
    with pytest.raises(TraceError, match=r"a\.csv: unknown trace format .parquet."):
        load_trace(str(write(tmp_path, "a.csv", AZURE)), fmt="parquet")


def test_schedule_from_trace_times_and_speed():
    assert trace_offsets_ns([0, 0, 2.5, 10], 1) == [0, 0, 2_500_000_000, 10_000_000_000]
    assert trace_offsets_ns([0, 0, 2.5, 10], 4) == [0, 0, 625_000_000, 2_500_000_000]

    class W:
        offsets_ns = [0, 5, 9]

    load = RunConfig().load
    assert release_offsets_ns(load, 2, W()) == [0, 5]  # the trace's times, not a burst
    assert release_offsets_ns(load, 2) == [0, 0]


def _cli_error(tmp_path, *args) -> str:
    # an endpoint nothing listens on: the error must be the workload's, raised before the probe
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "run", "--endpoint", "http://127.0.0.1:9", "--model",
                        "tiny", "--results-dir", str(tmp_path / "r"), *args], capture_output=True, text=True, timeout=120)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode == 2, p.stderr
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()  # nothing half-run: no run directory
    return errors[0]


def test_bad_trace_exits_2_before_any_server(tmp_path):
    bad = write(tmp_path, "bad.csv", AZURE.replace("396", "x"))
    assert _cli_error(tmp_path, "--trace", str(bad)) == f"error: {bad}:3: ContextTokens: 'x' is not a number of tokens"


@pytest.mark.parametrize("args,pattern", [
    (["--trace", "azure-conv-2023", "--trace-format", "parquet"], r"azure_conv_2023\.csv: unknown trace format 'parquet'"),
    (["--trace-speed", "2"], "need --trace"),
    (["--trace", "azure-conv-2023", "--rate", "5"], "--rate does not apply"),
    (["--trace", "azure-conv-2023", "--trace-window", "50:10"], "expected START:END"),
    (["--trace", "azure-conv-2023", "--trace-window", "5000:"], "no requests in the window 5000: s"),
    (["--input-tokens", "zipf:2"], "expected a number of tokens or a distribution"),
])
def test_bad_trace_options_exit_2(tmp_path, args, pattern):
    import re

    assert re.search(pattern, _cli_error(tmp_path, *args))


def test_busiest_stretch_sizes_connections():
    from servebench.load.schedule import most_released_within

    offs = [0, 0, 0, 10, 500, 510, 520, 530, 2000]
    assert most_released_within(offs, 5) == 3 and most_released_within(offs, 20) == 4
    assert most_released_within(offs, 10_000) == 9 and most_released_within([], 5) == 0
