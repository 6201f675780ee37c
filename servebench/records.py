"""What the hot loop writes: raw timestamps and raw bytes, nothing derived.

Everything here is `time.perf_counter_ns()` (CLOCK_MONOTONIC on Linux, so comparable across
processes on one host). Parsing the stream and every metric happen after the run, from these
records, so the loop does as little as possible per token and every number can be traced back.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

# Per-token fields are typed arrays, not lists: a list holds a pointer and an int object per
# token (~40-50 B with the counts), and every record stays decoded in memory after the load
# (exact percentiles need every stamp), so that peak grew with the run (issue 20). Stamps are
# int64 ('q', 8 B). Counts are C int ('i', 4 B on every platform CPython supports): the
# requests.parquet column is int32 already, so a count past it could never be stored; decode
# fails that stream's request instead of the file write failing later. 'H' would not be safe:
# one event may carry a server's jump in its running count (SGLang, LightLLM), unbounded.
NS = "q"
COUNTS = "i"


def ns_array(values=()) -> array:
    return array(NS, values)


def counts_array(values=()) -> array:
    return array(COUNTS, values)


@dataclass(slots=True)
class TokenStats:
    """What the analysis reads of one record's per-token arrays, kept once the arrays went to
    disk (a spooled run's records after decoding: otherwise the post-load peak grew ~24 B a
    token, issue 20). `src.read(self)` gives the arrays back, for requests.parquet and ITL."""

    events: int  # len(token_ns)
    first_ns: int  # token_ns[0] (0 when no event)
    streamed: int  # sum(token_counts)
    gaps: int  # ITL gaps (an event of k > 1 tokens gives k)
    gap_sum_ns: float  # sum(per_request.itl_gaps_ns(r)), summed as it sums
    src: Any = None  # store/tokens.TokenFile
    at: int = 0  # the first event's position in src


# the token fields of a record whose arrays are on disk: empty and immutable, one for all
SPILLED = ()


def token_arrays(r: "RequestRecord") -> tuple[array, array]:
    """(token_ns, token_counts) of a record, read back from disk when they were spilled."""
    if r.tok is not None and r.tok.src is not None:
        return r.tok.src.read(r.tok)
    return r.token_ns, r.token_counts


@dataclass(slots=True)
class RequestRecord:
    index: int
    warmup: bool = False
    input_tokens: int = 0  # requested prompt length (tokens under the served tokenizer)
    output_tokens: int = 0  # requested output length
    # -- set by the schedule / runner
    scheduled_ns: int = 0  # when the schedule wanted it released (burst: t0 for all)
    slot_ns: int = 0  # when it held a concurrency slot; slot_ns - scheduled_ns is slot wait
    # -- set by the transport
    connect_ns: int = 0  # connection set-up time if the request had to open one (0: reused)
    sent_ns: int = 0  # taken immediately before the request bytes are written
    first_byte_ns: int = 0  # first byte of the response (status line), not the first token
    end_ns: int = 0  # response complete (or failed)
    status: int = 0  # HTTP status; 0 when no response arrived
    error: str | None = None
    chunks: list[tuple[int, bytes]] = field(default_factory=list)  # (recv_ns, body bytes)
    # -- set by decode (after the run), from chunks
    token_ns: array = field(default_factory=ns_array)  # arrival of each token-bearing event
    token_counts: array = field(default_factory=counts_array)  # tokens in that event (usually 1)
    server_input_tokens: int | None = None
    server_output_tokens: int | None = None
    finish_reason: str | None = None
    decoded: bool = False  # token fields filled; raw chunks may since have been dropped (workers)
    # -- multi-turn sessions only (load/sessions.py); None for single requests
    session: int | None = None  # the session's number in the run
    turn: int | None = None  # 1 for a session's first turn
    prompt_text: str | None = None  # the chat messages sent, as JSON
    reply_text: str | None = None  # the assistant text the server returned (sent on in the next turn)
    # set when the token arrays went to disk after decoding (token_ns, token_counts: SPILLED)
    tok: TokenStats | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None and 200 <= self.status < 300 and self.end_ns > 0


@dataclass(slots=True)
class StreamEvent:
    """One parsed stream event (an SSE `data:` payload, or a whole JSON body)."""

    tokens: int = 0  # new output tokens carried by this event (0: usage/meta-only event)
    text: str = ""
    done: bool = False
    prompt_tokens: int | None = None  # as counted by the server, when it says
    output_tokens: int | None = None  # cumulative output tokens as counted by the server
    finish_reason: str | None = None
    error: str | None = None
