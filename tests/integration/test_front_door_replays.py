"""haproxy/haproxy.cfg's retry and queue settings, run: the real file with only its binds and its
DNS-discovered servers replaced by stub replicas on loopback.

- a replica that closes the connection without a byte of answer (killed): the request is replayed
  on another replica and the client gets its 200; the dead replica did receive it (the cost: the
  proxy there may already have called a chute);
- a replica that sent part of an answer and died: never replayed (the client saw bytes);
- every replica at its maxconn (shrunk to 1 here to fill it): the request waits `timeout queue`,
  then gets HAProxy's 503 in the API's error shape with Retry-After.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest

from chutes_lb.localstack import ManagedProcess, free_port, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (apt-get install haproxy)")]
ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"


class StubReplica:
    """A loopback HTTP server: health checks 200; chat requests per ``mode``: ``ok`` (200 JSON),
    ``reset`` (read the request, then RST: no byte back), ``partial`` (status line and headers of
    a stream, one event, then RST), ``slow`` (200 after ``delay`` s)."""

    def __init__(self, mode: str, delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        self.chat_requests = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(m.group(1)) if (m := re.search(rb"(?im)^content-length:\s*(\d+)", head)) else 0
            while len(rest) < length:
                rest += conn.recv(65536)
            if b" /health/" not in head.split(b"\r\n", 1)[0] and head.startswith(b"POST"):
                self.chat_requests += 1
                if self.mode in ("reset", "partial"):
                    if self.mode == "partial":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"e\r\ndata: {\"a\":1}\n\n\r\n")
                        time.sleep(0.2)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, as a killed process
                    return
                time.sleep(self.delay)
            body = json.dumps({"id": "x", "object": "chat.completion", "served_by": self.port}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)

    def close(self) -> None:
        self.sock.close()


def front_door(tmp: Path, replicas: list[StubReplica], maxconn: int | None = None) -> tuple[ManagedProcess, str, str]:
    """HAProxy on haproxy/haproxy.cfg with loopback binds and these static servers (the rest as is):
    the process, the public URL and the internal one (/metrics)."""
    cfg = (ROOT / "haproxy" / "haproxy.cfg").read_text()
    port, internal = free_port(), free_port()
    cfg = cfg.replace("    bind :4000\n", f"    bind 127.0.0.1:{port}\n").replace("    bind :8404\n", f"    bind 127.0.0.1:{internal}\n")
    template = re.search(r"^\s*server-template proxy .*$", cfg, re.M)
    assert template
    servers = "\n".join(f"    server proxy{i} 127.0.0.1:{r.port} check" for i, r in enumerate(replicas, 1))
    cfg = cfg.replace(template.group(0), servers)
    cfg = re.sub(r"^resolvers docker\n(?:    .*\n)+", "", cfg, flags=re.M)
    if maxconn is not None:
        cfg, n = re.subn(r"(default-server .*\bmaxconn )\d+", rf"\g<1>{maxconn}", cfg)
        assert n == 1
    path = tmp / "haproxy.cfg"
    path.write_text(cfg)
    proc = ManagedProcess("haproxy", [shutil.which("haproxy") or "haproxy", "-f", str(path), "-db"], log_path=tmp / "haproxy.log").start()
    wait_port(port, 10, proc=proc)
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal}"


def _chat(client: httpx.Client) -> httpx.Response:
    return client.post(CHAT, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                       headers={"Connection": "close"})


def test_a_request_that_got_no_byte_is_replayed_on_another_replica(tmp_path: Path) -> None:
    dead, alive = StubReplica("reset"), StubReplica("ok")
    proc, url, internal = front_door(tmp_path, [dead, alive])
    try:
        with httpx.Client(base_url=url, timeout=20) as client:
            answers = [_chat(client) for _ in range(12)]
        assert [r.status_code for r in answers] == [200] * 12, [r.text for r in answers]
        assert all(r.json()["served_by"] == alive.port for r in answers)
        print(f"front door, replica resets before answering: 12 sent, 12 ok, {dead.chat_requests} replayed")
        assert dead.chat_requests >= 1  # it got them: what a replay can cost (a second upstream call)
        assert alive.chat_requests == 12
        log = proc.log_text()
        assert re.search(r"/\+1 ", log), log[-2000:]  # the httplog's retries field: "+1" = retried once, on another server
        metrics = httpx.get(internal + "/metrics", timeout=10).text  # counted where Prometheus scrapes it
        retried = re.search(r'^haproxy_backend_retry_warnings_total\{proxy="proxies"\} (\d+)', metrics, re.M)
        assert retried and int(retried.group(1)) == dead.chat_requests, metrics[:500]
    finally:
        proc.stop()
        dead.close(), alive.close()


def test_an_answer_already_started_is_never_replayed(tmp_path: Path) -> None:
    broken = StubReplica("partial")
    proc, url, _ = front_door(tmp_path, [broken, StubReplica("ok")])
    try:
        seen = 0
        with httpx.Client(base_url=url, timeout=20) as client:
            for _ in range(8):
                try:
                    r = _chat(client)
                    if "served_by" not in r.text:
                        seen += 1
                except httpx.HTTPError:
                    seen += 1  # the stream broke after its first bytes: the client knows
        print(f"front door, answer started then reset: 8 sent, {8 - seen} ok, {seen} cut (none replayed)")
        assert broken.chat_requests >= 1 and seen == broken.chat_requests  # each reached the client, none replayed
    finally:
        proc.stop()


def test_a_full_front_door_answers_503_with_retry_after_after_its_queue_timeout(tmp_path: Path) -> None:
    busy = StubReplica("slow", delay=12.0)
    proc, url, _ = front_door(tmp_path, [busy], maxconn=1)
    try:
        def hold() -> None:
            try:
                httpx.post(url + CHAT, json={}, timeout=30)
            except httpx.HTTPError:
                pass  # cut when the test stops HAProxy

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        deadline = time.monotonic() + 5
        while busy.chat_requests < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert busy.chat_requests == 1  # the one slot is taken
        t0 = time.monotonic()
        r = httpx.post(url + CHAT, json={}, timeout=30)
        waited = time.monotonic() - t0
        queue = int(re.search(r"timeout queue\s+(\d+)s", (ROOT / "haproxy" / "haproxy.cfg").read_text()).group(1))
        assert r.status_code == 503 and r.headers.get("retry-after", "").isdigit(), (r.status_code, r.headers)
        assert r.json()["error"]["code"] == "service_unavailable"
        print(f"front door full: 503 with Retry-After {r.headers.get('retry-after')} after {waited:.2f} s")
        assert queue - 0.5 <= waited <= queue + 3, waited
        assert busy.chat_requests == 1  # it waited in HAProxy, the replica never got it
    finally:
        proc.stop()
