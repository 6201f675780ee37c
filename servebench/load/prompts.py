"""Prompts: synthetic prompts of exactly N tokens under the served model's tokenizer, or a
JSONL file. Deterministic by seed; built before any server starts so a bad tokenizer fails fast.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from servebench.errors import first_line

if TYPE_CHECKING:  # transformers is heavy: imported when a tokenizer is loaded
    from transformers import PreTrainedTokenizerBase

from servebench.config import MAX_TOKENS

class WorkloadError(ValueError):
    pass


@dataclass(slots=True, frozen=True)
class Prompt:
    text: str
    input_tokens: int  # under the tokenizer, special tokens (BOS) included, as servers count
    output_tokens: int


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found" noise
    try:
        from transformers import AutoTokenizer
    except ImportError as e:  # pragma: no cover - transformers is a dependency
        raise WorkloadError(f"transformers is required to load a tokenizer: {e}") from None
    name = str(name_or_path)
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists():
        # a path, not a hub id: transformers would answer with a repo-id format error
        raise WorkloadError(f"tokenizer path not found: {name}")
    src = str(Path(name).expanduser()) if name.startswith("~") else name
    try:
        return AutoTokenizer.from_pretrained(src, local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/... depending on the cause
        first = first_line(e)
        from servebench.engines import hub  # a hub id not cached: download only when allowed

        blocked = "a local path" if Path(src).exists() else hub.why_not()
        if blocked is None:
            try:
                return AutoTokenizer.from_pretrained(src, token=hub.token())
            except Exception as e2:
                first = first_line(e2)
        hint = "" if Path(str(name_or_path)).exists() else (
            f" (not downloaded: {blocked}; or pass --tokenizer DIR)" if blocked else " (pass --tokenizer DIR)")
        raise WorkloadError(f"cannot load tokenizer {str(name_or_path)!r}{hint}: {first[:200]}") from None


class ExactPrompts:
    """Builds prompts that tokenize to an exact length.

    Words are drawn from the tokenizer's own vocabulary: alphabetic pieces that encode to one
    token when preceded by a space. Joined by spaces, N such words are N tokens under
    whitespace-splitting pre-tokenizers (byte-level BPE, SentencePiece); every prompt is still
    verified by encoding it, and nudged by a word at a time when a tokenizer merges across words.
    """

    def __init__(self, tokenizer, seed: int = 0, pool_size: int = 4000) -> None:
        self.tok = tokenizer
        self.seed = seed
        self.specials = len(tokenizer("", add_special_tokens=True)["input_ids"])
        words: list[str] = []
        for tid in sorted(tokenizer.get_vocab().values()):
            w = tokenizer.decode([tid]).strip()
            if 2 <= len(w) <= 12 and w.isascii() and w.isalpha():
                words.append(w)
        words = sorted(set(words))
        rng = random.Random(1234)
        rng.shuffle(words)
        # One batch encode to keep only words that are a single token after a space.
        counts = [len(ids) for ids in tokenizer([" " + w for w in words[: pool_size * 3]], add_special_tokens=False)["input_ids"]]
        self.words = [w for w, c in zip(words, counts) if c == 1][:pool_size]
        if len(self.words) < 50:
            raise WorkloadError(
                f"tokenizer has too few single-token words ({len(self.words)}) to build exact-length prompts"
            )

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=True)["input_ids"])

    def _draft(self, n_tokens: int, rng: random.Random) -> list[str]:
        k = n_tokens - self.specials
        if k < 1:
            raise WorkloadError(f"cannot build a {n_tokens}-token prompt: the tokenizer adds {self.specials} special tokens")
        return rng.choices(self.words, k=k)

    def build(self, n_tokens: int, rng: random.Random, words: list[str] | None = None) -> str:
        words = words if words is not None else self._draft(n_tokens, rng)
        for _ in range(64):
            text = " ".join(words)
            have = self.count(text)
            if have == n_tokens:
                return text
            if have > n_tokens and len(words) > 1:
                words.pop()
            elif have < n_tokens:
                words.append(rng.choice(self.words))
            else:
                break
        raise WorkloadError(f"tokenizer cannot produce a prompt of exactly {n_tokens} tokens")

    def prompts(self, n: int, input_tokens: int, output_tokens: int) -> list[Prompt]:
        rng = random.Random(self.seed)
        drafts = [self._draft(input_tokens, rng) for _ in range(n)]
        texts = [" ".join(d) for d in drafts]
        counts = [len(ids) for ids in self.tok(texts, add_special_tokens=True)["input_ids"]]  # one batch
        texts = [t if c == input_tokens else self.build(input_tokens, rng, d) for t, c, d in zip(texts, counts, drafts)]
        return [Prompt(t, input_tokens, output_tokens) for t in texts]


def synthetic(tokenizer, n: int, input_tokens: int, output_tokens: int, seed: int = 0, warmup: int = 0,
              unique: int = 20_000) -> list[Prompt]:
    """n prompts, the first `warmup` of them the warm-ups: every one distinct up to `unique`
    (building and holding them is the cost of a long run); past it the measured ones repeat in
    order, `unique - warmup` apart, and never a warm-up (a prefix cache would serve its copy)."""
    built = ExactPrompts(tokenizer, seed).prompts(min(n, unique), input_tokens, output_tokens)
    period = len(built) - min(warmup, len(built) - 1)
    return [built[i] if i < len(built) else built[len(built) - period + (i - len(built)) % period] for i in range(n)]


def from_jsonl(path: Path, tokenizer, default_output_tokens: int, n: int | None = None) -> list[Prompt]:
    """Lines of {"prompt": str, "output_tokens": int (optional)}; cycled up to n."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise WorkloadError(f"cannot read prompts file {str(path)!r}: {e.strerror}") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise WorkloadError(f"{path}:{lineno}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                            f"{e.start})") from None
    out: list[Prompt] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            text = obj["prompt"]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise WorkloadError(f"{path}:{lineno}: expected a JSON object with a string 'prompt'") from None
        out_toks = obj.get("output_tokens", default_output_tokens)
        if isinstance(out_toks, bool) or not isinstance(out_toks, int) or out_toks < 1:
            # never sent on: a server may read 0 or -5 as "no limit" and the run would measure that
            raise WorkloadError(f"{path}:{lineno}: 'output_tokens' must be a positive integer, got {out_toks!r}")
        if out_toks > MAX_TOKENS:
            raise WorkloadError(f"{path}:{lineno}: 'output_tokens' {out_toks} is more than {MAX_TOKENS:,} tokens")
        out.append(Prompt(text, len(tokenizer(text, add_special_tokens=True)["input_ids"]), out_toks))
    if not out:
        raise WorkloadError(f"prompts file {str(path)!r} has no prompts")
    if n is None:
        return out
    return [out[i % len(out)] for i in range(n)]
