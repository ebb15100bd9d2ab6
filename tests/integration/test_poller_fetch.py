"""UtilizationFetcher transport edges the simulator does not produce: a chunked body with no
Content-Length must be cut at the limit while streaming (bounded memory), and the key goes
only into the Authorization header. A minimal in-process aiohttp handler, not a simulator."""
import asyncio

import aiohttp
import pytest
from aiohttp import web

from chutes_lb.poller.http import UtilizationFetcher
from chutes_lb.poller.parse import PollError

pytestmark = pytest.mark.integration


async def _serve(handler):
    app = web.Application()
    app.router.add_get("/chutes/utilization", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def test_chunked_body_is_cut_at_the_limit_while_streaming():
    sent = []

    async def endless(request):
        resp = web.StreamResponse()
        await resp.prepare(request)  # chunked, no Content-Length
        try:
            for _ in range(10_000):  # would be 640 MB
                await resp.write(b"[" + b"0," * 32_000)
                sent.append(1)
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    async def main():
        runner, base = await _serve(endless)
        try:
            async with aiohttp.ClientSession() as session:
                fetch = UtilizationFetcher(session, base, timeout=5, max_body_bytes=200_000)
                with pytest.raises(PollError) as info:
                    await fetch()
                return info.value.kind
        finally:
            await runner.cleanup()
    assert asyncio.run(main()) == "too_large"
    assert len(sent) < 1000  # the reader stopped early; the server did not get to send it all


def test_bearer_header_only_when_a_key_is_set():
    seen = []

    async def echo(request):
        seen.append(request.headers.get("Authorization"))
        return web.json_response([])

    async def main():
        runner, base = await _serve(echo)
        try:
            async with aiohttp.ClientSession() as session:
                assert await UtilizationFetcher(session, base + "/", 5, 1000, api_key="cpk_x")() == b"[]"
                await UtilizationFetcher(session, base, 5, 1000)()
        finally:
            await runner.cleanup()
    asyncio.run(main())
    assert seen == ["Bearer cpk_x", None]


def test_connection_refused_is_connect():
    async def main():
        async with aiohttp.ClientSession() as session:
            from chutes_lb.localstack import free_port
            with pytest.raises(PollError) as info:
                await UtilizationFetcher(session, f"http://127.0.0.1:{free_port()}", 2, 1000)()
            return info.value.kind
    assert asyncio.run(main()) == "connect"
