"""HTTP face of the simulator (aiohttp.web): OpenAI routes, utilization, health.

Admin routes live in ``admin.py``. Requests are never logged at INFO, and never their keys or
prompts: the ``Authorization`` header is accepted and ignored (any key works in demo mode).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
import uuid

from aiohttp import web

from chutes_lb.simulator import openai_format as oa
from chutes_lb.simulator.model import decode_rate, ttft_seconds
from chutes_lb.simulator.service import ChuteRuntime, Simulator

__all__ = ["make_app", "SIM_KEY"]

log = logging.getLogger(__name__)
SIM_KEY: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)
_JSON = "application/json"
_MESSAGES = {
    429: "Infrastructure is at maximum capacity, try again later",
    500: "No infrastructure available to serve request",
    402: "Quota exceeded and account balance is $0.0, please pay with fiat or send tao to the wallet",
}
_DECODE_STEP = 8  # tokens between re-evaluations of the decode rate (non-streamed)


def detail(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=b'{"detail":' + oa.orjson.dumps(message) + b"}", content_type=_JSON, headers=headers)


def reset_connection(request: web.Request) -> None:
    """Abort with RST: SO_LINGER 0 then abort the transport."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class _Gone(Exception):
    """The connection was cut on purpose; nothing more to send."""


async def _pace(sim: Simulator, chute: ChuteRuntime, loop: asyncio.AbstractEventLoop, state: list[float], tokens: int, tps: float) -> None:
    """Advance the request's virtual deadline by ``tokens`` at the current load; sleep if due."""
    rate = decode_rate(tps, chute.controls.speed, chute.in_flight, chute.capacity, sim.alpha)
    state[0] += tokens / rate * sim.time_scale
    delay = state[0] - loop.time()
    if delay > 0.001:
        await asyncio.sleep(delay)


async def completions(request: web.Request, chat: bool) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    try:
        p = oa.parse_request(await request.read(), chat)
    except oa.BadRequest as exc:
        return web.Response(status=exc.status, body=oa.error_body(str(exc), exc.param), content_type=_JSON)
    chute = sim.by_key.get(p.model)
    if chute is None:
        return detail(404, f"model not found: {p.model}")
    spec = chute.spec
    headers = {"X-Chutes-InvocationID": str(uuid.uuid4()), "X-Sim-Chute-Id": spec.chute_id}
    status = chute.admit(sim.clock())
    if status == 503:
        return detail(503, f"No instances available (yet) for chute_id={spec.chute_id}", headers)
    if status:
        return detail(429, _MESSAGES[429], headers)
    completed = False
    try:
        c = chute.controls
        rng = sim.rng
        if c.reset_rate and rng.random() < c.reset_rate:
            reset_connection(request)
            raise _Gone
        if c.error_rate and rng.random() < c.error_rate:
            return detail(c.error_status, _MESSAGES.get(c.error_status, f"simulated error {c.error_status}"), headers)
        if c.hang:
            await chute.unhung.wait()
            c = chute.controls
        loop = asyncio.get_running_loop()
        ttft = ttft_seconds(spec.ttft.sample(rng), c.ttft_scale, chute.in_flight, chute.capacity, sim.alpha, sim.time_scale)
        if ttft > 0.001:
            await asyncio.sleep(ttft)
        tps = spec.tps.sample(rng)
        cap = p.max_tokens or 1 << 30
        lengths, finish = [], []
        for _ in range(p.n):
            k = max(1, round(spec.output_tokens.sample(rng)))
            lengths.append(min(k, cap))
            finish.append("length" if k >= cap else "stop")
        rid = ("chatcmpl-" if chat else "cmpl-") + headers["X-Chutes-InvocationID"].replace("-", "")
        created = int(time.time())
        deadline = [loop.time()]
        if p.stream:
            resp = await _stream(request, sim, chute, loop, deadline, tps, chat, rid, created, lengths, finish, p.prompt_tokens, headers)
        else:
            longest, done = max(lengths), 0
            while done < longest:
                step = min(_DECODE_STEP, longest - done)
                await _pace(sim, chute, loop, deadline, step, tps)
                done += step
            if chute.controls.cut_after_tokens is not None:
                reset_connection(request)
                raise _Gone
            body = oa.completion_body(chat, rid, created, spec.name, lengths, finish, p.prompt_tokens)
            resp = web.Response(body=body, content_type=_JSON, headers=headers)
        completed = True
        return resp
    finally:
        chute.release(sim.clock(), completed)


async def _stream(request: web.Request, sim: Simulator, chute: ChuteRuntime, loop: asyncio.AbstractEventLoop, deadline: list[float],
                  tps: float, chat: bool, rid: str, created: int, lengths: list[int], finish: list[str], prompt_tokens: int,
                  headers: dict[str, str]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    name = chute.spec.name
    for i in range(len(lengths)):
        if chat:
            await resp.write(oa.chunk(chat, rid, created, name, [oa.delta_choice(chat, i, "", None, role=True)]))
    sent = 0
    for t in range(max(lengths)):
        cut = chute.controls.cut_after_tokens
        if cut is not None and sent >= cut:
            request.transport and request.transport.abort()
            raise _Gone
        await _pace(sim, chute, loop, deadline, 1, tps)
        for i, k in enumerate(lengths):
            if t < k:
                await resp.write(oa.chunk(chat, rid, created, name, [oa.delta_choice(chat, i, oa.token(t), None)]))
        sent += 1
    for i in range(len(lengths)):
        await resp.write(oa.chunk(chat, rid, created, name, [oa.delta_choice(chat, i, None if chat else "", finish[i])]))
    # Chutes forces stream_options.include_usage on: the last chunk has no choices and the usage.
    await resp.write(oa.chunk(chat, rid, created, name, [], oa.usage(prompt_tokens, sum(lengths))))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _guarded(request, True)


async def text_completions(request: web.Request) -> web.StreamResponse:
    return await _guarded(request, False)


async def _guarded(request: web.Request, chat: bool) -> web.StreamResponse:
    try:
        return await completions(request, chat)
    except (_Gone, ConnectionResetError):
        raise asyncio.CancelledError from None


async def models(request: web.Request) -> web.Response:
    return web.Response(body=request.app[MODELS_KEY], content_type=_JSON)


async def chutes_utilization(request: web.Request) -> web.Response:
    board = request.app[SIM_KEY].board
    if board.mode == "slow" and board.delay_seconds > 0:
        await asyncio.sleep(board.delay_seconds)
    return web.Response(status=board.http_status, body=board.body, content_type=board.content_type)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=_JSON)


MODELS_KEY: web.AppKey[bytes] = web.AppKey("models_body", bytes)


async def _refresh_loop(app: web.Application) -> None:
    sim = app[SIM_KEY]
    while True:
        due = sim.board.refreshed_at + sim.board.refresh_seconds - sim.wall()
        await asyncio.sleep(min(max(due, 0.0), 1.0) if due > 0 else 0)
        if sim.wall() >= sim.board.refreshed_at + sim.board.refresh_seconds:
            sim.refresh_now()


async def _background(app: web.Application):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(_refresh_loop(app))
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def make_app(sim: Simulator, admin_token: str = "") -> web.Application:
    from chutes_lb.simulator.admin import make_admin_app

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIM_KEY] = sim
    app[MODELS_KEY] = sim.models_body()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", text_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/chutes/utilization", chutes_utilization)
    app.router.add_get("/healthz", healthz)
    app.add_subapp("/admin/", make_admin_app(sim, admin_token))
    app.cleanup_ctx.append(_background)
    return app
