"""The poller as a real process (``python -m chutes_lb.poller``) against the simulator and a real Redis."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from chutes_lb.fleet import load_chutes
from chutes_lb.localstack import ManagedProcess, free_port, python_module, wait_http
from chutes_lb.snapshot import Snapshot, SnapshotLayout, decode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "proxy" / "litellm-config.yaml")
CHUTES = load_chutes(CONFIG)
INTERVAL = 0.5


class Poller:
    def __init__(self, tmp_path: Path, sim_url: str, redis_url: str, prefix: str, **env: str) -> None:
        self.port = free_port()
        self.redis_url, self.layout = redis_url, SnapshotLayout(prefix)
        child = {k: v for k, v in os.environ.items() if not k.startswith(("POLL", "SNAPSHOT", "CHUTES_", "REDIS", "DEMO"))}
        child.update({"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "CHUTES_API_BASE": sim_url, "DEMO_MODE": "true",
                      "POLL_INTERVAL_SECONDS": str(INTERVAL), "POLL_TIMEOUT_SECONDS": "1", "POLL_MAX_BODY_BYTES": "500000",
                      "SNAPSHOT_TTL_SECONDS": "60", "POLLER_HOST": "127.0.0.1", "POLLER_PORT": str(self.port),
                      "POLLER_HEALTHY_SECONDS": "2", "LITELLM_CONFIG_PATH": CONFIG, "LOG_LEVEL": "debug", **env})
        self.proc = ManagedProcess(f"poller-{self.port}", python_module("chutes_lb.poller"), env=child, cwd=tmp_path,
                                   log_path=tmp_path / f"poller-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Poller":
        self.proc.start()
        wait_http(self.url + "/metrics", 15, proc=self.proc)
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metric(self, name: str, **labels: str) -> float:
        _, body = self.get("/metrics")
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return s.value
        raise KeyError(f"{name}{labels} not in /metrics")

    def errors(self, kind: str) -> float:
        return self.metric("chutes_lb_poller_poll_errors_total", kind=kind)

    def snapshot(self) -> Snapshot | None:
        with redis.Redis.from_url(self.redis_url, socket_timeout=2) as r:
            return decode(r.hgetall(self.layout.snapshot))


def until(check: Callable[[], object], timeout: float, what: str, proc: Poller | None = None) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (redis.ConnectionError, KeyError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}" + (f"\n{proc.proc.tail()}" if proc else ""))
        time.sleep(0.05)


@pytest.fixture
def pollers(tmp_path):
    started: list[Poller] = []

    def start(*args, **kwargs) -> Poller:
        p = Poller(tmp_path, *args, **kwargs).start()
        started.append(p)
        return p
    yield start
    for p in started:
        p.proc.stop(5)


def sim_env():
    return {"env": {"LITELLM_CONFIG_PATH": CONFIG}}


def test_snapshot_appears_within_an_interval_and_follows_load(simulator, pollers, redis_url, redis_prefix):
    sim = simulator(refresh_seconds=0.3, filler_entries=200, **sim_env())
    p = pollers(sim.base_url, redis_url, redis_prefix)
    first = until(p.snapshot, INTERVAL + 1.0, "first snapshot", p)
    assert set(first.chutes) == {c.chute_id for c in CHUTES}
    instances = {c["chute_id"]: c["instances"] for c in sim.state()["chutes"]}
    assert {k: s.active_instance_count for k, s in first.chutes.items()} == instances
    assert first.api_timestamp and abs(first.age(time.time())) < 5
    status, body = p.get("/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")

    target = CHUTES[0]
    sim.set_chute(target.chute_id, instances=instances[target.chute_id] + 3)
    sim.refresh_utilization()
    changed = until(lambda: (s := p.snapshot()) and s.chutes[target.chute_id].active_instance_count == instances[target.chute_id] + 3 and s,
                    3 * INTERVAL + 1, "snapshot follows the new instance count", p)
    assert changed.version > first.version and changed.api_timestamp >= first.api_timestamp
    until(lambda: p.metric("chutes_lb_chute_active_instances", chute=target.name) == instances[target.chute_id] + 3, 3, "gauge", p)
    assert p.metric("chutes_lb_chute_in_snapshot", chute=target.name) == 1
    assert p.metric("chutes_lb_poller_snapshot_version") >= changed.version
    assert 0 <= p.metric("chutes_lb_poller_snapshot_age_seconds") < 3
    assert p.metric("chutes_lb_poller_entries_parsed_total") >= 8
    assert "DEMO_MODE" in p.proc.log_text()


@pytest.mark.parametrize("fault,kind", [
    ({"mode": "garbage"}, "invalid_json"),
    ({"mode": "not_list"}, "not_a_list"),
    ({"mode": "status", "status": 500}, "http_status"),
    ({"mode": "slow", "delay_seconds": 3}, "timeout"),
    ({"mode": "truncated"}, "truncated"),
    ({"mode": "huge", "size_bytes": 1_500_000}, "too_large"),
])
def test_bad_answers_keep_the_last_good_snapshot_and_are_counted(simulator, pollers, redis_url, redis_prefix, fault, kind):
    sim = simulator(refresh_seconds=0.3, filler_entries=50, **sim_env())
    p = pollers(sim.base_url, redis_url, redis_prefix)
    good = until(p.snapshot, 3, "first snapshot", p)
    assert p.errors(kind) == 0
    sim.set_utilization(**fault)
    until(lambda: p.errors(kind) >= 2, 8, f"{kind} counted twice", p)
    kept = p.snapshot()
    time.sleep(INTERVAL)
    assert p.snapshot() == kept  # nothing written while the answers are bad
    assert kept.chutes.keys() == good.chutes.keys() and kept.version >= good.version
    assert p.metric("chutes_lb_chute_in_snapshot", chute=CHUTES[0].name) == 1
    assert p.proc.poll() is None
    sim.set_utilization(mode="normal")
    until(lambda: (s := p.snapshot()) and s.version > kept.version, 8, "recovers after the fault", p)


def test_malformed_entries_are_skipped_and_counted(simulator, pollers, redis_url, redis_prefix):
    sim = simulator(refresh_seconds=0.3, **sim_env())
    sim.set_utilization(mode="bad_entries")
    p = pollers(sim.base_url, redis_url, redis_prefix)
    snap = until(p.snapshot, 3, "snapshot from the good entries", p)
    until(lambda: p.metric("chutes_lb_poller_entries_skipped_total") >= 1, 3, "skipped counted", p)
    assert 0 < len(snap.chutes) < len(CHUTES)  # the simulator breaks every third entry from the second
    missing = [c for c in CHUTES if c.chute_id not in snap.chutes]
    assert all(p.metric("chutes_lb_chute_in_snapshot", chute=c.name) == 0 for c in missing)


def test_redis_restart_is_survived(simulator, pollers, private_redis, redis_prefix):
    sim = simulator(refresh_seconds=0.3, **sim_env())
    p = pollers(sim.base_url, private_redis.url, redis_prefix, POLLER_HEALTHY_SECONDS="1.5")
    until(p.snapshot, 3, "first snapshot", p)
    wait_http(p.url + "/healthz", 3, proc=p.proc)
    private_redis.kill()
    until(lambda: p.get("/healthz")[0] == 503, 6, "/healthz 503 while Redis is down", p)
    status, body = p.get("/healthz")
    assert status == 503 and json.loads(body)["last_error"] == "redis" and "reason" in json.loads(body)
    assert p.errors("redis") >= 1 and p.proc.poll() is None
    time.sleep(1.0)
    private_redis.start()
    until(lambda: p.get("/healthz")[0] == 200, 10, "/healthz 200 after Redis is back", p)
    assert until(p.snapshot, 3, "snapshot rewritten into the fresh Redis", p).chutes


def test_two_pollers_never_roll_each_other_back(simulator, pollers, redis_url, redis_prefix):
    sim = simulator(refresh_seconds=0.2, **sim_env())
    a = pollers(sim.base_url, redis_url, redis_prefix, POLL_INTERVAL_SECONDS="0.3")
    b = pollers(sim.base_url, redis_url, redis_prefix, POLL_INTERVAL_SECONDS="0.3")
    until(a.snapshot, 3, "first snapshot", a)
    seen: list[Snapshot] = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        s = a.snapshot()
        assert s is not None and set(s.chutes) == {c.chute_id for c in CHUTES}
        if not seen or s.version != seen[-1].version:
            seen.append(s)
        time.sleep(0.02)
    assert len(seen) >= 5
    for prev, cur in zip(seen, seen[1:]):
        assert cur.version > prev.version
        assert cur.api_timestamp >= prev.api_timestamp
        if cur.api_timestamp == prev.api_timestamp:
            assert cur.fetched_at >= prev.fetched_at
    assert len({s.poller_id for s in seen}) == 2  # both wrote
    assert a.get("/healthz")[0] == 200 and b.get("/healthz")[0] == 200


def test_sigterm_exits_cleanly_and_ttl_expires_the_dead_pollers_data(simulator, pollers, redis_url, redis_prefix):
    sim = simulator(refresh_seconds=0.3, **sim_env())
    p = pollers(sim.base_url, redis_url, redis_prefix, SNAPSHOT_TTL_SECONDS="1.5", CHUTES_API_KEY="cpk_canary0123456789")
    until(p.snapshot, 3, "first snapshot", p)
    t0 = time.monotonic()
    assert p.proc.stop(5) == 0
    assert time.monotonic() - t0 < 2.5
    assert p.snapshot() is not None
    until(lambda: p.snapshot() is None, 3, "snapshot expired", p)
    assert "cpk_canary0123456789" not in p.proc.log_text()


def test_real_mode_without_key_fails_fast_naming_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CHUTES_API_KEY", "DEMO_MODE")}
    env.update({"DEMO_MODE": "false", "CHUTES_API_KEY": "", "LITELLM_CONFIG_PATH": CONFIG})
    proc = ManagedProcess("poller-nokey", python_module("chutes_lb.poller"), env=env, cwd=tmp_path, log_path=tmp_path / "p.log").start()
    try:
        until(lambda: proc.poll() is not None, 10, "exit")
    finally:
        proc.stop(5)
    assert proc.poll() == 2
    assert "CHUTES_API_KEY" in proc.log_text()


def test_a_missing_chute_and_a_concurrency_mismatch_are_logged_once(simulator, pollers, redis_url, redis_prefix, tmp_path):
    """The simulator serves three of the config's four chutes, and one of them at concurrency 4
    where the config says 8: the poller names both, once, and counts the missing one."""
    served, gone = CHUTES[:3], CHUTES[3]
    fleet = [{"chute_id": c.chute_id, "name": c.name, "concurrency": 4 if i == 0 else c.concurrency} for i, c in enumerate(served)]
    sim = simulator(fleet, refresh_seconds=0.3)
    p = pollers(sim.base_url, redis_url, redis_prefix)
    until(lambda: p.metric("chutes_lb_poller_chute_missing_polls_total", chute=gone.name) >= 3, 10, "missing polls counted", p)
    log = p.proc.log_text()
    assert log.count(f"chute {gone.name} ({gone.chute_id}) is configured but missing") == 1, log[-2000:]
    assert log.count(f"chute {served[0].name} ({served[0].chute_id}): the Chutes API says concurrency 4") == 1, log[-2000:]
    assert log.count("the Chutes API says concurrency") == 1  # the other chutes agree with the config
    assert p.metric("chutes_lb_chute_api_concurrency", chute=served[0].name) == 4
    assert p.metric("chutes_lb_chute_in_snapshot", chute=gone.name) == 0
