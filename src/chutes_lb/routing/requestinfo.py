"""Reading LiteLLM's request/callback kwargs for the routing hook (:mod:`.hook`), on requests that
reach LiteLLM's own routes: which chutes failed this request in LiteLLM's own retries, which
attempt a callback reports on, when the first token came, which call type it is.

The proxy's gateway does not go through here: it chooses the chute itself and asks LiteLLM for
that one deployment, so no routing data rides in LiteLLM's kwargs or metadata. LiteLLM's kwargs
are untyped dicts whose layout moves between releases; everything the hook reads of them is here,
read defensively (a missing field means "unknown", never an exception). Failures are named by
the one classifier, :func:`chutes_lb.routing.retry.failure_of`.

Must not import: Redis, HTTP clients, LiteLLM, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from chutes_lb.routing.retry import failure_of

_METADATA_KEYS = ("metadata", "litellm_metadata")


def _metadata_dicts(kwargs: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for key in _METADATA_KEYS:
        value = kwargs.get(key)
        if isinstance(value, Mapping):
            yield value
    params = kwargs.get("litellm_params")
    if isinstance(params, Mapping):
        for key in _METADATA_KEYS:
            value = params.get(key)
            if isinstance(value, Mapping):
                yield value


def _ids(value: object) -> Iterable[str]:
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            if isinstance(item, str) and item:
                yield item


def failed_ids_in_request(request_kwargs: Mapping[str, Any] | None) -> frozenset[str]:
    """Deployment ids that already failed within this request (retries, weighted failover)."""
    if not request_kwargs:
        return frozenset()
    failed: set[str] = set(_ids(request_kwargs.get("_excluded_deployment_ids")))
    failed.update(_ids(request_kwargs.get("_retry_skipped_deployment_ids")))
    for meta in _metadata_dicts(request_kwargs):
        failed.update(_ids(meta.get("_failover_excluded_ids")))
        previous = meta.get("previous_models")
        if isinstance(previous, (list, tuple)):
            for attempt in previous:
                if isinstance(attempt, Mapping):
                    dep = attempt.get("deployment_id")
                    if isinstance(dep, str) and dep:
                        failed.add(dep)
    return frozenset(failed)


def failure_kinds_in_request(request_kwargs: Mapping[str, Any] | None) -> dict[str, str]:
    """deployment id -> rate_limited | timeout | error, from LiteLLM's retry breadcrumbs (the
    newest attempt per deployment wins); deployments without a breadcrumb are absent."""
    kinds: dict[str, str] = {}
    if not request_kwargs:
        return kinds
    for meta in _metadata_dicts(request_kwargs):
        previous = meta.get("previous_models")
        if isinstance(previous, (list, tuple)):
            for attempt in previous:
                if isinstance(attempt, Mapping) and isinstance(attempt.get("deployment_id"), str):
                    kind = attempt.get("exception_type")
                    kinds[attempt["deployment_id"]] = failure_of(kind if isinstance(kind, str) else "", None).outcome
    return kinds


def last_failed_in_request(request_kwargs: Mapping[str, Any] | None) -> str | None:
    """The deployment whose failure caused this pick (the newest retry breadcrumb), if any."""
    if not request_kwargs:
        return None
    for meta in _metadata_dicts(request_kwargs):
        previous = meta.get("previous_models")
        if isinstance(previous, (list, tuple)):
            for attempt in reversed(previous):
                dep = attempt.get("deployment_id") if isinstance(attempt, Mapping) else None
                if isinstance(dep, str) and dep:
                    return dep
    excluded = list(_ids(request_kwargs.get("_excluded_deployment_ids")))
    return excluded[-1] if excluded else None


def deployment_id(kwargs: Mapping[str, Any]) -> str | None:
    params = kwargs.get("litellm_params")
    if isinstance(params, Mapping):
        info = params.get("model_info")
        if isinstance(info, Mapping) and info.get("id"):
            return str(info["id"])
    for meta in _metadata_dicts(kwargs):
        info = meta.get("model_info")
        if isinstance(info, Mapping) and info.get("id"):
            return str(info["id"])
    slo = kwargs.get("standard_logging_object")
    if isinstance(slo, Mapping) and slo.get("model_id"):
        return str(slo["model_id"])
    return None


def attempt_key(kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    """(litellm_call_id, deployment id) of the attempt a callback reports on."""
    call_id = kwargs.get("litellm_call_id")
    dep = deployment_id(kwargs)
    if not call_id or not dep:
        return None
    return str(call_id), dep


def ttft_seconds(kwargs: Mapping[str, Any], start_time: Any) -> float | None:
    """Time to first token of a streamed response (None when not streamed or unknown)."""
    if not kwargs.get("stream"):
        return None
    first = kwargs.get("completion_start_time")
    if isinstance(first, datetime) and isinstance(start_time, datetime):
        value = (first - start_time).total_seconds()
        return value if value >= 0 else None
    return None


def api_of(kwargs: Mapping[str, Any] | None, default: str = "chat") -> str:
    """The client API of a call that reached LiteLLM's own routes: ``text`` for a text
    completion, else ``default``."""
    if not kwargs:
        return default
    return "text" if kwargs.get("call_type") in ("atext_completion", "text_completion") else default


