"""What a launch would run, for one run configuration: the exact docker command line, process
command or SageMaker model/endpoint configuration. Used by `sweep --dry-run --show-commands`
(and, through each launcher's dry_run, by `launch --dry-run`); nothing is started or created."""

from __future__ import annotations

from typing import Any

from servebench.launchers import LaunchError, LaunchRequest, get_launcher


def request_of(cfg: Any, options: dict[str, Any] | None = None) -> LaunchRequest:
    """The LaunchRequest a ServerSession builds from a RunConfig (the model not yet resolved);
    `options`: what the run adds (run.frontdoor's raised cap)."""
    opts: dict[str, Any] = {**cfg.launcher_options, **(options or {}),
                            "served_model_name": cfg.served_model_name or cfg.model}
    if cfg.api:
        opts["adapter"] = cfg.api
    if cfg.endpoint:
        opts["base_url"] = cfg.endpoint
    ready = opts.pop("ready_timeout_s", None)
    return LaunchRequest(engine=cfg.backend, model=cfg.model, gpus=cfg.gpus, extra_args=list(cfg.server_args),
                         env=dict(cfg.env), options=opts, ready_timeout_s=float(ready) if ready else None)


def describe(cfg: Any, options: dict[str, Any] | None = None) -> str:
    """The launch of `cfg` as text; a configuration that cannot launch says why, in one line.
    The model is shown as configured: a preset name becomes its directory only at launch."""
    try:
        return get_launcher(cfg.launcher).dry_run(request_of(cfg, options))
    except (LaunchError, ValueError) as e:
        return f"(cannot launch: {e})"
