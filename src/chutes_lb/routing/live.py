"""Per-process live bookkeeping for routing. Pure: no I/O, the clock is passed in as ``now``.

One :class:`LiveState` per worker process. The routing core calls ``on_start`` when it sends a
request to a chute, ``on_first_token`` when the first token arrives, ``on_end`` when it finishes
(with an :data:`Outcome`) and ``on_snapshot`` when it adopts a new utilization snapshot. Every
call is O(1) and never raises on unknown tokens or double ends (they are counted in ``anomalies``).

Per chute (:class:`ChuteLive`, long-lived and mutated in place so a candidate can hold a reference):

- ``in_flight``: requests open now; ``new_inflight``: started since the current snapshot was
  adopted and still open; ``open_at_adoption`` / ``old_open``: requests open at adoption / how
  many of those are still open, so ``survival = old_open / open_at_adoption`` (1.0 when none);
- ``latency_ewma`` / ``ttft_ewma``: recent latency and time to first token (seconds, None = unknown);
- ``tpot_ewma``: recent decode time per output token, with ``pace_t`` the time of its last update;
  :meth:`ChuteLive.slowness` compares it with the fleet (:mod:`chutes_lb.routing.pace`);
- ``last_429_at`` / ``penalty_until`` / ``penalty_version``: a 429 opens a hold that belongs to the
  current snapshot version and lasts at most ``penalty_seconds``; the decision shortens it to about
  the time one slot takes to free (:func:`chutes_lb.routing.estimate.penalty_active`);
- ``maintenance_until``: a 429 "model is under maintenance" holds the chute for
  ``maintenance_seconds``, whatever the snapshot (Chutes disabled it for a while);
- ``error_score``: a decaying score in [0, 1] bumped by errors and timeouts (half-life
  ``error_half_life``), read through :meth:`ChuteLive.error_at`;
- ``rl_ewma`` / ``attempts_since_snapshot``: the share of recent attempts answered 429 and how
  many attempts ended since the snapshot: the live evidence that outweighs the API's
  ``rate_limit_ratio`` prior (see estimate.py).

Each worker publishes :meth:`LiveState.export_counts` for the others; folding theirs in is
:mod:`chutes_lb.routing.remote`.

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping

from chutes_lb.routing.pace import FleetPace, slowness_ratio

__all__ = [
    "Outcome",
    "OUTCOMES",
    "ChuteLive",
    "LiveState",
]

Outcome = Literal["success", "rate_limited", "maintenance", "rejected", "error", "timeout", "cancelled"]
# cancelled: the client went away (or the proxy gave up); frees the slot, teaches nothing
# rate_limited: a capacity 429 (held as full for about a slot's time); maintenance: a 429 "model is
# under maintenance" (held for maintenance_seconds); rejected: the account or the request was
# refused (402, a per-user 429, a context-length or other 4xx): nothing about the chute's health
OUTCOMES: tuple[str, ...] = ("success", "rate_limited", "maintenance", "rejected", "error", "timeout", "cancelled")

_LN2 = math.log(2.0)
RL_ALPHA = 0.1  # the 429-share EWMA's weight of one attempt
RECENT_STARTS = 1024  # start times kept per chute, to know own starts since a remote measurement


@dataclass(slots=True, eq=False)
class ChuteLive:
    """Live counters for one chute in one process (mutated in place by :class:`LiveState`)."""

    chute_id: str
    in_flight: int = 0
    new_inflight: int = 0
    open_at_adoption: int = 0
    old_open: int = 0
    latency_ewma: float | None = None
    ttft_ewma: float | None = None
    ttft_pace_ewma: float | None = None  # TTFT per (1 + uncached prompt tokens / 1000): a cache miss is not slowness
    tpot_ewma: float | None = None
    pace_samples: int = 0  # responses behind tpot_ewma (one slow first request is no evidence)
    pace_t: float = -math.inf
    fleet: FleetPace | None = None
    penalty_until: float = -math.inf
    penalty_version: object = None
    maintenance_until: float = -math.inf  # a 429 "under maintenance": held whatever the snapshot version
    last_429_at: float = -math.inf
    error_score: float = 0.0
    error_t: float = 0.0
    error_half_life: float = 30.0
    started_total: int = 0
    recent_starts: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_STARTS))
    rate_limited_total: int = 0
    errors_total: int = 0
    rl_ewma: float = 0.0  # share of this worker's recent attempts answered 429 (EWMA, alpha 0.1)
    attempts_since_snapshot: int = 0  # attempts that ended since the snapshot was adopted (live evidence)

    @property
    def survival(self) -> float:
        """Fraction of the requests open at snapshot adoption that are still open (1.0 if none)."""
        return self.old_open / self.open_at_adoption if self.open_at_adoption > 0 else 1.0

    def penalized(self, now: float, version: object) -> bool:
        """True while a 429 penalty holds: same snapshot version and not yet expired."""
        return now < self.penalty_until and self.penalty_version == version

    def slowness(self, now: float, memory: float) -> float:
        """Expected time of a typical request here / on the fleet (1.0 when unknown; see pace.py)."""
        return slowness_ratio(self.fleet, self.ttft_pace_ewma, self.tpot_ewma, self.pace_t, now, memory)

    def started_by(self, t: float) -> int:
        """``started_total`` as it was at time ``t`` (exact for the last RECENT_STARTS starts)."""
        later = 0
        for started in reversed(self.recent_starts):
            if started <= t:
                break
            later += 1
        return self.started_total - later

    def error_at(self, now: float) -> float:
        """The error score decayed to ``now`` (0 = healthy, 1 = every recent request failed)."""
        s = self.error_score
        if s <= 0.0:
            return 0.0
        dt = now - self.error_t
        if dt <= 0.0:
            return s
        return s * math.exp(-_LN2 * dt / self.error_half_life)


@dataclass(slots=True)
class _Open:
    chute: ChuteLive
    started: float
    epoch: int
    first_token: bool = False
    ttft: float = -1.0


@dataclass(slots=True, eq=False)
class LiveState:
    """All live bookkeeping of one worker process. Times are plain floats (seconds) passed in."""

    penalty_seconds: float = 30.0
    maintenance_seconds: float = 120.0  # Chutes disables a chute for minutes ("model is under maintenance")
    error_half_life: float = 30.0
    ewma_alpha: float = 0.2
    fleet_alpha: float = 0.05  # the fleet's typical request averages over every chute: steadier
    fleet_every: float = 1.0  # seconds between recomputations of the fleet's reference time
    error_step: float = 0.5  # each error moves the score this fraction of the way to 1
    chutes: dict[str, ChuteLive] = field(default_factory=dict)
    fleet: FleetPace = field(default_factory=FleetPace)
    snapshot_version: object = None
    anomalies: dict[str, int] = field(
        default_factory=lambda: {"unknown_token": 0, "double_end": 0, "bad_outcome": 0}
    )
    _open: dict[int, _Open] = field(default_factory=dict)
    _ended: set[int] = field(default_factory=set)
    _next_token: int = 1
    _epoch: int = 0

    def chute(self, chute_id: str) -> ChuteLive:
        """The (long-lived) record for ``chute_id``, created on first use."""
        c = self.chutes.get(chute_id)
        if c is None:
            c = ChuteLive(chute_id, error_half_life=self.error_half_life, fleet=self.fleet)
            self.chutes[chute_id] = c
        return c

    def on_start(self, chute_id: str, now: float) -> int:
        """A request was sent to ``chute_id``; returns the token to pass to the other callbacks."""
        c = self.chute(chute_id)
        c.in_flight += 1
        c.new_inflight += 1
        c.started_total += 1
        c.recent_starts.append(now)
        tok = self._next_token
        self._next_token = tok + 1
        self._open[tok] = _Open(c, now, self._epoch)
        return tok

    def on_first_token(self, token: int, now: float, uncached_tokens: float | None = None) -> None:
        """First token (or first byte) of the response arrived: updates the TTFT EWMAs once.

        ``uncached_tokens``: prompt tokens the chute had to compute (prompt minus cached), when
        known. The pace EWMA behind slowness divides by ``1 + uncached / 1000``, so a long prompt
        that missed the prefix cache does not make a chute look slow."""
        o = self._open.get(token)
        if o is None or o.first_token:
            return
        o.first_token = True
        dt = now - o.started
        if dt >= 0.0 and dt == dt:
            o.ttft = dt
            c = o.chute
            c.ttft_ewma = _ewma(c.ttft_ewma, dt, self.ewma_alpha)
            unit = dt / (1.0 + max(0.0, uncached_tokens) / 1000.0) if uncached_tokens and uncached_tokens == uncached_tokens else dt
            c.ttft_pace_ewma = _ewma(c.ttft_pace_ewma, unit, self.ewma_alpha)
            self.fleet.ttft_ewma = _ewma(self.fleet.ttft_ewma, unit, self.fleet_alpha)

    def on_end(self, token: int, now: float, outcome: str = "success", tokens: float | None = None) -> None:
        """The request finished. Unknown tokens and second ends are counted, never raised.

        ``tokens``: output tokens of a successful response when known (any positive measure of
        the work done, e.g. the service demand in a simulation); feeds the decode-pace EWMAs."""
        o = self._open.pop(token, None)
        if o is not None and outcome != "cancelled":
            ch = o.chute
            ch.rl_ewma += RL_ALPHA * ((1.0 if outcome == "rate_limited" else 0.0) - ch.rl_ewma)
            ch.attempts_since_snapshot += 1
        if o is None:
            if token in self._ended:
                self.anomalies["double_end"] += 1
            else:
                self.anomalies["unknown_token"] += 1
            return
        if len(self._ended) > 4096:  # bounded memory: only recent tokens are remembered
            self._ended.clear()
        self._ended.add(token)
        c = o.chute
        c.in_flight -= 1
        if o.epoch == self._epoch:
            c.new_inflight -= 1
        else:
            c.old_open -= 1
        if outcome == "success":
            dt = now - o.started
            if dt >= 0.0 and dt == dt:
                c.latency_ewma = _ewma(c.latency_ewma, dt, self.ewma_alpha)
                if tokens is not None and tokens == tokens and 0.0 < tokens < math.inf:
                    # not streamed: TTFT unknown, the fleet's typical one is assumed
                    ttft = o.ttft if o.ttft >= 0.0 else (c.ttft_ewma or self.fleet.ttft_ewma or 0.0)
                    tpot = max(0.0, dt - ttft) / tokens
                    c.tpot_ewma = _ewma(c.tpot_ewma, tpot, self.ewma_alpha)
                    c.pace_samples += 1
                    c.pace_t = now
                    f = self.fleet
                    f.tokens_ewma = _ewma(f.tokens_ewma, float(tokens), self.fleet_alpha)
                    if not 0.0 <= now - f.computed_at < self.fleet_every or f.ref_tpot is None:  # (clock steps too)
                        f.recompute(self.chutes.values(), now)
        elif outcome == "rate_limited":
            c.rate_limited_total += 1
            c.penalty_until = now + self.penalty_seconds
            c.penalty_version = self.snapshot_version
            c.last_429_at = now
        elif outcome == "maintenance":
            c.maintenance_until = now + self.maintenance_seconds
        elif outcome in ("cancelled", "rejected"):
            pass
        elif outcome in ("error", "timeout"):
            c.errors_total += 1
            s = c.error_at(now)
            c.error_score = s + self.error_step * (1.0 - s)
            c.error_t = now
        else:
            self.anomalies["bad_outcome"] += 1

    def on_snapshot(self, version: object, now: float) -> None:
        """A new snapshot was adopted: open requests become 'old', new counts restart at 0.

        Adopting the same version again is a no-op. Penalties end because they belong to the
        previous version (see :meth:`ChuteLive.penalized`)."""
        if version == self.snapshot_version and self._epoch > 0:
            return
        self.snapshot_version = version
        self._epoch += 1
        for c in self.chutes.values():
            c.open_at_adoption = c.in_flight
            c.old_open = c.in_flight
            c.new_inflight = 0
            c.attempts_since_snapshot = 0

    def export_counts(self, now: float) -> dict[str, dict[str, float]]:
        """Per-chute counts to publish for the other workers (only chutes seen by this process):
        ``in_flight``, ``new_inflight``, ``started_total`` (lets a worker count its own starts since
        a measurement) and ``last_429_at`` (-inf unless a 429 penalty holds).
        Publish with the measurement time; all workers must share one clock (wall time)."""
        ver = self.snapshot_version
        return {
            cid: {
                "in_flight": c.in_flight,
                "new_inflight": c.new_inflight,
                "started_total": c.started_total,
                "last_429_at": c.last_429_at if c.penalized(now, ver) else -math.inf,
            }
            for cid, c in self.chutes.items()
        }

    @property
    def open_requests(self) -> int:
        return len(self._open)


def _ewma(old: float | None, x: float, alpha: float) -> float:
    return x if old is None else old + alpha * (x - old)
