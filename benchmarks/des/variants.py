"""Ablations of the ``headroom`` strategy for the DES, selected as ``headroom:<name>``.

Each is a strategy record (:class:`chutes_lb.routing.decision.Strategy`, :meth:`Variant.record`)
with its own procedure, run as ``RoutingConfig(strategy=record)`` by each replica's
``RoutingCore``, like any strategy. The production code has no research knobs: every procedure
here is built from the production pieces (:func:`chutes_lb.routing.decision.headroom_pick` and its
keyword arguments, and :func:`chutes_lb.routing.estimate.estimate` wrapped), with production
``HeadroomParams`` overrides, or by changing what the simulation feeds in (no shared counts). Ablations measured earlier and then dropped from the code (``no-survival``,
``remote-only``, ``sharepen``, ``best-sampled``, ``scan``) keep their figures in BENCHMARKS.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from chutes_lb.routing.decision import REGISTRY, HeadroomProcedure, Strategy, headroom_pick, uniform_index
from chutes_lb.routing.estimate import CandidateSet, Estimate, HeadroomParams, busy_slots, estimate

__all__ = ["Variant", "VARIANTS", "variant"]


def _no_penalty(cs: CandidateSet, i: int, now: float, r: float, p: HeadroomParams, v: object) -> Estimate:
    return estimate(cs, i, now, r, p, v)._replace(penalized=False)


def _no_errors(cs: CandidateSet, i: int, now: float, r: float, p: HeadroomParams, v: object) -> Estimate:
    return estimate(cs, i, now, r, p, v)._replace(free=cs.cap[i] - busy_slots(cs, i, now, r, p))


def _long_hold(cs: CandidateSet, i: int, now: float, r: float, p: HeadroomParams, v: object) -> Estimate:
    """A 429 holds the chute as full until the next snapshot (or LiveState.penalty_seconds)."""
    live = cs.cands[i].live
    e = estimate(cs, i, now, r, p, v)
    return e._replace(penalized=live is not None and live.penalized(now, v))


@dataclass(frozen=True)
class Variant:
    remote: bool = True  # feed the other replicas' shared counts in
    params: dict[str, Any] = field(default_factory=dict)  # HeadroomParams overrides
    pick: dict[str, Any] = field(default_factory=dict)  # headroom_pick keyword arguments

    def procedure(self) -> HeadroomProcedure:
        return partial(headroom_pick, **self.pick) if self.pick else headroom_pick

    def record(self, name: str) -> Strategy:
        """The strategy record of this ablation: ``headroom``'s, with this procedure and ``name``."""
        return REGISTRY["headroom"]._replace(name=name, procedure=self.procedure())

    def headroom_params(self, base: HeadroomParams) -> HeadroomParams:
        return replace(base, **self.params)


VARIANTS: dict[str, Variant] = {
    "": Variant(),
    # the reference findings' estimator: no sharing, no 429 hold, two samples
    "findings": Variant(remote=False, pick={"estimator": _no_penalty, "extra_samples": 0}),
    "no-remote": Variant(remote=False),
    "no-penalty": Variant(pick={"estimator": _no_penalty}),
    "long-hold": Variant(pick={"estimator": _long_hold}),
    "no-third": Variant(pick={"extra_samples": 0}),
    "uniform": Variant(pick={"draw": uniform_index}),
    "no-errors": Variant(pick={"estimator": _no_errors}),
    "no-speed": Variant(params={"slow_ratio": 0.0}),
    "fraction": Variant(params={"free_fraction": True}),  # ROUTING_FREE_FRACTION=true
}


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise SystemExit(f"unknown headroom variant {name!r}; one of {sorted(VARIANTS)}") from None
