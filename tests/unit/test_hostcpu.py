"""servebench.engines.hostcpu: the dtype rule for CPU hosts and slow-path detection in server logs."""

from __future__ import annotations

from servebench.engines.hostcpu import choose_dtype, cpu_flags, slow_path_lines, slow_path_warning
from servebench.launchers.base import LaunchRequest
from servebench.launchers.process import ProcessLauncher
from servebench.engines.specs import CpuDtype, load_spec

RULE = CpuDtype(flag="--dtype", slow_path_log=["Failed to create oneDNN linear"])
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
SAPPHIRE = "flags\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_cpu_flags_parses_the_first_flags_line():
    assert {"avx2", "fma"} <= cpu_flags(EPYC) and "avx512_bf16" not in cpu_flags(EPYC)
    assert cpu_flags("model name: x\n") == set()


def test_no_native_bf16_gets_float32_with_the_reason():
    args, rec = choose_dtype(RULE, [], None, flags=cpu_flags(EPYC), gpu=False)
    assert args == ["--dtype", "float32"]
    assert rec["dtype"] == "float32" and rec["cpu_flags"] == ["avx2"]
    assert "lacks avx512_bf16 and amx_bf16" in rec["why"]


def test_native_bf16_keeps_bfloat16():
    args, rec = choose_dtype(RULE, [], None, flags=cpu_flags(SAPPHIRE), gpu=False)
    assert args == ["--dtype", "bfloat16"] and "amx_bf16, avx512_bf16" in rec["why"]


def test_user_flag_and_gpu_hosts_are_left_alone():
    for extra in (["--dtype", "bfloat16"], ["--dtype=half"]):
        args, rec = choose_dtype(RULE, extra, None, flags=set(), gpu=False)
        assert args == [] and rec["source"] == "user" and rec["dtype"] == extra[-1].split("=")[-1]
    assert choose_dtype(RULE, [], [0], flags=set(), gpu=False)[0] == []
    assert choose_dtype(RULE, [], None, flags=set(), gpu=True)[1]["source"] == "engine"
    assert choose_dtype(None, [], None) == ([], None)


def test_process_launcher_puts_the_dtype_before_the_users_args(monkeypatch):
    monkeypatch.setattr("servebench.launchers.process.choose_dtype",
                        lambda rule, extra, gpus: choose_dtype(rule, extra, gpus, flags=cpu_flags(EPYC), gpu=False))
    L = ProcessLauncher(python="py")
    argv = L.command(load_spec("vllm"), LaunchRequest(engine="vllm", model="/m", extra_args=["--seed", "1"]), 9)
    assert argv[-4:] == ["--dtype", "float32", "--seed", "1"]
    assert L.dtype["dtype"] == "float32"
    # an engine without the rule gets nothing added
    argv = L.command(load_spec("transformers"), LaunchRequest(engine="transformers", model="/m"), 9)
    assert "--dtype" not in argv and L.dtype is None


def test_slow_path_lines_and_warning(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("INFO loading\nWARNING [utils.py:598] Failed to create oneDNN linear, fallback to torch linear."
                   " Exception: bf16 unsupported\nINFO ready\n")
    lines = slow_path_lines(log, RULE.slow_path_log)
    assert len(lines) == 1 and "fallback to torch linear" in lines[0]
    w = slow_path_warning({"slow_path": lines, "dtype": {"dtype": "bfloat16"}})
    assert w.startswith("CPU server ran a slow path (dtype bfloat16): WARNING")
    assert slow_path_lines(tmp_path / "missing.log", RULE.slow_path_log) == []
    assert slow_path_warning({}) is None


def test_served_name_template_for_engines_pinned_to_their_model_path():
    L = ProcessLauncher(python="py")
    req = LaunchRequest(engine="transformers", model="/models/tiny", options={"served_model_name": "tiny"})
    assert L.served(load_spec("transformers"), req) == "/models/tiny"
    assert L.served(load_spec("vllm"), req) == "tiny"
