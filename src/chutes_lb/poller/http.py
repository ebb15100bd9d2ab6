"""The poller's HTTP edges: the utilization fetch (aiohttp client, bounded body) and the
``/metrics`` + ``/healthz`` server (aiohttp.web)."""
from __future__ import annotations

import asyncio
from typing import Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from chutes_lb.poller.parse import PollError

__all__ = ["UtilizationFetcher", "ChuteRecordFetcher", "make_app", "CHUNK_BYTES"]

CHUNK_BYTES = 64 * 1024


class UtilizationFetcher:
    """``await fetcher()`` -> body bytes, or :class:`PollError` with a fixed ``kind``.

    The body is read in chunks and abandoned as soon as it exceeds ``max_body_bytes``
    (a declared Content-Length above the limit is refused before reading), so memory stays
    bounded whatever the server sends. The key is only ever put in the Authorization header.
    """

    def __init__(self, session: aiohttp.ClientSession, api_base: str, timeout: float, max_body_bytes: int, api_key: str = "") -> None:
        self.session = session
        self.url = api_base.rstrip("/") + "/chutes/utilization"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_body_bytes = max_body_bytes
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    async def __call__(self) -> bytes:
        try:
            async with self.session.get(self.url, headers=self._headers, timeout=self.timeout, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise PollError("http_status", f"HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > self.max_body_bytes:
                    raise PollError("too_large", f"Content-Length {resp.content_length} > {self.max_body_bytes}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise PollError("too_large", f"body exceeds {self.max_body_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except PollError:
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise PollError("timeout", type(exc).__name__) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise PollError("truncated", f"{type(exc).__name__}: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PollError("connect", f"{type(exc).__name__}: {exc}") from None


class ChuteRecordFetcher:
    """``await fetcher(chute_id)`` -> the ``GET /chutes/{id}`` record (dict), or None on any
    failure (the record is advisory: it only feeds the concurrency check)."""

    def __init__(self, session: aiohttp.ClientSession, api_base: str, timeout: float, api_key: str = "") -> None:
        self.session = session
        self.base = api_base.rstrip("/") + "/chutes/"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    async def __call__(self, chute_id: str) -> dict | None:
        try:
            async with self.session.get(self.base + chute_id, headers=self._headers, timeout=self.timeout, allow_redirects=False) as resp:
                if resp.status != 200 or (resp.content_length or 0) > 4 * 1024 * 1024:
                    return None
                data = await resp.json(content_type=None)
                return data if isinstance(data, dict) else None
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None


def make_app(registry: CollectorRegistry, health: Callable[[], tuple[bool, dict[str, object]]]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, body = health()
        body = {"status": "ok" if ok else "unhealthy", **body}
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
