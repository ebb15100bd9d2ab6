"""Admin routes (``/admin/...``): runtime faults and state, for tests and demos.

Contract (other components code against it):

* ``GET  /admin/state`` -> ``{"chutes": [...], "utilization": {"mode", "refresh_seconds", "version", "refreshed_at", ...},
  "aliases": {alias: [chute_id, ...]}, "account": {...}}`` (aliases are set on Chutes' own route, ``POST /model_aliases/``)
* ``POST /admin/chutes/{id_or_name}`` body: any subset of instances, concurrency, speed,
  ttft_scale, error_rate, error_status, hang, cut_after_tokens, reset_rate, reject_share
  (rate-limit mode: that share of requests gets 429 at any load), prefill_rate,
  cache_tokens (per instance; 0 empties the caches), context_length, error_kind (one of Chutes'
  error classes, ``faults.ERROR_KINDS``, answered for ``error_rate`` of the requests) -> the chute's state
* ``POST /admin/account`` body: any subset of error_rate, error_status, error_kind (the same
  injected errors for every request of the account, before any chute is tried), quota_total,
  quota_used, balance, rl_user, rl_chute -> the account's state
* ``POST /admin/utilization`` body: mode, status, delay_seconds, size_bytes, refresh_seconds
* ``POST /admin/utilization/refresh`` -> ``{"version": N}``
* ``POST /admin/reset`` -> back to the fleet config, no faults, empty prefix caches, no aliases, a fresh account

When ``SIM_ADMIN_TOKEN`` is set every route needs ``Authorization: Bearer <token>``.
Invalid bodies answer 400 ``{"error": {...}}``; an unknown chute 404.
"""
from __future__ import annotations

import hmac
import logging
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from chutes_lb.simulator.faults import PatchError, apply_account_patch, apply_chute_patch, validate_utilization_patch
from chutes_lb.simulator.openai_format import error_body
from chutes_lb.simulator.service import Simulator

__all__ = ["make_admin_app"]

log = logging.getLogger(__name__)
ADMIN_SIM_KEY: web.AppKey[Simulator] = web.AppKey("admin_simulator", Simulator)
_JSON = "application/json"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=_JSON)


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(message), content_type=_JSON)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise PatchError("body is not valid JSON") from None


async def state(request: web.Request) -> web.Response:
    return _json(request.app[ADMIN_SIM_KEY].state())


async def set_chute(request: web.Request) -> web.Response:
    sim = request.app[ADMIN_SIM_KEY]
    key = request.match_info["key"]
    chute = sim.lookup(key)
    if chute is None:
        return _error(404, f"chute not found: {key}")
    try:
        controls = apply_chute_patch(chute.controls, await _body(request))
    except PatchError as exc:
        return _error(400, str(exc))
    chute.set_controls(controls, sim.clock())
    log.info("admin: chute %s now %s", chute.spec.name, controls)
    return _json(chute.state())


async def set_account(request: web.Request) -> web.Response:
    sim = request.app[ADMIN_SIM_KEY]
    try:
        body = await _body(request)
        controls = apply_account_patch(sim.account.controls, body)
    except PatchError as exc:
        return _error(400, str(exc))
    sim.account.configure(controls, list(body))
    log.info("admin: account now %s", controls)
    return _json(sim.account.state())


async def set_utilization(request: web.Request) -> web.Response:
    sim = request.app[ADMIN_SIM_KEY]
    try:
        fields = validate_utilization_patch(await _body(request))
    except PatchError as exc:
        return _error(400, str(exc))
    sim.board.configure(fields)
    log.info("admin: utilization %s", fields)
    return _json(sim.board.state())


async def refresh(request: web.Request) -> web.Response:
    return _json({"version": request.app[ADMIN_SIM_KEY].refresh_now()})


async def reset(request: web.Request) -> web.Response:
    sim = request.app[ADMIN_SIM_KEY]
    sim.reset()
    log.info("admin: reset to the fleet config")
    return _json(sim.state())


def _auth_middleware(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "admin routes need 'Authorization: Bearer <SIM_ADMIN_TOKEN>'")
        return await handler(request)

    return auth


def make_admin_app(sim: Simulator, token: str = "") -> web.Application:
    app = web.Application(middlewares=[_auth_middleware(token)] if token else [])
    app[ADMIN_SIM_KEY] = sim
    app.router.add_get("/state", state)
    app.router.add_post("/chutes/{key:.+}", set_chute)
    app.router.add_post("/account", set_account)
    app.router.add_post("/utilization", set_utilization)
    app.router.add_post("/utilization/refresh", refresh)
    app.router.add_post("/reset", reset)
    return app
