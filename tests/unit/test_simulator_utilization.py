"""Utilization entries (exact real field set and types), board caching, fault-mode bodies."""
import json
import math
import random

import orjson
import pytest

from chutes_lb.simulator import utilization as util
from chutes_lb.simulator.fleet_config import ChuteSpec, FleetConfig
from chutes_lb.simulator.service import Simulator, iso_utc

pytestmark = pytest.mark.unit

REAL_ENTRY = {"chute_id": "2ff25e81-4586-5ec8-b892-3a6f342693d7", "name": "moonshotai/Kimi-K2.5-TEE",
 "timestamp": "2026-02-18T05:48:08.568123", "utilization_current": 0.1566, "utilization_5m": 0.1459,
 "utilization_15m": 0.1563, "utilization_1h": 0.1451, "rate_limit_ratio_5m": 0.0, "rate_limit_ratio_15m": 0.0,
 "rate_limit_ratio_1h": 0.0, "total_requests_5m": 286.25, "total_requests_15m": 1014.64, "total_requests_1h": 4706.44,
 "completed_requests_5m": 286.25, "completed_requests_15m": 1014.64, "completed_requests_1h": 4706.44,
 "rate_limited_requests_5m": 0.0, "rate_limited_requests_15m": 0.0, "rate_limited_requests_1h": 0.0,
 "instance_count": 7, "action_taken": "scale_up_candidate", "target_count": 8, "effective_multiplier": 22.0,
 "total_instance_count": 10, "active_instance_count": 7, "scalable": True, "scale_allowance": 1,
 "avg_busy_ratio": 0.1451, "total_invocations": 4706.44, "total_rate_limit_errors": 0.0}
A = "00000000-0000-4000-8000-000000000001"
B = "00000000-0000-4000-8000-000000000002"


def check_entry(e):
    assert list(e) == list(REAL_ENTRY)
    for k, v in e.items():
        assert type(v) is type(REAL_ENTRY[k]), k
    assert e["action_taken"] in util.ACTIONS


def test_field_table_matches_the_real_entry():
    assert util.FIELDS == {k: type(v) for k, v in REAL_ENTRY.items()}


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def make_sim(fillers=5, clock=None):
    fleet = FleetConfig((ChuteSpec(A, "a", instances=1, concurrency=4), ChuteSpec(B, "b", instances=2, concurrency=2)))
    clock = clock or FakeClock()
    return Simulator(fleet, time_scale=1, refresh_seconds=60, filler_count=fillers, seed=3, clock=clock, wall=lambda: 1.8e9 + clock.t), clock


def test_board_entries_reflect_load_and_share_one_timestamp():
    sim, clock = make_sim()
    a = sim.lookup("a")
    adms = [a.admit(clock.t) for _ in range(4)]
    assert [x.status for x in adms] == [0] * 4
    assert a.admit(clock.t).status == 429
    clock.t += 30
    for x in adms:
        a.release(clock.t, True, x.instance)
    clock.t += 30
    sim.refresh_now()
    entries = orjson.loads(sim.board.body)
    assert len(entries) == 2 + 5
    for e in entries:
        check_entry(e)
    assert len({e["timestamp"] for e in entries}) == 1
    assert entries[0]["timestamp"] == iso_utc(1.8e9 + clock.t) and "+" not in entries[0]["timestamp"]
    ea = next(e for e in entries if e["chute_id"] == A)
    assert ea["utilization_5m"] == pytest.approx(0.5)  # full for 30 s of 60
    assert ea["utilization_current"] == 0.0
    assert (ea["total_requests_5m"], ea["completed_requests_5m"], ea["rate_limited_requests_5m"]) == (5.0, 4.0, 1.0)
    assert ea["rate_limit_ratio_1h"] == pytest.approx(0.2)
    assert ea["action_taken"] == "scale_up_candidate" and ea["target_count"] == 2 and ea["scale_allowance"] == 1
    assert ea["avg_busy_ratio"] == ea["utilization_1h"] and ea["total_invocations"] == ea["total_requests_1h"]
    assert [e["total_requests_1h"] for e in entries] == sorted((e["total_requests_1h"] for e in entries), reverse=True)


def test_board_is_cached_until_refresh():
    sim, clock = make_sim()
    body, version = sim.board.body, sim.board.version
    a = sim.lookup("a")
    a.admit(clock.t)
    clock.t += 5
    assert sim.board.body is body and sim.board.version == version
    assert sim.refresh_now() == version + 1
    assert sim.board.body != body


def test_fillers_are_fixed_by_seed():
    x = util.filler_entries(20, random.Random(5), "t")
    y = util.filler_entries(20, random.Random(5), "t")
    assert x == y and len({e["chute_id"] for e in x}) == 20
    for e in x:
        check_entry(e)


@pytest.mark.parametrize("mode", ("garbage", "not_list", "status", "truncated", "huge", "bad_entries", "normal"))
def test_render_modes(mode):
    sim, _ = make_sim(fillers=30)
    normal = sim.board.body
    sim.board.configure({"mode": mode, "size_bytes": 200_000, "status": 502} if mode == "status" else {"mode": mode, "size_bytes": 200_000})
    body = sim.board.body
    if mode == "normal":
        assert body == normal
    elif mode == "garbage":
        with pytest.raises(ValueError):
            json.loads(body)
        assert sim.board.content_type == "text/html"
    elif mode == "not_list":
        assert isinstance(json.loads(body), dict)
    elif mode == "status":
        assert sim.board.http_status == 502
    elif mode == "truncated":
        assert normal.startswith(body) and len(body) < len(normal)
        with pytest.raises(ValueError):
            json.loads(body)
    elif mode == "huge":
        data = json.loads(body)
        assert len(body) >= 200_000 and isinstance(data, list)
        for e in data[:50]:
            check_entry(e)
    elif mode == "bad_entries":
        data = json.loads(body)
        bad = set(sim.board.malformed)
        assert len(data) == 32 and len(bad) == 11
        for e in data:
            if e["chute_id"] in bad:
                ok = set(e) == set(REAL_ENTRY) and all(type(v) is type(REAL_ENTRY[k]) for k, v in e.items())
                ok = ok and all(math.isfinite(e[k]) and e[k] >= 0 for k in e if k.startswith("utilization"))
                assert not ok
            else:
                check_entry(e)
    if mode != "status":
        assert sim.board.http_status == 200


def test_reset_restores_normal_and_refresh_period():
    sim, _ = make_sim()
    sim.board.configure({"mode": "garbage", "refresh_seconds": 1.0})
    sim.lookup("a").set_controls(sim.lookup("a").controls.__class__(0, 4, hang=True), 100.0)
    sim.reset()
    assert sim.board.mode == "normal" and sim.board.refresh_seconds == 60
    assert sim.lookup("a").controls.instances == 1 and not sim.lookup("a").controls.hang
    assert sim.lookup("a").unhung.is_set()
