"""Prefix cache and instances of one chute (pure: no clock, no I/O; the rng is injected).

Prefix identity, like vLLM's automatic prefix caching: the canonical prompt bytes
(:mod:`chutes_lb.simulator.prompt`) are cut into blocks of ``block_tokens x 4`` bytes (a token
is ~4 bytes of prompt, see ``prompt.py``) and block *k*'s hash is the digest of everything up to
the end of block *k* (one running BLAKE2b; each digest covers all bytes before it, so two prompts
share block hashes exactly as long as they share a prefix). Only full blocks are hashed and
cached, as in vLLM.

Each instance keeps an LRU of block hashes holding at most ``cache_tokens // block_tokens``
blocks (eviction by tokens: every block holds ``block_tokens``). A served prompt is inserted
last block first, so its first blocks are the most recently used and the tail is evicted first
(vLLM frees a sequence's blocks in reverse order for the same reason): what survives is still a
prefix. The cached part of a prompt on an instance is its longest run of leading blocks present
there; at most ``(prompt_tokens - 1) // block_tokens`` blocks count, because the last token is
always computed (vLLM recomputes it; the published Chutes samples show ``ct < it`` even on a
full hit, e.g. 26,176 of 26,188).

Instance choice (Chutes' gateway, see shared/reference/chutes-api.md): it orders the
instances by open connections (fewest first, ties in a random rotation) and tries up to
:data:`MAX_TRIES`; among those with a free slot it takes the one holding the longest cached
prefix (ties: fewer connections, then the order). Since the order is by connections, "none of
the first five has a slot" means no instance has one: a chute answers 429 exactly when it is
full, and the prefix preference is bounded to the least-loaded instances (load-aware,
cache-first, as in the study's simulation).
"""
from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from operator import attrgetter
from typing import Sequence

__all__ = ["MAX_TRIES", "BYTES_PER_TOKEN", "block_hashes", "PrefixCache", "Instance", "choose_instance", "cacheable_blocks"]

MAX_TRIES = 5
BYTES_PER_TOKEN = 4
_DIGEST = 16
_LOAD = attrgetter("in_flight")


def block_hashes(data: bytes, block_tokens: int) -> list[bytes]:
    """Chained hashes of the full blocks of ``data`` (one per ``block_tokens x 4`` bytes)."""
    size = block_tokens * BYTES_PER_TOKEN
    full = len(data) // size
    if not full:
        return []
    h = hashlib.blake2b(digest_size=_DIGEST)
    out = []
    view = memoryview(data)
    for i in range(0, full * size, size):
        h.update(view[i:i + size])
        out.append(h.digest())
    return out


def cacheable_blocks(hashes: Sequence[bytes], prompt_tokens: int, block_tokens: int) -> int:
    """How many leading blocks may count as cached: the last token is always computed."""
    return min(len(hashes), max(0, prompt_tokens - 1) // block_tokens)


class PrefixCache:
    """LRU of block hashes, bounded in tokens (``capacity_tokens // block_tokens`` blocks)."""

    __slots__ = ("block_tokens", "capacity_blocks", "_blocks")

    def __init__(self, capacity_tokens: int, block_tokens: int) -> None:
        self.block_tokens = block_tokens
        self.capacity_blocks = max(0, capacity_tokens) // block_tokens
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    @property
    def tokens(self) -> int:
        return len(self._blocks) * self.block_tokens

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block: bytes) -> bool:
        return block in self._blocks

    def match(self, hashes: Sequence[bytes], limit: int | None = None) -> int:
        """Number of leading blocks of ``hashes`` (at most ``limit``) held here."""
        blocks = self._blocks
        n = 0
        for h in hashes if limit is None else hashes[:limit]:
            if h not in blocks:
                break
            n += 1
        return n

    def insert(self, hashes: Sequence[bytes]) -> None:
        """Cache (or refresh) every block, last first; evict least recently used beyond capacity."""
        if not self.capacity_blocks:
            return
        blocks = self._blocks
        for h in reversed(hashes):
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)

    def resize(self, capacity_tokens: int) -> None:
        self.capacity_blocks = max(0, capacity_tokens) // self.block_tokens
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)

    def clear(self) -> None:
        self._blocks.clear()


class Instance:
    """One instance of a chute: its slots in use, its prefix cache, its prefill queue."""

    __slots__ = ("index", "in_flight", "cache", "prefill_free_at")

    def __init__(self, index: int, cache_tokens: int, block_tokens: int) -> None:
        self.index = index
        self.in_flight = 0
        self.cache = PrefixCache(cache_tokens, block_tokens)
        self.prefill_free_at = 0.0  # monotonic time when this instance's prefill queue drains

    def reserve_prefill(self, now: float, seconds: float) -> float:
        """Queue ``seconds`` of prefill at ``now`` (FIFO); return the wait before it starts."""
        wait = max(0.0, self.prefill_free_at - now)
        self.prefill_free_at = now + wait + seconds
        return wait

    def __repr__(self) -> str:
        return f"Instance({self.index}, in_flight={self.in_flight}, cached_tokens={self.cache.tokens})"


def choose_instance(instances: Sequence[Instance], concurrency: int, hashes: Sequence[bytes], limit: int,
                    rng: random.Random, max_tries: int = MAX_TRIES) -> tuple[Instance | None, int]:
    """(instance, cached blocks) for a request, or ``(None, 0)``: 429. See the module docstring.

    ``limit`` caps the cached blocks that count (:func:`cacheable_blocks`).
    """
    n = len(instances)
    if not n:
        return None, 0
    start = rng.randrange(n) if n > 1 else 0
    order = list(instances[start:]) + list(instances[:start]) if start else list(instances)
    if not limit:  # nothing cacheable: plain least connections (min is stable: first in the rotation)
        least = min(order, key=_LOAD)
        return (least, 0) if least.in_flight < concurrency else (None, 0)
    tried = order if n <= max_tries else sorted(order, key=_LOAD)[:max_tries]
    best: Instance | None = None
    best_key: tuple[int, int, int] = (-1, 0, 0)
    for pos, inst in enumerate(tried):
        if inst.in_flight >= concurrency:
            continue
        key = (inst.cache.match(hashes, limit), -inst.in_flight, -pos)
        if key > best_key:
            best, best_key = inst, key
    if best is None:
        return None, 0
    return best, best_key[0]
