"""Pure arithmetic of the simulator: load accounting, windows, service-time model.

Nothing here does I/O or reads a clock of its own: every function takes ``now`` (seconds on a
monotonic clock) and every random draw takes an injected ``random.Random``, so the unit tests
drive it with a fake clock and a seeded rng, without sleeping.

Service-time model (per request on an instance with ``C = concurrency`` slots and ``k``
requests in flight on it; a chute has ``instances`` of them, see ``prefix.py`` for the choice):

* time to first token = ``queue wait + (ttft_sample + uncached_tokens / prefill_rate) x
  ttft_scale x (1 + alpha x k/C) x time_scale`` (:func:`first_token_delay`), where
  ``ttft_sample`` is lognormal (median, sigma) from the fleet file, ``uncached_tokens`` the
  prompt tokens the instance's prefix cache does not hold (``prefix.py``) and ``prefill_rate``
  the tokens/s one instance computes. Prefill is compute-bound and one instance computes one
  prefill at a time: each instance keeps a FIFO prefill queue (``prefix.Instance``), so a
  request arriving behind a long uncached prompt waits for it (the queue wait);
* decode speed of *each* request = ``tps_sample x speed / (1 + alpha x k/C)`` tokens/s, **re-
  evaluated as the request runs** (after every few tokens), so a request slows down when others
  join the chute and speeds up when they leave: processor sharing, like a GPU server batching
  more sequences per step. ``alpha`` (default 1.0) is the slowdown at full load: a full chute
  decodes at ``1/(1+alpha)`` of the idle speed per request;
* output length is lognormal (median, sigma), clipped to ``[1, max]`` and to ``max_tokens``.

Load accounting: :class:`LoadRing` keeps one bucket per second in a ring (bounded memory: 3,601
buckets) holding the integral of in-flight requests over time (request-seconds), the integral of
capacity (slot-seconds), request arrivals, completions and 429s. Utilization over a window is
``busy integral / capacity integral``: a time-weighted average of in_flight/capacity that stays
right while capacity changes and before the simulator has run for a whole window.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Dist", "LoadRing", "WindowStats", "decode_rate", "ttft_seconds", "first_token_delay", "WINDOWS"]

#: window name -> seconds; "current" is the last few seconds.
WINDOWS: dict[str, int] = {"current": 10, "5m": 300, "15m": 900, "1h": 3600}


@dataclass(frozen=True)
class Dist:
    """A lognormal distribution given by its median and sigma, optionally clipped."""

    median: float
    sigma: float = 0.0
    min: float = 0.0
    max: float = math.inf

    def sample(self, rng: random.Random) -> float:
        value = self.median if self.sigma <= 0 else self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        return min(max(value, self.min), self.max)


def load_factor(in_flight: int, capacity: int, alpha: float) -> float:
    """``1 + alpha x in_flight/capacity``; a chute without capacity counts as full."""
    if capacity <= 0:
        return 1.0 + alpha
    return 1.0 + alpha * (in_flight / capacity)


def decode_rate(tps: float, speed: float, in_flight: int, capacity: int, alpha: float) -> float:
    """Tokens per second one request decodes at, given the chute's current load."""
    return tps * speed / load_factor(in_flight, capacity, alpha)


def ttft_seconds(sample: float, ttft_scale: float, in_flight: int, capacity: int, alpha: float, time_scale: float) -> float:
    return sample * ttft_scale * load_factor(in_flight, capacity, alpha) * time_scale


def first_token_delay(sample: float, uncached_tokens: int, prefill_rate: float, ttft_scale: float, in_flight: int,
                      capacity: int, alpha: float, time_scale: float, queue_wait: float = 0.0) -> tuple[float, float]:
    """``(seconds to the first token, seconds of prefill)``; both already times ``time_scale``.

    ``queue_wait`` (seconds, already scaled) is the wait for the instance's prefill queue;
    the prefill part is what this request adds to that queue.
    """
    factor = ttft_scale * load_factor(in_flight, capacity, alpha) * time_scale
    prefill = uncached_tokens / prefill_rate * factor
    return queue_wait + sample * factor + prefill, prefill


@dataclass(frozen=True)
class WindowStats:
    utilization: float
    requests: float
    completed: float
    rate_limited: float

    @property
    def rate_limit_ratio(self) -> float:
        return self.rate_limited / self.requests if self.requests > 0 else 0.0


class LoadRing:
    """Per-second buckets in a ring of ``size`` seconds; see the module docstring.

    Call :meth:`set_load` whenever in-flight or capacity changes, :meth:`count` for events.
    """

    __slots__ = ("size", "_stamp", "_busy", "_cap", "_req", "_done", "_rl", "_t", "_in_flight", "_capacity")

    def __init__(self, now: float, capacity: int, size: int = 3601) -> None:
        self.size = size
        self._stamp = [-1] * size  # absolute second each slot holds
        self._busy = [0.0] * size
        self._cap = [0.0] * size
        self._req = [0.0] * size
        self._done = [0.0] * size
        self._rl = [0.0] * size
        self._t = now
        self._in_flight = 0
        self._capacity = capacity

    def _slot(self, sec: int) -> int:
        i = sec % self.size
        if self._stamp[i] != sec:
            self._stamp[i] = sec
            self._busy[i] = self._cap[i] = self._req[i] = self._done[i] = self._rl[i] = 0.0
        return i

    def advance(self, now: float) -> None:
        """Integrate in-flight and capacity from the last call up to ``now``."""
        t = self._t
        if now <= t:
            return
        if now - t > self.size:  # idle longer than the ring: older buckets are gone anyway
            t = now - self.size
        k, c = self._in_flight, self._capacity
        while t < now:
            sec = math.floor(t)
            end = min(now, sec + 1.0)
            i = self._slot(sec)
            dt = end - t
            self._busy[i] += k * dt
            self._cap[i] += c * dt
            t = end
        self._t = now

    def set_load(self, now: float, in_flight: int, capacity: int) -> None:
        self.advance(now)
        self._in_flight = in_flight
        self._capacity = capacity

    def count(self, now: float, requests: int = 0, completed: int = 0, rate_limited: int = 0) -> None:
        i = self._slot(math.floor(now))
        self._req[i] += requests
        self._done[i] += completed
        self._rl[i] += rate_limited

    def window(self, now: float, seconds: int) -> WindowStats:
        """Totals and time-weighted utilization over the last ``seconds`` (whole buckets)."""
        self.advance(now)
        last = math.floor(now)
        first = last - min(seconds, self.size) + 1
        busy = cap = req = done = rl = 0.0
        for i in range(self.size):
            if first <= self._stamp[i] <= last:
                busy += self._busy[i]
                cap += self._cap[i]
                req += self._req[i]
                done += self._done[i]
                rl += self._rl[i]
        util = min(1.0, busy / cap) if cap > 0 else (1.0 if busy > 0 else 0.0)
        return WindowStats(util, req, done, rl)
