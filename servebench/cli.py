"""Command line: `servebench run|report|recommend|launch|emulate ...`."""

from __future__ import annotations

import importlib
from contextlib import ExitStack
from pathlib import Path

import click

from servebench import __version__
from servebench.errors import first_line

# Commands that live beside their subsystem; imported lazily so a broken optional
# dependency of one subsystem never breaks `servebench run`.
_EXTERNAL = {
    "launch": "servebench.launchers.cli:launch",
    "emulate": "servebench.emulator.cli:emulate",
    "plot": "servebench.outputs.plots:plot",
    "sweep": "servebench.sweep.cli:sweep",
    "compare": "servebench.sweep.cli:compare",
    "estimate": "servebench.estimate.cli:estimate",
    "profile": "servebench.estimate.profile:profile",
    "report": "servebench.decide.cli:report",
    "recommend": "servebench.decide.cli:recommend_cmd",
    "cost": "servebench.decide.cli:cost_cmd",
    "cleanup": "servebench.launchers.cleanup:cleanup",
    "import": "servebench.store.importers.cli:import_cmd",
}


# click >= 8.2 raises the help of a bare group as a usage error of its own
_NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Group(click.Group):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(_EXTERNAL))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in _EXTERNAL:
            mod, attr = _EXTERNAL[name].split(":")
            try:
                cmd = getattr(importlib.import_module(mod), attr)
            except (ImportError, AttributeError):
                return None
        return cmd

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's own errors in one `error:` line, as servebench's: a wrong flag type printed
        Usage / Try / Error over three lines in every command."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_HELP as e:  # `servebench` alone: the help, as click prints it
            e.show()
            raise SystemExit(e.exit_code) from None
        except click.UsageError as e:
            where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
            click.echo(f"error: {where}{_one_line(e.format_message())} (see --help)", err=True)
            raise SystemExit(e.exit_code) from None
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            raise SystemExit(e.exit_code) from None
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            raise SystemExit(1) from None
        # without standalone mode click returns ctx.exit()'s code (--help, --version: 0)
        raise SystemExit(rv if isinstance(rv, int) else 0)


def _one_line(msg: str) -> str:
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="servebench")
def main() -> None:
    """Benchmark LLM inference servers."""


def _fail(msg: str, code: int = 1) -> None:
    click.echo(f"error: {_scrubbed(msg)}", err=True)
    raise SystemExit(code)


def _scrubbed(msg: str, options: dict | None = None, args: list[str] | None = None) -> str:
    """The terminal gets the run dir's redaction too: a server that fails at start-up may echo
    its argv and environment (--api-key, HF_TOKEN, AWS keys) into the one-line error."""
    from servebench.store.redact import scrub_text, secret_values

    return scrub_text(msg, secret_values(options, args))


@main.command()
@click.option("--backend", default="vllm", show_default=True, help="Engine name in backends/ or a spec.yaml path.")
@click.option("--model", default="tiny", show_default=True, help="Model dir, preset (tiny, small) or hub id.")
@click.option("--served-model-name", default=None, help="Model name the API expects (default: --model; /v1/models for --endpoint).")
@click.option("--endpoint", default=None, help="URL of a server that is already up (nothing is launched).")
@click.option("--launcher", default="process", show_default=True, help="process | docker | sagemaker | external.")
@click.option("--api", default=None, help="Client adapter override, e.g. openai-chat.")
@click.option("--tokenizer", default=None, help="Tokenizer dir (default: the model).")
@click.option("--gpus", default=None, help="GPU indices, e.g. 0,1.")
@click.option("--server-arg", "server_args", multiple=True, help="Extra engine argument (repeatable).")
@click.option("--requests", default=None, type=int, help="Requests to send [default: 1000; a trace: all in its window].")
@click.option("--input-tokens", default="512", show_default=True,
              help="Prompt length: N, or lognormal:mean=M,sd=S | normal:mean=M,sd=S | uniform:LO-HI | empirical:FILE.")
@click.option("--output-tokens", default="128", show_default=True, help="Output length: N or a distribution, as --input-tokens.")
@click.option("--max-input-tokens", default=None, type=int, help="Clip prompt lengths (the number clipped is reported).")
@click.option("--max-output-tokens", default=None, type=int, help="Clip output lengths (the number clipped is reported).")
@click.option("--trace", default=None, metavar="NAME|FILE",
              help="Replay a trace: azure-conv-2023, mooncake-conversation (shipped excerpts) or a file (docs/workloads.md).")
@click.option("--trace-format", default=None, help="azure | mooncake | servebench | csv | jsonl (default: detected).")
@click.option("--trace-columns", default=None, metavar="time=COL,input=COL,output=COL",
              help="Column mapping for any CSV/JSONL; time=COL:s|ms|datetime, optional blocks=COL.")
@click.option("--trace-speed", default=1.0, show_default=True, type=float, help="Replay K times faster than the trace.")
@click.option("--trace-window", default=None, metavar="START:END", help="Seconds after the trace's first request.")
@click.option("--trace-scale-lengths", default=1.0, show_default=True, type=float,
              help="Multiply every length (and the prefix block size) by F, to fit a small model.")
@click.option("--prefix-share", default=0.0, show_default=True, type=float,
              help="Synthetic: this share of requests starts with one of 4 shared system prompts.")
@click.option("--prefix-tokens", default=None, type=int, help="Synthetic: the shared system prompts' length in tokens.")
@click.option("--sessions", default=None, metavar="FILE|synthetic",
              help="Multi-turn chat sessions: a JSONL file (one session a line) or synthetic (docs/workloads.md).")
@click.option("--turns", default=None, type=int, help="Sessions: turns each [synthetic: 3]; a file: at most T.")
@click.option("--think-time", default="0", show_default=True,
              help="Sessions: seconds between an answer and the next turn, or uniform:A-B | normal:mean=M,sd=S | "
                   "lognormal:mean=M,sd=S | exponential:mean=M.")
@click.option("--session-count", default=None, type=int, help="Sessions to run [synthetic: 8; a file: all its sessions].")
@click.option("--prompts-file", default=None, type=click.Path(path_type=Path), help="JSONL of {prompt, output_tokens?}.")
@click.option("--concurrency", default=None, type=int, help="Closed loop with C in flight; with --rate, a cap.")
@click.option("--rate", default=None, type=float, help="Open loop, requests/s.")
@click.option("--arrival", default="poisson", show_default=True, type=click.Choice(["poisson", "constant"]))
@click.option("--duration", default=None, type=float, help="Stop releasing requests after S seconds.")
@click.option("--warmup", default=2, show_default=True, type=int, help="Warm-up requests, excluded from metrics.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default="auto", show_default=True,
              help="Load-generator processes, or auto: from the self-check's measured capacity, the load and the free "
                   "cores; or ray:N: N load actors on the Ray cluster at RAY_ADDRESS (docs/ray.md).")
@click.option("--timeout", "request_timeout_s", default=600.0, show_default=True, type=float, help="Per-request timeout, s.")
@click.option("--results-dir", default="results", show_default=True, type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Run name (part of the run directory).")
@click.option("--no-telemetry", is_flag=True, help="Do not sample GPUs, processes or /metrics.")
@click.option("--self-check/--no-self-check", default=None,
              help="Calibrate the client against the built-in emulator first (default: above 100 streams).")
@click.option("--no-realtime", is_flag=True, help="Keep the load loop at normal scheduling priority.")
@click.option("--no-plots", is_flag=True, help="Do not draw timeline.png / timeline.html.")
@click.option("--steady-state", is_flag=True,
              help="Metrics only over requests sent between the load reaching its target and its last release "
                   "(the window is recorded in summary.json; docs/decide.md).")
@click.option("--launcher-opt", "launcher_opts", multiple=True, metavar="KEY=VALUE",
              help="Launcher option, e.g. instance_type=ml.g5.2xlarge, region=us-west-2, quantize=gptq.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Environment variable for the server (container or process), e.g. NCCL_P2P_DISABLE=1 (repeatable).")
@click.option("--max-error-rate", default=0.0, show_default=True, type=float,
              help="Exit non-zero when more than this fraction of requests failed.")
@click.option("--strict", is_flag=True, help="Exit non-zero (4) when the client did not keep up with the load.")
def run(**o) -> None:
    """Benchmark one server: launch (or use --endpoint), load, measure, report."""
    from rich.console import Console

    from servebench.outputs.console import render as render_report
    from servebench.run import orchestrate

    from servebench.run.options import OptionError, no_ignored_lengths, run_config

    try:
        no_ignored_lengths(o)
        cfg = run_config(o)
    except OptionError as e:
        _fail(str(e), 2)
    from servebench.launchers import LAUNCHERS

    if cfg.launcher not in LAUNCHERS:
        _fail(f"unknown launcher {cfg.launcher!r} (known: {', '.join(sorted(LAUNCHERS))})", 2)
    from servebench.signals import interruptible

    interruptible()
    console = Console(stderr=True)
    run_dir, error, code = None, None, 1
    with ExitStack() as answering:
        with _progress(console) as (update, phase):
            try:
                run_dir = orchestrate.run(cfg, progress=update, on_phase=phase)
            except orchestrate.RunError as e:
                if e.interrupted:
                    answering.enter_context(_answering())
                run_dir, error, code = e.run_dir, str(e), e.code
            except KeyboardInterrupt:  # before any server started (prompts, tokenizer): nothing to keep
                answering.enter_context(_answering())
                from servebench.signals import interrupt_cause

                cause, code = interrupt_cause()
                error = f"interrupted by {cause}"
            except (ValueError, OSError, RuntimeError) as e:  # config, spec, model, tokenizer: before any load
                error = first_line(e)
                code = 2 if isinstance(e, ValueError) else 1
        if run_dir is not None and (run_dir / "summary.json").exists() and (run_dir / "requests.parquet").exists():
            if _measured(run_dir):
                try:
                    render_report(run_dir, Console())
                except Exception:  # noqa: BLE001 - the run's own error line below is what matters
                    pass
        if error:
            click.echo(f"error: {_scrubbed(error, {**cfg.launcher_options, **cfg.env}, cfg.server_args)}", err=True)
            if run_dir is not None:
                click.echo(str(run_dir))
    if error:
        raise SystemExit(code)
    click.echo(str(run_dir))
    if o["strict"] and _client_fell_behind(run_dir):
        click.echo("error: the client did not keep up with the load (--strict); see the warning above", err=True)
        raise SystemExit(4)  # 3 is "results not fully written" (servebench.analysis.verdict)


def _answering():
    """Once a Ctrl-C (or SIGTERM) has stopped the run, what is left (the progress bar's end,
    the report, the error line) runs to the end: a second one is held, not raised as click's
    bare "Aborted!" with exit 1 and no error line (seen on a loaded host, where the emulator's
    teardown and the writes were done before a second Ctrl-C 0.3 s after the first)."""
    import os

    from servebench.signals import shielded

    # os.write, not click.echo: a handler printing while the main code prints to the same
    # stream raises "reentrant call" from Python's buffered writer
    return shielded(lambda sig: os.write(2, b"interrupt held: the run is already stopping\n"), deliver=False)


def _client_fell_behind(run_dir: Path) -> bool:
    import json

    s = json.loads((run_dir / "summary.json").read_text())
    return (s.get("client") or {}).get("kept_up") is False


def _measured(run_dir: Path) -> bool:
    import json

    s = json.loads((run_dir / "summary.json").read_text())
    return bool(s.get("completed") or s.get("failed"))


class _progress:
    """A rich progress bar on stderr, refreshed by the load loop's own ticker (no thread)."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, auto_refresh=False, transient=False)
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self.update, self.phase

    def phase(self, msg: str) -> None:
        self.console.print(f"[dim]{msg}…[/]")

    def update(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.bar.add_task("requests", total=total)
        self.bar.update(self.task, completed=done, total=total)
        self.bar.refresh()

    def __exit__(self, *exc) -> None:
        self.bar.stop()


def entry() -> None:
    """The console script. When torch was imported (transformers pulls it in beside a local
    vLLM), its bindings print hundreds of "leaked" lines during interpreter teardown; every
    result is written and every server stopped by then, so exit without the teardown."""
    import os
    import sys

    try:
        main.main(prog_name="servebench")  # raises SystemExit, as click does
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        if "torch" not in sys.modules:
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    entry()
