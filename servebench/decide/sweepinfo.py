"""What a sweep's index.json holds beside its cells, for the reports: the study assumptions its
config marked (sweep/assumptions.py: values the study does not state, servebench's choice) and
each limit search's answer (sweep/limit.py), a range as wide as the noise, never one number. A
capacity plan that rests on a searched configuration counts on the range's lower end.
Definitions: docs/decide.md."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from servebench.decide.find import find
from servebench.decide.load import LoadError, _index, config_label, kind, spec_path
from servebench.decide.slo import Bound, SloError, parse_slo
from servebench.outputs.table import Table
from servebench.store.limitblock import LEVEL, describe

LIMIT_COLUMNS = ["source", "config", "slo", "by", "limit_range", "limit_low", "limit_high", "first_missing", "cells"]
RANGE_NOTE = (f"a range, not one number: the lower end is the highest level shown to meet the SLO at {LEVEL * 100:g} %, "
              "the upper end the highest not shown to miss it (equal when the boundary was sharp); "
              "a plan counts on the lower end")


def sweeps(specs: list[str]) -> list[tuple[str, Path, dict]]:
    """(source name, dir, index.json) of every sweep and compare among the DIRs or beneath them.
    One that cannot be read is left to the run table, which says why."""
    out = []
    for spec in specs:
        label, path = spec_path(spec)
        try:
            k = kind(path)
        except LoadError:
            continue
        found = [path] if k in ("sweep", "compare") else [p for kk, p in find(path)[0] if kk == "sweep"] if k == "runs" else []
        for p in found:
            try:
                idx = _index(p / "index.json")
            except LoadError:
                continue
            out.append((label or idx.get("name") or p.name, p, idx))
    return out


def lower_end(block: dict) -> float | None:
    """The level a plan counts on (`max_meeting` in blocks from before ranges, which were exact)."""
    return block.get("low", block.get("max_meeting"))


def limits(found: list[tuple[str, Path, dict]]) -> list[tuple[str, dict, dict]]:
    """(source, server group, its limit block) of every limit search."""
    return [(src, g, g["limit"]) for src, _, idx in found for g in idx.get("groups") or []
            if isinstance(g, dict) and isinstance(g.get("limit"), dict)]


def limits_table(found: list[tuple[str, Path, dict]]) -> Table | None:
    rows = []
    for src, g, lm in limits(found):  # why no level was shown to meet (a block's note) is in describe()'s text
        cfg, low = config_label(g.get("server") or {}), lower_end(lm)
        rows.append({"source": src, "config": cfg, "slo": lm.get("slo"), "by": lm.get("by"),
                     "limit_range": describe(lm), "limit_low": low, "limit_high": lm.get("high", low),
                     "first_missing": lm.get("first_missing"), "cells": lm.get("cells")})
    if not rows:
        return None
    return Table("limits", f"Limit searches: the highest load meeting the SLO, as a range at {LEVEL * 100:g} %",
                 pd.DataFrame(rows, columns=LIMIT_COLUMNS), [RANGE_NOTE])


def assumption_text(a) -> str:
    """index.json keeps the config's lines (`load.output_tokens = 128: why`); a structured entry
    ({field, why, value}) reads the same."""
    if not isinstance(a, dict):
        return str(a)
    why, fld = a.get("why") or "", a.get("field")
    if fld is None:
        return why
    return f"{fld} = {a['value']}: {why}" if "value" in a else f"{fld}: {why}"


def assumptions_table(found: list[tuple[str, Path, dict]]) -> Table | None:
    rows = [{"source": src, "assumption": assumption_text(a)}
            for src, _, idx in found for a in idx.get("assumptions") or []]
    if not rows:
        return None
    return Table("assumptions", "Assumptions: what the study does not state (servebench's choice, not the study's)",
                 pd.DataFrame(rows), ["these values were chosen to run the study, not reproduced from it: "
                                      "a figure that depends on them is servebench's, not the source's"])


def _covers(given: list[Bound], slo: str | None) -> bool:
    """The given SLO holds every bound of the search's (at least as strict): a level not shown
    to meet the search's SLO is not shown to meet the given one either."""
    try:
        theirs = parse_slo(slo)
    except (SloError, TypeError):
        return False
    mine = {(b.column, b.op, b.value) for b in given}
    return bool(theirs) and all((b.column, b.op, b.value) in mine for b in theirs)


def capacity_caps(found: list[tuple[str, Path, dict]], bounds: list[Bound]) -> dict[str, tuple[float | None, str]]:
    """Per configuration whose concurrency or rate limit was searched under (a looser form of)
    the given SLO: (the range's lower end, the line saying so) for the capacity plan."""
    caps: dict[str, tuple[float | None, str]] = {}
    for _, g, lm in limits(found):
        if lm.get("by") not in ("concurrency", "rate") or not bounds or not _covers(bounds, lm.get("slo")):
            continue
        cfg, low = config_label(g.get("server") or {}), lower_end(lm)
        caps[cfg] = (low, f"{cfg}: capacity counted at or below the lower end of its limit search, "
                          f"{lm['by']} {describe(lm)} under {lm.get('slo')}" if low is not None else
                          f"{cfg}: its limit search showed no {lm['by']} meeting {lm.get('slo')}: {describe(lm)}")
    return caps
