"""One client request's upstream attempts, owned by one object: :class:`UpstreamCall` opens each
attempt (the core chooses the chute), closes it exactly once with its outcome, and remembers which
chutes the request has tried, so a retry never goes back to one of them.

The proxy's gateway (:mod:`chutes_lb.proxy.gateway`) holds one per client request; the LiteLLM
hook (:mod:`.hook`) holds one per request that reaches LiteLLM's own routes. Nothing else opens or
closes an attempt: the core's sweep only forgets attempts whose owner vanished (bounded memory).

Also here: reading what a successful response says of its usage (:func:`usage_of`), for the pace
and cache signals the closed attempt feeds.

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from chutes_lb.routing.capability import Needs
    from chutes_lb.routing.core import RoutingCore

__all__ = ["UpstreamCall", "Usage", "usage_of", "completion_tokens", "prompt_usage"]


class Usage(NamedTuple):
    tokens: float | None  # output tokens, None when unknown
    prompt: tuple[float, float] | None  # (prompt tokens, cached prompt tokens), None when unknown


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def completion_tokens(response_obj: Any) -> float | None:
    """Output tokens of a successful response (``usage.completion_tokens``), None when unknown.
    Reads an object with a ``usage`` attribute (LiteLLM's ModelResponse) or a plain dict alike."""
    usage = _field(response_obj, "usage") if response_obj is not None else None
    value = _field(usage, "completion_tokens") if usage is not None else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < 1e9 else None


def prompt_usage(response_obj: Any) -> tuple[float, float] | None:
    """(prompt tokens, cached prompt tokens) of a successful response, None when unknown; cached
    from ``usage.prompt_tokens_details.cached_tokens`` (0 when the upstream does not say)."""
    usage = _field(response_obj, "usage") if response_obj is not None else None
    prompt = _field(usage, "prompt_tokens") if usage is not None else None
    if isinstance(prompt, bool) or not isinstance(prompt, (int, float)) or not 0 <= prompt < 1e9:
        return None
    details = _field(usage, "prompt_tokens_details")
    cached = _field(details, "cached_tokens") if details is not None else None
    if isinstance(cached, bool) or not isinstance(cached, (int, float)) or not 0 <= cached <= prompt:
        cached = 0
    return float(prompt), float(cached)


def usage_of(response_obj: Any) -> Usage:
    return Usage(completion_tokens(response_obj), prompt_usage(response_obj))


class UpstreamCall:
    """The attempts of one client request (see the module docstring). ``open`` asks the core for
    a chute among ``deployment_ids`` (never one this request already tried, while another is
    left), opens its bookkeeping and returns the deployment id; ``close`` ends the open attempt
    (a no-op when none is open, so a late second report changes nothing)."""

    __slots__ = ("core", "call_id", "api", "affinity_key", "needs", "tried", "_open", "opened_at")

    def __init__(self, core: "RoutingCore", call_id: str, api: str = "chat", affinity_key: int | None = None,
                 needs: "Needs | None" = None) -> None:
        self.core = core
        self.call_id = call_id
        self.api = api
        self.affinity_key = affinity_key
        self.needs = needs  # what the request needs of a chute (context, features); a context retry raises min_window
        self.tried: list[str] = []  # chute ids, in order
        self._open: str | None = None  # the chute of the open attempt
        self.opened_at = 0.0

    @property
    def open_chute(self) -> str | None:
        return self._open

    def open(self, deployment_ids: Sequence[str], group: str = "", *, also_failed: Sequence[str] = (),
             unreported: str = "error") -> str:
        """Choose and open the next attempt. ``also_failed``: deployments that failed this request
        outside this object's knowledge (LiteLLM's own retries, for the hook); an attempt still
        open is closed first with ``unreported`` (its failure was never reported)."""
        if self._open is not None:
            self.close(unreported)
        failed = [*self.tried, *(self.core.chute_id(d) for d in also_failed)]
        last = failed[-1] if failed else None
        dep = self.core.pick(deployment_ids, failed=failed, last_failed=last, call_id=self.call_id, api=self.api,
                             group=group, affinity_key=self.affinity_key, needs=self.needs)
        chute = self.core.chute_id(dep)
        self.tried.append(chute)
        self._open = chute
        self.opened_at = self.core.clock()
        return dep

    def close(self, outcome: str, *, ttft: float | None = None, usage: Usage | None = None) -> str | None:
        """End the open attempt with ``outcome`` (success, rate_limited, error, timeout,
        cancelled); returns its chute, None when nothing was open."""
        chute, self._open = self._open, None
        if chute is None:
            return None
        self.core.close_attempt(self.call_id, chute, outcome, ttft=ttft,
                                tokens=usage.tokens if usage else None, prompt=usage.prompt if usage else None)
        return chute
