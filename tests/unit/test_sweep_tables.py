"""The per-level tables of a sweep directory: which cells a level's row averages."""

from __future__ import annotations

import json

from servebench.sweep import compare as cmp


def test_limit_search_probes_are_not_averaged_into_the_configured_levels(tmp_path, monkeypatch):
    # c=1 configured (2 req/s) and probed by a search (50 req/s, more requests, other prompts)
    load = {"mode": "concurrency", "concurrency": 1, "rate": None, "requests": 4, "duration_s": None,
            "input_tokens": 16, "output_tokens": 4, "repeat": 0}
    cells = [{"id": "g00-c0001-r0", "group": "g00", "load": {**load, "seed": 1}, "search": False,
              "status": "done", "run_dir": "runs/g00-c0001-r0"},
             {"id": "g00-lim-c0001", "group": "g00", "load": {**load, "seed": 10001000}, "search": True,
              "status": "done", "run_dir": "runs/g00-lim-c0001"},
             {"id": "g00-lim-c0002", "group": "g00", "load": {**load, "concurrency": 2, "seed": 10002000},
              "search": True, "status": "done", "run_dir": "runs/g00-lim-c0002"}]
    (tmp_path / "index.json").write_text(json.dumps({"groups": [{"id": "g00", "server": {"label": "emu/tiny"}}],
                                                     "cells": cells}))
    rps = {"runs/g00-c0001-r0": 2.0, "runs/g00-lim-c0001": 50.0, "runs/g00-lim-c0002": 90.0}
    monkeypatch.setattr(cmp, "load_summary", lambda d: {"request_throughput": rps[d.relative_to(tmp_path).as_posix()]})
    tabs = cmp.tables(tmp_path)
    assert [t.level for t in tabs] == ["c=1"]  # no table of probe levels alone
    row = tabs[0].rows[0]
    assert row.values[0] == 2.0 and "repeats" not in row.note


def test_the_console_caption_names_only_the_ties_of_columns_it_shows():
    from rich.console import Console

    from servebench.sweep.compare import COLUMNS, LevelTable, Row
    from servebench.sweep.console import print_tables

    rows = [Row(label, "done", [1.0] * len(COLUMNS)) for label in ("a", "b")]
    tab = LevelTable("c=4", [c[0] for c in COLUMNS], rows, {}, {"TTFT p50": "tie (±3 %)", "TPOT p99": "tie (±9 %)"})
    con = Console(record=True, width=300)
    print_tables([tab], con)
    out = con.export_text()
    assert "TTFT p50 tie (±3 %)" in out and "TPOT p99" not in out  # TPOT p99 is not a console column
