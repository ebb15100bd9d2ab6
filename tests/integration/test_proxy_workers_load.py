"""Workers survive load: uvicorn's multi-worker supervisor SIGKILLs a worker that does not answer
its pipe ping within ``timeout_worker_healthcheck`` (uvicorn's default 5 s). The proxy sets a
bound that fits a start-up and a saturated machine (``WORKER_HEALTHCHECK_SECONDS``); these tests
pin that it reaches uvicorn, and that with every core busy, during the start-up and under load,
no worker is killed and replaced."""
from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.proxy_stack import MASTER_KEY, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
LOAD_SECONDS = 20.0


def test_the_supervisor_timeout_reaches_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from chutes_lb.proxy import __main__ as proxy_main

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    monkeypatch.setattr(proxy_main, "prepare_environment", lambda settings, environ: None)
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-test-not-the-sample")
    monkeypatch.setenv("DEMO_MODE", "true")
    assert proxy_main.main([]) == 0
    assert seen["timeout_worker_healthcheck"] == proxy_main.WORKER_HEALTHCHECK_SECONDS >= 30
    assert "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config.__init__).parameters  # not silently ignored


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(x) for x in path.read_text().split()} if path.exists() else set()


def _spinners() -> list[subprocess.Popen[bytes]]:
    """Two busy loops per core (the machine's cores busy for the whole test)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * (os.cpu_count() or 1))]


async def _load(url: str, seconds: float, concurrency: int = 64) -> dict[str, int]:
    """Closed loop, ``concurrency`` clients, for ``seconds``: status counts (transport errors as 'error')."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:
        async def client_loop() -> None:
            while time.monotonic() < deadline:
                body = {"model": "chutes-models", "max_tokens": 8,
                        "messages": [{"role": "user", "content": f"hi {uuid.uuid4().hex}"}]}
                try:
                    key = str((await client.post("/v1/chat/completions", json=body)).status_code)
                except httpx.HTTPError:
                    key = "error"
                counts[key] = counts.get(key, 0) + 1

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return counts


def test_no_worker_restarted_with_every_core_busy(redis_service) -> None:
    spinners = _spinners()
    stack = None
    try:
        time.sleep(1.0)  # the spinners own the cores before the proxy starts
        stack = start_stack(redis_service.url, f"test-workers-{uuid.uuid4().hex[:8]}", time_scale=0.001,
                            proxy_env={"LOG_LEVEL": "info"})
        parent = stack.proxy.process.pid
        workers = _children(parent)
        assert len(workers) >= 2, workers
        counts = asyncio.run(_load(stack.url, LOAD_SECONDS))
        print(f"every core busy, 64 clients for {LOAD_SECONDS:.0f} s: {sum(counts.values())} sent, {counts}")
        assert counts.get("200", 0) > 0, counts
        time.sleep(1.0)  # one more supervisor round
        log = stack.proxy.process.log_text()
        assert "died" not in log and "failed to start" not in log, stack.proxy.process.tail(60)
        assert _children(parent) == workers, "a worker was replaced"
        assert counts.get("error", 0) == 0, counts  # a killed worker resets the connections it held
    finally:
        for s in spinners:
            s.kill()
        for s in spinners:
            s.wait()
        if stack is not None:
            stack.stop()
