"""The proxy keeps serving when its inputs fail: Redis killed mid-run, the poller stopped."""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from chutes_lb.devstack import metric_value
from tests.integration.proxy_stack import MASTER_KEY, burst, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _info(url: str) -> dict:
    return httpx.get(url + "/info", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10).json()


def _wait_state(url: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = _info(url)["snapshot"]["state"]
        if seen == state:
            return
        time.sleep(0.3)
    raise AssertionError(f"snapshot state stayed {seen!r}, expected {state!r}")


def test_redis_killed_mid_run_and_poller_stopped_cost_no_request(private_redis) -> None:
    stack = start_stack(private_redis.url, f"test-res-{uuid.uuid4().hex[:8]}", proxy_env={"SNAPSHOT_STALE_SECONDS": "3"})
    try:
        _wait_state(stack.url, "ok", 30)
        results: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def load() -> None:  # steady load until told to stop (and at least 5 rounds), at most 60 rounds of 4
            for _ in range(60):
                if stop.is_set() and len(results) >= 20:
                    return
                results.extend(burst(stack.url, 4, timeout=60))

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(2)
        private_redis.kill()  # Redis gone mid-run
        time.sleep(4)
        state_during = _info(stack.url)["snapshot"]["state"]
        private_redis.start()
        time.sleep(3)
        stop.set()
        worker.join(300)
        assert not worker.is_alive()
        assert len(results) >= 20
        failed = [r for r in results if r[0] != 200]
        assert not failed, failed
        # while Redis was gone the workers said so (or still held a snapshot younger than 3 s)
        assert state_during in ("redis_unreachable", "stale"), state_during

        # the poller stops: the snapshot ages past SNAPSHOT_STALE_SECONDS, routing falls back
        _wait_state(stack.url, "ok", 30)
        stack.poller.stop()
        time.sleep(4.5)
        after = burst(stack.url, 8)
        assert all(status == 200 for status, _ in after), after
        text = stack.proxy.metrics_text()
        assert metric_value(text, "chutes_lb_routing_fallbacks_total", {"reason": "stale"}) > 0
        assert metric_value(text, "chutes_lb_routing_fallbacks_total", {"reason": "redis_unreachable"}) >= 0
        log = stack.proxy.process.log_text()
        transitions = [line for line in log.splitlines() if "routing snapshot stale" in line]
        assert 1 <= len(transitions) <= 4, transitions  # once per transition per worker, not per request
        assert MASTER_KEY not in log
    finally:
        stack.stop()
