"""Keeping measured data when the results disk is full.

The raw records (requests.parquet) are the one thing that cannot be made again: everything
else in a run dir (summary.json, plots) is derived from them and `servebench report --rebuild`
makes it again. So records are written first; when the run dir's disk refuses them they go to
a rescue dir on another disk if one has room, and the user is told where they are. Partial
files (`*.tmp`, a half-written plot) are removed, so the space they took is given back and no
reader mistakes them for results.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

from servebench.errors import first_line
from servebench.store import runfiles

# ENOSPC: no space; EDQUOT: over quota; EFBIG: over the file-size limit (ulimit -f)
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in _FULL:
        return True
    # pyarrow raises OSError without errno set, the cause only in the text
    text = str(e)
    return any(os.strerror(n) in text for n in _FULL)


def rescue_dirs() -> list[Path]:
    """Where records go when the run dir's disk is full, in order of preference."""
    out = []
    if os.environ.get("SERVEBENCH_RESCUE_DIR"):
        out.append(Path(os.environ["SERVEBENCH_RESCUE_DIR"]))
    out += [Path.home() / ".cache" / "servebench" / "rescue", Path(tempfile.gettempdir()) / "servebench-rescue"]
    return out


def write_records(run_dir: Path, records: list, make_room: Callable[[], bool] | None = None) -> tuple[Path | None, str | None]:
    """(where requests.parquet was written, why the run dir refused it). Tries the run dir,
    then each rescue dir, whatever the run dir's error was (not only a full disk: a read-only
    dir, a lost mount); returns (None, reason) when nothing could hold it. `make_room()`, when
    given, may free space in the run dir (the load's spool, a crash copy of these same rows,
    held on the disk beside them) after a first refusal for want of space (only then: for any
    other refusal the spool may end up the only copy on disk): True means try the run dir again."""
    target = run_dir / "requests.parquet"
    why, full = None, False
    for _ in range(2):
        try:
            runfiles.write_records(target, records)
            return target, None
        except Exception as e:  # noqa: BLE001 - whatever refused them, the rescue dirs are tried
            remove_partial(run_dir)
            why, full = why or one_line(e), disk_full(e)
        if make_room is None or not full or not make_room():
            break
        make_room = None
    for base in rescue_dirs():
        dest = base / run_dir.name
        try:
            dest.mkdir(parents=True, exist_ok=True)
            runfiles.write_records(dest / "requests.parquet", records)
            return dest / "requests.parquet", why
        except Exception:  # noqa: BLE001 - the next one may have room
            remove_partial(dest)
    return None, why


def remove_partial(run_dir: Path, names: tuple[str, ...] = ()) -> None:
    """Drop `*.tmp` files (a write that never finished) and the named derived files."""
    try:
        for p in list(Path(run_dir).glob("*.tmp")) + [Path(run_dir) / n for n in names]:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    except OSError:
        pass


def one_line(e: BaseException) -> str:
    """The cause in a few words: "No space left on device", not pyarrow's wrapping of it."""
    for n in _FULL:
        if (isinstance(e, OSError) and e.errno == n) or os.strerror(n) in str(e):
            return os.strerror(n)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return first_line(e)
