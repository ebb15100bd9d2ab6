"""HTTP face of the simulator (aiohttp.web): OpenAI routes, utilization, chute records, health.

A completion request: parse (``openai_request``), resolve ``model`` to the chutes to try
(``routing``: a name, a UUID, a list ``"A,B"``, an alias, with ``:latency`` / ``:throughput``;
aliases are set with ``POST /model_aliases/``), plan the answer (``replies``), then per chute in
order (the next one after a 429 or 503 before any byte): check the context window, admit it
on an instance (``service`` / ``prefix``: 429 when the chute is full or its rate-limit mode
rejects it), apply faults, wait out the time to first token
(``model.first_token_delay``), cache the prompt's blocks, then write the answer (``answer``).
Admin routes live in ``admin.py``. Requests are never logged at INFO, and never their keys or
prompts: the ``Authorization`` header is accepted and ignored (any key works in demo mode).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson
from aiohttp import web

from chutes_lb.simulator import answer, replies
from chutes_lb.simulator import openai_format as oa
from chutes_lb.simulator.answer import Answer, Gone, reset_connection
from chutes_lb.simulator.chute_api import chute_record
from chutes_lb.simulator.model import first_token_delay
from chutes_lb.simulator.prefix import block_hashes
from chutes_lb.simulator.faults import error_for
from chutes_lb.simulator.routing import rank, resolve
from chutes_lb.simulator.service import ChuteRuntime, Simulator, next_utc_midnight

__all__ = ["make_app", "SIM_KEY"]

log = logging.getLogger(__name__)
SIM_KEY: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)
_JSON = "application/json"
FAILOVER_STATUSES = (429, 503)  # Chutes tries the next chute of a list on these (before any byte)


def detail(status: int, message: str, headers: dict[str, str] | None = None, wall: float = 0.0) -> web.Response:
    """Chutes' error body ``{"detail": ...}``; a 402 also says when the quota resets."""
    if status == 402:
        body = orjson.dumps({"detail": message, "quota_reset_timestamp": next_utc_midnight(wall or time.time())})
    else:
        body = b'{"detail":' + orjson.dumps(message) + b"}"
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


async def completions(request: web.Request, chat: bool) -> web.StreamResponse:
    """Resolve ``model`` to the chutes to try (``routing``) and try them in order."""
    sim = request.app[SIM_KEY]
    try:
        p = oa.parse_request(await request.read(), chat)
        candidates, mode, exact = resolve(p.model, sim.lookup, sim.aliases)
        if not candidates:
            return detail(404, f"model not found: {p.model}")
        pl = replies.plan(p)
    except oa.BadRequest as exc:
        return web.Response(status=exc.status, body=oa.error_body(str(exc), exc.param), content_type=_JSON)
    account = sim.account.headers()
    refused = sim.account.check(sim.rng, candidates[0].spec.chute_id)
    if refused is not None:  # the account, before any chute: no failover
        return detail(*refused, {"X-Chutes-InvocationID": str(uuid.uuid4()), **account}, sim.wall())
    # a list whose chutes all lack instances: the first answers its 503
    order = candidates if exact else (rank(candidates, mode) or candidates[:1])
    last = len(order) - 1
    for i, chute in enumerate(order):
        resp = await serve(request, sim, chute, p, pl, chat, account)
        if i < last and resp.status in FAILOVER_STATUSES and not resp.prepared:
            continue  # before any byte: Chutes tries the next chute of the list
        return resp
    raise AssertionError("unreachable: order is never empty")


async def serve(request: web.Request, sim: Simulator, chute: ChuteRuntime, p: oa.Parsed, pl: replies.Plan,
                chat: bool, account: dict[str, str]) -> web.StreamResponse:
    """One attempt on one chute: context check, admission, faults, time to first token, answer."""
    chute.received += 1
    spec, c = chute.spec, chute.controls
    prompt_tokens = p.prompt_tokens
    limit = c.context_length
    if prompt_tokens + (p.max_tokens or 0) > limit or (p.max_tokens is None and prompt_tokens >= limit):
        return web.Response(status=400, body=oa.context_error_body(limit, prompt_tokens, p.max_tokens), content_type=_JSON)
    if p.tools and p.tool_choice != "none" and not spec.tools:
        return web.Response(status=400, body=oa.NO_TOOLS_BODY, content_type=_JSON)
    headers = {"X-Chutes-InvocationID": str(uuid.uuid4()), "X-Sim-Chute-Id": spec.chute_id, **account}
    rng = sim.rng
    if c.error_rate and rng.random() < c.error_rate:  # Chutes' gateway answers these before an instance is chosen
        status, message = error_for(c.error_kind, c.error_status, spec.chute_id)
        chute.refuse(sim.clock(), status)
        return detail(status, message, headers, sim.wall())
    hashes = block_hashes(p.prompt, spec.block_tokens)
    adm = chute.admit(sim.clock(), hashes, prompt_tokens, rng, p.prefix_keys)
    if adm.status == 503:
        return detail(*error_for("no_instances", 503, spec.chute_id), headers)
    if adm.status:
        return detail(*error_for("infra_overload", 429, spec.chute_id), headers)
    inst = adm.instance
    assert inst is not None
    completed = False
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        if c.reset_rate and rng.random() < c.reset_rate:
            reset_connection(request)
            raise Gone
        if c.hang:
            await chute.unhung.wait()
            c = chute.controls
        cached = adm.cached_blocks * spec.block_tokens
        ttft, prefill = first_token_delay(spec.ttft.sample(rng), prompt_tokens - cached, c.prefill_rate, c.ttft_scale,
                                          inst.in_flight, c.concurrency, sim.alpha, sim.time_scale)
        ttft += inst.reserve_prefill(sim.clock(), prefill)
        if ttft > 0.001:
            await asyncio.sleep(ttft)
        inst.cache.insert(hashes)  # the prompt's blocks are reusable once computed (vLLM, SGLang)
        cap = p.max_tokens if p.max_tokens is not None else limit - prompt_tokens
        rid = ("chatcmpl-" if chat else "cmpl-") + headers["X-Chutes-InvocationID"].replace("-", "")
        outs = [replies.build_choice(pl, round(spec.output_tokens.sample(rng)), cap, p.stop, f"call_{rid[-24:]}{i:02d}")
                for i in range(p.n)]
        first = loop.time()
        a = Answer(sim, chute, inst, chat, rid, int(time.time()), outs, prompt_tokens, cached, p.logprobs, spec.tps.sample(rng),
                   headers, first)
        resp = await (answer.stream(request, a) if p.stream else answer.plain(request, a))
        completed = True
        decode = loop.time() - first
        chute.observe(first - started, max(len(o.pieces) for o in outs) / decode if decode > 0 else None)
        return resp
    finally:
        chute.release(sim.clock(), completed, inst)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _guarded(request, True)


async def text_completions(request: web.Request) -> web.StreamResponse:
    return await _guarded(request, False)


async def _guarded(request: web.Request, chat: bool) -> web.StreamResponse:
    try:
        return await completions(request, chat)
    except (Gone, ConnectionResetError):
        raise asyncio.CancelledError from None


async def models(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SIM_KEY].models_body(), content_type=_JSON)


async def chute(request: web.Request) -> web.Response:
    """``GET /chutes/{id_or_name}``: the chute with its instances, like the real API."""
    sim = request.app[SIM_KEY]
    key = request.match_info["key"]
    found = sim.lookup(key)
    if found is None:
        return detail(404, "Chute not found, or does not belong to you")
    return web.Response(body=orjson.dumps(chute_record(found, sim.wall())), content_type=_JSON)


async def set_alias(request: web.Request) -> web.Response:
    """``POST /model_aliases/`` ``{"alias": ..., "chute_ids": [name or UUID, ...]}`` (Chutes' route; one account here)."""
    sim = request.app[SIM_KEY]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return detail(400, "body is not valid JSON")
    alias = body.get("alias") if isinstance(body, dict) else None
    ids = body.get("chute_ids") if isinstance(body, dict) else None
    if not isinstance(alias, str) or not alias.strip() or "," in alias:
        return detail(400, "alias must be a non-empty string without commas")
    if not isinstance(ids, list) or not ids or not all(isinstance(k, str) for k in ids):
        return detail(400, "chute_ids must be a non-empty list of chute names or UUIDs")
    chutes = [sim.lookup(k) for k in ids]
    missing = [k for k, c in zip(ids, chutes) if c is None]
    if missing:
        return detail(404, f"chute not found: {missing[0]}")
    sim.aliases[alias.strip().lower()] = [c.spec.chute_id for c in chutes if c is not None]
    return web.Response(body=orjson.dumps({"alias": alias.strip(), "chute_ids": sim.aliases[alias.strip().lower()]}), content_type=_JSON)


async def list_aliases(request: web.Request) -> web.Response:
    aliases = request.app[SIM_KEY].aliases
    return web.Response(body=orjson.dumps([{"alias": a, "chute_ids": ids} for a, ids in aliases.items()]), content_type=_JSON)


async def delete_alias(request: web.Request) -> web.Response:
    if request.app[SIM_KEY].aliases.pop(request.match_info["alias"].lower(), None) is None:
        return detail(404, "alias not found")
    return web.Response(body=b'{"deleted":true}', content_type=_JSON)


async def chutes_utilization(request: web.Request) -> web.Response:
    board = request.app[SIM_KEY].board
    if board.mode == "slow" and board.delay_seconds > 0:
        await asyncio.sleep(board.delay_seconds)
    return web.Response(status=board.http_status, body=board.body, content_type=board.content_type)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=_JSON)


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
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", text_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/chutes/utilization", chutes_utilization)  # before /chutes/{key}: matched in order
    app.router.add_get("/chutes/{key:.+}", chute)
    app.router.add_post("/model_aliases/", set_alias)
    app.router.add_get("/model_aliases/", list_aliases)
    app.router.add_delete("/model_aliases/{alias}", delete_alias)
    app.router.add_get("/healthz", healthz)
    app.add_subapp("/admin/", make_admin_app(sim, admin_token))
    app.cleanup_ctx.append(_background)
    return app
