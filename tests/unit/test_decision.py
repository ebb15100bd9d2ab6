"""Properties of the routing decision at 10,000 seeded picks per test."""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_lb.routing.decision import STRATEGIES, Reason, decide
from chutes_lb.routing.estimate import DEFAULT_PARAMS, Candidate, CandidateSet, HeadroomParams, estimate
from chutes_lb.routing.live import LiveState
from chutes_lb.routing.remote import RemoteCounts

pytestmark = pytest.mark.unit

N = 10_000


def fleet(caps, utils=None, live: LiveState | None = None, remotes=None) -> list[Candidate]:
    utils = utils or [0.0] * len(caps)
    return [
        Candidate(f"c{i}", cap, u, live=live.chute(f"c{i}") if live else None,
                  remote=remotes[i] if remotes else None)
        for i, (cap, u) in enumerate(zip(caps, utils))
    ]


def chi2(counts: Counter, ids: list[str], weights: list[float]) -> float:
    tot = sum(weights)
    n = sum(counts.values())
    return sum((counts[i] - n * w / tot) ** 2 / (n * w / tot) for i, w in zip(ids, weights))


def test_strategy_names_and_reasons_are_fixed() -> None:
    assert STRATEGIES == ("headroom", "headroom-slots", "least-utilization", "shuffle", "weighted-shuffle", "sticky")
    assert {r.value for r in Reason} == {
        "p2c", "third_sample", "best_sampled", "scan_fallback", "proportional_fallback", "all_penalized",
        "slow_overflow", "no_snapshot_live", "only_candidate", "argmin", "random", "weighted_random", "affinity"}


def test_weighted_shuffle_matches_capacity_shares() -> None:
    caps = [4, 8, 8, 16, 40]
    cands = fleet(caps)
    rng = random.Random(1)
    c = Counter(decide(cands, "weighted-shuffle", rng).chute_id for _ in range(N))
    assert chi2(c, [x.chute_id for x in cands], caps) < 18.5  # chi2(df=4) 99.9th percentile


def test_shuffle_is_uniform() -> None:
    cands = fleet([4, 8, 8, 16, 40])
    rng = random.Random(2)
    c = Counter(decide(cands, "shuffle", rng).chute_id for _ in range(N))
    assert chi2(c, [x.chute_id for x in cands], [1] * 5) < 18.5


def test_headroom_idle_fleet_is_capacity_proportional_p2c() -> None:
    """Idle fleet: two distinct capacity-weighted samples, the more free slots wins: the share grows
    with capacity (the smallest chute only gets traffic once the big ones fill up)."""
    caps = [4, 8, 16, 40]
    cands = fleet(caps, live=LiveState())
    rng = random.Random(3)
    c = Counter(decide(cands, "headroom", rng, replicas=4).chute_id for _ in range(N))
    shares = [c[f"c{i}"] / N for i in range(4)]
    assert shares == sorted(shares) and shares[-1] < 0.95


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_excluded_never_chosen_while_others_available(strategy: str) -> None:
    live = LiveState()
    cands = fleet([1, 2, 4, 8, 16, 32, 64, 0], [0.1, 0.9, 0.0, 0.5, 0.2, 0.3, 0.0, 0.0], live=live)
    ids = [c.chute_id for c in cands]
    rng = random.Random(4)
    for _ in range(N):
        k = rng.randrange(0, len(ids))
        exc = set(rng.sample(ids, k))
        d = decide(cands, strategy, rng, excluded=exc, replicas=3)
        assert d.chute_id not in exc and not d.excluded_ignored
    d = decide(cands, strategy, rng, excluded=set(ids))
    assert d.chute_id in ids and d.excluded_ignored


def test_least_utilization_is_argmin_ties_first() -> None:
    cands = fleet([10, 10, 10, 10], [0.5, 0.2, 0.2, float("nan")])
    rng = random.Random(5)
    assert {decide(cands, "least-utilization", rng).chute_id for _ in range(100)} == {"c1"}
    assert decide(cands, "least-utilization", rng, excluded={"c1"}).chute_id == "c2"
    unknown = fleet([10, 10], [None, None])
    assert decide(unknown, "least-utilization", rng).chute_id == "c0"


def test_headroom_avoids_a_429_penalized_chute() -> None:
    live = LiveState(penalty_seconds=30.0)
    live.on_snapshot(1, 0.0)
    cands = fleet([40, 8, 8], [0.0, 0.0, 0.0], live=live)
    live.chute("c0").latency_ewma = 20.0  # one slot of 40 frees every ~0.5 s
    live.on_end(live.on_start("c0", 100.0), 100.0, "rate_limited")
    rng = random.Random(6)
    picks = Counter(decide(cands, "headroom", rng, now=100.2, snapshot_version=1).chute_id for _ in range(N))
    assert picks["c0"] == 0
    # the hold is about one slot-free time, then the chute is usable again
    later = Counter(decide(cands, "headroom", rng, now=101.0, snapshot_version=1).chute_id for _ in range(1000))
    assert later["c0"] > 0
    # a new snapshot version ends the penalty
    live.on_snapshot(2, 100.3)
    again = Counter(decide(cands, "headroom", rng, now=100.3, snapshot_version=2).chute_id for _ in range(1000))
    assert again["c0"] > 0


def test_other_workers_429s_do_not_hold_a_chute() -> None:
    """A 429 another worker saw does not hold the chute here: the DES showed every replica avoiding
    the same chute at once herds the rest (the ablation is recorded in BENCHMARKS.md)."""
    live = LiveState()
    live.on_snapshot(1, 0.0)
    rem = [RemoteCounts(measured_at=10.0, last_429_at=10.0), RemoteCounts(measured_at=10.0)]
    cands = fleet([40, 8], [0.0, 0.0], live=live, remotes=rem)
    rng = random.Random(7)
    default = Counter(decide(cands, "headroom", rng, now=10.1, snapshot_version=1).chute_id for _ in range(N))
    assert default["c0"] > N / 2


def test_headroom_moves_traffic_away_when_in_flight_rises() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cands = fleet([20, 20], [0.5, 0.5], live=live)
    rng = random.Random(8)
    before = Counter(decide(cands, "headroom", rng, replicas=1).chute_id for _ in range(N))
    assert 0.4 < before["c0"] / N < 0.6
    for _ in range(6):
        live.on_start("c0", 1.0)
    after = Counter(decide(cands, "headroom", rng, replicas=1).chute_id for _ in range(N))
    assert after["c0"] / N < 0.1


def test_shared_remote_counts_are_used_when_fresh_only() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    rem = [RemoteCounts(in_flight=18, new_inflight=18, measured_at=9.0), RemoteCounts(measured_at=9.0)]
    cands = fleet([20, 20], [0.0, 0.0], live=live, remotes=rem)
    rng = random.Random(9)
    fresh = Counter(decide(cands, "headroom", rng, now=10.0).chute_id for _ in range(N))
    assert fresh["c0"] / N < 0.1
    stale = Counter(decide(cands, "headroom", rng, now=100.0).chute_id for _ in range(N))
    assert 0.4 < stale["c0"] / N < 0.6


def test_error_score_shrinks_headroom() -> None:
    live = LiveState(error_half_life=60.0)
    live.on_snapshot(1, 0.0)
    cands = fleet([20, 20], [0.0, 0.0], live=live)
    for _ in range(3):
        live.on_end(live.on_start("c0", 0.0), 0.0, "error")
    rng = random.Random(10)
    picks = Counter(decide(cands, "headroom", rng, now=1.0).chute_id for _ in range(N))
    assert picks["c0"] / N < 0.35


def test_no_herding_on_identical_stale_snapshot() -> None:
    """R replicas, same stale snapshot (c0 looked idle, the rest half busy), no shared counts: the
    argmin sends everything to c0; headroom spreads picks in line with the estimated room."""
    R, caps = 4, [10] * 8
    utils = [0.0] + [0.5] * 7  # free: c0 10, others 5 each -> c0 holds 10/45 of the room
    rng = random.Random(11)
    herd = Counter()
    spread = Counter()
    for trial in range(250):  # 250 x 40 = 10,000 picks
        for strategy, counter in (("least-utilization", herd), ("headroom", spread)):
            lives = [LiveState() for _ in range(R)]
            sets = []
            for ls in lives:
                ls.on_snapshot(1, 0.0)
                sets.append(CandidateSet(fleet(caps, utils, live=ls)))
            for k in range(40):  # interleaved requests, none finishes
                r = k % R
                d = decide(sets[r], strategy, rng, replicas=R, snapshot_version=1)
                lives[r].on_start(d.chute_id, 0.0)
                counter[d.chute_id] += 1
    assert herd["c0"] == 10_000
    assert spread["c0"] / 10_000 < 0.4
    assert max(spread.values()) / 10_000 < 0.4


def test_headroom_no_snapshot_uses_live_counts() -> None:
    live = LiveState()
    cands = fleet([10, 10], [None, None], live=live)
    for _ in range(8):
        live.on_start("c0", 0.0)
    rng = random.Random(12)
    d = [decide(cands, "headroom", rng, replicas=1) for _ in range(1000)]
    assert {x.reason for x in d} <= {Reason.NO_SNAPSHOT_LIVE}
    assert sum(x.chute_id == "c0" for x in d) < 100


def test_estimate_gives_headroom_per_candidate() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cs = CandidateSet(fleet([10, 20], [0.5, 0.25], live=live))
    live.on_start("c1", 0.0)
    headroom = tuple(estimate(cs, i, 0.0, 2.0, DEFAULT_PARAMS, 1).free for i in range(cs.n))
    assert headroom == (5.0, 13.0)


def test_empty_and_unknown_strategy_raise_value_error() -> None:
    with pytest.raises(ValueError):
        decide([], "headroom", random.Random(0))
    with pytest.raises(ValueError):
        decide(fleet([1, 2]), "round-robin", random.Random(0))


weird = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 100),
                  st.just("x"))


@settings(max_examples=300, deadline=None)
@given(
    caps=st.lists(weird, min_size=1, max_size=12),
    utils=st.lists(weird, min_size=12, max_size=12),
    excl_mask=st.lists(st.booleans(), min_size=12, max_size=12),
    strategy=st.sampled_from(STRATEGIES),
    replicas=st.integers(-2, 64),
    seed=st.integers(0, 2**32),
    inflight=st.lists(st.integers(0, 50), min_size=12, max_size=12),
)
def test_never_raises_on_degenerate_inputs(caps, utils, excl_mask, strategy, replicas, seed, inflight) -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cands = [Candidate(f"c{i}", cap, utils[i], utils[(i + 1) % 12], utils[(i + 2) % 12], live=live.chute(f"c{i}"),
                       remote=RemoteCounts(in_flight=inflight[i], measured_at=0.0) if i % 2 else None)
             for i, cap in enumerate(caps)]
    for i in range(len(caps)):
        for _ in range(inflight[i] % 7):
            live.on_start(f"c{i}", 0.0)
    excluded = {f"c{i}" for i in range(len(caps)) if excl_mask[i]}
    params = HeadroomParams(slow_ratio=[0.0, 1.5, 3.0][seed % 3])
    d = decide(cands, strategy, random.Random(seed), now=0.5, excluded=excluded, replicas=replicas,
               snapshot_version=1, params=params)
    ids = [c.chute_id for c in cands]
    assert d.chute_id in ids and ids[d.index] == d.chute_id
    if len(excluded) < len(ids):
        assert d.chute_id not in excluded
    assert isinstance(d.reason, Reason)
    cs = CandidateSet(cands)
    headroom = [estimate(cs, i, 0.5, float(max(replicas, 1)), params, 1).free for i in range(cs.n)]
    assert all(not math.isnan(h) for h in headroom)


def _pace(live: LiveState, chute: str, seconds: float, now: float, n: int = 5) -> None:
    for _ in range(n):
        tok = live.on_start(chute, now - seconds)
        live.on_end(tok, now, "success", tokens=100)


def test_a_slow_chute_serves_only_as_overflow() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cands = fleet([20, 20, 20], [0.0, 0.0, 0.0], live=live)
    for c in ("c0", "c1"):
        _pace(live, c, 10.0, now=100.0)
    _pace(live, "c2", 30.0, now=100.0)  # three times as slow as the others
    rng = random.Random(12)
    picks = Counter(decide(cands, "headroom", rng, now=100.0, snapshot_version=1).chute_id for _ in range(N))
    assert picks["c2"] == 0, picks  # while the others have room, it gets nothing
    without = Counter(decide(cands, "headroom", rng, now=100.0, snapshot_version=1,
                             params=HeadroomParams(slow_ratio=0.0)).chute_id for _ in range(N))
    assert without["c2"] > N / 5
    for _ in range(40):  # the fast chutes fill up: the slow one takes the overflow
        live.on_start("c0", 100.0)
        live.on_start("c1", 100.0)
    full = Counter(decide(cands, "headroom", rng, now=100.0, snapshot_version=1).chute_id for _ in range(N))
    # whenever one of the (up to three) samples is c2 it wins; the rest is the usual
    # proportional fallback when every sample looked full
    assert full["c2"] / N > 0.8, full
    # with no new measurement the evidence fades and the chute is tried again
    assert live.chute("c2").slowness(100.0 + 600.0, DEFAULT_PARAMS.speed_memory) < DEFAULT_PARAMS.slow_ratio


def test_ordinary_speed_differences_do_not_trigger_overflow() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cands = fleet([20, 20], [0.0, 0.0], live=live)
    _pace(live, "c0", 10.0, now=100.0)
    _pace(live, "c1", 13.0, now=100.0)  # 30% slower: below slow_ratio, a normal fleet spread
    rng = random.Random(13)
    picks = Counter(decide(cands, "headroom", rng, now=100.0, snapshot_version=1).chute_id for _ in range(N))
    assert 0.4 < picks["c1"] / N < 0.6


# ------------------------------------------------------------------ the estimate's order (issue 14), by hand
FRACTION = replace(DEFAULT_PARAMS, free_fraction=True)  # ROUTING_FREE_FRACTION=true


def _est(caps, busy, live=None, params=DEFAULT_PARAMS, **kw):
    live = live or LiveState()
    live.on_snapshot(1, 0.0)
    cs = CandidateSet(fleet(caps, [b / c for b, c in zip(busy, caps)], live=live, **kw))
    return cs, [estimate(cs, i, 0.0, 1.0, params, 1) for i in range(cs.n)], live


def test_equal_free_fractions_more_free_slots_win_by_default_and_tie_with_free_fraction() -> None:
    cs, (a, b), _ = _est([40, 4], [20, 2])  # both half free: 20 and 2 free slots, 20/40 = 2/4
    assert a.key == (3, 20.0) and b.key == (3, 2.0) and a.key > b.key
    rng = random.Random(5)
    picks = Counter(decide(cs, "headroom", rng, snapshot_version=1).chute_id for _ in range(2000))
    assert picks["c1"] < 2000 * 0.03  # sampled 1:10 by capacity and loses every comparison it is in
    _, (fa, fb), _ = _est([40, 4], [20, 2], params=FRACTION)
    assert fa.key == fb.key == (3, 0.5)  # a tie: the first sample wins


def test_a_nearly_full_big_chute_against_an_emptier_small_one() -> None:
    cs, (big, small), _ = _est([40, 4], [36, 1])  # big: 4 free (10%); small: 3 free (75%)
    assert big.key == (3, 4.0) and small.key == (3, 3.0) and big.key > small.key  # default: 4 > 3 free slots
    rng, same = random.Random(21), random.Random(21)
    default = Counter(decide(cs, "headroom", rng, snapshot_version=1).chute_id for _ in range(2000))
    assert default == Counter(decide(cs, "headroom-slots", same, snapshot_version=1).chute_id for _ in range(2000))
    _, (fbig, fsmall), _ = _est([40, 4], [36, 1], params=FRACTION)
    assert fbig.key == (3, pytest.approx(0.1)) and fsmall.key == (3, pytest.approx(0.75)) and fsmall.key > fbig.key
    rng = random.Random(21)
    fraction = Counter(decide(cs, "headroom", rng, snapshot_version=1, params=FRACTION).chute_id for _ in range(2000))
    assert fraction["c1"] > fraction["c0"] * 0.9  # sampled 1:10, yet it wins every comparison it is in
    assert default["c0"] > fraction["c0"] and default["c1"] < 2000 * 0.03


def test_a_sliver_of_room_ranks_below_a_whole_free_slot_and_above_full() -> None:
    _, (sliver, whole, full), _ = _est([8, 40, 8], [7.5, 39, 9], params=FRACTION)
    assert sliver.tier == 2 and whole.tier == 3 and full.tier == 0
    assert whole.key > sliver.key > full.key and sliver.has_room and not full.has_room
    _, (sliver, whole, full), _ = _est([8, 40, 8], [7.5, 39, 9])  # by free slots: 0.5 < 1 free, no separate tier
    assert sliver.tier == whole.tier == 3 and whole.key > sliver.key > full.key and sliver.has_room


@pytest.mark.parametrize("params", [DEFAULT_PARAMS, FRACTION], ids=["free-slots", "free-fraction"])
def test_a_429_hold_and_a_slow_chute_rank_below_room(params) -> None:
    live = LiveState(penalty_seconds=30.0, fleet_every=0.0)
    live.on_snapshot(1, 0.0)
    cs = CandidateSet(fleet([20, 20, 20, 20], [0.0, 0.0, 0.0, 0.9], live=live))
    live.chute("c0").latency_ewma = 100.0
    live.on_end(live.on_start("c0", 0.0), 0.0, "rate_limited")  # c0 holds a 429
    for c, seconds in (("c1", 10.0), ("c2", 40.0), ("c3", 10.0)):
        for _ in range(5):
            live.on_end(live.on_start(c, 0.0), seconds, "success", tokens=100)  # c2 is slow
    held, room, slow, tight = (estimate(cs, i, 0.5, 1.0, params, 1) for i in range(4))
    assert held.tier == -1 and slow.tier == 1 and room.tier == 3 and tight.tier == 3
    assert room.key > tight.key > slow.key > held.key  # 20 free (100%) > 2 free (10%) > slow > held
    rng = random.Random(3)
    picks = Counter(decide(cs, "headroom", rng, now=0.5, snapshot_version=1, params=params).chute_id for _ in range(2000))
    assert picks["c0"] == 0 and picks["c1"] > picks["c3"] > picks["c2"]  # held never; slow only when it beats nothing


def test_the_apis_rate_limit_ratio_is_a_prior_that_live_evidence_outweighs() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cands = [Candidate("c0", 20, 0.0, 0.0, 0.95, live=live.chute("c0")), Candidate("c1", 20, 0.0, 0.0, 0.0, live=live.chute("c1"))]
    cs = CandidateSet(cands)
    hot, cold = (estimate(cs, i, 0.0, 1.0, DEFAULT_PARAMS, 1) for i in range(2))
    assert hot.free == pytest.approx(20 * 0.05) and cold.free == 20.0  # gpt-oss-20b in the capture: 95% refused
    picks = Counter(decide(cs, "headroom", random.Random(3), snapshot_version=1).chute_id for _ in range(1000))
    assert picks["c1"] > 900
    for _ in range(200):  # this worker's own attempts there all succeed: the prior fades
        live.on_end(live.on_start("c0", 0.0), 0.0, "success")
    live.chute("c0").in_flight = 0
    assert estimate(cs, 0, 0.0, 1.0, DEFAULT_PARAMS, 1).free > 19.0
