"""Multi-turn sessions: what each conversation's user says, how long each answer is, and how
long the user thinks before the next turn (docs/workloads.md, "Sessions").

A session file is JSONL, one session a line:

    {"turns": ["first question", "a follow-up", ...]}
    {"id": "s7", "turns": [{"user": "text", "output_tokens": 64}, {"user": "more"}]}

A turn without output_tokens takes --output-tokens (a number or a distribution). `synthetic`
makes --session-count sessions of --turns turns, each user text exactly --input-tokens tokens
under the served tokenizer (without its special tokens: the server's template wraps it).
Everything is drawn here, seeded, before any server starts; only the assistant's text is left
to the run (load/session_loop.py sends turn k after turn k-1's answer came back).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from servebench.load import lengths
from servebench.load.jsonl import objects
from servebench.load.prompts import ExactPrompts, Prompt, WorkloadError

SYNTHETIC = "synthetic"
DEFAULT_TURNS = 3
DEFAULT_COUNT = 8
THINK_KINDS = ("uniform", "normal", "lognormal", "exponential")


@dataclass(frozen=True, slots=True)
class Turn:
    user: str  # the new user text of this turn
    output_tokens: int  # the answer's length, forced as for any run


@dataclass(frozen=True, slots=True)
class Conversation:
    number: int  # position in the run (records.session)
    turns: tuple[Turn, ...]
    think_s: tuple[float, ...]  # before turns 2..T: seconds after the previous answer ended
    label: str | None = None  # the file's "id", when it gives one


def parse_think(spec: float | str) -> tuple[dict, Callable[[int, random.Random], list[float]]]:
    """--think-time: seconds, or uniform:A-B | normal:mean=M,sd=S | lognormal:mean=M,sd=S |
    exponential:mean=M (seconds; draws below 0 are 0). -> (its description, a sampler)."""
    text = str(spec).strip()
    try:
        fixed = float(text)
    except ValueError:
        fixed = math.nan
    if math.isfinite(fixed) and fixed >= 0:
        return {"spec": text, "kind": "fixed", "value": fixed}, lambda n, rng: [fixed] * n
    kind, sep, rest = text.partition(":")
    if not sep or kind not in THINK_KINDS:
        raise WorkloadError(f"--think-time {text!r}: expected seconds (0 or more) or "
                            f"{', '.join(k + ':...' for k in THINK_KINDS)}, e.g. lognormal:mean=2,sd=1")
    if kind == "uniform":
        lo, dash, hi = rest.partition("-")
        try:
            a, b = float(lo), float(hi)
        except ValueError:
            a = b = math.nan
        if not dash or not (0 <= a <= b < math.inf):
            raise WorkloadError(f"--think-time {text!r}: expected uniform:A-B seconds with 0 <= A <= B, e.g. uniform:0.5-3")
        return {"spec": text, "kind": kind, "low": a, "high": b}, lambda n, rng: [rng.uniform(a, b) for _ in range(n)]
    if kind == "exponential":
        key, eq, value = rest.partition("=")
        try:
            m = float(value) if key.strip() == "mean" and eq else math.nan
        except ValueError:
            m = math.nan
        if not (0 < m < math.inf):
            raise WorkloadError(f"--think-time {text!r}: expected exponential:mean=M seconds, M > 0")
        return {"spec": text, "kind": kind, "mean": m}, lambda n, rng: [rng.expovariate(1 / m) for _ in range(n)]
    d = lengths.parse_length(text, "--think-time")  # mean=M,sd=S parsed and checked as for lengths
    p = d.params
    if kind == "normal":
        draw = lambda rng: rng.gauss(p["mean"], p["sd"])  # noqa: E731
    else:
        s2 = math.log1p((p["sd"] / p["mean"]) ** 2)
        mu, sigma = math.log(p["mean"]) - s2 / 2, math.sqrt(s2)
        draw = lambda rng: rng.lognormvariate(mu, sigma)  # noqa: E731
    return {"spec": text, "kind": kind, **p}, lambda n, rng: [max(0.0, draw(rng)) for _ in range(n)]


def read_file(path: Path, max_turns: int | None) -> list[tuple[int, str | None, list[tuple[str, int | None]]]]:
    """(line, id, [(user text, output_tokens or None)]) per session; one-line WorkloadError
    naming the file, the line and the field otherwise."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WorkloadError(f"cannot read session file {path}: {getattr(e, 'strerror', None) or e}") from None
    out = []
    for lineno, obj in objects(path, lines, WorkloadError):
        turns = obj.get("turns")
        if not isinstance(turns, list) or not turns:
            raise WorkloadError(f"{path}:{lineno}: turns: expected a non-empty list of user turns")
        label = obj.get("id")
        parsed = [_turn(path, lineno, k, t) for k, t in enumerate(turns)]
        out.append((lineno, None if label is None else str(label), parsed[:max_turns]))
    if not out:
        raise WorkloadError(f"{path}: no sessions in the file")
    return out


def _turn(path: Path, lineno: int, k: int, t) -> tuple[str, int | None]:
    where = f"{path}:{lineno}: turns[{k}]"
    if isinstance(t, str):
        t = {"user": t}
    if not isinstance(t, dict):
        raise WorkloadError(f"{where}: expected a string or an object with a string 'user'")
    user = t.get("user")
    if not isinstance(user, str):
        raise WorkloadError(f"{where}.user: expected a string")
    if not user.strip():
        raise WorkloadError(f"{where}.user: empty turn")
    out = t.get("output_tokens")
    if out is not None and (isinstance(out, bool) or not isinstance(out, int) or not 1 <= out <= 10_000_000):
        raise WorkloadError(f"{where}.output_tokens: {out!r} is not a positive number of tokens")
    return user, out


def build(cfg, tokenizer) -> tuple[list[Conversation], list[Prompt], dict]:
    """The run's conversations, warm-up prompts (single-turn chats) and summary info."""
    sc, w, load = cfg.workload.sessions, cfg.workload, cfg.load
    think_info, think = parse_think(sc.think_time)
    dout = lengths.parse_length(w.output_tokens, "--output-tokens", "output")
    outs = random.Random(f"{load.seed}:output")
    if sc.source == SYNTHETIC:
        rows = _synthetic(cfg, tokenizer, sc.count or DEFAULT_COUNT, sc.turns or DEFAULT_TURNS)
        source = {"source": SYNTHETIC}
    else:
        rows = [(lab, ts) for _, lab, ts in read_file(Path(sc.source).expanduser(), sc.turns)][: sc.count]
        source = {"source": "file", "file": str(sc.source)}
    convs = []
    for i, (label, turns) in enumerate(rows):
        tt = tuple(Turn(u, min(o if o is not None else dout.sample(1, outs)[0], w.max_output_tokens or math.inf))
                   for u, o in turns)
        gaps = tuple(think(len(tt) - 1, random.Random(f"{load.seed}:think:{i}")))
        convs.append(Conversation(i, tt, gaps, label))
    warm = _warmups(cfg, tokenizer, [c.turns[0] for c in convs])
    n_turns = sum(len(c.turns) for c in convs)
    info = {"source": "sessions", "sessions": {**source, "count": len(convs), "turns": n_turns,
                                               "turns_per_session": {"min": min(len(c.turns) for c in convs),
                                                                     "max": max(len(c.turns) for c in convs)},
                                               "think_time_s": think_info, "output_tokens": dout.describe()}}
    return convs, warm, info


def _warmups(cfg, tokenizer, firsts: list[Turn]) -> list[Prompt]:
    """One-turn chats as long as the sessions' first user texts, of words of their own: a warm-up
    that sent a session's first turn would put it in the prefix cache before it is measured."""
    if not cfg.load.warmup:
        return []
    ep, rng = ExactPrompts(tokenizer, cfg.load.seed), random.Random(f"{cfg.load.seed}:warmup")
    out = []
    for i in range(cfg.load.warmup):
        first = firsts[i % len(firsts)]
        out.append(Prompt(ep.build(ep.count(first.user), rng), 0, first.output_tokens))
    return out


def _synthetic(cfg, tokenizer, count: int, turns: int) -> list[tuple[None, list[tuple[str, None]]]]:
    """User texts of exactly --input-tokens tokens each (a distribution: drawn per turn)."""
    w, load = cfg.workload, cfg.load
    din = lengths.parse_length(w.input_tokens, "--input-tokens", "input")
    ep = ExactPrompts(tokenizer, load.seed)
    sizes = din.sample(count * turns, random.Random(f"{load.seed}:input"))
    rows = []
    for i in range(count):
        rng = random.Random(f"{load.seed}:session:{i}")
        texts = [ep.build(n + ep.specials, rng) for n in sizes[i * turns:(i + 1) * turns]]
        rows.append((None, [(t, None) for t in texts]))
    return rows
