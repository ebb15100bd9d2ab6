"""Routing: pure decision logic (:mod:`.decision`), per-process live bookkeeping (:mod:`.live`)
and the LiteLLM hook (``hook``, which does the I/O). Only the pure parts are re-exported here."""
from chutes_lb.routing.decision import (
    DEFAULT_PARAMS,
    DEFAULT_STRATEGY,
    STRATEGIES,
    Candidate,
    CandidateSet,
    Decision,
    HeadroomParams,
    Reason,
    decide,
)
from chutes_lb.routing.live import OUTCOMES, ChuteLive, LiveState, RemoteCounts, aggregate_remote

__all__ = [
    "DEFAULT_PARAMS", "DEFAULT_STRATEGY", "STRATEGIES", "Candidate", "CandidateSet", "Decision",
    "HeadroomParams", "Reason", "decide", "OUTCOMES", "ChuteLive", "LiveState", "RemoteCounts",
    "aggregate_remote",
]
