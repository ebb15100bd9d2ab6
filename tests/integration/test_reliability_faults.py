"""Fault matrix through the real proxy (LiteLLM, 2 workers, our hook), real poller, simulator
and a Redis of this module's own. Each test is one row of RELIABILITY.md: it sends a bounded,
steady load under one fault, classifies what every client saw (reliability_matrix), asserts
the goals and records the figures in benchmarks/out/reliability-matrix.json.

The module's Redis is *down* when the proxy starts (first row), then comes up for the rest.
Rows already proven elsewhere (Redis killed mid-run, poller stopped: test_proxy_resilience.py;
single failing chute, non-streamed: test_proxy.py) are re-measured here only where this
module adds something (streamed requests, figures)."""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from chutes_lb.devstack import metric_value
from chutes_lb.snapshot import SnapshotLayout
from tests.conftest import _new_redis
from tests.integration.proxy_stack import FLEET, MASTER_KEY, NAMES, Stack, start_stack
from tests.integration.reliability_matrix import Result, Row, send

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BIG, MEDIUM, SMALL = (c["chute_id"] for c in FLEET)
MODULE = "tests/integration/test_reliability_faults.py"
CHAT = {"model": "chutes-models", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 40}
STREAM = {**CHAT, "stream": True}
UPSTREAM_TIMEOUT = 4.0


def bodies(plain: int, streamed: int) -> list[dict[str, Any]]:
    return [CHAT] * plain + [STREAM] * streamed


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {MASTER_KEY}"}


def info(url: str) -> dict[str, Any]:
    return httpx.get(url + "/info", headers=auth(), timeout=10).json()


def wait_state(url: str, states: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = info(url)["snapshot"]["state"]
        if seen in states:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"snapshot state stayed {seen!r}, expected one of {states}")


def wait_all_workers(url: str, states: tuple[str, ...], timeout: float) -> None:
    """Both workers (answers come from either) report one of ``states``."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        i = info(url)
        seen[i["worker"]] = i["snapshot"]["state"]
        if len(seen) >= 2 and all(s in states for s in seen.values()):
            return
        if i["snapshot"]["state"] not in states:
            time.sleep(0.3)
    raise AssertionError(f"workers' snapshot states {seen}, expected {states}")


def row(fault: str, test: str, note: str = "") -> Row:
    return Row(fault, f"{MODULE}::{test}", note=note)


@pytest.fixture(scope="module")
def redis_handle() -> Iterator[Any]:
    handle = _new_redis(allow_external=False)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def stack(redis_handle: Any) -> Iterator[Stack]:
    redis_handle.kill()  # Redis is down when the proxy and the poller start
    s = start_stack(redis_handle.url, f"test-rel-{uuid.uuid4().hex[:8]}", upstream_timeout=UPSTREAM_TIMEOUT,
                    proxy_env={"SNAPSHOT_STALE_SECONDS": "6"})
    try:
        # a small body limit, so the "huge answer" row costs the simulator megabytes, not 32 MB per poll
        s.poller.stop()
        s.poller.process.env["POLL_MAX_BODY_BYTES"] = str(2 * 1024 * 1024)
        s.poller.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def live(stack: Stack, redis_handle: Any) -> Iterator[Stack]:
    """The stack with Redis up, the poller running, a fresh snapshot and no faults."""
    if not redis_up(stack.redis_url):  # the first row starts it; a -k selection may skip that row
        redis_handle.start()
    if stack.poller.process.poll() is not None:
        _clear_snapshot(stack)  # a corruption left by a failed row must not leak into the next row
        stack.poller.process.start()
    stack.sim.reset()
    wait_state(stack.url, ("ok",), 40)
    wait = _COOLDOWN["until"] - time.monotonic()
    if wait > 0:  # a row failed every chute: let LiteLLM's cooldowns (cooldown_time 10 s) expire
        time.sleep(wait)
    wait_serving(stack.url, 45)
    yield stack
    stack.sim.reset()


_COOLDOWN = {"until": 0.0}
COOLDOWN_SECONDS = 10.0  # router_settings.cooldown_time in proxy/litellm-config.yaml


def cooled_down() -> None:
    """This row made chutes fail repeatedly: the next row starts after LiteLLM's cooldowns end."""
    _COOLDOWN["until"] = time.monotonic() + COOLDOWN_SECONDS + 1.5


def redis_up(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def wait_serving(url: str, timeout: float) -> float:
    """Seconds until both workers answer 200 again: after an outage of every chute LiteLLM keeps
    all deployments in cooldown for a while ("No deployments available", 429)."""
    t0 = time.monotonic()
    streak = 0
    while time.monotonic() - t0 < timeout:
        ok = all(res.outcome == "ok" for res in send(url, MASTER_KEY, bodies(2, 0), timeout=30))
        streak = streak + 1 if ok else 0
        if streak >= 2:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"the proxy did not serve again within {timeout}s")


# ------------------------------------------------------------------ Redis down at start
def test_redis_down_at_start_proxy_serves_on_live_signals(stack: Stack, redis_handle: Any) -> None:
    r = row("Redis down when the proxy starts", "test_redis_down_at_start_proxy_serves_on_live_signals",
            "proxy becomes ready with no Redis, routes on live signals, picks the snapshot up when Redis comes")
    assert info(stack.url)["snapshot"]["state"] == "redis_unreachable"
    for _ in range(2):
        r.add(send(stack.url, MASTER_KEY, bodies(8, 4)))
    text = stack.proxy.metrics_text()
    assert metric_value(text, "chutes_lb_routing_fallbacks_total", {"reason": "redis_unreachable"}) > 0
    redis_handle.start()
    wait_all_workers(stack.url, ("ok",), 40)  # the poller writes, the workers read: back on the snapshot
    r.add(send(stack.url, MASTER_KEY, bodies(8, 4)))
    figures = r.save()
    print(r.summary())
    assert figures["ok"] == figures["sent"] == 36, r.summary()


# ------------------------------------------------------------------ Redis killed mid-run, poller stopped
def _steady(stack: Stack, row_: Row, seconds: float) -> None:
    """Steady, bounded load: rounds of 4 plain + 2 streamed for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row_.add(send(stack.url, MASTER_KEY, bodies(4, 2), timeout=60))


def test_redis_killed_and_restarted_mid_run(live: Stack, redis_handle: Any) -> None:
    """Also proven by test_proxy_resilience.py (non-streamed); here with streams and figures."""
    import threading

    r = row("Redis killed and restarted mid-run", "test_redis_killed_and_restarted_mid_run",
            "workers log one transition to redis_unreachable and route on live signals; back to ok after the restart")
    worker = threading.Thread(target=_steady, args=(live, r, 14))
    worker.start()
    time.sleep(3)
    redis_handle.kill()
    time.sleep(5)
    state_during = info(live.url)["snapshot"]["state"]
    redis_handle.start()
    worker.join(120)
    assert not worker.is_alive()
    wait_all_workers(live.url, ("ok",), 40)
    r.note += f" (state while down: {state_during})"
    figures = r.save()
    print(r.summary())
    assert figures["ok"] == figures["sent"] and figures["sent"] >= 30, r.summary()
    assert state_during in ("redis_unreachable", "stale"), state_during


def test_poller_stopped_snapshot_goes_stale(live: Stack) -> None:
    r = row("poller stopped (snapshot goes stale)", "test_poller_stopped_snapshot_goes_stale",
            "after SNAPSHOT_STALE_SECONDS (6 s here) each worker logs the transition once, counts "
            "chutes_lb_routing_fallbacks_total{reason=stale} and routes on live signals")
    live.poller.stop()
    _steady(live, r, 10)
    wait_all_workers(live.url, ("stale",), 10)
    fallbacks_before = metric_value(live.proxy.metrics_text(), "chutes_lb_routing_fallbacks_total", {"reason": "stale"})
    r.add(send(live.url, MASTER_KEY, bodies(8, 4), timeout=60))
    figures = r.save()
    print(r.summary())
    assert figures["ok"] == figures["sent"] and figures["sent"] >= 24, r.summary()
    assert metric_value(live.proxy.metrics_text(), "chutes_lb_routing_fallbacks_total", {"reason": "stale"}) > fallbacks_before


# ------------------------------------------------------------------ one chute failing, streamed + plain
SINGLE_FAULTS = {
    "429 storm": {"error_rate": 1.0, "error_status": 429},
    "503 no instances (error)": {"error_rate": 1.0, "error_status": 503},
    "500s": {"error_rate": 1.0, "error_status": 500},
    "instances 0": {"instances": 0},
    "connection resets": {"reset_rate": 1.0},
    "hang past the timeout": {"hang": True},
}


@pytest.mark.parametrize("name", list(SINGLE_FAULTS))
def test_one_failing_chute_costs_no_request(live: Stack, name: str) -> None:
    r = row(f"one chute: {name}", f"test_one_failing_chute_costs_no_request[{name}]",
            "the failure happens before the first byte, so LiteLLM retries streams too on another chute")
    live.sim.set_chute(BIG, **SINGLE_FAULTS[name])
    r.add(send(live.url, MASTER_KEY, bodies(6, 6), timeout=90))  # the other chutes have 12 slots
    r.add(send(live.url, MASTER_KEY, bodies(6, 6), timeout=90))
    figures = r.save()
    print(r.summary())
    assert figures["ok"] == figures["sent"] == 24, r.summary()
    assert all(res.chute != BIG for res in r.results), [res.chute for res in r.results]


# ------------------------------------------------------------------ every chute failing
def test_429_storm_on_every_chute_is_a_clear_429(live: Stack) -> None:
    cooled_down()
    r = row("every chute: 429 storm", "test_429_storm_on_every_chute_is_a_clear_429",
            "no healthy chute: the client gets a 429 with an OpenAI-style body after LiteLLM's retries")
    for chute in NAMES:
        live.sim.set_chute(chute, error_rate=1.0, error_status=429)
    t0 = time.monotonic()
    r.add(send(live.url, MASTER_KEY, bodies(8, 4), timeout=60))
    elapsed = time.monotonic() - t0
    figures = r.save()
    print(r.summary(), f"{elapsed:.1f}s")
    assert figures["lost"] == 0 and figures["failed_unclear"] == 0, r.summary()
    assert figures["failed_clear"] == 12, r.summary()
    assert set(figures["error_statuses"]) == {"429"}, r.summary()
    assert elapsed < 30, elapsed


def test_no_instances_anywhere_is_a_clear_error(live: Stack) -> None:
    cooled_down()
    r = row("every chute: 503 no instances", "test_no_instances_anywhere_is_a_clear_error",
            "no healthy chute: a clear error status with an OpenAI-style body, never a hang")
    for chute in NAMES:
        live.sim.set_chute(chute, instances=0)
    t0 = time.monotonic()
    r.add(send(live.url, MASTER_KEY, bodies(8, 4), timeout=60))
    elapsed = time.monotonic() - t0
    figures = r.save()
    print(r.summary(), f"{elapsed:.1f}s")
    assert figures["lost"] == 0 and figures["failed_unclear"] == 0, r.summary()
    assert figures["failed_clear"] == 12, r.summary()
    assert all(400 <= int(s) < 600 for s in figures["error_statuses"]), r.summary()
    assert elapsed < 30, elapsed
    # the chutes come back: what clients see in the next 14 s (LiteLLM's cooldown_time is 10 s)
    back = row("every chute back after an outage (first 14 s)", "test_no_instances_anywhere_is_a_clear_error",
               "LiteLLM may keep deployments in cooldown for up to cooldown_time (10 s) after the outage; a request "
               "then fails with a clear 429 'No deployments available' although the chutes are healthy")
    live.sim.reset()
    live.sim.refresh_utilization()
    t_back = time.monotonic()
    first_ok_all = None
    while time.monotonic() - t_back < 14:
        sent_at = round(time.monotonic() - t_back, 1)  # when the batch was sent, not when it ended
        results = back.add(send(live.url, MASTER_KEY, bodies(4, 0), timeout=60))
        if all(res.outcome == "ok" for res in results):
            first_ok_all = first_ok_all if first_ok_all is not None else sent_at
        else:
            first_ok_all = None
        time.sleep(1)
    back.note += f"; every request succeeded again from {first_ok_all}s after the chutes came back"
    fb = back.save()
    print(back.summary())
    cooled_down()
    assert fb["lost"] == 0 and fb["failed_unclear"] == 0, back.summary()
    assert first_ok_all is not None and first_ok_all <= COOLDOWN_SECONDS + 2, back.summary()


# ------------------------------------------------------------------ a stream cut mid-way
def test_stream_cut_mid_way_on_one_chute(live: Stack) -> None:
    """The chute closes the connection after 5 tokens. Non-streamed requests fail over (the
    cut comes before any byte reaches the client); a stream already flowing cannot move, so
    the client must see it end (an error event, or a broken stream) within the bound."""
    r_plain = row("one chute: stream cut mid-way (non-streamed requests)", "test_stream_cut_mid_way_on_one_chute")
    r_stream = row("one chute: stream cut mid-way (streams)", "test_stream_cut_mid_way_on_one_chute")
    cooled_down()
    live.sim.set_chute(BIG, cut_after_tokens=5)
    for _ in range(3):  # 4 + 4 at a time: the retries of the cut non-streamed requests fit the other 12 slots
        results = send(live.url, MASTER_KEY, bodies(4, 4), timeout=60)
        r_plain.add(results[:4])
        r_stream.add(results[4:])
    cut = [res for res in r_stream.results if res.chute == BIG]
    r_stream.note = (f"{len(cut)} of {len(r_stream.results)} streams were routed to the cut chute; "
                     "each ended (no hang): " + "; ".join(sorted({res.outcome + ': ' + res.detail for res in cut}))[:300])
    fp, fs = r_plain.save(), r_stream.save()
    print(r_plain.summary())
    print(r_stream.summary())
    assert fp["ok"] == fp["sent"] == 12, r_plain.summary()
    assert cut, "no stream reached the cut chute: the row proves nothing"
    assert fs["lost"] == 0, r_stream.summary()  # never a hang
    assert all(res.outcome == "ok" for res in r_stream.results if res.chute != BIG), r_stream.summary()
    # what a client sees on the cut chute: recorded above; the goal is a clear error event
    assert all(res.outcome in ("failed_clear", "failed_unclear") for res in cut), [(res.outcome, res.detail) for res in cut]
    assert all(res.seconds < 30 for res in r_stream.results)


def test_stream_cut_ends_with_a_clear_error_event(live: Stack) -> None:
    """Goal: a stream cut mid-way ends with an error event the client can read, never silently."""
    cooled_down()
    r = row("every chute: stream cut mid-way", "test_stream_cut_ends_with_a_clear_error_event")
    for chute in NAMES:
        live.sim.set_chute(chute, cut_after_tokens=5)
    r.add(send(live.url, MASTER_KEY, bodies(0, 8), timeout=60))
    figures = r.save()
    print(r.summary())
    assert figures["lost"] == 0, r.summary()
    assert figures["failed_clear"] == 8, r.summary()


# ------------------------------------------------------------------ a chute removed from the fleet
def test_chute_removed_for_good(live: Stack) -> None:
    cooled_down()
    r = row("one chute removed (instances 0 for good)", "test_chute_removed_for_good",
            "the next snapshot shows 0 active instances: capacity 0, the chute is no longer picked")
    live.sim.set_chute(SMALL, instances=0)
    r.add(send(live.url, MASTER_KEY, bodies(6, 4), timeout=60))  # before the snapshot knows: failover
    live.sim.refresh_utilization()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        dep = {d["chute_id"]: d for d in info(live.url)["deployments"]}[SMALL]
        if dep["snapshot"] and dep["snapshot"]["active_instance_count"] == 0:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the snapshot never showed the chute removed")
    time.sleep(1.5)  # the other worker too
    after: list[Result] = []
    for _ in range(3):
        after += r.add(send(live.url, MASTER_KEY, bodies(6, 4), timeout=60))
    figures = r.save()
    print(r.summary())
    assert figures["ok"] == figures["sent"] == 40, r.summary()
    assert all(res.chute != SMALL for res in r.results)
    failovers_before = metric_value(live.proxy.metrics_text(), "chutes_lb_failovers_total", {"chute": "test/small"})
    send(live.url, MASTER_KEY, bodies(8, 0))
    failovers_after = metric_value(live.proxy.metrics_text(), "chutes_lb_failovers_total", {"chute": "test/small"})
    assert failovers_after == failovers_before  # no longer tried at all


# ------------------------------------------------------------------ the utilization API misbehaving
UTIL_FAULTS = {
    "garbage": {"mode": "garbage"},
    "500s": {"mode": "status", "status": 500},
    "slow (past the poll timeout)": {"mode": "slow", "delay_seconds": 5},
    "huge answer": {"mode": "huge", "size_bytes": 4 * 1024 * 1024},
    "truncated JSON": {"mode": "truncated"},
    "malformed entries": {"mode": "bad_entries"},
}


@pytest.mark.parametrize("name", list(UTIL_FAULTS))
def test_utilization_api_fault_costs_no_request(live: Stack, name: str) -> None:
    r = row(f"utilization API: {name}", f"test_utilization_api_fault_costs_no_request[{name}]",
            "the poller keeps the last good snapshot (counted in chutes_lb_poller_poll_errors_total); once it is "
            "older than SNAPSHOT_STALE_SECONDS the proxy routes on live signals")
    errors_before = metric_value(httpx.get(live.poller.base_url + "/metrics", timeout=10).text, "chutes_lb_poller_poll_errors_total")
    skipped_before = metric_value(httpx.get(live.poller.base_url + "/metrics", timeout=10).text, "chutes_lb_poller_entries_skipped_total")
    live.sim.set_utilization(**UTIL_FAULTS[name])
    live.sim.refresh_utilization()
    for _ in range(4):  # ~8+ s: spans the 6 s staleness bound
        r.add(send(live.url, MASTER_KEY, bodies(6, 2), timeout=60))
        time.sleep(1)
    text = httpx.get(live.poller.base_url + "/metrics", timeout=10).text
    figures = r.save()
    print(r.summary())
    assert figures["ok"] == figures["sent"] == 32, r.summary()
    if name == "malformed entries":
        assert metric_value(text, "chutes_lb_poller_entries_skipped_total") > skipped_before
    else:
        assert metric_value(text, "chutes_lb_poller_poll_errors_total") > errors_before
    assert live.poller.process.poll() is None  # the poller survived
    live.sim.set_utilization(mode="normal")


# ------------------------------------------------------------------ a corrupt snapshot in Redis
CORRUPTIONS = {
    "wrong schema version": {"schema": "2"},
    "data not JSON": {"data": "{not json"},
    "data not an object": {"data": "[1, 2]"},
    "version not a number": {"version": "abc"},
    "entry missing fields": {"data": '{"x": {"chute_id": "x"}}'},
}


def _write_raw(stack: Stack, fields: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    layout = SnapshotLayout(stack.prefix)
    base = {"schema": "1", "version": "999", "fetched_at": repr(time.time()), "api_timestamp": "", "api_order": "",
            "poller_id": "test", "data": "{}"}
    client.delete(layout.snapshot)
    client.hset(layout.snapshot, mapping={**base, **fields})
    client.publish(layout.announce, fields.get("version", "999"))
    client.close()


def _clear_snapshot(stack: Stack) -> None:
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    client.delete(SnapshotLayout(stack.prefix).snapshot)
    client.close()


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_snapshot_in_redis_is_logged_counted_and_routing_continues(live: Stack, name: str) -> None:
    r = row(f"snapshot in Redis: {name}", f"test_corrupt_snapshot_in_redis_is_logged_counted_and_routing_continues[{name}]",
            "each worker logs 'routing snapshot unreadable', /info says invalid, "
            "chutes_lb_routing_fallbacks_total{reason=invalid} counts, routing runs on live signals")
    live.poller.stop()  # nothing overwrites the corruption
    log_before = live.proxy.process.log_text().count("routing snapshot unreadable")
    fallbacks_before = metric_value(live.proxy.metrics_text(), "chutes_lb_routing_fallbacks_total", {"reason": "invalid"})
    _write_raw(live, CORRUPTIONS[name])
    wait_all_workers(live.url, ("invalid",), 15)
    r.add(send(live.url, MASTER_KEY, bodies(8, 4), timeout=60))
    figures = r.save()
    print(r.summary())
    assert figures["ok"] == figures["sent"] == 12, r.summary()
    assert live.proxy.process.log_text().count("routing snapshot unreadable") > log_before
    assert metric_value(live.proxy.metrics_text(), "chutes_lb_routing_fallbacks_total", {"reason": "invalid"}) > fallbacks_before
    live.poller.process.start()  # the fixture of the next test waits for a fresh, valid snapshot


def test_poller_recovers_from_a_corrupt_snapshot_left_in_redis(live: Stack) -> None:
    """A poller (re)started over a corrupt hash must replace it, not fail every write until the TTL."""
    live.poller.stop()
    _write_raw(live, {"fetched_at": "garbage", "data": "{not json"})
    wait_all_workers(live.url, ("invalid",), 15)
    live.poller.process.start()
    try:
        wait_state(live.url, ("ok",), 20)
    finally:
        live.poller.stop()  # the next test's fixture clears the key and restarts the poller


def test_negative_and_huge_utilization_in_the_snapshot(live: Stack) -> None:
    """Values the poller would never write: the hook refuses the snapshot and keeps serving."""
    import json

    r = row("snapshot in Redis: negative / out-of-range utilization", "test_negative_and_huge_utilization_in_the_snapshot",
            "the hook validates entries like the poller: the snapshot is refused as invalid (logged, counted), routing continues on live signals")
    live.poller.stop()
    stats = {"name": "x", "utilization_current": -5.0, "utilization_5m": -5.0, "utilization_15m": 0.0, "utilization_1h": 0.0,
             "rate_limit_ratio_5m": -1.0, "rate_limit_ratio_15m": 0.0, "rate_limit_ratio_1h": 0.0, "total_requests_5m": 0.0,
             "rate_limited_requests_5m": 0.0, "active_instance_count": -3, "total_instance_count": 1, "instance_count": 1,
             "target_count": None, "action_taken": "", "scalable": True, "timestamp": ""}
    data = {BIG: {**stats, "chute_id": BIG}, MEDIUM: {**stats, "chute_id": MEDIUM, "utilization_current": 1e300,
                                                     "active_instance_count": 10**9}, SMALL: {**stats, "chute_id": SMALL}}
    _write_raw(live, {"data": json.dumps(data), "version": "1001"})
    time.sleep(2.5)
    r.add(send(live.url, MASTER_KEY, bodies(8, 4), timeout=60))
    r.add(send(live.url, MASTER_KEY, bodies(8, 4), timeout=60))
    figures = r.save()
    print(r.summary(), info(live.url)["snapshot"])
    assert figures["ok"] == figures["sent"] == 24, r.summary()
    live.poller.process.start()


def test_negative_utilization_in_the_snapshot_is_flagged(live: Stack) -> None:
    import json

    live.poller.stop()
    stats = {"name": "x", "utilization_current": -5.0, "utilization_5m": 0.0, "utilization_15m": 0.0, "utilization_1h": 0.0,
             "rate_limit_ratio_5m": 0.0, "rate_limit_ratio_15m": 0.0, "rate_limit_ratio_1h": 0.0, "total_requests_5m": 0.0,
             "rate_limited_requests_5m": 0.0, "active_instance_count": -3, "total_instance_count": 1, "instance_count": 1,
             "target_count": None, "action_taken": "", "scalable": True, "timestamp": ""}
    _write_raw(live, {"data": json.dumps({BIG: {**stats, "chute_id": BIG}}), "version": "1002"})
    try:
        wait_all_workers(live.url, ("invalid",), 8)
    finally:
        live.poller.process.start()
