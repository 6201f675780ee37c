"""`servebench emulate`: serve a fake engine on known token deadlines."""

from __future__ import annotations

import json
import sys

import click
from pydantic import ValidationError

from servebench.emulator.core import EmulatorConfig


@click.command("emulate")
@click.option("--format", "fmt", type=click.Choice(["openai", "openai-chat", "tgi", "lightllm", "sglang"]),
              default="openai", show_default=True, help="Engine wire format to speak.")
@click.option("--ttft-ms", type=float, default=50.0, show_default=True, help="Arrival to first token.")
@click.option("--itl-ms", type=float, default=10.0, show_default=True, help="Gap between tokens.")
@click.option("--jitter", "jitter_ms", type=float, default=0.0, show_default=True,
              help="Delay each token's deadline by U(0, MS) ms (seeded; does not accumulate).")
@click.option("--fail-rate", type=float, default=0.0, show_default=True,
              help="Fraction of requests that fail (HTTP 500 or a mid-stream abort).")
@click.option("--fail-mode", type=click.Choice(["mixed", "error", "abort"]), default="mixed", show_default=True)
@click.option("--batch-slowdown", type=float, default=0.0, show_default=True,
              help="ITL *= 1 + F*(running streams - 1).")
@click.option("--max-running", type=int, default=None, help="Streams generating at once; the rest wait.")
@click.option("--max-concurrent-requests", type=int, default=None,
              help="Refuse (429 'Model is overloaded') past N requests in flight, as TGI's router does.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, show_default=True, help="0: any free port (printed).")
@click.option("--log", type=click.Path(dir_okay=False), default=None,
              help="JSONL log: arrival and every token's write time (perf_counter_ns) per request.")
@click.option("--model", default="emulator", show_default=True, help="Name served on /v1/models.")
@click.option("--tokenizer", default=None, help="tokenizer.json (or its folder) to count prompt tokens.")
@click.option("--fault", "faults", multiple=True, metavar="SPEC",
              help="Act out a server fault (repeatable): kill-after=3s|N, hang-after=N|2s, status=503:0.3, "
                   "reset:0.1, garbage-after=N[:deep|:12MB], slow-headers=2s. See docs/faults.md.")
def emulate(fmt, faults, **opts) -> None:
    """Serve a streaming LLM endpoint whose token timing is known exactly."""
    try:
        cfg = EmulatorConfig(format=fmt, faults=list(faults), **opts)
    except ValidationError as e:
        err = e.errors()[0]
        raise click.BadParameter(f"{'.'.join(map(str, err['loc']))}: {err['msg'].removeprefix('Value error, ')}") from None

    from servebench.emulator.server import run

    def ready(info: dict) -> None:
        click.echo(json.dumps(info))
        sys.stdout.flush()

    try:
        run(cfg, ready)
    except OSError as e:  # port in use, unwritable log
        where = f": {e.filename}" if e.filename else ""
        raise click.ClickException(f"emulator: {e.strerror or e}{where}") from None
    except ValueError as e:  # a tokenizer that does not load
        raise click.ClickException(f"emulator: {e}") from None
