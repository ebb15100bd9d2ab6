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

import hmac
import logging
import os
from typing import Any, Awaitable, Callable

import orjson

from chutes_lb.logs import setup_logging
from chutes_lb.proxy.errors import openai_error_body
from chutes_lb.proxy.validation import RequestRejected, validate_completion_body
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
LITELLM_REDIS_VARS = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_SSL", "REDIS_CLUSTER_NODES", "REDIS_SENTINEL_NODES")
COMPLETION_PATHS = {
    "/v1/chat/completions": "chat", "/chat/completions": "chat",
    "/v1/completions": "text", "/completions": "text",
    "/openai/deployments/chat/completions": "chat",
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
    def __init__(self, app: Callable[..., Awaitable[None]], master_key: str, max_body_bytes: int, metrics: Callable[[], bytes], ready: Callable[[], bool], on_first_request: Callable[[], None]) -> None:
        self.app = app
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
        kind = COMPLETION_PATHS.get(path)
        if kind is not None and scope.get("method") == "POST":
            await self._validated(kind, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _validated(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
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


def _metrics_payload() -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)


def build_app() -> Any:
    settings = load_settings()
    settings.require("litellm_master_key")
    setup_logging(settings.log_level, settings.secrets())  # each worker is a fresh process
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY_DISABLED", "true")
    from chutes_lb.routing import hook

    hook.configure(settings)  # the hook uses these settings, read before LiteLLM touches the env
    from litellm.proxy import proxy_server  # (imports litellm, which loads .env into os.environ)

    from chutes_lb.proxy.info import install_info_route

    # LiteLLM turns any REDIS_* variable into a "coordination Redis" it calls on every request
    # (rate-limit counters). Our Redis is for the snapshot only, read off the request path.
    for name in LITELLM_REDIS_VARS:
        os.environ.pop(name, None)

    inner = proxy_server.app
    install_info_route(inner)

    def ready() -> bool:
        return proxy_server.llm_router is not None and hook.get_hook().snapshot_checked

    inner.add_middleware(
        FrontMiddleware,  # type: ignore[arg-type]
        master_key=settings.litellm_master_key.get(),
        max_body_bytes=settings.proxy_max_body_bytes,
        metrics=_metrics_payload,
        ready=ready,
        on_first_request=lambda: hook.get_hook().ensure_started(),
    )
    return inner


app = build_app()
