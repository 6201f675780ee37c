"""`servebench run`'s options as a RunConfig: each bad value one line, before anything starts."""

from __future__ import annotations

import click


class OptionError(ValueError):
    """A bad option or a combination the run would not read; the message is the one line."""


def ints(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated GPU indices, got {value!r}") from None


def run_config(o: dict):
    """`run`'s options as a RunConfig; a bad value is a one-line usage error."""
    from pydantic import ValidationError

    from servebench.config import RunConfig

    try:
        return RunConfig(
            backend=o["backend"], model=o["model"], served_model_name=o["served_model_name"], endpoint=o["endpoint"],
            launcher=o["launcher"], api=o["api"], gpus=ints(o["gpus"]), server_args=list(o["server_args"]),
            results_dir=o["results_dir"], name=o["name"], telemetry=not o["no_telemetry"],
            max_error_rate=o["max_error_rate"], plots=not o["no_plots"],
            steady_state=o["steady_state"], launcher_options=_kv(o["launcher_opts"]),
            env=_kv(o["env"], "--env"),
            load=dict(concurrency=o["concurrency"], rate=o["rate"], arrival=o["arrival"],
                      duration_s=o["duration"], warmup=o["warmup"], seed=o["seed"], workers=o["workers"],
                      **({"requests": o["requests"]} if o["requests"] is not None and not o["trace"] else {}),
                      request_timeout_s=o["request_timeout_s"], self_check=o["self_check"], realtime=not o["no_realtime"]),
            workload=_workload(o),
        )
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))  # empty for a check across options: the message names them
        raise OptionError(f"{f'invalid option {where}: ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None


def _workload(o: dict) -> dict:
    """The workload block of RunConfig from `run`'s options."""
    trace = None
    if o["trace"]:
        trace = dict(source=o["trace"], format=o["trace_format"], columns=o["trace_columns"], speed=o["trace_speed"],
                     window=o["trace_window"], requests=o["requests"], scale_lengths=o["trace_scale_lengths"])
    elif o["trace_format"] or o["trace_columns"] or o["trace_window"] or (o["trace_speed"], o["trace_scale_lengths"]) != (1, 1):
        raise OptionError("--trace-format, --trace-columns, --trace-window, --trace-speed and --trace-scale-lengths need --trace")
    sessions = None
    if o["sessions"]:
        sessions = dict(source=o["sessions"], turns=o["turns"], think_time=o["think_time"], count=o["session_count"])
    elif o["turns"] is not None or o["session_count"] is not None or o["think_time"] not in ("0", 0):
        raise OptionError("--turns, --think-time and --session-count need --sessions")
    return dict(input_tokens=o["input_tokens"], output_tokens=o["output_tokens"], prompts_file=o["prompts_file"],
                tokenizer=o["tokenizer"], max_input_tokens=o["max_input_tokens"],
                max_output_tokens=o["max_output_tokens"], prefix_share=o["prefix_share"],
                prefix_tokens=o["prefix_tokens"], trace=trace, sessions=sessions)


def no_ignored_lengths(o: dict) -> None:
    """A length the workload does not read is refused, not dropped: `--prompts-file p
    --input-tokens 2048` measured the file's lengths while the user believed it was 2048."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = lambda name: ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)  # noqa: E731
    brings = {"input_tokens": [("--trace", o["trace"]), ("--prompts-file", o["prompts_file"]),
                               ("--sessions FILE", o["sessions"] not in (None, "synthetic"))],
              "output_tokens": [("--trace", o["trace"])]}
    for name, sources in brings.items():
        source = next((flag for flag, on in sources if on), None)
        if source and given(name):
            raise OptionError(f"--{name.replace('_', '-')} is not read with {source}, which brings its own lengths")


def _kv(pairs, hint: str = "--launcher-opt") -> dict[str, str]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {p!r}", param_hint=hint)
        out[key.strip()] = value
    return out
