"""Writing an admitted request's answer: decode pacing, the plain body, the SSE stream.

``app.py`` admits the request, waits out the time to first token and builds the choices
(``replies.py``); this module paces the decoding at the instance's current load
(``model.decode_rate``, re-evaluated every few tokens: processor sharing) and writes the bytes.
Fault controls that act mid-answer (``cut_after_tokens``) are applied here.
"""
from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass

from aiohttp import web

from chutes_lb.simulator import openai_format as oa
from chutes_lb.simulator.model import decode_rate
from chutes_lb.simulator.prefix import Instance
from chutes_lb.simulator.replies import ChoiceOut
from chutes_lb.simulator.service import ChuteRuntime, Simulator

__all__ = ["Gone", "Answer", "plain", "stream", "reset_connection"]

_DECODE_STEP = 8  # tokens between re-evaluations of the decode rate (non-streamed)
_JSON = "application/json"


class Gone(Exception):
    """The connection was cut on purpose; nothing more to send."""


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


@dataclass
class Answer:
    """Everything needed to write one answer."""

    sim: Simulator
    chute: ChuteRuntime
    instance: Instance
    chat: bool
    rid: str
    created: int
    outs: list[ChoiceOut]
    prompt_tokens: int
    cached_tokens: int
    logprobs: int | None
    tps: float
    headers: dict[str, str]
    deadline: float = 0.0

    async def pace(self, tokens: int) -> None:
        """Advance the virtual deadline by ``tokens`` at the current load; sleep if due."""
        c = self.chute.controls
        rate = decode_rate(self.tps, c.speed, self.instance.in_flight, c.concurrency, self.sim.alpha)
        self.deadline += tokens / rate * self.sim.time_scale
        delay = self.deadline - asyncio.get_running_loop().time()
        if delay > 0.001:
            await asyncio.sleep(delay)


async def plain(request: web.Request, a: Answer) -> web.Response:
    longest, done = max(len(o.pieces) for o in a.outs), 0
    while done < longest:
        step = min(_DECODE_STEP, longest - done)
        await a.pace(step)
        done += step
    if a.chute.controls.cut_after_tokens is not None:
        reset_connection(request)
        raise Gone
    body = oa.completion_body(a.chat, a.rid, a.created, a.chute.spec.name, a.outs, a.prompt_tokens, a.cached_tokens, a.logprobs)
    return web.Response(body=body, content_type=_JSON, headers=a.headers)


async def stream(request: web.Request, a: Answer) -> web.StreamResponse:
    resp = web.StreamResponse(headers={**a.headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    chat, rid, created, name, outs = a.chat, a.rid, a.created, a.chute.spec.name, a.outs
    if chat:
        for i, o in enumerate(outs):
            await resp.write(oa.chunk(chat, rid, created, name, [oa.delta_choice(chat, i, None if o.tool_name else "", None, role=True)]))
            if o.tool_name:
                await resp.write(oa.chunk(chat, rid, created, name, [oa.tool_call_deltas(i, o, None)]))
    offsets = [0] * len(outs)
    sent = 0
    for t in range(max(len(o.pieces) for o in outs)):
        cut = a.chute.controls.cut_after_tokens
        if cut is not None and sent >= cut:
            request.transport and request.transport.abort()
            raise Gone
        await a.pace(1)
        for i, o in enumerate(outs):
            if t >= len(o.pieces):
                continue
            if o.tool_name:
                await resp.write(oa.chunk(chat, rid, created, name, [oa.tool_call_deltas(i, o, t)]))
                continue
            piece = o.pieces[t]
            lp = None if a.logprobs is None else oa.logprob_entries(chat, [piece], a.logprobs, t, offsets[i])
            offsets[i] += len(piece)
            await resp.write(oa.chunk(chat, rid, created, name, [oa.delta_choice(chat, i, piece, None, logprobs=lp)]))
        sent += 1
    for i, o in enumerate(outs):
        await resp.write(oa.chunk(chat, rid, created, name, [oa.delta_choice(chat, i, None if chat else "", o.finish)]))
    # Chutes forces stream_options.include_usage on: the last chunk has no choices and the usage.
    usage = oa.usage(a.prompt_tokens, sum(len(o.pieces) for o in outs), a.cached_tokens)
    await resp.write(oa.chunk(chat, rid, created, name, [], usage))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp
