"""Everything measured beneath a directory: its runs, compares and sweeps, at any depth.

A folder such as results/ holds plain run dirs beside sweep and compare dirs; reading only
the run dirs at its top ranked a burst run while two sweeps beside it went unread (issue 18).
A sweep's own runs/ are read through its index.json, never as loose runs.
"""

from __future__ import annotations

from pathlib import Path

# A folder deeper than this under the given one is not searched (results trees are shallow;
# this bounds a walk into an unrelated tree given by mistake).
MAX_DEPTH = 6
_MEASURED = ("requests.parquet", "process.parquet", "server_metrics.parquet")


def is_sweep(path: Path) -> bool:
    return (path / "index.json").is_file()


def is_run(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / "run.json").is_file()


def find(path: Path) -> tuple[list[tuple[str, Path]], list[tuple[Path, str]]]:
    """([(kind 'sweep'|'run', dir)], [(dir, why it was skipped)]) beneath `path`, in name order."""
    found: list[tuple[str, Path]] = []
    skipped: list[tuple[Path, str]] = []
    _walk(Path(path), 0, found, skipped)
    return found, skipped


def _walk(d: Path, depth: int, found: list, skipped: list) -> None:
    try:
        children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        skipped.append((d, f"cannot list: {e.strerror or e}"))
        return
    for p in children:
        if is_sweep(p):
            found.append(("sweep", p))
        elif is_run(p):
            found.append(("run", p))
        elif any((p / f).is_file() for f in _MEASURED):
            skipped.append((p, "measurements without run.json or summary.json"))
        elif depth + 1 < MAX_DEPTH:
            _walk(p, depth + 1, found, skipped)
