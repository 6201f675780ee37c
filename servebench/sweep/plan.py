"""What to run: a sweep config expanded into server groups (one launch each) and their cells
(one load point each). Pure data; executors decide where and when it runs.

Cell seeds depend on the load point and repeat, never on the server: every engine gets
byte-identical prompts at a given level, and two levels on one reused server never share a
prompt (so no level is served from a prefix cached by the one before)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from servebench.config import RunConfig
from servebench.sweep.config import ServerPoint, SweepConfig, SweepConfigError, servers

SEED_STRIDE = 1000  # seeds of consecutive load points are this far apart; repeats step by 1


@dataclass(frozen=True, slots=True)
class LoadPoint:
    mode: str  # burst | concurrency | rate | trace
    concurrency: int | None
    rate: float | None
    requests: int | None  # None: a trace's whole window
    duration_s: float | None
    input_tokens: int | str  # a number or a distribution
    output_tokens: int | str
    repeat: int
    seed: int
    speed: float | None = None  # a trace replayed this many times faster

    @property
    def key(self) -> str:
        if self.mode == "concurrency":
            return f"c{self.concurrency:04d}"
        if self.mode == "rate":
            return f"rate{self.rate:g}"
        return f"trace{self.speed:g}" if self.mode == "trace" else "burst"

    @property
    def level(self) -> str:
        """How a person reads the point: 'c=4', 'rate=2/s', 'trace x2', 'burst'."""
        if self.mode == "concurrency":
            return f"c={self.concurrency}"
        if self.mode == "trace":
            return f"trace x{self.speed:g}"
        return f"rate={self.rate:g}/s" if self.mode == "rate" else "burst"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["speed"] is None:  # indexes written before traces had no speed: they still line up
            del d["speed"]
        return d


@dataclass(slots=True)
class Cell:
    id: str
    group: str
    load: LoadPoint
    search: bool = False  # made by a find-the-limit search, not by the config

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "load": self.load.as_dict(), "search": self.search}


@dataclass(slots=True)
class Group:
    id: str
    server: ServerPoint
    cells: list[Cell] = field(default_factory=list)

    def server_dict(self) -> dict[str, Any]:
        d = self.server.model_dump(mode="json")
        d["label"] = self.server.label
        d["gpu_count"] = self.server.n_gpus
        return d


@dataclass(slots=True)
class Plan:
    config: SweepConfig
    groups: list[Group]

    @property
    def cells(self) -> list[Cell]:
        return [c for g in self.groups for c in g.cells]


def load_points(cfg: SweepConfig) -> list[LoadPoint]:
    ld = cfg.load
    if ld.trace is not None:
        return [LoadPoint("trace", None, None, ld.trace_requests, ld.duration_s, ld.input_tokens, ld.output_tokens, rep,
                          seed=ld.seed + 1 + i * SEED_STRIDE + rep, speed=float(k))
                for i, k in enumerate(ld.trace.speed) for rep in range(ld.repeats)]
    shapes: list[tuple[str, int | None, float | None]] = [("concurrency", c, None) for c in ld.concurrency]
    shapes += [("rate", None, r) for r in ld.rate]
    if ld.burst:
        shapes.append(("burst", None, None))
    return [
        LoadPoint(mode, c, r, ld.requests, ld.duration_s, ld.input_tokens, ld.output_tokens, rep,
                  seed=ld.seed + 1 + i * SEED_STRIDE + rep)
        for i, (mode, c, r) in enumerate(shapes)
        for rep in range(ld.repeats)
    ]


def search_point(cfg: SweepConfig, level: float, repeat: int, by: str = "concurrency") -> LoadPoint:
    """A search level's load: enough requests to hold the level (2 per stream at least)."""
    ld = cfg.load
    # its own prompts, apart from the config's levels and from its other repeats
    seed = ld.seed + 10_000_000 * (1 + repeat) + int(level * 1000)
    if by == "speed":
        return LoadPoint("trace", None, None, ld.trace_requests, ld.duration_s, ld.input_tokens, ld.output_tokens,
                         repeat, seed, speed=float(level))
    n = max(ld.requests, 2 * int(level)) if by == "concurrency" else ld.requests
    if by == "rate":
        return LoadPoint("rate", None, float(level), n, ld.duration_s, ld.input_tokens, ld.output_tokens, repeat, seed)
    return LoadPoint("concurrency", int(level), None, n, ld.duration_s, ld.input_tokens, ld.output_tokens, repeat, seed)


def expand(cfg: SweepConfig) -> Plan:
    groups = []
    points = load_points(cfg)
    for gi, server in enumerate(servers(cfg)):
        gid = f"g{gi:02d}"
        cells = [Cell(f"{gid}-{p.key}-r{p.repeat}", gid, p) for p in points]
        groups.append(Group(gid, server, cells))
    _check_labels(groups)
    return Plan(cfg, groups)


def _check_labels(groups: list[Group]) -> None:
    """Tables, winners and reports key rows by label: two groups sharing one would share a row's
    bold and be told apart by nothing."""
    seen: dict[str, str] = {}
    for g in groups:
        first = seen.setdefault(g.server.label, g.id)
        if first != g.id:
            raise SweepConfigError(f"server groups {first} and {g.id} are both labelled {g.server.label!r}: give "
                                   "them different names (a server's `name:`)")


def only(plan: Plan, expr: str | None) -> Plan:
    """Keep cells matching every `key=value` in expr (server fields, group, cell id, mode,
    concurrency, rate); ids stay those of the full plan, so resume still lines up."""
    if not expr:
        return plan
    want: dict[str, str] = {}
    for part in expr.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SweepConfigError(f"--only expects key=value[,key=value], got {part!r}")
        want[key.strip()] = value.strip()

    def fields(g: Group, c: Cell) -> dict[str, Any]:
        d = {**g.server_dict(), **asdict(c.load)}
        d.update(group=g.id, cell=c.id, id=c.id)
        return d

    known = set(fields(plan.groups[0], plan.groups[0].cells[0])) if plan.cells else set()
    bad = sorted(set(want) - known)
    if bad:
        raise SweepConfigError(f"--only: unknown key(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    groups = []
    for g in plan.groups:
        cells = [c for c in g.cells if all(_matches(fields(g, c)[k], v) for k, v in want.items())]
        if cells:
            groups.append(Group(g.id, g.server, cells))
    return Plan(plan.config, groups)


def _matches(have: Any, want: str) -> bool:
    """A number compares as a number: rate=2 selects the rate 2.0 the config's `rate: [2]` made."""
    if isinstance(have, (int, float)) and not isinstance(have, bool):
        try:
            return float(want) == float(have)
        except ValueError:
            return False
    return str(have) == want


def run_config(cfg: SweepConfig, server: ServerPoint, load: LoadPoint, runs_dir: Path, name: str) -> RunConfig:
    """The ordinary run configuration of one cell."""
    opts = dict(server.launcher_options)
    if server.quantization:
        opts.setdefault("quantize", server.quantization)
    if server.instance_type:  # what a SageMaker launch needs; a label elsewhere
        opts.setdefault("instance_type", server.instance_type)
    if server.gpu_count and not server.gpus and server.launcher == "sagemaker":
        opts.setdefault("num_gpus", str(server.gpu_count))
    ld = cfg.load
    return RunConfig(
        backend=server.engine, model=server.model, served_model_name=server.served_model_name,
        endpoint=server.endpoint, launcher=server.launcher, api=server.api, gpus=server.gpus,
        server_args=list(server.server_args), launcher_options=opts, env=dict(server.env), results_dir=runs_dir, name=name,
        telemetry=cfg.telemetry, plots=cfg.plots, steady_state=cfg.steady_state, max_error_rate=ld.max_error_rate,
        load=dict(concurrency=load.concurrency, rate=load.rate, arrival=ld.arrival,
                  duration_s=load.duration_s, warmup=ld.warmup, seed=load.seed,
                  request_timeout_s=ld.request_timeout_s, **({"requests": load.requests} if load.requests else {})),
        workload=dict(input_tokens=load.input_tokens, output_tokens=load.output_tokens,
                      max_input_tokens=ld.max_input_tokens, max_output_tokens=ld.max_output_tokens,
                      prompts_file=ld.prompts_file, tokenizer=server.tokenizer, trace=_trace(cfg, load),
                      sessions=ld.sessions.model_dump() if ld.sessions else None),
    )


def _trace(cfg: SweepConfig, load: LoadPoint) -> dict | None:
    """The cell's trace replay (run's --trace options), at the cell's speed."""
    t = cfg.load.trace
    if t is None or load.mode != "trace":
        return None
    return dict(source=t.source, format=t.format, columns=t.columns, speed=load.speed, window=t.run_window,
                requests=load.requests, scale_lengths=t.scale_lengths)


def launch_commands(cfg: SweepConfig, expr: str | None = None) -> list[str]:
    """Per group, what its launch would run (`sweep --dry-run --show-commands`); nothing starts."""
    from servebench.launchers.dryrun import describe
    from servebench.run.frontdoor import launch_options

    out = []
    for g in only(expand(cfg), expr).groups:
        rc = run_config(cfg, g.server, g.cells[0].load, Path(cfg.results_dir), g.id) if g.cells else None
        opts = launch_options(rc, group_in_flight(cfg, g)) if rc else {}
        out += [f"# {g.id} {g.server.label}", describe(rc, opts) if rc else "(no cells)"]
    return out


def group_in_flight(cfg: SweepConfig, group: Group, more: tuple[LoadPoint, ...] = ()) -> int:
    """The most requests any load of the group (and `more`: a limit search's top) can have in
    flight; its server is launched once for all of them (run.frontdoor)."""
    from servebench.run.frontdoor import most_in_flight

    most = 1
    for ld in [c.load for c in group.cells] + list(more):
        try:
            most = max(most, most_in_flight(run_config(cfg, group.server, ld, Path("."), "probe")))
        except ValueError:  # a cell whose configuration does not build fails by itself, in one line
            continue
    return most


def check_load(cfg: SweepConfig) -> None:
    """The workload every cell sends, read once before any server starts: a trace that does not
    parse or a length file that is missing is one line now, not a failed cell per server."""
    from servebench.load import lengths, traces

    ld = cfg.load
    try:
        if ld.trace is not None:
            traces.load_trace(ld.trace.source, ld.trace.format, ld.trace.columns)
        else:
            if ld.sessions is not None and ld.sessions.source != "synthetic":
                from servebench.load.sessions import read_file

                read_file(Path(ld.sessions.source).expanduser(), ld.sessions.turns)
            lengths.parse_length(ld.input_tokens, "load.input_tokens", "input")
            lengths.parse_length(ld.output_tokens, "load.output_tokens", "output")
    except (ValueError, OSError) as e:
        raise SweepConfigError(str(e).splitlines()[0]) from None


def limit_by(cfg: SweepConfig, asked: str | None) -> str:
    """What --max-load-under searches: a trace's speed, else concurrency (or --limit-by)."""
    if cfg.load.trace is not None:
        if asked not in (None, "speed"):
            raise SweepConfigError(f"--limit-by {asked}: a trace load is searched by its speed (--limit-by speed)")
        return "speed"
    if asked == "speed":
        raise SweepConfigError("--limit-by speed needs a trace load (load.trace in the config)")
    return asked or "concurrency"


_SEARCHED_BY = {"concurrency": "concurrency", "rate": "rate", "trace": "speed"}


def search_point_now(cfg: SweepConfig, load: dict) -> LoadPoint | None:
    """The load a limit search would give the probe cell whose load was `load`, under the
    config as it is now (None: not a load a search makes)."""
    by = _SEARCHED_BY.get(load.get("mode"))  # also the load's key holding the level
    level = load.get(by) if by else None
    return None if level is None else search_point(cfg, level, int(load.get("repeat") or 0), by)
