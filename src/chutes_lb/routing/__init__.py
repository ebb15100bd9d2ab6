"""Routing: which chute serves each upstream attempt, and why.

Pure parts (no I/O, clock and random source passed in): :mod:`.estimate` (what the router
believes about one chute), :mod:`.decision` (the strategies), :mod:`.live` (per-process
bookkeeping), :mod:`.remote` (the in-flight exchange), :mod:`.pace` (slowness against the fleet),
:mod:`.ledger` (open attempts), :mod:`.core` (the routing core that ties them together),
:mod:`.metrics` (the metrics seam). Async loops over a ``SnapshotStore``: :mod:`.follower`,
:mod:`.sharing`. The LiteLLM adapter: :mod:`.hook` (the only module that imports LiteLLM; not
re-exported here, so ``import chutes_lb.routing`` stays light).

Nothing in this package imports ``chutes_lb.proxy`` (a test enforces it). See docs/ARCHITECTURE.md.
"""
from chutes_lb.routing.decision import DEFAULT_STRATEGY, STRATEGIES, Decision, Reason, decide
from chutes_lb.routing.estimate import DEFAULT_PARAMS, Candidate, CandidateSet, Estimate, HeadroomParams, estimate
from chutes_lb.routing.live import OUTCOMES, ChuteLive, LiveState
from chutes_lb.routing.remote import RemoteCounts, aggregate_remote, exchange

__all__ = [
    "DEFAULT_PARAMS", "DEFAULT_STRATEGY", "STRATEGIES", "Candidate", "CandidateSet", "Decision", "Estimate",
    "HeadroomParams", "Reason", "decide", "estimate", "OUTCOMES", "ChuteLive", "LiveState", "RemoteCounts",
    "aggregate_remote", "exchange",
]
