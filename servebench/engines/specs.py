"""Engine specs: what servebench needs to know to launch and talk to one engine.

Specs are data (backends/<engine>/spec.yaml), validated here once at the edge. Users may pass
the path of their own spec file instead of an engine name. Command lines are templates:
`{python}`, `{model}`, `{served_model_name}`, `{host}`, `{port}` are filled in by the launcher;
optional flags (GPU count, quantization, max tokens) are appended only when a value is known,
so a spec never has to guess a default that would change the engine's behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from servebench.engines.hub import cached_snapshot
from servebench.errors import first_line

BACKENDS_DIR = Path(__file__).resolve().parents[2] / "backends"
TEMPLATE_KEYS = ("python", "model", "served_model_name", "host", "port")
OPTIONAL_KEYS = ("quantize", "max_input_tokens", "max_total_tokens", "max_concurrent_requests")


class SpecError(ValueError):
    """A spec is missing, malformed, or asked for something it cannot do (one-line message)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Flags(_Strict):
    """Engine CLI flag names; None where the engine has no such flag."""

    gpus: str | None = None  # tensor parallel degree; value = number of GPUs in --gpus
    quantize: str | None = None
    quantize_values: list[str] = Field(default_factory=list)  # accepted values, for a clear error
    max_input_tokens: str | None = None
    max_total_tokens: str | None = None
    max_concurrent_requests: str | None = None  # the front door's cap (FrontDoor)


class FrontDoor(_Strict):
    """An HTTP front door that refuses requests beyond `default` in flight (queued or running)
    unless told otherwise: TGI's router answers 429 "Model is overloaded" past its
    --max-concurrent-requests (128). A launch raises it to the most requests the load can have in
    flight, so a burst of 1000 measures the engine's queue, not refusals (servebench.run.frontdoor)."""

    default: int = Field(ge=1)
    info_key: str | None = None  # the field of GET /info that reports a running server's cap


class OutputLength(_Strict):
    forced: bool  # can a request make the engine emit exactly N tokens?
    how: str  # the request fields that do it, or why it cannot be done


class CommandSpec(_Strict):
    """One way to run the engine (plain process or container)."""

    command: list[str] = Field(default_factory=list)  # executable (process) / entrypoint override
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # defaults; the user's environment wins
    defaults: dict[str, str | int] = Field(default_factory=dict)  # for OPTIONAL_KEYS
    cpu_defaults: dict[str, str | int] = Field(default_factory=dict)  # the same, only when no GPU is asked for
    # the model name the API expects, when the engine cannot be told one (a template, e.g.
    # "{model}": transformers serve answers only to the path it was started with)
    served_name: str | None = None


class CpuDtype(_Strict):
    """Weights dtype on a CPU-only host (servebench.engines.hostcpu): `fast` where the CPU has native
    bf16 (AVX512_BF16 / AMX), else `fallback`. A user-given flag always wins."""

    flag: str  # e.g. --dtype
    fast: str = "bfloat16"
    fallback: str = "float32"
    slow_path_log: list[str] = Field(default_factory=list)  # server-log text that means a slow CPU path


class ProcessSpec(CommandSpec):
    pass


class DockerSpec(CommandSpec):
    image: str
    tag: str
    port: int  # the port the server listens on inside the container
    shm_size: str | None = None
    ipc_mode: str | None = None
    hf_cache: str = "/root/.cache/huggingface"  # where the host HF cache is mounted
    model_mount: str = "/model"  # a local model directory is mounted here (read-only)


class SageMakerSpec(_Strict):
    image_uri: str  # `{region}` is filled in
    env: dict[str, str] = Field(default_factory=dict)
    # launcher option -> container env var
    option_env: dict[str, str] = Field(default_factory=dict)


class EngineSpec(_Strict):
    name: str
    description: str = ""
    adapter: str  # default key in servebench.adapters.ADAPTERS
    adapters: list[str]  # every adapter that speaks to this engine (the default included)
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    # POST here empties the prefix cache, so a server reused across load points never serves
    # a prefix cached by an earlier one (vLLM /reset_prefix_cache, SGLang /flush_cache)
    cache_reset_path: str | None = None
    flags: Flags = Field(default_factory=Flags)
    front_door: FrontDoor | None = None
    output_length: OutputLength
    passthrough_env: list[str] = Field(default_factory=list)  # copied from the user's env if set
    # extra request fields per adapter, e.g. vLLM's return_token_ids: exact tokens per chunk
    request_extra: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics: dict[str, list[str]] = Field(default_factory=dict)  # common name -> engine names
    cpu_dtype: CpuDtype | None = None  # process launcher on a GPU-less host (servebench.engines.hostcpu)
    # "gguf": the engine loads one GGUF file; the process launcher converts a model dir (a preset)
    # with servebench.engines.gguf_export, the `quantize` option naming the GGUF type (f16, q8_0, ...)
    model_format: Literal["hf", "gguf"] = "hf"
    # the engine loads only a local directory holding config.json (LightLLM's --model_dir): a hub
    # id is resolved to its snapshot in the HF cache (resolve_local_model), or refused before start
    model_dir_only: bool = False
    process: ProcessSpec | None = None
    docker: DockerSpec | None = None
    sagemaker: SageMakerSpec | None = None
    source: str = ""  # the file it was loaded from, filled by load_spec

    @model_validator(mode="after")
    def _default_adapter_listed(self) -> "EngineSpec":
        if self.adapter not in self.adapters:
            raise ValueError(f"default adapter {self.adapter!r} is not in adapters {self.adapters}")
        if self.front_door is not None and self.flags.max_concurrent_requests is None:
            raise ValueError("front_door needs flags.max_concurrent_requests (the flag that raises the cap)")
        stray = sorted(set(self.request_extra) - set(self.adapters))
        if stray:
            raise ValueError(f"request_extra names adapters not in adapters: {', '.join(stray)}")
        return self


def spec_names() -> list[str]:
    return sorted(p.parent.name for p in BACKENDS_DIR.glob("*/spec.yaml"))


def load_spec(name_or_path: str | Path) -> EngineSpec:
    """An engine name in backends/ ("vllm"), or the path of a spec YAML file."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = BACKENDS_DIR / text / "spec.yaml"
        if not path.is_file():
            raise SpecError(f"unknown engine {text!r} (known: {', '.join(spec_names())}; or pass a spec.yaml path)")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpecError(f"cannot read spec {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"spec {path} is not valid YAML: {first_line(e)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec {path} must be a YAML mapping")
    try:
        return EngineSpec.model_validate({**data, "source": str(path)})
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'spec'}: {x['msg']}" for x in e.errors())
        raise SpecError(f"invalid spec {path}: {errs}") from None


def render_command(
    spec: EngineSpec,
    section: CommandSpec,
    values: dict[str, Any],
    *,
    gpus: list[int] | None = None,
    options: dict[str, Any] | None = None,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The argv for `section`: template + optional flags + the user's extra args (last, so an
    argparse-based engine lets them override anything servebench set)."""
    try:
        argv = [a.format_map(values) for a in section.command + section.args]
    except (KeyError, IndexError, ValueError) as e:
        keys = ", ".join("{%s}" % k for k in TEMPLATE_KEYS)
        raise SpecError(f"spec {spec.name}: bad template in command ({e!r}); known: {keys}") from None
    if gpus:
        if spec.flags.gpus is None:
            if len(gpus) > 1:
                raise SpecError(f"{spec.name} has no flag for running on several GPUs")
        else:
            argv += [spec.flags.gpus, str(len(gpus))]
    opts = {**section.defaults, **({} if gpus else section.cpu_defaults),
            **{k: v for k, v in (options or {}).items() if v is not None}}
    if spec.model_format == "gguf":
        opts.pop("quantize", None)  # the GGUF type is in the file (ProcessLauncher._model_file)
    for key in OPTIONAL_KEYS:
        if key not in opts:
            continue
        flag = getattr(spec.flags, key)
        if flag is None:
            raise SpecError(f"{spec.name} has no flag for {key} (spec {spec.source})")
        known = spec.flags.quantize_values
        if key == "quantize" and known and opts[key] not in known:
            raise SpecError(f"{spec.name} does not know quantization {opts[key]!r} (known: {', '.join(known)})")
        argv += [flag, str(opts[key])]
    return argv + list(extra_args or [])


def resolve_local_model(spec: EngineSpec, model: str, cache: Path) -> Path | None:
    """For a `model_dir_only` engine: None when `model` is a local directory already (or the
    engine loads hub ids itself), else the hub id's snapshot directory under `cache`; SpecError
    when there is none, so a launch stops before anything is pulled or started."""
    if not spec.model_dir_only or Path(model).expanduser().is_dir():
        return None
    snap = cached_snapshot(model, cache)
    if snap is None:
        raise SpecError(f"{spec.name} loads only a local model directory with config.json; {model!r} is neither a "
                        f"directory nor in the HF cache {cache / 'hub'}: download it first "
                        f"(huggingface-cli download {model}) or pass its directory")
    return snap
