"""The stream parsers of every adapter, fuzzed: arbitrary splits, bytes, event shapes and event
orders never crash decoding and never invent a token.

"Never invent" is checked two ways: a token event needs a payload of its own (never more token
events than payloads in the body), and reordering or dropping the events of a genuine stream
of N tokens never yields more than N tokens (SGLang / LightLLM cumulative counts included).
Genuine streams come from the emulator's byte-exact renderings of each engine's format.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servebench.adapters import ADAPTERS
from servebench.adapters.sse import iter_payloads
from servebench.analysis.decode import decode_record
from servebench.emulator.formats import FORMATS, Gen
from servebench.records import RequestRecord

ROUTES = {  # adapter -> (emulator format, path)
    "openai-completions": ("openai", "/v1/completions"),
    "openai-chat": ("openai", "/v1/chat/completions"),
    "tgi": ("tgi", "/generate_stream"),
    "lightllm": ("lightllm", "/generate_stream"),
    "sglang": ("sglang", "/generate"),
}
N = 6  # tokens in a genuine stream
# SERVEBENCH_FUZZ_EXAMPLES=5000 for a long hunt; the default keeps the unit suite quick
FUZZ = settings(max_examples=int(os.environ.get("SERVEBENCH_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def test_every_adapter_is_fuzzed():
    assert set(ROUTES) == set(ADAPTERS)


def genuine_events(adapter: str, n: int = N) -> list[bytes]:
    fmt_name, path = ROUTES[adapter]
    fmt = FORMATS[fmt_name]
    g = Gen(rid="7", path=path, prompt_tokens=5, prompt_chars=20, max_tokens=n, stream=True,
            include_usage=True, details=True, created=1)
    fmt.prepare(g)
    body = b"".join(fmt.token(g, i) for i in range(n)) + fmt.tail(g)
    return [e + b"\n\n" for e in body.split(b"\n\n") if e]


def decode(adapter: str, body: bytes, cuts: list[int], status: int = 200) -> RequestRecord:
    edges = [0, *sorted({c for c in cuts if 0 < c < len(body)}), len(body)]
    reads = [body[a:b] for a, b in zip(edges, edges[1:]) if b > a]
    rec = RequestRecord(index=0, status=status, sent_ns=1, end_ns=10_000,
                        chunks=[(100 + i, r) for i, r in enumerate(reads)])
    decode_record(ADAPTERS[adapter], rec)  # must never raise
    assert len(rec.token_ns) == len(rec.token_counts)
    assert all(type(c) is int and c >= 1 for c in rec.token_counts)
    assert list(rec.token_ns) == sorted(rec.token_ns)
    assert rec.error is None or (isinstance(rec.error, str) and "\n" not in rec.error)
    return rec


cuts_st = st.lists(st.integers(0, 4000), max_size=40)


@pytest.mark.parametrize("adapter", sorted(ROUTES))
def test_genuine_stream_decodes_to_exactly_its_tokens(adapter):
    body = b"".join(genuine_events(adapter))
    rec = decode(adapter, body, [])
    assert rec.error is None and sum(rec.token_counts) == N and rec.server_output_tokens == N


@FUZZ
@given(adapter=st.sampled_from(sorted(ROUTES)), data=st.data(), cuts=cuts_st)
def test_reordered_or_dropped_events_never_add_tokens(adapter, data, cuts):
    events = genuine_events(adapter)
    order = data.draw(st.lists(st.sampled_from(range(len(events))), unique=True, max_size=len(events)))
    rec = decode(adapter, b"".join(events[i] for i in order), cuts)
    assert sum(rec.token_counts) <= N
    if order == list(range(len(events))):
        assert rec.error is None and sum(rec.token_counts) == N


@FUZZ
@given(adapter=st.sampled_from(sorted(ROUTES)), junk=st.lists(st.tuples(st.integers(0, 4000), st.binary(max_size=40)), max_size=5),
       cuts=cuts_st)
def test_bytes_injected_into_a_genuine_stream_never_crash_or_add_token_events(adapter, junk, cuts):
    body = b"".join(genuine_events(adapter))
    for pos, blob in junk:
        pos = min(pos, len(body))
        body = body[:pos] + blob + body[pos:]
    rec = decode(adapter, body, cuts)
    assert len(rec.token_ns) <= len(iter_payloads([body]))


@FUZZ
@given(adapter=st.sampled_from(sorted(ROUTES)), body=st.binary(max_size=600), cuts=cuts_st,
       status=st.sampled_from([200, 200, 400, 500, 503]))
def test_arbitrary_bytes_never_crash(adapter, body, cuts, status):
    rec = decode(adapter, body, cuts, status)
    assert len(rec.token_ns) <= len(iter_payloads([body]))
    if status != 200:
        assert list(rec.token_ns) == [] and rec.error.startswith(f"HTTP {status}")


# JSON of the right vocabulary but any shape: where parsers index, iterate and compare
KEYS = ["choices", "text", "delta", "content", "role", "reasoning_content", "tool_calls", "finish_reason", "usage",
        "prompt_tokens", "completion_tokens", "token_ids", "token", "id", "special", "generated_text", "details",
        "generated_tokens", "input_length", "meta_info", "finished", "count_output_tokens", "error", "message",
        "object", "type", "index"]
scalars = st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=True) | st.text(max_size=5) | st.sampled_from(["error", "length", "abort"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
                      max_leaves=12)
events_st = st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=5) | values, max_size=8)


@FUZZ
@given(adapter=st.sampled_from(sorted(ROUTES)), events=events_st, done=st.booleans(), cuts=cuts_st,
       space=st.booleans())
def test_any_json_shape_is_flagged_not_crashed(adapter, events, done, cuts, space):
    sep = b"data: " if space else b"data:"
    payloads = [json.dumps(e, allow_nan=True).encode() for e in events]
    body = b"".join(sep + p + b"\n\n" for p in payloads) + (b"data: [DONE]\n\n" if done else b"")
    rec = decode(adapter, body, cuts)
    assert len(rec.token_ns) <= len(payloads)


@FUZZ
@given(adapter=st.sampled_from(["openai-completions", "openai-chat"]), ids=values, cuts=cuts_st)
def test_openai_token_ids_count_only_as_a_list(adapter, ids, cuts):
    """One chunk is one token unless it lists its token ids; a string or an object there
    must not become len() tokens."""
    choice = {"index": 0, "text": "x", "delta": {"content": "x"}, "finish_reason": None, "token_ids": ids}
    body = b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\ndata: [DONE]\n\n"
    rec = decode(adapter, body, cuts)
    if isinstance(ids, list):
        assert list(rec.token_counts) == ([len(ids)] if ids else []) and rec.error is None
    elif ids is None:
        assert list(rec.token_counts) == [1]
    else:
        assert list(rec.token_counts) == [] and "token_ids is not a list" in rec.error
