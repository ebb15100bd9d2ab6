"""Admission control, one pure-ASGI middleware per worker: at most ``limit`` completion requests
in the worker at once, and at most ``queue`` more waiting up to ``queue_seconds`` for a place.
Past either, the request gets a fast 503 in its API's own error shape with ``Retry-After``, before
any byte of an answer, so a stream is refused, never stalled. Only the completion routes are
admitted this way (``paths``): health probes, ``/metrics`` and ``/info`` always pass at once.

Sizing (docs/RUNNING-THE-STACK.md): a worker's concurrency is its request rate times the time a
request spends in it, upstream included. The proxy costs about 13 ms of CPU per request
(BENCHMARKS.md, "Overhead"), so one worker serves ~75 requests/s; at LLM request times of
~5-10 s that is 400-750 requests in flight. The default ``limit`` of 512 per worker matches
HAProxy's ``maxconn`` of 1,024 per replica of 2 workers, so the front door queues (and spreads)
the excess first and a worker sheds only what reaches it beyond that.

Counted in ``chutes_lb_admission_rejected_total{reason}`` and ``chutes_lb_admission_queue_length``.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Callable, Collection

from chutes_lb.proxy.asgi import ASGIApp, Receive, Scope, Send, send_json
from chutes_lb.proxy.errors import error_body

__all__ = ["Admission", "AdmissionMetrics"]


class AdmissionMetrics:
    """prometheus-client counters (multiprocess-safe); ``registry`` as in routing/metrics.py."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import Counter, Gauge

        r = {"registry": registry}
        self._rejected = Counter("chutes_lb_admission_rejected", "Completion requests refused with a fast 503 by the worker's admission control, by why (full: the queue was full; deadline: waited PROXY_QUEUE_SECONDS)", ["reason"], **r)
        self._queue = Gauge("chutes_lb_admission_queue_length", "Completion requests waiting for a place in a worker (all workers)", multiprocess_mode="livesum", **r)

    def rejected(self, reason: str) -> None:
        self._rejected.labels(reason).inc()

    def queued(self, delta: int) -> None:
        self._queue.inc(delta)


class Admission:
    def __init__(self, app: ASGIApp, *, limit: int, queue: int, queue_seconds: float, paths: Collection[str],
                 anthropic_paths: Collection[str] = (), metrics: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.limit, self.queue, self.queue_seconds = limit, queue, queue_seconds
        self.paths, self.anthropic_paths = frozenset(paths), frozenset(anthropic_paths)
        self.metrics = metrics
        self.clock = clock
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            reason = await self._wait()
            if reason is not None:
                await self._refuse(scope, send, reason)
                return
        else:
            self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    async def _wait(self) -> str | None:
        """Wait for a place (it is handed over by the request that leaves); None when admitted."""
        if len(self._waiting) >= self.queue:
            return "full"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        if self.metrics is not None:
            self.metrics.queued(1)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.queue_seconds)
            return None
        except asyncio.CancelledError:  # the client left while waiting
            if fut.done() and not fut.cancelled():
                self._release()  # it had been handed a place: pass it on
            else:
                fut.cancel()
            raise
        except asyncio.TimeoutError:
            if fut.done():  # handed a place at the last moment: take it
                return None
            fut.cancel()
            return "deadline"
        finally:
            try:
                self._waiting.remove(fut)
            except ValueError:
                pass
            if self.metrics is not None:
                self.metrics.queued(-1)

    def _release(self) -> None:
        while self._waiting:  # hand the place over, first come first served
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.active -= 1

    async def _refuse(self, scope: Scope, send: Send, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected(reason)
        shape = "anthropic" if scope.get("path") in self.anthropic_paths else "openai"
        why = ("its queue is full" if reason == "full"
               else f"no place freed within {self.queue_seconds:g} s")
        body = error_body(shape, 503, f"this proxy worker is at capacity ({why}); retry shortly",
                          code="overloaded" if shape == "openai" else None)
        await send_json(send, 503, body, [(b"retry-after", str(max(1, round(self.queue_seconds))).encode())])
