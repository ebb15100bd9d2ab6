"""The LiteLLM adapter: a thin ``CustomLogger`` that turns LiteLLM's callbacks into calls on the
:class:`~chutes_lb.routing.core.RoutingCore`, and :class:`BackgroundTasks`, the worker's three
loops (snapshot follower, in-flight exchange, routing summary).

The proxy's gateway chooses the chute itself and asks LiteLLM for exactly that deployment (by its
id): LiteLLM then neither filters by cooldown nor calls this hook's pick. The hook decides only for
requests that reach LiteLLM's own routes, through the same core and the same attempt owner:

- ``async_filter_deployments`` (LiteLLM calls it on every pick with the deployments not in
  cooldown) opens the request's next attempt on :class:`UpstreamCall` and returns exactly that
  deployment. It does no network I/O.
- ``async_log_success_event`` / ``async_log_failure_event`` tell that request's
  :class:`UpstreamCall` how its attempt ended; ``async_post_call_failure_hook`` ends whatever a
  failed request still has open. Callbacks for calls the hook did not open change nothing.
What the hook reads of LiteLLM's kwargs is in :mod:`chutes_lb.routing.requestinfo`.

Must not import: Redis (stores are passed in), HTTP clients, or anything in ``chutes_lb.proxy``.
This is the only routing module that imports LiteLLM.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Mapping

from litellm.integrations.custom_logger import CustomLogger

from chutes_lb.routing.attempts import UpstreamCall, usage_of
from chutes_lb.routing.core import RoutingCore
from chutes_lb.routing.follower import SnapshotFollower
from chutes_lb.routing.requestinfo import (api_of, attempt_key, failed_ids_in_request, failure_kinds_in_request,
                                           last_failed_in_request, ttft_seconds)
from chutes_lb.routing.retry import classify
from chutes_lb.routing.sharing import InflightSharing

__all__ = ["ChutesRoutingHook", "BackgroundTasks"]

log = logging.getLogger("chutes_lb.routing")


class BackgroundTasks:
    """The worker's loops, started once in the running event loop (on the first request)."""

    def __init__(self, core: RoutingCore, follower: SnapshotFollower, sharing: InflightSharing) -> None:
        self.core = core
        self.follower = follower
        self.sharing = sharing
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.tasks:
            return
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self.follower.run(), name="chutes-lb-snapshot"),
            loop.create_task(self.sharing.run(), name="chutes-lb-inflight"),
            loop.create_task(self._summaries(), name="chutes-lb-summary"),
        ]

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.core.config.summary_seconds)
            line = self.core.summary_line()
            if line is not None:
                log.info("%s", line)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []


class ChutesRoutingHook(CustomLogger):
    """Routing for requests that reach LiteLLM's own routes (the proxy's gateway asks LiteLLM for
    one deployment and does not come through here): each such request gets an
    :class:`UpstreamCall`, which opens and closes its attempts; LiteLLM's callbacks only tell it
    how each attempt ended."""

    MAX_CALLS = 10_000  # open calls remembered; the oldest is dropped (its attempt swept later)

    def __init__(self, core: RoutingCore, start_background: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.core = core
        self._start_background: Callable[[], None] | None = start_background
        self._calls: dict[str, UpstreamCall] = {}

    async def async_filter_deployments(self, model: str, healthy_deployments: list, messages: Any = None,
                                       request_kwargs: dict | None = None, parent_otel_span: Any = None) -> list[dict]:
        if self._start_background is not None:
            start, self._start_background = self._start_background, None
            start()
        if not healthy_deployments or self.core.strategy == "passthrough":
            return healthy_deployments  # passthrough: LiteLLM's own routing_strategy decides
        by_id: dict[str, dict] = {}
        for dep in healthy_deployments:
            by_id.setdefault(str((dep.get("model_info") or {}).get("id", "")), dep)
        call_id = _call_id(request_kwargs)
        if call_id is None:  # a pick outside a request (token counting): answered, nothing opened
            return [by_id[self.core.pick(tuple(by_id), group=model)]]
        call = self._calls.get(call_id)
        if call is None:
            if len(self._calls) >= self.MAX_CALLS:
                self._calls.pop(next(iter(self._calls)))
            call = self._calls[call_id] = UpstreamCall(self.core, call_id, api_of(request_kwargs))
        # LiteLLM retries only after an attempt failed, and does not report every failed attempt
        # to the callbacks: an attempt still open has failed, with the kind its breadcrumb names
        last = last_failed_in_request(request_kwargs)
        kinds = failure_kinds_in_request(request_kwargs)
        unreported = kinds.get(last, "error") if last else "error"
        choice = call.open(tuple(by_id), model, also_failed=tuple(failed_ids_in_request(request_kwargs)), unreported=unreported)
        return [by_id[choice]]

    def _close(self, kwargs: Mapping[str, Any], outcome: str, start: Any, response_obj: Any = None) -> None:
        key = attempt_key(kwargs)
        call = self._calls.get(key[0]) if key is not None else None
        if call is None:  # not a call this hook opened (the gateway's own, or outside a request)
            return
        call.close(outcome, ttft=ttft_seconds(kwargs, start), usage=usage_of(response_obj) if response_obj is not None else None)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            self._close(kwargs, "success", start_time, response_obj)
            key = attempt_key(kwargs)
            if key is not None:
                self._calls.pop(key[0], None)
        except Exception:  # never let bookkeeping break a response
            log.exception("routing bookkeeping failed on success")

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            self._close(kwargs, classify(kwargs.get("exception")).outcome, start_time)
        except Exception:
            log.exception("routing bookkeeping failed on failure")

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        try:
            call_id = _call_id(request_data)
            call = self._calls.pop(call_id, None) if call_id else None
            if call is not None:  # the request failed for good: whatever it still has open is over
                call.close(classify(original_exception).outcome)
        except Exception:
            log.exception("routing bookkeeping failed on request failure")
        return None


def _call_id(request_kwargs: Mapping[str, Any] | None) -> str | None:
    if not request_kwargs:
        return None
    value = request_kwargs.get("litellm_call_id")
    return str(value) if value else None
