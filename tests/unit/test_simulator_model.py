"""Capacity and utilization arithmetic of the simulator, on a fake clock (no sleeping)."""
import math
import random

import pytest

from chutes_lb.simulator.faults import ChuteControls
from chutes_lb.simulator.fleet_config import ChuteSpec
from chutes_lb.simulator.model import Dist, LoadRing, decode_rate, load_factor, ttft_seconds
from chutes_lb.simulator.service import ChuteRuntime

pytestmark = pytest.mark.unit
T0 = 1000.0


def test_constant_load_gives_exact_utilization_in_every_window():
    ring = LoadRing(T0, capacity=8)
    ring.set_load(T0, 2, 8)
    for secs in (10, 300, 900, 3600):
        assert ring.window(T0 + 100, secs).utilization == pytest.approx(0.25)


def test_utilization_is_time_weighted():
    ring = LoadRing(T0, capacity=8)
    ring.set_load(T0, 4, 8)  # 4/8 for 30 s
    ring.set_load(T0 + 30, 0, 8)  # then idle for 30 s
    assert ring.window(T0 + 60, 300).utilization == pytest.approx(0.25)
    assert ring.window(T0 + 60, 10).utilization == pytest.approx(0.0)
    # fractional seconds are split across buckets exactly
    ring2 = LoadRing(T0 + 0.5, capacity=2)
    ring2.set_load(T0 + 0.5, 2, 2)
    ring2.set_load(T0 + 1.25, 0, 2)
    w = ring2.window(T0 + 2.5, 300)
    assert w.utilization == pytest.approx((2 * 0.75) / (2 * 2.0))


def test_capacity_change_is_weighted_too():
    ring = LoadRing(T0, capacity=4)
    ring.set_load(T0, 4, 4)  # full, 10 s
    ring.set_load(T0 + 10, 4, 8)  # same load, doubled capacity, 10 s
    assert ring.window(T0 + 20, 300).utilization == pytest.approx(80 / 120)


def test_windows_only_count_their_seconds():
    ring = LoadRing(T0, capacity=1)
    ring.count(T0, requests=5, completed=4)
    ring.count(T0 + 400, requests=3, completed=3, rate_limited=0)
    ring.count(T0 + 1000, requests=2, rate_limited=2)
    now = T0 + 1000.5
    assert ring.window(now, 300).requests == 2
    assert ring.window(now, 900).requests == 5
    assert ring.window(now, 3600).requests == 10
    assert ring.window(now, 3600).completed == 7
    assert ring.window(now, 3600).rate_limited == 2


def test_rate_limit_ratio():
    ring = LoadRing(T0, capacity=1)
    ring.count(T0, requests=10, rate_limited=3)
    assert ring.window(T0 + 1, 300).rate_limit_ratio == pytest.approx(0.3)
    assert LoadRing(T0, 1).window(T0 + 1, 300).rate_limit_ratio == 0.0


def test_ring_wraparound_drops_old_buckets_and_memory_is_bounded():
    ring = LoadRing(T0, capacity=1, size=10)
    ring.count(T0, requests=7)
    ring.count(T0 + 9, requests=1)
    assert ring.window(T0 + 9, 10).requests == 8
    ring.count(T0 + 10, requests=1)  # overwrites T0's slot
    assert ring.window(T0 + 10, 10).requests == 2
    assert ring.window(T0 + 10, 3600).requests == 2  # a window longer than the ring is capped
    assert len(ring._req) == 10


def test_idle_gap_longer_than_ring_is_cheap_and_correct():
    ring = LoadRing(T0, capacity=2, size=60)
    ring.set_load(T0, 1, 2)
    w = ring.window(T0 + 1e6, 60)  # jumps, does not loop a million times
    assert w.utilization == pytest.approx(0.5)


def test_busy_without_capacity_reads_full():
    ring = LoadRing(T0, capacity=0)
    ring.set_load(T0, 1, 0)
    assert ring.window(T0 + 5, 300).utilization == 1.0


def test_load_slowdown():
    assert decode_rate(40, 1.0, 0, 8, 1.0) == 40
    assert decode_rate(40, 1.0, 8, 8, 1.0) == 20
    assert decode_rate(40, 2.0, 4, 8, 1.0) == pytest.approx(80 / 1.5)
    rates = [decode_rate(40, 1.0, k, 8, 0.5) for k in range(9)]
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(40 / 1.5)
    assert load_factor(3, 0, 1.0) == 2.0
    assert ttft_seconds(0.5, 2.0, 4, 8, 1.0, 0.1) == pytest.approx(0.5 * 2 * 1.5 * 0.1)


def test_dist_sampling_is_seeded_and_clipped():
    d = Dist(100.0, 0.5, 10.0, 150.0)
    a = [d.sample(random.Random(7)) for _ in range(3)]
    b = [d.sample(random.Random(7)) for _ in range(3)]
    assert a == b
    rng = random.Random(1)
    xs = [d.sample(rng) for _ in range(2000)]
    assert min(xs) >= 10 and max(xs) == 150.0
    assert sorted(xs)[1000] == pytest.approx(100, rel=0.1)  # median
    assert Dist(3.0).sample(rng) == 3.0


def test_chute_admission_counts_429_and_503():
    clock = [T0]
    c = ChuteRuntime(ChuteSpec("00000000-0000-0000-0000-000000000001", "m", instances=1, concurrency=2), clock[0])
    adms = [c.admit(T0), c.admit(T0), c.admit(T0), c.admit(T0)]
    assert [a.status for a in adms] == [0, 0, 429, 429]
    assert (c.in_flight, c.rejected_429) == (2, 2)
    c.release(T0 + 10, True, adms[0].instance)
    third = c.admit(T0 + 10)
    assert third.status == 0
    c.set_controls(ChuteControls(0, 2), T0 + 10)
    assert c.admit(T0 + 10).status == 503
    c.release(T0 + 20, True, adms[1].instance)
    c.release(T0 + 20, False, third.instance)
    w = c.ring.window(T0 + 20, 300)
    assert (w.requests, w.completed, w.rate_limited, c.served) == (6, 2, 2, 2)
    # 2 in flight of 2 for 10 s, then 2 in flight of 0 capacity for 10 s (counts as full)
    assert w.utilization == pytest.approx(1.0)
    assert math.isclose(w.rate_limit_ratio, 2 / 6)
