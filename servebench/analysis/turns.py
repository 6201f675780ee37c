"""Per-turn metrics of a multi-turn session run (docs/metrics.md, "Sessions"). Pure functions
of the records.

The context of turn k is every message before it plus its own user text, as the server
counted it under the chat template it applies (usage.prompt_tokens: server_input_tokens).
The client's count of the same messages under the tokenizer's own template (input_tokens)
is set beside it: where they differ, the server's template is not the tokenizer's.
"""

from __future__ import annotations

from typing import Sequence

from servebench.analysis.metrics import MS, dist, output_tokens, ttft_ns
from servebench.records import RequestRecord


def per_turn(records: Sequence[RequestRecord]) -> dict | None:
    """summary.json "sessions": per turn index TTFT and context length, and per run how many
    sessions ran every turn. None when the run had no sessions. `records`: all of the run's,
    released or not (a session that stopped at a failed turn leaves its later turns unsent)."""
    turns = [r for r in records if not r.warmup and r.turn is not None]
    if not turns:
        return None
    by_turn: dict[int, list[RequestRecord]] = {}
    by_session: dict[int, list[RequestRecord]] = {}
    for r in turns:
        by_turn.setdefault(r.turn, []).append(r)
        by_session.setdefault(r.session, []).append(r)
    rows = [_turn_row(k, rs) for k, rs in sorted(by_turn.items())]
    ok = [r for r in turns if r.ok]
    counted = [r for r in ok if r.server_input_tokens is not None]
    return {
        "sessions": len(by_session),
        "sessions_completed": sum(1 for rs in by_session.values() if all(r.ok for r in rs)),
        "turns_planned": len(turns),
        "turns_sent": sum(1 for r in turns if r.sent_ns),
        "context_counted_by": "server" if ok and len(counted) == len(ok) else ("server, partly" if counted else "client"),
        # input_tokens 0: no client count (a run salvaged from its spool is counted after the load by no one)
        "template_mismatches": sum(1 for r in counted if r.input_tokens and r.server_input_tokens != r.input_tokens),
        "by_turn": rows,
    }


def _turn_row(k: int, rs: list[RequestRecord]) -> dict:
    ok = [r for r in rs if r.ok]
    ttft = [v / MS for r in ok if (v := ttft_ns(r)) is not None]
    server = [r.server_input_tokens for r in ok if r.server_input_tokens is not None]
    t = dist(ttft)
    c = dist(server)
    return {
        "turn": k,
        "sent": sum(1 for r in rs if r.sent_ns),
        "completed": len(ok),
        "failed": sum(1 for r in rs if (r.sent_ns or r.error) and not r.ok),
        "ttft_ms": {"p50": t["p50"], "p99": t["p99"], "mean": t["mean"]},
        "context_tokens": {"mean": c["mean"], "p50": c["p50"], "max": c["max"], "n": c["n"]},  # server-counted
        "client_template_tokens_mean": _mean([r.input_tokens for r in ok if r.input_tokens]),
        "output_tokens_mean": _mean([output_tokens(r) for r in ok]),
        "e2e_ms_p50": dist([(r.end_ns - r.sent_ns) / MS for r in ok])["p50"],
    }


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
