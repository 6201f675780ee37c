"""`servebench recommend` and `servebench report` (registered in servebench/cli.py's _EXTERNAL)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from servebench.decide.load import LoadError, kind
from servebench.decide.prices import PriceError
from servebench.decide.slo import SloError
from servebench.errors import first_line

_price = click.option("--price", "prices", multiple=True, metavar="NAME=USD_PER_HOUR|FILE.yaml",
                      help="Price override: an instance ($/h) or a GPU type ($/GPU-hour), or a YAML file (repeatable).")
_onprem = click.option("--onprem", default=None, metavar="KEY=VALUE,...",
                       help="Owned hardware instead of catalog GPU prices: purchase_usd_per_gpu, amortisation_years, "
                            "utilisation, usd_per_kwh, pue (e.g. purchase_usd_per_gpu=30000,amortisation_years=4,usd_per_kwh=0.15).")
_slo = click.option("--slo", default=None, help='Bounds, e.g. "ttft_p95<=1000ms,ms_per_token_p50<=50".')
_goodput = click.option("--goodput", "goodput", multiple=True, metavar="ttft:MS tpot:MS e2el:MS",
                        help="Goodput bounds in ms (share of requests meeting all; errors are misses).")
_target = click.option("--target-rps", default=None, type=float, help="Capacity planning for this request rate.")
_growth = click.option("--trace-growth", default=None, type=float, metavar="G",
                       help="Capacity plan for G times a trace's traffic, from a sweep's trace-speed limit search.")
_at = click.option("--at", default=None, metavar="cost=5,latency=1,throughput=20",
                   help="Rank each study table at one concurrency only (the study's levels shown).")
_err = click.option("--max-error-rate", default=0.01, show_default=True, type=float,
                    help="With --slo: a run with more failed requests never meets it.")


def _analysis(f):
    """The options recommend and report share (SLO, target rate, goodput, prices, at, errors)."""
    for opt in (_err, _at, _onprem, _price, _goodput, _growth, _target, _slo):
        f = opt(f)
    return f


def _fail(msg: str, code: int = 1):
    click.echo(f"error: {msg}", err=True)
    raise SystemExit(code)


def _kv_floats(text: str | None, what: str) -> dict[str, float]:
    out = {}
    for part in [p for p in (text or "").split(",") if p.strip()]:
        k, sep, v = part.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            _fail(f"{what} {part.strip()!r}: expected KEY=NUMBER", 2)
        if not sep:
            _fail(f"{what} {part.strip()!r}: expected KEY=NUMBER", 2)
    return out


_BOUND = re.compile(r"^(ttft|tpot|itl|e2el):[0-9.eE+-]+$", re.I)


def split_goodput(dirs, goodput) -> tuple[list[str], list[str]]:
    """`--goodput ttft:500 tpot:50 e2el:2000` (the peers' form): click gives an option one value,
    so the bounds after the first arrive among the DIRs; move them back."""
    if not goodput:
        return list(dirs), list(goodput)
    keep = [d for d in dirs if not (_BOUND.match(d) and not Path(d).exists())]
    return keep, list(goodput) + [d for d in dirs if d not in keep]


@dataclass(slots=True)
class Analysis:
    """The options recommend and report share (see _analysis); cost uses the prices alone."""

    prices: tuple[str, ...] = ()
    onprem: str | None = None
    slo: str | None = None
    goodput: tuple[str, ...] = ()
    target_rps: float | None = None
    at: str | None = None
    max_error_rate: float | None = 0.01
    trace_growth: float | None = None

    def any_set(self) -> bool:
        # `is not None` for the numbers: --target-rps 0 is given (and refused), not absent
        return any((self.slo, self.goodput, self.prices, self.onprem, self.at)) or any(
            v is not None for v in (self.target_rps, self.trace_growth))


def analyse(dirs, o: Analysis):
    """Load, price and rank: (run table, recommendation tables, ranked table: repeats averaged, then priced)."""
    from servebench.decide import sweepinfo
    from servebench.decide.load import load_dirs, merge_repeats
    from servebench.decide.prices import price_book
    from servebench.decide.recommend import add_costs, recommend
    from servebench.decide.slo import add_goodput, parse_goodput, parse_slo

    dirs, goodput = split_goodput(dirs, o.goodput)
    if not dirs:
        _fail("no DIR given", 2)
    at_levels = _kv_floats(o.at, "--at")
    bad = set(at_levels) - {"cost", "latency", "throughput"}
    if bad:
        _fail(f"--at: unknown table {sorted(bad)[0]!r} (cost, latency, throughput)", 2)
    try:
        book = price_book(list(o.prices), _kv_floats(o.onprem, "--onprem") or None)
        bounds = parse_slo(o.slo, o.max_error_rate)
        gp = parse_goodput(goodput)
        if any(b.column == "goodput" for b in bounds) and not gp:
            raise SloError("a goodput bound in --slo needs --goodput (e.g. --goodput ttft:500 tpot:50)")
        if o.target_rps is not None and not o.target_rps > 0:
            raise SloError("--target-rps must be > 0")
        if o.max_error_rate is not None and not 0 <= o.max_error_rate <= 1:
            raise SloError(f"--max-error-rate must be between 0 and 1 (a share of requests), got {o.max_error_rate:g}")
        if o.trace_growth is not None and not 0 < o.trace_growth < float("inf"):
            raise SloError("--trace-growth must be > 0 (a multiple of the trace's traffic, e.g. 10)")
        raw = load_dirs(list(dirs))
    except (PriceError, SloError) as e:
        _fail(str(e), 2)
    except LoadError as e:
        _fail(str(e))
    if gp:
        raw = add_goodput(raw, gp)
    # Every run for the run tables and plots; repeats of one load point averaged for ranking.
    ranked, priced = add_costs(merge_repeats(raw), book), add_costs(raw, book)
    found = sweepinfo.sweeps(list(dirs))  # limit searches and assumptions beside the cells
    tables = recommend(ranked, bounds=bounds, target_rps=o.target_rps, at=at_levels,
                       caps=sweepinfo.capacity_caps(found, bounds))
    if o.trace_growth is not None:
        from servebench.decide.traceplan import PlanError, trace_limits, trace_plan

        try:
            tables.append(trace_plan(priced, trace_limits(list(dirs)), o.trace_growth))
        except PlanError as e:
            _fail(str(e), 2)
    tables += [t for t in (sweepinfo.limits_table(found), sweepinfo.assumptions_table(found)) if t is not None]
    return priced, tables, ranked


# What a run, sweep or compare dir holds: a report written over one of them would destroy it.
_RESULT_FILES = {"summary.json", "run.json", "index.json", "requests.parquet", "server_metrics.parquet",
                 "process.parquet", "server.log", "error.log", "timeline.png", "timeline.html", "sweep.yaml"}


def _own_file(out: Path) -> bool:
    """`out` is one of a result dir's own files (or any .json/.parquet/.log in such a dir)."""
    parent = out.parent
    if not any((parent / f).exists() for f in ("run.json", "summary.json", "index.json")):
        return False
    return out.name in _RESULT_FILES or out.suffix in (".json", ".parquet", ".log", ".yaml")


def _refuse_own(out: Path | None) -> None:
    """Checked before any work as well as at the write: nothing is read or rendered in vain."""
    if out is not None and _own_file(Path(out)):
        _fail(f"-o {out}: that is a results file of the run in {Path(out).parent}; "
              "write the report elsewhere (e.g. -o report.html)", 2)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    _refuse_own(out)
    try:
        Path(out).write_text(text)
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror or e}")
    click.echo(str(out))


@click.command("recommend")
@click.argument("dirs", nargs=-1, required=True)
@_analysis
@click.option("--format", "fmt", default="console", show_default=True, type=click.Choice(["console", "md", "csv"]))
@click.option("-o", "--output", default=None, type=click.Path(path_type=Path))
def recommend_cmd(dirs, fmt, output, **opts):
    """Best deployment per model (cost, latency, throughput), under an SLO, Pareto fronts, capacity.

    DIRS: sweep, compare or run directories (NAME=DIR names one)."""
    from servebench.outputs import render

    _refuse_own(output)
    _, tables, _ = analyse(dirs, Analysis(**opts))
    if fmt == "console" and output is None:
        render.console(tables)
    else:
        _write(render.markdown(tables, "servebench recommend") if fmt in ("md", "console") else render.csv(tables), output)


@click.command("report")
@click.argument("dirs", nargs=-1, required=True)
@click.option("--format", "fmt", default="console", show_default=True, type=click.Choice(["console", "html", "md", "csv"]))
@click.option("-o", "--output", default=None, type=click.Path(path_type=Path), help="File to write (html: default report.html).")
@_analysis
@click.option("--rebuild", is_flag=True, help="One run: make summary.json and the plots again from requests.parquet first.")
def report(dirs, fmt, output, rebuild, **opts):
    """Report of a run, a compare or a sweep; several DIRs side by side (the first is the baseline).

    DIRS: run, compare or sweep directories; NAME=DIR gives a display name."""
    _refuse_own(output)
    o = Analysis(**opts)
    if not 0 <= o.max_error_rate <= 1:  # checked here too: a lone run's report never reaches analyse()
        _fail(f"--max-error-rate must be between 0 and 1 (a share of requests), got {o.max_error_rate:g}", 2)
    dirs, o.goodput = split_goodput(dirs, o.goodput)
    if len(dirs) == 1 and fmt == "console" and not o.any_set() and _single_run(Path(dirs[0]), rebuild):
        return
    from servebench.outputs import render
    from servebench.outputs.summary_tables import comparison_table, metadata, runs_table

    df, rec, ranked = analyse(dirs, o)
    comp = comparison_table(ranked)  # repeats averaged on both sides, as the ranking reads them
    meta_table, meta = metadata(df)
    tables = [t for t in (comp, runs_table(df)) if t is not None] + rec + [meta_table]
    title = "servebench report: " + ", ".join(Path(d.split("=", 1)[-1] if "=" in d and not Path(d).exists() else d).name for d in dirs)
    if fmt == "console":
        render.console(tables)
    elif fmt == "md":
        _write(render.markdown(tables, title), output)
    elif fmt == "csv":
        _write(render.csv(tables), output)
    else:
        from servebench.decide import html

        damaged: list[str] = []
        _write(html.render(df, tables, meta, title=title, inputs=list(dirs), damaged=damaged, ranked=ranked),
               output or Path("report.html"))
        if damaged:  # as the console report does: what was readable is written, the loss is named
            _fail(f"{damaged[0]}: the raw records are lost")


def _single_run(path: Path, rebuild: bool) -> bool:
    """The console report of one run directory; False when `path` is a sweep or compare."""
    try:
        if kind(path) != "run" or _imported(path):
            return False  # an imported run has no records to draw: its table report says what it holds
    except LoadError as e:
        if (path / "index.json").exists():  # a damaged sweep, not a run missing its summary
            _fail(str(e))
        # else let the run report say what is missing
    from rich.console import Console

    from servebench.outputs import rebuild as rb
    from servebench.outputs import console as run_report

    rescued = _rescued(path)
    if rescued is not None:
        _fail(f"no summary.json or requests.parquet in {path}: its records were rescued to {rescued} when the "
              f"results disk was full; `servebench report --rebuild {rescued.parent}` makes the rest there")
    try:
        # derived files come back from requests.parquet when missing (or on --rebuild)
        notes, problems = rb.prepare(path, force=rebuild)
        for note in notes:
            click.echo(note, err=True)
        run_report.render(path, Console())
    except (FileNotFoundError, ValueError, KeyError) as e:
        _fail(first_line(e))
    except OSError as e:  # a read-only run dir: --rebuild cannot write what it made
        _fail(f"cannot write in {path}: {e.strerror or e}", 2 if rebuild else 1)
    if problems:
        _fail(problems[0])
    return True


def _imported(path: Path) -> bool:
    import json

    try:
        return bool(json.loads((path / "run.json").read_text()).get("imported"))
    except (OSError, ValueError, AttributeError):
        return False


def _rescued(path: Path) -> Path | None:
    """The rescued requests.parquet of a run dir that lost its records to a full disk (a rescue
    dir holds it under the run dir's name: servebench.store.salvage), or None."""
    from servebench.store.salvage import rescue_dirs

    if (path / "requests.parquet").exists() or (path / "summary.json").exists() or not path.is_dir():
        return None
    for base in rescue_dirs():
        kept = base / path.name / "requests.parquet"
        if kept.is_file():
            return kept
    return None


@click.command("cost")
@click.argument("dirs", nargs=-1)
@_price
@_onprem
@click.option("--catalog", is_flag=True, help="Print the price catalog (with sources) and stop.")
@click.option("--format", "fmt", default="console", show_default=True, type=click.Choice(["console", "md", "csv"]))
@click.option("-o", "--output", default=None, type=click.Path(path_type=Path))
def cost_cmd(dirs, prices, onprem, catalog, fmt, output):
    """Price, minutes and $ per 1M tokens and J/token of every run in DIRS (or --catalog)."""
    import pandas as pd

    from servebench.outputs import render
    from servebench.outputs.table import Table

    if catalog:
        from servebench.decide.prices import price_book

        try:
            book = price_book(list(prices))
        except PriceError as e:
            _fail(str(e), 2)
        inst = {**book.catalog.instances, **book.user_instances}
        gpus = {**book.catalog.gpus, **book.user_gpus}
        tables = [
            Table("instances", "Instances ($/h)", pd.DataFrame(
                [{"name": k, "usd_per_hour": v.usd_per_hour, "gpu": v.gpu, "gpu_count": v.gpu_count,
                  "indicative": v.indicative, "as_of": v.as_of, "source": v.source} for k, v in inst.items()])),
            Table("gpus", "GPUs ($/GPU-hour)", pd.DataFrame(
                [{"name": k, "usd_per_gpu_hour": v.usd_per_gpu_hour, "indicative": v.indicative, "as_of": v.as_of,
                  "source": v.source} for k, v in gpus.items()])),
        ]
    else:
        if not dirs:
            _fail("give DIR(s), or --catalog", 2)
        df, _, _ = analyse(dirs, Analysis(prices=prices, onprem=onprem, max_error_rate=None))
        cols = ["source", "config", "load_level", "status", "output_token_throughput", "usd_per_hour", "min_per_1m",
                "usd_per_1m", "usd_per_1m_total", "j_per_token", "price_source"]
        notes = [f"{c}: no price (give --price)" for c in sorted(df.loc[df["usd_per_hour"].isna() & (df["status"] != "skipped"), "config"].unique())]
        notes += [f"{r['config']} @ {r['load_level']}: {r['price_note']}" for _, r in df.iterrows() if isinstance(r.get("price_note"), str)]
        tables = [Table("cost", "Cost per run", df[cols].reset_index(drop=True), notes)]
    if fmt == "console" and output is None:
        render.console(tables)
    else:
        _write(render.markdown(tables, "servebench cost") if fmt in ("md", "console") else render.csv(tables), output)
