"""`servebench sweep CONFIG.yaml` and `servebench compare --backends a,b,c`: both expand to a
plan of server groups and cells, run it with an executor, and keep an index that makes the
sweep resumable. compare is a one-workload sweep with a table per load level."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import click

from servebench.sweep import console as out
from servebench.sweep.config import SweepConfig, SweepConfigError, load_config
from servebench.sweep.index import ResultsRefused


def _fail(msg: str, code: int = 1):
    click.echo(f"error: {msg}", err=True)
    raise SystemExit(code)


@dataclass(slots=True)
class Execution:
    """How execute() runs a plan: which cells, resumed or dry, a limit search, the executor."""

    only: str | None = None
    resume: bool = False
    dry_run: bool = False
    slo: str | None = None
    limit_by: str | None = None  # None: speed for a trace load, else concurrency
    max_level: float = 256
    limit_repeats: int | None = None  # None: the config's limit_repeats
    executor: str = "local"
    executor_options: dict = field(default_factory=dict)
    show_commands: bool = False  # with dry_run: each group's exact launch


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan (servers, cells, time estimate) and stop.")
@click.option("--resume", is_flag=True, help="Continue the sweep in its directory: finished cells are kept, failed and interrupted ones run again.")
@click.option("--only", default=None, help="Only cells matching key=value[,key=value] (engine=vllm, concurrency=4, group=g01, ...).")
@click.option("--results-dir", default=None, type=click.Path(path_type=Path), help="Default: the config's results_dir (results).")
@click.option("--name", default=None, help="Sweep name (its directory); default: the config's name.")
@click.option("--max-load-under", "slo", default=None, help='Find the highest load meeting an SLO, e.g. "ttft_p99<=500ms,tpot_p50<=50ms".')
@click.option("--limit-by", default=None, type=click.Choice(["concurrency", "rate", "speed"]),
              help="What the limit search varies [default: speed for a trace load (--trace-speed), else concurrency].")
@click.option("--max-level", default=256, show_default=True, type=float, help="Upper bound of the limit search.")
@click.option("--limit-repeats", default=None, type=click.IntRange(min=1, max=50),
              help="Runs pooled at each boundary level of the limit search [default: the config's limit_repeats, 3].")
@click.option("--executor", default="local", show_default=True, help="Where groups run: local (or ray, when installed).")
@click.option("--address", default=None, help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 (--executor ray; default: a new local Ray).")
@click.option("--results-shared", default=None, type=click.Path(path_type=Path),
              help="A results dir every Ray node mounts at this same path: nodes write run dirs there (also sets --results-dir).")
@click.option("--max-retries", default=None, type=click.IntRange(min=0), help="Re-runs of a group whose node was lost (--executor ray; default 2).")
@click.option("--show-commands", is_flag=True, help="With --dry-run: each group's docker/process command or SageMaker configuration.")
def sweep(config: Path, results_dir: Path | None, name: str | None, address: str | None,
          results_shared: Path | None, max_retries: int | None, **run) -> None:
    """Run a matrix of server configurations x load points from a YAML config."""
    ray_opts = {k: v for k, v in (("address", address), ("results_shared", results_shared),
                                  ("max_retries", max_retries)) if v is not None}
    if ray_opts and run["executor"] != "ray":
        _fail(f"--{next(iter(ray_opts)).replace('_', '-')} applies to --executor ray", 2)
    if results_shared is not None:
        if results_dir is not None and results_dir.resolve() != results_shared.resolve():
            _fail("--results-shared and --results-dir name different directories", 2)
        results_dir = results_shared
    overrides = {k: v for k, v in (("results_dir", results_dir), ("name", name)) if v is not None}
    try:
        cfg, text = load_config(config, overrides)
    except SweepConfigError as e:
        _fail(str(e), 2)
    ex = Execution(**run, executor_options=ray_opts)
    execute(cfg, text, "sweep", Path(cfg.results_dir) / cfg.name, ex)
    if ex.dry_run and ex.show_commands:
        from servebench.sweep.plan import launch_commands

        for line in launch_commands(cfg, ex.only):
            click.echo(line)


def _csv(value: str | None, cast=str) -> list:
    if not value:
        return []
    try:
        return [cast(x.strip()) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None


@click.command()
@click.option("--backends", required=True, help="Engines to compare, e.g. vllm,transformers,llamacpp.")
@click.option("--model", default="tiny", show_default=True)
@click.option("--concurrency", default=None, help="Closed-loop levels, e.g. 1,4,16.")
@click.option("--rate", default=None, help="Open-loop rates (req/s), e.g. 2,4,8.")
@click.option("--requests", default=100, show_default=True, type=int)
@click.option("--duration", default=None, type=float, help="Stop releasing requests after S seconds per level.")
@click.option("--input-tokens", default=512, show_default=True, type=int)
@click.option("--output-tokens", default=128, show_default=True, type=int)
@click.option("--warmup", default=2, show_default=True, type=int)
@click.option("--repeats", default=1, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--launcher", default="process", show_default=True)
@click.option("--gpus", default=None, help="GPU indices, e.g. 0,1.")
@click.option("--quantization", default=None, help="Same quantization for every engine (its own flag).")
@click.option("--endpoint", "endpoints", default=None, help="Servers already up: engine=URL[,engine=URL].")
@click.option("--server-arg", "server_args", multiple=True, metavar="ENGINE=ARG", help="Extra argument for one engine (repeatable).")
@click.option("--results-dir", default="results", show_default=True, type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Directory name (default: <time>-compare-<engines>).")
@click.option("--no-telemetry", is_flag=True)
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Environment variable for every server (repeatable).")
def compare(**opts) -> None:
    """One workload against several engines, each launched once, side by side."""
    o = CompareOptions(**opts)
    servers = o.servers()
    from servebench.decide.names import engine_name

    short = [engine_name(e) for e in o.engines]
    name = o.name or f"{time.strftime('%Y%m%d-%H%M%S')}-compare-{'-'.join(short)}"
    data = {"name": name, "results_dir": str(o.results_dir), "servers": servers, "telemetry": not o.no_telemetry,
            "load": {"concurrency": _csv(o.concurrency, int), "rate": _csv(o.rate, float), "requests": o.requests,
                     "duration_s": o.duration, "input_tokens": o.input_tokens, "output_tokens": o.output_tokens,
                     "warmup": o.warmup, "repeats": o.repeats, "seed": o.seed}}
    from pydantic import ValidationError

    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))  # empty for a check across options: the message names them
        _fail(f"{f'invalid option {where}: ' if where else ''}{err['msg'].removeprefix('Value error, ')}", 2)
    import yaml

    execute(cfg, yaml.safe_dump(data, sort_keys=False), "compare", Path(o.results_dir) / name)


@dataclass(slots=True)
class CompareOptions:
    """compare's options, as click gives them (comma lists still text)."""

    backends: str
    model: str
    concurrency: str | None
    rate: str | None
    requests: int
    duration: float | None
    input_tokens: int
    output_tokens: int
    warmup: int
    repeats: int
    seed: int
    launcher: str
    gpus: str | None
    quantization: str | None
    endpoints: str | None
    server_args: tuple[str, ...]
    results_dir: Path
    name: str | None
    no_telemetry: bool
    env: tuple[str, ...] = ()

    @property
    def engines(self) -> list[str]:
        return _csv(self.backends)

    def servers(self) -> list[dict]:
        """One server entry per engine: launched, or external where --endpoint names one."""
        engines = self.engines
        eps = dict(_pair(x, "--endpoint") for x in _csv(self.endpoints))
        extra: dict[str, list[str]] = {}
        for x in self.server_args:
            eng, arg = _pair(x, "--server-arg")
            extra.setdefault(eng, []).append(arg)
        unknown = sorted((set(eps) | set(extra)) - set(engines))
        if unknown:
            _fail(f"--endpoint/--server-arg name engine(s) not in --backends: {', '.join(unknown)}", 2)
        servers = []
        for eng in engines:
            s = {"engine": eng, "model": self.model, "launcher": "external" if eng in eps else self.launcher,
                 "gpus": _csv(self.gpus, int) or None, "quantization": self.quantization,
                 "server_args": extra.get(eng, []),
                 "env": dict(x.split("=", 1) if "=" in x else _fail(f"--env: expected NAME=VALUE, got {x!r}", 2)
                             for x in self.env)}
            if eng in eps:
                s["endpoint"] = eps[eng]
            servers.append(s)
        return servers


def _pair(text: str, opt: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value:
        raise click.BadParameter(f"expected ENGINE=VALUE, got {text!r}", param_hint=opt)
    return key.strip(), value


def execute(cfg: SweepConfig, text: str, kind: str, sweep_dir: Path, how: Execution | None = None) -> None:
    from servebench.sweep import plan as planning
    from servebench.sweep.executor import EXECUTORS, ExecutorError
    from servebench.sweep.group import LimitSpec

    how = how or Execution()
    only = how.only
    console = out.stderr_console()
    try:
        full = planning.expand(cfg)
        sub = planning.only(full, only)
        planning.check_load(cfg)
        limit = LimitSpec(how.slo, planning.limit_by(cfg, how.limit_by), max_level=how.max_level,
                          repeats=how.limit_repeats or cfg.limit_repeats) if how.slo else None
    except (SweepConfigError, ValueError) as e:
        _fail(str(e), 2)
    if limit is not None:  # the search replaces the config's load points
        full = planning.Plan(cfg, [planning.Group(g.id, g.server, []) for g in full.groups])
        sub = planning.Plan(cfg, [planning.Group(g.id, g.server, []) for g in sub.groups])
    if not sub.groups:
        _fail(f"--only {only!r} matches no cell" if only else "the config gives no server to run", 2)
    if how.executor not in EXECUTORS:
        _fail(_executor_hint(how.executor), 2)
    _check_servers(sub, local=how.executor == "local")
    if how.dry_run:
        out.print_plan(sub, sweep_dir, limit, console)
        return
    exists = (sweep_dir / "index.json").exists()
    if exists and not how.resume:
        _fail(f"{sweep_dir} already holds a sweep: --resume to continue it, or --name for a new one", 2)
    index = _open_index(sweep_dir, exists, kind, cfg, full, text)
    todo = index.todo(sub) if limit is None else index.to_search(sub, limit)
    done_before = index.counts().get("done", 0)
    if done_before:
        console.print(f"resuming {sweep_dir}: {done_before} cell(s) done are kept")
    from servebench.signals import interruptible, shielded

    interruptible()
    interrupted = False
    with ExitStack() as answering:
        try:
            EXECUTORS[how.executor](**how.executor_options).run(todo, index, lambda m: console.print(m, markup=False), limit)
        except KeyboardInterrupt:
            # stopped: the index, reports and exit line are the answer, and a second Ctrl-C is
            # held until they are written (as `run` does: servebench/cli.py _answering)
            answering.enter_context(shielded(lambda sig: os.write(2, b"interrupt held: the sweep is already stopping\n"),
                                             deliver=False))
            interrupted = True
        except ExecutorError as e:
            index.save()
            _fail(str(e), 2)
        except ResultsRefused as e:
            out.refused(index, sweep_dir, str(e))
        out.finish(index, sweep_dir, kind, interrupted, console, out.selection(sub) if only else None)


def _open_index(sweep_dir: Path, exists: bool, kind: str, cfg: SweepConfig, full, text: str):
    """The sweep's index, synced with the plan and on disk with the config beside it. A results
    dir that cannot take them (read-only, full) is one line before any server starts."""
    from servebench.store.salvage import disk_full, one_line
    from servebench.sweep.index import SweepIndex

    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        index = SweepIndex.load(sweep_dir) if exists else SweepIndex.create(sweep_dir, kind, cfg.name)
        index.sync(full)
        index.data["assumptions"] = cfg.assumption_lines()  # reports read them beside the results
        (sweep_dir / "sweep.yaml").write_text(text)
        index.save()
    except ResultsRefused as e:
        _fail(f"{e}; nothing was started", 3 if str(e).startswith("results disk full") else 2)
    except OSError as e:
        _fail(f"cannot write the sweep to {sweep_dir} ({one_line(e)}); nothing was started", 3 if disk_full(e) else 2)
    except ValueError as e:
        _fail(str(e), 2)
    return index


def _check_servers(plan, local: bool = True) -> None:
    """Typos fail before anything is launched: every engine spec and launcher must exist, and on
    this host every model path (on Ray a path names a directory on the node that runs it)."""
    from servebench.launchers import LAUNCHERS
    from servebench.engines.specs import SpecError, load_spec

    for g in plan.groups:
        try:
            load_spec(g.server.engine)
        except SpecError as e:
            _fail(f"{g.id}: {e}", 2)
        if g.server.launcher not in LAUNCHERS and not g.server.endpoint:
            _fail(f"{g.id}: unknown launcher {g.server.launcher!r} (known: {', '.join(sorted(LAUNCHERS))})", 2)
        if local and _missing_model(g.server):
            from servebench.engines.presets import PRESETS

            _fail(f"{g.id}: model path not found: {g.server.model} (presets: {', '.join(sorted(PRESETS))})", 2)


def _missing_model(server) -> bool:
    """What a run of this server would refuse (run/orchestrate.py _model_dir)."""
    from servebench.engines.presets import PRESETS, served_by_name

    model = server.model
    if model in PRESETS or Path(model).expanduser().is_dir():
        return False
    return not served_by_name(model, "external" if server.endpoint else server.launcher)


def _executor_hint(name: str) -> str:
    if name == "ray":
        return "the ray executor needs Ray: pip install 'servebench[ray]'"
    from servebench.sweep.executor import EXECUTORS

    return f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})"
