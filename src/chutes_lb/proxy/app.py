"""The ASGI app each proxy worker serves: LiteLLM's proxy app behind our front middleware.

The middleware (outermost, pure ASGI, no FastAPI routing) does what LiteLLM does not do well:
- auth: a missing or wrong key is a 401 with an OpenAI-style body on every protected route
  (LiteLLM without a database answers a wrong key with 400 "No connected db.");
- input: completion requests are size-limited (413) and must be a JSON object with the
  required fields (400), so bad input never reaches LiteLLM as a 500;
- probes and metrics that cost nothing upstream: ``/livez``, ``/readyz``, ``/metrics``.
``GET /info`` (deployments, strategy, snapshot age, per-chute headroom) is a FastAPI route, so
it shows in the Swagger UI at ``/``.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
from typing import Any, Awaitable, Callable

import orjson

from chutes_lb.logs import setup_logging
from chutes_lb.proxy import environment, protocol
from chutes_lb.proxy.errors import openai_error_body
from chutes_lb.proxy.info import install_info_route
from chutes_lb.proxy.metrics import metrics_payload
from chutes_lb.proxy.validation import RequestRejected, validate_completion_body, validate_json_object
from chutes_lb.settings import load_settings

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PUBLIC_PATHS = frozenset({
    "/", "/docs", "/redoc", "/openapi.json", "/livez", "/readyz", "/metrics",
    "/health/liveliness", "/health/liveness", "/health/readiness",
})
PUBLIC_PREFIXES = ("/swagger/", "/litellm-asset-prefix/", "/.well-known/")
# The routes this proxy serves. LiteLLM mounts hundreds more (keys, teams, spend, UI, admin)
# that need a database or an enterprise licence and answer 500 without one: they are not part
# of this product's surface, so they answer 404 here (smaller attack surface, no 500s).
SERVED_PATHS = frozenset({
    "/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions",
    "/v1/models", "/models", "/model/info", "/v1/model/info", "/info", "/health",
}) | PUBLIC_PATHS
COMPLETION_PATHS = {
    "/v1/chat/completions": "chat", "/chat/completions": "chat",
    "/v1/completions": "text", "/completions": "text",
}


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


class FrontMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], master_key: str, max_body_bytes: int, metrics: Callable[[], bytes], ready: Callable[[], bool], on_first_request: Callable[[], None], body_timeout: float = 60.0) -> None:
        self.app = app
        self._body_timeout = body_timeout
        self._on_first_request: Callable[[], None] | None = on_first_request
        self._key = master_key.encode()
        self._max_body = max_body_bytes
        self._metrics = metrics
        self._ready = ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._on_first_request is not None:  # start the hook's background work in this loop
            first, self._on_first_request = self._on_first_request, None
            first()
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/livez":
            await send_json(send, 200, {"status": "alive"})
            return
        if path == "/readyz":
            ready = self._ready()
            await send_json(send, 200 if ready else 503, {"status": "ready" if ready else "starting"})
            return
        if path in ("/metrics", "/metrics/"):
            payload = self._metrics()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})
            await send({"type": "http.response.body", "body": payload})
            return
        if path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES) and scope.get("method") != "OPTIONS":
            key = _presented_key(scope)
            if key is None or not hmac.compare_digest(key.encode(), self._key):
                message = "Missing API key: send 'Authorization: Bearer <LITELLM_MASTER_KEY>'" if key is None else "Invalid API key"
                await send_json(send, 401, openai_error_body(message, "authentication_error", "invalid_api_key"), [(b"www-authenticate", b"Bearer")])
                return
        if path not in SERVED_PATHS and not path.startswith(PUBLIC_PREFIXES):
            await send_json(send, 404, openai_error_body(f"No route {path} on this proxy (see GET / for the API)", "not_found_error", "not_found"))
            return
        send = _OpenAIErrors(send)
        method = scope.get("method")
        kind = COMPLETION_PATHS.get(path)
        if kind is not None and method == "POST":
            await self._validated(kind, scope, receive, send)
            return
        if method in ("POST", "PUT", "PATCH") and _is_json(scope):
            await self._validated("json", scope, receive, send)
            return
        if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            receive = _without_body(receive)  # a body on these means nothing; LiteLLM 500'd on some
        await self.app(scope, receive, send)

    async def _validated(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self._body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                await send_json(send, 408, openai_error_body(f"Request body not received within {self._body_timeout:g}s (PROXY_BODY_TIMEOUT_SECONDS)", "invalid_request_error", "request_timeout"))
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                await send_json(send, 413, openai_error_body(f"Request body larger than {self._max_body} bytes (PROXY_MAX_BODY_BYTES)", "invalid_request_error", "request_too_large"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            if kind == "json":
                if body.strip():
                    validate_json_object(body)
            else:
                validate_completion_body(kind, body)
        except RequestRejected as exc:
            await send_json(send, exc.status, openai_error_body(exc.message, "invalid_request_error", exc.code, exc.param))
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


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


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                408: "timeout_error", 413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


class _OpenAIErrors:
    """Rewrites error bodies that are not OpenAI-style (FastAPI's ``{"detail": ...}``, plain-text
    500s) into ``{"error": {...}}``. Only error responses are buffered; success and streams pass."""

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


def create_app() -> Any:
    """The app factory (uvicorn ``factory=True``): settings read once in this worker process,
    the environment set before LiteLLM is imported, the routing runtime built and installed,
    then LiteLLM's app with our routes and middleware."""
    settings = load_settings()
    environment.validate(settings)
    setup_logging(settings.log_level, settings.secrets())  # each worker is a fresh process
    environment.apply(settings, os.environ)
    protocol.configure(settings.proxy_header_timeout_seconds)
    from chutes_lb.proxy import runtime  # imports LiteLLM (the hook's base class): after the environment is set

    rt = runtime.build_runtime(settings)
    runtime.install(rt)
    from litellm.proxy import proxy_server  # (imports litellm, which loads .env into os.environ)

    environment.after_litellm_import(os.environ)
    inner = proxy_server.app
    install_info_route(inner, rt.core)

    def ready() -> bool:
        return proxy_server.llm_router is not None and rt.core.snapshot_checked

    inner.add_middleware(
        FrontMiddleware,  # type: ignore[arg-type]
        master_key=settings.litellm_master_key.get(),
        max_body_bytes=settings.proxy_max_body_bytes,
        body_timeout=settings.proxy_body_timeout_seconds,
        metrics=metrics_payload,
        ready=ready,
        on_first_request=rt.tasks.start,
    )
    return inner
