"""The routing core without LiteLLM or Redis: a fake clock, a seeded random source, in-memory
metrics and :class:`MemorySnapshotStore` drive the same objects the proxy's workers run."""
from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
from collections import Counter

import pytest

from chutes_lb.fleet import ChuteRef
from chutes_lb.proxy.info import render
from chutes_lb.routing.attempts import UpstreamCall, Usage
from chutes_lb.routing.core import RoutingConfig, RoutingCore
from chutes_lb.routing.follower import SnapshotFollower
from chutes_lb.routing.metrics import RecordingMetrics
from chutes_lb.routing.sharing import InflightSharing
from chutes_lb.snapshot import SCHEMA_VERSION, ChuteStats, MemorySnapshotStore, Snapshot

pytestmark = pytest.mark.unit

BIG, SMALL, OTHER = "aaaaaaaa-0000-5000-8000-000000000001", "bbbbbbbb-0000-5000-8000-000000000002", "cccccccc-0000-5000-8000-000000000003"
FLEET = [ChuteRef(BIG, "test/big", "chutes-models", 8), ChuteRef(SMALL, "test/small", "chutes-models", 4),
         ChuteRef(OTHER, "test/other", "chutes-models", 4)]


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_core(clock: Clock, strategy: str = "headroom", stale: float = 120.0, worker: str = "w1") -> tuple[RoutingCore, RecordingMetrics]:
    metrics = RecordingMetrics()
    core = RoutingCore(FLEET, RoutingConfig(strategy=strategy, stale_seconds=stale), metrics, clock=clock,
                       rng=random.Random(7), worker_id=worker)
    return core, metrics


def stats(chute_id: str, name: str, util: float, instances: int = 2) -> ChuteStats:
    return ChuteStats(chute_id, name, util, util, util, util, 0.0, 0.0, 0.0, 10.0, 0.0, instances, instances, instances,
                      instances, "no_action", True, "2026-12-01T00:00:00")


def snapshot(version: int, fetched_at: float, utils: dict[str, float]) -> Snapshot:
    return Snapshot(SCHEMA_VERSION, version, fetched_at, "2026-12-01T00:00:00",
                    {ref.chute_id: stats(ref.chute_id, ref.name, utils.get(ref.chute_id, 0.0)) for ref in FLEET})


IDS = tuple(ref.chute_id for ref in FLEET)


def test_a_429_is_retried_on_another_chute_and_every_attempt_is_closed_once() -> None:
    clock = Clock()
    core, metrics = make_core(clock)
    core.adopt(snapshot(1, clock.t, {}))
    call = UpstreamCall(core, "req-1")
    first = call.open(IDS)
    clock.t += 0.02
    call.close("rate_limited")  # the attempt answered 429...
    second = call.open(IDS)  # ...and the request retries
    assert second != first
    assert metrics.total("failover", core.label(first)) == 1
    assert core.penalty_active(first)  # the chute that answered 429 is held as full for now
    picks = Counter(core.pick(IDS, call_id=f"other-{i}") for i in range(200))
    assert picks[first] == 0, picks
    clock.t += 0.1
    call.close("success", ttft=0.05, usage=Usage(40.0, None))
    call.close("success")  # a second report of the same attempt is ignored
    core.close_attempt("req-1", second, "success")  # and so is a second close through the core
    assert metrics.total("upstream") == 2 and metrics.inflight[core.label(second)] == sum(
        1 for c in picks.elements() if c == second)
    # a request whose failed attempt was never reported: the retry's open closes it
    lost_call = UpstreamCall(core, "req-2")
    lost = lost_call.open(IDS)
    lost_call.open(IDS, unreported="timeout")
    assert metrics.total("upstream", core.label(lost), "timeout") == 1
    lost_call.close("error")
    assert not core.ledger.has("req-2")


def test_every_candidate_excluded_still_routes() -> None:
    clock = Clock()
    core, metrics = make_core(clock)
    core.adopt(snapshot(1, clock.t, {}))
    choice = core.pick(IDS, failed=IDS, last_failed=BIG, call_id="r")
    assert choice in IDS  # a retry when every chute failed goes somewhere rather than nowhere
    only = core.pick((SMALL,), failed=(SMALL,), call_id="s")
    assert only == SMALL and metrics.total("decision", "test/small", "only_candidate") == 1


def test_snapshot_adoption_staleness_and_fallbacks_are_counted() -> None:
    clock = Clock()
    core, metrics = make_core(clock, stale=60.0)
    assert core.snapshot_state == "missing" and not core.snapshot_checked
    core.pick(IDS, call_id="a")
    assert metrics.total("fallback", "missing") == 1
    core.adopt(snapshot(1, clock.t, {BIG: 1.0, SMALL: 0.0, OTHER: 1.0}))
    assert core.snapshot_state == "ok" and core.snapshot_checked and metrics.snapshot_state == (0.0, True)
    # a full big chute and a full other one by the snapshot: the small one takes most requests
    # (the rest: every sample of a pick was full, so the proportional fallback)
    picks = Counter(core.pick(IDS, call_id=f"r{i}") for i in range(6))
    assert picks[SMALL] > picks[BIG] + picks[OTHER], picks
    clock.t += 61
    core.tick()
    assert core.snapshot_state == "stale" and core.usable_snapshot(clock.t) is None
    before = metrics.total("fallback", "stale")
    core.pick(IDS, call_id="late")
    assert metrics.total("fallback", "stale") == before + 1
    core.adopt(snapshot(2, clock.t, {}))
    assert core.snapshot_state == "ok" and core.live.snapshot_version == 2
    core.snapshot_invalid("corrupt snapshot: data is not an object")
    assert core.snapshot_state == "invalid" and core.snapshot is None


def test_follower_over_a_memory_store_adopts_announced_versions() -> None:
    async def scenario() -> None:
        clock = Clock()
        core, _ = make_core(clock)
        store = MemorySnapshotStore(ttl_seconds=600, clock=clock)
        follower = SnapshotFollower(core, store, refresh_seconds=30.0)
        task = asyncio.create_task(follower.run())
        await asyncio.sleep(0.05)
        assert core.snapshot_state == "missing" and core.snapshot_checked
        await store.write(snapshot(0, clock.t, {BIG: 0.5}))
        for _ in range(50):  # the announcement wakes the follower long before refresh_seconds
            await asyncio.sleep(0.02)
            if core.snapshot is not None:
                break
        assert core.snapshot is not None and core.snapshot.version == 1 and core.snapshot_state == "ok"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_inflight_exchange_uses_fresh_remote_counts_and_forgets_stale_ones() -> None:
    async def scenario() -> None:
        clock = Clock()
        store = MemorySnapshotStore(ttl_seconds=600, clock=clock)
        mine, _ = make_core(clock, worker="w1")
        other, _ = make_core(clock, worker="w2")
        for core in (mine, other):
            core.adopt(snapshot(1, clock.t, {}))
        for i in range(6):  # the other worker has 6 requests open on the big chute
            other.pick((BIG,), call_id=f"o{i}")
        await InflightSharing(other, store, interval=1.0).once()
        await InflightSharing(mine, store, interval=1.0).once()
        assert mine.replicas == 2 and mine.remote[BIG].in_flight == 6 and mine.remote[BIG].new_inflight == 6
        fresh = mine.estimates[BIG].free
        assert fresh < 16 - 2.5, mine.estimates  # 16 slots; half of the 6 shared counts, blended with R x own
        clock.t += 4.0  # the other worker's export is now older than 3 intervals: unknown, not zero
        await InflightSharing(mine, store, interval=1.0).once()
        assert mine.replicas == 1 and mine.estimates[BIG].free == 16.0

    asyncio.run(scenario())


def test_info_is_fresh_at_log_level_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chutes_lb.routing")
    clock = Clock()
    core, _ = make_core(clock)
    core.adopt(snapshot(1, clock.t, {BIG: 0.25}))
    for i in range(3):
        core.pick((BIG,), call_id=f"r{i}")
    core.refresh_estimates()
    info = render(core)
    big = next(d for d in info["deployments"] if d["chute_id"] == BIG)
    assert big["estimated_headroom_slots"] == pytest.approx(16 - 4 - 3)
    assert big["in_flight_this_worker"] == 3 and big["recent_429_penalty"] is False
    assert info["snapshot"]["state"] == "ok" and info["estimated_at_age_seconds"] == 0.0
    assert any("est. headroom" in r.getMessage() for r in caplog.records)  # the decision line at INFO


def test_one_chute_in_two_groups_is_one_chute() -> None:
    clock = Clock()
    core, _ = make_core(clock)
    assert core.chute_id(BIG) == BIG and core.label(BIG) == "test/big" and core.label("nope") == "unconfigured"


def test_routing_imports_nothing_from_proxy() -> None:
    code = ("import sys, chutes_lb.routing, chutes_lb.routing.core, chutes_lb.routing.follower, chutes_lb.routing.sharing, "
            "chutes_lb.routing.metrics, chutes_lb.routing.ledger; "
            "bad = sorted(m for m in sys.modules if m.startswith('chutes_lb.proxy') or m.startswith('litellm') or m.startswith('redis')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
