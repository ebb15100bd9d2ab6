"""What one DES run is given (:class:`SimConfig`) and what it returns (:class:`SimResult`).

Every field added after the first validated version defaults to "off" and then leaves the
figures of the existing scenarios unchanged, draw for draw: ``alpha = 0`` (occupancy-independent
service), ``common_streams = False`` (one random stream, as before), ``sessions = None``
(independent requests) and ``affinity = None``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from benchmarks.des.sessions import SessionConfig

__all__ = ["SimConfig", "SimResult"]


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
    penalty_seconds: float = 6.0  # LiveState 429 hold cap, in service-time units
    remote_max_age: float = 0.5
    error_prob: dict[int, float] = field(default_factory=dict)  # chute index -> P(error) (reject mode)
    changes: list[tuple[float, str, int, float]] = field(default_factory=list)  # (t, "speed"|"load"|"errors", idx, x)
    warmup_frac: float = 0.1
    seed: int = 1
    share_bins: int = 40
    progress: Callable[[float], None] | None = None
    instant_snapshot: bool = False  # snapshot = true state at every decision (validation only)
    # --- issue 14: occupancy-dependent service. A request's service time is multiplied by
    # (1 + alpha x busy/c) with busy = the chute's requests in service, itself included, when it
    # starts service (the simulator's load factor). 0 = today's model.
    alpha: float = 0.0
    # Separate random streams for arrivals + replica choice and for service demands (drawn per
    # request at arrival), so every strategy sees the same schedule for a seed (--seeds).
    common_streams: bool = False
    # --- issue 13: sessions with a prefix cache (benchmarks/des/sessions.py); None = requests.
    sessions: "SessionConfig | None" = None
    # "affinity[:c]": ROUTING_AFFINITY=true with bound c (default the shipped bound), run by each
    # replica's RoutingCore; session mode only. None = the strategy alone (ROUTING_AFFINITY=false).
    # Pure stickiness is the strategy "sticky".
    affinity: str | None = None


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
