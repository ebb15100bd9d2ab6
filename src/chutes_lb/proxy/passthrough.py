"""What reaches LiteLLM's own app (models, health, ``/info``, the docs): pure-ASGI middlewares with
one job each, composed after our API routes in :func:`chutes_lb.proxy.app.create_app`:

- :class:`PathAllowList`: only :data:`SERVED_PATHS` (and the public prefixes) reach LiteLLM, every
  other path is a 404;
- :class:`OpenAIErrors`: LiteLLM's error bodies that are not OpenAI-style (FastAPI's
  ``{"detail": ...}``, plain-text 500s) are rewritten into ``{"error": {...}}``;
- :class:`JsonBodies`: a JSON body is read with the same size limit (413) and deadline (408) as
  ours and must be one object (LiteLLM answered other JSON with a 500); ``GET``, ``HEAD``,
  ``DELETE`` and ``OPTIONS`` reach LiteLLM without a body (it 500'd on some).
"""
from __future__ import annotations

import orjson
from starlette.datastructures import Headers

from chutes_lb.proxy.asgi import ASGIApp, Message, Receive, Scope, Send, read_body, send_json
from chutes_lb.proxy.errors import error_body
from chutes_lb.proxy.middleware import PUBLIC_PATHS, PUBLIC_PREFIXES
from chutes_lb.proxy.validation import RequestRejected, validate_json_object

__all__ = ["PathAllowList", "OpenAIErrors", "JsonBodies", "SERVED_PATHS"]

# The LiteLLM routes this proxy serves besides ours. LiteLLM mounts hundreds more (keys, teams,
# spend, UI, admin) that need a database or an enterprise licence and answer 500 without one:
# they are not part of this product's surface, so they answer 404 here.
SERVED_PATHS = frozenset({"/v1/models", "/models", "/model/info", "/v1/model/info", "/info", "/health"}) | PUBLIC_PATHS


class PathAllowList:
    def __init__(self, app: ASGIApp, served: frozenset[str] = SERVED_PATHS, prefixes: tuple[str, ...] = PUBLIC_PREFIXES) -> None:
        self.app = app
        self.served = served
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else None
        if path is None or path in self.served or path.startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        await send_json(send, 404, error_body("openai", 404, f"No route {path} on this proxy (see GET / for the API)", code="not_found"))


class OpenAIErrors:
    """Only error responses are buffered (and rewritten when they are not OpenAI-style)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message.get("status", 200) >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = start["status"]
            body = b"".join(chunks)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
            fixed = _normalise_error(status, body)
            if fixed is not None:
                body = fixed
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewriting)


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
    return orjson.dumps(error_body("openai", status, message, code=str(status)))


class JsonBodies:
    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout: float = 60.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method") if scope["type"] == "http" else None
        if method in ("POST", "PUT", "PATCH") and _is_json(scope):
            try:
                body = await read_body(receive, self.max_body_bytes, self.body_timeout)
                if body is None:  # the client went away
                    return
                if body.strip():
                    validate_json_object(body)
            except RequestRejected as exc:
                await send_json(send, exc.status, error_body("openai", exc.status, exc.message, code=exc.code, param=exc.param))
                return
            receive = _replay(body, receive)
        elif method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            receive = _without_body(receive)
        await self.app(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    return "json" in Headers(scope=scope).get("content-type", "json").lower()  # none: clients of a JSON API mean JSON


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _without_body(receive: Receive) -> Receive:
    drained = False

    async def wrapped() -> Message:
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
