"""Session affinity: the key (each source, precedence, stable across turns, no text kept), the
bounded-load rendezvous pick, and the fallbacks to the usual decision."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from chutes_lb.proxy.session import KEY_SOURCES, SESSION_HEADERS, session_key
from chutes_lb.routing.affinity import affinity_pick, rendezvous_order
from chutes_lb.routing.decision import Affinity, Reason, decide
from chutes_lb.routing.estimate import DEFAULT_PARAMS, Candidate, CandidateSet, estimate
from chutes_lb.routing.live import LiveState

pytestmark = pytest.mark.unit

SECRET = "the launch code is 0000-TOP-SECRET"


def turn(n: int) -> dict:
    """Turn n of one chat: the history grows, the start stays."""
    messages = [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": f"fix the bug. {SECRET}"}]
    for k in range(n):
        messages += [{"role": "assistant", "content": f"answer {k}"}, {"role": "user", "content": f"follow-up {k}"}]
    return {"model": "chutes-models", "messages": messages}


# ------------------------------------------------------------------ the key
def test_each_source_gives_a_key_and_the_order_is_the_precedence() -> None:
    body = {**turn(0), "prompt_cache_key": "pck-1", "user": "u-1", "metadata": {"user_id": "m-1"}}
    headers = {"x-session-id": "h-1"}
    assert session_key(body, headers)[1] == "header"
    assert session_key(body, {})[1] == "prompt_cache_key"
    assert session_key({**body, "prompt_cache_key": None}, {})[1] == "metadata"
    assert session_key({**body, "prompt_cache_key": None, "metadata": {}}, {})[1] == "user"
    assert session_key(turn(0), {})[1] == "prefix"
    assert session_key(body, headers, ["user", "header"])[1] == "user"  # ROUTING_AFFINITY_KEYS decides
    assert session_key({"model": "m", "messages": []}, {}, ["header", "user"]) is None
    assert tuple(KEY_SOURCES) == ("header", "prompt_cache_key", "metadata", "user", "prefix")


@pytest.mark.parametrize("header", SESSION_HEADERS)
def test_agents_session_headers_are_keys(header: str) -> None:
    assert session_key(turn(0), {header: "abc"}) == session_key(turn(3), {"x-session-id": "abc"})


def test_the_prefix_key_is_stable_across_turns_and_apart_across_conversations() -> None:
    keys = {session_key(turn(n), {})[0] for n in range(6)}
    assert len(keys) == 1
    other = turn(2)
    other["messages"][1]["content"] = "a different task"
    assert session_key(other, {})[0] not in keys
    # the same for the Messages (system field) and Responses (instructions + input) shapes
    msgs = [{"role": "user", "content": [{"type": "text", "text": "task A"}]}]
    assert session_key({"system": "S", "messages": msgs}, {}) == session_key({"system": "S", "messages": msgs + msgs}, {})
    assert session_key({"instructions": "S", "input": "task A"}, {})[0] == session_key(
        {"instructions": "S", "input": [{"role": "user", "content": [{"type": "input_text", "text": "task A"}]}]}, {})[0]


def test_the_key_holds_no_prompt_text() -> None:
    key, source = session_key(turn(2), {})
    assert isinstance(key, int) and 0 <= key < 2**64 and SECRET not in repr((key, source))


# ------------------------------------------------------------------ the pick
def fleet(caps: list[int], live: LiveState, utils: list[float] | None = None) -> CandidateSet:
    utils = utils or [0.0] * len(caps)
    return CandidateSet([Candidate(f"c{i}", cap, u, live=live.chute(f"c{i}")) for i, (cap, u) in enumerate(zip(caps, utils))])


def pick(cs: CandidateSet, key: int, live: LiveState, bound: float = 1.25, excluded=(), now: float = 0.0, load: float | None = None):
    if load is None:
        load = sum(cs.cap[i] - estimate(cs, i, now, 1.0, DEFAULT_PARAMS, live.snapshot_version).free for i in range(cs.n)) / cs.total
    return affinity_pick(cs, rendezvous_order(cs, key, 2), lambda i: estimate(cs, i, now, 1.0, DEFAULT_PARAMS, live.snapshot_version),
                         bound, load, excluded)


def test_rendezvous_spreads_sessions_in_proportion_to_capacity_and_is_the_same_everywhere() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cs = fleet([10, 20, 30, 40], live)
    firsts = Counter(rendezvous_order(cs, random.Random(k).getrandbits(64))[0] for k in range(20_000))
    shares = [firsts[i] / 20_000 for i in range(4)]
    assert shares == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.02)
    other = LiveState()  # another worker, same candidates: the same order
    assert rendezvous_order(fleet([10, 20, 30, 40], other), 12345) == rendezvous_order(cs, 12345)
    smaller = CandidateSet(list(cs.cands[:3]))  # a chute removed: only its own sessions move
    moved = sum(1 for k in range(2000) if (o := rendezvous_order(cs, k)[0]) != 3 and rendezvous_order(smaller, k)[0] != o)
    assert moved == 0


def test_a_session_keeps_its_chute_while_it_has_room_within_the_bound() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cs = fleet([20, 20, 20], live)
    key = 99
    home = rendezvous_order(cs, key)[0]
    assert pick(cs, key, live)[:3] == (home, "hit", 0)
    for _ in range(8):  # the fleet is busy elsewhere too: the session's chute is within its share
        live.on_start(cs.ids[home], 0.0)
        live.on_start(cs.ids[(home + 1) % 3], 0.0)
        live.on_start(cs.ids[(home + 2) % 3], 0.0)
    assert pick(cs, key, live).outcome == "hit"
    for _ in range(8):  # now the session's chute carries far more than its share: it spills, stably
        live.on_start(cs.ids[home], 0.0)
    spilled = pick(cs, key, live)
    assert spilled.outcome == "spill" and spilled.index == rendezvous_order(cs, key)[1]


@pytest.mark.parametrize("fault,outcome", [("full", "dropped_full"), ("penalized", "dropped_penalized"), ("excluded", "dropped_excluded")])
def test_a_full_held_or_excluded_chute_loses_affinity_at_once(fault: str, outcome: str) -> None:
    live = LiveState(penalty_seconds=30.0)
    live.on_snapshot(1, 0.0)
    cs = fleet([4, 40, 40], live)
    key = next(k for k in range(10_000) if rendezvous_order(cs, k)[0] == 0)  # a session of the small chute
    excluded = ()
    if fault == "full":
        for _ in range(4):
            live.on_start("c0", 0.0)
    elif fault == "penalized":
        live.chute("c0").latency_ewma = 100.0
        live.on_end(live.on_start("c0", 0.0), 0.0, "rate_limited")
    else:
        excluded = {"c0"}
    result = pick(cs, key, live, excluded=excluded, now=0.1)
    assert result.outcome == "spill" and result.index != 0 and result.why == outcome
    d = decide(cs, "headroom", random.Random(1), now=0.1, excluded=excluded, snapshot_version=1,
               affinity=Affinity(rendezvous_order(cs, key, 1), 1.25, 0.0))
    assert d.chute_id != "c0" and d.affinity == outcome and d.reason != Reason.AFFINITY


def test_a_slow_chute_loses_affinity() -> None:
    live = LiveState(fleet_every=0.0)
    live.on_snapshot(1, 0.0)
    cs = fleet([20, 20, 20], live)
    for c, seconds in (("c0", 10.0), ("c1", 10.0), ("c2", 40.0)):
        for _ in range(5):  # SLOW_MIN_SAMPLES
            live.on_end(live.on_start(c, 0.0), seconds, "success", tokens=100)
    key = next(k for k in range(10_000) if rendezvous_order(cs, k)[0] == 2)
    d = decide(cs, "headroom", random.Random(2), now=40.0, snapshot_version=1, affinity=Affinity(rendezvous_order(cs, key, 1), 1.25, 0.0))
    assert d.affinity == "dropped_slow" and d.chute_id != "c2"


def test_sessions_do_not_pile_onto_one_chute() -> None:
    """Many sessions, a load bound of 1.25: no chute ends up above ~1.25x its share of the load,
    unlike pure stickiness (here every session hashed to the same chute would pile up)."""
    live = LiveState()
    live.on_snapshot(1, 0.0)
    caps = [8, 16, 16, 24]
    cs = fleet(caps, live)
    rng = random.Random(3)
    for _ in range(48):  # 64 slots, 48 requests from 12 sessions of 4 open turns each
        key = rng.randrange(12)
        load = sum(live.chute(f"c{i}").in_flight for i in range(4)) / 64
        d = decide(cs, "headroom", rng, snapshot_version=1, affinity=Affinity(rendezvous_order(cs, key, 2), 1.25, load))
        live.on_start(d.chute_id, 0.0)
    share = [live.chute(f"c{i}").in_flight / 48 / (caps[i] / 64) for i in range(4)]
    assert max(share) <= 1.25 + 1 / 8 + 1e-9, share  # + one request of slack on the smallest chute


def test_without_a_session_or_for_other_strategies_the_decision_is_unchanged() -> None:
    live = LiveState()
    live.on_snapshot(1, 0.0)
    cs = fleet([10, 20, 30], live)
    plain = [decide(cs, "headroom", random.Random(5), snapshot_version=1).chute_id for _ in range(50)]
    again = [decide(cs, "headroom", random.Random(5), snapshot_version=1).chute_id for _ in range(50)]
    assert plain == again
    d = decide(cs, "weighted-shuffle", random.Random(5), affinity=Affinity([0], 1.25, 0.0))
    assert d.reason == Reason.WEIGHTED_RANDOM and d.affinity is None


def test_sticky_keeps_a_session_on_its_chute_whatever_its_load_and_moves_only_when_excluded() -> None:
    """The pure-stickiness baseline: the session's own chute even when full or held; a retry
    after it failed goes elsewhere; no session key: capacity-weighted random."""
    live = LiveState(penalty_seconds=30.0)
    live.on_snapshot(1, 0.0)
    cs = fleet([4, 40, 40], live)
    key = next(k for k in range(10_000) if rendezvous_order(cs, k)[0] == 0)
    for _ in range(4):
        live.on_start("c0", 0.0)
    live.on_end(live.on_start("c0", 0.0), 0.0, "rate_limited")
    session = Affinity(rendezvous_order(cs, key, 2), 1.25, 0.9)
    d = decide(cs, "sticky", random.Random(1), now=0.1, snapshot_version=1, affinity=session)
    assert (d.chute_id, d.reason, d.affinity) == ("c0", Reason.AFFINITY, "hit")
    d = decide(cs, "sticky", random.Random(1), now=0.1, snapshot_version=1, excluded={"c0"}, affinity=session)
    assert d.chute_id == cs.ids[session.order[1]] and d.affinity == "spill:dropped_excluded"
    d = decide(cs, "sticky", random.Random(1), now=0.1, snapshot_version=1, excluded=set(cs.ids[i] for i in session.order),
               affinity=session)
    assert d.chute_id not in {cs.ids[i] for i in session.order} and d.affinity == "dropped_excluded"
    picks = Counter(decide(cs, "sticky", random.Random(s)).chute_id for s in range(300))
    assert picks["c0"] < picks["c1"] and picks["c0"] < picks["c2"]  # no key: weighted by capacity


def test_the_session_memo_never_serves_an_order_computed_for_another_candidate_set() -> None:
    """A freed candidate set's id can be reused by a new one (another group, a new snapshot):
    the memo must compute the order afresh, never hand out indices of the old set."""
    from chutes_lb.routing.affinity import SessionMemo

    memo = SessionMemo(depth=2)
    live = LiveState()
    live.on_snapshot(1, 0.0)
    for n in range(2, 40):
        cs = fleet([10] * n, live)  # the previous set is freed here; CPython often reuses its id
        order = memo.order(7, cs)
        assert order == rendezvous_order(cs, 7, 2) and all(i < cs.n for i in order)
        assert memo.order(7, cs) is order  # the same set: the memoised order
