"""Model presets: tiny Llama models with random (seeded) weights, generated on the spot.

Nothing can be downloaded here, so the engines are benchmarked on models we make: a
byte-level BPE tokenizer trained on a deterministic synthetic corpus, a Llama config, and
seeded random weights written as safetensors with numpy alone (torch is only in the venv).
Same preset + same library versions -> byte-identical files.

Two choices keep token accounting exact for the benchmark:
- the corpus is plain ASCII words and the tokenizer's alphabet is only what the corpus uses,
  so every token decodes to complete UTF-8 text (no partial bytes held back while streaming);
- the lm_head rows of the special tokens are zero while other logits have std ~5, so a
  random model practically never samples BOS/EOS (whose text is empty when streamed).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [UNK, BOS, EOS]  # ids 0, 1, 2 as in Llama
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}### assistant:\n{% endif %}"
)


@dataclass(frozen=True, slots=True)
class PresetSpec:
    vocab_size: int  # BPE target; the config gets the tokenizer's actual size
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int  # vLLM's CPU attention supports only some head sizes (32, 64, 80, ...)
    max_position_embeddings: int = 2048
    seed: int = 0
    corpus_words: int = 2000  # distinct words in the synthetic language
    corpus_sentences: int = 20000


PRESETS: dict[str, PresetSpec] = {
    # ~0.7M params: a 1000 x (512 in, 128 out) burst must finish in minutes on 2 CPU cores.
    "tiny": PresetSpec(
        vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
    ),
    # ~20M params: same shape family, enough compute that batching effects show on a CPU.
    "small": PresetSpec(
        vocab_size=4096, hidden_size=512, intermediate_size=1376, num_hidden_layers=6,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64,
    ),
}


def models_home() -> Path:
    base = os.environ.get("SERVEBENCH_HOME") or Path.home() / ".cache" / "servebench"
    return Path(base).expanduser() / "models"


def resolve_model(name_or_dir: str | os.PathLike[str]) -> Path:
    """A preset name -> its directory (generated if missing); an existing directory -> itself."""
    name = str(name_or_dir)
    if name in PRESETS:
        path = models_home() / name
        if not (path / "config.json").is_file():
            generate(name, path)
        return path
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    raise ValueError(
        f"model path not found: {name} (presets: {', '.join(sorted(PRESETS))})"
    )


def served_by_name(name: str, launcher: str) -> bool:
    """Whether a model that is no preset and no local directory is still one to serve: a hub
    id (org/name), which the engine fetches itself, under any launcher; any name that is no
    path (a served alias) for a server not started as a local process. A path (./x, /x, ~/x)
    that is not there is never one, nor, for the process launcher, a bare word (a preset's typo)."""
    if name.startswith((".", "/", "~")):
        return False
    return launcher != "process" or "/" in name


def generate(preset: str, dest: Path) -> Path:
    """Write the preset's HF model dir to dest atomically (a temp dir renamed into place),
    so a concurrent or interrupted generation never leaves a half-written model behind."""
    spec = PRESETS[preset]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=dest.parent))
    try:
        _write_model(preset, spec, tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise  # not a lost race with another generator: a real error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write_model(preset: str, spec: PresetSpec, out: Path) -> None:
    tok = train_tokenizer(spec)
    vocab = tok.get_vocab_size()
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "max_position_embeddings": spec.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": ids[EOS],
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": EOS,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": spec.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE,
    }
    gen_config = {"bos_token_id": ids[BOS], "eos_token_id": ids[EOS], "pad_token_id": ids[EOS]}
    _dump(out / "config.json", config)
    _dump(out / "tokenizer_config.json", tok_config)
    _dump(out / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK})
    _dump(out / "generation_config.json", gen_config)
    _dump(out / "servebench_preset.json", {"preset": preset, **asdict(spec)})
    write_safetensors(out / "model.safetensors", _weights(spec, vocab, list(ids.values())))


def _dump(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# --- tokenizer -------------------------------------------------------------------------

_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
           "w", "z", "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
_CODAS = ["", "", "", "n", "r", "s", "l", "t", "m", "nd", "st"]


def synthetic_words(n: int, seed: int) -> list[str]:
    """n distinct pronounceable lowercase ASCII words, the same for the same seed."""
    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        syll = rng.choice((1, 2, 2, 3))
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                    for _ in range(syll))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def synthetic_corpus(spec: PresetSpec) -> list[str]:
    """Sentences over a Zipf-like word distribution, so BPE learns whole words as tokens."""
    words = synthetic_words(spec.corpus_words, spec.seed)
    rng = random.Random(spec.seed + 1)
    weights = [1.0 / (rank + 20) for rank in range(len(words))]
    lines = []
    for _ in range(spec.corpus_sentences):
        sent = rng.choices(words, weights=weights, k=rng.randint(6, 16))
        lines.append(" ".join(sent).capitalize() + rng.choice((".", ".", "?", "!", ",")))
    return lines


def train_tokenizer(spec: PresetSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # No full byte alphabet on purpose: only what the ASCII corpus uses (see module doc).
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
    )
    tok.train_from_iterator(synthetic_corpus(spec), trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)],
    )
    return tok


# --- weights ---------------------------------------------------------------------------

def _weights(spec: PresetSpec, vocab: int, special_ids: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    h, i, d = spec.hidden_size, spec.intermediate_size, spec.head_dim
    q, kv = spec.num_attention_heads * d, spec.num_key_value_heads * d

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    w: dict[str, np.ndarray] = {"model.embed_tokens.weight": normal(vocab, h, std=1.0)}
    for layer in range(spec.num_hidden_layers):
        p = f"model.layers.{layer}."
        w[p + "self_attn.q_proj.weight"] = normal(q, h)
        w[p + "self_attn.k_proj.weight"] = normal(kv, h)
        w[p + "self_attn.v_proj.weight"] = normal(kv, h)
        w[p + "self_attn.o_proj.weight"] = normal(h, q)
        w[p + "mlp.gate_proj.weight"] = normal(i, h)
        w[p + "mlp.up_proj.weight"] = normal(i, h)
        w[p + "mlp.down_proj.weight"] = normal(h, i)
        w[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
    w["model.norm.weight"] = np.ones(h, np.float32)
    # The final norm gives ~unit-variance features, so std 5/sqrt(h) -> logits of std ~5;
    # zero rows give the special tokens logit 0, i.e. probability ~1e-9 (see module doc).
    head = normal(vocab, h, std=5.0 / np.sqrt(h))
    head[special_ids] = 0.0
    w["lm_head.weight"] = head
    return w


def _to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors layout (u64 header size, JSON header, raw little-endian data), written
    directly because numpy has no bfloat16 and torch is not everywhere."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = _to_bf16(tensors[name]).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for data in blobs:
            f.write(data)
