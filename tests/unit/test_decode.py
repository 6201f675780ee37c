"""decode_record over byte-exact engine streams replayed read by read with chosen timestamps.

Read i of a fixture arrives at T(i) = 1000 * (i + 1) ns, so an event's expected timestamp is
T of the read holding its closing blank line (see the read layout in make_fixtures.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servebench.adapters import ADAPTERS
from servebench.analysis.decode import body_error, decode_record, decode_records
from servebench.records import RequestRecord

STREAMS = Path(__file__).parent.parent / "fixtures" / "streams"
ALL = sorted(p.stem for p in STREAMS.glob("*.json"))


def T(i: int) -> int:
    return 1000 * (i + 1)


def load(name: str) -> tuple[dict, bytes]:
    return json.loads((STREAMS / f"{name}.json").read_text()), (STREAMS / f"{name}.sse").read_bytes()


def replay(name: str, cuts: list[int] | None = None, stamps=None) -> RequestRecord:
    meta, body = load(name)
    edges = [0, *(meta["splits"] if cuts is None else cuts), len(body)]
    reads = [body[a:b] for a, b in zip(edges, edges[1:])]
    stamps = stamps or [T(i) for i in range(len(reads))]
    rec = RequestRecord(index=0, status=meta["status"], end_ns=stamps[-1] + 1, chunks=list(zip(stamps, reads)))
    decode_record(ADAPTERS[meta["adapter"]], rec)
    return rec


def summary(rec: RequestRecord) -> tuple:
    return (list(rec.token_ns), list(rec.token_counts), rec.server_input_tokens, rec.server_output_tokens,
            rec.finish_reason, rec.error)


def test_vllm_completions():
    # reads: [e1] [e2, head e3 (cut inside "é")] [e3, e4, head e5 (cut inside "世")]
    #        [e5, e6 without its blank line] [blank line, usage] [[DONE]]
    # e2 has empty text (held-back UTF-8 byte) and is still a token
    rec = replay("vllm_completions")
    assert summary(rec) == ([T(0), T(1), T(2), T(2), T(3), T(4)], [1] * 6, 5, 6, "length", None)
    assert rec.ok is True


def test_vllm_chat_role_chunk_is_not_a_token():
    # reads: [role, "Hello"] [" there", "." + finish, usage] [[DONE]]
    rec = replay("vllm_chat")
    assert summary(rec) == ([T(0), T(1), T(1)], [1, 1, 1], 12, 3, "length", None)


def test_tgi_keep_alive_details_and_special_eos_token():
    # reads: [e1] [":" keep-alive] [e2, head e3] [e3, head e4 (cut inside "ü")] [e4 final]
    rec = replay("tgi")
    assert summary(rec) == ([T(0), T(2), T(3), T(4)], [1, 1, 1, 1], 7, 4, "eos_token", None)


def test_lightllm_cumulative_count_and_finished():
    # reads: [e1, head e2 (cut inside "中")] [e2, "dat"] [e3, head e4] [e4 finished]
    rec = replay("lightllm")
    assert summary(rec) == ([T(0), T(1), T(2), T(3)], [1, 1, 1, 1], 4, 4, "length", None)


def test_sglang_cumulative_counts_give_multi_token_event():
    # reads: [e1] [e2, head e3] [e3 (+2 tokens), e4 final] [[DONE]]
    rec = replay("sglang")
    assert summary(rec) == ([T(0), T(1), T(2), T(2)], [1, 1, 2, 1], 9, 5, "length", None)


def test_truncated_stream_keeps_tokens_and_flags_error():
    rec = replay("vllm_truncated")
    assert list(rec.token_ns) == [T(0), T(0), T(1)]
    assert rec.error == "truncated: stream ended inside event 4"
    assert rec.ok is False


def test_stream_cut_between_events_before_the_finish_chunk_is_truncated():
    meta, body = load("vllm_completions")
    cut = body.index(b'"finish_reason":"length"')
    cut = body.rindex(b"data: ", 0, cut)  # the body ends cleanly just before the finish chunk
    rec = RequestRecord(index=0, status=200, end_ns=9, chunks=[(5, body[:cut])])
    decode_record(ADAPTERS["openai-completions"], rec)
    assert rec.error == "truncated: stream ended after 5 events without the final one"
    assert list(rec.token_counts) == [1] * 5 and rec.server_output_tokens is None and rec.finish_reason is None


@pytest.mark.parametrize("marker, usage", [(b"data: [DONE]", 6), (b'data: {"id":"cmpl-8f2c","object":"text_completion","created":1767225600,"model":"tiny","choices":[]', None)])
def test_body_ending_cleanly_after_the_finish_chunk_is_complete(marker, usage):
    # no [DONE] (transformers serve never sends it), with or without the usage chunk before it
    meta, body = load("vllm_completions")
    rec = RequestRecord(index=0, status=200, end_ns=9, chunks=[(5, body[: body.index(marker)])])
    decode_record(ADAPTERS["openai-completions"], rec)
    assert rec.error is None and rec.ok
    assert list(rec.token_counts) == [1] * 6 and rec.server_output_tokens == usage and rec.finish_reason == "length"


def test_event_left_open_after_the_finish_chunk_is_still_truncated():
    meta, body = load("vllm_completions")
    cut = body.index(b"data: [DONE]") - 30  # inside the usage chunk
    rec = RequestRecord(index=0, status=200, end_ns=9, chunks=[(5, body[:cut])])
    decode_record(ADAPTERS["openai-completions"], rec)
    assert rec.error == "truncated: stream ended inside event 7"


def test_vllm_error_event_mid_stream():
    rec = replay("vllm_error")
    assert list(rec.token_ns) == [T(0), T(1)]
    assert rec.error == "error event in stream: The engine died unexpectedly (EngineDeadError)"


def test_tgi_error_event_mid_stream():
    rec = replay("tgi_error")
    assert list(rec.token_ns) == [T(0)]
    assert rec.error == ("error event in stream: Request failed during generation: Server error: "
                         "CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("name, error", [
    ("tgi_422", "HTTP 422: Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048. "
                "Given: 2000 `inputs` tokens and 100 `max_new_tokens`"),
    ("vllm_400", "HTTP 400: This model's maximum context length is 1024 tokens. However, you requested "
                 "1100 tokens (1000 in the messages, 100 in the completion). Please reduce the length."),
    ("fastapi_422", "HTTP 422: body.inputs: Field required"),
])
def test_non_2xx_uses_json_error_message(name, error):
    rec = replay(name)
    assert rec.error == error
    assert list(rec.token_ns) == [] and rec.server_output_tokens is None


def test_non_json_error_body_becomes_one_line():
    rec = replay("proxy_502")
    assert rec.error.startswith("HTTP 502: <html> <head><title>502 Bad Gateway</title>")
    assert "\n" not in rec.error and "\r" not in rec.error


def test_long_error_is_cut_to_one_short_line():
    msg = "x" * 1000
    rec = RequestRecord(index=0, status=500, chunks=[(1, json.dumps({"detail": msg}).encode())])
    decode_record(ADAPTERS["tgi"], rec)
    assert len(rec.error) == 200 and rec.error.endswith("…")


def test_old_vllm_flat_error_body_and_openai_nested():
    assert body_error(b'{"object":"error","message":"bad","type":"x","code":400}') == "bad"
    assert body_error(b'{"error":{"message":"nope"}}') == "nope"
    assert body_error(b'{"message":"Error"}') == "Error"
    assert body_error(b"") == "(empty body)"


def test_transport_error_is_kept_but_tokens_are_decoded():
    meta, body = load("vllm_truncated")
    rec = RequestRecord(index=0, status=200, error="read timeout after 600 s", chunks=[(7, body)])
    decode_record(ADAPTERS["openai-completions"], rec)
    assert rec.error == "read timeout after 600 s"
    assert list(rec.token_ns) == [7, 7, 7]


def test_no_response_at_all():
    rec = RequestRecord(index=0, status=0, sent_ns=5, end_ns=9)
    decode_record(ADAPTERS["openai-chat"], rec)
    assert rec.error == "no HTTP response"


def test_a_request_never_released_is_not_failed_by_decoding():
    # --duration ended (or Ctrl-C) before its turn: nothing was sent, so no response is missing
    rec = RequestRecord(index=0)
    decode_record(ADAPTERS["openai-chat"], rec)
    assert rec.error is None and rec.decoded and list(rec.token_ns) == []


def test_deeply_nested_event_fails_its_own_request_only():
    deep = b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n"
    ok = b'data: {"choices":[{"text":"a","finish_reason":null}]}\n\n'
    end = b'data: {"choices":[{"text":"b","finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
    bad = RequestRecord(index=0, status=200, sent_ns=1, end_ns=9, chunks=[(2, ok), (3, deep), (4, end)])
    good = RequestRecord(index=1, status=200, sent_ns=1, end_ns=9, chunks=[(2, ok), (4, end)])
    decode_records(ADAPTERS["openai-completions"], [bad, good])  # never raises
    assert bad.error.startswith("malformed event") and list(bad.token_ns) == [2]
    assert good.error is None and list(good.token_ns) == [2, 4]


def test_empty_and_non_sse_bodies():
    rec = RequestRecord(index=0, status=200, chunks=[])
    decode_record(ADAPTERS["tgi"], rec)
    assert rec.error == "empty response body"
    rec = RequestRecord(index=0, status=200, chunks=[(1, b'{"generated_text":"hi"}')])
    decode_record(ADAPTERS["tgi"], rec)
    assert rec.error == 'no SSE events in the response body: {"generated_text":"hi"}'


def test_malformed_event_stops_decoding():
    chunks = [(1, b"data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":null}]}\n\n"),
              (2, b"data: {not json\n\n"),
              (3, b"data: {\"choices\":[{\"text\":\"b\",\"finish_reason\":null}]}\n\n")]
    rec = RequestRecord(index=0, status=200, chunks=chunks)
    decode_record(ADAPTERS["openai-completions"], rec)
    assert list(rec.token_ns) == [1]
    assert rec.error.startswith("malformed event (")
    assert "{not json" in rec.error


def test_wrong_shape_is_malformed_not_a_crash():
    rec = RequestRecord(index=0, status=200, chunks=[(1, b'data: {"meta_info": []}\n\n')])
    decode_record(ADAPTERS["sglang"], rec)
    assert rec.error.startswith("malformed event (unexpected sglang event shape (TypeError")


def test_sse_error_event_type():
    rec = RequestRecord(index=0, status=200, chunks=[(1, b'event: error\ndata: {"message":"overloaded"}\n\n')])
    decode_record(ADAPTERS["openai-chat"], rec)
    assert rec.error == "error event in stream: overloaded"


def test_events_after_the_final_one_are_ignored():
    meta, body = load("tgi")
    rec = RequestRecord(index=0, status=200, chunks=[(1, body), (2, body)])
    decode_record(ADAPTERS["tgi"], rec)
    assert list(rec.token_ns) == [1, 1, 1, 1] and rec.error is None


def test_decoding_twice_gives_the_same_record():
    rec = replay("sglang")
    first = summary(rec)
    decode_record(ADAPTERS["sglang"], rec)
    assert summary(rec) == first


def test_decode_records_does_each():
    recs = [RequestRecord(index=i, status=200, chunks=[(i, load("vllm_chat")[1])]) for i in range(3)]
    decode_records(ADAPTERS["openai-chat"], recs)
    assert [list(r.token_ns) for r in recs] == [[0] * 3, [1] * 3, [2] * 3]


def event_ends(name: str) -> RequestRecord:
    """Decode with one read per byte stamped with its end offset: token_ns become the offsets
    where each token event is complete."""
    _, body = load(name)
    return replay(name, cuts=list(range(1, len(body))), stamps=list(range(1, len(body) + 1)))


@settings(max_examples=120, deadline=None)
@given(name=st.sampled_from(ALL), data=st.data())
def test_any_resplit_stamps_each_event_with_the_read_that_completed_it(name, data):
    _, body = load(name)
    reference = event_ends(name)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=30))))
    cuts = [c for c in cuts if 0 < c < len(body)]
    ends = [*cuts, len(body)]
    rec = replay(name, cuts=cuts, stamps=ends)  # each read stamped with its end offset
    expected_ns = [min(e for e in ends if e >= done_at) for done_at in reference.token_ns]
    assert list(rec.token_ns) == expected_ns
    assert summary(rec)[1:] == summary(replay(name))[1:]


# ---- recorded from real engines here (scripts/record_stream.py; read splits as received)

def test_transformers_serve_completions_without_done_is_complete():
    # transformers serve: token chunks, then one chunk with finish_reason "length" + usage, then
    # the body ends (no [DONE]); every chunk but the last has text and no finish_reason field
    rec = replay("transformers_completions")
    assert rec.error is None and rec.ok
    assert list(rec.token_counts) == [1] * 6
    assert (rec.server_input_tokens, rec.server_output_tokens, rec.finish_reason) == (11, 6, "length")


def test_transformers_serve_chat_role_chunk_and_usage_in_finish_chunk():
    rec = replay("transformers_chat")
    assert rec.error is None
    assert list(rec.token_counts) == [1] * 4 and rec.server_output_tokens == 4 and rec.finish_reason == "length"


def test_transformers_serve_rejects_ignore_eos_with_422():
    rec = replay("transformers_422")
    assert rec.error == "HTTP 422: Unexpected fields in the request: {'ignore_eos'}"


def test_llamacpp_completions_has_no_usage_so_tokens_are_client_counted():
    # llama-cpp-python: one chunk per token (finish_reason null), an empty finish chunk, [DONE];
    # no usage chunk at all (it has no stream_options)
    rec = replay("llamacpp_completions")
    assert rec.error is None and list(rec.token_counts) == [1] * 6 and rec.finish_reason == "length"
    assert rec.server_output_tokens is None and rec.server_input_tokens is None


def test_llamacpp_chat_role_chunk_and_empty_finish_delta():
    rec = replay("llamacpp_chat")
    assert rec.error is None and list(rec.token_counts) == [1] * 4 and rec.finish_reason == "length"


def test_gguf_conversion_generates_what_transformers_generates():
    # same prompt, greedy: llama.cpp on the q8_0 GGUF of `tiny` and transformers on its
    # safetensors produced the same six tokens (a wrong q/k permutation or vocab would not)
    def text(name):
        _, body = load(name)
        return "".join(json.loads(p[6:])["choices"][0]["text"] for p in body.split(b"\n\n")
                       if p.startswith(b"data: {"))
    assert text("llamacpp_completions") == text("transformers_completions") == "zat plend maidar laimvou preast zet"
