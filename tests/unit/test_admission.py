"""Admission control (proxy/admission.py) on a plain ASGI app that holds each request until the
test lets it go: the bound, the queue and its deadline, the fast 503 with Retry-After in each
API's shape, first come first served, and probes that never wait."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chutes_lb.proxy.admission import Admission

pytestmark = pytest.mark.unit


class Held:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.started.append(scope.get("tag", scope["path"]))
        if scope["path"] != "/livez":
            await self.gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Admission, path: str, tag: str = "") -> tuple[int, dict, bytes]:
    out: dict[str, Any] = {}
    body = bytearray()

    async def send(msg: dict) -> None:
        if msg["type"] == "http.response.start":
            out["status"], out["headers"] = msg["status"], dict(msg["headers"])
        else:
            body.extend(msg.get("body", b""))

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app({"type": "http", "path": path, "tag": tag or path}, receive, send)
    return out["status"], out["headers"], bytes(body)


def make(held: Held, limit: int = 2, queue: int = 1, seconds: float = 0.3) -> Admission:
    return Admission(held, limit=limit, queue=queue, queue_seconds=seconds, paths={"/v1/chat/completions", "/v1/messages"},
                     anthropic_paths={"/v1/messages"})


def test_past_the_bound_and_the_queue_a_fast_503_with_retry_after_in_the_api_s_shape() -> None:
    async def scenario() -> None:
        held = Held()
        app = make(held)
        running = [asyncio.create_task(call(app, "/v1/chat/completions")) for _ in range(2)]
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(call(app, "/v1/chat/completions"))
        await asyncio.sleep(0.01)
        status, headers, body = await asyncio.wait_for(call(app, "/v1/messages"), 0.1)  # the queue is full: at once
        assert status == 503 and headers[b"retry-after"] == b"1"
        assert json.loads(body)["type"] == "error" and json.loads(body)["error"]["type"] == "overloaded_error"
        status, headers, body = await queued  # waited its deadline
        assert status == 503 and json.loads(body)["error"]["code"] == "overloaded" and b"retry-after" in headers
        assert held.started == ["/v1/chat/completions"] * 2  # neither refused request reached the app
        held.gate.set()
        assert [s for s, _, _ in await asyncio.gather(*running)] == [200, 200]
        assert app.active == 0

    asyncio.run(scenario())


def test_a_place_that_frees_goes_to_the_oldest_waiter_and_probes_never_wait() -> None:
    async def scenario() -> None:
        held = Held()
        app = make(held, limit=1, queue=2, seconds=5.0)
        first = asyncio.create_task(call(app, "/v1/chat/completions", "first"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(call(app, "/v1/chat/completions", "second"))
        await asyncio.sleep(0.01)
        third = asyncio.create_task(call(app, "/v1/chat/completions", "third"))
        await asyncio.sleep(0.01)
        assert (await asyncio.wait_for(call(app, "/livez"), 0.1))[0] == 200  # not queued behind traffic
        held.gate.set()
        results = await asyncio.gather(first, second, third)
        assert [s for s, _, _ in results] == [200, 200, 200]
        assert [t for t in held.started if t != "/livez"] == ["first", "second", "third"]
        assert app.active == 0

    asyncio.run(scenario())


def test_a_waiting_client_that_leaves_gives_up_nothing_it_was_not_given() -> None:
    async def scenario() -> None:
        held = Held()
        app = make(held, limit=1, queue=2, seconds=5.0)
        first = asyncio.create_task(call(app, "/v1/chat/completions"))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(call(app, "/v1/chat/completions"))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        held.gate.set()
        await first
        assert app.active == 0 and not app._waiting
        assert (await call(app, "/v1/chat/completions"))[0] == 200

    asyncio.run(scenario())
