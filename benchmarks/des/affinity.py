"""Session affinity in the DES: the policy seam and the production bounded-load affinity behind it.

An :class:`AffinityPolicy` is called before the strategy for every attempt of a session's turn and
returns the preferred candidate index, or None to let the strategy (``decide``) choose. The DES
passes exactly what a proxy worker has: the session key, that worker's candidate set (snapshot,
live state, shared counts) and the decision inputs of ``decide``. The production affinity code
(issue 13 section 2) plugs in as such a callable::

    SimConfig(..., strategy="headroom", affinity=my_policy)

:class:`Production` is the proxies' own session affinity (:mod:`chutes_lb.routing.affinity`:
the key hashed to 64 bits, the weighted rendezvous order, the bounded-load pick; the fleet's load
is computed fresh per decision, where a proxy reuses it for up to a second): the DES runs the production code,
so what it measures is what ships. ``affinity[:c]`` selects it with load bound ``c`` (default
the shipped ``ROUTING_AFFINITY_BOUND``). Loads are this worker's estimates
(:func:`chutes_lb.routing.estimate.estimate`), never the true state. Stateless across workers:
every replica computes the same order for a key.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Collection, Protocol

from chutes_lb.routing.affinity import SessionMemo, affinity_pick
from chutes_lb.routing.core import RoutingConfig
from chutes_lb.routing.estimate import CandidateSet, HeadroomParams, estimate

__all__ = ["AffinityPolicy", "Production", "policy_from"]


class AffinityPolicy(Protocol):
    def __call__(self, session_key: str, cands: CandidateSet, *, now: float, excluded: Collection[str],
                 replicas: float, snapshot_version: object, params: HeadroomParams, turn: int) -> int | None: ...


class Production:
    """The production affinity (see the module docstring) behind the DES's policy seam; one per
    simulated worker fleet (the memo is per worker in production; here the workers share one,
    which changes no decision: an order depends only on the key and the candidate set)."""

    def __init__(self, bound: float | None = None, depth: int | None = None) -> None:
        config = RoutingConfig()
        self.bound = config.affinity_bound if bound is None else bound
        self.memo = SessionMemo(config.affinity_depth if depth is None else depth)
        self.keys: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def key(self, session_key: str) -> int:
        k = self.keys.get(session_key)
        if k is None:
            k = self.keys[session_key] = int.from_bytes(hashlib.blake2b(session_key.encode(), digest_size=8).digest(), "big")
        return k

    def __call__(self, session_key: str, cands: CandidateSet, *, now: float, excluded: Collection[str],
                 replicas: float, snapshot_version: object, params: HeadroomParams, turn: int) -> int | None:
        def est(i: int):
            return estimate(cands, i, now, replicas, params, snapshot_version)

        load = self.memo.load(cands, now, est, fresh=True)  # DES time is not seconds: no 1 s reuse
        pick = affinity_pick(cands, self.memo.order(self.key(session_key), cands), est, self.bound, load, excluded)
        why = pick.why if pick.index >= 0 else pick.outcome
        if why:
            self.dropped[why.removeprefix("dropped_")] = self.dropped.get(why.removeprefix("dropped_"), 0) + 1
        return pick.index if pick.index >= 0 else None


def policy_from(spec: object) -> tuple[str, Callable | None]:
    """(label, policy) for ``SimConfig.affinity``: None, "sticky", "affinity[:c]" or a callable."""
    if spec is None:
        return "", None
    if spec == "sticky":
        return "sticky", None
    if isinstance(spec, str) and spec.partition(":")[0] == "affinity":
        c = spec.partition(":")[2]
        return spec, Production(float(c)) if c else Production()
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__), spec
    raise ValueError(f"unknown affinity {spec!r}: None, 'sticky', 'affinity[:c]' or a callable")
