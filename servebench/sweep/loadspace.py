"""A sweep's load section: the points measured against every server (concurrency levels,
rates, a burst, or a trace's speeds) and the workload they send (fixed lengths, length
distributions, a prompts file or a trace), validated as `servebench run` validates them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servebench.config import MAX_TOKENS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TraceLoad(_Strict):
    """A trace replayed against every server (docs/workloads.md); its load points are speeds,
    each a multiple of the trace's own rate, as concurrency levels are for a closed loop."""

    source: str  # a shipped name (azure-conv-2023, mooncake-conversation) or a file
    format: str | None = None
    columns: str | None = None
    window: str | list[float | None] | None = None  # "START:END" (quoted: YAML reads 1:30 as 90) or [START, END]
    scale_lengths: float = Field(1.0, gt=0, allow_inf_nan=False)
    speed: list[float] = Field(default_factory=lambda: [1.0])

    @field_validator("speed", mode="before")
    @classmethod
    def _speeds(cls, v: Any) -> Any:
        v = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        if isinstance(v, list) and any(not isinstance(x, (int, float)) or isinstance(x, bool) or not 0 < x < float("inf")
                                       for x in v):
            raise ValueError("trace speeds must be finite numbers > 0 (multiples of the trace's rate)")
        if isinstance(v, list) and not v:
            raise ValueError("no trace speed: give at least one, e.g. speed: [1, 2, 4]")
        return v

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError(f"{v!r}: give START:END in quotes (YAML reads 1:30 as a number) or [START, END]")
        return v

    @model_validator(mode="after")
    def _as_run_would(self) -> "TraceLoad":
        from servebench.config import TraceConfig

        try:
            TraceConfig(source=self.source, format=self.format, columns=self.columns, window=self.run_window,
                        scale_lengths=self.scale_lengths)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    @property
    def run_window(self) -> Any:
        return tuple(self.window) if isinstance(self.window, list) else self.window


class SessionsLoad(_Strict):
    """Multi-turn chat sessions sent to every server (run's --sessions, docs/workloads.md); the
    load points are live sessions (concurrency) or session starts per second (rate)."""

    source: str  # synthetic, or a JSONL file of conversations
    turns: int | None = Field(None, ge=1)
    think_time: float | str = 0.0  # seconds, or a distribution (lognormal:mean=2,sd=1, ...)
    count: int | None = Field(None, ge=1)  # sessions per load point

    @model_validator(mode="after")
    def _as_run_would(self) -> "SessionsLoad":
        from servebench.config import SessionConfig
        from servebench.load.sessions import parse_think

        try:
            SessionConfig(**self.model_dump())
            parse_think(self.think_time)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self


def _length(v: Any) -> Any:
    """A number of tokens or a distribution, checked as `run --input-tokens` checks it."""
    from servebench.config import WorkloadConfig

    try:
        return WorkloadConfig(input_tokens=v).input_tokens
    except ValidationError as e:
        raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None


class LoadSpace(_Strict):
    """Load points measured against every server: each concurrency, each rate, and a burst; or,
    with a trace, each speed of its replay."""

    concurrency: list[int] = Field(default_factory=list)
    rate: list[float] = Field(default_factory=list)
    burst: bool = False
    requests: int = Field(100, ge=1)  # with a trace: the first N of its window (default: all of them)
    duration_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    # a number, or a distribution as `run` takes it: lognormal:mean=M,sd=S | normal:... | uniform:LO-HI | empirical:FILE
    input_tokens: int | str = 512
    output_tokens: int | str = 128
    max_input_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)  # clip (a trace to a small model, a long tail)
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    trace: TraceLoad | None = None
    sessions: SessionsLoad | None = None
    prompts_file: Path | None = None
    warmup: int = Field(2, ge=0)
    repeats: int = Field(1, ge=1)
    seed: int = 0
    arrival: str = "poisson"
    request_timeout_s: float = Field(600.0, gt=0, allow_inf_nan=False)
    max_error_rate: float = Field(1.0, ge=0, le=1, allow_inf_nan=False)  # a cell with errors is still a measured cell

    @field_validator("concurrency", "rate", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("concurrency")
    @classmethod
    def _positive_c(cls, v: list[int]) -> list[int]:
        if any(c < 1 for c in v):
            raise ValueError("concurrency levels must be >= 1")
        return v

    @field_validator("rate")
    @classmethod
    def _positive_r(cls, v: list[float]) -> list[float]:
        if any(not (0 < r < float("inf")) for r in v):
            raise ValueError("rates must be finite and > 0")
        return v

    @field_validator("input_tokens", "output_tokens", mode="before")
    @classmethod
    def _lengths(cls, v: Any) -> Any:
        return _length(v)

    @model_validator(mode="after")
    def _some_point(self) -> "LoadSpace":
        if self.sessions is not None:
            given = sorted({"trace", "prompts_file"} & self.model_fields_set)
            if given:
                raise ValueError(f"{', '.join(given)}: sessions are a workload of their own (their load points are "
                                 "concurrency, live sessions, or rate, session starts per second)")
        if "input_tokens" in self.model_fields_set and (
                self.prompts_file is not None or (self.sessions is not None and self.sessions.source != "synthetic")):
            raise ValueError("input_tokens: not read with prompts_file or a sessions file, which bring their own prompts")
        if self.trace is not None:
            given = sorted({"concurrency", "rate", "burst", "input_tokens", "output_tokens", "prompts_file"}
                           & self.model_fields_set)
            if given:
                raise ValueError(f"{', '.join(given)}: a trace brings its own schedule and lengths; its load points "
                                 "are trace.speed (fit lengths with trace.scale_lengths, max_input_tokens)")
            return self
        if not (self.concurrency or self.rate or self.burst):
            self.burst = True  # nothing asked: the paper's default, a burst
        return self

    @property
    def trace_requests(self) -> int | None:
        """`requests` for a trace: the first N of its window when given, else all of them."""
        return self.requests if "requests" in self.model_fields_set else None

    def describe(self) -> str:
        """The workload in one line (`sweep --dry-run`)."""
        clip = ", ".join(f"{k.replace('_', ' ')} {getattr(self, k)}" for k in ("max_input_tokens", "max_output_tokens")
                         if getattr(self, k))
        if self.trace is not None:
            t = self.trace
            parts = [f"trace {t.source}"] + [f"{k} {v}" for k, v in (
                ("format", t.format), ("columns", t.columns), ("window", t.window),
                ("requests", self.trace_requests)) if v is not None]
            if t.scale_lengths != 1:
                parts.append(f"lengths x{t.scale_lengths:g}")
            text = ", ".join(parts + ([clip] if clip else []))
            return f"{text}; speeds {', '.join(f'x{s:g}' for s in t.speed)}"
        if self.sessions is not None:
            sc = self.sessions
            parts = [f"sessions {sc.source}"] + [f"{k} {v}" for k, v in (
                ("turns", sc.turns), ("count", sc.count), ("think time", sc.think_time)) if v is not None]
            return f"{', '.join(parts)}; input tokens {self.input_tokens}, output tokens {self.output_tokens}" + (
                f", {clip}" if clip else "")
        if self.prompts_file is not None:
            return f"prompts {self.prompts_file}" + (f", {clip}" if clip else "")
        return f"input tokens {self.input_tokens}, output tokens {self.output_tokens}" + (f", {clip}" if clip else "")
