"""Session affinity in the DES: the policy seam and a placeholder bounded-load rendezvous policy.

An :class:`AffinityPolicy` is called before the strategy for every attempt of a session's turn and
returns the preferred candidate index, or None to let the strategy (``decide``) choose. The DES
passes exactly what a proxy worker has: the session key, that worker's candidate set (snapshot,
live state, shared counts) and the decision inputs of ``decide``. The production affinity code
(issue 13 section 2) plugs in as such a callable::

    SimConfig(..., strategy="headroom", affinity=my_policy)

:class:`BoundedRendezvous` is the benchmark's placeholder: rendezvous hashing weighted by capacity
gives each session an order of the chutes; it takes the first chute in that order that is not
excluded, has an estimated free slot at ordinary speed and no 429 hold, and whose load after
taking the request is at most ``ceil(c x the fleet's mean x its slots)`` busy slots (the ceiling as in
"consistent hashing with bounded loads",
Mirrokni, Thorup and Zadimoghaddam 2018; HAProxy's ``hash-balance-factor``). Loads are this
worker's estimates (:func:`chutes_lb.routing.estimate.estimate`), never the true state. Stateless:
every replica computes the same order for a key.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Callable, Collection, Protocol

from chutes_lb.routing.estimate import CandidateSet, HeadroomParams, estimate

__all__ = ["AffinityPolicy", "BoundedRendezvous", "rendezvous_order", "policy_from"]


class AffinityPolicy(Protocol):
    def __call__(self, session_key: str, cands: CandidateSet, *, now: float, excluded: Collection[str],
                 replicas: float, snapshot_version: object, params: HeadroomParams, turn: int) -> int | None: ...


def _unit(key: str, chute_id: str) -> float:
    """A uniform draw in (0, 1) from the pair, the same in every process."""
    h = hashlib.blake2b(f"{key}\x1f{chute_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(h, "big") + 0.5) / 2.0**64


def rendezvous_order(key: str, ids: Collection[str], weights: Collection[float]) -> list[int]:
    """Candidate indexes by weighted rendezvous score ``-w / ln(u)``, best first: a chute is first
    for a share of keys proportional to its weight, and removing one moves only its keys."""
    scores = [(-w / math.log(_unit(key, cid)) if w > 0 else 0.0, i) for i, (cid, w) in enumerate(zip(ids, weights))]
    scores.sort(reverse=True)
    return [i for _, i in scores]


class BoundedRendezvous:
    """The placeholder policy (see the module docstring); ``c`` = the load bound over the mean."""

    def __init__(self, c: float = 1.25, memo: int = 65_536) -> None:
        self.c = c
        self._orders: OrderedDict[tuple[str, tuple[str, ...]], list[int]] = OrderedDict()
        self._memo = memo
        self.dropped: dict[str, int] = {"excluded": 0, "full": 0, "penalized": 0, "slow": 0, "bound": 0}

    def order(self, key: str, cands: CandidateSet) -> list[int]:
        k = (key, cands.ids)
        o = self._orders.get(k)
        if o is None:
            o = self._orders[k] = rendezvous_order(key, cands.ids, cands.cap)
            if len(self._orders) > self._memo:
                self._orders.popitem(last=False)
        return o

    def __call__(self, session_key: str, cands: CandidateSet, *, now: float, excluded: Collection[str],
                 replicas: float, snapshot_version: object, params: HeadroomParams, turn: int) -> int | None:
        est = [estimate(cands, i, now, replicas, params, snapshot_version) for i in range(cands.n)]
        busy = sum(cands.cap[i] - e.free for i, e in enumerate(est))
        mean = (busy + 1.0) / cands.total  # the fleet's load with this request placed
        reason = None
        for i in self.order(session_key, cands):
            e = est[i]
            if excluded and cands.ids[i] in excluded:
                reason = reason or "excluded"
            elif e.penalized:
                reason = reason or "penalized"
            elif e.free < 1.0:
                reason = reason or "full"
            elif e.slow:
                reason = reason or "slow"
            elif cands.cap[i] - e.free + 1.0 > math.ceil(self.c * mean * cands.cap[i]):
                reason = reason or "bound"
            else:
                if reason:
                    self.dropped[reason] += 1  # why the session's first choice was passed over
                return i
        if reason:
            self.dropped[reason] += 1
        return None


def policy_from(spec: object) -> tuple[str, Callable | None]:
    """(label, policy) for ``SimConfig.affinity``: None, "sticky", "rendezvous[:c]" or a callable."""
    if spec is None:
        return "", None
    if spec == "sticky":
        return "sticky", None
    if isinstance(spec, str) and spec.partition(":")[0] == "rendezvous":
        c = spec.partition(":")[2]
        return spec, BoundedRendezvous(float(c)) if c else BoundedRendezvous()
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__), spec
    raise ValueError(f"unknown affinity {spec!r}: None, 'sticky', 'rendezvous[:c]' or a callable")
