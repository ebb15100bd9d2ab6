"""Rolling restart of the proxy replicas through the front door, under load: each replica is
restarted with ``docker restart`` (SIGTERM, graceful drain, start) one at a time, waiting for it
to be healthy and back in HAProxy before the next. Goal: zero failed, zero lost requests, plain
and streamed. Shares the session stack of tests/e2e/conftest.py and leaves it as it found it
(2 healthy replicas)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.compose_stack import Stack, _run, say, wait_for
from tests.integration.reliability_matrix import Result, Row, one_request

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

BODY = {"model": "chutes-models", "messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 24}


def _health(container: str) -> str:
    out = _run(["docker", "inspect", container]).stdout
    state = json.loads(out)[0]["State"]
    return (state.get("Health") or {}).get("Status", state.get("Status", "?"))


def _lb_up_servers(stack: Stack) -> int:
    """Proxy servers HAProxy has UP (its Prometheus exporter, through Prometheus)."""
    rows = stack.query('max(haproxy_backend_active_servers{proxy="proxies"})')
    return int(float(rows[0]["value"][1])) if rows else -1


class Load:
    """Closed-loop clients through the front door; every 4th request streamed."""

    def __init__(self, stack: Stack, workers: int = 4) -> None:
        self.stack, self.workers = stack, workers
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.stack.api_base, timeout=120,
                                     headers={"Authorization": f"Bearer {self.stack.master_key}"}) as client:
            async def worker(k: int) -> None:
                i = 0
                while not self._stop.is_set():
                    i += 1
                    self.results.append(await one_request(client, {**BODY, "stream": (i + k) % 4 == 0}))

            await asyncio.gather(*(worker(k) for k in range(self.workers)))

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(180)


def test_rolling_restart_of_the_proxies_under_load(stack: Stack) -> None:
    proxies = [r["Name"] for r in stack.containers("proxy") if r["State"] == "running"]
    assert len(proxies) >= 2, proxies
    row = Row("rolling restart of the proxy replicas (front door)", "tests/e2e/test_rolling_restart.py::test_rolling_restart_of_the_proxies_under_load")
    timings = []
    with Load(stack) as load:
        time.sleep(5)
        for name in proxies:
            t0 = time.monotonic()
            say(f"rolling restart: docker restart {name} ({len(load.results)} requests so far)")
            done = _run(["docker", "restart", "--time", "30", name], timeout=120)
            assert done.returncode == 0, done.stderr
            wait_for(lambda: _health(name) == "healthy", 240, interval=2, what=f"{name} healthy again")
            # HAProxy checks every few seconds: wait until it routes to every replica again
            wait_for(lambda: _lb_up_servers(stack) >= len(proxies), 90, interval=2, what="HAProxy sees every replica UP")
            timings.append(round(time.monotonic() - t0, 1))
        time.sleep(5)
    row.add(load.results)
    row.note = f"{len(proxies)} replicas restarted one at a time; seconds per replica until healthy and UP in HAProxy: {timings}"
    figures = row.save()
    say(row.summary())
    assert figures["sent"] >= 20, figures
    assert figures["lost"] == 0 and figures["failed_unclear"] == 0 and figures["failed_clear"] == 0, row.summary()
    assert len([r for r in stack.containers("proxy") if r["State"] == "running"]) == len(proxies)


def test_replica_killed_under_load_figures(stack: Stack) -> None:
    """docker kill (SIGKILL) of one replica under load, then docker start: the matrix row with
    figures (tests/e2e/test_stack.py proves the same goal for non-streamed requests)."""
    proxies = [r["Name"] for r in stack.containers("proxy") if r["State"] == "running"]
    assert len(proxies) >= 2, proxies
    row = Row("proxy replica killed (front door)", "tests/e2e/test_rolling_restart.py::test_replica_killed_under_load_figures")
    victim = proxies[0]
    with Load(stack) as load:
        time.sleep(5)
        say(f"docker kill {victim} ({len(load.results)} requests so far)")
        assert _run(["docker", "kill", victim], timeout=60).returncode == 0
        time.sleep(10)
        assert _run(["docker", "start", victim], timeout=120).returncode == 0
        wait_for(lambda: _health(victim) == "healthy", 240, interval=2, what=f"{victim} healthy again")
        wait_for(lambda: _lb_up_servers(stack) >= len(proxies), 90, interval=2, what="HAProxy sees every replica UP")
        time.sleep(3)
    row.add(load.results)
    streams_cut = [r for r in load.results if r.outcome != "ok" and r.status == 200]
    plain_failed = [r for r in load.results if r.outcome not in ("ok", "lost") and r.status != 200]
    # A request HAProxy had sent on a kept-alive client connection: HAProxy closes that connection
    # without an answer (its abort_keep_alive path, RFC 9112 9.3.1: the client may retry; the
    # openai and anthropic SDKs do by default). The first request of a connection gets the 502.
    closed = [r for r in load.results if r.outcome == "lost"]
    row.note = ("HAProxy replays on another replica a request that got no byte back (retry-on conn-failure "
                "empty-response; it may already have reached a chute: a possible second, billed, upstream call): "
                f"left unanswered anyway, a clear 502 ({len(plain_failed)} here), or, on a kept-alive connection, the "
                f"connection closed without an answer ({len(closed)} here); a stream already flowing there breaks "
                f"({len(streams_cut)} here), it is never replayed")
    try:  # how often HAProxy replayed (Prometheus scrapes its exporter)
        result = stack.query('sum(haproxy_backend_retry_warnings_total{proxy="proxies"})')
        row.note += f"; HAProxy replays counted (since the stack started): {result[0]['value'][1] if result else 0}"
    except Exception as exc:  # the figure is a note; the assertions below are the test
        say(f"replay count not read: {exc!r}")
    figures = row.save()
    say(row.summary())
    assert len(plain_failed) + len(streams_cut) + len(closed) <= load.workers, row.summary()  # only what was in flight
    # issue 23: nothing lost among the requests that had received no byte (HAProxy replays them)
    assert plain_failed == [] and closed == [], row.summary()
