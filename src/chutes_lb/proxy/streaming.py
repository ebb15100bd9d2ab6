"""Sending a server-sent-event stream to the client, noticing when the client goes away.

uvicorn drops writes to a disconnected client silently, so a stream would otherwise run to its
end on the chute for nobody. :func:`pump` watches ``receive()`` for ``http.disconnect`` while it
sends, and on a disconnect closes the event source, which closes the upstream stream and the
routing attempt (``cancelled``).
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

from chutes_lb.proxy.asgi import Receive, Send

__all__ = ["pump"]


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def pump(events: AsyncIterator[bytes], send: Send, receive: Receive, headers: list[tuple[bytes, bytes]]) -> str:
    """Send ``events`` as a 200 event stream; returns ``ok`` or ``cancelled`` (client gone)."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *headers]})
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        async for event in events:
            if gone.done():
                await events.aclose()  # type: ignore[attr-defined]
                return "cancelled"
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "ok"
    except asyncio.CancelledError:
        await asyncio.shield(events.aclose())  # type: ignore[attr-defined]
        raise
    finally:
        gone.cancel()
