"""Model shapes: what the floors need from a config.json (shipped, given as a path, or a preset).

Weight bytes under quantization: GPTQ/AWQ int4 quantize the decoder's linear layers only
(embedding and LM head stay 16-bit) and carry a 16-bit scale and a packed 4-bit zero per group
of 128 weights (4 + 20/128 = 4.156 bits per weight; AutoGPTQ's and AutoAWQ's qweight, qzeros and
scales); fp8/int8 keep one byte per linear weight, as does TGI's `bitsandbytes` (LLM.int8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from servebench.errors import first_line

INT4_BITS = 4 + (16 + 4) / 128  # a 16-bit scale and a 4-bit zero per group of 128
# bytes per weight of the decoder linears, and the dtype the tensor units compute in
QUANT = {
    "none": (None, None),
    "gptq-int4": (INT4_BITS / 8, "fp16"),
    "gptq": (INT4_BITS / 8, "fp16"),
    "awq": (INT4_BITS / 8, "fp16"),
    "int4": (INT4_BITS / 8, "fp16"),
    "fp8": (1.0, "fp8"),
    "int8": (1.0, "int8"),
    "w8a8-int8": (1.0, "int8"),
    "bitsandbytes": (1.0, "fp16"),  # TGI's --quantize bitsandbytes: LLM.int8 (its -nf4/-fp4 are 4-bit)
    # MLC's q4f16_1 keeps one fp16 scale per 32 int4 weights (mlc_llm quantization presets)
    "q4f16_1": (4.5 / 8, "fp16"),
    # llama.cpp Q4_K_M: Q4_K (4.5 bpw) with half of attn_v/ffn_down in Q6_K (6.5625 bpw), k-quants
    # PR ggerganov/llama.cpp#1684; ~4.8 bpw over a Llama-2/Mistral 7B decoder
    "q4_k_m": (4.8 / 8, "fp16"),
}
_UNGATED = {"gpt2", "opt", "gptj", "gpt_neox", "bloom", "falcon", "gpt_bigcode"}
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp16": 2, "bf16": 2, "fp8": 1}


@dataclass(frozen=True, slots=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False
    dtype_bytes: float = 2.0  # unquantized weights and activations
    linear_bytes: float = 2.0  # decoder linear weights after quantization
    kv_bytes: float = 2.0
    compute: str = "fp16"  # fp16 | fp8 | int8: which peak applies
    mlp_matrices: int = 3  # gated MLP (SwiGLU: gate, up, down); 2 for GPT/OPT-style
    context: int | None = None  # max_position_embeddings, where the config states it

    # --- counts -----------------------------------------------------------------------
    @property
    def layer_linear_params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.hidden * (q + 2 * kv) + q * self.hidden + self.mlp_matrices * self.hidden * self.intermediate

    @property
    def params(self) -> int:
        norms = self.layers * 2 * self.hidden + self.hidden
        emb = self.vocab * self.hidden
        return emb * (1 if self.tied else 2) + self.layers * self.layer_linear_params + norms

    @property
    def matmul_params(self) -> int:
        """Weights a decoded token multiplies by: decoder linears + LM head (not the embedding gather)."""
        return self.layers * self.layer_linear_params + self.lm_head_params

    @property
    def lm_head_params(self) -> int:
        """The LM head: engines compute logits for one position per sequence in a step, not for
        every prompt token."""
        return self.vocab * self.hidden

    def weight_bytes(self) -> float:
        emb = self.vocab * self.hidden * self.dtype_bytes * (1 if self.tied else 2)
        return self.layers * self.layer_linear_params * self.linear_bytes + emb + \
            (self.layers * 2 + 1) * self.hidden * self.dtype_bytes

    def decode_weight_bytes(self) -> float:
        """Bytes one decode step must read: every weight but the embedding table (a gather)."""
        return self.weight_bytes() - (0 if self.tied else self.vocab * self.hidden * self.dtype_bytes)

    def kv_bytes_per_token(self, tp: int = 1) -> float:
        """K and V of every layer for one token, on one GPU of a tensor-parallel group
        (KV heads are split across GPUs, replicated when there are fewer heads than GPUs)."""
        heads = max(self.kv_heads / tp, 1)
        return 2 * self.layers * heads * self.head_dim * self.kv_bytes

    def attn_flops(self, n_q: int, n_ctx: float) -> float:
        """QK^T and AV FLOPs of n_q query tokens attending to n_ctx keys each (all layers)."""
        return 4 * self.layers * self.heads * self.head_dim * n_q * n_ctx

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__} | {
            "params": self.params, "weight_gib": self.weight_bytes() / 2**30}


@lru_cache(maxsize=1)
def _shipped() -> dict:
    return json.loads(resources.files("servebench.estimate").joinpath("data/models.json").read_text())["models"]


def shipped_names() -> list[str]:
    return sorted(_shipped())


def _read_config(path: Path) -> dict:
    """A config.json as a dict; anything else is named (a bare "Expecting value" said nothing)."""
    try:
        cfg = json.loads(path.read_bytes())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:  # JSON or UTF-8
        raise ValueError(f"{path} is not a model config.json ({first_line(e)})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} is not a model config.json (a JSON object is needed)")
    return cfg


def find_config(name: str) -> tuple[str, dict]:
    """Model id / alias / config.json path / model dir / preset -> (name, config dict)."""
    low = name.strip().lower()
    for mid, row in _shipped().items():
        if low == mid.lower() or low in (a.lower() for a in row["aliases"]) or low == mid.lower().split("/")[-1]:
            return mid, dict(row["config"])
    p = Path(name).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        p = p / "config.json"
    if p.is_file():
        return str(name), _read_config(p)
    from servebench.engines.presets import PRESETS, resolve_model

    if name in PRESETS:
        return name, _read_config(resolve_model(name) / "config.json")
    raise KeyError(f"unknown model {name!r}: give a config.json path, a model dir, a preset "
                   f"({', '.join(sorted(PRESETS))}) or one of: {', '.join(shipped_names())}")


_DIMS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def _positive(cfg: dict, key: str, name: str) -> int:
    """A dimension as an int; 0 or less divided by zero (heads) or priced a model at 0 bytes."""
    v = cfg[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: {key} must be a positive integer, got {v!r}")
    return v


def _dims(cfg: dict, name: str) -> tuple[int, ...]:
    missing = [k for k in _DIMS if k not in cfg]
    if missing:
        raise ValueError(f"config of {name} lacks {missing[0]} (a decoder-only transformer config is needed)")
    return tuple(_positive(cfg, k, name) for k in _DIMS)


def shape(config: dict, name: str = "model", quant: str | None = None, dtype: str | None = None,
          kv_dtype: str | None = None) -> ModelShape:
    """HF config dict -> ModelShape. dtype overrides the config's torch_dtype (e.g. a run
    served with --dtype); quant is one of QUANT."""
    cfg = config.get("text_config", config)  # multimodal wrappers keep the LM inside
    hidden, layers, heads, inter, vocab = _dims(cfg, name)
    kv_heads = _positive(cfg, "num_key_value_heads", name) if cfg.get("num_key_value_heads") is not None else heads
    head_dim = _positive(cfg, "head_dim", name) if cfg.get("head_dim") is not None else hidden // heads
    dbytes = _DTYPE_BYTES.get(str(dtype or cfg.get("torch_dtype") or "float16").replace("torch.", ""), 2)
    q = (quant or "none").lower()
    if q not in QUANT:
        raise ValueError(f"unknown quantization {quant!r} (known: {', '.join(QUANT)})")
    lin, comp = QUANT[q]
    kvb = _DTYPE_BYTES[kv_dtype] if kv_dtype else dbytes
    return ModelShape(name=name, layers=layers, hidden=hidden, intermediate=inter, heads=heads, kv_heads=kv_heads,
                      head_dim=head_dim, vocab=vocab, tied=bool(cfg.get("tie_word_embeddings", False)),
                      dtype_bytes=dbytes, linear_bytes=lin or dbytes, kv_bytes=kvb,
                      compute=comp or ("fp16" if dbytes <= 2 else "fp32"),
                      mlp_matrices=2 if cfg.get("model_type") in _UNGATED else 3,
                      context=int(cfg["max_position_embeddings"]) if cfg.get("max_position_embeddings") else None)


def load(name: str, quant: str | None = None, dtype: str | None = None, kv_dtype: str | None = None) -> ModelShape:
    mid, cfg = find_config(name)
    return shape(cfg, mid, quant, dtype, kv_dtype)
