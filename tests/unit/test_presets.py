import hashlib
import json
import random
import struct

import numpy as np
import pytest

from servebench.engines import presets
from servebench.engines.presets import PRESETS, resolve_model


def _digest(path):
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _header(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), len(raw) - 8 - n


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("SERVEBENCH_HOME", str(home))
    yield resolve_model("tiny")
    mp.undo()


def test_generation_is_deterministic(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SERVEBENCH_HOME", str(tmp_path))
    again = resolve_model("tiny")
    assert again == tmp_path / "models" / "tiny"
    assert again != tiny
    assert _digest(again) == _digest(tiny)


def test_existing_preset_is_reused_not_regenerated(tiny, monkeypatch):
    monkeypatch.setenv("SERVEBENCH_HOME", str(tiny.parent.parent))
    mtime = (tiny / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny") == tiny
    assert (tiny / "model.safetensors").stat().st_mtime_ns == mtime


def test_directory_and_missing_path(tiny, tmp_path):
    assert resolve_model(str(tiny)) == tiny.resolve()
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"^model path not found: .*nope") as e:
        resolve_model(str(missing))
    assert "\n" not in str(e.value)


def test_a_hub_id_is_served_under_every_launcher_and_a_missing_path_under_none(tmp_path):
    """`run --launcher process --model meta-llama/Llama-2-7b-hf` on a GPU host with vLLM
    installed was refused as "model path not found" while `launch` served it."""
    from servebench.config import RunConfig
    from servebench.engines.presets import served_by_name
    from servebench.run.orchestrate import _model_dir

    for launcher in ("process", "docker", "sagemaker", "external"):
        assert served_by_name("meta-llama/Llama-2-7b-hf", launcher)
        assert _model_dir(RunConfig(model="meta-llama/Llama-2-7b-hf", launcher=launcher,
                                    **({"endpoint": "http://127.0.0.1:9"} if launcher == "external" else {}))) is None
        for path in (str(tmp_path / "nope"), "./nope", "~/nope"):
            assert not served_by_name(path, launcher)
    assert not served_by_name("tyni", "process")  # a preset's typo: no hub id names no org
    assert served_by_name("my-alias", "external")  # the name a running server answers to
    with pytest.raises(ValueError, match="model path not found: tyni"):
        _model_dir(RunConfig(model="tyni"))


def test_tokenizer_loads_with_transformers_and_matches_config(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    cfg = json.loads((tiny / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["vocab_size"] == len(tok)
    assert tok.bos_token_id == cfg["bos_token_id"] and tok.eos_token_id == cfg["eos_token_id"]
    assert max(tok.get_vocab().values()) == cfg["vocab_size"] - 1
    ids = tok(" hello world").input_ids
    assert ids[0] == tok.bos_token_id  # Llama-style: BOS is counted in prompt tokens
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.startswith("<s>") and chat.endswith("### assistant:\n")


def test_many_single_token_words_compose_exact_length_prompts(tiny):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    words = [
        w for w in presets.synthetic_words(PRESETS["tiny"].corpus_words, PRESETS["tiny"].seed)
        if len(tok.encode(" " + w, add_special_tokens=False).ids) == 1
    ]
    assert len(words) >= 300
    rng = random.Random(7)
    for n in (1, 37, 511):
        text = "".join(" " + w for w in rng.choices(words, k=n))
        enc = tok.encode(text)
        assert len(enc.ids) == n + 1  # + BOS
        assert tok.decode(enc.ids, skip_special_tokens=True) == text


def test_every_token_decodes_to_plain_ascii(tiny):
    # Partial UTF-8 tokens would be held back by streaming detokenizers and skew timing.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    special = {tok.token_to_id(t) for t in presets.SPECIAL_TOKENS}
    for i in range(tok.get_vocab_size()):
        if i not in special:
            text = tok.decode([i])
            assert text and text.isascii(), (i, text)


def test_weights_match_config_shapes(tiny):
    cfg = json.loads((tiny / "config.json").read_text())
    header, data_len = _header(tiny / "model.safetensors")
    header.pop("__metadata__")
    h, d = cfg["hidden_size"], cfg["head_dim"]
    assert header["model.embed_tokens.weight"]["shape"] == [cfg["vocab_size"], h]
    assert header["lm_head.weight"]["shape"] == [cfg["vocab_size"], h]
    assert header["model.layers.0.self_attn.k_proj.weight"]["shape"] == [
        cfg["num_key_value_heads"] * d, h]
    layers = {k.split(".")[2] for k in header if k.startswith("model.layers.")}
    assert len(layers) == cfg["num_hidden_layers"]
    assert all(v["dtype"] == "BF16" for v in header.values())
    ends = sorted(v["data_offsets"] for v in header.values())
    assert ends[0][0] == 0 and ends[-1][1] == data_len
    assert all(a[1] == b[0] for a, b in zip(ends, ends[1:]))  # contiguous, no gaps


def test_special_tokens_are_never_favoured_by_the_head(tiny):
    header, _ = _header(tiny / "model.safetensors")
    raw = (tiny / "model.safetensors").read_bytes()
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    meta = header["lm_head.weight"]
    a, b = meta["data_offsets"]
    bits = np.frombuffer(raw[start + a : start + b], dtype="<u2").astype(np.uint32) << 16
    head = bits.view(np.float32).reshape(meta["shape"])
    cfg = json.loads((tiny / "config.json").read_text())
    assert not head[cfg["eos_token_id"]].any() and not head[cfg["bos_token_id"]].any()
    assert head[3:].std() > 0.1


def test_bf16_rounding():
    x = np.array([1.0, -2.5, 1.00390625, 3.0e-3], dtype=np.float32)
    back = (presets._to_bf16(x).astype(np.uint32) << 16).view(np.float32)
    assert back[0] == 1.0 and back[1] == -2.5
    assert back[2] == 1.0  # halfway between 1.0 and 1.0078125: ties to even
    assert abs(back[3] - 3.0e-3) / 3.0e-3 < 2**-8


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_shapes_are_servable(name):
    spec = PRESETS[name]
    assert spec.num_attention_heads % spec.num_key_value_heads == 0  # grouped-query attention
    # head sizes vLLM's CPU attention accepts (v1/attention/backends/cpu_attn.py, 0.32)
    assert spec.head_dim in (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)
    assert spec.max_position_embeddings >= 1024  # 512 in + 128 out, with room


def test_small_is_larger_than_tiny():
    tiny, small = PRESETS["tiny"], PRESETS["small"]
    assert small.hidden_size > tiny.hidden_size and small.num_hidden_layers >= tiny.num_hidden_layers
