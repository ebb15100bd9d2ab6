"""Session affinity with bounded load: the turns of one conversation go to the chute that served
the previous ones (its prefix cache holds their prompt) while that chute has room, without
piling sessions onto one chute. Pure: no I/O, no clock.

Must not import: ``chutes_lb.settings``, Redis, HTTP clients, LiteLLM, or anything in ``chutes_lb.proxy``.

**The key** is a 64-bit integer the caller derives from the request (the proxy:
:mod:`chutes_lb.proxy.session`, from headers and body; the DES: from its session ids, both with
:func:`h64`). Routing never sees a request body.

**The pick** (:func:`affinity_pick`): the candidates are ordered by weighted rendezvous hashing
(the highest ``capacity / -ln(h(key, chute))`` first, so a chute gets sessions in proportion to
its capacity and removing one moves only its own sessions); the first chute in that order that
has room at ordinary speed (no 429 hold, not slow, not excluded) and whose busy slots after this
request stay within ``ceil(bound x capacity x (fleet load + 1 / fleet capacity))`` (its share of
the fleet's load, times ``bound``: "consistent hashing with bounded loads", Mirrokni, Thorup and
Zadimoghaddam 2018, weighted by capacity, as HAProxy's ``hash-balance-factor``), or below half its
slots (:data:`FREE_BELOW`), takes the request. Only the first ``depth`` chutes are tried; otherwise
the caller falls back to the herd-proof power of two choices.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Callable, Collection, NamedTuple

from chutes_lb.routing.estimate import CandidateSet, Estimate

__all__ = ["h64", "rendezvous_order", "affinity_pick", "AffinityPick", "SessionMemo", "OUTCOMES"]

# Up to this share of its slots a chute keeps its sessions whatever the fleet's mean load: at low
# load the bound (its share x bound, rounded up) is a slot or two, estimation noise alone (the
# utilization API's 10 s averages) would then move sessions and lose their caches for no gain.
FREE_BELOW = 0.5
# how an affinity pick ended (bounded metric label values)
OUTCOMES = ("hit", "spill", "dropped_full", "dropped_penalized", "dropped_slow", "dropped_excluded", "dropped_overloaded", "no_key")


def h64(*parts: str) -> int:
    """A stable 64-bit hash of the parts (the same in every process: session keys, chute hashes)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


_CHUTE_HASH: dict[str, int] = {}
_M64 = (1 << 64) - 1


def _chute_hash(chute_id: str) -> int:
    h = _CHUTE_HASH.get(chute_id)
    if h is None:
        if len(_CHUTE_HASH) > 100_000:
            _CHUTE_HASH.clear()
        h = _CHUTE_HASH[chute_id] = h64("chute", chute_id)
    return h


def _unit(key: int, chute_id: str) -> float:
    """A uniform (0, 1) draw from (key, chute), the same on every replica (splitmix64 finaliser)."""
    z = (key ^ _chute_hash(chute_id)) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    z ^= z >> 31
    return (z + 0.5) / 2.0**64


def rendezvous_order(cs: CandidateSet, key: int, depth: int | None = None) -> list[int]:
    """Candidate indices, the session's preferred chute first (weighted rendezvous hashing);
    only the first ``depth`` when given."""
    scores = [cs.cap[i] / -math.log(_unit(key, cs.ids[i])) for i in range(cs.n)]
    order = sorted(range(cs.n), key=lambda i: -scores[i])
    return order if depth is None else order[:depth]


class AffinityPick(NamedTuple):
    index: int  # -1: no chute of the first ``depth`` qualified (fall back)
    outcome: str  # one of OUTCOMES
    rank: int = 0  # position of the chosen chute in the session's order
    why: str | None = None  # for a spill: why the session's first chute was passed over


def affinity_pick(cs: CandidateSet, order: list[int], estimate_of: Callable[[int], Estimate], bound: float,
                  fleet_load: float, excluded: Collection[str] = (), fresh_load: Callable[[], float] | None = None) -> AffinityPick:
    """The bounded-load pick over the session's ``order`` (:func:`rendezvous_order`, first few):
    ``fleet_load`` = the fleet's estimated busy slots / capacity, as the core keeps it (at most a
    second old, so a decision does not sum over every chute); when a chute fails the bound
    against it, ``fresh_load()`` recomputes it from the same estimates before the chute is
    given up (the chute's busy estimate and the fleet's then agree)."""
    first_problem = None
    loads = [fleet_load]

    def allowed(i: int) -> float:
        return max(math.ceil(bound * cs.cap[i] * (loads[0] + 1.0 / cs.total)), FREE_BELOW * cs.cap[i])

    def over(i: int, e: Estimate) -> bool:
        busy_after = cs.cap[i] - e.free + 1.0
        if busy_after <= allowed(i):
            return False
        if fresh_load is not None and len(loads) == 1:
            loads.insert(0, fresh_load())
            return busy_after > allowed(i)
        return True

    for rank, i in enumerate(order):
        e = estimate_of(i)
        problem = None
        if excluded and cs.ids[i] in excluded:
            problem = "dropped_excluded"
        elif e.penalized:
            problem = "dropped_penalized"
        elif e.free <= 0.0:
            problem = "dropped_full"
        elif e.slow:
            problem = "dropped_slow"
        elif over(i, e):
            problem = "dropped_overloaded"  # this request would lift the chute above bound x its share
        if problem is None:
            return AffinityPick(i, "hit" if rank == 0 else "spill", rank, first_problem)
        first_problem = first_problem or problem
    return AffinityPick(-1, first_problem or "dropped_full")


class SessionMemo:
    """Per worker: each session's order over a candidate set (follow-ups hit the memo; bounded),
    and each candidate set's load, recomputed at most once every ``reuse_seconds`` (not per decision)."""

    def __init__(self, depth: int = 2, size: int = 8192, reuse_seconds: float = 1.0) -> None:
        self.depth, self.size, self.reuse_seconds = depth, size, reuse_seconds
        # keyed by id(cs); each entry keeps its set, and is used only for that very object (an
        # id can be reused once a set is freed, e.g. another group's set after a new snapshot)
        self._orders: OrderedDict[tuple[int, int], tuple[CandidateSet, list[int]]] = OrderedDict()
        self._loads: dict[int, tuple[CandidateSet, float, float]] = {}

    def __len__(self) -> int:
        return len(self._orders)

    def order(self, key: int, cs: CandidateSet) -> list[int]:
        k = (key, id(cs))
        hit = self._orders.get(k)
        if hit is None or hit[0] is not cs:
            order = rendezvous_order(cs, key, self.depth)
            self._orders[k] = (cs, order)
            self._orders.move_to_end(k)
            if len(self._orders) > self.size:
                self._orders.popitem(last=False)
            return order
        self._orders.move_to_end(k)
        return hit[1]

    def load(self, cs: CandidateSet, now: float, estimate_of: Callable[[int], Estimate], fresh: bool = False) -> float:
        cached = self._loads.get(id(cs))
        if cached is not None and cached[0] is cs and 0.0 <= now - cached[1] < self.reuse_seconds and not fresh:
            return cached[2]
        busy = sum(cs.cap[i] - estimate_of(i).free for i in range(cs.n))
        load = max(0.0, busy) / cs.total
        if len(self._loads) > 64:
            self._loads.clear()
        self._loads[id(cs)] = (cs, now, load)
        return load
