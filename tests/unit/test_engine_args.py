"""Every command line servebench renders for an engine parses with that engine's own argument
definitions at the pinned version.

vLLM: its real parser (make_arg_parser on a FlexibleArgumentParser, as `vllm serve` and the
api_server module build it) from the installed vLLM. TGI, LightLLM, SGLang: the argument lists
of their sources at the pinned tags, stored in tests/fixtures/engine_args/ with where they came
from, rebuilt here as a parser with the engine's own abbreviation rule (argparse allows unique
prefixes such as SGLang's `--tp` for `--tp-size`; TGI's clap does not). Every combination of the
optional values a spec can add (GPUs, each quantization value, the token limits) is rendered for
the process and the docker section; a flag or value the pinned engine does not have fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
from pathlib import Path

import pytest

from servebench.engines.specs import OPTIONAL_KEYS, SpecError, load_spec, render_command

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engine_args"
PINNED = {"tgi": "tgi-3.3.5.json", "lightllm": "lightllm-v1.0.1.json", "sglang": "sglang-v0.4.7.post1.json"}
VALUES = {"python": "python3", "model": "/models/m", "served_model_name": "m", "host": "127.0.0.1", "port": 8123}


def fixture(engine: str) -> dict:
    return json.loads((FIXTURES / PINNED[engine]).read_text())


def fixture_parser(doc: dict) -> argparse.ArgumentParser:
    """The engine's flags as a parser, with its own rule for abbreviations."""
    p = argparse.ArgumentParser(prog=doc["engine"], allow_abbrev=doc["allow_abbrev"], add_help=False,
                                exit_on_error=False)
    for flag, e in doc["flags"].items():
        names = [flag, *e.get("aliases", [])]
        action = e.get("action", "store")
        if action == "store_true":
            p.add_argument(*names, action="store_true")
        elif action == "append":
            p.add_argument(*names, action="append")
        elif action == "append_list":
            p.add_argument(*names, action="append", nargs="*")
        else:
            p.add_argument(*names, nargs=e.get("nargs"), choices=e.get("choices"))
    return p


def rejection(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """Why the parser refuses argv (unknown flag, bad choice, stray value), or None."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            _, unknown = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit) as e:
        return str(e) if isinstance(e, argparse.ArgumentError) else err.getvalue().strip().splitlines()[-1]
    return f"unrecognized arguments: {' '.join(unknown)}" if unknown else None


def combinations(spec) -> list[dict]:
    """Every set of optional values the spec can take: GPUs x each quantization x token limits."""
    axes = [("gpus", [None, [0], [0, 1]])]
    if spec.flags.quantize:
        axes.append(("quantize", [None, *spec.flags.quantize_values]))
    for key in ("max_input_tokens", "max_total_tokens", "max_concurrent_requests"):
        if getattr(spec.flags, key):
            axes.append((key, [None, 2048]))
    names = [a for a, _ in axes]
    return [dict(zip(names, vals)) for vals in itertools.product(*(v for _, v in axes))]


def rendered(spec, section, combo: dict) -> list[str]:
    """The engine's own arguments: the command (executable, `-m module`) taken off."""
    options = {k: v for k, v in combo.items() if k in OPTIONAL_KEYS and v is not None}
    argv = render_command(spec, section, VALUES, gpus=combo.get("gpus"), options=options)
    return argv[len(section.command):]


def sections(spec):
    return [(name, s) for name, s in (("process", spec.process), ("docker", spec.docker)) if s is not None]


@pytest.mark.parametrize("engine", sorted(PINNED))
def test_fixture_says_where_it_came_from_and_matches_the_pin(engine):
    doc = fixture(engine)
    src = doc["source"]
    assert src["repository"] and src["tag"] and src["path"] and src["taken_from"], src
    if engine in ("tgi", "lightllm"):  # read from a repository copy: which commit, and how to redo it at the tag
        assert len(src["commit"]) == 40 and int(src["commit"], 16) >= 0 and "generate.py" in src["regenerate"], src
    assert doc["flags"] and all(f.startswith("--") for f in doc["flags"])
    # a new image tag needs that version's own argument list: the spec and its fixture move together
    tag = load_spec(engine).docker.tag
    assert tag == doc["version"] or tag.startswith(doc["version"] + "-"), (tag, doc["version"])


@pytest.mark.parametrize("engine", sorted(PINNED))
def test_every_rendered_command_parses_with_the_pinned_engines_flags(engine):
    spec, doc = load_spec(engine), fixture(engine)
    parser = fixture_parser(doc)
    documented = {f: set(e["documented_values"]) for f, e in doc["flags"].items() if "documented_values" in e}
    checked = 0
    for (name, section), combo in itertools.product(sections(spec), combinations(spec)):
        argv = rendered(spec, section, combo)
        assert rejection(parser, argv) is None, (engine, name, combo, argv, rejection(parser, argv))
        for flag, allowed in documented.items():  # free-text flags whose values the source names
            if flag in argv:
                assert argv[argv.index(flag) + 1] in allowed, (engine, flag, argv)
        checked += 1
    assert checked >= 2 * 3 * 2  # both sections, every GPU count, quantized or not


def test_the_checker_refuses_what_the_engines_refuse():
    """The fixtures are not permissive: flags the issue found wrong are refused by them."""
    lightllm, tgi, sglang = (fixture_parser(fixture(e)) for e in ("lightllm", "tgi", "sglang"))
    assert "--max_req_input_len" in rejection(lightllm, ["--model_dir", "/m", "--max_req_input_len", "1024"])
    assert "gptq" not in fixture(engine="lightllm")["flags"]["--quant_type"]["documented_values"]
    assert "--num_shard" in rejection(tgi, ["--model-id", "m", "--num_shard", "2"])
    assert "--num-sh" in rejection(tgi, ["--model-id", "m", "--num-sh", "2"])  # clap: no abbreviations
    assert "invalid choice" in rejection(tgi, ["--quantize", "gguf"])
    assert "invalid choice" in rejection(sglang, ["--quantization", "compressed-tensors"])  # not in 0.4.7.post1
    assert rejection(sglang, ["--model-path", "m", "--tp", "2"]) is None  # argparse prefix of --tp-size
    assert rejection(sglang, ["--model-path", "m", "--enable-metrics", "--context-length", "4096"]) is None


def test_lightllm_spec_has_no_stale_flags():
    spec = load_spec("lightllm")
    assert spec.flags.max_input_tokens is None and spec.flags.max_total_tokens == "--max_req_total_len"
    with pytest.raises(SpecError, match="lightllm has no flag for max_input_tokens"):
        render_command(spec, spec.docker, VALUES, options={"max_input_tokens": 1024})
    with pytest.raises(SpecError, match="does not know quantization 'gptq'"):
        render_command(spec, spec.docker, VALUES, options={"quantize": "gptq"})


@pytest.fixture(scope="module")
def vllm_parser():
    # no skip: scripts/setup.sh always installs vLLM, and a vLLM that fails to import must fail here
    import vllm  # noqa: F401
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:  # vLLM <= 0.11 keeps it beside the OpenAI server
        from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="vllm"))


def vllm_rejection(parser, argv: list[str]) -> str | None:
    """What `vllm serve` says before it starts anything: its parser, its own check of the parsed
    arguments, and the engine arguments built from them."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    try:
        from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    except ImportError:
        from vllm.entrypoints.openai.cli_args import validate_parsed_serve_args
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1]
    try:
        validate_parsed_serve_args(args)
        AsyncEngineArgs.from_cli_args(args)
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def test_every_rendered_vllm_command_parses_with_vllms_own_parser(vllm_parser):
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    spec = load_spec("vllm")
    assert set(spec.flags.quantize_values) <= set(QUANTIZATION_METHODS)  # the parser itself takes any string
    dtypes = [[], [spec.cpu_dtype.flag, spec.cpu_dtype.fast], [spec.cpu_dtype.flag, spec.cpu_dtype.fallback]]
    checked = 0
    for (name, section), combo, dtype in itertools.product(sections(spec), combinations(spec), dtypes):
        argv = rendered(spec, section, combo) + dtype  # the process launcher's CPU dtype comes after
        why = vllm_rejection(vllm_parser, argv)
        assert why is None, (name, combo, argv, why)
        checked += 1
    assert checked >= 2 * 3 * 3
    assert "--max-num-batched-tokenz" in vllm_rejection(vllm_parser, ["--model", "m", "--max-num-batched-tokenz", "1"])


def emitted_flags(spec) -> set[str]:
    """Every option string a spec can put on a command line: its flag table, the options in its
    process and docker templates, and the CPU dtype flag."""
    out = {f for f in spec.flags.model_dump().values() if isinstance(f, str)}  # every flag field, new ones too
    for _, section in sections(spec):
        out |= {a.split("=", 1)[0] for a in section.args if a.startswith("-")}
    if getattr(spec, "cpu_dtype", None) is not None:
        out.add(spec.cpu_dtype.flag)
    return out


@pytest.mark.parametrize("engine", sorted(PINNED))
def test_every_flag_a_spec_emits_is_one_the_pinned_engine_has(engine):
    """Not only the combinations rendered above: each option string anywhere in the spec, spelled
    as the engine takes it (argparse takes a unique prefix, SGLang's --tp for --tp-size; clap none)."""
    spec, doc = load_spec(engine), fixture(engine)
    known = {n for f, e in doc["flags"].items() for n in (f, *e.get("aliases", []))}

    def takes(flag: str) -> bool:
        return flag in known or (doc["allow_abbrev"] and len([k for k in known if k.startswith(flag)]) == 1)

    emitted = emitted_flags(spec)
    assert emitted, engine
    missing = sorted(f for f in emitted if not takes(f))
    assert not missing, (engine, missing, doc["source"]["tag"])


def test_every_flag_the_vllm_spec_emits_is_in_vllms_parser(vllm_parser):
    known = set(vllm_parser._option_string_actions)
    missing = sorted(f for f in emitted_flags(load_spec("vllm")) if f not in known)
    assert not missing


def test_a_spec_flag_the_engine_lacks_fails_the_check():
    spec = load_spec("tgi").model_copy(deep=True)
    spec.flags.max_input_tokens = "--max-input-tokenz"
    known = set(fixture("tgi")["flags"])
    assert sorted(f for f in emitted_flags(spec) if f not in known) == ["--max-input-tokenz"]


GENERATE = FIXTURES / "generate.py"


def _generator():
    import importlib.util

    s = importlib.util.spec_from_file_location("engine_args_generate", GENERATE)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod


def test_generator_reads_clap_args_and_an_argparse_parser(tmp_path):
    gen = _generator()
    rs = tmp_path / "main.rs"
    rs.write_text('''
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// first
    Fast,
    #[clap(name = "bf16")]
    BFloat16,
    NoStack,
}

#[derive(Parser, Debug)]
struct Args {
    /// the model
    #[clap(default_value = "m", long, env)]
    model_id: String,

    #[clap(default_value = "3000", long, short, env)]
    port: u16,
    #[clap(long, env, value_enum)]
    mode: Option<Mode>,
    #[clap(long, env)]
    sharded: Option<bool>,
    #[clap(long, env)]
    json_output: bool,
    positional_thing: String,
}
''')
    doc = gen.generate("tgi", rs, "v9.9.9", "0" * 40)
    assert doc["flags"] == {"--model-id": {}, "--port": {"aliases": ["-p"]},
                            "--mode": {"choices": ["fast", "bf16", "no-stack"]},
                            "--sharded": {"choices": ["true", "false"]}, "--json-output": {"action": "store_true"}}
    assert doc["source"]["commit"] == "0" * 40 and doc["source"]["tag"] == "v9.9.9" and doc["version"] == "9.9.9"
    assert fixture_parser(doc).parse_args(["--port", "1", "--mode", "bf16"]).mode == "bf16"

    py = tmp_path / "api_cli.py"
    py.write_text("import argparse\n\ndef make_argument_parser():\n    p = argparse.ArgumentParser()\n"
                  "    p.add_argument('--tp', type=int, default=1)\n"
                  "    p.add_argument('--mode', nargs='+', default=[])\n"
                  "    p.add_argument('--trust_remote_code', action='store_true')\n"
                  "    p.add_argument('--key', action='append', default=[])\n"
                  "    p.add_argument('--trunc', choices=[None, 'head'], default=None)\n    return p\n")
    doc = gen.generate("lightllm", py, "v1.0.1", "1" * 40)
    assert doc["flags"] == {"--tp": {}, "--mode": {"nargs": "+"}, "--trust_remote_code": {"action": "store_true"},
                            "--key": {"action": "append"}, "--trunc": {"choices": ["head"]}}
    # --check: a fixture that names a flag the source lacks is refused, flag by flag
    stale = dict(doc, flags={**doc["flags"], "--max_req_input_len": {}})
    f = tmp_path / "stale.json"
    f.write_text(json.dumps(stale))
    assert gen.differences(stale, doc) == ["only in the fixture: --max_req_input_len"]
    assert gen.main(["lightllm", str(py), "--tag", "v1.0.1", "--commit", "1" * 40, "--check", str(f)]) == 1
    f.write_text(json.dumps(doc))
    assert gen.main(["lightllm", str(py), "--tag", "v1.0.1", "--commit", "1" * 40, "--check", str(f)]) == 0
