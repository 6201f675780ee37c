"""`servebench run` launching the other real CPU engines (process launcher, tiny preset):
transformers serve, and llama.cpp (llama-cpp-python's server) on f16 and q8_0 GGUF files.

Small loads: these engines are slow on 2 shared cores. The tests never skip; without an engine
they fail and say how to install it (scripts/setup.sh installs both).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from tests.integration._cli import load_run, servebench

pytestmark = pytest.mark.integration

INPUT, OUTPUT, N = 64, 8, 8


def require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{what} is not importable from {sys.executable} (module {module}): run `bash scripts/setup.sh` "
                    "(SERVEBENCH_ENGINES must include it) and use .venv/bin/python -m pytest", pytrace=False)


def run_engine(tmp_path, backend: str, *extra: str):
    res = servebench("run", "--backend", backend, "--model", "tiny", "--launcher", "process",
                     "--requests", str(N), "--input-tokens", str(INPUT), "--output-tokens", str(OUTPUT),
                     "--concurrency", "4", "--warmup", "1", "--results-dir", str(tmp_path), "--no-plots",
                     *extra, cwd=tmp_path, timeout=900)
    run_dir = res.expect_ok()
    run, summary, df = load_run(run_dir)
    m = df[~df["warmup"]]
    assert len(m) == N and (m["status"] == 200).all() and m["error"].isna().all(), m[["status", "error"]]
    assert summary["status"] == "complete" and summary["completed"] == N and summary["failed"] == 0
    assert (m["finish_reason"] == "length").all()
    for r in m.itertuples():
        t = np.asarray(r.token_ns)
        assert r.sent_ns < r.first_byte_ns <= t[0] and t[-1] <= r.end_ns and (np.diff(t) >= 0).all()
    return run, summary, m, res


def test_transformers_serve_end_to_end(tmp_path):
    require("accelerate", "accelerate (transformers serve needs it)")
    require("fastapi", "transformers[serving]")
    run, summary, m, res = run_engine(tmp_path, "transformers")
    info = run["server"]["info"]
    assert "--continuous-batching" in info["argv"] and info["served_model_name"] == run["model_dir"]
    # it rejects ignore_eos with 422: the probe dropped it once, and the run says what that means
    probe = info["request_probe"]
    assert probe["dropped"] == ["ignore_eos"] and probe["rejected_status"] == 422 and probe["status"] == 200
    assert any("ignore_eos" in w and "output length no longer forced" in w for w in summary["warnings"])
    assert "server rejected request field(s) ignore_eos" in res.stdout
    # no [DONE] in its streams, usage in the finish chunk: complete, server-counted
    assert (m["server_output_tokens"] == OUTPUT).all() and (m["server_input_tokens"] == INPUT).all()
    assert m["token_counts"].map(lambda c: int(np.sum(c))).eq(OUTPUT).all()
    assert summary["output_tokens"]["server_reported"] == N and summary["output_tokens"]["client_counted"] == 0


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_llamacpp_end_to_end_on_gguf(tmp_path, qtype):
    require("llama_cpp", "llama-cpp-python[server]")
    require("gguf", "gguf")
    run, summary, m, _ = run_engine(tmp_path, "llamacpp", "--launcher-opt", f"quantize={qtype}")
    info = run["server"]["info"]
    assert info["gguf"]["type"] == qtype and info["gguf"]["file"].endswith(f"/gguf/{qtype}.gguf")
    assert info["argv"][info["argv"].index("--model") + 1] == info["gguf"]["file"]
    # min_tokens = max_tokens forces the length; the server streams no usage: client-counted
    assert m["token_counts"].map(lambda c: int(np.sum(c))).eq(OUTPUT).all()
    assert summary["output_tokens"]["client_counted"] == N
    assert summary["output_tokens"]["shortfall_requests"] == 0
    # on an AMX host llama.cpp's AMX weight buffers are off (their q8_0 path segfaulted there);
    # the server log says which way this host went
    from servebench.engines.hostcpu import cpu_flags

    text = next(tmp_path.rglob("server.log")).read_text()  # this test's one run
    expect = "off (CPU has amx_int8" if "amx_int8" in cpu_flags() else "on (no AMX on this CPU)"
    assert f"servebench: llama.cpp weight repacking {expect}" in text
