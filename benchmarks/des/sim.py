"""Discrete-event simulation of R router replicas in front of chutes with c_i slots.

It runs the production routing code as the proxy composes it: each simulated replica (worker)
holds a :class:`chutes_lb.routing.core.RoutingCore` (the DES's clock, a seeded rng,
:class:`~chutes_lb.routing.metrics.RecordingMetrics`, the production ``HeadroomParams`` in the
DES's time unit), every attempt of a request is opened (``RoutingCore.pick``) and closed
(``success`` / ``rate_limited`` / ``error``) by one :class:`chutes_lb.routing.attempts.UpstreamCall`,
snapshots are ``chutes_lb.snapshot.model.Snapshot`` objects the cores ``adopt()``, and the
in-flight counts travel through ``export_counts()`` / ``exchanged()``. No copies. Time unit = one
mean service time (think ~10 s for an LLM request, so 0.1 ~ 1 s).

- Arrivals: Poisson, each to a uniformly random replica; rate ``load x sum(c_i)`` (x step factor).
- Service: exponential (mean 1) or lognormal (sigma 1.5, mean 1: heavy-tailed), divided by the
  chute's speed (1 unless a ``degrade`` event slows it).
- ``reject`` mode: an attempt beyond c_i in flight is answered 429 after ``rtt``; the request's
  ``UpstreamCall`` closes it ``rate_limited`` and opens the next attempt (the core never goes back
  to a chute the request tried), up to ``max_attempts``; then the request fails. ``queue`` mode:
  FIFO per chute.
- Snapshot: at every ``k x refresh`` the time-average of open connections / c_i over the last
  ``window`` is measured; replicas adopt it ``lag`` later (``RoutingCore.adopt``: one
  ``ChuteStats`` per chute, one instance of c_i slots, never stale). Data age thus ranges from
  ``lag`` to ``refresh + lag`` (+ the window).
- Shared in-flight counts: every ``share_interval`` each replica's ``export_counts()`` is
  published; ``share_delay`` later every replica folds the others' in with ``exchanged`` (as the
  proxy's in-flight loop does, including R = 1 + the replicas seen).
- Occupancy (``alpha``, issue 14): service time x (1 + alpha x busy/c_i) at the start of service,
  busy counting the request itself, as the simulator's load factor. ``alpha = 0``: as before.
- ``common_streams``: arrivals, replica choice and service demands on streams of their own, so
  every strategy sees the same schedule for a seed (``--seeds``); off = one stream, as before.
- Strategies: a name of ``decision.REGISTRY``; the baselines that are not strategies of the product
  (:mod:`benchmarks.des.baselines`) and the ablations ``headroom:<variant>``
  (:mod:`benchmarks.des.variants`) are records with procedures of their own, run by the same cores.
  Sessions with a prefix cache and affinity: :class:`benchmarks.des.session_sim.SessionSimulation`,
  a subclass using the hooks below.

:class:`Simulation` is the event loop: one handler method per event kind. Hooks a subclass may
override: ``routing_config``, ``start_arrivals``, ``affinity_key``, ``begin`` (service starts),
``report_success``, ``served`` (answer received), ``gave_up`` (last attempt failed).
"""
from __future__ import annotations

import heapq
import math
import random
import time

import numpy as np

from benchmarks.des.baselines import BASELINES, baseline
from benchmarks.des.config import SimConfig, SimResult
from benchmarks.des.variants import variant
from chutes_lb.fleet import ChuteRef
from chutes_lb.routing.attempts import UpstreamCall, Usage
from chutes_lb.routing.core import RoutingConfig, RoutingCore
from chutes_lb.routing.decision import Strategy, strategy_of
from chutes_lb.routing.estimate import HeadroomParams
from chutes_lb.routing.live import LiveState
from chutes_lb.routing.metrics import RecordingMetrics
from chutes_lb.snapshot.model import SCHEMA_VERSION, ChuteStats, Snapshot

ARRIVAL, DEPART, RETRY, MEASURE_START, MEASURE_END, ADOPT, PUBLISH, VISIBLE, CHANGE = range(9)

__all__ = ["Simulation", "SimConfig", "SimResult", "run", "chute_stats"]


def chute_stats(chute_id: str, utilization: float) -> ChuteStats:
    """One chute's snapshot entry as the DES measures it: one instance (of c_i slots), its
    utilization over the window; no 429s reported by the API."""
    return ChuteStats(chute_id, chute_id, utilization, utilization, utilization, utilization, 0.0, 0.0, 0.0,
                      0.0, 0.0, 1, 1, 1, None, "", False, "")


class Simulation:
    """One run: state, the event heap and one handler per event kind."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.n = n = len(cfg.caps)
        self.caps = [int(c) for c in cfg.caps]
        self.ids = [f"chute-{i:03d}" for i in range(n)]
        self.R = R = max(1, cfg.replicas)
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        self.deployments = tuple(self.ids)  # deployment id = chute id
        self.base, _, vname = cfg.strategy.partition(":")
        self.variant = variant(vname)
        self.params = self.variant.headroom_params(HeadroomParams(remote_max_age=cfg.remote_max_age, default_latency=1.0, speed_memory=6.0))
        self.strategy = self.strategy_record(vname)
        if cfg.instant_snapshot and self.strategy.reads_snapshot:
            raise ValueError("instant_snapshot (validation) is for strategies that do not read the snapshot")
        self.sharing = self.base in ("headroom", "headroom-slots") and self.variant.remote  # as in production: both read the shared counts
        self.rng = random.Random(cfg.seed)
        # common_streams: arrivals + replica choice and service demands on streams of their own
        self.arng = random.Random(cfg.seed * 7919 + 1) if cfg.common_streams else self.rng
        self.srng = random.Random(cfg.seed * 7919 + 2) if cfg.common_streams else None
        self.work_of: dict[int, float] = {}
        self.alpha = cfg.alpha
        self.drng = [random.Random(cfg.seed * 1000 + r) for r in range(R)]
        # one RoutingCore per replica (worker); one metrics object counts for the whole fleet
        self.metrics = RecordingMetrics()
        refs = [ChuteRef(cid, cid, "des", concurrency=c) for cid, c in zip(self.ids, self.caps)]
        routing = self.routing_config()
        self.cores = [RoutingCore(refs, routing, self.metrics, clock=self.clock, rng=self.drng[r], worker_id=f"replica-{r}",
                                  live=LiveState(penalty_seconds=cfg.penalty_seconds, error_half_life=3.0, fleet_every=0.1))
                      for r in range(R)]
        self.lives = [core.live for core in self.cores]
        if not self.sharing:  # R as each replica knows it: 1 + the replicas its last exchange saw
            for core in self.cores:  # (production); the no-sharing ablations are told R, as "R x own" needs it
                core.replicas = R
        self.calls: dict[int, UpstreamCall] = {}
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
        self.version = 0
        self.reject = cfg.mode == "reject"
        self.err_p = [cfg.error_prob.get(i, 0.0) for i in range(n)]
        self.heap: list = []
        self.seq = 0
        self.warm = int(cfg.n_requests * cfg.warmup_frac)
        self.lat = np.empty(cfg.n_requests, dtype=np.float64)
        self.nlat = 0
        self.attempts = self.rejected = self.failed = 0
        self.starts = np.zeros(n, dtype=np.int64)
        self.arrived = self.done = 0
        self.lam_factor = 1.0
        self.bin_counts: list[np.ndarray] = []
        self.bin_width: float | None = None
        self.cur_bin = np.zeros(n, dtype=np.int64)
        self.bin_end = 0.0
        self.n_total: float = cfg.n_requests  # the loop ends when this many requests are done
        self.step_pct = max(1, cfg.n_requests // 10)
        self.now = 0.0
        self.arrival_t: dict[int, float] = {}
        self.attempts_of: dict[int, int] = {}
        self.handlers = {ARRIVAL: self.on_arrival, DEPART: self.on_depart, RETRY: self.on_retry,
                         MEASURE_START: self.on_measure_start, MEASURE_END: self.on_measure_end, ADOPT: self.on_adopt,
                         PUBLISH: self.on_publish, VISIBLE: self.on_visible, CHANGE: self.on_change}

    # ------------------------------------------------------------ routing set-up
    def strategy_record(self, vname: str) -> Strategy:
        """The registry record the cores run: a product strategy by name, a baseline, or an ablation."""
        if self.base in BASELINES:
            return baseline(self.base, self)
        if self.base == "headroom" and vname:
            return self.variant.record(self.cfg.strategy)
        return strategy_of(self.base)

    def routing_config(self) -> RoutingConfig:
        """The cores' configuration: the production one, in the DES's time unit (a snapshot
        never goes stale: the DES measures its age itself); session mode adds affinity."""
        return RoutingConfig(strategy=self.strategy, params=self.params, stale_seconds=math.inf, affinity=False)

    def clock(self) -> float:
        return self.now

    def snapshot(self, utilization: list[float]) -> Snapshot:
        return Snapshot(SCHEMA_VERSION, self.version, self.now, "",
                        {cid: chute_stats(cid, u) for cid, u in zip(self.ids, utilization)}, "des")

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

    def finish(self, req: int) -> None:
        del self.arrival_t[req], self.attempts_of[req]
        del self.calls[req]
        self.done += 1
        if self.cfg.progress and self.done % self.step_pct == 0:
            self.cfg.progress(self.done / self.n_total)

    # ------------------------------------------------------------ routing
    def affinity_key(self, req: int) -> int | None:
        """The session key the proxy would pass with this request (none for plain requests)."""
        return None

    def attempt(self, req: int, r: int, t: float) -> None:
        call = self.calls.get(req)
        if call is None:
            call = self.calls[req] = UpstreamCall(self.cores[r], str(req), affinity_key=self.affinity_key(req))
        c = self.index[call.open(self.deployments)]
        self.attempts += 1
        if self.reject and self.busy[c] >= self.caps[c]:
            self.rejected += 1
            self.push(t + self.cfg.rtt, RETRY, (req, r, c), 429)
            return
        if self.reject and self.err_p[c] and self.rng.random() < self.err_p[c]:
            self.push(t + self.cfg.rtt, RETRY, (req, r, c), 500)
            return
        self.touch(c, t)
        self.nsys[c] += 1
        self.starts[c] += 1
        self.cur_bin[c] += 1
        if self.busy[c] < self.caps[c]:
            self.busy[c] += 1
            self.begin(req, r, c, t)
        else:
            self.queues[c].append((req, r, c))

    def begin(self, req: int, r: int, c: int, t: float) -> None:
        """Request ``req`` starts service on chute ``c`` (its slot is already counted in ``busy``)."""
        s = self.work_of.pop(req) if self.srng is not None else self.service_time()
        d = s / self.speed[c]
        if self.alpha:
            d *= 1.0 + self.alpha * self.busy[c] / self.caps[c]
        self.push(t + d, DEPART, (req, r, c, s))

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
        req, r, c, work = a
        self.touch(c, t)
        self.nsys[c] -= 1
        self.report_success(req, t, work)
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

    def report_success(self, req: int, t: float, work: float) -> None:
        self.calls[req].close("success", usage=Usage(work, None))  # work = the request's size (its "tokens")

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
        req, r, c = a
        self.calls[req].close("rate_limited" if status == 429 else "error")
        k = self.attempts_of[req]
        if k >= self.cfg.max_attempts:
            self.gave_up(req, t)
            return
        self.attempts_of[req] = k + 1
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
        adopted = self.snapshot(snap)
        for core in self.cores:
            core.adopt(adopted)

    def on_publish(self, t: float, a, b) -> None:
        entries = [(core.worker_id, core.export_counts(), t) for core in self.cores]
        self.push(t + self.cfg.share_delay, VISIBLE, entries)
        self.push(t + self.cfg.share_interval, PUBLISH)

    def on_visible(self, t: float, entries, b) -> None:
        for core in self.cores:  # the production exchange, one replica at a time
            core.exchanged(entries)

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
        adopted = self.snapshot(self.measured)
        for core in self.cores:
            core.adopt(adopted)
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

    def reasons(self) -> dict[str, int]:
        """Decisions per reason (and per affinity outcome, ``affinity_<outcome>``), from the cores' metrics."""
        out: dict[str, int] = {}
        for key, v in self.metrics.counts.items():
            if key[0] == "decision":
                out[key[2]] = out.get(key[2], 0) + v
            elif key[0] == "affinity":
                out[f"affinity_{key[2]}"] = out.get(f"affinity_{key[2]}", 0) + v
        return out

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
                         share_timeline=tl, reasons=self.reasons(), sim_time=self.now, wall=wall, anomalies=anomalies)


def run(cfg: SimConfig) -> SimResult:
    """One run: requests, or sessions when ``cfg.sessions`` is set."""
    if cfg.sessions is not None:
        from benchmarks.des.session_sim import SessionSimulation  # session mode builds on this module

        return SessionSimulation(cfg).run()
    return Simulation(cfg).run()
