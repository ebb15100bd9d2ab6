"""SIGTERM to the real proxy (uvicorn parent, 2 workers), as ``docker stop`` and the kubelet send
it: the workers drain first (health checks 503, liveness 200, requests still served, an open
stream finishes), then stop. See src/chutes_lb/proxy/drain.py for why."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import httpx
import pytest

from tests.integration.proxy_stack import FLEET, MASTER_KEY, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
DRAIN = 4.0


def _stream(url: str, out: dict, started: threading.Event) -> None:
    body = {"model": "chutes-models", "stream": True, "max_tokens": 60,
            "messages": [{"role": "user", "content": f"a long answer {uuid.uuid4().hex}"}]}
    chunks = []
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60) as r:
            out["status"] = r.status_code
            for line in r.iter_lines():
                if line.startswith("data:"):
                    chunks.append(line)
                    started.set()
    except httpx.HTTPError as exc:
        out["error"] = repr(exc)
    out["chunks"] = chunks
    started.set()


def test_sigterm_drains_before_the_proxy_stops(redis_service) -> None:
    s = start_stack(redis_service.url, f"test-drain-{uuid.uuid4().hex[:8]}", upstream_timeout=30,
                    proxy_env={"PROXY_DRAIN_SECONDS": str(DRAIN)})
    try:
        for c in FLEET:  # ~60 tokens at ~20 tokens/s: the stream is still open when the stop comes
            s.sim.set_chute(c["chute_id"], speed=0.2)
        get = lambda path: httpx.get(s.url + path, timeout=10)  # noqa: E731
        assert get("/health/liveliness").status_code == 200 and get("/readyz").status_code == 200
        out: dict = {}
        started = threading.Event()
        streaming = threading.Thread(target=_stream, args=(s.url, out, started), daemon=True)
        streaming.start()
        assert started.wait(30) and "error" not in out, out
        t0 = time.monotonic()
        os.kill(s.proxy.process.pid, signal.SIGTERM)  # the parent only, as docker stop / the kubelet
        deadline = time.monotonic() + DRAIN / 2
        while get("/health/liveliness").status_code != 503:  # every worker drains (the parent passes it on)
            assert time.monotonic() < deadline, "the health check did not turn 503 while draining"
            time.sleep(0.1)
        ready = get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"status": "draining"}
        assert get("/livez").status_code == 200  # a draining pod is not restarted
        for c in FLEET:
            s.sim.set_chute(c["chute_id"], speed=1.0)
        served = httpx.post(s.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                            json={"model": "chutes-models", "max_tokens": 5, "messages": [{"role": "user", "content": "still there?"}]})
        assert served.status_code == 200, served.text  # requests that still arrive are served
        exit_deadline = time.monotonic() + DRAIN + 30
        while s.proxy.process.poll() is None:
            assert time.monotonic() < exit_deadline, "the proxy did not stop after its drain"
            time.sleep(0.2)
        assert time.monotonic() - t0 >= DRAIN - 0.5  # it kept serving for the drain
        streaming.join(30)
        assert out.get("status") == 200 and "error" not in out and out["chunks"][-1] == "data: [DONE]", out
        log = s.proxy.process.log_text()
        assert "SIGTERM: draining for 4 s" in log and "Traceback" not in log
    finally:
        s.stop()
