"""Other tools' results and published tables as servebench run directories (`servebench import`).

One small reader per format; each returns Imported points (common.py) and never invents a
field its source lacks.
"""

from __future__ import annotations

from pathlib import Path

from servebench.store.importers import aiperf, guidellm, table, vllm_bench
from servebench.store.importers.common import Imported, ImportFailed, grouped_reads, with_overrides, write_run

READERS = {
    "vllm-bench": vllm_bench.read,
    "aiperf": aiperf.read,
    "guidellm": guidellm.read,
    "table": table.read,
}

__all__ = ["READERS", "ImportFailed", "Imported", "import_files"]


def import_files(files: list[Path], fmt: str, out_dir: Path, given: dict | None = None) -> list[Path]:
    """Every file read before anything is written: a bad file leaves no partial import."""
    if fmt not in READERS:
        raise ImportFailed(f"unknown format {fmt!r} ({', '.join(READERS)})")
    points: list[Imported] = []
    for f in files:
        if not Path(f).is_file():
            raise ImportFailed(f"{f}: no such file")
        points += [grouped_reads(with_overrides(p, given or {})) for p in READERS[fmt](Path(f))]
    seen: dict[str, int] = {}
    for p in points:  # two files with one stem: number the later ones rather than refuse
        seen[p.name] = seen.get(p.name, 0) + 1
        if seen[p.name] > 1:
            p.name = f"{p.name}-{seen[p.name]}"
    return [write_run(out_dir, p) for p in points]
