"""The LiteLLM adapter: a thin ``CustomLogger`` that turns LiteLLM's callbacks into calls on the
:class:`~chutes_lb.routing.core.RoutingCore`, and :class:`BackgroundTasks`, the worker's three
loops (snapshot follower, in-flight exchange, routing summary).

- ``async_filter_deployments`` (LiteLLM calls it on every pick with the deployments not in
  cooldown) asks the core for exactly one deployment. It does no network I/O.
- ``async_log_success_event`` / ``async_log_failure_event`` close the attempt they report on;
  ``async_post_call_failure_hook`` closes whatever a failed request still has open.
Everything that knows LiteLLM's kwargs layout is in :mod:`chutes_lb.routing.requestinfo`.

Must not import: Redis (stores are passed in), HTTP clients, or anything in ``chutes_lb.proxy``.
This is the only routing module that imports LiteLLM.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Mapping

from litellm.integrations.custom_logger import CustomLogger

from chutes_lb.routing.core import RoutingCore
from chutes_lb.routing.follower import SnapshotFollower
from chutes_lb.routing.requestinfo import (affinity_key_of, api_of, attempt_key, classify_failure, completion_tokens,
                                           failed_ids_in_request, failure_kinds_in_request, last_failed_in_request,
                                           prompt_usage, ttft_seconds)
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
    def __init__(self, core: RoutingCore, start_background: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.core = core
        self._start_background: Callable[[], None] | None = start_background

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
        choice = self.core.pick(tuple(by_id), failed=failed_ids_in_request(request_kwargs),
                                last_failed=last_failed_in_request(request_kwargs), call_id=_call_id(request_kwargs),
                                failure_kinds=failure_kinds_in_request(request_kwargs), api=api_of(request_kwargs),
                                group=model, affinity_key=affinity_key_of(request_kwargs))
        return [by_id[choice]]

    def _close(self, kwargs: Mapping[str, Any], outcome: str, start: Any, tokens: float | None = None,
               prompt: tuple[float, float] | None = None) -> None:
        key = attempt_key(kwargs)
        if key is not None:
            self.core.attempt_ended(key[0], key[1], outcome, ttft=ttft_seconds(kwargs, start), tokens=tokens, prompt=prompt)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            self._close(kwargs, "success", start_time, completion_tokens(response_obj), prompt_usage(response_obj))
        except Exception:  # never let bookkeeping break a response
            log.exception("routing bookkeeping failed on success")

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            self._close(kwargs, classify_failure(kwargs), start_time)
        except Exception:
            log.exception("routing bookkeeping failed on failure")

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        try:
            call_id = _call_id(request_data)
            if call_id:
                self.core.request_failed(call_id, classify_failure({"exception": original_exception}))
        except Exception:
            log.exception("routing bookkeeping failed on request failure")
        return None


def _call_id(request_kwargs: Mapping[str, Any] | None) -> str | None:
    if not request_kwargs:
        return None
    value = request_kwargs.get("litellm_call_id")
    return str(value) if value else None
