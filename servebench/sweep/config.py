"""Sweep configuration: server parameters (one launch each) apart from load parameters (the
points measured against every server). Validated once here; a bad file is one line naming
the field and its line in the YAML."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from servebench.sweep.assumptions import Assumption
from servebench.sweep.loadspace import LoadSpace, TraceLoad, _Strict

__all__ = ["LoadSpace", "TraceLoad", "ServerPoint", "SweepConfig", "SweepConfigError", "load_config", "server_point", "servers"]


class SweepConfigError(ValueError):
    """A sweep config cannot be used (message is one line)."""


class ServerPoint(_Strict):
    """One server configuration. `hardware` and `instance_type` are labels for cost and
    reports (and, on Ray, resources to place the server on); the launcher acts on the rest."""

    engine: str  # a name in backends/ or a spec.yaml path
    name: str | None = None  # display name; default: engine/model/quantization/hardware (+ args)
    model: str = "tiny"
    quantization: str | None = None
    launcher: str = "process"
    endpoint: str | None = None  # a server already up: nothing launched
    gpus: list[int] | None = None
    gpu_count: int | None = Field(None, ge=0)  # label when gpus are not pinned (SageMaker, Ray)
    hardware: str | None = None  # e.g. cpu, a10g, a100-40gb, a800-80gb
    instance_type: str | None = None  # e.g. ml.g5.12xlarge
    server_args: list[str] = Field(default_factory=list)
    launcher_options: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)  # the server's environment, e.g. NCCL_P2P_DISABLE: "1"
    served_model_name: str | None = None
    tokenizer: str | None = None
    api: str | None = None
    resources: dict[str, float] = Field(default_factory=dict)  # executor placement hints

    @field_validator("launcher_options")
    @classmethod
    def _option_seconds(cls, v: dict[str, str]) -> dict[str, str]:
        from servebench.config import check_seconds

        return check_seconds(v)

    @field_validator("quantization", mode="before")
    @classmethod
    def _none(cls, v: Any) -> Any:
        return None if v in ("none", "None", "", False) else v

    @field_validator("launcher_options", mode="before")
    @classmethod
    def _str_values(cls, v: Any) -> Any:
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        from servebench.config import check_endpoint

        return check_endpoint(v) if v is not None else v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        from servebench.config import check_env

        return check_env(v) if isinstance(v, dict) else v

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        from servebench.decide.names import engine_name

        # backends/<engine>/spec.yaml reads as <engine>, not as "spec" for every such engine
        parts = [engine_name(self.engine), self.model]
        if self.quantization:
            parts.append(self.quantization)
        if self.instance_type:
            parts.append(self.instance_type)
        elif self.hardware:
            parts.append(self.hardware + (f"x{self.n_gpus}" if self.n_gpus > 1 else ""))
        label = "/".join(parts)
        return f"{label} {' '.join(self.server_args)}" if self.server_args else label

    @property
    def n_gpus(self) -> int:
        if self.gpu_count is not None:
            return self.gpu_count
        return len(self.gpus) if self.gpus else 0


class RayOptions(_Strict):
    """Placement and fault handling when the sweep runs on a Ray cluster (--executor ray);
    CLI options beat these. Ignored by the local executor."""

    address: str | None = None  # auto | ray://HOST:10001 | HOST:6379; none: a local one-node Ray
    results_shared: Path | None = None  # a results_dir every node mounts at this path: nodes write there
    max_retries: int = Field(2, ge=0)  # re-runs of a group's unfinished cells after its node was lost
    num_cpus: float = Field(1.0, gt=0)  # CPUs the load generator of one group takes on its node
    accelerator_types: dict[str, str] = Field(default_factory=dict)  # hardware label -> Ray accelerator_type
    cancel_grace_s: float = Field(60.0, gt=0)  # after Ctrl-C, time for remote teardown before force-kill


class SweepConfig(_Strict):
    name: str
    description: str = ""
    results_dir: Path = Path("results")
    defaults: dict[str, Any] = Field(default_factory=dict)  # ServerPoint fields shared by all
    # ServerPoint fields, crossed; a list item that is a mapping sets several fields together
    # (model: [{model: X-GPTQ, quantization: gptq}, ...])
    matrix: dict[str, list[Any]] = Field(default_factory=dict)
    servers: list[dict[str, Any]] = Field(default_factory=list)  # explicit servers (over defaults)
    exclude: list[dict[str, Any]] = Field(default_factory=list)  # drop crossed servers matching all keys
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-engine ServerPoint fields
    load: LoadSpace = Field(default_factory=LoadSpace)
    telemetry: bool = True
    plots: bool = False  # per-cell timelines cost seconds each; the sweep report draws its own
    steady_state: bool = False  # every cell's metrics over its steady-state window (run --steady-state)
    reset_cache: bool = True  # between load points on one server, where the engine allows
    # runs pooled at each boundary level of a --max-load-under search (docs/sweep.md)
    limit_repeats: int = Field(3, ge=1, le=50)
    ray: RayOptions = Field(default_factory=RayOptions)
    # values the reproduced study does not state, marked as servebench's choice (sweep/assumptions.py)
    assumptions: list[Assumption] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9._-]+", v):
            raise ValueError("name may hold only letters, digits, '.', '_' and '-'")
        return v

    @field_validator("matrix")
    @classmethod
    def _known_keys(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        fields = set(ServerPoint.model_fields)
        unknown = sorted(k for k, xs in v.items() if k not in fields and not all(isinstance(x, dict) for x in xs))
        unknown += sorted({f"{k}.{f}" for k, xs in v.items() for x in xs if isinstance(x, dict) for f in x} - {
            f"{k}.{f}" for k in v for f in fields})
        if unknown:
            raise ValueError(f"unknown server field(s) {', '.join(unknown)} (known: {', '.join(ServerPoint.model_fields)})")
        empty = [k for k, xs in v.items() if not xs]
        if empty:
            raise ValueError(f"empty list for {', '.join(empty)}")
        return v

    @model_validator(mode="after")
    def _some_server(self) -> "SweepConfig":
        if not self.matrix and not self.servers:
            raise ValueError("no servers: give `matrix:` (crossed) and/or `servers:` (a list)")
        return self

    @field_validator("assumptions")
    @classmethod
    def _assumed_fields_exist(cls, v: list[Assumption], info: ValidationInfo) -> list[Assumption]:
        from servebench.sweep import assumptions

        return assumptions.check(v, info.data)  # every field but this one is validated by now

    def assumption_lines(self) -> list[str]:
        from servebench.sweep import assumptions

        return assumptions.lines(self.assumptions, self.model_dump(mode="json"))


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> tuple[SweepConfig, str]:
    """(config, its text). Errors name the file, the field and its line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SweepConfigError(f"cannot read sweep config {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SweepConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise SweepConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise SweepConfigError(f"{path}: a sweep config is a YAML mapping")
    data.setdefault("name", path.stem)
    data.update(overrides or {})
    _files_beside(data, path.parent)
    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-"))]
        loc += getattr((err.get("ctx") or {}).get("error"), "loc", [])  # a validator that knows the item
        where = ".".join(map(str, loc)) or "config"
        line = _line_of(root, loc)
        at = f" (line {line})" if line else ""
        raise SweepConfigError(f"{path}: {where}{at}: {err['msg'].removeprefix('Value error, ')}") from None
    _check_servers(cfg, path, root)
    return cfg, text


def _files_beside(data: dict[str, Any], where: Path) -> None:
    """A relative `empirical:FILE` length mix that is not found from the working directory is
    taken from beside the config, so a study that ships its lengths runs from anywhere."""
    load = data.get("load")
    for key in ("input_tokens", "output_tokens"):
        spec = load.get(key) if isinstance(load, dict) else None
        if isinstance(spec, str) and spec.startswith("empirical:"):
            file = Path(spec.removeprefix("empirical:"))
            if not file.is_absolute() and not file.exists() and (where / file).exists():
                rel = os.path.relpath(where / file)
                load[key] = f"empirical:{(where / file).resolve() if rel.startswith('..') else rel}"


def _line_of(node, loc: list) -> int | None:
    """The 1-based line of the YAML node at `loc`, or of its nearest existing parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node, line = nxt, nxt.start_mark.line + 1
    return line


class ServerError(SweepConfigError):
    """One server of the config is invalid; `loc` is its path in the YAML (for the line)."""

    def __init__(self, where: str, field: str, msg: str, loc: list) -> None:
        super().__init__(f"{where}: {field}: {msg}")
        self.where, self.field, self.msg, self.loc = where, field, msg, loc


def server_point(data: dict[str, Any], where: str, loc: tuple = ()) -> ServerPoint:
    try:
        return ServerPoint.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ServerError(where, ".".join(map(str, err["loc"])) or "server", err["msg"].removeprefix("Value error, "),
                          [*loc, *err["loc"]]) from None


def _check_servers(cfg: SweepConfig, path: Path, root) -> None:
    """Each server as the plan will build it: an error names the file and line, and an
    `exclude` that leaves nothing is said as such (it used to read "--only None matches no cell")."""
    try:
        found = servers(cfg)
    except ServerError as e:
        line = _line_of(root, e.loc)
        raise SweepConfigError(f"{path}: {e.where}: {e.field}{f' (line {line})' if line else ''}: {e.msg}") from None
    if not found:
        line = _line_of(root, ["exclude"])
        raise SweepConfigError(f"{path}: exclude{f' (line {line})' if line else ''}: removes every server of "
                               "the matrix, and no `servers:` are listed: nothing to run")


def servers(cfg: SweepConfig) -> list[ServerPoint]:
    """The crossed matrix (minus exclusions) then the explicit list; duplicates dropped."""
    out: list[ServerPoint] = []
    keys = list(cfg.matrix)
    for i, combo in enumerate(itertools.product(*(cfg.matrix[k] for k in keys)) if keys else []):
        point: dict[str, Any] = {}
        for k, v in zip(keys, combo):  # a mapping is a bundle of fields that vary together
            point.update(v) if isinstance(v, dict) else point.__setitem__(k, v)
        if any(all(_same(point.get(k, cfg.defaults.get(k)), v) for k, v in ex.items()) for ex in cfg.exclude):
            continue
        out.append(_merge(cfg, point, f"matrix combination {i + 1} ({point})", ("matrix",)))
    for i, s in enumerate(cfg.servers):
        out.append(_merge(cfg, s, f"servers[{i}]", ("servers", i)))
    unique: list[ServerPoint] = []
    for s in out:
        if s not in unique:
            unique.append(s)
    return unique


def _same(a: Any, b: Any) -> bool:
    none = (None, "none", "None", "")
    return (a in none and b in none) or a == b


def _merge(cfg: SweepConfig, point: dict[str, Any], where: str, loc: tuple = ()) -> ServerPoint:
    engine = point.get("engine", cfg.defaults.get("engine"))
    data = {**cfg.defaults, **cfg.engines.get(str(engine), {}), **point}
    return server_point(data, where, loc)
