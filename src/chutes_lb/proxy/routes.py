"""Our API routes, in front of LiteLLM's: a pure-ASGI middleware that answers the paths of its
table itself. The body is read with a size limit (413) and a deadline (408), checked by the
route's adapter (400), and served by :class:`~chutes_lb.proxy.serve.Server`; every refusal is in
the route's own error shape. Any other path goes on to the app."""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

from chutes_lb.proxy.asgi import ASGIApp, Receive, Scope, Send, read_body, request_headers, send_json
from chutes_lb.proxy.errors import error_body
from chutes_lb.proxy.serve import Adapter
from chutes_lb.proxy.validation import RequestRejected

__all__ = ["ApiRoutes", "Serve"]

Serve = Callable[[Adapter, dict[str, Any], Send, Receive, Mapping[str, str]], Awaitable[None]]


class ApiRoutes:
    def __init__(self, app: ASGIApp, routes: Mapping[str, Adapter], serve: Serve, max_body_bytes: int,
                 body_timeout: float = 60.0) -> None:
        self.app = app
        self.routes = dict(routes)
        self.serve = serve
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        adapter = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if adapter is None:
            await self.app(scope, receive, send)
            return
        if scope.get("method") != "POST":
            await send_json(send, 405, error_body(adapter.shape, 405, f"{scope['path']} takes POST"), [(b"allow", b"POST")])
            return
        try:
            raw = await read_body(receive, self.max_body_bytes, self.body_timeout)
            if raw is None:  # the client went away
                return
            body = adapter.validate(raw)
        except RequestRejected as exc:
            await send_json(send, exc.status, error_body(adapter.shape, exc.status, exc.message, code=exc.code, param=exc.param))
            return
        await self.serve(adapter, body, send, receive, request_headers(scope))
