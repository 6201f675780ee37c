"""Multi-turn sessions against real vLLM CPU (`tiny`) through the chat endpoint: turn k's
request carries the text the server returned for turn k-1 (checked from the records), and
each turn's context is counted by the server under its chat template (usage.prompt_tokens),
the same as the tokenizer's own template counts the messages sent."""

from __future__ import annotations

import json

import pytest

from servebench.store.runfiles import load_records
from tests.integration._cli import load_run, servebench

pytestmark = pytest.mark.integration


def test_two_sessions_three_turns_send_back_the_returned_text(vllm_server, tmp_path):
    res = servebench("run", "--backend", "vllm", "--model", "tiny", "--endpoint", vllm_server.base_url,
                     "--sessions", "synthetic", "--session-count", "2", "--turns", "3", "--concurrency", "2",
                     "--think-time", "0.1", "--input-tokens", "24", "--output-tokens", "8", "--warmup", "1",
                     "--results-dir", str(tmp_path), "--name", "sessions", cwd=tmp_path)
    run_dir = res.expect_ok()
    run, summary, _ = load_run(run_dir)
    recs = [r for r in load_records(run_dir / "requests.parquet") if not r.warmup]
    assert len(recs) == 6 and all(r.ok for r in recs)
    assert run["config"]["api"] == "openai-chat"
    by: dict[int, list] = {}
    for r in sorted(recs, key=lambda r: (r.session, r.turn)):
        by.setdefault(r.session, []).append(r)
    assert sorted(by) == [0, 1]
    for rs in by.values():
        assert [r.turn for r in rs] == [1, 2, 3]
        for k, r in enumerate(rs):
            msgs = json.loads(r.prompt_text)
            assert [m["role"] for m in msgs] == ["user", "assistant"] * k + ["user"]
            assert r.reply_text and r.server_output_tokens == 8
            if k:
                prev = rs[k - 1]
                # what the server returned for turn k-1 is in turn k's request, as the assistant's turn
                assert msgs[-2] == {"role": "assistant", "content": prev.reply_text}
                assert prev.reply_text in r.prompt_text
                assert r.sent_ns - prev.end_ns >= 100_000_000  # the think time passed first
                assert r.server_input_tokens > prev.server_input_tokens + 8
            # the server's count under its template == the tokenizer's template over the same messages
            assert r.server_input_tokens == r.input_tokens, (r.turn, r.server_input_tokens, r.input_tokens)
    ss = summary["sessions"]
    assert ss["sessions_completed"] == 2 and ss["context_counted_by"] == "server" and ss["template_mismatches"] == 0
    ctx = [t["context_tokens"]["mean"] for t in ss["by_turn"]]
    assert ctx[0] < ctx[1] < ctx[2]
    assert all(t["ttft_ms"]["p50"] > 0 for t in ss["by_turn"])
    print(json.dumps({"by_turn": ss["by_turn"]}))
