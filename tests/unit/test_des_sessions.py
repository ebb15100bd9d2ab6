"""Session mode of the DES: prefix cache, affinity plumbing, occupancy and common streams."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.des.affinity import Production, policy_from
from benchmarks.des.run import main
from benchmarks.des.session_sim import SessionSimulation
from benchmarks.des.sessions import ChuteCache, SessionConfig, session_stream
from benchmarks.des.sim import ARRIVAL, SimConfig, Simulation, run
from benchmarks.workload.sessions import SessionWorkload
from chutes_lb.routing.estimate import Candidate, CandidateSet, HeadroomParams

pytestmark = pytest.mark.unit

BIG_CACHE = SessionConfig(n_sessions=150, warmup_sessions=30, cache_tokens_per_slot=1e12, tail_frac=1e9)


def test_chute_cache_hits_its_session_and_evicts_least_recent() -> None:
    c = ChuteCache(100)
    assert c.serve(1, 40) == 0
    assert c.serve(1, 60) == 40  # the session's previous prompt is its prefix
    assert c.serve(2, 30) == 0 and c.tokens == 90
    assert c.serve(3, 30) == 0  # 120 > 100: session 1 (least recent) goes
    assert 1 not in c and 2 in c and c.tokens == 60
    assert c.serve(2, 30) == 29  # the last token is always computed
    assert c.serve(4, 500) == 0 and 4 not in c  # larger than the cache: not stored


def _measured_last_prompts(cfg: SimConfig) -> int:
    sim = SessionSimulation(cfg)  # only for its rates and workload
    sc = cfg.sessions
    stream = session_stream(cfg.seed, sim.workload, sim.session_lam / sim.model.seconds_per_unit, sim.R)
    plans = [p for p, _, _ in itertools.islice(stream, sc.warmup_sessions + sc.n_sessions)][sc.warmup_sessions:]
    return sum(p.turns[-1].prompt_tokens for p in plans), sum(t.prompt_tokens for p in plans for t in p.turns)


def test_sticky_hits_the_cache_exactly_and_random_does_not() -> None:
    caps = [2] * 16
    common = dict(caps=caps, mode="queue", load=0.5, replicas=2, seed=3, sessions=BIG_CACHE)
    sticky = run(SimConfig(strategy="headroom", affinity="sticky", **common))
    shuffle = run(SimConfig(strategy="weighted-shuffle", **common))
    last, total = _measured_last_prompts(SimConfig(strategy="headroom", **common))
    # same sessions for both strategies (queue mode: nothing fails)
    assert sticky.prompt_total == shuffle.prompt_total == total
    # every follow-up found its previous prompt: computed tokens telescope to each session's last prompt
    assert sticky.prompt_computed == last
    assert sticky.one_chute_share == 1.0
    assert shuffle.prompt_computed > last + 0.6 * (total - last)  # 16 chutes: a follow-up hits ~1/16 of the time
    assert np.median(sticky.ttft_follow) < 0.5 * np.median(shuffle.ttft_follow)
    assert np.median(sticky.ttft_first) == pytest.approx(np.median(shuffle.ttft_first), rel=0.3)


def test_affinity_policy_is_asked_with_the_session_key_and_can_fall_back() -> None:
    seen: list[tuple[str, int]] = []

    def always_two(key, cands, *, now, excluded, replicas, snapshot_version, params, turn):
        seen.append((key, turn))
        return 2

    common = dict(caps=[4] * 5, mode="queue", load=0.4, replicas=2, seed=5, sessions=BIG_CACHE)
    r = run(SimConfig(strategy="headroom", affinity=always_two, **common))
    assert r.starts[2] == r.starts.sum() and r.reasons["affinity"] == r.starts.sum()
    assert {k for k, _ in seen} and all(k.startswith("sess-") for k, _ in seen)
    assert max(t for _, t in seen) >= 1
    none = run(SimConfig(strategy="headroom", affinity=lambda *a, **k: None, **common))
    assert (none.starts > 0).all() and none.reasons["affinity_fallback"] == none.starts.sum()
    assert r.strategy == "headroom+always_two"


def test_the_des_runs_the_production_affinity() -> None:
    """``affinity[:c]`` is chutes_lb.routing.affinity itself: the session's rendezvous-first chute
    while it has room, its second one past the bound, the strategy when neither qualifies."""
    from chutes_lb.routing.affinity import rendezvous_order

    pol = Production(bound=1.25)
    p = HeadroomParams()
    kw = dict(now=0.0, replicas=1, snapshot_version=None, params=p, turn=1)
    cs = CandidateSet([Candidate(i, 8.0, 0.0) for i in ("a", "b", "c")])
    key = next(f"k{i}" for i in range(100) if rendezvous_order(cs, pol.key(f"k{i}"))[0] == 2)
    assert pol(key, cs, excluded=(), **kw) == 2
    assert pol(key, cs, excluded=("c",), **kw) == rendezvous_order(cs, pol.key(key))[1]
    busy = CandidateSet([Candidate("a", 8.0, 0.0), Candidate("b", 8.0, 0.0), Candidate("c", 8.0, 0.875)])
    # 7 of 8 busy, fleet load 7/24: the bound is max(ceil(1.25 x 8 x (7/24 + 1/24)), 4) = 4 slots
    assert pol(key, busy, excluded=(), **kw) == rendezvous_order(busy, pol.key(key))[1]
    assert pol.dropped["overloaded"] == 1
    full = CandidateSet([Candidate(i, 8.0, 1.0) for i in ("a", "b", "c")])
    assert pol(key, full, excluded=(), **kw) is None and pol.dropped["full"] == 1
    assert policy_from("affinity:2")[1].bound == 2.0 and policy_from("affinity")[1].bound == 2.0


def test_alpha_slows_busy_chutes_and_zero_changes_nothing() -> None:
    common = dict(caps=[10], strategy="shuffle", mode="queue", load=0.5, replicas=1, n_requests=20_000, seed=2)
    base, zero, slow = run(SimConfig(**common)), run(SimConfig(alpha=0.0, **common)), run(SimConfig(alpha=1.0, **common))
    assert np.array_equal(base.latencies, zero.latencies)
    assert slow.mean > 1.4 * base.mean  # ~ x (1 + busy/c) with busy/c ~ 0.5 and more queueing


def test_common_streams_give_every_strategy_the_same_arrivals() -> None:
    class Recorder(Simulation):
        def on_arrival(self, t, a, b):
            self.seen = getattr(self, "seen", []) + [t]
            super().on_arrival(t, a, b)

    def arrivals(strategy: str, common: bool) -> list[float]:
        sim = Recorder(SimConfig(caps=[1, 2, 8], strategy=strategy, mode="reject", load=0.8, n_requests=2000,
                                 seed=4, common_streams=common))
        sim.run()
        return sim.seen

    assert arrivals("shuffle", True) == arrivals("weighted-shuffle", True)
    assert arrivals("shuffle", False) != arrivals("weighted-shuffle", False)
    assert ARRIVAL == 0


def test_sessions_scenario_smoke(tmp_path, capsys) -> None:
    rc = main(["--scenario", "sessions", "--sessions", "150", "--fleet", "smoke", "--load", "0.6", "--out", str(tmp_path)])
    assert rc == 0
    report = (tmp_path / "report.md").read_text()
    for s in ("### Load 0.6", "| headroom+affinity |", "| headroom+sticky |", "| weighted-shuffle |",
              "follow-up TTFT p50 <= 0.5x", "on one chute", "### Hot spot", "under the hot spot"):
        assert s in report, s
    assert (tmp_path / "ttft-cdf-load-0.6.png").exists() and list(tmp_path.glob("load-share-hotspot-*.png"))
    capsys.readouterr()


def test_seeds_report_spread_and_intervals(capsys) -> None:
    rc = main(["--smoke", "--skip-validation", "--requests", "3000", "--seeds", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "Per-seed spread" in out and "pooled bootstrap" in out
