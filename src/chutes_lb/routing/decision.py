"""The routing decision: data in, data out. The random source is injected.

:func:`decide` picks one chute among the candidates of a :class:`CandidateSet` with one of
:data:`STRATEGIES`:

- ``headroom`` (default, :func:`headroom_pick`): power of two choices. Two distinct candidates
  are sampled in proportion to capacity and the one with the better :class:`Estimate` wins
  (room at ordinary speed, more free slots first, or the larger free fraction with
  ``HeadroomParams.free_fraction``; room on a slow chute; full; 429-penalised: see
  :class:`Estimate`). If neither has room at ordinary speed, a third sample is tried; if
  only a slow chute had room, it takes the request (``slow_overflow``); if every sample was
  full, a random pick in proportion to capacity among chutes without a 429 hold. The choice is
  never the argmin of a shared number, so replicas reading the same stale snapshot do not herd.
- With a session (``affinity``), ``headroom`` first offers the request to the session's own chute
  (:mod:`chutes_lb.routing.affinity`: bounded-load rendezvous hashing); the steps above run only
  when that chute is full, held, slow, excluded or over its load bound.
- ``headroom-slots``: ``headroom`` without sessions, always comparing absolute free slots (the
  estimator alone; kept for comparison, see BENCHMARKS.md).
- ``least-utilization``: argmin of snapshot ``utilization_current``, ties to the first (the seed
  rule; herds on a shared stale snapshot: kept only for comparison).
- ``shuffle``: uniform random (LiteLLM simple-shuffle).
- ``weighted-shuffle``: random in proportion to capacity (the fair baseline).
- ``sticky``: a session always goes to its own chute (the first of its rendezvous order), whatever
  that chute's load; another chute only on a retry after it failed. Requests without a session key
  as ``weighted-shuffle``. Pure stickiness, as Chutes' own router does per client: kept only as
  the session benchmarks' baseline (it piles sessions onto a hot chute).

Excluded ids (chutes that already failed within this request) are never returned while another
candidate is available; if every candidate is excluded the full list is used
(``Decision.excluded_ignored``). Degenerate inputs never raise.

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from enum import Enum
from typing import Callable, Collection, NamedTuple, Protocol, Sequence

from chutes_lb.routing.affinity import affinity_pick
from chutes_lb.routing.estimate import DEFAULT_PARAMS, Candidate, CandidateSet, Estimate, HeadroomParams, estimate

__all__ = ["REGISTRY", "STRATEGIES", "DEFAULT_STRATEGY", "Strategy", "strategy_of", "Reason", "Decision", "Affinity", "decide",
           "headroom_pick", "weighted_index", "uniform_index", "RandomLike"]

DEFAULT_STRATEGY = "headroom"


class Reason(str, Enum):
    """Why a chute was chosen: a fixed, small label set for metrics."""

    AFFINITY = "affinity"  # headroom: the session's own chute (bounded-load rendezvous, see affinity.py)
    P2C = "p2c"  # headroom: the better of two capacity-weighted samples had free slots
    THIRD_SAMPLE = "third_sample"  # headroom: both looked full, an extra sample had room
    BEST_SAMPLED = "best_sampled"  # (DES ablations only) all samples full, the least overloaded
    SCAN_FALLBACK = "scan_fallback"  # (DES ablations only) samples full, a full scan found room
    PROPORTIONAL_FALLBACK = "proportional_fallback"  # headroom: all full, random by capacity
    ALL_PENALIZED = "all_penalized"  # headroom: every candidate had a 429 hold
    SLOW_OVERFLOW = "slow_overflow"  # headroom: only a markedly slow chute had room among the samples
    NO_SNAPSHOT_LIVE = "no_snapshot_live"  # headroom without any snapshot: live counts only
    ONLY_CANDIDATE = "only_candidate"  # one usable candidate
    ARGMIN = "argmin"  # least-utilization
    RANDOM = "random"  # shuffle
    WEIGHTED_RANDOM = "weighted_random"  # weighted-shuffle


class RandomLike(Protocol):
    def random(self) -> float: ...


class Decision(NamedTuple):
    chute_id: str
    reason: Reason
    index: int  # position in the candidate set
    excluded_ignored: bool = False  # every candidate was excluded: the full list was used
    affinity: str | None = None  # with a session: hit, spill[:why], or why it was dropped (affinity.OUTCOMES)


class Affinity(NamedTuple):
    """A session's part of a decision: its rendezvous order over this candidate set (the first
    few indices), the load bound and the fleet's current load (busy / capacity)."""

    order: list[int]
    bound: float
    fleet_load: float
    fresh_load: Callable[[], float] | None = None  # recomputes fleet_load now (see affinity_pick)


Estimator = Callable[[CandidateSet, int, float, float, HeadroomParams, object], Estimate]
Sampler = Callable[[CandidateSet, RandomLike], int]


def weighted_index(cs: CandidateSet, rng: RandomLike) -> int:
    """A candidate index drawn in proportion to capacity."""
    i = bisect_right(cs.cum, rng.random() * cs.total)
    return i if i < cs.n else cs.n - 1


def uniform_index(cs: CandidateSet, rng: RandomLike) -> int:
    i = int(rng.random() * cs.n)
    return i if i < cs.n else cs.n - 1


def _sample(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], draw: Sampler = weighted_index) -> int:
    """One draw not in ``excluded``; -1 if rejection sampling keeps hitting excluded ids."""
    for _ in range(8):
        i = draw(cs, rng)
        if not excluded or cs.ids[i] not in excluded:
            return i
    return -1


def headroom_pick(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, replicas: float,
                  p: HeadroomParams, version: object, *, estimator: Estimator = estimate, extra_samples: int = 1,
                  draw: Sampler = weighted_index) -> tuple[int, Reason]:
    """The ``headroom`` procedure (see the module docstring). The keyword arguments exist for the
    DES ablations; production uses the defaults. Returns (-1, _) when sampling kept hitting
    excluded ids (the caller then decides among the others)."""
    a = _sample(cs, rng, excluded, draw)
    if a < 0:
        return -1, Reason.P2C
    b = a
    for _ in range(8):  # a distinct second sample when one exists
        b = _sample(cs, rng, excluded, draw)
        if b != a and b >= 0:
            break
    if b < 0:
        b = a
    ea = estimator(cs, a, now, replicas, p, version)
    eb = estimator(cs, b, now, replicas, p, version) if b != a else ea
    best, ebest = (a, ea) if ea.key >= eb.key else (b, eb)
    ok = Reason.P2C if cs.any_snapshot else Reason.NO_SNAPSHOT_LIVE
    if ebest.has_room:
        return best, ok
    for _ in range(max(0, extra_samples)):
        c = _sample(cs, rng, excluded, draw)
        if c < 0:
            break
        ec = estimator(cs, c, now, replicas, p, version)
        if ec.key > ebest.key:
            best, ebest = c, ec
        if ebest.has_room:
            return best, (Reason.THIRD_SAMPLE if cs.any_snapshot else Reason.NO_SNAPSHOT_LIVE)
    if ebest.tier == 1:
        return best, Reason.SLOW_OVERFLOW
    # Every sample was full: random by capacity among chutes without a 429 hold.
    for _ in range(8):
        c = _sample(cs, rng, excluded)
        if c < 0:
            break
        if not estimator(cs, c, now, replicas, p, version).penalized:
            return c, Reason.PROPORTIONAL_FALLBACK
    if not ebest.penalized:
        return best, Reason.PROPORTIONAL_FALLBACK
    # Rare slow path: the samples kept hitting held chutes; look at every candidate.
    ok_idx = [j for j in range(cs.n) if not (excluded and cs.ids[j] in excluded)
              and not estimator(cs, j, now, replicas, p, version).penalized]
    if ok_idx:
        x = rng.random() * sum(cs.cap[j] for j in ok_idx)
        for j in ok_idx:
            x -= cs.cap[j]
            if x < 0.0:
                return j, Reason.PROPORTIONAL_FALLBACK
        return ok_idx[-1], Reason.PROPORTIONAL_FALLBACK
    return _sample(cs, rng, excluded), Reason.ALL_PENALIZED


def _slots_estimate(cs: CandidateSet, i: int, now: float, r: float, p: HeadroomParams, v: object) -> Estimate:
    return estimate(cs, i, now, r, p, v, fraction=False)


HeadroomProcedure = Callable[[CandidateSet, RandomLike, Collection[str], float, float, HeadroomParams, object],
                             tuple[int, Reason]]


def _argmin(cs: CandidateSet, excluded: Collection[str]) -> int:
    if not excluded or cs.ids[cs.argmin_util] not in excluded:
        return cs.argmin_util
    best, best_u, first = -1, math.inf, -1
    for i, u in enumerate(cs.util):
        if cs.ids[i] in excluded:
            continue
        if first < 0:
            first = i
        if u is not None and u < best_u:
            best, best_u = i, u
    return best if best >= 0 else first


def _headroom_slots(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, r: float,
                    p: HeadroomParams, v: object) -> tuple[int, Reason]:
    return headroom_pick(cs, rng, excluded, now, r, p, v, estimator=_slots_estimate)


def _least_utilization(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, r: float,
                       p: HeadroomParams, v: object) -> tuple[int, Reason]:
    return _argmin(cs, excluded), Reason.ARGMIN


def _shuffle(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, r: float,
             p: HeadroomParams, v: object) -> tuple[int, Reason]:
    return _sample(cs, rng, excluded, uniform_index), Reason.RANDOM


def _weighted_shuffle(cs: CandidateSet, rng: RandomLike, excluded: Collection[str], now: float, r: float,
                      p: HeadroomParams, v: object) -> tuple[int, Reason]:
    return _sample(cs, rng, excluded), Reason.WEIGHTED_RANDOM


class Strategy(NamedTuple):
    """One routing strategy: the registry's record (see :data:`REGISTRY`)."""

    name: str
    procedure: HeadroomProcedure | None  # the pure pick; None: LiteLLM's own routing decides (passthrough)
    sessions: str | None  # None; "bounded": its own chute within the load bound (when affinity is on); "sticky": always
    reads_snapshot: bool  # reads the utilization snapshot (a missing or stale one is a counted fallback)
    summary: str  # one line for ROUTING_STRATEGY's documentation and /info


# The one registry of strategies: settings validate ROUTING_STRATEGY against it, /info renders it,
# the DES and the benchmarks run a strategy by its name. Adding a strategy = one record and its
# pure procedure here.
REGISTRY: dict[str, Strategy] = {s.name: s for s in (
    Strategy("headroom", headroom_pick, "bounded", True, "default: power of two choices on estimated free slots, "
             "sessions to their own chute within the load bound"),
    Strategy("headroom-slots", _headroom_slots, None, True, "headroom without sessions, comparing free slots: the estimator alone"),
    Strategy("least-utilization", _least_utilization, None, True, "the seed's rule: argmin of the snapshot's utilization (herds)"),
    Strategy("shuffle", _shuffle, None, False, "uniform random (LiteLLM simple-shuffle)"),
    Strategy("weighted-shuffle", _weighted_shuffle, None, False, "random in proportion to capacity (the fair baseline)"),
    Strategy("sticky", _weighted_shuffle, "sticky", False, "a session always on its own chute: a benchmark baseline"),
    Strategy("passthrough", None, None, False, "leave the choice to LiteLLM's routing_strategy"),
)}
STRATEGIES: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.procedure is not None)  # what decide() runs


def strategy_of(strategy: "str | Strategy") -> Strategy:
    """The registry record of a name (a record passes through: the DES's ablations build their own)."""
    if isinstance(strategy, Strategy):
        return strategy
    found = REGISTRY.get(strategy)
    if found is None or found.procedure is None:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    return found


def decide(candidates: CandidateSet | Sequence[Candidate], strategy: "str | Strategy", rng: RandomLike, *, now: float = 0.0,
           excluded: Collection[str] = (), replicas: float = 1, snapshot_version: object = None,
           params: HeadroomParams = DEFAULT_PARAMS, affinity: Affinity | None = None) -> Decision:
    """Choose one candidate with ``strategy`` (a name in :data:`REGISTRY`, or a record).
    ``replicas`` = worker processes routing to this fleet (R); ``snapshot_version`` = the version
    the live state adopted (429 holds belong to it); ``affinity``: the request belongs to a
    session (a ``bounded`` strategy: its own chute first, while it has room within the load
    bound, otherwise the usual pick, with why in ``Decision.affinity``; ``sticky``: its own chute
    unless excluded). Raises ``ValueError`` only for an empty candidate list or an unknown strategy."""
    cs = candidates if isinstance(candidates, CandidateSet) else CandidateSet(candidates)
    if cs.n == 0:
        raise ValueError("no candidates")
    s = strategy_of(strategy)
    r = float(replicas) if replicas and replicas > 0 else 1.0
    if affinity is not None and s.sessions == "bounded":
        pick = affinity_pick(cs, affinity.order, lambda i: estimate(cs, i, now, r, params, snapshot_version),
                             affinity.bound, affinity.fleet_load, excluded, affinity.fresh_load)
        if pick.index >= 0:
            outcome = pick.outcome if pick.why is None else f"{pick.outcome}:{pick.why}"
            return Decision(cs.ids[pick.index], Reason.AFFINITY, pick.index, False, outcome)
        return _pick(cs, s, rng, now, excluded, r, snapshot_version, params)._replace(affinity=pick.outcome)
    if affinity is not None and s.sessions == "sticky":
        for rank, i in enumerate(affinity.order):
            if not excluded or cs.ids[i] not in excluded:
                return Decision(cs.ids[i], Reason.AFFINITY, i, False, "hit" if rank == 0 else "spill:dropped_excluded")
        return _pick(cs, s, rng, now, excluded, r, snapshot_version, params)._replace(affinity="dropped_excluded")
    return _pick(cs, s, rng, now, excluded, r, snapshot_version, params)


def _pick(cs: CandidateSet, s: Strategy, rng: RandomLike, now: float, excluded: Collection[str], r: float,
          version: object, params: HeadroomParams) -> Decision:
    """The strategy's own pick, with the excluded chutes (those that failed this request) left
    out while another candidate is available."""
    n = cs.n
    ignored = False
    if excluded:
        avail = [i for i in range(n) if cs.ids[i] not in excluded] if n <= 8 or len(excluded) * 2 >= n else None
        if avail is not None:
            if not avail:
                ignored, excluded = True, ()
            elif len(avail) == 1:
                return Decision(cs.ids[avail[0]], Reason.ONLY_CANDIDATE, avail[0])
            elif len(avail) < n:
                return _among(cs, avail, s, rng, now, r, version, params)
            else:
                excluded = ()
    if n == 1:
        return Decision(cs.ids[0], Reason.ONLY_CANDIDATE, 0, ignored)
    assert s.procedure is not None
    i, reason = s.procedure(cs, rng, excluded, now, r, params, version)
    if i < 0:  # rejection sampling kept hitting excluded ids: decide among the others explicitly
        return _among(cs, [j for j in range(n) if cs.ids[j] not in excluded], s, rng, now, r, version, params)
    return Decision(cs.ids[i], reason, i, ignored)


def _among(cs: CandidateSet, avail: list[int], s: Strategy, rng: RandomLike, now: float, r: float,
           version: object, params: HeadroomParams) -> Decision:
    """Decide over the candidates at ``avail`` only; the index refers to the full set."""
    d = _pick(CandidateSet([cs.cands[i] for i in avail]), s, rng, now, (), r, version, params)
    return Decision(cs.ids[avail[d.index]], d.reason, avail[d.index])
