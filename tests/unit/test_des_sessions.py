"""Session mode of the DES: prefix cache, affinity plumbing, occupancy and common streams."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.des.run import main
from benchmarks.des.session_sim import SessionSimulation
from benchmarks.des.sessions import ChuteCache, SessionConfig, session_stream
from benchmarks.des.sim import ARRIVAL, SimConfig, Simulation, run
from benchmarks.workload.sessions import SessionWorkload
from chutes_lb.routing.affinity import h64, rendezvous_order

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
    sticky = run(SimConfig(strategy="sticky", **common))
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


def test_sessions_reach_the_core_with_the_proxy_key() -> None:
    """Each turn's attempt goes through the replica's RoutingCore with ``affinity_key`` =
    h64("header", session id), as the proxy keys a session header: ``sticky`` (the registry's) puts
    every turn on the first chute of that key's rendezvous order over the core's candidates."""
    seen: dict[str, set[str]] = {}

    class Recorder(SessionSimulation):
        def attempt(self, req, r, t):
            super().attempt(req, r, t)
            call = self.calls[req]
            st = self.turn_of[req][0]
            assert call.affinity_key == h64("header", st.plan.key)
            seen.setdefault(st.plan.key, set()).add(call.open_chute)

    sim = Recorder(SimConfig(caps=[4] * 5, strategy="sticky", mode="queue", load=0.4, replicas=2, seed=5, sessions=BIG_CACHE))
    r = sim.run()
    assert r.reasons["affinity"] == r.starts.sum() and r.reasons["affinity_hit"] == r.starts.sum()
    cs = sim.cores[0].candidates(sim.cores[0].snapshot, sim.deployments)
    for key, chutes in seen.items():
        assert chutes == {cs.ids[rendezvous_order(cs, h64("header", key))[0]]}


def test_the_des_runs_the_production_affinity() -> None:
    """``affinity[:c]`` is RoutingConfig(affinity=True, affinity_bound=c) in every replica's core;
    no affinity is ROUTING_AFFINITY=false; anything else is refused."""
    common = dict(caps=[4] * 5, strategy="headroom", mode="queue", load=0.4, replicas=2, seed=5, sessions=BIG_CACHE)
    sim = SessionSimulation(SimConfig(affinity="affinity:1.25", **common))
    assert all(c.uses_sessions and c.config.affinity_bound == 1.25 for c in sim.cores)
    assert sim.cores[0].config.load_reuse_seconds == 1.0 / sim.model.seconds_per_unit
    assert SessionSimulation(SimConfig(affinity="affinity", **common)).cores[0].config.affinity_bound == 2.0
    assert not SessionSimulation(SimConfig(**common)).cores[0].uses_sessions
    r = sim.run()
    assert r.reasons.get("affinity_hit", 0) > 0.5 * r.starts.sum() and r.strategy == "headroom+affinity:1.25"
    with pytest.raises(ValueError):
        SessionSimulation(SimConfig(affinity="sticky", **common))


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
    for s in ("### Load 0.6", "| headroom+affinity |", "| sticky |", "| weighted-shuffle |",
              "follow-up TTFT p50 <= 0.5x", "on one chute", "### Hot spot", "under the hot spot"):
        assert s in report, s
    assert (tmp_path / "ttft-cdf-load-0.6.png").exists() and list(tmp_path.glob("load-share-hotspot-*.png"))
    capsys.readouterr()


def test_seeds_report_spread_and_intervals(capsys) -> None:
    rc = main(["--smoke", "--skip-validation", "--requests", "3000", "--seeds", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "Per-seed spread" in out and "pooled bootstrap" in out
