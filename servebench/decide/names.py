"""What a configuration and a model are called in every table: one label for a plain run and
a sweep cell of one configuration, checkpoints of one model together, models in size order."""

from __future__ import annotations

import re
from pathlib import Path


def config_label(server: dict) -> str:
    """The sweep's label (sweep/config.py ServerPoint.label), so that a plain run and a sweep
    cell of one configuration carry one name: engine/model[/quant]/instance-or-hardware[xN] args."""
    if server.get("label"):
        return str(server["label"])
    parts = [engine_name(server.get("engine")) or "?", server.get("model") or "?"]
    if server.get("quantization"):
        parts.append(str(server["quantization"]))
    if server.get("instance_type"):
        parts.append(str(server["instance_type"]))
    elif server.get("hardware"):
        n = server.get("gpu_count")
        n = n if n is not None else len(server.get("gpus") or [])
        parts.append(str(server["hardware"]) + (f"x{n}" if n > 1 else ""))
    label = "/".join(map(str, parts))
    args = [str(a) for a in server.get("engine_args") or server.get("server_args") or []]
    return f"{label} {' '.join(args)}" if args else label


def engine_name(engine: str | None) -> str | None:
    """A spec path (backends/x/spec.yaml, my-engine.yaml) reads as its engine name."""
    if isinstance(engine, str) and engine.endswith((".yaml", ".yml")):
        p = Path(engine)
        return p.parent.name if p.stem == "spec" and p.parent.name else p.stem
    return engine


# Name parts that say how a checkpoint is stored, not which model it is: without them the
# GPTQ and fp16 checkpoints of one model rank in one table, as the study's tables do.
_STORAGE = {"gptq", "awq", "gguf", "int4", "int8", "fp8", "fp16", "bf16", "4bit", "8bit", "bnb", "hf", "marlin",
            "w4a16", "w8a8", "w8a16", "exl2", "q4", "q8", "q4_k_m", "q8_0", "f16"}


def model_family(name: str | None) -> str | None:
    """'TheBloke/Llama-2-7B-Chat-GPTQ' and 'meta-llama/Llama-2-7b-chat-hf' -> 'llama-2-7b-chat'."""
    if not isinstance(name, str) or not name:
        return name
    base = name.rstrip("/").split("/")[-1].lower()
    parts = [p for p in re.split(r"[-_.]", base) if p and p not in _STORAGE]
    return "-".join(parts) or base


def size_key(name) -> tuple:
    """Models in size order (7b, 13b, 70b), then by name: as text, 13b sorts before 7b."""
    text = str(name)
    m = re.search(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([mbt])(?![a-z])", text.lower())
    scale = {"m": 1e-3, "b": 1.0, "t": 1e3}
    return (0, float(m.group(1)) * scale[m.group(2)], text) if m else (1, 0.0, text)
