"""Per-request figures of one decoded record: the definitions every summary and interval is
built from (docs/metrics.md)."""

from __future__ import annotations

from servebench.records import RequestRecord

PERCENTILES = (50, 90, 95, 99)
MS = 1e6  # ns per ms


def output_tokens(r: RequestRecord) -> int:
    """Server-reported count first; the streamed count only when the server says nothing.
    (Re-tokenizing generated text is never used: random-weight text re-tokenizes 2-3x longer.)"""
    return r.server_output_tokens if r.server_output_tokens is not None else sum(r.token_counts)


def input_tokens(r: RequestRecord) -> int:
    return r.server_input_tokens if r.server_input_tokens is not None else r.input_tokens


def ttft_ns(r: RequestRecord) -> int | None:
    return r.token_ns[0] - r.sent_ns if r.token_ns else None


def e2e_ns(r: RequestRecord) -> int:
    return r.end_ns - r.sent_ns


def itl_gaps_ns(r: RequestRecord) -> list[float]:
    """Gaps between token-bearing events. An event carrying k > 1 tokens (SGLang, or a
    server that coalesces) contributes k gaps of gap/k, so sum(gaps) = last - first token."""
    t, c = r.token_ns, r.token_counts
    out: list[float] = []
    for j in range(1, len(t)):
        g = t[j] - t[j - 1]
        k = c[j] if c[j] > 0 else 1
        out.extend([g / k] * k) if k > 1 else out.append(g)
    return out


def tpot_ns(r: RequestRecord) -> float | None:
    n = output_tokens(r)
    ttft = ttft_ns(r)
    if ttft is None or n < 2:
        return None
    return (e2e_ns(r) - ttft) / (n - 1)
