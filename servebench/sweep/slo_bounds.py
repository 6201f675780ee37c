"""An SLO as the limit search reads it: `ttft_p99<=500ms,error_rate<=0.01` -> bounds on summary
figures. Apart from the search (limit.py) and its three-way judge (judge.py), which both use it."""

from __future__ import annotations

import re
from dataclasses import dataclass

_METRICS = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_ms", "e2e": "e2e_ms", "e2el": "e2e_ms",
            "ms_per_token": "ms_per_token"}
_TERM = re.compile(r"^\s*([a-z0-9_]+?)_(p50|p90|p95|p99|mean|max)\s*(<=|<)\s*([0-9.]+)\s*(ms|s)?\s*$")
_ERR = re.compile(r"^\s*error_rate\s*(<=|<)\s*([0-9.]+)\s*$")


@dataclass(frozen=True, slots=True)
class Bound:
    metric: str  # summary key, e.g. ttft_ms
    stat: str  # p99
    op: str  # <= or <
    limit: float  # in ms (or a fraction for error_rate)

    @property
    def name(self) -> str:
        return f"{self.metric}.{self.stat}" if self.stat else self.metric

    def value(self, summary: dict) -> float | None:
        if self.metric == "error_rate":
            return summary.get("error_rate")
        return (summary.get(self.metric) or {}).get(self.stat)

    def met(self, summary: dict) -> bool:
        v = self.value(summary)
        if v is None:
            return False  # nothing measured is never a pass
        return v <= self.limit if self.op == "<=" else v < self.limit


def parse_slo(text: str) -> list[Bound]:
    """`ttft_p99<=500ms,tpot_p50<=50ms,error_rate<=0.01` -> bounds (times in ms)."""
    bounds = []
    for part in [p for p in text.split(",") if p.strip()]:
        if m := _ERR.match(part):
            bounds.append(Bound("error_rate", "", m[1], float(m[2])))
            continue
        m = _TERM.match(part.strip().lower())
        if not m or m[1] not in _METRICS:
            raise ValueError(f"bad SLO term {part.strip()!r}: expected e.g. ttft_p99<=500ms "
                             f"(metrics: {', '.join(sorted(_METRICS))}, error_rate)")
        limit = float(m[4]) * (1000.0 if m[5] == "s" else 1.0)
        bounds.append(Bound(_METRICS[m[1]], m[2], m[3], limit))
    if not bounds:
        raise ValueError("empty SLO")
    return bounds
