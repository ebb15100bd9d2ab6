"""The attempt ledger: which upstream attempts each request still has open, so that every attempt
is closed exactly once (LiteLLM does not report every failed attempt of a retried request to the
callbacks). Pure: a dict, times passed in.

An attempt is keyed by the request's ``litellm_call_id`` and the chute it went to; it holds the
:class:`~chutes_lb.routing.live.LiveState` token, its start time and the API it serves. The
ledger also remembers which chutes each request has tried (:meth:`AttemptLedger.tried`), so the
proxy knows which chute failed even when LiteLLM's own callback closed the attempt first.

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
        self._tried: dict[str, tuple[float, list[str]]] = {}

    def open(self, call_id: str, chute_id: str, attempt: Attempt) -> None:
        """Record an attempt (the core closes a request's earlier attempts before a new one)."""
        self._open.setdefault(call_id, {})[chute_id] = attempt
        self._tried.setdefault(call_id, (attempt.started, []))[1].append(chute_id)

    def tried(self, call_id: str) -> list[str]:
        """The chutes this request was sent to, in order (until :meth:`forget`)."""
        entry = self._tried.get(call_id)
        return list(entry[1]) if entry else []

    def forget(self, call_id: str) -> None:
        self._tried.pop(call_id, None)

    def forget_older_than(self, cutoff: float) -> None:
        for call_id in [c for c, (t0, _) in self._tried.items() if t0 < cutoff and c not in self._open]:
            del self._tried[call_id]

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
