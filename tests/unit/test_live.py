"""Live bookkeeping arithmetic: survival, new_inflight, penalties, errors, anomalies, exports."""
from __future__ import annotations

import math

import pytest

from chutes_lb.routing.live import LiveState
from chutes_lb.routing.remote import RemoteCounts, aggregate_remote

pytestmark = pytest.mark.unit


def test_survival_and_new_inflight() -> None:
    ls = LiveState()
    toks = [ls.on_start("a", 0.0) for _ in range(4)]
    c = ls.chute("a")
    assert (c.in_flight, c.new_inflight, c.survival) == (4, 4, 1.0)
    ls.on_snapshot(1, 1.0)
    assert (c.open_at_adoption, c.old_open, c.new_inflight) == (4, 4, 0)
    new = ls.on_start("a", 2.0)
    assert (c.in_flight, c.new_inflight) == (5, 1)
    ls.on_end(toks[0], 3.0, "success")
    ls.on_end(toks[1], 3.0, "success")
    ls.on_end(toks[2], 3.0, "success")
    assert c.survival == pytest.approx(0.25)
    assert (c.in_flight, c.new_inflight, c.old_open) == (2, 1, 1)
    ls.on_end(new, 4.0, "success")
    assert (c.in_flight, c.new_inflight) == (1, 0)
    ls.on_snapshot(2, 5.0)  # the old request survives into the next epoch as 'old' again
    assert (c.open_at_adoption, c.old_open, c.survival) == (1, 1, 1.0)
    ls.on_end(toks[3], 6.0, "success")
    assert (c.in_flight, c.old_open, c.survival) == (0, 0, 0.0)


def test_same_version_is_not_a_new_epoch() -> None:
    ls = LiveState()
    ls.on_snapshot(7, 0.0)
    ls.on_start("a", 1.0)
    ls.on_snapshot(7, 2.0)
    assert ls.chute("a").new_inflight == 1


def test_double_end_and_unknown_token_are_counted_not_raised() -> None:
    ls = LiveState()
    t = ls.on_start("a", 0.0)
    ls.on_end(t, 1.0)
    ls.on_end(t, 1.0)
    ls.on_end(99999, 1.0)
    ls.on_first_token(424242, 1.0)
    ls.on_end(ls.on_start("a", 0.0), 1.0, "weird")
    assert ls.anomalies == {"unknown_token": 1, "double_end": 1, "bad_outcome": 1}
    assert ls.chute("a").in_flight == 0 and ls.chute("a").new_inflight == 0


def test_ewmas() -> None:
    ls = LiveState(ewma_alpha=0.5)
    t = ls.on_start("a", 0.0)
    ls.on_first_token(t, 1.0)
    ls.on_first_token(t, 5.0)  # only the first counts
    ls.on_end(t, 4.0)
    c = ls.chute("a")
    assert (c.ttft_ewma, c.latency_ewma) == (1.0, 4.0)
    t = ls.on_start("a", 10.0)
    ls.on_end(t, 12.0)
    assert c.latency_ewma == pytest.approx(3.0)
    t = ls.on_start("a", 20.0)
    ls.on_end(t, 21.0, "error")  # failures do not update the latency
    assert c.latency_ewma == pytest.approx(3.0)


def test_429_penalty_until_next_snapshot_or_timeout() -> None:
    ls = LiveState(penalty_seconds=30.0)
    ls.on_snapshot(1, 0.0)
    ls.on_end(ls.on_start("a", 0.0), 1.0, "rate_limited")
    c = ls.chute("a")
    assert c.penalized(2.0, 1) and c.last_429_at == 1.0
    assert not c.penalized(31.5, 1)
    ls.on_snapshot(2, 3.0)
    assert not c.penalized(4.0, ls.snapshot_version)
    assert ls.export_counts(4.0)["a"]["last_429_at"] == -math.inf


def test_error_score_rises_and_decays() -> None:
    ls = LiveState(error_half_life=10.0, error_step=0.5)
    ls.on_end(ls.on_start("a", 0.0), 0.0, "error")
    ls.on_end(ls.on_start("a", 0.0), 0.0, "timeout")
    c = ls.chute("a")
    assert c.error_at(0.0) == pytest.approx(0.75)
    assert c.error_at(10.0) == pytest.approx(0.375)
    assert c.errors_total == 2


def test_export_and_aggregate_remote() -> None:
    a, b = LiveState(), LiveState()
    for ls in (a, b):
        ls.on_snapshot(1, 0.0)
    a.on_start("x", 1.0)
    a.on_start("x", 1.0)
    b.on_start("x", 1.0)
    b.on_start("y", 1.0)
    ea, eb = a.export_counts(2.0), b.export_counts(2.0)
    assert ea["x"] == {"in_flight": 2, "new_inflight": 2, "started_total": 2, "last_429_at": -math.inf}
    into = {"z": RemoteCounts(in_flight=9, measured_at=0.0)}
    agg = aggregate_remote([(ea, 2.0), (eb, 1.5), ({"x": {"in_flight": "junk", "new_inflight": float("nan")}}, 2.0)],
                           into=into)
    assert agg is into
    assert (agg["x"].in_flight, agg["x"].new_inflight, agg["x"].measured_at) == (3, 3, 1.5)
    assert (agg["y"].in_flight, agg["y"].measured_at) == (1, 1.5)
    assert (agg["z"].in_flight, agg["z"].measured_at) == (0, 1.5)  # absent = zero, as fresh as the oldest
    assert agg["x"].fresh(3.0, 5.0) and not agg["x"].fresh(10.0, 5.0)
    marked = aggregate_remote([(ea, 2.0)], mark_from=b)
    assert marked["x"].own_started_mark == 1  # b started one request on x
    empty = aggregate_remote([])
    assert empty == {}
    stale = aggregate_remote([], into={"x": RemoteCounts(in_flight=1, measured_at=5.0)})
    assert stale["x"].measured_at == -math.inf


def test_decode_pace_and_slowness_against_the_fleet() -> None:
    ls = LiveState(ewma_alpha=1.0, fleet_alpha=0.5, fleet_every=0.0)
    fast, slow = ls.chute("fast"), ls.chute("slow")
    assert fast.slowness(0.0, 60.0) == 1.0  # nothing measured yet
    t = ls.on_start("fast", 0.0)
    ls.on_first_token(t, 1.0)
    ls.on_end(t, 11.0, "success", tokens=100)  # 1 s TTFT, 10 s for 100 tokens: 0.1 s/token
    assert fast.tpot_ewma == pytest.approx(0.1)
    assert (ls.fleet.ttft_ewma, ls.fleet.tokens_ewma, ls.fleet.reference) == pytest.approx((1.0, 100.0, 11.0))
    assert fast.slowness(11.0, 60.0) == pytest.approx(1.0)
    t = ls.on_start("slow", 20.0)
    ls.on_end(t, 51.0, "success", tokens=100)  # not streamed: TTFT unknown, the fleet's 1 s is assumed
    assert slow.tpot_ewma == pytest.approx(0.3)
    # the reference is the lower median over chutes (11 s), not a traffic average
    assert ls.fleet.reference == pytest.approx(11.0)
    assert slow.slowness(51.0, 60.0) == pytest.approx(31.0 / 11.0)
    assert fast.slowness(51.0, 60.0) == pytest.approx(1.0)
    # the evidence fades: long after the last measurement a chute counts as ordinary again
    assert slow.slowness(51.0 + 600.0, 60.0) == pytest.approx(1.0, abs=1e-3)


def test_one_slow_big_chute_cannot_move_the_yardstick() -> None:
    ls = LiveState(fleet_every=0.0)
    for name, seconds, n in (("big", 30.0, 50), ("a", 10.0, 3), ("b", 10.0, 3)):
        for _ in range(n):
            ls.on_end(ls.on_start(name, 0.0), seconds, "success", tokens=100)
    assert ls.chute("big").slowness(30.0, 60.0) == pytest.approx(3.0, rel=0.01)
    assert ls.chute("a").slowness(30.0, 60.0) == pytest.approx(1.0, rel=0.01)


def test_pace_ignores_failures_and_unknown_token_counts() -> None:
    ls = LiveState()
    for tokens in (None, 0, -3, float("nan"), float("inf")):
        ls.on_end(ls.on_start("a", 0.0), 5.0, "success", tokens=tokens)
    ls.on_end(ls.on_start("a", 0.0), 5.0, "error", tokens=10)
    assert ls.chute("a").tpot_ewma is None and ls.fleet.reference is None
    assert ls.chute("a").latency_ewma == pytest.approx(5.0)


def test_yardstick_mixes_streamed_and_plain_chutes_and_follows_the_typical_request() -> None:
    ls = LiveState(ewma_alpha=1.0, fleet_alpha=1.0, fleet_every=0.0)
    t = ls.on_start("streamed", 0.0)
    ls.on_first_token(t, 2.0)
    ls.on_end(t, 12.0, "success", tokens=100)  # TTFT 2, 0.1 s/token
    ls.on_end(ls.on_start("plain", 0.0), 12.0, "success", tokens=100)  # same total, TTFT unknown
    ls.on_end(ls.on_start("plain2", 0.0), 12.0, "success", tokens=100)
    for name in ("streamed", "plain", "plain2"):
        assert ls.chute(name).slowness(12.0, 60.0) == pytest.approx(1.0)
    # the typical request changes (1000 tokens now): reference and chute times move together
    ls.on_end(ls.on_start("plain", 20.0), 20.0 + 2.0 + 100.0, "success", tokens=1000)
    assert ls.fleet.tokens_ewma == 1000.0
    assert ls.chute("plain").slowness(122.0, 60.0) == pytest.approx(1.0)
