"""The attempt ledger: which upstream attempts each request still has open, so that every attempt
is closed exactly once (a second close finds nothing) and attempts whose owner vanished can be
swept. Pure: a dict, times passed in.

An attempt is keyed by the request's call id and the chute it went to; it holds the
:class:`~chutes_lb.routing.live.LiveState` token, its start time and the API it serves. Which
chutes a request has tried is its owner's (:class:`~chutes_lb.routing.attempts.UpstreamCall`).

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

__all__ = ["Attempt", "AttemptLedger"]


class Attempt(NamedTuple):
    token: int
    started: float
    api: str = "chat"


class AttemptLedger:
    def __init__(self) -> None:
        self._open: dict[str, dict[str, Attempt]] = {}

    def open(self, call_id: str, chute_id: str, attempt: Attempt) -> None:
        """Record an attempt (its owner closed the request's earlier attempt before)."""
        self._open.setdefault(call_id, {})[chute_id] = attempt

    def close(self, call_id: str, chute_id: str) -> Attempt | None:
        """Remove and return the open attempt, or None when it was already closed (or never open)."""
        per_call = self._open.get(call_id)
        if per_call is None:
            return None
        attempt = per_call.pop(chute_id, None)
        if not per_call:
            del self._open[call_id]
        return attempt

    def has(self, call_id: str) -> bool:
        return call_id in self._open

    def chutes_of(self, call_id: str) -> list[str]:
        return list(self._open.get(call_id, ()))

    def older_than(self, cutoff: float) -> Iterator[tuple[str, str]]:
        """(call id, chute id) of every attempt started before ``cutoff`` (a snapshot: safe to close)."""
        return iter([(call_id, chute_id) for call_id, per_call in self._open.items()
                     for chute_id, attempt in per_call.items() if attempt.started < cutoff])

    def __len__(self) -> int:
        return sum(len(per_call) for per_call in self._open.values())
