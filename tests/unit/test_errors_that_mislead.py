"""Bad input gets an error that names the real problem (each of these used to name another)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from servebench import signals
from servebench.engines.presets import resolve_model
from servebench.analysis.verdict import failure
from servebench.load.prompts import WorkloadError, from_jsonl, load_tokenizer


def sb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def one_error(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(resolve_model("tiny"))


@pytest.mark.parametrize("value,shown", [('"abc"', "'abc'"), ("0", "0"), ("-5", "-5"), ("2.5", "2.5"), ("true", "True")])
def test_prompts_file_output_tokens_must_be_a_positive_integer(tmp_path, tok, value, shown):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "fine"}\n{"prompt": "hello there", "output_tokens": %s}\n' % value)
    with pytest.raises(WorkloadError) as e:
        from_jsonl(f, tok, 8)
    msg = str(e.value)
    assert msg == f"{f}:2: 'output_tokens' must be a positive integer, got {shown}"
    assert "prompt'" not in msg  # it was never the prompt


def test_prompts_file_bad_output_tokens_stops_the_cli_before_any_request(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "hi", "output_tokens": 0}) + "\n")
    p = sb("run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--prompts-file", str(f), "--requests", "2",
           "--results-dir", str(tmp_path / "r"))
    assert p.returncode == 2
    assert "'output_tokens' must be a positive integer, got 0" in one_error(p)
    assert not (tmp_path / "r").exists()  # nothing was started, nothing written


@pytest.mark.parametrize("args,needle", [
    (["--rate", "inf"], "invalid option load.rate: Input should be a finite number"),
    (["--rate", "nan"], "invalid option load.rate: Input should be a finite number"),
    (["--endpoint", "http://127.0.0.1:99999"], "invalid option endpoint: port '99999' in http://127.0.0.1:99999 is not a TCP port"),
    (["--tokenizer", "/missing/tokenizer"], "tokenizer path not found: /missing/tokenizer"),
])
def test_options_that_used_to_mislead(tmp_path, args, needle):
    base = ["--endpoint", "http://127.0.0.1:9"] if "--endpoint" not in args else []
    p = sb("run", "--model", "tiny", "--requests", "2", "--results-dir", str(tmp_path), *base, *args)
    assert p.returncode == 2
    err = one_error(p)
    assert needle in err, err
    assert "Connection refused" not in err and "repo id" not in err.lower() and "convert float" not in err


def test_sigterm_is_named_and_has_its_own_exit_code():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signals.interruptible()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        assert signals.interrupt_cause() == ("SIGTERM", 143)
        signals._received.clear()
        assert signals.interrupt_cause() == ("Ctrl-C", 130)
    finally:
        signals._received.clear()
        for s, h in before.items():
            signal.signal(s, h)


def s(completed: int, failed: int, errors: dict | None = None) -> dict:
    return {"completed": completed, "failed": failed, "errors": errors or {}}


def test_verdict_counts_every_request_that_was_due():
    assert failure(s(10, 0), 0.0) is None
    assert failure(s(0, 0), 0.5) == "no request was measured"
    assert failure(s(2, 18, {"cannot connect to h:1: Connection refused": 16}), 0.5) == (
        "18 of 20 requests failed (most common: cannot connect to h:1: Connection refused)")
    assert failure(s(6, 4), 0.5) is None  # within --max-error-rate
    assert failure(s(2, 18), 0.5, "was killed by signal 9").startswith("the server was killed by signal 9 during the load; 18 of 20")
    assert failure(s(10, 0), 0.0, "exited with code 1") == "the server exited with code 1 during the load"
