"""Console (rich), Markdown and CSV renderings of the same tables."""

from __future__ import annotations

import io
import os
import sys

import pandas as pd

from servebench.outputs.table import Table, cells, heading


def console_width() -> int | None:
    """COLUMNS when set (piped too); else the terminal's own; piped without it, 200 (rich's 80
    would squeeze these wide tables)."""
    cols = os.environ.get("COLUMNS", "").strip()
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    return None if sys.stdout.isatty() else 200


def fit_widths(headings: list[str], rows: list[list[str]], width: int) -> list[int] | None:
    """Content width of each column so that the table fits `width` without breaking a word
    (each column at least its longest word; the widest columns give way first); None when
    even that is too wide."""
    from rich.cells import cell_len

    cols = list(zip(headings, *rows)) if rows else [(h,) for h in headings]
    mins = [max(cell_len(w) for v in col for w in (v.split() or ["-"])) for col in cols]
    widths = [max(cell_len(v) for v in col) for col in cols]
    room = width - 3 * len(cols) - 1  # padding either side and the borders
    if sum(mins) > room:
        return None
    while sum(widths) > room:
        i = max((j for j in range(len(widths)) if widths[j] > mins[j]), key=lambda j: widths[j])
        widths[i] -= 1
    return widths


def console(tables: list[Table], out=None) -> None:
    """Each table as a grid when its words fit the width; else one block per row (heading:
    value), so that no cell is cut mid-word (`ml.g5.2|xlarge`)."""
    from rich.console import Console
    from rich.markup import escape

    c = out or Console(width=console_width())
    for t in tables:
        if not len(t.df):
            c.print(f"[bold]{escape(t.title)}[/]: nothing to show")
        else:
            heads, rows = [heading(col) for col in t.df.columns], cells(t.df)
            numeric = [pd.api.types.is_numeric_dtype(t.df[col]) for col in t.df.columns]
            widths = fit_widths(heads, rows, c.width)
            c.print(_grid(t.title, heads, rows, numeric, widths) if widths else _records(t.title, heads, rows))
        for n in t.notes:
            c.print(f"  [yellow]note:[/] {escape(n)}", highlight=False)


def _grid(title: str, heads: list[str], rows: list[list[str]], numeric: list[bool], widths: list[int]):
    from rich.markup import escape
    from rich.table import Table as RTable

    rt = RTable(title=escape(title), title_justify="left", header_style="bold", show_lines=False)
    for h, num, w in zip(heads, numeric, widths):
        rt.add_column(escape(h), justify="right" if num else "left", overflow="fold", width=w)
    for row in rows:
        rt.add_row(*(escape(v) for v in row))  # engine errors and args may hold [brackets]
    return rt


def _records(title: str, heads: list[str], rows: list[list[str]]):
    from rich.markup import escape
    from rich.table import Table as RTable

    rt = RTable(title=escape(title) + " (one block per row: too wide for this console)", title_justify="left",
                show_header=False)
    rt.add_column("field", style="bold")
    rt.add_column("value", overflow="fold")
    for i, row in enumerate(rows):
        for j, (h, v) in enumerate(zip(heads, row)):
            rt.add_row(escape(h), escape(v), end_section=j == len(row) - 1 and i < len(rows) - 1)
    return rt


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(tables: list[Table], title: str = "servebench report") -> str:
    out = [f"# {title}", ""]
    for t in tables:
        out += [f"## {t.title}", ""]
        if len(t.df):
            out.append("| " + " | ".join(heading(c) for c in t.df.columns) + " |")
            out.append("|" + "|".join("---" for _ in t.df.columns) + "|")
            out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in cells(t.df)]
        else:
            out.append("_nothing to show_")
        if t.notes:
            out.append("")
            out += [f"- {n}" for n in t.notes]
        out.append("")
    return "\n".join(out)


def csv(tables: list[Table]) -> str:
    """One CSV: a `table` column names the table each row belongs to (columns are the union);
    notes are rows of table `<key>:note` with the text in `note`. Values are unrounded."""
    frames = []
    for t in tables:
        f = t.df.copy()
        f.insert(0, "table", t.key)
        frames.append(f)
        if t.notes:
            frames.append(pd.DataFrame({"table": f"{t.key}:note", "note": t.notes}))
    buf = io.StringIO()
    pd.concat(frames, ignore_index=True, sort=False).to_csv(buf, index=False)
    return buf.getvalue()
