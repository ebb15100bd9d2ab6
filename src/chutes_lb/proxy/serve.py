"""The one serving path of our API routes (chat, text, Messages, count_tokens, Responses).

Each API is an :class:`Adapter`: how its body is checked and translated to the upstream request,
how the answer and the stream events are written back, its error shape and its metric label.
:class:`Server` serves a checked body through an adapter, the same way for every API: the
client's model name is resolved to a model group (an unknown one is a 404 ``model_not_found``, a
chute's name a 400), the request goes through :meth:`Gateway.call` with its session key, an
:class:`UpstreamFailure` becomes the API's error body (with ``Retry-After`` when known), a whole
answer is written as JSON and a stream pumped as server-sent events (:mod:`.streaming`).

``chutes_lb_requests_total`` is counted exactly once per request, by one rule on how it ended:
an answer below 400 is ``ok``, a 429 ``rate_limited``, any other 4xx ``client_error``, a 5xx
``upstream_error``; a stream counts what :func:`~.streaming.pump` says (``ok``/``cancelled``), and a
request that ends without an answer (the task cancelled, a stream cut) ``cancelled``. No LiteLLM
here: the adapters import it where they translate.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Protocol

from chutes_lb.fleet import Fleet
from chutes_lb.proxy.asgi import Message, Receive, Send, send_json
from chutes_lb.proxy.errors import error_body, upstream_error_body
from chutes_lb.proxy.gateway import CallResult, UpstreamFailure
from chutes_lb.proxy.streaming import pump
from chutes_lb.proxy.validation import RequestRejected
from chutes_lb.redact import Redactor
from chutes_lb.routing.retry import classify

__all__ = ["Adapter", "Translated", "Server", "GatewayLike", "RequestMetrics", "StreamFailed", "model_error",
           "outcome_of", "response_headers", "error_headers"]

log = logging.getLogger("chutes_lb.proxy")

StreamFailed = Callable[[BaseException], str]  # words an upstream error in the middle of a stream


class GatewayLike(Protocol):
    """What serving needs of :class:`~chutes_lb.proxy.gateway.Gateway` (tests pass a fake)."""

    fleet: Fleet
    redactor: Redactor

    def group_of(self, model: str) -> str | None: ...

    def session(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> int | None: ...

    async def call(self, api: str, kind: str, group: str, params: dict[str, Any], stream: bool = False,
                   affinity_key: int | None = None) -> CallResult: ...


class RequestMetrics(Protocol):
    def request(self, api: str, outcome: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class Translated:
    """One request translated for the upstream, and the way back for its answer."""

    params: dict[str, Any]  # the upstream body, without ``model`` and ``stream``
    answer: Callable[[Any], Any] = lambda response: response  # the upstream response -> the JSON body
    events: Callable[[Any, StreamFailed], AsyncIterator[bytes]] | None = None  # a stream -> SSE events
    local: Callable[[], Awaitable[Any]] | None = None  # an answer made here, without the upstream


@dataclass(frozen=True)
class Adapter:
    """One API: its names, its error shape, its body check and its translation."""

    api: str  # chat | text | messages | count_tokens | responses: the gateway's and the metric's label
    kind: str  # chat | text: what the gateway sends upstream
    shape: str  # openai | anthropic: the shape of every error body on its routes
    validate: Callable[[bytes], dict[str, Any]]  # raw body -> checked body; raises RequestRejected
    translate: Callable[[dict[str, Any], str], Translated]  # (body, model group); raises RequestRejected
    counted: bool = True  # counted in chutes_lb_requests_total (count_tokens is answered here: not counted)


def model_error(fleet: Fleet, model: str) -> tuple[int, str, str]:
    """(status, code, message) for a model name that is no model group."""
    groups = ", ".join(sorted(fleet.groups))
    for ref in fleet.chutes:
        if model in (ref.chute_id, ref.name, f"openai/{ref.name}", f"chutes/{ref.name}", ref.deployment_id):
            return 400, "model_is_a_chute", (
                f"'{model}' names a chute, not a model group. Send one of the model groups ({groups}); to pin this "
                f"chute, add a model group that lists only it to the proxy's config (it is then routed, counted and "
                f"failed over like any group)")
    return 404, "model_not_found", f"The model '{model}' does not exist on this proxy; model groups: {groups}"


def outcome_of(status: int) -> str:
    """The ``outcome`` label of a request answered with ``status``."""
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "upstream_error" if status >= 500 else "client_error"


def response_headers(result: CallResult) -> list[tuple[bytes, bytes]]:
    return [(b"x-litellm-model-id", result.chute_id.encode()), (b"x-litellm-call-id", result.call_id.encode()),
            (b"x-chutes-lb-attempts", str(result.attempts).encode())]


def error_headers(exc: UpstreamFailure) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(int(exc.retry_after)).encode())] if exc.retry_after else []


class _Reply:
    """The response of one request: whether it started, and the outcome so far."""

    def __init__(self, send: Send) -> None:
        self._send, self.started, self.outcome = send, False, "cancelled"

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def json(self, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.outcome = outcome_of(status)
        await send_json(self, status, body, headers)


class Server:
    """Serves our API routes through the gateway (see the module docstring)."""

    def __init__(self, gateway: GatewayLike, metrics: RequestMetrics) -> None:
        self.gateway = gateway
        self.metrics = metrics

    async def serve(self, adapter: Adapter, body: dict[str, Any], send: Send, receive: Receive,
                    headers: Mapping[str, str]) -> None:
        started = time.monotonic()
        reply = _Reply(send)
        try:
            await self._serve(adapter, body, reply, receive, headers)
        except Exception:  # a bug of ours: a clear 500 in the API's shape, never a plain-text page
            log.exception("internal error on the %s API", adapter.api)
            if not reply.started:
                await reply.json(500, error_body(adapter.shape, 500, "Internal error in the proxy", code="internal_error"))
        finally:
            if adapter.counted:
                self.metrics.request(adapter.api, reply.outcome, time.monotonic() - started)

    async def _serve(self, adapter: Adapter, body: dict[str, Any], reply: _Reply, receive: Receive,
                     headers: Mapping[str, str]) -> None:
        group = self.gateway.group_of(body["model"])
        if group is None:
            status, code, message = model_error(self.gateway.fleet, body["model"])
            await reply.json(status, error_body(adapter.shape, status, message, code=code, param="model"))
            return
        try:
            request = adapter.translate(body, group)
        except RequestRejected as exc:
            await reply.json(exc.status, error_body(adapter.shape, exc.status, exc.message, code=exc.code, param=exc.param))
            return
        if request.local is not None:
            await reply.json(200, await request.local())
            return
        try:
            result = await self.gateway.call(adapter.api, adapter.kind, group, request.params, stream=bool(body.get("stream")),
                                             affinity_key=self.gateway.session(body, headers))
        except UpstreamFailure as exc:
            await reply.json(exc.status, upstream_error_body(adapter.shape, exc.status, exc.message), error_headers(exc))
            return
        if result.stream is None:
            await reply.json(200, request.answer(result.response), response_headers(result))
            return
        if request.events is None:
            raise RuntimeError(f"the {adapter.api} API streams nothing")
        events = _closing(request.events(result.stream, self._stream_failed(adapter.api, result.call_id)), result.stream)
        reply.outcome = await pump(events, reply, receive, response_headers(result))

    def _stream_failed(self, api: str, call_id: str) -> StreamFailed:
        def words(exc: BaseException) -> str:
            failure = classify(exc)
            log.warning("%s stream failed mid-way: %s (call %s)", api, failure.what, call_id[:8])
            return self.gateway.redactor.text(f"the upstream stream failed mid-way ({failure.what}); the answer is incomplete")

        return words


async def _closing(events: AsyncIterator[bytes], stream: Any) -> AsyncIterator[bytes]:
    """``events``, closing them and the upstream stream (and so its routing attempt) when the
    client goes away."""
    try:
        async for event in events:
            yield event
    except (GeneratorExit, asyncio.CancelledError):
        try:
            await events.aclose()  # type: ignore[attr-defined]
        finally:
            await stream.aclose()
        raise
