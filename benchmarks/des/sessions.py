"""Session mode of the DES (issue 13): the workload's sessions, a prefix cache per chute, service in tokens.

- **Sessions** come from :class:`benchmarks.workload.sessions.SessionWorkload` (the published Chutes
  profiles), Poisson at ``load x sum(c_i) / mean turns`` per time unit. Turn k+1 is sent when
  turn k's answer arrived plus its think time (seconds / :attr:`ServiceModel.seconds_per_unit`).
  A turn that fails (every attempt answered 429 or an error) ends its session (the user gives up).
- **Time unit** = the mean service time of a turn computed without any cache hit on an idle chute:
  ``base_ttft + mean prompt / prefill_rate + mean output / tps`` seconds (~10 s for MiniMax-M2.5:
  32k tokens at 10k tokens/s, 272 tokens at 40 tokens/s). The load is offered against that.
- **Service** of a turn (seconds, then / seconds_per_unit): ``(base_ttft + uncached / prefill_rate
  + output / (tps x pace)) x (1 + alpha x busy/c) / speed``; TTFT = waiting (queue, 429 round
  trips) + the first two terms x the same factor. ``pace`` is lognormal (sigma 0.2), drawn with the
  session. No prefill queue: each slot computes its own prefill (the simulator has a FIFO per
  instance; at DES granularity a chute is one pool of slots).
- **Prefix cache** per chute (:class:`ChuteCache`): an LRU of sessions -> tokens of the last prompt
  served there, ``cache_tokens_per_slot x c_i`` tokens in all (the simulator's 500k per instance
  of 8 slots). A turn hits the cached length of its own session on that chute (at most prompt - 1:
  the last token is always computed), then stores its prompt.

Defaults follow the simulator's session fleet (``simulator/fleet-sessions.yaml``).
"""
from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from benchmarks.des.config import SimResult
from benchmarks.workload.sessions import Session, SessionWorkload

__all__ = ["SessionConfig", "ServiceModel", "ChuteCache", "SessionState", "SessionResult", "session_stream"]

PACE_SIGMA = 0.2  # the simulator's decode-speed sigma


@dataclass(frozen=True)
class SessionConfig:
    profile: str = "minimax-m25"
    n_sessions: int = 20_000  # measured sessions (after the warm-up ones)
    warmup_sessions: int = 4_000
    prefill_rate: float = 10_000.0  # uncached prompt tokens/s
    tps: float = 40.0  # decode tokens/s per request, idle chute
    base_ttft: float = 0.3  # seconds before prefill (gateway, scheduling)
    cache_tokens_per_slot: float = 62_500.0  # 500k tokens per instance / 8 slots
    token_scale: float = 1.0
    think_scale: float = 1.0
    tail_frac: float = 0.5  # stop this share of the measured arrival span after the last measured arrival


@dataclass(frozen=True)
class ServiceModel:
    """Seconds <-> DES units, and a turn's service and TTFT in units."""

    prefill_rate: float
    tps: float
    base_ttft: float
    seconds_per_unit: float

    @classmethod
    def of(cls, sc: SessionConfig, w: SessionWorkload) -> "ServiceModel":
        p = w.profile
        mean_prompt = p.chain.mean_input_tokens * w.token_scale  # the calibrated target (see profiles.py)
        mean_out = p.output.mean * w.output_scale
        unit = sc.base_ttft + mean_prompt / sc.prefill_rate + mean_out * math.exp(PACE_SIGMA ** 2 / 2) / sc.tps
        return cls(sc.prefill_rate, sc.tps, sc.base_ttft, unit)

    def times(self, uncached: int, output: int, pace: float, factor: float) -> tuple[float, float]:
        """(time to first token, whole service) in units; ``factor`` = load factor / speed."""
        u = factor / self.seconds_per_unit
        first = (self.base_ttft + uncached / self.prefill_rate) * u
        return first, first + output / (self.tps * pace) * u


class ChuteCache:
    """LRU of session -> cached prompt tokens, bounded by ``capacity`` tokens in all."""

    __slots__ = ("capacity", "tokens", "_lru")

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.tokens = 0
        self._lru: OrderedDict[int, int] = OrderedDict()

    def serve(self, session: int, prompt_tokens: int) -> int:
        """Cached tokens for this prompt, then store it as the session's entry (most recent)."""
        lru = self._lru
        old = lru.pop(session, 0)
        self.tokens -= old
        hit = min(old, prompt_tokens - 1)
        if prompt_tokens <= self.capacity:
            lru[session] = prompt_tokens
            self.tokens += prompt_tokens
            while self.tokens > self.capacity:
                _, v = lru.popitem(last=False)
                self.tokens -= v
        return max(0, hit)

    def __contains__(self, session: int) -> bool:
        return session in self._lru


@dataclass
class SessionState:
    """One live session in the DES: its plan and what happened to it so far."""

    plan: Session
    measured: bool
    replicas: tuple[int, ...]  # the replica each turn reaches (drawn with the session)
    paces: tuple[float, ...]
    key: int | None = None  # h64 of the session id: the affinity key the proxy would pass
    chutes: set[int] = field(default_factory=set)


def session_stream(cfg_seed: int, w: SessionWorkload, rate: float, replicas: int) -> Iterator[tuple[Session, tuple, tuple]]:
    """Sessions with their per-turn replica and pace, from streams of their own (same for every
    strategy: the arrival schedule of a seed)."""
    wrng, xrng = random.Random(cfg_seed), random.Random(cfg_seed * 7919 + 3)
    for s in w.sessions(wrng, rate):
        n = len(s.turns)
        yield (s, tuple(int(xrng.random() * replicas) for _ in range(n)),
               tuple(math.exp(PACE_SIGMA * xrng.gauss(0.0, 1.0)) for _ in range(n)))


@dataclass
class SessionResult(SimResult):
    """A session run, measured sessions only: ``latencies`` = the turns' end-to-end latencies (send ->
    last token), ``attempts``/``rejected``/``failed`` = their attempts, 429s and failed turns."""

    ttft_first: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ttft_follow: np.ndarray = field(default_factory=lambda: np.zeros(0))
    prompt_total: int = 0
    prompt_computed: int = 0
    sessions: int = 0  # measured sessions that ended
    multi_turn: int = 0
    one_chute: int = 0  # multi-turn sessions whose every turn was served by one chute
    abandoned: int = 0  # sessions that ended on a failed turn
    unfinished: int = 0  # measured sessions still open when the run stopped
    loads: np.ndarray = field(default_factory=lambda: np.zeros(0))  # time-averaged open requests / c_i
    seconds_per_unit: float = 1.0
    computed_turns: np.ndarray = field(default_factory=lambda: np.zeros(0))  # uncached prompt tokens per turn

    @property
    def computed_share(self) -> float:
        return self.prompt_computed / self.prompt_total if self.prompt_total else math.nan

    @property
    def one_chute_share(self) -> float:
        return self.one_chute / self.multi_turn if self.multi_turn else math.nan

    @property
    def max_over_mean_load(self) -> float:
        caps = self.cap_share
        mean = float((self.loads * caps).sum() / caps.sum()) if len(self.loads) else math.nan
        return float(self.loads.max()) / mean if mean and mean > 0 else math.nan

    @property
    def utilization(self) -> float:
        return float((self.loads * self.cap_share).sum()) if len(self.loads) else math.nan
