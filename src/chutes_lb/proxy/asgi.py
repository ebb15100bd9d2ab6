"""The ASGI plumbing every module of the proxy shares: the type aliases (defined here once, as
starlette's ``types.py`` does), a JSON answer, and a request body read under a size limit and a
deadline. No LiteLLM, no routing."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, MutableMapping

import orjson

from chutes_lb.proxy.validation import RequestRejected

__all__ = ["Scope", "Message", "Receive", "Send", "ASGIApp", "send_json", "read_body", "request_headers"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole JSON answer (numpy values, which LiteLLM's responses may hold, serialise too)."""
    payload = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Receive, max_bytes: int, timeout: float) -> bytes | None:
    """The whole request body; None when the client went away. Raises :class:`RequestRejected`
    with 413 past ``max_bytes`` and 408 when it is not all there within ``timeout`` seconds."""
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise RequestRejected(f"Request body not received within {timeout:g}s (PROXY_BODY_TIMEOUT_SECONDS)",
                                  status=408, code="request_timeout") from None
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise RequestRejected(f"Request body larger than {max_bytes} bytes (PROXY_MAX_BODY_BYTES)",
                                  status=413, code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
