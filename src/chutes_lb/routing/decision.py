"""The routing decision: data in, data out. No Redis, HTTP or LiteLLM; the random source is injected.

:func:`decide` picks one chute among :class:`Candidate` objects with one of :data:`STRATEGIES`:

- ``headroom`` (default): power of two choices, the two candidates sampled in proportion to
  capacity, the one with more estimated free slots wins. Estimated busy slots:
  ``survival x snapshot_busy + new_inflight_all`` where ``new_inflight_all`` is the in-flight
  requests started since the snapshot by *every* worker (own + shared remote counts when fresh,
  else ``R x own``), and never less than the fresh shared in-flight total. A chute that answered
  429 counts as full until the next snapshot (or ``penalty_seconds``); a decaying error score
  shrinks a chute's headroom. A chute whose typical request takes more than ``slow_ratio`` x as long
  as on the fleet (:meth:`ChuteLive.slowness`: TTFT + decode pace from this process's own
  responses) is overflow: its free slots count only against a chute with none (its latency would
  be the tail). When both samples look full: a third sample, then a fallback in
  proportion to capacity among chutes without a 429 penalty.
- ``least-utilization``: argmin of snapshot ``utilization_current``, ties to the first (the seed
  rule; herds on a shared stale snapshot: kept only for comparison).
- ``shuffle``: uniform random (LiteLLM simple-shuffle).
- ``weighted-shuffle``: random in proportion to capacity (the fair baseline).

Excluded ids (chutes that already failed within this request) are never returned while another
candidate is available; if every candidate is excluded the full list is used
(``Decision.excluded_ignored``). Degenerate inputs never raise: NaN/negative/None capacity or
utilization count as unknown; all-zero capacities mean equal weights.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from enum import Enum
from itertools import accumulate
from typing import Collection, NamedTuple, Protocol, Sequence

from chutes_lb.routing.live import ChuteLive, RemoteCounts

__all__ = [
    "STRATEGIES",
    "DEFAULT_STRATEGY",
    "Reason",
    "Candidate",
    "CandidateSet",
    "candidate_set",
    "HeadroomParams",
    "DEFAULT_PARAMS",
    "Decision",
    "decide",
    "is_slow",
    "RandomLike",
]

STRATEGIES: tuple[str, ...] = ("headroom", "least-utilization", "shuffle", "weighted-shuffle")
DEFAULT_STRATEGY = "headroom"


class Reason(str, Enum):
    """Why a chute was chosen: a fixed, small label set for metrics."""

    P2C = "p2c"  # headroom: the better of two capacity-weighted samples had free slots
    THIRD_SAMPLE = "third_sample"  # headroom: both looked full, an extra sample had room
    BEST_SAMPLED = "best_sampled"  # headroom: all samples looked full, least-overloaded taken
    SCAN_FALLBACK = "scan_fallback"  # headroom: samples looked full, a full scan found room
    PROPORTIONAL_FALLBACK = "proportional_fallback"  # headroom: all full, random by capacity
    ALL_PENALIZED = "all_penalized"  # headroom: every candidate had a 429 penalty
    SLOW_OVERFLOW = "slow_overflow"  # headroom: only a markedly slow chute had room among the samples
    NO_SNAPSHOT_LIVE = "no_snapshot_live"  # headroom without any snapshot: live counts only
    ONLY_CANDIDATE = "only_candidate"  # one usable candidate
    ARGMIN = "argmin"  # least-utilization
    RANDOM = "random"  # shuffle
    WEIGHTED_RANDOM = "weighted_random"  # weighted-shuffle


class RandomLike(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True, slots=True, eq=False)
class Candidate:
    """One chute as the decision sees it. Build once per snapshot; ``live``/``remote`` are the
    long-lived mutable records from :mod:`chutes_lb.routing.live`, read at decision time.

    ``capacity``: slots = active_instance_count x concurrency from the snapshot, or the
    configured fallback when there is no usable snapshot. ``utilization``: snapshot
    ``utilization_current`` (0..1) or None when missing/stale. ``utilization_5m`` and
    ``rate_limit_ratio`` are carried for explanations/logs."""

    chute_id: str
    capacity: float
    utilization: float | None = None
    utilization_5m: float | None = None
    rate_limit_ratio: float | None = None
    live: ChuteLive | None = None
    remote: RemoteCounts | None = None


@dataclass(frozen=True, slots=True)
class HeadroomParams:
    """Knobs of the ``headroom`` strategy (defaults chosen with the DES, see benchmarks/des)."""

    remote_max_age: float = 5.0  # shared counts older than this are ignored (-> R x own)
    penalty_slots: float = 1.0  # 429 hold = this many slot-free times: latency / capacity
    default_latency: float = 10.0  # seconds, when a chute has no latency EWMA yet
    use_remote: bool = True
    remote_weight: float = 0.5  # others' counts = w x shared + (1 - w) x (R - 1) x own
    inflight_floor: bool = True  # with fresh shared counts, est >= total in-flight
    share_penalty: bool = False  # avoid chutes other workers saw 429 (DES: herds, off)
    delay_correction: bool = True  # age shared counts: decay by latency, add x own starts since
    use_survival: bool = True
    use_penalty: bool = True
    use_errors: bool = True
    use_speed: bool = True  # slow chutes (slowness > slow_ratio) serve only as overflow
    slow_ratio: float = 1.5
    speed_memory: float = 60.0  # seconds: slowness evidence fades with this time constant
    extra_samples: int = 1  # samples beyond two when both look full
    fallback: str = "proportional"  # "proportional" | "best_sampled" | "scan" (then proportional)
    uniform_sampling: bool = False  # ablation only: sample candidates uniformly


DEFAULT_PARAMS = HeadroomParams()


class Decision(NamedTuple):
    chute_id: str
    reason: Reason
    index: int  # position in the candidate sequence
    excluded_ignored: bool = False  # every candidate was excluded: the full list was used
    headroom: tuple[float, ...] | None = None  # estimated free slots per candidate (explain=True)


def _clean(x: object) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if f != f or f < 0.0 or f == math.inf:
        return None
    return f


class CandidateSet:
    """Candidates with what does not change between snapshots precomputed: sanitized capacity,
    the cumulative capacity table for proportional sampling, and snapshot busy slots."""

    __slots__ = ("cands", "ids", "n", "cap", "cum", "total", "snap_busy", "any_snapshot", "index", "util",
                 "argmin_util")

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        self.cands = tuple(candidates)
        self.n = len(self.cands)
        self.ids = tuple(str(c.chute_id) for c in self.cands)
        caps = [_clean(c.capacity) or 0.0 for c in self.cands]
        total = sum(caps)
        if not total > 0.0:
            caps = [1.0] * self.n
            total = float(self.n)
        self.cap = tuple(caps)
        self.cum = tuple(accumulate(caps))
        self.total = total
        sb: list[float | None] = []
        for c, cap in zip(self.cands, caps):
            u = _clean(c.utilization)
            sb.append(None if u is None else u * cap)
        self.snap_busy = tuple(sb)
        self.any_snapshot = any(b is not None for b in sb)
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        self.util = tuple(_clean(c.utilization) for c in self.cands)
        known = [(u, i) for i, u in enumerate(self.util) if u is not None]
        self.argmin_util = min(known)[1] if known else 0  # ties to the first (lowest index)


_OVERFLOW = 1e-9  # a slow chute's free slots are scaled by this: positive, yet below _ROOM
_ROOM = 1e-6  # free slots above this = room on a chute at ordinary speed

_CACHE: dict[tuple, CandidateSet] = {}
_CACHE_MAX = 64


def candidate_set(candidates: Sequence[Candidate] | CandidateSet) -> CandidateSet:
    """A cached :class:`CandidateSet` for these exact candidate objects (Candidates are frozen)."""
    if isinstance(candidates, CandidateSet):
        return candidates
    key = tuple(map(id, candidates))
    cs = _CACHE.get(key)
    if cs is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        cs = _CACHE[key] = CandidateSet(candidates)
    return cs


def _weighted(cs: CandidateSet, rng: RandomLike) -> int:
    i = bisect_right(cs.cum, rng.random() * cs.total)
    return i if i < cs.n else cs.n - 1


def _uniform(cs: CandidateSet, rng: RandomLike) -> int:
    i = int(rng.random() * cs.n)
    return i if i < cs.n else cs.n - 1


def _free(cs: CandidateSet, i: int, now: float, replicas: float, p: HeadroomParams, version: object) -> float:
    """Estimated free slots of candidate ``i``; -inf when it holds a 429 penalty."""
    c = cs.cands[i]
    cap = cs.cap[i]
    live = c.live
    if live is not None:
        own_new = live.new_inflight
        own_in = live.in_flight
        if p.use_penalty and live.penalty_until > now and live.penalty_version == version:
            lat = live.latency_ewma or p.default_latency
            if now < live.last_429_at + p.penalty_slots * lat / cap:
                return -math.inf
    else:
        own_new = own_in = 0
    rem = c.remote
    fresh = p.use_remote and rem is not None and now - rem.measured_at <= p.remote_max_age
    if fresh:
        if p.share_penalty and p.use_penalty and rem.last_429_at > -math.inf:  # type: ignore[union-attr]
            lat = (live.latency_ewma if live is not None else None) or p.default_latency
            if now < rem.last_429_at + p.penalty_slots * lat / cap:  # type: ignore[union-attr]
                return -math.inf
        w = p.remote_weight
        if p.delay_correction:
            lat = (live.latency_ewma if live is not None else None) or p.default_latency
            keep = math.exp(-(now - rem.measured_at) / lat)  # type: ignore[union-attr]
            since = (live.started_total - rem.own_started_mark  # type: ignore[union-attr]
                     if live is not None and rem.own_started_mark >= 0 else 0)  # type: ignore[union-attr]
            unseen = (replicas - 1.0) * since
            r_new = w * (rem.new_inflight * keep + unseen) + (1.0 - w) * (replicas - 1.0) * own_new  # type: ignore[union-attr]
            r_in = w * (rem.in_flight * keep + unseen) + (1.0 - w) * (replicas - 1.0) * own_in  # type: ignore[union-attr]
            all_new = own_new + r_new
            all_in = own_in + r_in
        elif w >= 1.0:
            all_new = own_new + rem.new_inflight  # type: ignore[union-attr]
            all_in = own_in + rem.in_flight  # type: ignore[union-attr]
        else:
            all_new = own_new + w * rem.new_inflight + (1.0 - w) * (replicas - 1.0) * own_new  # type: ignore[union-attr]
            all_in = own_in + w * rem.in_flight + (1.0 - w) * (replicas - 1.0) * own_in  # type: ignore[union-attr]
    else:
        all_new = replicas * own_new
        all_in = replicas * own_in
    snap = cs.snap_busy[i]
    if snap is None:
        est = all_in
    else:
        surv = live.survival if (live is not None and p.use_survival) else 1.0
        est = surv * snap + all_new
        if fresh and p.inflight_floor and all_in > est:
            est = all_in
    free = cap - est
    if p.use_errors and live is not None and live.error_score > 0.0 and free > 0.0:
        free *= 1.0 - live.error_at(now)
    if free > 0.0 and live is not None and is_slow(live, now, p):
        free *= _OVERFLOW  # still > 0: beats a full chute, loses to any chute with room
    return free


def is_slow(live: ChuteLive, now: float, p: HeadroomParams) -> bool:
    """True when ``headroom`` treats this chute as overflow only (markedly slower than the fleet)."""
    return p.use_speed and live.tpot_ewma is not None and live.slowness(now, p.speed_memory) > p.slow_ratio


def _sample(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], uniform: bool) -> int:
    """One sample (proportional to capacity unless ``uniform``) not in ``excluded``; -1 if
    rejection sampling keeps hitting excluded ids (the caller then filters)."""
    for _ in range(8):
        i = _uniform(cs, rng) if uniform else _weighted(cs, rng)
        if not excluded or cs.ids[i] not in excluded:
            return i
    return -1


def decide(
    candidates: Sequence[Candidate] | CandidateSet,
    strategy: str,
    rng: RandomLike,
    *,
    now: float = 0.0,
    excluded: Collection[str] = (),
    replicas: int = 1,
    snapshot_version: object = None,
    params: HeadroomParams = DEFAULT_PARAMS,
    explain: bool = False,
) -> Decision:
    """Choose one candidate. ``replicas`` = total worker processes routing to this fleet (R);
    ``snapshot_version`` must be the version the live state adopted (429 penalties belong to it).
    Raises ``ValueError`` only for an empty candidate list or an unknown strategy."""
    cs = candidate_set(candidates)
    n = cs.n
    if n == 0:
        raise ValueError("no candidates")
    ignored = False
    if excluded:
        avail = [i for i in range(n) if cs.ids[i] not in excluded] if n <= 8 or len(excluded) * 2 >= n else None
        if avail is not None:
            if not avail:
                ignored = True
                excluded = ()
            elif len(avail) == 1:
                return _done(cs, avail[0], Reason.ONLY_CANDIDATE, False, explain, now, replicas, params, snapshot_version)
            elif len(avail) < n:
                sub = candidate_set([cs.cands[i] for i in avail])
                d = decide(sub, strategy, rng, now=now, replicas=replicas, snapshot_version=snapshot_version,
                           params=params, explain=False)
                return _done(cs, avail[d.index], d.reason, False, explain, now, replicas, params, snapshot_version)
            else:
                excluded = ()
    if n == 1:
        return _done(cs, 0, Reason.ONLY_CANDIDATE, ignored, explain, now, replicas, params, snapshot_version)
    r = float(replicas) if replicas and replicas > 0 else 1.0

    if strategy == "headroom":
        i, reason = _headroom(cs, rng, excluded, now, r, params, snapshot_version)
    elif strategy == "least-utilization":
        i, reason = _argmin(cs, excluded), Reason.ARGMIN
    elif strategy == "shuffle":
        i, reason = _sample(cs, rng, excluded, True), Reason.RANDOM
    elif strategy == "weighted-shuffle":
        i, reason = _sample(cs, rng, excluded, False), Reason.WEIGHTED_RANDOM
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if i < 0:  # rejection sampling kept hitting excluded ids: decide among the others explicitly
        avail = [j for j in range(n) if cs.ids[j] not in excluded]
        sub = candidate_set([cs.cands[j] for j in avail])
        d = decide(sub, strategy, rng, now=now, replicas=replicas, snapshot_version=snapshot_version, params=params)
        i, reason = avail[d.index], d.reason
    return _done(cs, i, reason, ignored, explain, now, r, params, snapshot_version)


def _done(cs: CandidateSet, i: int, reason: Reason, ignored: bool, explain: bool, now: float,
          replicas: float, params: HeadroomParams, version: object) -> Decision:
    hr = None
    if explain:
        hr = tuple(_free(cs, j, now, float(replicas or 1), params, version) for j in range(cs.n))
    return Decision(cs.ids[i], reason, i, ignored, hr)


def _argmin(cs: CandidateSet, excluded: Collection[str]) -> int:
    if not excluded or cs.ids[cs.argmin_util] not in excluded:
        return cs.argmin_util
    best, best_u = -1, math.inf
    first = -1
    for i, u in enumerate(cs.util):
        if cs.ids[i] in excluded:
            continue
        if first < 0:
            first = i
        if u is not None and u < best_u:
            best, best_u = i, u
    return best if best >= 0 else first


def _headroom(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, r: float,
              p: HeadroomParams, version: object) -> tuple[int, Reason]:
    uni = p.uniform_sampling
    a = _sample(cs, rng, excluded, uni)
    if a < 0:
        return -1, Reason.P2C
    b = a
    for _ in range(8):  # a distinct second sample when one exists
        b = _sample(cs, rng, excluded, uni)
        if b != a and b >= 0:
            break
    if b < 0:
        b = a
    fa = _free(cs, a, now, r, p, version)
    fb = _free(cs, b, now, r, p, version) if b != a else fa
    best, fbest = (a, fa) if fa >= fb else (b, fb)
    ok = Reason.P2C if cs.any_snapshot else Reason.NO_SNAPSHOT_LIVE
    if fbest > _ROOM:
        return best, ok
    for _ in range(max(0, p.extra_samples)):
        c = _sample(cs, rng, excluded, uni)
        if c < 0:
            break
        fc = _free(cs, c, now, r, p, version)
        if fc > fbest:
            best, fbest = c, fc
        if fbest > _ROOM:
            return best, (Reason.THIRD_SAMPLE if cs.any_snapshot else Reason.NO_SNAPSHOT_LIVE)
    if fbest > 0.0:
        return best, Reason.SLOW_OVERFLOW
    if p.fallback == "best_sampled" and fbest > -math.inf:
        return best, Reason.BEST_SAMPLED
    if p.fallback == "scan":
        for j in range(cs.n):
            if excluded and cs.ids[j] in excluded:
                continue
            fj = _free(cs, j, now, r, p, version)
            if fj > fbest:
                best, fbest = j, fj
        if fbest > 0.0:
            return best, Reason.SCAN_FALLBACK
    # Proportional fallback: random by capacity among chutes without a 429 penalty.
    for _ in range(8):
        c = _sample(cs, rng, excluded, False)
        if c < 0:
            break
        if _free(cs, c, now, r, p, version) > -math.inf:
            return c, Reason.PROPORTIONAL_FALLBACK
    if fbest > -math.inf:
        return best, Reason.PROPORTIONAL_FALLBACK
    # Rare slow path: the samples kept hitting penalized chutes; look at every candidate.
    ok_idx = [j for j in range(cs.n) if not (excluded and cs.ids[j] in excluded)
              and _free(cs, j, now, r, p, version) > -math.inf]
    if ok_idx:
        x = rng.random() * sum(cs.cap[j] for j in ok_idx)
        for j in ok_idx:
            x -= cs.cap[j]
            if x < 0.0:
                return j, Reason.PROPORTIONAL_FALLBACK
        return ok_idx[-1], Reason.PROPORTIONAL_FALLBACK
    return _sample(cs, rng, excluded, False), Reason.ALL_PENALIZED
