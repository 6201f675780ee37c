"""Multi-turn sessions (`servebench run --sessions`) against the built-in emulator, whose chat
answers start with a word derived from the conversation (emulator.formats.chat_reply): turn
k's request carries turn k-1's answer as the server returned it, after the think time; a bad
session file is one line naming the file, the line and the field, before any server starts."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servebench.analysis.turns import per_turn
from servebench.emulator.formats import chat_reply
from servebench.emulator.handle import start_emulator
from servebench.load.prompts import WorkloadError
from servebench.load.sessions import parse_think, read_file
from servebench.records import RequestRecord
from servebench.store.runfiles import _COLUMNS, load_records


def sb(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "servebench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _run(tmp_path, url, *args):
    p = sb("run", "--backend", "vllm", "--endpoint", url, "--model", "tiny", "--warmup", "1",
           "--results-dir", str(tmp_path), "--no-telemetry", "--no-plots", *args)
    return p, (tmp_path / p.stdout.strip().splitlines()[-1].split("/")[-1] if p.stdout.strip() else None)


def _turns(run_dir):
    recs = [r for r in load_records(run_dir / "requests.parquet") if not r.warmup]
    by: dict[int, list[RequestRecord]] = {}
    for r in recs:
        by.setdefault(r.session, []).append(r)
    return {s: sorted(rs, key=lambda r: r.turn) for s, rs in by.items()}


def test_each_turn_sends_back_the_answer_the_server_returned(tmp_path):
    with start_emulator("openai-chat", ttft_ms=5, itl_ms=2) as emu:
        p, run_dir = _run(tmp_path, emu.url, "--sessions", "synthetic", "--turns", "3", "--session-count", "2",
                          "--concurrency", "2", "--think-time", "0.2", "--input-tokens", "12", "--output-tokens", "3")
        emu.stop()
        log = {r["id"]: r for r in emu.records()}
    assert p.returncode == 0, p.stderr
    sessions = _turns(run_dir)
    assert sorted(sessions) == [0, 1] and all([r.turn for r in rs] == [1, 2, 3] for rs in sessions.values())
    replies = set()
    for rs in sessions.values():
        for k, r in enumerate(rs):
            msgs = json.loads(r.prompt_text)
            assert [m["role"] for m in msgs] == ["user", "assistant"] * k + ["user"]
            text = " ".join(m["content"] for m in msgs)
            assert r.reply_text == chat_reply(text) + " the the"  # what this emulator answers to these messages
            replies.add(r.reply_text)
            if k:
                prev = rs[k - 1]
                assert msgs[-2]["content"] == prev.reply_text and prev.reply_text in r.prompt_text
                assert json.loads(prev.prompt_text) == msgs[:-2]  # the history is the previous request, verbatim
                assert r.scheduled_ns == prev.end_ns + 200_000_000 and r.sent_ns >= r.scheduled_ns
            # the emulator got exactly these messages (its prompt_chars: the contents joined by spaces)
            assert log[str(r.index)]["prompt_chars"] == len(text)
            assert r.server_input_tokens == log[str(r.index)]["prompt_tokens"]
    assert len(replies) == 6  # every answer distinct: a stale or missing one would be caught above
    s = json.loads((run_dir / "summary.json").read_text())
    ss = s["sessions"]
    assert ss["sessions"] == ss["sessions_completed"] == 2 and ss["turns_sent"] == 6
    assert [t["turn"] for t in ss["by_turn"]] == [1, 2, 3] and all(t["completed"] == 2 for t in ss["by_turn"])
    ctx = [t["context_tokens"]["mean"] for t in ss["by_turn"]]
    assert ctx[0] < ctx[1] < ctx[2] and ss["context_counted_by"] == "server"
    assert all(t["ttft_ms"]["p50"] >= 5 for t in ss["by_turn"])
    assert s["completed"] == 6 and s["workload"]["sessions"]["source"] == "synthetic"
    assert s["workload"]["sessions"]["think_time_s"] == {"spec": "0.2", "kind": "fixed", "value": 0.2}
    rep = sb("report", str(run_dir))
    assert rep.returncode == 0 and "sessions: 2 of 2 ran every turn" in rep.stdout.replace("\n", " ")


def test_session_file_at_a_rate_and_a_failed_turn_ends_its_session(tmp_path):
    f = tmp_path / "s.jsonl"
    lines = [{"id": "a", "turns": ["hello there", {"user": "and then?", "output_tokens": 2}, "bye"]},
             {"turns": [{"user": "one", "output_tokens": 5}, "two"]},
             {"turns": ["x y z", "w", "v", "u"]}]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with start_emulator("openai-chat", ttft_ms=2, itl_ms=1, faults=["status=503:0.3"], seed=3) as emu:
        p, run_dir = _run(tmp_path, emu.url, "--sessions", str(f), "--turns", "3", "--rate", "5",
                          "--arrival", "constant", "--output-tokens", "4", "--warmup", "0")
    assert p.returncode in (0, 1), p.stderr  # failed turns fail the run at --max-error-rate 0
    all_recs = load_records(run_dir / "requests.parquet")
    sessions = _turns(run_dir)
    assert [r.output_tokens for r in sessions[0]][:2] == [4, 2][: len(sessions[0])]
    firsts = sorted(rs[0].scheduled_ns for rs in sessions.values())
    assert [round((t - firsts[0]) / 1e6) for t in firsts] == [0, 200, 400]  # sessions start at 5/s
    s = json.loads((run_dir / "summary.json").read_text())
    ss = s["sessions"]
    assert ss["turns_planned"] == 3 + 2 + 3  # --turns 3 cut the last session's fourth turn
    broken, cut = 0, 0
    planned = {0: 3, 1: 2, 2: 3}
    for sid, rs in sessions.items():  # requests.parquet holds the turns sent: a failed one is its session's last
        bad = [k for k, r in enumerate(rs) if not r.ok]
        if bad:
            broken += 1
            assert bad == [len(rs) - 1], [(r.turn, r.status) for r in rs]
            cut += planned[sid] - len(rs)
        else:
            assert len(rs) == planned[sid]
    assert broken >= 1 and ss["sessions_completed"] == 3 - broken  # seed 3: some 503s
    assert cut >= 1 and s["not_released"] == cut == ss["turns_planned"] - ss["turns_sent"]
    assert len(all_recs) == ss["turns_sent"]


BAD = [
    ('{"turns": ["hi", ""]}\n', r"s.jsonl:1: turns\[1\].user: empty turn"),
    ('{"turns": ["hi"]}\nnot json\n', r"s.jsonl:2: not a JSON object"),
    ('{"turns": []}\n', r"s.jsonl:1: turns: expected a non-empty list"),
    ('{"id": 3}\n', r"s.jsonl:1: turns: expected a non-empty list"),
    ('{"turns": [{"user": "a", "output_tokens": 0}]}\n', r"s.jsonl:1: turns\[0\].output_tokens: 0 is not"),
    ('{"turns": [{"text": "a"}]}\n', r"s.jsonl:1: turns\[0\].user: expected a string"),
    ('{"turns": ["a", 5]}\n', r"s.jsonl:1: turns\[1\]: expected a string or an object"),
    ('\n\n', r"s.jsonl: no sessions in the file"),
]


@pytest.mark.parametrize("content,where", BAD)
def test_bad_session_file_names_file_line_and_field(tmp_path, content, where):
    f = tmp_path / "s.jsonl"
    f.write_text(content)
    with pytest.raises(WorkloadError, match=where) as e:
        read_file(f, None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content,where", BAD[:2])  # the whole CLI path: two cases are enough
def test_bad_session_file_is_one_line_before_any_server(tmp_path, content, where):
    import re

    f = tmp_path / "s.jsonl"
    f.write_text(content)
    # nothing listens on port 9: reaching the endpoint check would fail differently
    p = sb("run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--sessions", str(f),
           "--results-dir", str(tmp_path / "r"))
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    assert re.search(where, errors[0]) and str(f) in errors[0], errors[0]
    assert "checking endpoint" not in p.stderr and not (tmp_path / "r").exists()


def test_session_options_need_sessions_and_the_chat_api(tmp_path):
    p = sb("run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--turns", "3")
    assert p.returncode == 2 and "error: --turns, --think-time and --session-count need --sessions" in p.stderr
    p = sb("run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--sessions", "synthetic",
           "--api", "openai-completions")
    assert p.returncode == 2 and "chat endpoint" in p.stderr
    p = sb("run", "--endpoint", "http://127.0.0.1:9", "--model", "tiny", "--sessions", "synthetic",
           "--think-time", "gamma:2")
    assert p.returncode == 2 and "error: --think-time 'gamma:2'" in p.stderr


def test_think_time_specs():
    assert parse_think("1.5")[1](3, random.Random(0)) == [1.5, 1.5, 1.5]
    info, draw = parse_think("uniform:0.5-2")
    xs = draw(2000, random.Random(1))
    assert info["kind"] == "uniform" and min(xs) >= 0.5 and max(xs) <= 2
    info, draw = parse_think("lognormal:mean=2,sd=1")
    xs = draw(20000, random.Random(2))
    assert abs(sum(xs) / len(xs) - 2) < 0.05
    xs = parse_think("normal:mean=0.1,sd=1")[1](1000, random.Random(3))
    assert min(xs) == 0.0  # a negative draw is no wait, never a send before the answer ended
    assert parse_think("exponential:mean=3")[1](1, random.Random(4)) == parse_think("exponential:mean=3")[1](1, random.Random(4))
    for bad in ("-1", "uniform:3-1", "exponential:mean=0", "lognormal:mean=2", "weibull:1"):
        with pytest.raises(WorkloadError, match="--think-time"):
            parse_think(bad)


def test_read_file_takes_at_most_turns(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text('{"turns": ["a", "b", "c"]}\n\n{"id": 7, "turns": [{"user": "d", "output_tokens": 9}]}\n')
    assert read_file(f, 2) == [(1, None, [("a", None), ("b", None)]), (3, "7", [("d", 9)])]


def test_old_run_dirs_without_session_columns_still_read(tmp_path):
    path = tmp_path / "requests.parquet"
    rows = {name: [RequestRecord(index=0, status=200).__getattribute__(name)] for name, _ in _COLUMNS}
    pq.write_table(pa.table({name: pa.array(rows[name], type=t) for name, t in _COLUMNS}), path)
    (rec,) = load_records(path)
    assert rec.status == 200 and rec.session is None and rec.turn is None and rec.prompt_text is None


def test_per_turn_counts_sessions_that_ran_every_turn():
    def rec(i, s, k, ok=True, sent=True):
        return RequestRecord(index=i, session=s, turn=k, input_tokens=10 * k, server_input_tokens=10 * k + (s == 1),
                             sent_ns=100 if sent else 0, end_ns=200 if sent else 0, status=200 if ok else 503,
                             token_ns=[150] if ok else [], token_counts=[1] if ok else [])
    out = per_turn([rec(0, 0, 1), rec(1, 0, 2), rec(2, 1, 1), rec(3, 1, 2, ok=False), rec(4, 2, 1, ok=False),
                    rec(5, 2, 2, sent=False)])
    assert out["sessions"] == 3 and out["sessions_completed"] == 1 and out["turns_sent"] == 5
    assert out["template_mismatches"] == 1  # session 1's server count differs from the client's template
    t1, t2 = out["by_turn"]
    assert (t1["completed"], t1["failed"], t2["completed"], t2["failed"], t2["sent"]) == (2, 1, 1, 1, 2)
    assert t1["ttft_ms"]["p50"] == 50 / 1e6 and t2["context_tokens"]["mean"] == 20
    assert per_turn([RequestRecord(index=0)]) is None
