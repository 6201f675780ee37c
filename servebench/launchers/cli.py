"""`servebench launch ENGINE --model M`: start a server, print its URL, hold it until Ctrl-C."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import click

from servebench.signals import interrupt_cause, interruptible
from servebench.launchers import LAUNCHERS, LaunchError, LaunchRequest, get_launcher
from servebench.engines.specs import load_spec


class BadInput(click.ClickException):
    """Bad input exits 2, as `servebench run` does; a server that fails exits 1."""

    exit_code = 2


def _gpus(_ctx, _param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(g) for g in value.split(",") if g.strip()]
    except ValueError:
        raise click.BadParameter(f"expected GPU indices like 0,1 (got {value!r})") from None


def _port(_ctx, _param, value: int | None) -> int | None:
    # an impossible port used to reach the engine, which died in its own truncated traceback
    if value is not None and not 1 <= value <= 65535:
        raise click.BadParameter(f"{value} is not a TCP port (1-65535)")
    return value


def _env(pairs) -> dict[str, str]:
    from servebench.config import check_env

    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise ValueError(f"--env: expected NAME=VALUE, got {bad[0]!r}")
    return check_env(dict(p.split("=", 1) for p in pairs))


def _model(model: str, launcher: str) -> str:
    """A preset name or local dir becomes a path; anything else (a hub id) passes through."""
    try:
        from servebench.engines.presets import resolve_model, served_by_name
    except ImportError:
        return model
    try:
        return str(resolve_model(model))
    except ValueError:
        if not served_by_name(model, launcher):
            raise
        return model


@dataclass(slots=True)
class LaunchOptions:
    """`servebench launch`'s options; the launcher-specific ones go to LaunchRequest.options."""

    model: str
    launcher_name: str
    gpus: list[int] | None
    port: int | None
    ready_timeout: float | None
    run_dir: Path | None
    env: tuple = ()
    dry_run: bool = False
    served_model_name: str | None = None
    quantize: str | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    image: str | None = None
    endpoint: str | None = None
    instance_type: str | None = None
    role_arn: str | None = None
    region: str | None = None

    def launcher_options(self) -> dict:
        """The options given, named as the launchers read them (an endpoint is also a base_url)."""
        named = {"served_model_name": self.served_model_name, "quantize": self.quantize,
                 "max_input_tokens": self.max_input_tokens, "max_total_tokens": self.max_total_tokens,
                 "image": self.image, "base_url": self.endpoint, "endpoint": self.endpoint,
                 "instance_type": self.instance_type, "role_arn": self.role_arn, "region": self.region}
        return {k: v for k, v in named.items() if v is not None}


def _seconds(v: float | None) -> float | None:
    """A time-out is finite and above 0: NaN reached the HTTP client's settimeout as a traceback."""
    if v is not None and not (math.isfinite(v) and v > 0):
        raise click.BadParameter(f"expected a finite number of seconds above 0, got {v:g}")
    return v


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("engine")
@click.option("--model", "-m", required=True, help="Preset name, model directory, or hub id.")
@click.option("--launcher", "launcher_name", type=click.Choice(sorted(LAUNCHERS)), default="process", show_default=True)
@click.option("--gpus", callback=_gpus, help="GPU indices, e.g. 0,1 (sets the engine's tensor-parallel flag).")
@click.option("--port", type=int, callback=_port, help="Host port (default: a free one).")
@click.option("--served-model-name", help="Name the API expects (default: the model).")
@click.option("--quantize", help="Quantization method, passed with the engine's own flag.")
@click.option("--max-input-tokens", type=int)
@click.option("--max-total-tokens", type=int)
@click.option("--ready-timeout", type=float, default=None, callback=lambda ctx, p, v: _seconds(v),
              help="Seconds to wait for start-up (default: sized for the model's weights, docs/first-gpu-run.md).")
@click.option("--run-dir", type=click.Path(path_type=Path), help="Where server.log goes (default: a temp dir).")
@click.option("--image", help="docker: image reference instead of the spec's image:tag.")
@click.option("--endpoint", help="external/sagemaker: URL or sagemaker://<name> of a running server.")
@click.option("--instance-type", help="sagemaker: e.g. ml.g5.2xlarge.")
@click.option("--role-arn", help="sagemaker: execution role for the model.")
@click.option("--region", help="sagemaker: AWS region.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Environment variable for the server (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the docker command, process command or SageMaker configuration; start nothing.")
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED)
def launch(engine, server_args, **opts):
    """Start ENGINE serving MODEL and hold it until Ctrl-C. Arguments after `--` go to the engine."""
    o = LaunchOptions(**opts)
    launcher_name = o.launcher_name
    try:
        load_spec(engine)  # a typo in the engine fails before any model is resolved or generated
        req = LaunchRequest(engine=engine, model=_model(o.model, launcher_name), gpus=o.gpus, port=o.port,
                            extra_args=list(server_args), ready_timeout_s=o.ready_timeout, run_dir=o.run_dir,
                            options=o.launcher_options(), env=_env(o.env))
    except ValueError as e:
        raise BadInput(str(e)) from None
    launcher = get_launcher(launcher_name)
    if o.dry_run:
        try:
            click.echo(launcher.dry_run(req))
        except ValueError as e:
            raise BadInput(str(e)) from None
        except LaunchError as e:
            raise click.ClickException(str(e)) from None
        return
    interruptible()  # SIGTERM (a supervisor) and SIGINT (even in a background job) tear down
    ready = False
    try:
        click.echo(f"starting {engine} with the {launcher_name} launcher ...", err=True)
        server = launcher.start(req)
        ready = True
        click.echo(f"{engine} ready in {server.time_to_ready_s or 0:.1f}s; log: {server.info.get('log', '-')}", err=True)
        if "command" in server.info:
            click.echo(f"command: {server.info['command']}", err=True)
        click.echo(server.base_url)
        click.echo("press Ctrl-C to stop", err=True)
        _hold(launcher)
    except LaunchError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo("stopping ..." if ready else "interrupted during start-up; stopping ...", err=True)
    finally:
        try:
            launcher.stop()
        except KeyboardInterrupt:  # pressed again during the stop: held until it ended, and stopping is the answer
            pass
    click.echo("stopped", err=True)
    if not ready:  # the server never served: a script waiting on it must not read success
        raise SystemExit(interrupt_cause()[1])


def _hold(launcher) -> None:
    """Sleep until Ctrl-C; leave early if a launched process or container dies."""
    exited = getattr(launcher, "_exited", None)
    while True:
        time.sleep(1.0)
        gone = exited() if exited else None
        if gone is not None:
            raise LaunchError(f"server {gone}; see its log")
