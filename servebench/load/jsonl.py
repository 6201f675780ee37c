"""JSONL inputs (traces, session files): one object a line, a bad line named by file and line."""

from __future__ import annotations

import json
from pathlib import Path


def objects(path: Path, lines: list[str], error: type[Exception]) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; `error` names the first line that is not
    a JSON object."""
    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            raise error(f"{path}:{lineno}: not a JSON object")
        out.append((lineno, obj))
    return out
