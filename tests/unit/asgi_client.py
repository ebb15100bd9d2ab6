"""A minimal ASGI client for the proxy's unit tests: one HTTP request in, the answer out, and a
client that can go away while a stream is being sent."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from chutes_lb.proxy.asgi import ASGIApp, Message


@dataclass
class Answer:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return orjson.loads(self.body)


def scope(method: str, path: str, headers: dict[str, str] | None = None, client: str = "10.0.0.9") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "client": (client, 40000),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]}


async def call(app: ASGIApp, method: str, path: str, body: bytes | list[bytes] = b"", headers: dict[str, str] | None = None,
               client: str = "10.0.0.9", leave_after_chunks: int | None = None) -> Answer:
    """Send one request to ``app``. ``body`` as a list is sent in several messages. With
    ``leave_after_chunks`` the client disconnects once it has that many body chunks."""
    parts = body if isinstance(body, list) else [body]
    queue: list[Message] = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    gone = asyncio.Event()
    answer = Answer()

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            if message.get("body"):
                answer.chunks.append(message["body"])
            if leave_after_chunks is not None and len(answer.chunks) >= leave_after_chunks:
                gone.set()
                await asyncio.sleep(0)  # let the server notice before its next event

    await asyncio.wait_for(app(scope(method, path, headers, client), receive, send), 5)
    return answer
