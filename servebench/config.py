"""Run configuration: validated once at the edge (CLI or file), then plain data inside."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def check_seconds(options: dict[str, str]) -> dict[str, str]:
    """Launcher options in seconds (`*_s`: ready_timeout_s, pull_timeout_s, stop_grace_s, ...)
    are finite numbers, time-outs above 0: a NaN or a word surfaced after the server had started."""
    for k, v in options.items():
        if not k.endswith("_s"):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"launcher option {k}={v!r} is not a number of seconds") from None
        if not math.isfinite(f) or f < 0 or (f == 0 and "timeout" in k):
            raise ValueError(f"launcher option {k}={v!r}: expected a finite number of seconds"
                             + (" above 0" if "timeout" in k else ", 0 or more"))
    return options


def check_env(env: dict) -> dict[str, str]:
    """Environment variables for the server: names as a shell would accept them, values as text."""
    import re

    bad = [k for k in env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k))]
    if bad:
        raise ValueError(f"not an environment variable name: {bad[0]!r}")
    return {str(k): str(x) for k, x in env.items()}
# Tokens per prompt or per answer: far past any model's context (the longest are ~10 M), and
# well inside the records' int64 columns; a larger number is a typo, and once sent it ran on
# for ever and then could not be stored ("Python int too large to convert to C long").
MAX_TOKENS = 10_000_000


def check_endpoint(v: str) -> str:
    """An endpoint the probe can reach in principle: the scheme, host and port are checked
    here, so a typo is bad input (exit 2, nothing written), not "connection refused"."""
    if v.startswith("sagemaker://"):
        if not v.removeprefix("sagemaker://").strip("/"):
            raise ValueError(f"{v}: expected sagemaker://<endpoint-name>")
        return v
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not v.startswith(("http://", "https://")):
        raise ValueError(f"{v!r} is neither an http(s) URL nor sagemaker://<name>")
    try:
        port = parts.port
    except ValueError:
        port = parts.netloc.rpartition(":")[2]
        raise ValueError(f"port {port!r} in {v} is not a TCP port (1-65535)") from None
    if port == 0:
        raise ValueError(f"port '0' in {v} is not a TCP port (1-65535)")
    if not parts.hostname:
        raise ValueError(f"{v} has no host: expected e.g. http://127.0.0.1:8000")
    return v


class LoadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: int = Field(1000, ge=1)
    concurrency: int | None = Field(None, ge=1)  # closed loop; with rate: a cap on in-flight
    rate: float | None = Field(None, gt=0, allow_inf_nan=False)  # requests/s, open loop (inf: use a burst)
    arrival: Literal["poisson", "constant"] = "poisson"
    duration_s: float | None = Field(None, gt=0, allow_inf_nan=False)  # stop releasing new requests after this
    warmup: int = Field(2, ge=0)
    seed: int = 0
    # load processes; "auto": from the self-check's measured capacity, the load and the free cores;
    # "ray:N": N load-generator actors on a Ray cluster's hosts (ray_workers.py)
    workers: int | str = "auto"
    request_timeout_s: float = Field(600.0, gt=0, allow_inf_nan=False)
    realtime: bool = True  # run the load loop under SCHED_RR when permitted (runner.realtime_on)
    self_check: bool | None = None  # client-floor calibration; None: on above 100 streams

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v):
        text = str(v).strip()
        if text == "auto" or (text.startswith("ray:") and text[4:].isdigit() and int(text[4:]) >= 1):
            return text
        if text.isdigit() and int(text) >= 1 and not isinstance(v, (bool, float)):
            return int(text)
        raise ValueError(f"{v!r}: expected a number of load processes (1 or more), auto, "
                         "or ray:N (N load actors on a Ray cluster)")

    @property
    def ray_workers(self) -> int | None:
        """N of `--workers ray:N`, else None."""
        return int(self.workers[4:]) if isinstance(self.workers, str) and self.workers.startswith("ray:") else None

    @property
    def mode(self) -> str:
        if self.rate is not None:
            return "rate"
        if self.concurrency is not None:
            return "concurrency"
        return "burst"


LENGTH_KINDS = ("lognormal:", "normal:", "uniform:", "empirical:")  # servebench.load.lengths parses them


class TraceConfig(BaseModel):
    """A trace replay (servebench.load.traces, docs/workloads.md)."""

    model_config = ConfigDict(extra="forbid")

    source: str  # a shipped name (azure-conv-2023, mooncake-conversation) or a file
    format: str | None = None  # azure | mooncake | servebench | csv | jsonl; None: detected (load.traces)
    columns: str | None = None  # time=COL[:s|ms|datetime],input=COL,output=COL[,blocks=COL]
    speed: float = Field(1.0, gt=0, allow_inf_nan=False)  # time compressed K-fold
    window: tuple[float, float | None] | None = None  # seconds after the first request; END None: to the end
    requests: int | None = Field(None, ge=1)  # the first N of the window
    scale_lengths: float = Field(1.0, gt=0, allow_inf_nan=False)  # lengths and prefix blocks times F

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v):
        if not isinstance(v, str):
            return v
        start, colon, end = v.partition(":")
        try:
            lo, hi = float(start or 0), (float(end) if end.strip() else None)
        except ValueError:
            lo = hi = None
        if not colon or lo is None or lo < 0 or (hi is not None and hi <= lo):
            raise ValueError(f"{v!r}: expected START:END in seconds after the first request, e.g. 60:120 or 300:")
        return (lo, hi)


class SessionConfig(BaseModel):
    """Multi-turn chat sessions (servebench.load.sessions, docs/workloads.md "Sessions")."""

    model_config = ConfigDict(extra="forbid")

    source: str  # "synthetic" or a JSONL file, one session a line
    turns: int | None = Field(None, ge=1)  # synthetic: turns a session (default 3); a file: at most this many
    think_time: float | str = 0.0  # seconds between an answer's end and the next turn; or a distribution
    count: int | None = Field(None, ge=1)  # sessions; synthetic default 8, a file: all (or its first N)

    @field_validator("think_time", mode="before")
    @classmethod
    def _think(cls, v):
        try:
            t = float(v)
        except (TypeError, ValueError):
            return str(v).strip()  # a distribution: parsed (one-line errors) by load.sessions
        if isinstance(v, bool) or not 0 <= t < 86_400:
            raise ValueError(f"{v!r}: a think time is seconds, 0 or more (or a distribution, e.g. lognormal:mean=2,sd=1)")
        return t


class WorkloadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # a number of tokens, or a distribution: lognormal:mean=M,sd=S | normal:... | uniform:LO-HI | empirical:FILE
    input_tokens: int | str = 512
    output_tokens: int | str = 128
    max_input_tokens: int | None = Field(None, ge=1)  # clip (counted in summary.json workload.clipped)
    max_output_tokens: int | None = Field(None, ge=1)
    prompts_file: Path | None = None  # JSONL: {"prompt": ..., "output_tokens": optional}
    tokenizer: str | None = None  # defaults to the model
    prefix_share: float = Field(0.0, ge=0, le=1)  # synthetic: this share of requests starts with a system prompt
    prefix_tokens: int | None = Field(None, ge=5)  # ... of this many tokens
    prefix_prompts: int = Field(4, ge=1)  # ... one of this many distinct ones
    trace: TraceConfig | None = None
    sessions: SessionConfig | None = None

    @field_validator("input_tokens", "output_tokens", mode="before")
    @classmethod
    def _length(cls, v):
        text = str(v).strip()
        if isinstance(v, bool):
            raise ValueError(f"{v!r} is not a length")
        if text.lstrip("-").isdigit():
            if int(text) < 1:
                raise ValueError(f"{text}: a length must be at least 1 token")
            if int(text) > MAX_TOKENS:
                raise ValueError(f"{text}: more than {MAX_TOKENS:,} tokens is beyond any model's context")
            return int(text)
        if not text.startswith(LENGTH_KINDS):
            raise ValueError(f"{text!r}: expected a number of tokens or a distribution "
                             "(lognormal:mean=M,sd=S, normal:mean=M,sd=S, uniform:LO-HI, empirical:FILE)")
        return text

    @model_validator(mode="after")
    def _one_source(self) -> "WorkloadConfig":
        if self.trace is not None and self.prompts_file is not None:
            raise ValueError("--trace and --prompts-file are two workloads: give one")
        if self.trace is not None and self.prefix_share:
            raise ValueError("--prefix-share is for synthetic loads; a trace brings its own prefix blocks")
        if self.prompts_file is not None and self.prefix_share:
            raise ValueError("--prefix-share is for synthetic prompts, not --prompts-file")
        if self.sessions is not None and (self.trace is not None or self.prompts_file is not None or self.prefix_share):
            raise ValueError("--sessions is a workload of its own: not with --trace, --prompts-file or --prefix-share")
        if self.prefix_share and self.prefix_tokens is None:
            raise ValueError("--prefix-share needs --prefix-tokens N (the system prompts' length)")
        return self


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = "vllm"
    model: str = "tiny"
    served_model_name: str | None = None  # the name the API expects; defaults to the model
    endpoint: str | None = None  # benchmark a server that is already up
    launcher: str = "process"
    api: str | None = None  # adapter override, e.g. "openai-chat"; default from the spec
    gpus: list[int] | None = None
    server_args: list[str] = Field(default_factory=list)
    launcher_options: dict[str, str] = Field(default_factory=dict)  # e.g. instance_type, region
    env: dict[str, str] = Field(default_factory=dict)  # the server's environment (container or process)
    load: LoadConfig = Field(default_factory=LoadConfig)
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    results_dir: Path = Path("results")
    name: str | None = None
    telemetry: bool = True
    plots: bool = True  # timeline.png / timeline.html in the run dir
    steady_state: bool = False  # metrics over the window after the load reached its target (analysis/steady.py)
    max_error_rate: float = Field(0.0, ge=0, le=1)  # above this fraction of failed requests: exit 1

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        return check_env(v)

    @field_validator("launcher_options")
    @classmethod
    def _option_seconds(cls, v: dict[str, str]) -> dict[str, str]:
        return check_seconds(v)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return check_endpoint(v) if v is not None else v

    @field_validator("results_dir")
    @classmethod
    def _results_dir(cls, v: Path) -> Path:
        # a file on the way would surface as a raw errno after the server was already started
        for p in (v, *v.parents):
            if p.exists():
                if not p.is_dir():
                    raise ValueError(f"{p} is a file, not a directory" + ("" if p == v else f" (in {v})"))
                break
        return v

    @model_validator(mode="after")
    def _trace_sets_the_schedule(self) -> "RunConfig":
        if self.workload.trace is not None and self.load.rate is not None:
            raise ValueError("--trace releases each request at its trace time; --rate does not apply "
                             "(--trace-speed K compresses time)")
        return self

    @model_validator(mode="after")
    def _sessions_speak_chat(self) -> "RunConfig":
        if self.workload.sessions is not None:
            if self.api not in (None, "openai-chat"):
                raise ValueError(f"--sessions sends conversations through the chat endpoint (api openai-chat), not {self.api}")
            self.api = "openai-chat"
        return self

    @model_validator(mode="after")
    def _endpoint_means_external(self) -> "RunConfig":
        if self.endpoint is not None:
            if self.launcher not in ("process", "external"):  # process: the default, not a choice
                raise ValueError(f"--endpoint benchmarks a server that is already up; --launcher {self.launcher} "
                                 "would start one: give one or the other")
            self.launcher = "external"
        elif self.launcher == "external":  # refused here, before a run dir exists
            raise ValueError("--launcher external benchmarks a server that is already up: give --endpoint URL")
        return self
