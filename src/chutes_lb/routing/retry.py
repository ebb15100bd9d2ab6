"""When a failed upstream attempt is tried again on another chute. Pure: time passed in.

- :func:`failure_of` turns what an attempt raised (exception class name, HTTP status, message)
  into a :class:`Failure`: the routing outcome (``rate_limited``, ``error``, ``timeout``), what
  went wrong in words a client can act on (``connect error``, ``timeout``, ``HTTP 503``), and
  whether another chute may succeed (``retryable``).
- :class:`RetryBudget` bounds retries to a share of the request rate over a sliding window, as
  Finagle's ``RetryBudget`` and Envoy's retry budget do: an outage of every chute then costs
  Chutes at most ``1 + percent`` attempts per request instead of ``1 + num_retries``, so a
  failure is not amplified into a retry storm (Chutes bans keys that hammer it). The floor of
  ``min_per_second`` keeps retries possible on a proxy with little traffic. A retry that served
  the request is refunded (:meth:`RetryBudget.refund`): what the budget bounds is retries that
  failed again, the amplification of an outage, so a burst of 429s from chutes that filled up
  while others had room (a stale snapshot after a load step) does not spend it and turn into
  client 429s.

Retried: 429 (the chute was full: it never served the request), 5xx answers, connection errors
and timeouts. Not retried: other 4xx answers (the request itself is wrong, or the proxy's Chutes
key is refused, which another chute would refuse too).

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

__all__ = ["Failure", "failure_of", "classify", "RetryBudget", "final_status"]


class Failure(NamedTuple):
    outcome: str  # rate_limited | maintenance | rejected | error | timeout (routing outcomes of chutes_lb.routing.live)
    what: str  # "HTTP 503", "connect error", "timeout", "stream cut", "no chute available"
    retryable: bool
    status: int | None = None  # the upstream's HTTP status, when it answered one
    upstream: bool = True  # False: no upstream attempt was made (every chute cooling down)

    @property
    def context(self) -> bool:
        """A context-length 400: too long for that chute's window (another may be larger)."""
        return self.outcome == "rejected" and self.status == 400 and "context window" in self.what


_CONNECT_HINTS = ("connection error", "connect", "name or service not known", "temporary failure in name resolution",
                  "no route to host", "connection refused", "connection reset")


# 429s that are about the account, not the chute (Chutes' per-user limits): another chute would
# refuse them too, and they say nothing of the chute's capacity
_ACCOUNT_429 = ("stop spamming", "per day", "daily", "requests per", "rate limit exceeded for user", "too many requests for user",
                "free model", "subscription", "quota")
_CONTEXT_400 = ("maximum context length", "context length", "max_model_len", "context window", "reduce the length")


def failure_of(kind: str, status: object, message: str = "") -> Failure:
    """Classify an attempt's exception: ``kind`` = its class name, ``status`` = its
    ``status_code`` attribute (or None), ``message`` = its text (only searched, never returned).

    Chutes' error classes (``shared/reference/chutes-api.md``, "Error classes"): a capacity 429
    (``rate_limited``) and a 503 are tried on another chute; a maintenance 429 (``maintenance``)
    too, and that chute is held longer; a per-user 429 and a 402 (quota) are the account's
    (``rejected``: returned at once, nothing held or cooled); a context-length 400 is the
    request's on that chute (``rejected``: never counted against the chute's health). Other 4xx
    answers are ``rejected`` too: the request itself is wrong (a 404 excepted: that chute does not
    serve the model, another may)."""
    code = status if isinstance(status, int) and not isinstance(status, bool) else None
    text = message.lower()
    if kind in ("RouterRateLimitError",) or "no deployments available" in text:
        return Failure("error", "no chute available (every chute of the group is cooling down after errors)", False,
                       None, upstream=False)
    if code == 429 or (code is None and "RateLimit" in kind):
        if "maintenance" in text:
            return Failure("maintenance", "HTTP 429 (chute under maintenance)", True, 429)
        if any(h in text for h in _ACCOUNT_429):
            return Failure("rejected", "HTTP 429 (an account limit, not the chute's capacity)", False, 429)
        return Failure("rate_limited", "HTTP 429", True, 429)
    if code == 402:
        return Failure("rejected", "HTTP 402 (quota or balance exhausted)", False, 402)
    if "Timeout" in kind or code == 408 or "timed out" in text or "timeout" in text:
        return Failure("timeout", "timeout", True, code if code and code != 500 else None)
    if "payload is not completed" in text or "incomplete" in text and "chunk" in text:
        return Failure("error", "stream cut", True, None)
    if kind == "APIConnectionError" or (code in (None, 500) and any(h in text for h in _CONNECT_HINTS)):
        return Failure("error", "connect error", True, None)
    if code is not None and code >= 500:
        return Failure("error", f"HTTP {code}", True, code)
    if code == 404:  # "model not found" on that chute: another chute may serve the group
        return Failure("error", "HTTP 404", True, 404)
    if code == 400 and any(h in text for h in _CONTEXT_400):
        return Failure("rejected", "HTTP 400 (too long for this chute's context window)", False, 400)
    if code is not None and 400 <= code < 500:
        return Failure("rejected", f"HTTP {code}", False, code)
    return Failure("error", kind or "error", True, None)


def classify(exc: BaseException | None) -> Failure:
    """:func:`failure_of` for an exception object (None: an unknown error). The one classifier:
    the gateway, the LiteLLM hook and the stream guards all name a failure through it."""
    if exc is None:
        return failure_of("", None, "")
    return failure_of(type(exc).__name__, getattr(exc, "status_code", None), str(exc))


def final_status(failures: list[Failure]) -> int:
    """The status a client gets when a request failed for good (never a bare 500):
    429 when every attempt was rate-limited, 504 when the last one timed out, 503 when no chute
    was available or the upstream said 503, 502 for connection errors and other upstream failures;
    a client error (4xx other than 401/403/404/408/429) keeps its status."""
    if not failures:
        return 502
    last = failures[-1]
    if not last.upstream:
        return 429 if failures[:-1] and all(f.outcome in ("rate_limited", "maintenance") for f in failures[:-1]) else 503
    if all(f.outcome in ("rate_limited", "maintenance") for f in failures):
        return 429
    if last.outcome == "timeout":
        return 504
    if last.status == 503:
        return 503
    if last.outcome == "rejected" and last.status in (402, 429):  # the account's limit: Chutes' own status
        return last.status
    if last.status is not None and 400 <= last.status < 500 and last.status not in (401, 403, 404, 408, 429):
        return last.status
    return 502


class RetryBudget:
    """Retries allowed within the last ``window`` seconds: ``min_per_second x window`` plus
    ``percent`` of the requests that started in the window, less the retries made in it that did
    not serve their request. Call :meth:`request` for each client request, :meth:`try_retry`
    before each retry (it records the retry when allowed) and :meth:`refund` with the retry's
    time when that retry served the request."""

    def __init__(self, percent: float = 0.2, min_per_second: float = 2.0, window: float = 10.0) -> None:
        if not (0.0 <= percent and math.isfinite(percent)):
            raise ValueError("percent must be >= 0")
        self.percent = percent
        self.min_per_second = min_per_second
        self.window = window
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        cutoff = now - self.window
        for q in (self._requests, self._retries):
            while q and q[0] < cutoff:
                q.popleft()

    def request(self, now: float) -> None:
        self._requests.append(now)
        if len(self._requests) > 100_000:  # bounded memory at any request rate
            self._trim(now)

    def allowed(self, now: float) -> float:
        """Retries still allowed right now (may be fractional)."""
        self._trim(now)
        return self.min_per_second * self.window + self.percent * len(self._requests) - len(self._retries)

    def try_retry(self, now: float) -> bool:
        if self.allowed(now) >= 1.0:
            self._retries.append(now)
            return True
        return False

    def refund(self, at: float) -> None:
        """The retry recorded at ``at`` served its request: it no longer counts (a no-op once
        it has left the window)."""
        try:
            self._retries.remove(at)
        except ValueError:
            pass
