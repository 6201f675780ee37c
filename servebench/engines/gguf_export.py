"""HF Llama model dir (a preset) -> GGUF file for llama.cpp, as f16 or a quantized type.

llama.cpp reads GGUF only. The presets are plain Llama checkpoints (safetensors, bf16) with a
byte-level BPE tokenizer, so the conversion is the Llama part of llama.cpp's
convert_hf_to_gguf.py, written with the `gguf` package (GGUFWriter + gguf.quants):
- tensor names: model.layers.N.self_attn.q_proj -> blk.N.attn_q, ... (gguf.TensorNameMap);
- q/k rows permuted from HF's rotate-half RoPE layout back to llama.cpp's interleaved one
  (the converter's LlamaModel.permute);
- tokenizer as `gpt2` BPE (tokens in id order, merges, `<unk>`/`<s>`/`</s>` as control tokens),
  pre-tokenizer "gpt-2" (the presets use the GPT-2 byte-level regex).
Quantized types: the ones gguf.quants can write (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1). 1-D tensors
(norms) stay float32, as llama.cpp's own quantizer leaves them.

Files go beside the model: <model>/gguf/<type>.gguf, written atomically; the same inputs give
the same bytes, so a concurrent second writer is harmless.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

TYPES = ("f16", "f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
DEFAULT_TYPE = "f16"


def gguf_path(model_dir: str | Path, qtype: str = DEFAULT_TYPE) -> Path:
    return Path(model_dir) / "gguf" / f"{qtype.lower()}.gguf"


def ensure_gguf(model_dir: str | Path, qtype: str | None = None) -> Path:
    """The GGUF file of `model_dir` in `qtype` (default f16), converted on first use.
    A path that already ends in .gguf is returned as is."""
    qtype = (qtype or DEFAULT_TYPE).lower()
    if str(model_dir).endswith(".gguf"):
        return Path(model_dir)
    if qtype not in TYPES:
        raise ValueError(f"unknown GGUF type {qtype!r} (known: {', '.join(TYPES)})")
    out = gguf_path(model_dir, qtype)
    if not out.is_file():
        convert(Path(model_dir), out, qtype)
    return out


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors as float32 (BF16/F16/F32 sources), numpy only."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out: dict[str, np.ndarray] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        buf = raw[base + a : base + b]
        if meta["dtype"] == "BF16":
            arr = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif meta["dtype"] == "F16":
            arr = np.frombuffer(buf, "<f2").astype(np.float32)
        elif meta["dtype"] == "F32":
            arr = np.frombuffer(buf, "<f4").astype(np.float32)
        else:
            raise ValueError(f"{path.name}: tensor {name} has unsupported dtype {meta['dtype']}")
        out[name] = arr.reshape(meta["shape"])
    return out


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half q/k rows -> the interleaved layout llama.cpp's RoPE expects."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert(model_dir: Path, out: Path, qtype: str = DEFAULT_TYPE) -> Path:
    import gguf

    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        raise ValueError(f"{model_dir}: only Llama models convert to GGUF here (model_type {cfg.get('model_type')!r})")
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{model_dir}: no .safetensors weights")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(read_safetensors(f))

    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    arch = gguf.MODEL_ARCH.LLAMA
    names = gguf.get_tensor_name_map(arch, cfg["num_hidden_layers"])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".gguf", dir=out.parent)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        w.add_name(model_dir.name)
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
        w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
        w.add_vocab_size(cfg["vocab_size"])
        w.add_file_type(_file_type(gguf, qtype))
        _add_tokenizer(w, model_dir, cfg)
        for name in sorted(tensors):
            data = tensors[name]
            if name.endswith("q_proj.weight"):
                data = permute(data, n_head)
            elif name.endswith("k_proj.weight"):
                data = permute(data, n_kv)
            new = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise ValueError(f"{model_dir}: no GGUF name for tensor {name}")
            _add_tensor(w, gguf, new, data, qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the model dir is readable
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _file_type(gguf, qtype: str) -> int:
    ft = gguf.LlamaFileType
    return {"f32": ft.ALL_F32, "f16": ft.MOSTLY_F16, "q8_0": ft.MOSTLY_Q8_0, "q4_0": ft.MOSTLY_Q4_0,
            "q4_1": ft.MOSTLY_Q4_1, "q5_0": ft.MOSTLY_Q5_0, "q5_1": ft.MOSTLY_Q5_1}[qtype]


def _add_tensor(w, gguf, name: str, data: np.ndarray, qtype: str) -> None:
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim == 1 or qtype == "f32":
        w.add_tensor(name, data)
    elif qtype == "f16":
        w.add_tensor(name, data.astype(np.float16))
    else:
        t = gguf.GGMLQuantizationType[qtype.upper()]
        q = gguf.quants.quantize(data, t)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=t)


def _add_tokenizer(w, model_dir: Path, cfg: dict) -> None:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    model = tok["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{model_dir}: only byte-level BPE tokenizers convert here")
    vocab: dict[str, int] = dict(model["vocab"])
    special = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    vocab.update(special)
    size = cfg["vocab_size"]
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [4] * size  # USER_DEFINED for padding slots
    for text, i in vocab.items():
        if i < size:
            tokens[i] = text
            types[i] = 3 if text in special else 1  # CONTROL / NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    tc_path = model_dir / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text()) if tc_path.is_file() else {}
    for key, add in (("bos_token", w.add_bos_token_id), ("eos_token", w.add_eos_token_id),
                     ("unk_token", w.add_unk_token_id), ("pad_token", w.add_pad_token_id)):
        if tc.get(key) in vocab:
            add(vocab[tc[key]])
    w.add_add_bos_token(bool(tc.get("add_bos_token", True)))
    w.add_add_eos_token(bool(tc.get("add_eos_token", False)))
    if tc.get("chat_template"):
        w.add_chat_template(tc["chat_template"])
