"""Reading LiteLLM's request/callback kwargs: which chutes failed this request, which attempt a
callback closes, what kind of failure it was, when the first token came.

LiteLLM's kwargs are untyped dicts whose layout moves between releases; everything that knows
it is here, read defensively (a missing field means "unknown", never an exception), and pinned
by the integration tests against the real proxy.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

_METADATA_KEYS = ("metadata", "litellm_metadata")
API_KEY = "chutes_lb_api"  # metadata: which client API the call serves (chat, text, messages, responses)
EXCLUDED_KEY = "chutes_lb_excluded"  # metadata: deployments that already failed this request, in order
AFFINITY_KEY = "chutes_lb_affinity"  # metadata: the request's session key (a 64-bit int, see routing/affinity.py)


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
        failed.update(_ids(meta.get(EXCLUDED_KEY)))  # set by the proxy's own retry loop
        previous = meta.get("previous_models")
        if isinstance(previous, (list, tuple)):
            for attempt in previous:
                if isinstance(attempt, Mapping):
                    dep = attempt.get("deployment_id")
                    if isinstance(dep, str) and dep:
                        failed.add(dep)
    return frozenset(failed)


def _kind_of(exception_type: object) -> str:
    name = exception_type if isinstance(exception_type, str) else ""
    if "RateLimit" in name:
        return "rate_limited"
    if "Timeout" in name:
        return "timeout"
    return "error"


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
                    kinds[attempt["deployment_id"]] = _kind_of(attempt.get("exception_type"))
    return kinds


def last_failed_in_request(request_kwargs: Mapping[str, Any] | None) -> str | None:
    """The deployment whose failure caused this pick (the newest retry breadcrumb), if any."""
    if not request_kwargs:
        return None
    for meta in _metadata_dicts(request_kwargs):
        ours = list(_ids(meta.get(EXCLUDED_KEY)))
        if ours:
            return ours[-1]
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


def classify_failure(kwargs: Mapping[str, Any]) -> str:
    """rate_limited | timeout | error, from the exception LiteLLM attached."""
    exc = kwargs.get("exception")
    status = getattr(exc, "status_code", None)
    if status == 429:
        return "rate_limited"
    kind = _kind_of(type(exc).__name__ if exc is not None else "")
    return "timeout" if kind == "error" and status == 408 else kind


def ttft_seconds(kwargs: Mapping[str, Any], start_time: Any) -> float | None:
    """Time to first token of a streamed response (None when not streamed or unknown)."""
    if not kwargs.get("stream"):
        return None
    first = kwargs.get("completion_start_time")
    if isinstance(first, datetime) and isinstance(start_time, datetime):
        value = (first - start_time).total_seconds()
        return value if value >= 0 else None
    return None


def completion_tokens(response_obj: Any) -> float | None:
    """Output tokens of a successful response (``usage.completion_tokens``), None when unknown.

    LiteLLM hands the success callback its ModelResponse (for streams, the assembled one), whose
    ``usage`` is an object; a plain dict (as some paths log) is read the same way."""
    usage = response_obj.get("usage") if isinstance(response_obj, Mapping) else getattr(response_obj, "usage", None)
    value = usage.get("completion_tokens") if isinstance(usage, Mapping) else getattr(usage, "completion_tokens", None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < 1e9 else None


def api_of(kwargs: Mapping[str, Any] | None, default: str = "chat") -> str:
    """The client API a call serves (the proxy's metadata marker), ``default`` when absent."""
    if not kwargs:
        return default
    for meta in _metadata_dicts(kwargs):
        value = meta.get(API_KEY)
        if isinstance(value, str) and value:
            return value
    return "text" if kwargs.get("call_type") in ("atext_completion", "text_completion") else default


def prompt_usage(response_obj: Any) -> tuple[float, float] | None:
    """(prompt tokens, cached prompt tokens) of a successful response, None when unknown; cached
    from ``usage.prompt_tokens_details.cached_tokens`` (0 when the upstream does not say)."""
    usage = response_obj.get("usage") if isinstance(response_obj, Mapping) else getattr(response_obj, "usage", None)

    def field(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)

    prompt = field(usage, "prompt_tokens") if usage is not None else None
    if isinstance(prompt, bool) or not isinstance(prompt, (int, float)) or not 0 <= prompt < 1e9:
        return None
    details = field(usage, "prompt_tokens_details")
    cached = field(details, "cached_tokens") if details is not None else None
    if isinstance(cached, bool) or not isinstance(cached, (int, float)) or not 0 <= cached <= prompt:
        cached = 0
    return float(prompt), float(cached)


def affinity_key_of(kwargs: Mapping[str, Any] | None) -> int | None:
    """The session key the proxy put in the metadata, None when the request has none."""
    if not kwargs:
        return None
    for meta in _metadata_dicts(kwargs):
        value = meta.get(AFFINITY_KEY)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
