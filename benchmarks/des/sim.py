"""Discrete-event simulation of R router replicas in front of chutes with c_i slots.

It runs the production routing code: :func:`chutes_lb.routing.decision.decide`,
:class:`chutes_lb.routing.live.LiveState` and the in-flight exchange
:func:`chutes_lb.routing.remote.exchange` (no copies). Time unit = one mean service time (think
~10 s for an LLM request, so 0.1 ~ 1 s).

- Arrivals: Poisson, each to a uniformly random replica; rate ``load x sum(c_i)`` (x step factor).
- Service: exponential (mean 1) or lognormal (sigma 1.5, mean 1: heavy-tailed), divided by the
  chute's speed (1 unless a ``degrade`` event slows it).
- ``reject`` mode: an attempt beyond c_i in flight is answered 429 after ``rtt``; the replica
  records it (``on_end(..., "rate_limited")``) and retries through the same decision with that
  chute excluded, up to ``max_attempts``; then the request fails. ``queue`` mode: FIFO per chute.
- Snapshot: at every ``k x refresh`` the time-average of open connections / c_i over the last
  ``window`` is measured; replicas adopt it ``lag`` later (``on_snapshot``). Data age thus ranges
  from ``lag`` to ``refresh + lag`` (+ the window).
- Shared in-flight counts: every ``share_interval`` each replica's ``export_counts()`` is
  published; ``share_delay`` later every replica folds the others' in with ``exchange`` (as the
  proxy's in-flight loop does, including R = 1 + the replicas seen).
- Occupancy (``alpha``, issue 14): service time x (1 + alpha x busy/c_i) at the start of service,
  busy counting the request itself, as the simulator's load factor. ``alpha = 0``: as before.
- ``common_streams``: arrivals, replica choice and service demands on streams of their own, so
  every strategy sees the same schedule for a seed (``--seeds``); off = one stream, as before.
- Extra strategies (not in decide): :mod:`benchmarks.des.baselines`. ``headroom:<variant>`` runs
  the ablations of :mod:`benchmarks.des.variants`. Sessions with a prefix cache and affinity:
  :class:`benchmarks.des.session_sim.SessionSimulation`, a subclass using the hooks below.

:class:`Simulation` is the event loop: one handler method per event kind. Hooks a subclass may
override: ``start_arrivals``, ``choose``, ``begin`` (service starts), ``report_success``,
``served`` (answer received), ``gave_up`` (last attempt failed).
"""
from __future__ import annotations

import heapq
import random
import time

import numpy as np

from benchmarks.des.baselines import baseline_pick
from benchmarks.des.config import SimConfig, SimResult
from benchmarks.des.variants import variant
from chutes_lb.routing.decision import REGISTRY, decide
from chutes_lb.routing.estimate import Candidate, CandidateSet, HeadroomParams
from chutes_lb.routing.live import LiveState
from chutes_lb.routing.remote import RemoteCounts, exchange

ARRIVAL, DEPART, RETRY, MEASURE_START, MEASURE_END, ADOPT, PUBLISH, VISIBLE, CHANGE = range(9)
DECIDE_STRATEGIES = ("headroom", "headroom-slots", "least-utilization", "shuffle", "weighted-shuffle")

__all__ = ["Simulation", "SimConfig", "SimResult", "run", "DECIDE_STRATEGIES"]


class Simulation:
    """One run: state, the event heap and one handler per event kind."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.n = n = len(cfg.caps)
        self.caps = [int(c) for c in cfg.caps]
        self.ids = [f"chute-{i:03d}" for i in range(n)]
        self.R = R = max(1, cfg.replicas)
        self.base, _, vname = cfg.strategy.partition(":")
        self.variant = variant(vname)
        self.params = self.variant.headroom_params(HeadroomParams(remote_max_age=cfg.remote_max_age, default_latency=1.0, speed_memory=6.0))
        # the strategy's registry record; a headroom ablation swaps in its own procedure
        self.strategy = (REGISTRY[self.base]._replace(procedure=self.variant.procedure())
                         if self.base == "headroom" else self.base)
        self.is_decide = self.base in DECIDE_STRATEGIES
        self.sharing = self.base in ("headroom", "headroom-slots") and self.variant.remote  # as in production: both read the shared counts
        self.rng = random.Random(cfg.seed)
        # common_streams: arrivals + replica choice and service demands on streams of their own
        self.arng = random.Random(cfg.seed * 7919 + 1) if cfg.common_streams else self.rng
        self.srng = random.Random(cfg.seed * 7919 + 2) if cfg.common_streams else None
        self.work_of: dict[int, float] = {}
        self.alpha = cfg.alpha
        self.drng = [random.Random(cfg.seed * 1000 + r) for r in range(R)]
        self.lives = [LiveState(penalty_seconds=cfg.penalty_seconds, error_half_life=3.0, fleet_every=0.1) for _ in range(R)]
        self.recs = [[lv.chute(cid) for cid in self.ids] for lv in self.lives]
        self.remotes = [{cid: RemoteCounts() for cid in self.ids} for _ in range(R)]
        # R as each replica knows it: 1 + the replicas its last exchange saw (production); the
        # no-sharing ablations are told R, as "R x own" needs it
        self.replicas_seen = [1 if self.sharing else R] * R
        self.total_cap = float(sum(self.caps))
        self.lam = cfg.load * self.total_cap
        self.speed = [1.0] * n
        self.busy = [0] * n  # in service
        self.nsys = [0] * n  # in system (service + queue)
        self.queues: list[list] = [[] for _ in range(n)]
        self.qhead = [0] * n
        self.area = [0.0] * n
        self.last_t = [0.0] * n
        self.area_at_start = [0.0] * n
        self.measured: list[float | None] = [0.0] * n
        self.own_in = [[0] * n for _ in range(R)]  # for least-busy
        self.version = 0
        self.cands: list[CandidateSet] = []
        self.reject = cfg.mode == "reject"
        self.err_p = [cfg.error_prob.get(i, 0.0) for i in range(n)]
        self.cum = [float(x) for x in np.cumsum(self.caps)]
        self.heap: list = []
        self.seq = 0
        self.warm = int(cfg.n_requests * cfg.warmup_frac)
        self.lat = np.empty(cfg.n_requests, dtype=np.float64)
        self.nlat = 0
        self.attempts = self.rejected = self.failed = 0
        self.starts = np.zeros(n, dtype=np.int64)
        self.reasons: dict[str, int] = {}
        self.arrived = self.done = 0
        self.lam_factor = 1.0
        self.bin_counts: list[np.ndarray] = []
        self.bin_width: float | None = None
        self.cur_bin = np.zeros(n, dtype=np.int64)
        self.bin_end = 0.0
        self.n_total: float = cfg.n_requests  # the loop ends when this many requests are done
        self.step_pct = max(1, cfg.n_requests // 10)
        self.now = 0.0
        self.exclude_sets: dict[int, set] = {}
        self.arrival_t: dict[int, float] = {}
        self.attempts_of: dict[int, int] = {}
        self.handlers = {ARRIVAL: self.on_arrival, DEPART: self.on_depart, RETRY: self.on_retry,
                         MEASURE_START: self.on_measure_start, MEASURE_END: self.on_measure_end, ADOPT: self.on_adopt,
                         PUBLISH: self.on_publish, VISIBLE: self.on_visible, CHANGE: self.on_change}

    # ------------------------------------------------------------ plumbing
    def push(self, t: float, kind: int, a=None, b=None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, a, b))

    def service_time(self, rng: random.Random | None = None) -> float:
        rng = rng or self.rng
        if self.cfg.service == "lognormal":
            return rng.lognormvariate(-1.5 * 1.5 / 2.0, 1.5)
        return rng.expovariate(1.0)

    def touch(self, c: int, t: float) -> None:
        self.area[c] += self.nsys[c] * (t - self.last_t[c])
        self.last_t[c] = t

    def build_cands(self) -> None:
        self.cands = [CandidateSet([Candidate(self.ids[i], self.caps[i], self.measured[i], live=self.recs[r][i],
                                              remote=self.remotes[r][self.ids[i]] if self.variant.remote else None)
                                    for i in range(self.n)]) for r in range(self.R)]

    def finish(self, req: int) -> None:
        del self.arrival_t[req], self.attempts_of[req]
        self.exclude_sets.pop(req, None)
        self.done += 1
        if self.cfg.progress and self.done % self.step_pct == 0:
            self.cfg.progress(self.done / self.n_total)

    # ------------------------------------------------------------ routing
    def choose(self, req: int, r: int, t: float) -> int:
        exc = self.exclude_sets.get(req)
        if self.is_decide:
            n, ids = self.n, self.ids
            cs = self.cands[r]
            if self.cfg.instant_snapshot:
                cs = CandidateSet([Candidate(ids[i], self.caps[i], self.nsys[i] / self.caps[i]) for i in range(n)])
            d = decide(cs, self.strategy, self.drng[r], now=t, excluded=exc or (), replicas=self.replicas_seen[r],
                       snapshot_version=self.version, params=self.params)
            self.reasons[d.reason.value] = self.reasons.get(d.reason.value, 0) + 1
            return d.index
        return baseline_pick(self, r, exc)

    def attempt(self, req: int, r: int, t: float) -> None:
        c = self.choose(req, r, t)
        self.attempts += 1
        tok = self.lives[r].on_start(self.ids[c], t)
        self.own_in[r][c] += 1
        if self.reject and self.busy[c] >= self.caps[c]:
            self.rejected += 1
            self.push(t + self.cfg.rtt, RETRY, (req, r, c, tok), 429)
            return
        if self.reject and self.err_p[c] and self.rng.random() < self.err_p[c]:
            self.push(t + self.cfg.rtt, RETRY, (req, r, c, tok), 500)
            return
        self.touch(c, t)
        self.nsys[c] += 1
        self.starts[c] += 1
        self.cur_bin[c] += 1
        if self.busy[c] < self.caps[c]:
            self.busy[c] += 1
            self.begin(req, r, c, tok, t)
        else:
            self.queues[c].append((req, r, c, tok))

    def begin(self, req: int, r: int, c: int, tok: int, t: float) -> None:
        """Request ``req`` starts service on chute ``c`` (its slot is already counted in ``busy``)."""
        s = self.work_of.pop(req) if self.srng is not None else self.service_time()
        d = s / self.speed[c]
        if self.alpha:
            d *= 1.0 + self.alpha * self.busy[c] / self.caps[c]
        self.push(t + d, DEPART, (req, r, c, tok, s))

    # ------------------------------------------------------------ events
    def start_arrivals(self) -> None:
        self.push(self.arng.expovariate(self.lam), ARRIVAL)

    def on_arrival(self, t: float, a, b) -> None:
        req = self.arrived
        self.arrived += 1
        r = int(self.arng.random() * self.R)
        if self.srng is not None:
            self.work_of[req] = self.service_time(self.srng)
        self.arrival_t[req] = t
        self.attempts_of[req] = 1
        self.attempt(req, r, t)
        if self.arrived < self.cfg.n_requests:
            self.push(t + self.arng.expovariate(self.lam * self.lam_factor), ARRIVAL)
        if self.arrived == 2000:  # time bins for the load-share timeline, from the arrival rate seen
            self.bin_width = max(t / 2000 * self.cfg.n_requests / self.cfg.share_bins, 1e-9)
            self.bin_end = t + self.bin_width

    def on_depart(self, t: float, a, b) -> None:
        req, r, c, tok, work = a
        self.touch(c, t)
        self.nsys[c] -= 1
        self.report_success(req, r, tok, t, work)
        self.own_in[r][c] -= 1
        q = self.queues[c]
        if self.qhead[c] < len(q):
            nxt = q[self.qhead[c]]
            q[self.qhead[c]] = None
            self.qhead[c] += 1
            if self.qhead[c] > 1024:
                del q[: self.qhead[c]]
                self.qhead[c] = 0
            self.begin(*nxt, t)
        else:
            self.busy[c] -= 1
        self.served(req, c, t)

    def report_success(self, req: int, r: int, tok: int, t: float, work: float) -> None:
        self.lives[r].on_end(tok, t, "success", work)  # work = the request's size (its "tokens")

    def served(self, req: int, c: int, t: float) -> None:
        """Request ``req`` got its answer from chute ``c`` at ``t``."""
        if req >= self.warm:
            self.lat[self.nlat] = t - self.arrival_t[req]
            self.nlat += 1
        self.finish(req)

    def gave_up(self, req: int, t: float) -> None:
        """Request ``req`` used its last attempt without an answer."""
        self.failed += 1
        self.finish(req)

    def on_retry(self, t: float, a, status) -> None:
        req, r, c, tok = a
        self.lives[r].on_end(tok, t, "rate_limited" if status == 429 else "error")
        self.own_in[r][c] -= 1
        k = self.attempts_of[req]
        if k >= self.cfg.max_attempts:
            self.gave_up(req, t)
            return
        self.attempts_of[req] = k + 1
        self.exclude_sets.setdefault(req, set()).add(self.ids[c])
        self.attempt(req, r, t)

    def on_measure_start(self, t: float, a, b) -> None:
        for c in range(self.n):
            self.touch(c, t)
            self.area_at_start[c] = self.area[c]

    def on_measure_end(self, t: float, a, b) -> None:
        snap = []
        for c in range(self.n):
            self.touch(c, t)
            snap.append((self.area[c] - self.area_at_start[c]) / self.cfg.window / self.caps[c])
        self.push(t + self.cfg.lag, ADOPT, snap)
        self.push(t + self.cfg.refresh - self.cfg.window, MEASURE_START)
        self.push(t + self.cfg.refresh, MEASURE_END)

    def on_adopt(self, t: float, snap, b) -> None:
        self.version += 1
        self.measured[:] = snap
        self.build_cands()
        for lv in self.lives:
            lv.on_snapshot(self.version, t)

    def on_publish(self, t: float, a, b) -> None:
        entries = [(f"replica-{r}", lv.export_counts(t), t) for r, lv in enumerate(self.lives)]
        self.push(t + self.cfg.share_delay, VISIBLE, entries)
        self.push(t + self.cfg.share_interval, PUBLISH)

    def on_visible(self, t: float, entries, b) -> None:
        for r in range(self.R):  # the production exchange, one replica at a time
            self.replicas_seen[r] = exchange(entries, f"replica-{r}", self.remotes[r], self.lives[r])

    def on_change(self, t: float, a, b) -> None:
        what, idx, x = a
        if what == "speed":
            self.speed[idx] = x
        elif what == "load":
            self.lam_factor = x
        elif what == "errors":
            self.err_p[idx] = x

    # ------------------------------------------------------------ the loop
    def run(self) -> SimResult:
        t0 = time.perf_counter()
        cfg = self.cfg
        self.build_cands()
        for lv in self.lives:
            lv.on_snapshot(self.version, 0.0)
        self.start_arrivals()
        if not cfg.instant_snapshot:
            self.push(max(0.0, cfg.refresh - cfg.window), MEASURE_START)
            self.push(cfg.refresh, MEASURE_END)
        if self.sharing:
            self.push(cfg.share_interval, PUBLISH)
        for (tc, what, idx, x) in cfg.changes:
            self.push(tc, CHANGE, (what, idx, x))
        heap, handlers = self.heap, self.handlers
        while heap:
            t, _, kind, a, b = heapq.heappop(heap)
            self.now = t
            if self.bin_width is not None and t >= self.bin_end:
                while t >= self.bin_end:
                    self.bin_counts.append(self.cur_bin.copy())
                    self.cur_bin[:] = 0
                    self.bin_end += self.bin_width
            handlers[kind](t, a, b)
            if self.done >= self.n_total:
                break
        return self.result(time.perf_counter() - t0)

    def result(self, wall: float) -> SimResult:
        if self.bin_width is not None:
            self.bin_counts.append(self.cur_bin.copy())
        tl = np.array(self.bin_counts, dtype=float) if self.bin_counts else np.zeros((0, self.n))
        sums = tl.sum(axis=1, keepdims=True)
        tl = np.divide(tl, sums, out=np.zeros_like(tl), where=sums > 0)
        anomalies: dict[str, int] = {}
        for lv in self.lives:
            for k, v in lv.anomalies.items():
                anomalies[k] = anomalies.get(k, 0) + v
        return SimResult(strategy=self.cfg.strategy, mode=self.cfg.mode, n=self.cfg.n_requests,
                         latencies=self.lat[:self.nlat].copy(), attempts=self.attempts, rejected=self.rejected,
                         failed=self.failed, starts=self.starts, cap_share=np.array(self.caps, dtype=float) / self.total_cap,
                         share_timeline=tl, reasons=self.reasons, sim_time=self.now, wall=wall, anomalies=anomalies)


def run(cfg: SimConfig) -> SimResult:
    """One run: requests, or sessions when ``cfg.sessions`` is set."""
    if cfg.sessions is not None:
        from benchmarks.des.session_sim import SessionSimulation  # session mode builds on this module

        return SessionSimulation(cfg).run()
    return Simulation(cfg).run()
