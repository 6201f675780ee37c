"""`python -m llama_cpp.server`, with two changes: a non-UUID `X-Request-Id` header is accepted,
and on a CPU with AMX-INT8 llama.cpp's AMX weight buffers are off.

llama-cpp-python's server validates X-Request-Id as a UUID (starlette-context's RequestIdPlugin)
and answers HTTP 400 with an EMPTY body otherwise. servebench sends the record index there (the
emulator and the client calibration match records on it), so every request of a run would fail.
The validation is the only thing skipped: arguments, model loading and generation are the
package's own (runpy runs its __main__ exactly as `-m llama_cpp.server` does).

AMX: on an Intel Xeon with AMX-INT8, llama.cpp repacks quantized weights into "AMX" buffers and
its first generation segfaulted there on the `tiny` preset at q8_0 (f16 worked; AMD hosts have
no AMX and never take the path). The crash is in ggml_backend_amx_mul_mat, machine-dependent,
and unfixed upstream (ggml-org/llama.cpp#20824; stanfordnlp/dspy#10079 traced the same segfault
to the AMX buffer). The library's own switch for those buffers, `use_extra_bufts`, is turned off
on such a host: weights stay in plain CPU buffers (llama-server's `--no-repack`). The choice is
printed to the server log. SERVEBENCH_LLAMACPP_REPACK=1 keeps the buffers, =0 turns them off
on any host.
"""

from __future__ import annotations

import os
import runpy
import sys


def repack_off(flags: set[str], env: dict[str, str] | None = None) -> tuple[bool, str]:
    """(turn the extra weight buffers off, why)."""
    forced = (os.environ if env is None else env).get("SERVEBENCH_LLAMACPP_REPACK", "").strip()
    if forced in ("0", "1"):
        return forced == "0", f"SERVEBENCH_LLAMACPP_REPACK={forced}"
    if "amx_int8" in flags:
        return True, "CPU has amx_int8: llama.cpp's AMX weight buffers crash (ggml-org/llama.cpp#20824)"
    return False, "no AMX on this CPU"


def no_extra_buffers() -> None:
    """Every model loaded from now on keeps its weights in plain CPU buffers."""
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params


def main() -> None:
    from starlette_context.plugins.base import PluginUUIDBase

    from servebench.engines.hostcpu import cpu_flags

    PluginUUIDBase.validate_uuid = lambda self, value: None  # any id is kept as given
    off, why = repack_off(cpu_flags())
    if off:
        no_extra_buffers()
    print(f"servebench: llama.cpp weight repacking {'off' if off else 'on'} ({why})", file=sys.stderr, flush=True)
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
