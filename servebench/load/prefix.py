"""Prompts that share prefix blocks exactly, so an engine's prefix cache sees a trace's reuse.

A request is (length, block ids). Block k of a prompt covers tokens [k*B, (k+1)*B) under the
served tokenizer (B: tokens a block; the first block holds the special tokens the tokenizer
adds, BOS). Each block id gets its own words, drawn once from a generator seeded by the id (once
for a prompt's start, once for inside one: an id can stand in both places), so two requests
whose block lists start alike share exactly those tokens; distinct ids differ in
their first words (the id's digits in the word pool), so requests differ right after what they
share. Tokens after the last block are the request's own (its index's digits, then random); a
prompt with no block leads with words no block leads with.

Words come from ExactPrompts' pool: single tokens after a space, so under whitespace-splitting
pre-tokenizers a text of k words is k tokens and concatenated blocks are concatenated token
sequences. The prompt's first word has no space before it: it comes from the words that are
one token on their own. Every prompt's length is checked by encoding it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from servebench.load.prompts import ExactPrompts, WorkloadError


@dataclass(slots=True, frozen=True)
class Shape:
    """One request to build: its length and the prefix blocks it starts with."""

    input_tokens: int
    blocks: tuple[int, ...] = ()


class PrefixPrompts:
    def __init__(self, exact: ExactPrompts, block_tokens: int, seed: int = 0) -> None:
        self.ep, self.block, self.seed = exact, block_tokens, seed
        self.words = exact.words
        lone = exact.tok(self.words, add_special_tokens=False)["input_ids"]
        self.lead = [w for w, ids in zip(self.words, lone) if len(ids) == 1]
        if len(self.lead) < 8:
            raise WorkloadError(f"tokenizer has too few words that are one token at the start of a text "
                                f"({len(self.lead)}) to build prefix-sharing prompts")
        if block_tokens <= exact.specials + 3:
            raise WorkloadError(f"prefix blocks of {block_tokens} tokens are too short: the first one holds the "
                                f"tokenizer's {exact.specials} special token(s) and 3 words that name it")
        self._cache: dict[tuple[int, bool], list[str]] = {}

    def _digits(self, value: int, first_pool: list[str], n: int = 3) -> list[str]:
        """value written in the pools' bases: distinct values -> distinct leading words."""
        out, v = [first_pool[value % len(first_pool)]], value // len(first_pool)
        for _ in range(n - 1):
            out.append(self.words[v % len(self.words)])
            v //= len(self.words)
        return out

    def block_words(self, bid: int, position: int) -> list[str]:
        # keyed by where it stands too: a trace may use an id inside one prompt and at the start of
        # another, and a prompt's first word must be one that is one token at a text's start
        words = self._cache.get((bid, position == 0))
        if words is None:
            rng = random.Random(f"{self.seed}:block:{bid}")
            pool = self.lead[0::2] if position == 0 else self.words
            words = self._digits(bid & 0xFFFFFFFFFFFF, pool)
            words += rng.choices(self.words, k=self.block - len(words))
            self._cache[(bid, position == 0)] = words
        return words if position else words[: self.block - self.ep.specials]

    def words_for(self, shape: Shape, index: int) -> list[str]:
        """The words of one prompt: its blocks' words, then its own."""
        need = shape.input_tokens - self.ep.specials
        if need < 1:
            raise WorkloadError(f"cannot build a {shape.input_tokens}-token prompt: the tokenizer adds "
                                f"{self.ep.specials} special tokens")
        out: list[str] = []
        for k, bid in enumerate(shape.blocks):
            if len(out) >= need:
                break
            out += self.block_words(bid, k)
        if len(out) < need:
            rng = random.Random(f"{self.seed}:request:{index}")
            # a prompt of its own only (a warm-up, an unshared request) leads with words no block
            # leads with: not even its first tokens are a prefix some block's prompts share
            own = self._digits(index, self.lead[1::2] if not out else self.words)
            out += own + rng.choices(self.words, k=max(0, need - len(out) - len(own)))
        return out[:need]

    def build(self, shapes: list[Shape]) -> list[str]:
        texts = [" ".join(self.words_for(s, i)) for i, s in enumerate(shapes)]
        counts = [len(ids) for ids in self.ep.tok(texts, add_special_tokens=True)["input_ids"]]
        for i, (s, c) in enumerate(zip(shapes, counts)):
            if c != s.input_tokens:
                raise WorkloadError(f"tokenizer merges words across spaces: request {i} is {c} tokens, not "
                                    f"{s.input_tokens}; prefix-sharing prompts need a whitespace-splitting tokenizer")
        return texts


def ideal_reuse(shapes: list[Shape], block_tokens: int) -> dict:
    """The share of input tokens in a block some earlier request already had: what a prefix
    cache of unlimited size, never evicting, could serve from cache (docs/workloads.md)."""
    seen: dict[int, int] = {}  # block id -> the most of its tokens an earlier request held
    total = reused = 0
    for s in shapes:
        total += s.input_tokens
        for k, bid in enumerate(s.blocks):
            lo = k * block_tokens
            if lo >= s.input_tokens:
                break
            held = min(block_tokens, s.input_tokens - lo)
            reused += min(held, seen.get(bid, 0))  # an earlier prompt that ended inside it had only part
            seen[bid] = max(held, seen.get(bid, 0))
    return {"share": reused / total if total else 0.0, "reused_tokens": reused, "input_tokens": total,
            "block_tokens": block_tokens, "distinct_blocks": len(seen)}
