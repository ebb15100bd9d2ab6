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

Instance choice is Chutes' own (``api/invocation/util.py`` and the instance manager, see
shared/reference/chutes-api.md, "Inside a chute"), and it does **not** look into the caches:

* the prefix keys of a request (:func:`prefix_keys`) are md5 digests of its *character* prefix at
  power-of-two lengths from 1,024 characters (1,024, 2,048, ... while the text is longer), over
  the concatenated message contents, computed **only when every message's content is a plain
  string** (a list of parts, the shape many SDKs and agents send, gives no keys), or over a
  legacy string prompt;
* the chute remembers only the **largest** key of each request, with the instance it went to,
  for 600 s (:class:`PrefixMemo`; Chutes keeps it in memcache);
* the instance with the fewest connections is the default (ties in a random rotation); the
  remembered instance of the longest known key is taken instead 95% of the time when it has a
  free slot and at most 2 connections more than that minimum;
* the least-connected instance is full exactly when every instance is: then the chute is full
  (Chutes tries up to 5 instances, by connections, before its 429).

So the KV cache an instance holds (the block LRU above) is found again only through the key
memo, or by chance: a conversation sent with list contents lands on any instance, as in the
published Chutes trace where a 10-turn session touched 5 instances.
"""
from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from operator import attrgetter
from typing import Sequence

__all__ = ["BYTES_PER_TOKEN", "PREFIX_MIN_CHARS", "PREFIX_TTL_SECONDS", "block_hashes", "prefix_keys", "PrefixCache",
           "PrefixMemo", "Instance", "choose_instance", "cacheable_blocks"]

BYTES_PER_TOKEN = 4
PREFIX_MIN_CHARS = 1024
PREFIX_TTL_SECONDS = 600.0
PREFER_CACHED = 0.95  # share of requests sent to the remembered instance when it qualifies
CONNECTION_SLACK = 2  # the remembered instance may have this many connections more than the least loaded
MEMO_ENTRIES = 100_000  # bound of a chute's key memo (oldest dropped first)
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


def prefix_keys(text: str | None) -> list[bytes]:
    """md5 digests of ``text[:1024]``, ``text[:2048]``, ... (while ``text`` is longer), largest first."""
    if text is None or len(text) <= PREFIX_MIN_CHARS:
        return []
    h = hashlib.md5()
    out = []
    done, size = 0, PREFIX_MIN_CHARS
    while len(text) > size:
        h.update(text[done:size].encode())
        out.append(h.copy().digest())
        done, size = size, size * 2
    out.reverse()
    return out


class PrefixMemo:
    """A chute's memory of prefix key -> instance index, each entry for ``ttl`` seconds."""

    __slots__ = ("ttl", "_entries")

    def __init__(self, ttl: float = PREFIX_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[bytes, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, keys: Sequence[bytes], now: float) -> int | None:
        """The instance remembered for the longest of ``keys`` (largest first) still alive."""
        entries = self._entries
        for k in keys:
            hit = entries.get(k)
            if hit is not None:
                if hit[1] > now:
                    return hit[0]
                del entries[k]
        return None

    def remember(self, key: bytes, index: int, now: float) -> None:
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (index, now + self.ttl)
        if len(entries) > MEMO_ENTRIES:
            del entries[next(iter(entries))]

    def clear(self) -> None:
        self._entries.clear()


def choose_instance(instances: Sequence[Instance], concurrency: int, keys: Sequence[bytes], memo: PrefixMemo, now: float,
                    rng: random.Random) -> Instance | None:
    """The instance for a request, or None when every instance is full (429). See the module docstring."""
    n = len(instances)
    if not n:
        return None
    if n == 1:
        least = instances[0]
    else:
        start = rng.randrange(n)
        least = min(instances[start:] + instances[:start] if start else instances, key=_LOAD)  # first minimum: rotation
    if least.in_flight >= concurrency:
        return None
    chosen = least
    if keys:
        idx = memo.lookup(keys, now)
        if idx is not None and idx < n and idx != least.index:
            cached = instances[idx]
            if (cached.in_flight < concurrency and cached.in_flight <= least.in_flight + CONNECTION_SLACK
                    and rng.random() < PREFER_CACHED):
                chosen = cached
        memo.remember(keys[0], chosen.index, now)
    return chosen
