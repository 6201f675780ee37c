"""The limit block a sweep keeps in index.json (a group's `limit`), read back as one line.

The sweep's search writes it (sweep/limit.py) and recommend/report print it (decide/), so
its reader lives with the other stored-file readers, below both.
"""

from __future__ import annotations

LEVEL = 0.95  # confidence of the range's ends: each bound's verdict is taken from its own 95 % interval


def describe(lm: dict) -> str:
    """'110-125 (95 %; first missing: 126)', or '120 (first missing: 121)' when exact. Reads
    blocks written before ranges too (max_meeting and first_missing only)."""
    low = lm.get("low", lm.get("max_meeting"))
    high = lm.get("high", low)
    first = lm.get("first_missing")
    miss = f"first missing: {first:g}" if first is not None else "none missed up to the search's cap"
    if low is None and high is None:
        return f"none (even {first:g} missed)" if first is not None else "none"
    if low is None:
        why = lm.get("note") or "the noise leaves every level up to it undecided"
        return f"none shown at 95 %, at most {high:g} ({miss}; {why})"
    if high is None or low == high:
        return f"{low:g} ({miss})"
    return f"{low:g}-{high:g} ({lm.get('level', LEVEL) * 100:g} %; {miss})"
