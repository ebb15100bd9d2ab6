"""How fast each chute serves, against the fleet: :class:`FleetPace` (the yardstick, one per
process) and :func:`slowness_ratio`. Pure: ``now`` is passed in.

A typical request is the request-weighted EWMA of time to first token (per 1 + uncached prompt
tokens / 1000: prefill work is the prompt's, not the chute's pace) and output tokens over the
whole fleet. The yardstick is the lower median over chutes of the seconds that typical request
would take on each chute (its TTFT + decode pace x tokens), recomputed at most every
``LiveState.fleet_every`` seconds, off the decision path. The median, not a traffic-weighted mean,
so one big chute slowing down cannot drag the yardstick with it. A ratio always compares two times
at the *current* typical request, never two token counts.

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Protocol

__all__ = ["FleetPace", "slowness_ratio"]


class Paced(Protocol):
    ttft_pace_ewma: float | None
    tpot_ewma: float | None


@dataclass(slots=True, eq=False)
class FleetPace:
    """The yardstick: the typical request and the reference chute's (TTFT, decode pace)."""

    ttft_ewma: float | None = None
    tokens_ewma: float | None = None
    ref_ttft: float | None = None
    ref_tpot: float | None = None
    computed_at: float = -math.inf

    @property
    def reference(self) -> float | None:
        return self.expected(self.ref_ttft, self.ref_tpot)

    def expected(self, ttft: float | None, tpot: float | None) -> float | None:
        """Expected seconds of a typical request at this ttft / tpot (None when tpot unknown)."""
        if tpot is None or self.tokens_ewma is None:
            return None
        return (ttft if ttft is not None else (self.ttft_ewma or 0.0)) + tpot * self.tokens_ewma

    def recompute(self, chutes: Iterable[Paced], now: float) -> None:
        timed = sorted(((t, c.ttft_pace_ewma, c.tpot_ewma) for c in chutes
                        if (t := self.expected(c.ttft_pace_ewma, c.tpot_ewma)) is not None), key=lambda x: x[0])
        if timed:
            _, self.ref_ttft, self.ref_tpot = timed[(len(timed) - 1) // 2]
        self.computed_at = now


def slowness_ratio(fleet: FleetPace | None, ttft: float | None, tpot: float | None, measured_at: float,
                   now: float, memory: float) -> float:
    """Expected time of a typical request on a chute / on the fleet's reference chute (1.0 when
    unknown). The evidence fades towards 1.0 with time constant ``memory`` seconds since the
    chute's last measurement, so a chute that was slow and then got no traffic is tried again."""
    if fleet is None or tpot is None:
        return 1.0
    mine = fleet.expected(ttft, tpot)
    ref = fleet.reference
    if mine is None or ref is None or not ref > 0.0:
        return 1.0
    ratio = mine / ref
    age = now - measured_at
    if age > 0.0 and memory > 0.0:
        ratio = 1.0 + (ratio - 1.0) * math.exp(-age / memory)
    return ratio
