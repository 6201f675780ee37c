"""Length mixes: `--input-tokens` / `--output-tokens` as a number or a distribution.

    512                          every request 512 tokens
    lognormal:mean=1000,sd=800   lognormal with that mean and standard deviation (not mu/sigma:
                                 the numbers a user reads off a trace's summary)
    normal:mean=1000,sd=200      normal
    uniform:128-2048             integers, both ends included
    empirical:FILE               drawn from the lengths in FILE: one number a line, or a trace
                                 (its input lengths for --input-tokens, output for --output-tokens)

Draws are rounded to integers, at least 1, from a seeded random.Random: the same spec and seed
give the same lengths on every host. Clipping to the model's context is the caller's
(workload.py), which counts what it clipped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from servebench.load.prompts import WorkloadError

KINDS = ("lognormal", "normal", "uniform", "empirical")


@dataclass(frozen=True)
class LengthDist:
    spec: str
    kind: str  # fixed | lognormal | normal | uniform | empirical
    params: dict = field(default_factory=dict)
    values: tuple[int, ...] = ()  # empirical: the lengths drawn from

    @property
    def fixed(self) -> int | None:
        return int(self.params["value"]) if self.kind == "fixed" else None

    def sample(self, n: int, rng: random.Random) -> list[int]:
        p = self.params
        if self.kind == "fixed":
            return [int(p["value"])] * n
        if self.kind == "uniform":
            return [rng.randint(int(p["low"]), int(p["high"])) for _ in range(n)]
        if self.kind == "empirical":
            return [rng.choice(self.values) for _ in range(n)]
        if self.kind == "normal":
            draw = lambda: rng.gauss(p["mean"], p["sd"])  # noqa: E731
        else:  # lognormal from its mean m and sd s: sigma^2 = ln(1 + s^2/m^2), mu = ln m - sigma^2/2
            s2 = math.log1p((p["sd"] / p["mean"]) ** 2)
            mu, sigma = math.log(p["mean"]) - s2 / 2, math.sqrt(s2)
            draw = lambda: rng.lognormvariate(mu, sigma)  # noqa: E731
        return [max(1, round(draw())) for _ in range(n)]

    def describe(self) -> dict:
        """What was asked for, for the summary (beside the achieved lengths)."""
        out: dict = {"spec": self.spec, "kind": self.kind}
        if self.kind == "empirical":
            out.update(n_values=len(self.values), mean=sum(self.values) / len(self.values))
        else:
            out.update({k: v for k, v in self.params.items()})
        return out


def parse_length(spec: int | str, what: str = "--input-tokens", column: str = "input") -> LengthDist:
    """A length spec -> LengthDist; a one-line WorkloadError naming the option otherwise."""
    text = str(spec).strip()
    if text.isdigit():
        if int(text) < 1:
            raise WorkloadError(f"{what} {text}: a length must be at least 1 token")
        return LengthDist(text, "fixed", {"value": int(text)})
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        raise WorkloadError(f"{what} {text!r}: expected a number of tokens or {', '.join(k + ':...' for k in KINDS)}")
    if kind == "empirical":
        return LengthDist(text, kind, {"file": rest}, _empirical(Path(rest), what, column))
    if kind == "uniform":
        low, dash, high = rest.partition("-")
        if not (dash and low.strip().isdigit() and high.strip().isdigit()) or not 1 <= int(low) <= int(high):
            raise WorkloadError(f"{what} {text!r}: expected uniform:LOW-HIGH with 1 <= LOW <= HIGH, e.g. uniform:128-2048")
        return LengthDist(text, kind, {"low": int(low), "high": int(high)})
    params = _params(text, rest, what)
    if params["mean"] <= 0 or params["sd"] < 0:
        raise WorkloadError(f"{what} {text!r}: mean must be > 0 and sd >= 0")
    return LengthDist(text, kind, params)


def _params(text: str, rest: str, what: str) -> dict:
    out: dict[str, float] = {}
    for part in rest.split(","):
        key, eq, value = (x.strip() for x in part.partition("="))
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if not eq or key not in ("mean", "sd") or not math.isfinite(v):
            raise WorkloadError(f"{what} {text!r}: expected {text.split(':')[0]}:mean=M,sd=S, e.g. lognormal:mean=1000,sd=800")
        out[key] = v
    if set(out) != {"mean", "sd"}:
        raise WorkloadError(f"{what} {text!r}: both mean= and sd= are needed")
    return out


def _empirical(path: Path, what: str, column: str) -> tuple[int, ...]:
    """One positive integer a line (blank lines and a non-numeric header skipped), or a trace
    in any format traces.py reads."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise WorkloadError(f"{what} empirical:{path}: cannot read: {e.strerror}") from None
    rows = [(i, ln.strip()) for i, ln in enumerate(lines, 1) if ln.strip()]
    if rows and not rows[0][1].lstrip("-").isdigit():
        if rows[0][1].startswith("{") or "," in rows[0][1]:  # a trace
            from servebench.load.traces import load_trace

            reqs = load_trace(str(path)).requests
            return tuple(r.input_tokens if column == "input" else r.output_tokens for r in reqs)
        rows = rows[1:]  # a header line
    values = []
    for lineno, text in rows:
        if not text.isdigit() or int(text) < 1:
            raise WorkloadError(f"{path}:{lineno}: length {text!r} is not a positive integer")
        values.append(int(text))
    if not values:
        raise WorkloadError(f"{what} empirical:{path}: no lengths in the file")
    return tuple(values)
