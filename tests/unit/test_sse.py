"""SSE framing: line ends, comments, fields, events across reads, and re-splitting invariance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servebench.adapters.sse import ErrorPayload, SSEDecoder, iter_payloads

STREAMS = Path(__file__).parent.parent / "fixtures" / "streams"
FIXTURES = sorted(p.stem for p in STREAMS.glob("*.json") if json.loads(p.read_text())["status"] == 200)


def body_of(name: str) -> bytes:
    return (STREAMS / f"{name}.sse").read_bytes()


def split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(body)]
    return [body[a:b] for a, b in zip(edges, edges[1:])]


def test_basic_events_and_space_after_colon_optional():
    assert iter_payloads([b"data: a\n\ndata:b\n\ndata:  c\n\n"]) == [b"a", b"b", b" c"]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_end(eol):
    raw = b"data: one" + eol + eol + b": keep-alive" + eol + b"data: two" + eol + eol
    assert iter_payloads([raw]) == [b"one", b"two"]


def test_crlf_split_between_cr_and_lf_is_one_line_end():
    # "\r" ends one read, "\n" opens the next: one line end, not an extra blank line
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\ndata: b\r\n\r\n") == [b"a\nb"]


def test_lone_cr_at_end_of_read_then_blank_line():
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\r") == [b"a"]


def test_comments_and_other_fields_are_ignored():
    raw = b":\n\n: ping\nid: 7\nretry: 3000\nfoo: bar\ndata: x\n\n"
    assert iter_payloads([raw]) == [b"x"]


def test_comment_only_block_dispatches_nothing():
    assert iter_payloads([b":\n\n:\n\n"]) == []


def test_multi_line_data_joined_with_newline():
    assert iter_payloads([b"data: {\"a\":\ndata: 1}\n\n"]) == [b'{"a":\n1}']


def test_field_without_colon_and_empty_data():
    # "data" alone is a data line with an empty value; "data:" too
    assert iter_payloads([b"data\n\ndata:\n\n"]) == [b"", b""]


def test_event_error_is_surfaced_as_error_payload():
    out = iter_payloads([b"event: error\ndata: {\"error\":\"x\"}\n\ndata: y\n\n"])
    assert out == [b'{"error":"x"}', b"y"]
    assert type(out[0]) is ErrorPayload and type(out[1]) is bytes


def test_other_event_types_are_plain_payloads():
    out = iter_payloads([b"event: message\ndata: y\n\n"])
    assert out == [b"y"] and type(out[0]) is bytes


def test_event_split_over_many_reads_returns_when_complete():
    dec = SSEDecoder()
    raw = b"data: hello world\n\n"
    got = [dec.feed(bytes([c])) for c in raw]
    assert got[:-1] == [[]] * (len(raw) - 1)
    assert got[-1] == [b"hello world"]


def test_several_events_in_one_read():
    dec = SSEDecoder()
    assert dec.feed(b"data: 1\n\ndata: 2\n\ndata: 3") == [b"1", b"2"]
    assert dec.feed(b"\n\n") == [b"3"]


def test_multibyte_character_split_across_reads_stays_bytes():
    raw = "data: 世界\n\n".encode()
    cut = raw.index("世".encode()) + 1
    dec = SSEDecoder()
    assert dec.feed(raw[:cut]) == []
    (payload,) = dec.feed(raw[cut:])
    assert payload.decode() == "世界"


def test_close_returns_final_event_without_blank_line():
    dec = SSEDecoder()
    assert dec.feed(b"data: 1\n\ndata: last") == [b"1"]
    assert dec.close() == [b"last"]
    assert dec.close() == []


def test_close_with_terminated_line_but_no_blank_line():
    dec = SSEDecoder()
    assert dec.feed(b"data: last\n") == []
    assert dec.close() == [b"last"]


def test_empty_reads_change_nothing():
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"") == []
    assert dec.feed(b"\n\n") == [b"a"]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_reads_match_whole_body(name):
    body = body_of(name)
    meta = json.loads((STREAMS / f"{name}.json").read_text())
    assert iter_payloads(split_at(body, meta["splits"])) == iter_payloads([body])


def test_fixture_payload_counts():
    # guards the fixtures themselves: a changed generator must be noticed
    counts = {name: len(iter_payloads([body_of(name)])) for name in FIXTURES}
    assert counts == {
        "lightllm": 4, "sglang": 5, "tgi": 4, "tgi_error": 2, "vllm_chat": 6,
        "vllm_completions": 8, "vllm_error": 4, "vllm_truncated": 4,
        # recorded from real servers here (scripts/record_stream.py)
        "transformers_chat": 6, "transformers_completions": 7, "llamacpp_chat": 7, "llamacpp_completions": 8,
    }


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(FIXTURES), data=st.data(), eol=st.sampled_from(["\n", "\r\n", "\r"]))
def test_any_resplit_and_line_end_gives_same_payloads(name, data, eol):
    body = body_of(name)
    expected = iter_payloads([body])
    if eol != "\n":  # JSON payloads hold no raw newlines, so every "\n" is framing
        body = body.replace(b"\n", eol.encode())
    cuts = data.draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=40))
    reads = split_at(body, [c for c in cuts if 0 < c < len(body)])
    assert b"".join(reads) == body
    assert iter_payloads(reads) == expected
