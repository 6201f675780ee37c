"""The benchmarks' tables live in docs between marker comments: write one block, keep the rest."""

from __future__ import annotations

from pathlib import Path


def write_block(doc: Path, begin: str, end: str, text: str, heading: str) -> None:
    """Replace the text between `begin` and `end` in `doc`, or append it under `heading`."""
    cur = doc.read_text() if doc.exists() else "# Performance\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in cur and end in cur:
        cur = cur[: cur.index(begin)] + block + cur[cur.index(end) + len(end):]
    else:
        cur = cur.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    doc.write_text(cur)
