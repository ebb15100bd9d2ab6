"""Strategies the DES runs that are not in :func:`chutes_lb.routing.decision.decide`.

- ``least-busy``: per-process min of own in-flight, ties to the first (LiteLLM's least-busy);
- ``oracle-jsq``: max true free slots, instantly;
- ``oracle-p2c``: two capacity-weighted samples, the one with more true free slots.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.des.sim import Simulation

__all__ = ["BASELINES", "baseline_pick"]

BASELINES = ("least-busy", "oracle-jsq", "oracle-p2c")


def baseline_pick(sim: "Simulation", r: int, exc: set | None) -> int:
    """The chute index for replica ``r`` under ``sim.base``; ``exc`` = ids that already failed."""
    n, ids = sim.n, sim.ids
    avail = range(n) if not exc else [i for i in range(n) if ids[i] not in exc] or range(n)
    free = [sim.caps[i] - sim.nsys[i] for i in range(n)]
    if sim.base == "least-busy":
        return min(avail, key=sim.own_in[r].__getitem__)
    if sim.base == "oracle-jsq":
        return max(avail, key=free.__getitem__)
    if sim.base == "oracle-p2c":
        g, pick = sim.drng[r], []
        for _ in range(16):
            i = bisect_right(sim.cum, g.random() * sim.total_cap)
            i = i if i < n else n - 1
            if not exc or ids[i] not in exc:
                pick.append(i)
                if len(pick) == 2:
                    break
        if len(pick) < 2:
            return max(avail, key=free.__getitem__)
        a, b = pick
        return a if free[a] >= free[b] else b
    raise ValueError(f"unknown strategy {sim.cfg.strategy}")
