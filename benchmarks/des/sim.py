"""Discrete-event simulation of R router replicas in front of chutes with c_i slots.

It imports the real :func:`chutes_lb.routing.decision.decide` and the real
:class:`chutes_lb.routing.live.LiveState` (no copies). Time unit = one mean service time
(think ~10 s for an LLM request, so 0.1 ~ 1 s).

- Arrivals: Poisson, each to a uniformly random replica; rate ``load x sum(c_i)`` (x step factor).
- Service: exponential (mean 1) or lognormal (sigma 1.5, mean 1: heavy-tailed), divided by the
  chute's speed (1 unless a ``degrade`` event slows it).
- ``reject`` mode: an attempt beyond c_i in flight is answered 429 after ``rtt``; the replica
  records it (``on_end(..., "rate_limited")``) and retries through the same decision with that chute
  excluded, up to ``max_attempts``; then the request fails. ``queue`` mode: FIFO queue per chute.
- Snapshot: at every ``k x refresh`` the time-average of open connections / c_i over the last
  ``window`` is measured; replicas adopt it ``lag`` later (``on_snapshot``). Data age thus ranges
  from ``lag`` to ``refresh + lag`` (+ the window).
- Shared in-flight counts: every ``share_interval`` each replica's ``export_counts()`` is published;
  the others see the sum (through the real ``aggregate_remote``) ``share_delay`` later.
- Extra strategies here (not in decide): ``least-busy`` (per-process min of own in-flight, ties to
  the first, LiteLLM's least-busy), ``oracle-jsq`` (max true free slots, instant), ``oracle-p2c``
  (two capacity-weighted samples, true free slots). ``headroom:<variant>`` runs ablations.
"""
from __future__ import annotations

import heapq
import math
import random
import time
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from chutes_lb.routing.decision import Candidate, CandidateSet, HeadroomParams, decide
from chutes_lb.routing.live import LiveState, RemoteCounts, aggregate_remote

# Ablations of the headroom strategy, selected as "headroom:<name>".
VARIANTS: dict[str, dict] = {
    "": {},
    # the reference findings' estimator: no shared counts, no 429 hold, two samples, best of them
    "findings": dict(use_remote=False, use_penalty=False, extra_samples=0, fallback="best_sampled"),
    "no-remote": dict(use_remote=False),
    "remote-only": dict(remote_weight=1.0, delay_correction=False),  # shared counts taken as they are
    "sharepen": dict(share_penalty=True),
    "no-penalty": dict(use_penalty=False),
    "no-third": dict(extra_samples=0),
    "best-sampled": dict(fallback="best_sampled"),
    "scan": dict(fallback="scan"),
    "no-survival": dict(use_survival=False),
    "uniform": dict(uniform_sampling=True),
    "no-errors": dict(use_errors=False),
    "no-speed": dict(use_speed=False),
}

ARRIVAL, DEPART, RETRY, MEASURE_START, MEASURE_END, ADOPT, PUBLISH, VISIBLE, CHANGE = range(9)


@dataclass
class SimConfig:
    caps: list[int]
    strategy: str = "headroom"
    mode: str = "queue"  # "queue" | "reject"
    load: float = 0.9
    replicas: int = 4
    n_requests: int = 100_000
    service: str = "exp"  # "exp" | "lognormal"
    refresh: float = 60.0
    lag: float = 10.0
    window: float = 15.0
    share_interval: float = 0.1
    share_delay: float = 0.1
    max_attempts: int = 3
    rtt: float = 0.05
    penalty_seconds: float = 6.0  # LiveState 429 penalty cap, in service-time units
    remote_max_age: float = 0.5
    error_prob: dict[int, float] = field(default_factory=dict)  # chute index -> P(error) (reject mode)
    changes: list[tuple[float, str, int, float]] = field(default_factory=list)  # (t, "speed"|"load", idx, x)
    warmup_frac: float = 0.1
    seed: int = 1
    share_bins: int = 40
    progress: Callable[[float], None] | None = None
    instant_snapshot: bool = False  # snapshot = true state at every decision (validation only)


@dataclass
class SimResult:
    strategy: str
    mode: str
    n: int
    latencies: np.ndarray
    attempts: int
    rejected: int
    failed: int
    starts: np.ndarray
    cap_share: np.ndarray
    share_timeline: np.ndarray  # bins x chutes: fraction of starts
    reasons: dict[str, int]
    sim_time: float
    wall: float
    anomalies: dict[str, int]

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.attempts if self.attempts else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if len(self.latencies) else math.nan

    @property
    def mean(self) -> float:
        return float(self.latencies.mean()) if len(self.latencies) else math.nan

    @property
    def load_share(self) -> np.ndarray:
        s = self.starts.sum()
        return self.starts / s if s else self.starts


def run(cfg: SimConfig) -> SimResult:
    t0 = time.perf_counter()
    n = len(cfg.caps)
    caps = [int(c) for c in cfg.caps]
    ids = [f"chute-{i:03d}" for i in range(n)]
    R = max(1, cfg.replicas)
    base, _, variant = cfg.strategy.partition(":")
    params = replace(HeadroomParams(remote_max_age=cfg.remote_max_age, default_latency=1.0, speed_memory=6.0), **VARIANTS[variant])
    is_decide = base in ("headroom", "least-utilization", "shuffle", "weighted-shuffle")
    sharing = base == "headroom" and params.use_remote
    rng = random.Random(cfg.seed)
    drng = [random.Random(cfg.seed * 1000 + r) for r in range(R)]
    lives = [LiveState(penalty_seconds=cfg.penalty_seconds, error_half_life=3.0, fleet_every=0.1) for _ in range(R)]
    recs = [[lv.chute(cid) for cid in ids] for lv in lives]
    remotes = [{cid: RemoteCounts() for cid in ids} for _ in range(R)]
    total_cap = float(sum(caps))
    lam = cfg.load * total_cap
    speed = [1.0] * n
    busy = [0] * n  # in service
    nsys = [0] * n  # in system (service + queue)
    queues: list[list] = [[] for _ in range(n)]
    qhead = [0] * n
    area = [0.0] * n
    last_t = [0.0] * n
    area_at_start = [0.0] * n
    measured: list[float | None] = [0.0] * n
    own_in = [[0] * n for _ in range(R)]  # for least-busy
    version = 0
    cands: list[CandidateSet] = []
    reject = cfg.mode == "reject"
    queue_mode = not reject
    heavy = cfg.service == "lognormal"
    sig = 1.5
    mu_ln = -sig * sig / 2.0
    expo = rng.expovariate
    lognorm = rng.lognormvariate
    err_p = [cfg.error_prob.get(i, 0.0) for i in range(n)]
    cum = [float(x) for x in np.cumsum(caps)]

    def build_cands() -> None:
        cands.clear()
        for r in range(R):
            cands.append(CandidateSet([
                Candidate(ids[i], caps[i], measured[i], live=recs[r][i], remote=remotes[r][ids[i]])
                for i in range(n)
            ]))

    build_cands()
    for lv in lives:
        lv.on_snapshot(version, 0.0)

    heap: list = []
    seq = 0

    def push(t: float, kind: int, a=None, b=None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, a, b))

    push(expo(lam), ARRIVAL)
    if not cfg.instant_snapshot:
        push(max(0.0, cfg.refresh - cfg.window), MEASURE_START)
        push(cfg.refresh, MEASURE_END)
    if sharing:
        push(cfg.share_interval, PUBLISH)
    for (tc, what, idx, x) in cfg.changes:
        push(tc, CHANGE, (what, idx, x))

    warm = int(cfg.n_requests * cfg.warmup_frac)
    lat = np.empty(cfg.n_requests, dtype=np.float64)
    nlat = 0
    attempts = rejected = failed = 0
    starts = np.zeros(n, dtype=np.int64)
    reasons: dict[str, int] = {}
    arrived = 0
    done = 0
    lam_factor = 1.0
    bin_counts: list[np.ndarray] = []
    bin_width = None
    cur_bin = np.zeros(n, dtype=np.int64)
    bin_end = 0.0
    step_pct = max(1, cfg.n_requests // 10)
    now = 0.0
    exclude_sets: dict[int, set] = {}
    arrival_t: dict[int, float] = {}
    attempts_of: dict[int, int] = {}
    replica_of: dict[int, int] = {}
    snap_cands_true: CandidateSet | None = None

    def touch(c: int, t: float) -> None:
        area[c] += nsys[c] * (t - last_t[c])
        last_t[c] = t

    def choose(req: int, r: int, t: float) -> int:
        exc = exclude_sets.get(req)
        if is_decide:
            cs = cands[r]
            if cfg.instant_snapshot:
                cs = CandidateSet([Candidate(ids[i], caps[i], nsys[i] / caps[i], live=None) for i in range(n)])
            d = decide(cs, base, drng[r], now=t, excluded=exc or (), replicas=R,
                       snapshot_version=version, params=params)
            reasons[d.reason.value] = reasons.get(d.reason.value, 0) + 1
            return d.index
        avail = range(n) if not exc else [i for i in range(n) if ids[i] not in exc] or range(n)
        if base == "least-busy":
            arr = own_in[r]
            return min(avail, key=arr.__getitem__)
        if base == "oracle-jsq":
            return max(avail, key=lambda i: caps[i] - nsys[i])
        if base == "oracle-p2c":
            g = drng[r]
            pick = []
            for _ in range(16):
                i = bisect_right(cum, g.random() * total_cap)
                i = i if i < n else n - 1
                if not exc or ids[i] not in exc:
                    pick.append(i)
                    if len(pick) == 2:
                        break
            if len(pick) < 2:
                return max(avail, key=lambda i: caps[i] - nsys[i])
            a, b = pick
            return a if caps[a] - nsys[a] >= caps[b] - nsys[b] else b
        raise ValueError(f"unknown strategy {cfg.strategy}")

    def attempt(req: int, r: int, t: float) -> None:
        nonlocal attempts, rejected
        c = choose(req, r, t)
        attempts += 1
        tok = lives[r].on_start(ids[c], t)
        own_in[r][c] += 1
        if reject and busy[c] >= caps[c]:
            rejected += 1
            push(t + cfg.rtt, RETRY, (req, r, c, tok), 429)
            return
        if reject and err_p[c] and rng.random() < err_p[c]:
            push(t + cfg.rtt, RETRY, (req, r, c, tok), 500)
            return
        touch(c, t)
        nsys[c] += 1
        starts[c] += 1
        cur_bin[c] += 1
        if busy[c] < caps[c]:
            busy[c] += 1
            s = lognorm(mu_ln, sig) if heavy else expo(1.0)
            push(t + s / speed[c], DEPART, (req, r, c, tok, s))
        else:
            queues[c].append((req, r, c, tok))

    while heap:
        t, _, kind, a, b = heapq.heappop(heap)
        now = t
        if bin_width is not None and t >= bin_end:
            while t >= bin_end:
                bin_counts.append(cur_bin.copy())
                cur_bin[:] = 0
                bin_end += bin_width
        if kind == ARRIVAL:
            req = arrived
            arrived += 1
            r = int(rng.random() * R)
            arrival_t[req] = t
            attempts_of[req] = 1
            attempt(req, r, t)
            if arrived < cfg.n_requests:
                push(t + expo(lam * lam_factor), ARRIVAL)
            elif bin_width is None:
                pass
            if arrived == 2000:  # time bins for the load-share timeline, from the arrival rate seen
                bin_width = max(t / 2000 * cfg.n_requests / cfg.share_bins, 1e-9)
                bin_end = t + bin_width
        elif kind == DEPART:
            req, r, c, tok, work = a
            touch(c, t)
            nsys[c] -= 1
            lives[r].on_end(tok, t, "success", work)  # work = the request's size (its "tokens")
            own_in[r][c] -= 1
            q = queues[c]
            if qhead[c] < len(q):
                nxt = q[qhead[c]]
                q[qhead[c]] = None
                qhead[c] += 1
                if qhead[c] > 1024:
                    del q[: qhead[c]]
                    qhead[c] = 0
                s = lognorm(mu_ln, sig) if heavy else expo(1.0)
                push(t + s / speed[c], DEPART, (*nxt, s))
            else:
                busy[c] -= 1
            if req >= warm:
                lat[nlat] = t - arrival_t[req]
                nlat += 1
            del arrival_t[req], attempts_of[req]
            exclude_sets.pop(req, None)
            done += 1
            if cfg.progress and done % step_pct == 0:
                cfg.progress(done / cfg.n_requests)
        elif kind == RETRY:
            req, r, c, tok = a
            lives[r].on_end(tok, t, "rate_limited" if b == 429 else "error")
            own_in[r][c] -= 1
            k = attempts_of[req]
            if k >= cfg.max_attempts:
                failed += 1
                del arrival_t[req], attempts_of[req]
                exclude_sets.pop(req, None)
                done += 1
                if cfg.progress and done % step_pct == 0:
                    cfg.progress(done / cfg.n_requests)
                continue
            attempts_of[req] = k + 1
            exclude_sets.setdefault(req, set()).add(ids[c])
            attempt(req, r, t)
        elif kind == MEASURE_START:
            for c in range(n):
                touch(c, t)
                area_at_start[c] = area[c]
        elif kind == MEASURE_END:
            snap = []
            for c in range(n):
                touch(c, t)
                snap.append((area[c] - area_at_start[c]) / cfg.window / caps[c])
            push(t + cfg.lag, ADOPT, snap)
            push(t + cfg.refresh - cfg.window, MEASURE_START)
            push(t + cfg.refresh, MEASURE_END)
        elif kind == ADOPT:
            version += 1
            measured[:] = a
            build_cands()
            for lv in lives:
                lv.on_snapshot(version, t)
        elif kind == PUBLISH:
            exports = [lv.export_counts(t) for lv in lives]
            push(t + cfg.share_delay, VISIBLE, (exports, t))
            push(t + cfg.share_interval, PUBLISH)
        elif kind == VISIBLE:
            exports, tm = a
            total = aggregate_remote([(e, tm) for e in exports])
            for r in range(R):
                own = exports[r]
                rem = remotes[r]
                for cid, tot in total.items():
                    rc = rem[cid]
                    o = own.get(cid)
                    if o is None:
                        rc.in_flight, rc.new_inflight, rc.last_429_at = tot.in_flight, tot.new_inflight, tot.last_429_at
                    else:
                        rc.in_flight = tot.in_flight - o["in_flight"]
                        rc.new_inflight = tot.new_inflight - o["new_inflight"]
                        rc.last_429_at = tot.last_429_at  # own 429s are known locally anyway
                    rc.measured_at = tm
                    rc.own_started_mark = own[cid]["started_total"] if cid in own else 0
        elif kind == CHANGE:
            what, idx, x = a
            if what == "speed":
                speed[idx] = x
            elif what == "load":
                lam_factor = x
            elif what == "errors":
                err_p[idx] = x
        if done >= cfg.n_requests:
            break
    if bin_width is not None:
        bin_counts.append(cur_bin.copy())
    tl = np.array(bin_counts, dtype=float) if bin_counts else np.zeros((0, n))
    sums = tl.sum(axis=1, keepdims=True)
    tl = np.divide(tl, sums, out=np.zeros_like(tl), where=sums > 0)
    anomalies: dict[str, int] = {}
    for lv in lives:
        for k, v in lv.anomalies.items():
            anomalies[k] = anomalies.get(k, 0) + v
    return SimResult(
        strategy=cfg.strategy, mode=cfg.mode, n=cfg.n_requests, latencies=lat[:nlat].copy(),
        attempts=attempts, rejected=rejected, failed=failed, starts=starts,
        cap_share=np.array(caps, dtype=float) / total_cap, share_timeline=tl, reasons=reasons,
        sim_time=now, wall=time.perf_counter() - t0, anomalies=anomalies,
    )
