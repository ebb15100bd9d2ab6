"""``python -m chutes_lb.poller`` / ``chutes-poller``: settings -> real HTTP + Redis -> poll loop.

Exits 2 with a message naming the variable on bad settings (and, in real mode, on a missing
CHUTES_API_KEY); exits 0 on SIGTERM/SIGINT after stopping the loop, the server and the clients.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from chutes_lb.fleet import FleetError, load_chutes
from chutes_lb.entry import check_requested, config_error, start_service
from chutes_lb.poller.http import ChuteRecordFetcher, UtilizationFetcher, make_app
from chutes_lb.poller.watch import ChuteWatch
from chutes_lb.poller.metrics import PollerMetrics
from chutes_lb.poller.service import Poller
from chutes_lb.settings import Settings, SettingsError
from chutes_lb.snapshot import RedisSnapshotStore

log = logging.getLogger("chutes_lb.poller")


def redis_client(settings: Settings) -> aioredis.Redis:
    """Short timeouts and few retries: a dead Redis fails a cycle fast, the loop retries it."""
    timeout = min(5.0, settings.poll_timeout_seconds)
    return aioredis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                   retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1), health_check_interval=30)


async def serve(settings: Settings) -> None:
    chutes = load_chutes(settings.litellm_config_path)
    poller_id = f"{socket.gethostname()}:{os.getpid()}"
    if settings.demo_mode:
        log.info("DEMO_MODE: polling the simulator at %s, not real Chutes", settings.chutes_api_base)
    log.info("poller %s: %d configured chutes, every %gs from %s, Redis prefix %s", poller_id, len(chutes),
             settings.poll_interval_seconds, settings.chutes_api_base, settings.redis_key_prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = PollerMetrics(chutes, clock=__import__("time").time)
    client = redis_client(settings)
    store = RedisSnapshotStore(client, settings.redis_key_prefix, settings.snapshot_ttl_seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        fetch = UtilizationFetcher(session, settings.chutes_api_base, settings.poll_timeout_seconds,
                                   settings.poll_max_body_bytes, settings.chutes_api_key.get())
        records = ChuteRecordFetcher(session, settings.chutes_api_base, settings.poll_timeout_seconds, settings.chutes_api_key.get())
        watch = ChuteWatch(chutes, records, on_missing=lambda name: metrics.missing_polls.labels(name).inc(),
                           on_concurrency=lambda name, value: metrics.api_concurrency.labels(name).set(value))
        poller = Poller(chutes, fetch, store, metrics, interval=settings.poll_interval_seconds,
                        healthy_seconds=settings.poller_healthy_seconds, poller_id=poller_id, watch=watch)
        runner = web.AppRunner(make_app(metrics.registry, poller.health), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.poller_host, settings.poller_port).start()
            log.info("serving /metrics and /healthz on %s:%d", settings.poller_host, settings.poller_port)
            await poller.run(stop)
        finally:
            await runner.cleanup()
            await client.aclose()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    checking = check_requested(argv)
    settings = start_service("chutes-poller")
    try:
        if not settings.demo_mode:
            try:
                settings.require("chutes_api_key")
            except SettingsError as exc:
                raise SettingsError(f"{exc} (real mode polls api.chutes.ai; set DEMO_MODE=true for the simulator)") from None
        chutes = load_chutes(settings.litellm_config_path)
    except (SettingsError, FleetError) as exc:
        log.error("configuration error: %s", exc)
        return config_error("chutes-poller", exc)
    if checking:
        print(f"chutes-poller: config ok: {len(chutes)} chutes, polling {settings.chutes_api_base} every "
              f"{settings.poll_interval_seconds:g}s")
        return 0
    try:
        asyncio.run(serve(settings))
    except FleetError as exc:
        log.error("configuration error: %s", exc)
        return config_error("chutes-poller", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
