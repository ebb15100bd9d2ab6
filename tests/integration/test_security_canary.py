"""Canary secrets: a stack whose ``LITELLM_MASTER_KEY`` and ``CHUTES_API_KEY`` are unique canary
values is driven through successes, streams, upstream errors (401/400/429/500, resets), bad
input and wrong keys that *look like* the canaries; then every place a secret could leak is
scanned: every log file (proxy, poller, simulator), every response body and header we got,
``/metrics`` (proxy and poller), ``/info``, ``/model/info``, ``/v1/models``, the OpenAPI
document, the proxy's files on disk (metrics directory) and the project's keys in Redis.
"""
from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.integration.proxy_stack import CHAT, FLEET, Stack, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MASTER = "sk-canary-m4st3r-" + secrets.token_hex(8)
CHUTES = "cpk_canary-chut3s-" + secrets.token_hex(8)
CANARIES = {"LITELLM_MASTER_KEY": MASTER, "CHUTES_API_KEY": CHUTES}
BIG, MEDIUM, SMALL = (c["chute_id"] for c in FLEET)


@pytest.fixture(scope="module")
def stack(redis_service: Any) -> Iterator[Stack]:
    s = start_stack(redis_service.url, f"test-sec-{uuid.uuid4().hex[:8]}", time_scale=0.1,
                    proxy_env={"LITELLM_MASTER_KEY": MASTER, "CHUTES_API_KEY": CHUTES})
    try:
        s.poller.stop()  # the poller uses CHUTES_API_KEY for the utilization API: give it the canary too
        s.poller.process.env.update(CHUTES_API_KEY=CHUTES, LITELLM_MASTER_KEY=MASTER)
        s.poller.start()
        yield s
    finally:
        s.stop()


def _collect(r: httpx.Response, seen: list[str]) -> httpx.Response:
    seen.append(f"{r.status_code} {dict(r.headers)} {r.text}")
    return r


def drive(stack: Stack) -> list[str]:
    """Traffic of every kind; returns every response (status, headers, body) as text."""
    seen: list[str] = []
    auth = {"Authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        for body in (CHAT, {**CHAT, "stream": True}):
            _collect(c.post("/v1/chat/completions", json=body, headers=auth), seen)
        _collect(c.post("/v1/completions", json={"model": "chutes-models", "prompt": "hi", "max_tokens": 5}, headers=auth), seen)
        # upstream errors of every kind, on every chute (so the client gets the error itself)
        for status in (401, 400, 429, 500, 503):
            for chute in (BIG, MEDIUM, SMALL):
                stack.sim.set_chute(chute, error_rate=1.0, error_status=status)
            _collect(c.post("/v1/chat/completions", json=CHAT, headers=auth), seen)
            _collect(c.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth), seen)
        stack.sim.reset()
        for chute in (BIG, MEDIUM, SMALL):
            stack.sim.set_chute(chute, reset_rate=1.0)
        _collect(c.post("/v1/chat/completions", json=CHAT, headers=auth), seen)
        stack.sim.reset()
        for chute in (BIG, MEDIUM, SMALL):
            stack.sim.set_chute(chute, cut_after_tokens=2)
        _collect(c.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth), seen)
        stack.sim.reset()
        # bad input, unknown model, oversize
        for raw in (b"{not json", b"[]", b'{"model": "chutes-models"}', b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}'):
            _collect(c.post("/v1/chat/completions", content=raw, headers={**auth, "content-type": "application/json"}), seen)
        _collect(c.post("/v1/chat/completions", content=b"x" * (9 * 1024 * 1024), headers={**auth, "content-type": "application/json"}), seen)
        # wrong keys that look like the canaries: never echoed back, never logged
        lookalikes = [MASTER + "x", MASTER[:-1], MASTER.upper(), CHUTES, "Bearer " + MASTER, MASTER + " " + CHUTES]
        for wrong in lookalikes:
            for header in ({"Authorization": f"Bearer {wrong}"}, {"x-api-key": wrong}):
                r = _collect(c.post("/v1/chat/completions", json=CHAT, headers=header), seen)
                assert r.status_code == 401, (wrong, r.status_code)
        # every read-only route that shows state
        for path in ("/info", "/model/info", "/v1/model/info", "/v1/models", "/openapi.json", "/", "/health/readiness", "/routes"):
            _collect(c.get(path, headers=auth), seen)
        _collect(c.get("/metrics"), seen)
    seen.append(httpx.get(stack.poller.base_url + "/metrics", timeout=10).text)
    seen.append(httpx.get(stack.poller.base_url + "/healthz", timeout=10).text)
    return seen


def _canaries_in(text: str) -> list[str]:
    found = []
    for name, value in CANARIES.items():
        # the whole value, and its distinctive random tail (catches partial masking like sk-...abcd)
        if value in text or value[-16:] in text:
            found.append(name)
    return found


def test_canary_secrets_never_leak(stack: Stack) -> None:
    responses = drive(stack)
    leaks: list[str] = []
    for i, text in enumerate(responses):
        for name in _canaries_in(text):
            leaks.append(f"response #{i}: {name}: {text[:200]!r}")
    logs = {"proxy": stack.proxy.process.log_path, "poller": stack.poller.process.log_path, "simulator": stack.sim.process.log_path}
    for label, path in logs.items():
        text = Path(path).read_text(errors="replace")
        assert text, f"{label} log is empty: the scan would prove nothing"
        for name in _canaries_in(text):
            line = next(line for line in text.splitlines() if CANARIES[name][-16:] in line)
            leaks.append(f"{label} log {path}: {name}: {line[:300]}")
    for path in Path(stack.tmp).rglob("*"):  # config copy, metrics multiprocess files
        if path.is_file():
            for name in _canaries_in(path.read_bytes().decode("latin-1")):
                leaks.append(f"file {path}: {name}")
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    for key in client.scan_iter(f"{stack.prefix}*"):
        kind = client.type(key).decode()
        value = repr(client.hgetall(key)) if kind == "hash" else repr(client.get(key)) if kind == "string" else ""
        for name in _canaries_in(value):
            leaks.append(f"redis {key!r}: {name}")
    client.close()
    assert not leaks, "\n".join(leaks)
    # the scan saw real traffic: successes, upstream errors and 401s
    assert any(r.startswith("200 ") for r in responses) and any(r.startswith("401 ") for r in responses)
    assert sum(r.startswith(("429 ", "500 ", "503 ", "400 ")) for r in responses) >= 8


def test_client_cannot_redirect_upstream_calls_to_exfiltrate_the_chutes_key(stack: Stack) -> None:
    """A key holder sends ``api_base``/``base_url`` pointing at a server of theirs: the proxy must
    not call it (it would carry ``Authorization: Bearer $CHUTES_API_KEY``). Also a clear 4xx, not a 5xx."""
    import http.server
    import threading

    from chutes_lb.localstack import free_port

    captured: list[str] = []

    class Capture(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            captured.append(f"{self.path} {dict(self.headers)}")
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    statuses = []
    try:
        with httpx.Client(base_url=stack.url, timeout=60, headers={"Authorization": f"Bearer {MASTER}"}) as c:
            for field in ("api_base", "base_url"):
                r = c.post("/v1/chat/completions", json={**CHAT, field: f"http://127.0.0.1:{port}/v1"})
                statuses.append((field, r.status_code, r.text[:200]))
    finally:
        server.shutdown()
        server.server_close()
    assert not captured, f"the proxy called a client-chosen upstream: {captured}"
    assert not any(_canaries_in(text) for _, _, text in statuses)
    assert all(400 <= status < 500 for _, status, _ in statuses), statuses  # refused clearly, not a 500
