"""`python -m llama_cpp.server`, with one change: a non-UUID `X-Request-Id` header is accepted.

llama-cpp-python's server validates X-Request-Id as a UUID (starlette-context's RequestIdPlugin)
and answers HTTP 400 with an EMPTY body otherwise. servebench sends the record index there (the
emulator and the client calibration match records on it), so every request of a run would fail.
The validation is the only thing skipped: arguments, model loading and generation are the
package's own (runpy runs its __main__ exactly as `-m llama_cpp.server` does).
"""

from __future__ import annotations

import runpy


def main() -> None:
    from starlette_context.plugins.base import PluginUUIDBase

    PluginUUIDBase.validate_uuid = lambda self, value: None  # any id is kept as given
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
