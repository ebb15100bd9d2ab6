"""The proxy's edge: pure-ASGI middlewares with one job each, composed as a list in
:func:`chutes_lb.proxy.app.create_app` (outermost first) in front of our API routes
(:mod:`.routes`) and LiteLLM's (:mod:`.passthrough`):

- :class:`StartOnFirstCall`: starts the routing background work in the server's event loop;
- :class:`Redaction`: every response body is redacted: a configured secret never leaves the proxy
  (an upstream that echoes the key in an error, in ``/health``, or in a stream event);
- :class:`AccessLog`: one line per request (method, route, status, chute, duration; never a
  prompt or a key);
- :class:`Probes`: answers that cost nothing upstream: ``/livez``, ``/readyz``, ``/metrics`` (to
  loopback clients or with the key, unless ``PROXY_METRICS_PUBLIC``); while the worker drains
  before a stop (:mod:`chutes_lb.proxy.drain`) ``/readyz`` and LiteLLM's ``/health/*`` probes
  answer 503, ``/livez`` stays 200;
- :class:`Auth`: every protected route needs the master key: a missing or wrong key is a 401 in
  the route's own error shape (LiteLLM without a database answers a wrong key with 400
  "No connected db.").

Non-HTTP scopes (lifespan, websocket) pass through all of them.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from typing import Callable, Mapping

from starlette.datastructures import Headers

from chutes_lb.proxy.asgi import ASGIApp, Message, Receive, Scope, Send, send_json
from chutes_lb.proxy.errors import error_body
from chutes_lb.redact import Redactor

__all__ = ["StartOnFirstCall", "Redaction", "AccessLog", "Probes", "Auth", "PUBLIC_PATHS", "PUBLIC_PREFIXES", "DRAIN_FAILS"]

access_log = logging.getLogger("chutes_lb.access")

PUBLIC_PATHS = frozenset({
    "/", "/docs", "/redoc", "/openapi.json", "/livez", "/readyz", "/metrics",
    "/health/liveliness", "/health/liveness", "/health/readiness",
})
# LiteLLM's probes (HAProxy checks /health/liveliness) and ours: 503 while the worker drains
DRAIN_FAILS = frozenset({"/readyz", "/health/liveliness", "/health/liveness", "/health/readiness"})
PUBLIC_PREFIXES = ("/swagger/", "/litellm-asset-prefix/", "/.well-known/")
_METRICS = ("/metrics", "/metrics/")


def _presented_key(scope: Scope) -> str | None:
    headers = Headers(scope=scope)
    auth = headers.get("authorization")
    if auth:
        value = auth.strip()
        return value[7:].strip() if value[:7].lower() == "bearer " else value
    for name in ("x-api-key", "api-key", "x-litellm-api-key"):
        if name in headers:
            return headers[name].strip()
    return None


def _key_ok(key: str | None, master_key: bytes) -> bool:
    return key is not None and hmac.compare_digest(key.encode(), master_key)


def _loopback(scope: Scope) -> bool:
    client = scope.get("client")
    try:
        return bool(client) and ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class StartOnFirstCall:
    """Calls ``start`` once, on the first scope (lifespan included): in the server's event loop."""

    def __init__(self, app: ASGIApp, start: Callable[[], None]) -> None:
        self.app = app
        self._start: Callable[[], None] | None = start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._start is not None:
            start, self._start = self._start, None
            start()
        await self.app(scope, receive, send)


class Redaction:
    """Every body chunk with a configured secret in it gets ``****`` instead (content-length is
    fixed up for whole bodies). SSE events are written one per chunk, so a secret in an event is
    within one chunk."""

    def __init__(self, app: ASGIApp, redactor: Redactor) -> None:
        self.app = app
        self.redactor = redactor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.redactor:
            await self.app(scope, receive, send)
            return
        start: Message | None = None  # held until the first body chunk: its length may change

        async def redacting(message: Message) -> None:
            nonlocal start
            kind = message["type"]
            if kind == "http.response.start":
                start = message
                return
            if kind == "http.response.body":
                body = message.get("body", b"")
                clean = self.redactor.bytes(body) if body else body
                if start is not None:
                    first, start = start, None
                    if clean is not body and not message.get("more_body", False):
                        first = {**first, "headers": [(k, v) for k, v in first.get("headers", []) if k.lower() != b"content-length"]
                                 + [(b"content-length", str(len(clean)).encode())]}
                    await send(first)
                await send({**message, "body": clean} if clean is not body else message)
                return
            await send(message)

        await self.app(scope, receive, redacting)


class AccessLog:
    """One INFO line per HTTP request on ``chutes_lb.access``; ``chute_label`` names the chute of
    LiteLLM's ``x-litellm-model-id`` header."""

    def __init__(self, app: ASGIApp, chute_label: Callable[[str], str] = lambda x: x) -> None:
        self.app = app
        self.chute_label = chute_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status: int | None = None
        chute = "-"

        async def logged(message: Message) -> None:
            nonlocal status, chute
            if message["type"] == "http.response.start":
                status = message.get("status")
                for k, v in message.get("headers", []):
                    if k.lower() == b"x-litellm-model-id":
                        chute = self.chute_label(v.decode("latin-1"))
            await send(message)

        await self.app(scope, receive, logged)
        access_log.info("%s %s %s chute=%s %.3fs", scope.get("method"), scope.get("path"),
                        status if status is not None else "-", chute, time.monotonic() - started)


class Probes:
    """``/livez``, ``/readyz`` (503 while starting), the drain's 503s on :data:`DRAIN_FAILS`, and
    ``/metrics`` for loopback clients, the key's holders, or anyone with ``metrics_public`` (the
    others go on to :class:`Auth`, which refuses them)."""

    def __init__(self, app: ASGIApp, ready: Callable[[], bool], metrics: Callable[[], bytes], master_key: str,
                 draining: Callable[[], bool] = lambda: False, metrics_public: bool = False) -> None:
        self.app = app
        self.ready = ready
        self.metrics = metrics
        self.master_key = master_key.encode()
        self.draining = draining
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else None
        if path == "/livez":
            await send_json(send, 200, {"status": "alive"})
        elif path in DRAIN_FAILS and self.draining():  # stopping (proxy/drain.py): load balancers take this replica out
            await send_json(send, 503, {"status": "draining"})
        elif path == "/readyz":
            ready = self.ready()
            await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "starting"})
        elif path in _METRICS and (self.metrics_public or _loopback(scope) or _key_ok(_presented_key(scope), self.master_key)):
            payload = self.metrics()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})
            await send({"type": "http.response.body", "body": payload})
        else:
            await self.app(scope, receive, send)


class Auth:
    """The master key on every route but :data:`PUBLIC_PATHS` (``/metrics`` aside),
    :data:`PUBLIC_PREFIXES` and CORS preflights; a 401 in the shape ``shapes`` gives the path
    (OpenAI's otherwise)."""

    def __init__(self, app: ASGIApp, master_key: str, shapes: Mapping[str, str]) -> None:
        self.app = app
        self.master_key = master_key.encode()
        self.shapes = dict(shapes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._protected(scope):
            await self.app(scope, receive, send)
            return
        key = _presented_key(scope)
        if _key_ok(key, self.master_key):
            await self.app(scope, receive, send)
            return
        message = "Missing API key: send 'Authorization: Bearer <LITELLM_MASTER_KEY>' (or 'x-api-key')" if key is None else "Invalid API key"
        shape = self.shapes.get(scope["path"], "openai")
        await send_json(send, 401, error_body(shape, 401, message, code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])

    @staticmethod
    def _protected(scope: Scope) -> bool:
        path: str = scope["path"]
        public = path in PUBLIC_PATHS and path not in _METRICS
        return not public and not path.startswith(PUBLIC_PREFIXES) and scope.get("method") != "OPTIONS"
