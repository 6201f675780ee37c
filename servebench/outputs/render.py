"""Console (rich), Markdown and CSV renderings of the same tables."""

from __future__ import annotations

import io

import pandas as pd

from servebench.outputs.table import Table, fmt, heading


def console(tables: list[Table], out=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RTable

    import sys

    # Piped or redirected, rich would wrap these wide tables at 80 columns.
    c = out or Console(width=None if sys.stdout.isatty() else 200)
    for t in tables:
        rt = RTable(title=escape(t.title), title_justify="left", header_style="bold", show_lines=False)
        for col in t.df.columns:
            rt.add_column(heading(col), justify="right" if pd.api.types.is_numeric_dtype(t.df[col]) else "left",
                          overflow="fold")
        for _, row in t.df.iterrows():
            rt.add_row(*(escape(fmt(v)) for v in row))  # engine errors and args may hold [brackets]
        if len(t.df):
            c.print(rt)
        else:
            c.print(f"[bold]{escape(t.title)}[/]: nothing to show")
        for n in t.notes:
            c.print(f"  [yellow]note:[/] {escape(n)}", highlight=False)


def _md_cell(v) -> str:
    return fmt(v).replace("|", "\\|").replace("\n", " ")


def markdown(tables: list[Table], title: str = "servebench report") -> str:
    out = [f"# {title}", ""]
    for t in tables:
        out += [f"## {t.title}", ""]
        if len(t.df):
            out.append("| " + " | ".join(heading(c) for c in t.df.columns) + " |")
            out.append("|" + "|".join("---" for _ in t.df.columns) + "|")
            out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for _, row in t.df.iterrows()]
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
