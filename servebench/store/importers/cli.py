"""`servebench import FILE... --from FORMAT -o DIR` (registered in servebench/cli.py's _EXTERNAL)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from servebench.store.importers import READERS, ImportFailed, import_files


@dataclass(slots=True)
class ImportOptions:
    files: tuple[str, ...]
    fmt: str
    output: Path
    engine: str | None = None
    gpu: str | None = None
    gpu_count: int | None = None
    instance: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    def given(self) -> dict:
        return {"engine": self.engine, "hardware": self.gpu, "gpu_count": self.gpu_count, "instance_type": self.instance,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@click.command("import")
@click.argument("files", nargs=-1, required=True)
@click.option("--from", "fmt", required=True, type=click.Choice(sorted(READERS)),
              help="What made FILE: vllm-bench (vllm bench serve --save-result JSON), aiperf "
                   "(profile_export_aiperf.json), guidellm (--output kind=json), table (CSV/YAML of published rows).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Directory to write the run directories into.")
@click.option("--engine", default=None, help="The server's engine, when the file does not say (vllm, tgi, ...).")
@click.option("--gpu", default=None, help="The server's hardware (a10g, h100-sxm, cpu, ...), when the file does not say.")
@click.option("--gpu-count", default=None, type=click.IntRange(min=0), help="GPUs the server used, when the file does not say.")
@click.option("--instance", default=None, help="Cloud instance type (prices it), when the file does not say.")
@click.option("--input-tokens", default=None, type=click.IntRange(min=1), help="Requested prompt length, when the file does not say.")
@click.option("--output-tokens", default=None, type=click.IntRange(min=1),
              help="Requested output length, when the file does not say (vllm bench serve records none).")
def import_cmd(**opts):
    """Turn other tools' results or published rows into run directories that cost, recommend,
    report and estimate --calibrate read. What a source does not give stays missing (null)."""
    o = ImportOptions(**opts)
    try:
        dirs = import_files([Path(f) for f in o.files], o.fmt, o.output, o.given())
    except ImportFailed as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
    except OSError as e:
        click.echo(f"error: cannot write into {o.output}: {e.strerror or e}", err=True)
        raise SystemExit(1) from None
    for d in dirs:
        click.echo(str(d))
    click.echo(f"{len(dirs)} run(s) imported into {o.output}", err=True)
