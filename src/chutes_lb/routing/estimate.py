"""What the ``headroom`` strategy believes about one chute: :class:`Candidate`, :class:`CandidateSet`
and :func:`estimate`, which turns them into one small :class:`Estimate` (free slots, slow,
penalised) that a reader can check by hand. Pure: data in, data out, ``now`` passed in.

Estimated busy slots of a chute (capacity ``cap`` = active instances x concurrency)::

    busy = survival x snapshot_busy + new_in_flight_all        (snapshot usable)
    busy = in_flight_all                                         (no snapshot)
    busy >= in_flight_all when the shared counts are fresh       (the in-flight floor)

- ``snapshot_busy`` = ``utilization_current x cap``;
- ``survival`` = share of this worker's requests open at the snapshot that are still open;
- ``*_all`` = this worker's exact counts plus the other workers' (:func:`others`): the counts
  they published through Redis, aged by how long ago they were measured, blended half and half
  with ``(R - 1) x own``; without fresh shared counts, ``R x own``.

``free = cap - busy``; a decaying error score shrinks positive ``free``. A chute is ``slow`` when
a typical request would take more than ``slow_ratio`` x as long as on the fleet's median chute
(:mod:`chutes_lb.routing.pace`), and ``penalized`` while a 429 hold is active
(:func:`penalty_active`): after a 429 the chute counts as full for about the time one of its
slots takes to free (its latency EWMA / capacity), within the same snapshot version and at most
``LiveState.penalty_seconds``.

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple, Sequence

from chutes_lb.routing.live import ChuteLive
from chutes_lb.routing.remote import RemoteCounts

__all__ = ["Candidate", "CandidateSet", "HeadroomParams", "DEFAULT_PARAMS", "Estimate", "estimate", "busy_slots",
           "penalty_active", "is_slow", "others"]


@dataclass(frozen=True, slots=True, eq=False)
class Candidate:
    """One chute as the decision sees it. Build once per snapshot; ``live``/``remote`` are the
    long-lived mutable records of :mod:`chutes_lb.routing.live`, read at decision time.

    ``capacity``: slots = active_instance_count x concurrency from the snapshot, or the
    configured fallback without a usable snapshot. ``utilization``: snapshot
    ``utilization_current`` (0..1) or None. ``utilization_5m`` and ``rate_limit_ratio`` ride
    along for explanations."""

    chute_id: str
    capacity: float
    utilization: float | None = None
    utilization_5m: float | None = None
    rate_limit_ratio: float | None = None
    live: ChuteLive | None = None
    remote: RemoteCounts | None = None


@dataclass(frozen=True, slots=True)
class HeadroomParams:
    """The production knobs of ``headroom`` (defaults chosen with the DES, see BENCHMARKS.md)."""

    remote_max_age: float = 5.0  # seconds: shared counts older than this are ignored (-> R x own)
    remote_weight: float = 0.5  # others' counts = w x shared + (1 - w) x (R - 1) x own
    hold_slots: float = 1.0  # 429 hold = this many slot-free times (latency / capacity)
    default_latency: float = 10.0  # seconds, for a chute without a latency EWMA yet
    slow_ratio: float = 1.5  # slower than this x the fleet's median chute = overflow; 0 = off
    speed_memory: float = 60.0  # seconds: slowness evidence fades with this time constant
    rl_prior_weight: float = 10.0  # the API's rate_limit_ratio counts as this many attempts of evidence
    free_fraction: bool = False  # tier 3 compares free fractions instead of free slots (issue 14's rule; off: BENCHMARKS.md)


DEFAULT_PARAMS = HeadroomParams()


class Estimate(NamedTuple):
    """One chute's estimate. ``key`` orders estimates, better first:

    ====  ======================================  ===========================
    tier  the chute                               then, within the tier
    ====  ======================================  ===========================
    3     has at least one free slot (ordinary)   more free slots win (or the
                                                  larger free *fraction*)
    2     has a sliver of room (< 1 free slot)    more free slots win
    1     has room but is slow (overflow only)    more free slots win
    0     is full                                 the least overloaded wins
    -1    holds a 429                             (ties)
    ====  ======================================  ===========================

    ``fraction=True`` (``HeadroomParams.free_fraction``, ``ROUTING_FREE_FRACTION``) compares free
    *fractions* among chutes with a whole free slot, which balances utilization (a fuller chute
    decodes slower), while absolute free slots still decide near the edge; the sliver tier 2
    exists only then. Measured on the real stack (BENCHMARKS.md, issue 14) it cost 1.5-1.7x the
    upstream 429s of free slots with no latency gain shown, so the default compares free slots:
    small chutes keep spare slots that retries and estimate errors land in."""

    free: float  # estimated free slots (negative = over capacity)
    slow: bool = False
    penalized: bool = False
    capacity: float = 1.0
    fraction: bool = False

    @property
    def tier(self) -> int:
        if self.penalized:
            return -1
        if self.free > 0.0:
            if self.slow:
                return 1
            return 3 if self.free >= 1.0 or not self.fraction else 2
        return 0

    @property
    def key(self) -> tuple[int, float]:
        tier = self.tier
        if tier == -1:
            return (-1, 0.0)
        if tier == 3 and self.fraction:
            return (3, self.free / self.capacity)
        return (tier, self.free)

    @property
    def has_room(self) -> bool:
        """Room at ordinary speed: the p2c pick is done."""
        return self.tier >= 2


def _clean(x: object) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if f != f or f < 0.0 or f == math.inf else f


class CandidateSet:
    """Candidates with what does not change between snapshots precomputed: sanitized capacity
    (NaN, negative or missing count as 0; all zero = equal weights), the cumulative capacity
    table for proportional sampling, snapshot busy slots and the least-utilized index."""

    __slots__ = ("cands", "ids", "n", "cap", "cum", "total", "snap_busy", "any_snapshot", "util", "argmin_util")

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        self.cands = tuple(candidates)
        self.n = len(self.cands)
        self.ids = tuple(str(c.chute_id) for c in self.cands)
        caps = [_clean(c.capacity) or 0.0 for c in self.cands]
        total = sum(caps)
        if not total > 0.0:
            caps, total = [1.0] * self.n, float(self.n)
        self.cap = tuple(caps)
        self.cum = tuple(accumulate(caps))
        self.total = total
        self.util = tuple(_clean(c.utilization) for c in self.cands)
        self.snap_busy = tuple(None if u is None else u * cap for u, cap in zip(self.util, caps))
        self.any_snapshot = any(b is not None for b in self.snap_busy)
        known = [(u, i) for i, u in enumerate(self.util) if u is not None]
        self.argmin_util = min(known)[1] if known else 0  # ties to the first (lowest index)


def penalty_active(live: ChuteLive, now: float, version: object, capacity: float, p: HeadroomParams = DEFAULT_PARAMS) -> bool:
    """True while a 429 hold makes the chute count as full (the decision and ``/info`` agree): a
    capacity 429 for about the time one slot takes to free, a maintenance 429 for its whole hold."""
    if now < live.maintenance_until:
        return True
    if not live.penalized(now, version):
        return False
    latency = live.latency_ewma or p.default_latency
    return now < live.last_429_at + p.hold_slots * latency / max(capacity, 1e-9)


SLOW_MIN_SAMPLES = 5  # paced responses before a chute can be called slow (a cold first request is not)


def is_slow(live: ChuteLive, now: float, p: HeadroomParams = DEFAULT_PARAMS) -> bool:
    """True when ``headroom`` treats this chute as overflow only (markedly slower than the fleet,
    on at least :data:`SLOW_MIN_SAMPLES` responses)."""
    return (p.slow_ratio > 0.0 and live.tpot_ewma is not None and live.pace_samples >= SLOW_MIN_SAMPLES
            and live.slowness(now, p.speed_memory) > p.slow_ratio)


def others(live: ChuteLive | None, rem: RemoteCounts | None, now: float, replicas: float,
           p: HeadroomParams) -> tuple[float, float] | None:
    """The other workers' (new in-flight, in-flight) on this chute from fresh shared counts, or
    None when there are none. Shared counts were measured ``now - measured_at`` ago: each decays
    with the chute's latency, and ``(R - 1) x`` this worker's starts since then are added for the
    starts the others made that the counts cannot show yet."""
    if rem is None or not now - rem.measured_at <= p.remote_max_age:
        return None
    own_new = live.new_inflight if live is not None else 0
    own_in = live.in_flight if live is not None else 0
    latency = (live.latency_ewma if live is not None else None) or p.default_latency
    keep = math.exp(-(now - rem.measured_at) / latency)
    since = live.started_total - rem.own_started_mark if live is not None and rem.own_started_mark >= 0 else 0
    unseen = (replicas - 1.0) * since
    w = p.remote_weight
    return (w * (rem.new_inflight * keep + unseen) + (1.0 - w) * (replicas - 1.0) * own_new,
            w * (rem.in_flight * keep + unseen) + (1.0 - w) * (replicas - 1.0) * own_in)


def busy_slots(cs: CandidateSet, i: int, now: float, replicas: float, p: HeadroomParams) -> float:
    """Estimated busy slots of candidate ``i`` (see the module docstring)."""
    c = cs.cands[i]
    live = c.live
    own_new = live.new_inflight if live is not None else 0
    own_in = live.in_flight if live is not None else 0
    shared = others(live, c.remote, now, replicas, p)
    if shared is None:
        all_new, all_in = replicas * own_new, replicas * own_in
    else:
        all_new, all_in = own_new + shared[0], own_in + shared[1]
    snap = cs.snap_busy[i]
    if snap is None:
        return all_in
    est = (live.survival if live is not None else 1.0) * snap + all_new
    return all_in if shared is not None and all_in > est else est


def rate_limit_share(c: Candidate, p: HeadroomParams) -> float:
    """The share of attempts this chute is expected to answer 429 at any load: the API's
    ``rate_limit_ratio`` (5 min) as a prior worth ``rl_prior_weight`` attempts, outweighed as
    this worker's own attempts since the snapshot arrive (their 429 share, an EWMA). Chutes
    rate-limits for more than full slots (maintenance, abuse limits): a chute "with room" by
    utilization can still refuse most requests."""
    prior = _clean(c.rate_limit_ratio) or 0.0
    live = c.live
    if live is None:
        return min(prior, 1.0)
    n = float(live.attempts_since_snapshot)
    m = p.rl_prior_weight
    return min(1.0, (m * prior + n * live.rl_ewma) / (m + n)) if m + n > 0 else 0.0


def estimate(cs: CandidateSet, i: int, now: float, replicas: float, p: HeadroomParams, version: object,
             fraction: bool | None = None) -> Estimate:
    """The estimate of candidate ``i``: free slots (shrunk by the error score and the expected
    429 share when positive), slow, penalised. ``fraction``: rank by free fraction (default:
    ``p.free_fraction``)."""
    if fraction is None:
        fraction = p.free_fraction
    c = cs.cands[i]
    live = c.live
    cap = cs.cap[i]
    free = cap - busy_slots(cs, i, now, replicas, p)
    if free > 0.0:
        share = rate_limit_share(c, p)
        if share > 0.0:
            free *= 1.0 - share
    if live is None:
        return Estimate(free, capacity=cap, fraction=fraction)
    if live.error_score > 0.0 and free > 0.0:
        free *= 1.0 - live.error_at(now)
    return Estimate(free, is_slow(live, now, p), penalty_active(live, now, version, cap, p), cap, fraction)
