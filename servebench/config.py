"""Run configuration: validated once at the edge (CLI or file), then plain data inside."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


# Tokens per prompt or per answer: far past any model's context (the longest are ~10 M), and
# well inside the records' int64 columns; a larger number is a typo, and once sent it ran on
# for ever and then could not be stored ("Python int too large to convert to C long").
MAX_TOKENS = 10_000_000


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


class WorkloadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(512, ge=1, le=MAX_TOKENS)
    output_tokens: int = Field(128, ge=1, le=MAX_TOKENS)
    prompts_file: Path | None = None  # JSONL: {"prompt": ..., "output_tokens": optional}
    tokenizer: str | None = None  # defaults to the model


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
    load: LoadConfig = Field(default_factory=LoadConfig)
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    results_dir: Path = Path("results")
    name: str | None = None
    telemetry: bool = True
    plots: bool = True  # timeline.png / timeline.html in the run dir
    max_error_rate: float = Field(0.0, ge=0, le=1)  # above this fraction of failed requests: exit 1

    @field_validator("endpoint")
    @classmethod
    def _endpoint_port(cls, v: str | None) -> str | None:
        # an impossible port would otherwise surface as "Connection refused" from the probe
        if v and v.startswith(("http://", "https://")):
            try:
                urlsplit(v).port
            except ValueError:
                port = urlsplit(v).netloc.rpartition(":")[2]
                raise ValueError(f"port {port!r} in {v} is not a TCP port (1-65535)") from None
        return v

    @model_validator(mode="after")
    def _endpoint_means_external(self) -> "RunConfig":
        if self.endpoint is not None:
            self.launcher = "external"
        return self
