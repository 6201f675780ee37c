"""What a sweep or compare prints: the plan (--dry-run), the comparison tables, the closing
line and its exit status."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from servebench.store.limitblock import describe


def stderr_console():
    from rich.console import Console

    # tables are wide: a log file or pipe gets them unwrapped instead of rich's 80 columns
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 220)


def print_plan(plan, sweep_dir: Path, limit, console) -> None:
    from rich.table import Table

    t = Table(title=f"plan: {sweep_dir}", header_style="bold")
    env = any(g.server.env for g in plan.groups)  # a platform's setting (NCCL_P2P_DISABLE=1) shows per group
    for col in ("group", "server", "launcher", "cells", "load points") + (("env",) if env else ()):
        t.add_column(col)
    for g in plan.groups:
        pts = ", ".join(dict.fromkeys(c.load.level for c in g.cells)) or \
            f"search: {limit.text} (up to {limit.repeats} runs a boundary level)"
        extra = (" ".join(f"{k}={v}" for k, v in g.server.env.items()),) if env else ()
        t.add_row(g.id, g.server.label, g.server.launcher, str(len(g.cells)), pts, *extra)
    console.print(t)
    console.print(f"workload: {plan.config.load.describe()}", markup=False)
    if plan.cells:
        console.print(cells_table(plan))
    assumed = plan.config.assumption_lines()
    if assumed:
        console.print("assumed (not stated by the study; servebench's choice):", markup=False)
        for line in assumed:
            console.print(f"  - {line}", markup=False)
    launches = sum(1 for g in plan.groups if g.server.launcher != "external")
    timed = [c.load.duration_s for c in plan.cells if c.load.duration_s]
    est = f"; at least {sum(timed) / 60:.1f} min of load (duration-bound cells)" if timed else ""
    console.print(f"{len(plan.groups)} server group(s), {launches} launch(es), {len(plan.cells)} cell(s){est}. "
                  "Per-cell time is known after the first cell; the sweep prints time left as it goes.")


def cells_table(plan):
    """What each cell sends: its tokens, warm-up and how long it lasts. Cells of different
    groups at the same load point send the same, so one row stands for all of them."""
    from rich.table import Table

    ld = plan.config.load
    rows: dict[tuple[str, int], list[str]] = {}
    points = {}
    for g in plan.groups:
        for c in g.cells:
            rows.setdefault((c.load.key, c.load.repeat), []).append(g.id)
            points[(c.load.key, c.load.repeat)] = c.load
    t = Table(title="cells (every group at each load point)", header_style="bold")
    for col in ("cell", "load", "repeat", "input tokens", "output tokens", "warm-up", "duration", "groups"):
        t.add_column(col)
    n_groups = len(plan.groups)
    for (key, rep), gids in rows.items():
        p = points[(key, rep)]
        t.add_row(f"gNN-{key}-r{rep}", p.level, str(rep), *cell_tokens(p, ld), f"{ld.warmup} request(s), not measured",
                  cell_duration(p), "all" if len(gids) == n_groups else ", ".join(gids))
    return t


def cell_tokens(p, ld) -> tuple[str, str]:
    """(input, output) as the cell asks for them, with the config's clipping."""
    if p.mode == "trace":
        scale = f" x{ld.trace.scale_lengths:g}" if ld.trace.scale_lengths != 1 else ""
        inp, out = f"the trace's{scale}", f"the trace's{scale}"
    elif ld.prompts_file is not None:
        inp, out = f"prompts of {ld.prompts_file}", str(p.output_tokens)
    else:
        inp, out = str(p.input_tokens), str(p.output_tokens)
    inp += f" (at most {ld.max_input_tokens})" if ld.max_input_tokens else ""
    out += f" (at most {ld.max_output_tokens})" if ld.max_output_tokens else ""
    return inp, out


def cell_duration(p) -> str:
    """How a cell ends: after a time, after N requests, or at the end of a trace's window."""
    if p.mode == "trace":
        what = f"the first {p.requests} requests of the trace" if p.requests else "the trace's window"
        return what + f" at x{p.speed:g}" + (f", at most {p.duration_s:g} s" if p.duration_s else "")
    if p.duration_s:
        return f"{p.duration_s:g} s (at most {p.requests} requests)"
    return f"{p.requests} requests" + (" released at once" if p.mode == "burst" else "")


def finish(index, sweep_dir: Path, kind: str, interrupted: bool, console,
           selected: tuple[set[str], set[str]] | None = None) -> None:
    """The tables and closing lines; `selected` (selection()): what --only picked, for the exit status."""
    from servebench.sweep import compare as cmp

    counts = index.counts()
    total = len(index.data["cells"])
    t = index.data.get("timing") or {}
    share = t.get("overhead_share")
    if total:
        try:
            tabs = cmp.tables(sweep_dir)
            print_tables(tabs, console)
            _write_text(sweep_dir / f"{kind}.md", cmp.markdown(tabs) + assumed_markdown(index.data.get("assumptions")))
        except Exception as e:  # noqa: BLE001 - the index is already safe on disk
            console.print(f"could not build the comparison tables: {e}", markup=False)
    chosen, _ = _chosen(index, selected)
    if selected is not None:  # another host's --only cells are not pending on this one
        counts = index.counts(chosen)
    parts = [f"{counts.get(s, 0)} {s}" for s in ("done", "failed", "interrupted", "pending") if counts.get(s)]
    if counts.get("superseded"):
        parts.append(f"{counts['superseded']} failed probe(s) the last search did not use")
    line = f"{kind}: {', '.join(parts) or 'no cells'} of {total} cell(s)"
    if selected is not None:
        line = f"{kind}: {', '.join(parts) or 'no cells'} of {len(chosen)} cell(s) --only picked ({total} in the sweep)"
    if share is not None:
        line += overhead_line(t)
    console.print(line, markup=False)
    for a in index.data.get("assumptions") or []:
        console.print(f"assumed: {a}", markup=False)
    for g in index.data["groups"]:
        if g.get("limit"):
            lm = g["limit"]
            what = "trace speed (x the trace's rate)" if lm["by"] == "speed" else lm["by"]
            console.print(f"{g['server']['label']}: highest {what} meeting {lm['slo']}: {describe(lm)}",
                          markup=False)
    click.echo(str(sweep_dir))
    if interrupted:
        click.echo("error: interrupted; finished cells are kept: servebench sweep ... --resume continues", err=True)
        sys.stdout.flush()
        raise SystemExit(130)
    _exit_status(index, selected)


def selection(plan) -> tuple[set[str], set[str]]:
    """(cell ids, group ids) that `--only` picked: the groups' limit-search probes count with them."""
    return {c.id for c in plan.cells}, {g.id for g in plan.groups}


def _chosen(index, selected: tuple[set[str], set[str]] | None) -> tuple[list[dict], list[dict]]:
    cells, groups = index.data["cells"], index.data["groups"]
    if selected is not None:
        ids, gids = selected
        cells = [c for c in cells if c["id"] in ids or (c.get("search") and c["group"] in gids)]
        groups = [g for g in groups if g["id"] in gids]
    return cells, groups


def _exit_status(index, selected: tuple[set[str], set[str]] | None) -> None:
    """Exit 1 naming the first cell (or group) not done, among those selected: cells another
    host's `--only` is for are not this run's failure."""
    cells, groups = _chosen(index, selected)
    cells = [c for c in cells if not index.superseded(c)]
    left = [c for c in cells if c["status"] in ("failed", "interrupted", "pending")]
    if left:
        first = next(c for c in cells if c["status"] != "done")
        click.echo(f"error: {len(left)} of {len(cells)} cell(s) not done (first: {first.get('id')}: "
                   f"{first.get('error')})", err=True)
        raise SystemExit(1)
    # a limit search that ended without an answer may leave no cell failed (the server died
    # between levels, or never started): the group's own status says it
    gone = [g for g in groups if g.get("status") == "failed"]
    if gone:
        click.echo(f"error: {len(gone)} server group(s) failed (first: {gone[0]['id']}: {gone[0].get('error')})",
                   err=True)
        raise SystemExit(1)


def assumed_markdown(lines: list[str] | None) -> str:
    """The config's assumptions under the tables: a reader of the results sees what the study
    did not state and servebench chose."""
    if not lines:
        return ""
    return "\n### Assumptions (not stated by the study; servebench's choice)\n\n" + "".join(f"- {x}\n" for x in lines)


def overhead_line(t: dict) -> str:
    """Server start/stop as a share of the groups' time (start/stop + measuring): meaningful
    when groups ran side by side, where their sums pass the wall time."""
    group_s = t.get("group_s") or (t["server_overhead_s"] + (t.get("measure_s") or 0.0))
    wall = t.get("wall_s") or 0.0
    side = "; groups ran side by side" if group_s > 1.05 * wall else ""
    return (f"; server start/stop {t['server_overhead_s']:.0f} s = {t['overhead_share']:.1%} of the groups' "
            f"{group_s:.0f} s (start/stop + load; {wall:.0f} s wall{side})")


def _write_text(path: Path, text: str) -> None:
    """A full disk leaves no empty or half file behind (it would read as the sweep's tables)."""
    try:
        path.write_text(text)
    except OSError:
        path.unlink(missing_ok=True)
        raise


def refused(index, sweep_dir: Path, why: str) -> None:
    """The results disk refused the sweep's files: stop with one line and exit 3 (the
    verdict's "measured, but the results disk refused some files"). Cells it caught running
    are marked failed, so index.json never shows a cell running that nothing runs."""
    index.settle(why)
    counts = index.counts()
    kept = f"{counts.get('done', 0)} cell(s) done are kept in {sweep_dir}"
    if index.write_error is not None:
        kept += f", but index.json there could not be updated ({index.write_error})"
    click.echo(f"error: {why}; the sweep stopped: {kept}; free space, then `servebench sweep CONFIG --resume`",
               err=True)
    sys.stdout.flush()
    raise SystemExit(3)


def print_tables(tabs, console) -> None:
    from rich.table import Table

    from servebench.sweep.compare import COLUMNS, fmt

    keep = {"req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p99", "e2e p99", "ms/token p50", "out len"}
    for tab in tabs:
        cols = [(j, c) for j, c in enumerate(COLUMNS) if c[0] in keep
                or (c[0].startswith(("GPU", "J/")) and any(r.values[j] is not None for r in tab.rows))]
        t = Table(title=tab.level, header_style="bold")
        t.add_column("server")
        for _, c in cols:
            t.add_column(c[0], justify="right")
        t.add_column("notes")
        for r in tab.rows:
            cells = []
            for j, (name, _, _, digits) in cols:
                s = fmt(r.values[j], digits)
                cells.append(f"[bold green]{s}[/]" if r.label in tab.winners.get(name, []) else s)
            t.add_row(r.label, *cells, r.note)
        shown = {c[0] for _, c in cols}  # the ties of columns this table shows, not of those it hides
        ties = {k: v for k, v in tab.ties.items() if k in shown}
        if ties:  # green on several rows: their 95 % intervals overlap
            t.caption = "intervals overlap (no winner): " + "; ".join(f"{k} {v}" for k, v in ties.items())
        console.print(t)
