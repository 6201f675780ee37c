"""servebench.engines.gguf_export: the tiny preset as GGUF, read back with the gguf package's reader."""

from __future__ import annotations

import json

import gguf  # a servebench dependency (pyproject.toml)
import numpy as np
import pytest

from servebench.engines.gguf_export import convert, ensure_gguf, permute, read_safetensors
from servebench.launchers.base import LaunchRequest
from servebench.launchers.process import ProcessLauncher
from servebench.engines.presets import resolve_model
from servebench.engines.specs import SpecError, load_spec


@pytest.fixture(scope="module")
def tiny():
    return resolve_model("tiny")


def fields(reader) -> dict:
    out = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        out[name] = f.contents()
    return out


@pytest.mark.parametrize("qtype, ggml", [("f16", "F16"), ("q8_0", "Q8_0")])
def test_converted_file_has_llama_metadata_tensors_and_type(tiny, tmp_path, qtype, ggml):
    out = convert(tiny, tmp_path / f"{qtype}.gguf", qtype)
    r = gguf.GGUFReader(out)
    f = fields(r)
    cfg = json.loads((tiny / "config.json").read_text())
    assert f["general.architecture"] == "llama"
    assert f["llama.block_count"] == cfg["num_hidden_layers"]
    assert f["llama.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert f["llama.embedding_length"] == cfg["hidden_size"]
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "gpt-2"
    assert f["tokenizer.ggml.bos_token_id"] == 1 and f["tokenizer.ggml.eos_token_id"] == 2
    tokens = f["tokenizer.ggml.tokens"]
    assert len(tokens) == cfg["vocab_size"] and tokens[:3] == ["<unk>", "<s>", "</s>"]
    byname = {t.name: t for t in r.tensors}
    assert len(byname) == 2 + 9 * cfg["num_hidden_layers"] + 1  # embd, norm, output + 9 per layer
    assert byname["blk.0.attn_q.weight"].tensor_type.name == ggml
    assert byname["blk.0.attn_norm.weight"].tensor_type.name == "F32"  # 1-D stays float32
    assert byname["token_embd.weight"].tensor_type.name == ggml


def test_q_rows_are_permuted_to_llamacpp_rope_layout(tiny, tmp_path):
    out = convert(tiny, tmp_path / "f32.gguf", "f32")
    r = gguf.GGUFReader(out)
    got = {t.name: np.array(t.data) for t in r.tensors}
    src = read_safetensors(tiny / "model.safetensors")
    cfg = json.loads((tiny / "config.json").read_text())
    q = src["model.layers.1.self_attn.q_proj.weight"]
    k = src["model.layers.1.self_attn.k_proj.weight"]
    assert np.array_equal(got["blk.1.attn_q.weight"].reshape(q.shape), permute(q, cfg["num_attention_heads"]))
    assert np.array_equal(got["blk.1.attn_k.weight"].reshape(k.shape), permute(k, cfg["num_key_value_heads"]))
    assert not np.array_equal(permute(q, cfg["num_attention_heads"]), q)
    # v is not permuted
    assert np.array_equal(got["blk.1.attn_v.weight"].reshape(-1), src["model.layers.1.self_attn.v_proj.weight"].reshape(-1))


def test_permute_pairs_halves_of_each_head():
    # one head of 4 rows: HF rotate-half order [0, 1 | 2, 3] -> interleaved [0, 2, 1, 3]
    w = np.arange(4, dtype=np.float32).reshape(4, 1)
    assert permute(w, 1).ravel().tolist() == [0, 2, 1, 3]


def test_quantized_file_is_smaller_and_ensure_is_cached(tiny, tmp_path, monkeypatch):
    import shutil

    model = tmp_path / "tiny"
    shutil.copytree(tiny, model, ignore=shutil.ignore_patterns("gguf"))
    f16 = ensure_gguf(model)
    q8 = ensure_gguf(model, "Q8_0")
    assert f16.name == "f16.gguf" and q8.name == "q8_0.gguf"
    assert q8.stat().st_size < 0.6 * f16.stat().st_size
    mtime = q8.stat().st_mtime_ns
    assert ensure_gguf(model, "q8_0").stat().st_mtime_ns == mtime  # not converted again
    assert ensure_gguf(str(q8)) == q8  # a .gguf path is used as is
    with pytest.raises(ValueError, match="unknown GGUF type 'q3_k'"):
        ensure_gguf(model, "q3_k")


def test_llamacpp_launch_command_uses_the_gguf_file(tiny, tmp_path):
    import shutil

    model = tmp_path / "tiny"
    shutil.copytree(tiny, model, ignore=shutil.ignore_patterns("gguf"))
    L = ProcessLauncher(python="py")
    spec = load_spec("llamacpp")
    argv = L.command(spec, LaunchRequest(engine="llamacpp", model=str(model), options={"quantize": "q8_0"}), 7)
    assert argv[argv.index("--model") + 1] == str(model / "gguf" / "q8_0.gguf")
    assert "--interrupt_requests" in argv and "q8_0" not in argv[argv.index("--port"):]
    assert L.gguf["type"] == "q8_0"
    argv = L.command(spec, LaunchRequest(engine="llamacpp", model=str(model)), 7)
    assert argv[argv.index("--model") + 1].endswith("f16.gguf")  # the spec's default type
    with pytest.raises(SpecError, match="does not know quantization 'awq'"):
        L.command(spec, LaunchRequest(engine="llamacpp", model=str(model), options={"quantize": "awq"}), 7)
