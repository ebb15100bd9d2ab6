"""Strategies the DES runs that are not routing strategies of the product, as registry records
(:class:`chutes_lb.routing.decision.Strategy`) with procedures of their own, so they run through
the same per-replica loop as the product's (``RoutingCore.pick`` through ``UpstreamCall``):

- ``least-busy``: per-process min of own in-flight (the replica's ``LiveState``), ties to the
  first (LiteLLM's least-busy);
- ``oracle-jsq``: max true free slots, instantly;
- ``oracle-p2c``: two capacity-weighted samples, the one with more true free slots.

The oracles read the simulation's true state (``caps`` and ``nsys`` by chute id), which no
replica can see: they bound what routing could reach.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Collection

from chutes_lb.routing.decision import RandomLike, Reason, Strategy, weighted_index
from chutes_lb.routing.estimate import CandidateSet, HeadroomParams

if TYPE_CHECKING:
    from benchmarks.des.sim import Simulation

__all__ = ["BASELINES", "baseline"]

BASELINES = ("least-busy", "oracle-jsq", "oracle-p2c")


def _least_busy(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, r: float,
                p: HeadroomParams, v: object) -> tuple[int, Reason]:
    avail = [i for i in range(cs.n) if not excluded or cs.ids[i] not in excluded] or range(cs.n)
    return min(avail, key=lambda i: cs.cands[i].live.in_flight), Reason.ARGMIN


def baseline(name: str, sim: "Simulation") -> Strategy:
    """The record of baseline ``name``; the oracles read ``sim``'s true state."""
    index = {cid: i for i, cid in enumerate(sim.ids)}

    def free(cs: CandidateSet, i: int) -> int:
        c = index[cs.ids[i]]
        return sim.caps[c] - sim.nsys[c]

    def jsq(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, r: float,
            p: HeadroomParams, v: object) -> tuple[int, Reason]:
        avail = [i for i in range(cs.n) if not excluded or cs.ids[i] not in excluded] or range(cs.n)
        return max(avail, key=lambda i: free(cs, i)), Reason.ARGMIN

    def p2c(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, r: float,
            p: HeadroomParams, v: object) -> tuple[int, Reason]:
        pick: list[int] = []
        for _ in range(16):
            i = weighted_index(cs, rng)
            if not excluded or cs.ids[i] not in excluded:
                pick.append(i)
                if len(pick) == 2:
                    break
        if len(pick) < 2:
            return jsq(cs, rng, excluded, now, r, p, v)
        a, b = pick
        return (a if free(cs, a) >= free(cs, b) else b), Reason.P2C

    procedures = {"least-busy": _least_busy, "oracle-jsq": jsq, "oracle-p2c": p2c}
    if name not in procedures:
        raise ValueError(f"unknown strategy {name!r}")
    return Strategy(name, procedures[name], None, False, "DES baseline (benchmarks/des/baselines.py)")
