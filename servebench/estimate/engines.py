"""The engine dimension of the published fit: which (GPU family, engine) pairs a source
separates, the efficiency ratios between engines, which engines' int4 kernels have their
own efficiency, and which engine versions read the KV cache once per query head. Rows are
pubfit.Row (duck-typed here: source, engine, family, d)."""

from __future__ import annotations

import itertools
import math
import statistics

from servebench.estimate.roofline import Factors, is_w4

# Engines whose decode attention, before the version given, ran grouped-query attention as
# multi-head: each query head its own pass over its KV head, so a step reads the KV cache once
# per query head. TensorRT-LLM's group-aware kernel (XQA) came with v0.8 (its blog "New
# XQA-kernel provides 2.4x more Llama-70B throughput within the same latency budget",
# 2024-01-30: 1,227 -> 2,941 tok/s/GPU on Llama-2-70B, one H200, 128/2048). Current versions
# of every engine here are group-aware: the default is one read.
PER_QUERY_HEAD_KV_BEFORE = {"trtllm": (0, 8), "tensorrt-llm": (0, 8)}
# TGI launched every kernel from Python until CUDA graphs became its default (PR #1703, merged
# 2024-04-04, first released in 2.0): from there a step replays a graph and the per-layer host
# launch cost its 1.x rows carry (host_us) is not paid. TensorRT-LLM 1.x serves from its PyTorch
# backend by default (`LlmArgs = TorchLlmArgs`), whose decode steps replay CUDA graphs by default
# ("Enable cuda graph by default", PR #5480, merged 2025-07-14: `cuda_graph_config` defaults to
# `CudaGraphConfig()`); its 0.x TensorRT-engine runs (0.5-0.7, NIM 1.0) fit a launch cost of their own
CUDA_GRAPHS_FROM = {"tgi": (2, 0), "trtllm": (1, 0), "tensorrt-llm": (1, 0)}


def vllm_batch_defaults(hw, tp: int = 1) -> tuple[int, int]:
    """vLLM's API-server defaults (max_num_batched_tokens, max_num_seqs) when none is given
    (EngineArgs.get_batch_defaults). GPUs, as the pinned image (vllm/vllm-openai:v0.11.0,
    backends/vllm/spec.yaml) sets them: (8192, 1024) on 70 GiB or more other than the A100
    (kept at 2,048 tokens for throughput, vLLM PR #17885), else (2048, 256); vLLM 0.28 added
    (16384, 1024) at 160 GiB or more. CPU, as the pinned CPU wheel (0.32) sets them: (2048, 128)
    per worker."""
    if hw.arch == "cpu":
        return 2048 * tp, 128 * tp
    if hw.memory_gib >= 70 and "a100" not in hw.label.lower():
        return 8192, 1024
    return 2048, 256


def max_num_seqs(engine: str | None, hw, tp: int = 1) -> int:
    """The running batch's cap when --max-num-seqs is not given: vLLM's own default for the
    device; 256 for the others, whose caps are not one number (TGI batches by KV tokens alone,
    SGLang caps at min(KV tokens / 2, its request pool)) and are not modelled."""
    return vllm_batch_defaults(hw, tp)[1] if engine == "vllm" else 256


def _version(text: str | None) -> tuple[int, ...] | None:
    parts = []
    for p in (text or "").strip().lstrip("v").split("."):
        if not p.isdigit():
            break
        parts.append(int(p))
    return tuple(parts) or None


def kv_reads(engine: str | None, version: str | None, heads: int, kv_heads: int) -> float:
    """How many times a decode step reads each KV head (roofline.Deployment.kv_reads): the
    query heads per KV head on an engine version listed above, else 1. An unknown version is
    taken as current."""
    before, v = PER_QUERY_HEAD_KV_BEFORE.get(engine or ""), _version(version)
    if before is None or v is None or v >= before or kv_heads >= heads:
        return 1.0
    return heads / kv_heads


def cuda_graphs(engine: str | None, version: str | None, unknown_is_current: bool = True) -> bool:
    """Whether this engine version replays CUDA graphs where its older versions launched every
    kernel (roofline.Deployment.graphs). Engines not listed keep whatever host cost their own
    rows fit. An unknown version is current for a prediction; a published row that states none
    is taken as of its source's time (unknown_is_current=False: Hamel's TGI image of July 2023)."""
    since, v = CUDA_GRAPHS_FROM.get(engine or ""), _version(version)
    if since is None:
        return False
    return unknown_is_current if v is None else v >= since


def w4_engines(train: list) -> frozenset:
    """Engines some source ran with both int4 and fp16 weights: only there does a row tell an
    int4 kernel's efficiency (eta_w4) apart from the GPU's (eta_mem). It is the kernel's, not
    the family's: TGI 1.0's GPTQ kernels reach a third of fp16's efficiency, MLC's, ExLlama's
    and llama.cpp's are near fp16's (issue 19: carried over to them, mlc-llm-perf-bench 61 %)."""
    out = set()
    for src in {r.source for r in train}:
        for e in {r.engine for r in train if r.source == src}:
            kinds = {is_w4(r.d.model) for r in train if r.source == src and r.engine == e}
            if kinds == {True, False}:
                out.add(e)
    return frozenset(out)


def for_engine(f: Factors, engine: str | None, w4e: frozenset | None) -> Factors:
    """The factors as a row of `engine` sees them: eta_w4 only for engines in w4e (None: all)."""
    return f if w4e is None or engine in w4e or f.eta_w4 == 1.0 else f.with_(eta_w4=1.0)


def separated(train: list) -> set[tuple[str, str]]:
    """(family, engine) pairs that some source measured beside another engine on that family."""
    out = set()
    for src in {r.source for r in train}:
        fam_eng = {(r.family, r.engine) for r in train if r.source == src}
        for fam in {f for f, _ in fam_eng}:
            engs = {e for f, e in fam_eng if f == fam}
            if len(engs) > 1:
                out |= {(fam, e) for e in engs}
    return out


RATIO_FACTORS = ("eta_mem", "eta_compute")


def engine_ratios(groups: dict, separated: set) -> dict:
    """"engine/reference" -> factor -> how many times the reference engine's efficiency the
    engine reached, geometric mean over the families where one source ran both."""
    out = {}
    for fam in sorted({f for f, _ in separated}):
        engs = sorted(e for f, e in separated if f == fam)
        for e, ref in itertools.permutations(engs, 2):
            a, b = groups.get(f"{fam}/{e}"), groups.get(f"{fam}/{ref}")
            if a and b:
                out.setdefault(f"{e}/{ref}", []).append({k: math.log(getattr(a, k) / getattr(b, k)) for k in RATIO_FACTORS})
    return {k: {f: math.exp(statistics.fmean(x[f] for x in v)) for f in RATIO_FACTORS} for k, v in out.items()}


def by_ratio(base: Factors, engine: str | None, engines_seen: list, ratios: dict) -> tuple[Factors, str] | None:
    """A family whose rows all ran one engine, asked about another that some source measured
    beside it (on any family): the family's factors times that engine's ratio to it."""
    if not engine or len(engines_seen) != 1 or engines_seen[0] == engine:
        return None
    r = ratios.get(f"{engine}/{engines_seen[0]}")
    if not r:
        return None
    return base.with_(**{k: min(max(getattr(base, k) * v, 0.02), 0.95) for k, v in r.items()}), engines_seen[0]
