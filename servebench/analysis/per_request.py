"""Per-request figures of one decoded record: the definitions every summary and interval is
built from (docs/metrics.md)."""

from __future__ import annotations

import numpy as np

from servebench.records import RequestRecord, TokenStats, token_arrays

PERCENTILES = (50, 90, 95, 99)
MS = 1e6  # ns per ms


def output_tokens(r: RequestRecord) -> int:
    """Server-reported count first; the streamed count only when the server says nothing.
    (Re-tokenizing generated text is never used: random-weight text re-tokenizes 2-3x longer.)"""
    return r.server_output_tokens if r.server_output_tokens is not None else streamed(r)


def streamed(r: RequestRecord) -> int:
    """Tokens the stream's events carried, sum(token_counts)."""
    return r.tok.streamed if r.tok is not None else sum(r.token_counts)


def input_tokens(r: RequestRecord) -> int:
    return r.server_input_tokens if r.server_input_tokens is not None else r.input_tokens


def ttft_ns(r: RequestRecord) -> int | None:
    if r.tok is not None:
        return r.tok.first_ns - r.sent_ns if r.tok.events else None
    return r.token_ns[0] - r.sent_ns if r.token_ns else None


def e2e_ns(r: RequestRecord) -> int:
    return r.end_ns - r.sent_ns


def itl_gaps_ns(r: RequestRecord) -> list[float]:
    """Gaps between token-bearing events. An event carrying k > 1 tokens (SGLang, or a
    server that coalesces) contributes k gaps of gap/k, so sum(gaps) = last - first token."""
    return _gaps_of(*token_arrays(r))


def _gaps_of(t, c) -> list[float]:
    out: list[float] = []
    for j in range(1, len(t)):
        g = t[j] - t[j - 1]
        k = c[j] if c[j] > 0 else 1
        out.extend([g / k] * k) if k > 1 else out.append(g)
    return out


def _batch_sizes(c, n: int) -> np.ndarray | None:
    """Tokens per event after the first, a zero-token event counted as one (itl_gaps_ns's rule);
    None when none carries more than one (most streams: one gap an event, no numpy work)."""
    if not c or max(c) <= 1:
        return None
    k = np.asarray(c[1:n], dtype=np.int64)
    k = np.where(k > 0, k, 1)
    return k if (k > 1).any() else None


def gap_count(r: RequestRecord) -> int:
    if r.tok is not None:
        return r.tok.gaps
    n = len(r.token_ns)
    if n < 2:
        return 0
    k = _batch_sizes(r.token_counts, n)
    return n - 1 if k is None else int(k.sum())


def gap_sum_ns(r: RequestRecord) -> float:
    """sum(itl_gaps_ns(r)), summed as Python sums that list (the ITL mean's bootstrap reads it)."""
    return r.tok.gap_sum_ns if r.tok is not None else _gap_sum(r.token_ns, r.token_counts)


def _gap_sum(t, c) -> float:
    if len(t) < 2:
        return 0
    if max(c) <= 1:  # one gap an event: the int gaps add up to last - first exactly
        return t[-1] - t[0]
    return sum(_gaps_of(t, c))


def token_stats(r: RequestRecord, src=None, at: int = 0) -> TokenStats:
    """The scalars the analysis reads of r's (decoded, in-memory) arrays."""
    t, c = r.token_ns, r.token_counts
    return TokenStats(len(t), t[0] if t else 0, sum(c), gap_count(r), _gap_sum(t, c), src, at)


def tpot_ns(r: RequestRecord) -> float | None:
    n = output_tokens(r)
    ttft = ttft_ns(r)
    if ttft is None or n < 2:
        return None
    return (e2e_ns(r) - ttft) / (n - 1)
