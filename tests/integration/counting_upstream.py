"""An OpenAI-compatible upstream that counts every attempt it receives and fails on command.

    python tests/integration/counting_upstream.py PORT

``POST /_mode {"default": "500", "by_model": {"org/a": "ok"}}`` sets what each chute answers:
``ok`` (a short completion, streamed when asked), an HTTP status such as ``500``/``429``/``503``,
``echo`` (401 echoing the Authorization header, as some upstreams do), ``hang`` (never answers),
``close`` (drops the connection), or one of Chutes' error classes with Chutes' own body
(:data:`CHUTES`: ``quota`` 402, ``spam`` and ``daily`` per-user 429s, ``maintenance`` 429,
``capacity`` 429 with a ``Retry-After``). ``GET /_count`` -> ``{"total": N, "by_model": {...}}``;
``POST /_reset`` clears the counts; ``GET /_bodies`` -> the last 10 request bodies, oldest first. Used by the retry-bound, 502 and key-echo tests.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web

STATE: dict = {"default": "ok", "by_model": {}, "total": 0, "counts": {}}
# mode -> (status, body, headers), as Chutes answers (shared/reference/chutes-api.md, "Error classes")
CHUTES: dict[str, tuple[int, dict, dict]] = {
    "quota": (402, {"detail": "Quota exceeded and account balance is $0.0, please pay with fiat or send tao to 5Fcounted",
                    "quota_reset_timestamp": "2026-12-09T00:00:00Z"}, {}),
    "spam": (429, {"detail": "Stop spamming this prompt, please..."}, {}),
    "daily": (429, {"detail": "Free model limit reached: 100 requests per day"}, {}),
    "maintenance": (429, {"detail": "model is under maintenance"}, {}),
    "capacity": (429, {"detail": "Infrastructure is at maximum capacity, try again later"}, {"Retry-After": "7"}),
}


def _completion(model: str, chat: bool) -> dict:
    choice = ({"index": 0, "message": {"role": "assistant", "content": "counted"}, "finish_reason": "stop"} if chat
              else {"index": 0, "text": "counted", "finish_reason": "stop"})
    return {"id": "cmpl-counted", "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


async def _answer(request: web.Request, chat: bool) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model"))
    STATE["total"] += 1
    STATE["bodies"] = [*STATE.get("bodies", [])[-9:], body]  # the last 10 request bodies, for GET /_bodies
    STATE["counts"][model] = STATE["counts"].get(model, 0) + 1
    mode = STATE["by_model"].get(model, STATE["default"])
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "close":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    if mode == "echo":
        return web.json_response({"detail": "Invalid token " + request.headers.get("Authorization", "")}, status=401)
    if mode in CHUTES:
        status, payload, headers = CHUTES[mode]
        return web.json_response(payload, status=status, headers=headers)
    if mode != "ok":
        return web.json_response({"detail": f"counted failure {mode}"}, status=int(mode))
    if not body.get("stream"):
        return web.json_response(_completion(model, chat))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for piece, finish in (("coun", None), ("ted", None), (None, "stop")):
        delta = ({"content": piece} if piece else {}) if chat else None
        choice = {"index": 0, "delta": delta, "finish_reason": finish} if chat else {"index": 0, "text": piece or "", "finish_reason": finish}
        chunk = {"id": "cmpl-counted", "object": "chat.completion.chunk" if chat else "text_completion",
                 "created": int(time.time()), "model": model, "choices": [choice]}
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def chat(request: web.Request) -> web.StreamResponse:
    return await _answer(request, True)


async def text(request: web.Request) -> web.StreamResponse:
    return await _answer(request, False)


async def set_mode(request: web.Request) -> web.Response:
    data = await request.json()
    STATE["default"] = str(data.get("default", STATE["default"]))
    STATE["by_model"] = {str(k): str(v) for k, v in (data.get("by_model") or {}).items()}
    return web.json_response({"default": STATE["default"], "by_model": STATE["by_model"]})


async def count(request: web.Request) -> web.Response:
    return web.json_response({"total": STATE["total"], "by_model": STATE["counts"]})


async def bodies(request: web.Request) -> web.Response:
    return web.json_response(STATE.get("bodies", []))


async def reset(request: web.Request) -> web.Response:
    STATE["total"], STATE["counts"] = 0, {}
    return web.json_response({"total": 0})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", text)
    app.router.add_post("/_mode", set_mode)
    app.router.add_get("/_count", count)
    app.router.add_get("/_bodies", bodies)
    app.router.add_post("/_reset", reset)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
