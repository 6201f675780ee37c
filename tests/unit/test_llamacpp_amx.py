"""llama.cpp's AMX weight buffers are off on an AMX host (their q8_0 path segfaulted on the
tiny preset there), on elsewhere, and the user can force either way."""

from __future__ import annotations

import llama_cpp.llama_cpp as lib

from servebench.engines.llamacpp_server import no_extra_buffers, repack_off

AMD_EPYC = {"avx2", "fma", "sse4_2"}
XEON_SPR = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}


def test_amx_hosts_turn_the_extra_buffers_off_and_others_keep_them():
    off, why = repack_off(XEON_SPR, env={})
    assert off and "amx_int8" in why and "20824" in why
    assert repack_off(AMD_EPYC, env={}) == (False, "no AMX on this CPU")


def test_the_user_can_force_either_way():
    assert repack_off(XEON_SPR, env={"SERVEBENCH_LLAMACPP_REPACK": "1"})[0] is False
    assert repack_off(AMD_EPYC, env={"SERVEBENCH_LLAMACPP_REPACK": "0"})[0] is True
    assert repack_off(XEON_SPR, env={"SERVEBENCH_LLAMACPP_REPACK": "yes"})[0] is True  # not 0/1: the host decides


def test_the_switch_reaches_the_library_model_params(monkeypatch):
    # the real compiled library: a renamed field would break the switch silently otherwise
    monkeypatch.setattr(lib, "llama_model_default_params", lib.llama_model_default_params)
    assert lib.llama_model_default_params().use_extra_bufts is True
    no_extra_buffers()
    assert lib.llama_model_default_params().use_extra_bufts is False
