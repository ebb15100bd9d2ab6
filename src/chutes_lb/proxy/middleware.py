"""The front middleware: outermost, pure ASGI, in front of LiteLLM's FastAPI app.

- auth on every protected route: a missing or wrong key is a 401 in the route's own error shape
  (LiteLLM without a database answers a wrong key with 400 "No connected db.");
- our API routes (:class:`ApiRoute`: chat, text, Messages, count_tokens, Responses): the body is
  read with a size limit (413) and a deadline (408), checked, and handed to our handler, which
  takes the request to the router through :mod:`chutes_lb.proxy.gateway`;
- every other route LiteLLM serves is limited to :data:`SERVED_PATHS` (404 otherwise), JSON
  bodies must be objects, and error bodies are rewritten into OpenAI's shape;
- every response body is redacted: a configured secret never leaves the proxy (an upstream that
  echoes the key in an error, in ``/health``, or in a stream event);
- probes and metrics that cost nothing upstream: ``/livez``, ``/readyz``, ``/metrics`` (to
  loopback clients or with the key, unless ``PROXY_METRICS_PUBLIC``); while the worker drains
  before a stop (:mod:`chutes_lb.proxy.drain`) ``/readyz`` and LiteLLM's ``/health/*`` probes
  answer 503, ``/livez`` stays 200;
- an optional access log line per request (method, route, status, chute, duration; never a
  prompt or a key).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

import orjson

from chutes_lb.proxy.errors import error_body, openai_error_body
from chutes_lb.proxy.validation import RequestRejected, validate_json_object
from chutes_lb.redact import Redactor

__all__ = ["FrontMiddleware", "ApiRoute", "send_json", "PUBLIC_PATHS", "SERVED_PATHS", "DRAIN_FAILS"]

log = logging.getLogger("chutes_lb.proxy")
access_log = logging.getLogger("chutes_lb.access")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PUBLIC_PATHS = frozenset({
    "/", "/docs", "/redoc", "/openapi.json", "/livez", "/readyz", "/metrics",
    "/health/liveliness", "/health/liveness", "/health/readiness",
})
# LiteLLM's probes (HAProxy checks /health/liveliness) and ours: 503 while the worker drains
DRAIN_FAILS = frozenset({"/readyz", "/health/liveliness", "/health/liveness", "/health/readiness"})
PUBLIC_PREFIXES = ("/swagger/", "/litellm-asset-prefix/", "/.well-known/")
# The LiteLLM routes this proxy serves besides ours. LiteLLM mounts hundreds more (keys, teams,
# spend, UI, admin) that need a database or an enterprise licence and answer 500 without one:
# they are not part of this product's surface, so they answer 404 here.
SERVED_PATHS = frozenset({"/v1/models", "/models", "/model/info", "/v1/model/info", "/info", "/health"}) | PUBLIC_PATHS


@dataclass(frozen=True)
class ApiRoute:
    """One of our API routes: its error shape, body check and handler."""

    name: str  # chat | text | messages | count_tokens | responses
    shape: str  # "openai" | "anthropic": the error shape of every answer on this route
    validate: Callable[[bytes], dict]  # raises RequestRejected
    handle: Callable[[dict, Send, Receive, Mapping[str, str]], Awaitable[None]]


def _presented_key(scope: Scope) -> str | None:
    headers = dict(scope.get("headers") or ())
    auth = headers.get(b"authorization")
    if auth:
        value = auth.decode("latin-1").strip()
        return value[7:].strip() if value[:7].lower() == "bearer " else value
    for name in (b"x-api-key", b"api-key", b"x-litellm-api-key"):
        if name in headers:
            return headers[name].decode("latin-1").strip()
    return None


async def send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(body)
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": payload})


def _loopback(scope: Scope) -> bool:
    client = scope.get("client")
    try:
        return bool(client) and ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class FrontMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], master_key: str, max_body_bytes: int, metrics: Callable[[], bytes],
                 ready: Callable[[], bool], on_first_request: Callable[[], None], routes: Mapping[str, ApiRoute],
                 redactor: Redactor, body_timeout: float = 60.0, metrics_public: bool = False, access_log: bool = False,
                 chute_label: Callable[[str], str] = lambda x: x, draining: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self._draining = draining
        self._body_timeout = body_timeout
        self._on_first_request: Callable[[], None] | None = on_first_request
        self._key = master_key.encode()
        self._max_body = max_body_bytes
        self._metrics = metrics
        self._metrics_public = metrics_public
        self._ready = ready
        self._routes = dict(routes)
        self._redactor = redactor
        self._access = access_log
        self._chute_label = chute_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._on_first_request is not None:  # start the routing background work in this loop
            first, self._on_first_request = self._on_first_request, None
            first()
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._redactor:
            send = _Redacting(send, self._redactor)
        if self._access:
            send = _AccessLog(send, scope, self._chute_label)
        await self._dispatch(scope, receive, send)
        if isinstance(send, _AccessLog):
            send.write()

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        route = self._routes.get(path)
        shape = route.shape if route is not None else "openai"
        if path == "/livez":
            await send_json(send, 200, {"status": "alive"})
            return
        if path in DRAIN_FAILS and self._draining():  # stopping (proxy/drain.py): load balancers take this replica out
            await send_json(send, 503, {"status": "draining"})
            return
        if path == "/readyz":
            ready = self._ready()
            await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "starting"})
            return
        if path in ("/metrics", "/metrics/") and (self._metrics_public or _loopback(scope) or self._key_ok(scope)):
            payload = self._metrics()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})
            await send({"type": "http.response.body", "body": payload})
            return
        public = path in PUBLIC_PATHS and path not in ("/metrics", "/metrics/")
        if not public and not path.startswith(PUBLIC_PREFIXES) and scope.get("method") != "OPTIONS":
            key = _presented_key(scope)
            if key is None or not hmac.compare_digest(key.encode(), self._key):
                message = "Missing API key: send 'Authorization: Bearer <LITELLM_MASTER_KEY>' (or 'x-api-key')" if key is None else "Invalid API key"
                await send_json(send, 401, error_body(shape, 401, message, code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])
                return
        method = scope.get("method")
        if route is not None:
            if method != "POST":
                await send_json(send, 405, error_body(shape, 405, f"{path} takes POST"), [(b"allow", b"POST")])
                return
            body = await self._read_body(scope, receive, send, shape)
            if body is None:
                return
            try:
                data = route.validate(body)
            except RequestRejected as exc:
                await send_json(send, exc.status, error_body(shape, exc.status, exc.message, code=exc.code, param=exc.param))
                return
            started = _Started(send)
            try:
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
                await route.handle(data, started, receive, headers)
            except Exception:  # a bug of ours: a clear 500 in the route's shape, never a plain-text page
                log.exception("internal error on %s", path)
                if not started.started:
                    await send_json(send, 500, error_body(shape, 500, "Internal error in the proxy", code="internal_error"))
            return
        if path not in SERVED_PATHS and not path.startswith(PUBLIC_PREFIXES):
            await send_json(send, 404, openai_error_body(f"No route {path} on this proxy (see GET / for the API)", "not_found_error", "not_found"))
            return
        send = _OpenAIErrors(send)
        if method in ("POST", "PUT", "PATCH") and _is_json(scope):
            body = await self._read_body(scope, receive, send, "openai")
            if body is None:
                return
            if body.strip():
                try:
                    validate_json_object(body)
                except RequestRejected as exc:
                    await send_json(send, exc.status, openai_error_body(exc.message, "invalid_request_error", exc.code, exc.param))
                    return
            await self.app(scope, _replay(body, receive), send)
            return
        if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            receive = _without_body(receive)  # a body on these means nothing; LiteLLM 500'd on some
        await self.app(scope, receive, send)

    def _key_ok(self, scope: Scope) -> bool:
        key = _presented_key(scope)
        return key is not None and hmac.compare_digest(key.encode(), self._key)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send, shape: str) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                await send_json(send, 408, error_body(shape, 408, f"Request body not received within {self._body_timeout:g}s (PROXY_BODY_TIMEOUT_SECONDS)", code="request_timeout"))
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                await send_json(send, 413, error_body(shape, 413, f"Request body larger than {self._max_body} bytes (PROXY_MAX_BODY_BYTES)", code="request_too_large"))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            return b"json" in value.lower()
    return True  # no content type: clients of a JSON API usually mean JSON


def _without_body(receive: Receive) -> Receive:
    drained = False

    async def wrapped() -> dict[str, Any]:
        nonlocal drained
        if not drained:
            drained = True
            while True:  # consume what the client sent, hand the app an empty body
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
            if message["type"] == "http.disconnect":
                return message
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return wrapped


class _Started:
    """Remembers whether the response has started (an error can then only end the stream)."""

    def __init__(self, send: Send) -> None:
        self._send, self.started = send, False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class _Redacting:
    """Every body chunk with a configured secret in it gets ``****`` instead (content-length is
    fixed up for whole bodies). SSE events are written one per chunk, so a secret in an event is
    within one chunk."""

    def __init__(self, send: Send, redactor: Redactor) -> None:
        self._send, self._redactor = send, redactor
        self._start: dict[str, Any] | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message  # held until the first body chunk: its length may change
            return
        if kind == "http.response.body":
            body = message.get("body", b"")
            clean = self._redactor.bytes(body) if body else body
            if self._start is not None:
                start, self._start = self._start, None
                if clean is not body and not message.get("more_body", False):
                    start = {**start, "headers": [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                             + [(b"content-length", str(len(clean)).encode())]}
                await self._send(start)
            await self._send({**message, "body": clean} if clean is not body else message)
            return
        await self._send(message)


class _AccessLog:
    def __init__(self, send: Send, scope: Scope, chute_label: Callable[[str], str]) -> None:
        self._send, self._scope, self._label = send, scope, chute_label
        self._t0 = time.monotonic()
        self.status: int | None = None
        self.chute = "-"

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message.get("status")
            for k, v in message.get("headers", []):
                if k.lower() == b"x-litellm-model-id":
                    self.chute = self._label(v.decode("latin-1"))
        await self._send(message)

    def write(self) -> None:
        access_log.info("%s %s %s chute=%s %.3fs", self._scope.get("method"), self._scope.get("path"),
                        self.status if self.status is not None else "-", self.chute, time.monotonic() - self._t0)


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                408: "timeout_error", 413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


class _OpenAIErrors:
    """Rewrites LiteLLM's error bodies that are not OpenAI-style (FastAPI's ``{"detail": ...}``,
    plain-text 500s) into ``{"error": {...}}``. Only error responses are buffered."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: dict[str, Any] | None = None
        self._chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message.get("status", 200) >= 400:
            self._start = message
            return
        if self._start is None or message["type"] != "http.response.body":
            await self._send(message)
            return
        self._chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        status = self._start["status"]
        body = b"".join(self._chunks)
        headers = [(k, v) for k, v in self._start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
        fixed = _normalise_error(status, body)
        if fixed is not None:
            body = fixed
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


def _normalise_error(status: int, body: bytes) -> bytes | None:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return None  # already OpenAI-style
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        message = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
    elif isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
    else:
        message = "Internal error in the proxy" if status >= 500 else (body.decode("utf-8", "replace")[:500] or f"HTTP {status}")
    type_ = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps(openai_error_body(message, type_, str(status)))
