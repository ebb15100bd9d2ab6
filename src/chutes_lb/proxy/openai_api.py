"""``POST /v1/chat/completions`` and ``POST /v1/completions``: our own routes in front of LiteLLM's,
so chat and text take the same way to the router as the translated APIs (:mod:`.gateway`).

The body was already checked by the front middleware (:mod:`.validation`). Here the model name is
resolved to a model group (a group or an alias of one); a name that is no group is a 404
``model_not_found``, and a chute's UUID or name is refused with a 400 that says how to pin a chute
(a model group with only that chute: then it is routed, counted and failed over like any group).
Only the OpenAI parameters listed below reach the upstream (plus ``extra_body``), so a client
cannot set LiteLLM's internal arguments through the body.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable, Mapping

import orjson

from chutes_lb.proxy.errors import openai_error_body
from chutes_lb.proxy.gateway import CallResult, Gateway, UpstreamFailure
from chutes_lb.proxy.streaming import pump

__all__ = ["CHAT_PARAMS", "TEXT_PARAMS", "OpenAIRoutes", "model_error", "serialize_chunk"]

log = logging.getLogger("chutes_lb.proxy")

_COMMON = ("temperature", "top_p", "n", "stop", "max_tokens", "presence_penalty", "frequency_penalty", "logit_bias",
           "logprobs", "seed", "user", "stream_options", "extra_body", "top_k", "min_p", "repetition_penalty")
CHAT_PARAMS = frozenset(_COMMON + ("messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                                   "parallel_tool_calls", "response_format", "functions", "function_call",
                                   "reasoning_effort", "modalities", "prediction"))
TEXT_PARAMS = frozenset(_COMMON + ("prompt", "echo", "suffix", "best_of"))


def upstream_params(body: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k in allowed and v is not None}


def model_error(gateway: Gateway, model: str) -> tuple[int, str, str]:
    """(status, code, message) for a model name that is no model group."""
    groups = ", ".join(sorted(gateway.fleet.groups))
    for ref in gateway.fleet.chutes:
        if model in (ref.chute_id, ref.name, f"openai/{ref.name}", f"chutes/{ref.name}", ref.deployment_id):
            return 400, "model_is_a_chute", (
                f"'{model}' names a chute, not a model group. Send one of the model groups ({groups}); to pin this "
                f"chute, add a model group that lists only it to the proxy's config (it is then routed, counted and "
                f"failed over like any group)")
    return 404, "model_not_found", f"The model '{model}' does not exist on this proxy; model groups: {groups}"


try:  # LiteLLM's own chunk serializer (its fast path for plain text chunks), if this release has it
    from litellm.proxy.proxy_server import _serialize_streaming_chunk as _litellm_serialize
except ImportError:  # pragma: no cover - pinned release has it
    _litellm_serialize = None


def serialize_chunk(chunk: Any) -> bytes:
    if _litellm_serialize is not None:
        out = _litellm_serialize(chunk)
        return out if isinstance(out, bytes) else out.encode()
    return chunk.model_dump_json(exclude_none=True, exclude_unset=True).encode()


def response_headers(result: CallResult) -> list[tuple[bytes, bytes]]:
    return [(b"x-litellm-model-id", result.chute_id.encode()), (b"x-litellm-call-id", result.call_id.encode()),
            (b"x-chutes-lb-attempts", str(result.attempts).encode())]


def error_headers(exc: UpstreamFailure) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(int(exc.retry_after)).encode())] if exc.retry_after else []


def openai_upstream_error(exc: UpstreamFailure) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 400: "invalid_request_error"}.get(exc.status, "upstream_error" if exc.status >= 500 else "invalid_request_error")
    code = {429: "rate_limited", 502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}.get(exc.status, str(exc.status))
    return openai_error_body(exc.message, kind, code)


class OpenAIRoutes:
    """The two routes as plain ASGI handlers over the gateway."""

    def __init__(self, gateway: Gateway, send_json: Callable[..., Any], metrics: Any) -> None:
        self.gateway = gateway
        self.send_json = send_json
        self.metrics = metrics

    async def handle(self, kind: str, body: dict[str, Any], send: Callable[..., Any], receive: Callable[..., Any],
                     headers: Mapping[str, str]) -> None:
        api = "chat" if kind == "chat" else "text"
        started = time.monotonic()
        model = body["model"]
        group = self.gateway.group_of(model)
        if group is None:
            status, code, message = model_error(self.gateway, model)
            self.metrics.request(api, "client_error", time.monotonic() - started)
            await self.send_json(send, status, openai_error_body(message, "invalid_request_error" if status == 400 else "not_found_error", code, "model"))
            return
        params = upstream_params(body, CHAT_PARAMS if kind == "chat" else TEXT_PARAMS)
        stream = bool(body.get("stream"))
        try:
            result = await self.gateway.call(api, kind, group, params, stream=stream,
                                             affinity_key=self.gateway.session(body, headers))
        except UpstreamFailure as exc:
            self.metrics.request(api, "client_error" if exc.status < 500 and exc.status != 429 else exc.kind, time.monotonic() - started)
            await self.send_json(send, exc.status, openai_upstream_error(exc), error_headers(exc))
            return
        if result.stream is None:
            payload = orjson.dumps(result.response.model_dump(), option=orjson.OPT_SERIALIZE_NUMPY)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *response_headers(result)]})
            await send({"type": "http.response.body", "body": payload})
            self.metrics.request(api, "ok", time.monotonic() - started)
            return
        outcome = "cancelled"
        try:
            outcome = await pump(sse_events(result.stream, self.gateway), send, receive, response_headers(result))
        finally:
            self.metrics.request(api, outcome, time.monotonic() - started)


async def sse_events(stream: Any, gateway: Gateway) -> AsyncIterator[bytes]:
    """OpenAI SSE: one ``data:`` event per chunk, then ``[DONE]``; an error mid-way is an
    ``error`` event (the status line went out with the first chunk) and the stream ends."""
    try:
        async for chunk in stream:
            yield b"data: " + serialize_chunk(chunk) + b"\n\n"
    except (GeneratorExit, asyncio.CancelledError):
        await stream.aclose()  # the client went away: close the upstream stream and the attempt
        raise
    except Exception as exc:  # the stream broke after tokens went out: say so, never hang
        from chutes_lb.routing.retry import failure_of

        failure = failure_of(type(exc).__name__, getattr(exc, "status_code", None), str(exc))
        message = gateway.redactor.text(f"the upstream stream failed mid-way ({failure.what}); the answer is incomplete")
        log.warning("stream failed mid-way: %s (call %s)", failure.what, getattr(stream, "call_id", "?")[:8])
        yield b"data: " + orjson.dumps(openai_error_body(message, "upstream_error", "stream_interrupted")) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"
