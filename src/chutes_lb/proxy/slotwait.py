"""A bounded wait for a free slot (``ROUTING_WAIT_SECONDS``): when every chute a request may use
is estimated full, the gateway holds it until the routing core says a slot freed (an attempt of
this worker closed, or the other workers' counts moved) or the bound passed, instead of sending it
to a full chute that answers 429. First come, first served within a worker: a freed slot wakes
the oldest waiter only; a waiter that still finds every chute full goes back to the front. The
estimates also move with time alone (requests open at the snapshot finish), so a waiter looks
again at least every :data:`RECHECK_SECONDS`.

When the bound passes the request is sent anyway, to the chute the usual pick chooses: the
estimate may be wrong (a stale snapshot), and the chute's own answer decides; so a fleet that is
simply too small shows as waits that time out (``chutes_lb_slot_wait_seconds{outcome="timeout"}``
and the alert on it), not as a queue that hides it.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable

from chutes_lb.routing.metrics import RoutingMetrics

__all__ = ["SlotWait", "RECHECK_SECONDS"]

RECHECK_SECONDS = 0.25


class SlotWait:
    def __init__(self, bound_seconds: float, metrics: RoutingMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound_seconds
        self.metrics = metrics
        self.clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def wake(self) -> None:
        """A slot may have freed: the oldest waiter looks (the core calls this; sync, cheap)."""
        while self._waiters:
            fut = self._waiters[0]
            if not fut.done():
                fut.set_result(None)
                return
            self._waiters.popleft()

    async def until_room(self, full: Callable[[], bool]) -> float:
        """Wait while ``full()`` says every usable chute is full, at most ``bound`` seconds;
        returns the seconds waited (0.0 without a wait)."""
        if self.bound <= 0 or not full():
            return 0.0
        loop = asyncio.get_running_loop()
        started = self.clock()
        deadline = started + self.bound
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self.metrics.slot_waiting(1)
        outcome = "timeout"
        try:
            while True:
                left = deadline - self.clock()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(fut), min(left, RECHECK_SECONDS))
                except asyncio.TimeoutError:
                    pass
                if not full():
                    outcome = "slot"
                    break
                if fut.done():  # woken but still full: back to the front, a fresh future
                    fresh: asyncio.Future[None] = loop.create_future()
                    try:
                        self._waiters[self._waiters.index(fut)] = fresh
                    except ValueError:
                        self._waiters.appendleft(fresh)
                    fut = fresh
        finally:
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass
            self.metrics.slot_waiting(-1)
            if outcome == "slot":
                self.wake()  # another slot may be free as well: the next waiter looks
        waited = self.clock() - started
        self.metrics.slot_waited(waited, outcome)
        return waited
