"""`servebench report` on run dirs that are damaged or incomplete: one named `error:` line and
a non-zero exit, never a traceback; and every derived file rebuilt from requests.parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from servebench import SCHEMA_VERSION

from servebench.store import runfiles as store
from servebench.cli import main
from servebench.analysis.metrics import summarize
from servebench.records import RequestRecord
from servebench.outputs.console import render


def make_run(tmp_path: Path, n: int = 8, prompts_file: str | None = None) -> Path:
    """A stored run as `servebench run` leaves it: records, summary, run.json."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recs = []
    for i in range(n):
        t = 1_000_000_000 + i * 50_000_000
        recs.append(RequestRecord(index=i, input_tokens=16, output_tokens=4, scheduled_ns=t, slot_ns=t, sent_ns=t,
                                  first_byte_ns=t + 1_000_000, end_ns=t + 40_000_000, status=200,
                                  token_ns=[t + 10_000_000 * k for k in (1, 2, 3, 4)], token_counts=[1] * 4,
                                  server_output_tokens=4, server_input_tokens=16, finish_reason="length",
                                  decoded=True))
    recs[-1].status, recs[-1].error, recs[-1].token_ns, recs[-1].token_counts = 500, "HTTP 500: boom", [], []
    store.write_records(run_dir / "requests.parquet", recs)
    s = summarize(recs, target_concurrency=2)
    s.update(status="complete", error=None, warnings=[], loop_lag_ms={"p99": 0.5}, read_lag_ms={"p99": 0.25})
    store.write_summary(run_dir, s)
    wl = {"input_tokens": 512, "output_tokens": 128, "prompts_file": prompts_file}
    store.write_json(run_dir / "run.json", {"status": "complete", "error": None, "engine": {"name": "vllm"},
                                            "config": {"load": {"concurrency": 2, "rate": None}, "workload": wl}})
    return run_dir


def report(*args: str):
    return CliRunner().invoke(main, ["report", *args])


def one_error(res) -> str:
    assert res.exit_code != 0 and res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def test_intact_run_reports_cleanly(tmp_path):
    res = report(str(make_run(tmp_path)))
    assert res.exit_code == 0, res.output
    assert "TTFT" in res.stdout and "1 request(s) failed" in res.stdout


def test_truncated_parquet_is_an_error_after_the_report(tmp_path):
    run_dir = make_run(tmp_path)
    p = run_dir / "requests.parquet"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    res = report(str(run_dir))
    assert res.exit_code == 1
    err = one_error(res)
    assert "requests.parquet" in err and "unreadable" in err and "raw records are lost" in err
    assert "TTFT" in res.stdout  # the summary still reads, so the numbers are shown


@pytest.mark.parametrize("content,needle", [
    ("[]", "expected a JSON object, found list"),
    ('{"status": "complete", "completed": ', "not valid JSON (Expecting value at line 1 column"),
    ("\xff\xfe", "not valid JSON"),
])
def test_damaged_summary_names_the_file(tmp_path, content, needle):
    run_dir = make_run(tmp_path)
    (run_dir / "summary.json").write_bytes(content.encode("latin-1"))
    err = one_error(report(str(run_dir)))
    assert str(run_dir / "summary.json") in err and needle in err
    assert "report --rebuild" in err  # the records are intact: say how to get it back


def test_partial_summary_names_the_missing_fields(tmp_path):
    run_dir = make_run(tmp_path)
    s = json.loads((run_dir / "summary.json").read_text())
    for k in ("ttft_ms", "e2e_ms", "duration_s"):
        del s[k]
    (run_dir / "summary.json").write_text(json.dumps(s))
    err = one_error(report(str(run_dir)))
    assert "missing fields: duration_s, ttft_ms, e2e_ms" in err


def test_missing_summary_is_rebuilt_from_the_records(tmp_path):
    run_dir = make_run(tmp_path)
    before = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").unlink()
    res = report(str(run_dir))
    assert res.exit_code == 0, res.output
    assert "summary.json was missing: rebuilt summary.json, timeline.png, timeline.html" in res.stderr
    after = json.loads((run_dir / "summary.json").read_text())
    for key in ("completed", "failed", "errors", "duration_s", "ttft_ms", "itl_ms", "e2e_ms", "concurrency"):
        assert after[key] == before[key], key
    assert after["status"] == "complete" and after["rebuilt_from"] == "requests.parquet"
    assert after["schema_version"] == SCHEMA_VERSION
    assert (run_dir / "timeline.png").stat().st_size > 0


def test_rebuild_overwrites_a_damaged_summary_and_keeps_what_records_cannot_hold(tmp_path):
    run_dir = make_run(tmp_path)
    s = json.loads((run_dir / "summary.json").read_text())
    s["completed"] = 999  # wrong, but the file still reads: --rebuild recomputes it
    (run_dir / "summary.json").write_text(json.dumps(s))
    res = report("--rebuild", str(run_dir))
    assert res.exit_code == 0, res.output
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["completed"] == 7 and after["loop_lag_ms"] == {"p99": 0.5}
    assert after["read_lag_ms"] == {"p99": 0.25}  # from the spool, gone once the records were written


def test_rebuild_without_records_is_one_line(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "requests.parquet").write_bytes(b"PAR1 not really")
    err = one_error(report("--rebuild", str(run_dir)))
    assert "requests.parquet: unreadable" in err


def test_report_header_shows_prompt_file_lengths_not_the_defaults(tmp_path):
    run_dir = make_run(tmp_path, prompts_file="/data/chat.jsonl")
    con = Console(record=True, width=200)
    render(run_dir, con)
    head = con.export_text().splitlines()[0]
    assert "prompts chat.jsonl (mean 16.0→4.0 tokens)" in head and "512" not in head


def test_a_summary_that_is_a_directory_is_named_not_a_traceback(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "summary.json").unlink()
    (run_dir / "summary.json").mkdir()
    res = report(str(run_dir))
    assert res.exit_code != 0 and "summary.json: a directory, not a file" in res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_rebuild_and_plot_on_a_read_only_run_dir_are_one_line(tmp_path):
    import subprocess
    import sys

    run_dir = make_run(tmp_path)
    py = f"{sys.executable} -m servebench.cli"
    # a read-only bind mount in a private mount namespace (root writes through chmod)
    sh = (f"mount --bind {run_dir} {run_dir} && mount -o remount,ro,bind {run_dir} && "
          f"{py} report --rebuild {run_dir}; echo rc=$?; {py} plot {run_dir}; echo rc=$?")
    p = subprocess.run(["unshare", "-rm", "sh", "-c", sh], capture_output=True, text=True, timeout=180)
    assert "Traceback" not in p.stderr, p.stderr
    assert f"error: cannot write in {run_dir}: Read-only file system" in p.stderr and "rc=2" in p.stdout
    assert f"cannot write the plots in {run_dir}: Read-only file system" in p.stderr and "rc=1" in p.stdout
