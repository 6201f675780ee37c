"""The published rows (data/published_rows.csv) as simulator inputs: the deployment, the load the
source states, and the figures it published. pubfit fits factors to them."""

from __future__ import annotations

import csv
import json
import math
import random
import re
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from servebench.estimate import catalog, engines, models
from servebench.estimate.roofline import ADMITS, SCHEDULES, Deployment
from servebench.estimate.sim import BLOCK, Load

ASSUMED_INPUT = 256  # the seed study's ShareGPT prompts: length not published (studies.md)
METRIC_OF = {"ms_per_token": "ms_per_token_p50", "tokens_per_s": "output_tok_s", "ttft_ms": "ttft_ms"}


@dataclass(slots=True)
class Row:
    source: str
    engine: str
    family: str
    d: Deployment
    load: Load
    measured: dict  # column -> value
    label: str
    notes: str = ""
    meta: dict = field(default_factory=dict)


def _shape(r: dict):
    if r["model"] == "test-13b":  # FasterTransformer's GPT-style 13B: config shipped in published.json
        cfg = json.loads(resources.files("servebench.estimate").joinpath("data/published.json").read_text())
        return models.shape(cfg["sets"]["fastertransformer"]["model_config"], "test-13b", None)
    kv = "fp8" if "fp8 kv" in r["notes"].lower() or r["source"] == "trtllm-h200-blog" else None
    return models.load(r["model"], quant=r["quantization"] or None, kv_dtype=kv)


def _fraction_for(shape, hw, tp: int, batch: int, seq_tokens: int) -> float:
    """The memory share a source's stated batch needed: the batch ran at once, so its KV fit
    even where the default 0.9 (and 16-token blocks) would make a second wave (TensorRT-LLM
    A100's 7B 60 x 2176 tokens on 80 GB). Never below 0.9, never above 1."""
    d = Deployment(shape, hw, tp)
    kv = batch * math.ceil(seq_tokens / BLOCK) * BLOCK * shape.kv_bytes_per_token(tp)
    need = shape.weight_bytes() / tp + d.reserve_gib * 2**30 + kv
    return min(max(0.9, need / d.hw.memory_bytes), 1.0)


_SPREAD = {k: re.compile(rf"{k} (\d+) tokens \(mean, stddev (\d+)") for k in ("input", "output")}


def stated_lengths(notes: str, n_in: int, n_out: int, requests: int) -> tuple:
    """(n_in, n_out) as the load gives them: per-request lengths from the mean and stddev the
    source states in its notes ("input 550 tokens (mean, stddev 150"; the same lengths for
    every fit), else the fixed lengths. Closed-loop users with fixed lengths stay in lockstep
    waves in the simulator: a wave's prompts prefill in one pass and every user waits for it; a
    stated spread is what keeps them apart. No shipped row states one now: Schmid's llmperf
    runs, once read with llmperf's README spread, sent fixed lengths (docs/estimate.md)."""
    out = []
    for key, mean in (("input", n_in), ("output", n_out)):
        m = _SPREAD[key].search(notes)
        if not m or int(m.group(1)) != mean:
            out.append(mean)
            continue
        # normal quantiles in a seeded order: the stated mean and spread exactly, not a sample's
        z = [statistics.NormalDist().inv_cdf((i + 0.5) / requests) for i in range(requests)]
        random.Random(f"{key}:{m.group(0)}").shuffle(z)
        lo = 2 if key == "output" else 1
        out.append(tuple(max(lo, round(mean + int(m.group(2)) * x)) for x in z))
    return out[0], out[1]


def mean_length(v) -> float:
    return v if isinstance(v, (int, float)) else statistics.fmean(v)


def _row(r: dict) -> Row:
    hw = catalog.lookup(r["gpu"])
    tp = int(r["gpu_count"])
    conc = int(float(r["concurrency"]))
    n_in = int(r["input_tokens"]) if r["input_tokens"] else ASSUMED_INPUT
    n_out = int(r["output_tokens"])
    offline = r["load"] == "burst" and r["engine"] == "trtllm"  # the stated batch is the batch, run at once
    shape = _shape(r)
    d = Deployment(shape, hw, tp, max_num_seqs=max(conc if offline else 256, 1), schedule=SCHEDULES.get(r["engine"], "separate"),
                   admit=ADMITS.get(r["engine"], "reserve"),
                   mem_fraction=_fraction_for(shape, hw, tp, conc, n_in + n_out) if offline else 0.9,
                   kv_reads=engines.kv_reads(r["engine"], r["engine_version"], shape.heads, shape.kv_heads),
                   graphs=engines.cuda_graphs(r["engine"], r["engine_version"], unknown_is_current=False))
    if r["load"] == "burst":
        load = Load(mode="burst", requests=conc, n_in=n_in, n_out=n_out)
    else:  # k6-style closed loop, users desynchronised (ramped), enough requests for a steady state
        n = max(conc * 8, 16 if n_out > 1 else 2)
        ins, outs = stated_lengths(r["notes"], n_in, n_out, n)
        load = Load(mode="closed", users=conc, requests=n, n_in=ins, n_out=outs, stagger_s=0.0 if conc == 1 else 1.0)
    measured = {k: float(r[k]) for k in METRIC_OF if r[k]}
    if "not used for fitting" in r["notes"]:
        measured.pop("ms_per_token", None)
    if r["notes"].startswith("ms_per_token=tpot"):
        measured["tpot_ms"] = measured.pop("ms_per_token")
    if "ttft not used" in r["notes"]:
        measured.pop("ttft_ms", None)
    label = f"{r['model']} {r['quantization'] or 'none'} {r['instance'] or r['gpu']} x{tp} {r['load']} {conc} {n_in}/{n_out}"
    meta = {"citation": r["citation"]}
    if r["notes"].startswith("ms_per_token=e2e/counted"):
        meta["ms_per_token"] = "e2e/counted"
    m = _COUNTED.search(r["notes"])
    if m:
        meta["counted_per_token"] = float(m.group(1)) / mean_length(n_out)
    return Row(r["source"], r["engine"], hw.arch, d, load, measured, label, r["notes"], meta)


# llmperf counts output tokens with its own (Llama 2) tokenizer, not the model's: a source that
# states how many it counted per request gives the ratio its ms/token and tok/s are in
_COUNTED = re.compile(r"counted output ([\d.]+) tokens per request")


def published_figures(row: Row, p: dict) -> dict:
    """The simulator's summary as the source measured it: metric -> value for row.measured.
    ms_per_token "e2e/counted" is llmperf's per-token latency (the request's whole time over the
    tokens it counted); tok/s in counted tokens where the source counts its own way."""
    out = {m: p[METRIC_OF.get(m, m)] for m in row.measured if METRIC_OF.get(m, m) in p}
    k = row.meta.get("counted_per_token", 1.0)
    if row.meta.get("ms_per_token") == "e2e/counted" and "ms_per_token" in out:
        out["ms_per_token"] = p["e2e_ms"] / (mean_length(row.load.n_out) * k)
    if "tokens_per_s" in out:
        out["tokens_per_s"] *= k
    return out


@lru_cache(maxsize=1)
def rows() -> tuple[Row, ...]:
    text = resources.files("servebench.estimate").joinpath("data/published_rows.csv").read_text()
    return tuple(_row(r) for r in csv.DictReader(text.splitlines()))
