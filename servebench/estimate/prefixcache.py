"""The simulator's prefix cache: prompt blocks a trace says are shared, kept in the KV pool.

Modelled on vLLM's automatic prefix caching (SGLang's radix cache behaves alike for whole
blocks): a trace names each prompt's leading blocks by id (Mooncake's hash_ids, servebench's
prefix_blocks; equal ids mean equal tokens up to there), and a block some earlier request
computed can be served from the KV pool instead of prefilled again, until its memory is needed.

- A hit is the longest run of a prompt's leading ids that are cached, whole blocks only, and at
  least one prompt token is always computed (vLLM recomputes the last one for its logits).
- A cached block is either held (by requests admitted with it, shared, counted once in the
  pool) or free (nobody holds it: its blocks count as free KV and are evicted, least recently
  used first, when an admission needs the room). Evicting only when no uncached block is free is
  kinder than vLLM, whose one free queue mixes both in release order (docs/estimate.md).
- A block a request computes is published once its prefill is done; a block two requests
  compute at the same time stays private to the second (both paid for it).

Counters follow vLLM's prefix_cache_queries/hits (tokens, each admission, a recompute after
preemption included), so the simulated hit rate reads like the measured one.
"""

from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    def __init__(self, block_tokens: int, kv_block: int) -> None:
        self.bt = block_tokens  # tokens per trace block
        # whole KV blocks a trace block fills: what can be shared and what its memory counts as.
        # A block of a size not a multiple of the KV block shares only those (the engine caches
        # whole KV blocks), so the memory moved in and out of the pool always balances
        self.hb = block_tokens // kv_block
        self.held: dict[int, int] = {}  # id -> requests holding it
        self.free: OrderedDict[int, None] = OrderedDict()  # ids nobody holds, oldest first
        self.queried = self.hits = 0

    def match(self, ids: tuple[int, ...], prompt: int) -> tuple[int, int]:
        """(leading blocks cached, of which free): what admitting this prompt would reuse."""
        k = n_free = 0
        for bid in ids[: max(prompt - 1, 0) // self.bt]:
            if bid in self.held:
                k += 1
            elif bid in self.free:
                k, n_free = k + 1, n_free + 1
            else:
                break
        return k, n_free

    def take(self, ids: tuple[int, ...], k: int, prompt: int) -> tuple[list[int], int]:
        """Hold the first k ids for a request being admitted; returns (ids held, KV blocks the free
        ones leave the free pool with)."""
        moved = 0
        for bid in ids[:k]:
            if bid in self.free:
                del self.free[bid]
                self.held[bid] = 1
                moved += self.hb
            else:
                self.held[bid] += 1
        self.queried += prompt
        self.hits += k * self.bt
        return list(ids[:k]), moved

    def publish(self, ids: tuple[int, ...], k: int, prompt: int, held: list[int]) -> int:
        """After a prefill: the prompt's whole blocks past the hit become shared. Returns the KV
        blocks moved out of the request's own count."""
        moved = 0
        for bid in ids[k: prompt // self.bt]:
            if bid in self.held or bid in self.free:
                continue  # computed twice at once: this copy stays the request's own
            self.held[bid] = 1
            held.append(bid)
            moved += self.hb
        return moved

    def release(self, held: list[int]) -> int:
        """A request ends or is preempted: the blocks it held that nobody else holds become free
        (still cached), its last block the oldest. Returns the KV blocks that joined the free pool."""
        freed = 0
        for bid in reversed(held):  # tail first, as vLLM frees them: evicted first, the shared head stays
            n = self.held[bid] - 1
            if n:
                self.held[bid] = n
            else:
                del self.held[bid]
                self.free[bid] = None
                freed += self.hb
        held.clear()
        return freed

    def evict(self, free_blocks: int) -> None:
        """Cached free blocks are part of the free KV; keep them within it, oldest out first."""
        while self.free and len(self.free) * self.hb > free_blocks:
            self.free.popitem(last=False)

    def stats(self) -> dict:
        return {"prefix_queried_tokens": self.queried, "prefix_hit_tokens": self.hits,
                "prefix_hit_rate": self.hits / self.queried if self.queried else 0.0}
