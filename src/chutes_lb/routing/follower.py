"""The snapshot follower: keeps the worker's routing core on the newest utilization snapshot.

It reads the snapshot through a :class:`~chutes_lb.snapshot.SnapshotStore` (Redis in the proxy,
:class:`~chutes_lb.snapshot.MemorySnapshotStore` in tests): the version on every announcement
(the poller PUBLISHes each accepted write) and at least every ``refresh_seconds``, the whole
snapshot only when the version changed. A store that is slow or gone never blocks a request: the
core keeps routing on live signals, with the state (``missing``, ``stale``, ``invalid``,
``redis_unreachable``) logged once per transition and counted in the metrics.

Must not import: Redis (the store is passed in), HTTP clients, LiteLLM, prometheus_client, or
anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from chutes_lb.routing.core import RoutingCore
from chutes_lb.snapshot import SnapshotSchemaError, SnapshotStore, Subscription

__all__ = ["SnapshotFollower"]

log = logging.getLogger("chutes_lb.routing")


class SnapshotFollower:
    def __init__(self, core: RoutingCore, store: SnapshotStore, refresh_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.monotonic = monotonic

    async def refresh(self) -> None:
        """One read: adopt a new version, or notice that the snapshot is missing or corrupt."""
        try:
            version = await self.store.read_version()
            current = self.core.snapshot
            if version is None:
                self.core.snapshot_missing()
            elif current is None or version != current.version:
                snap = await self.store.read()
                if snap is None:
                    self.core.snapshot_missing()
                else:
                    self.core.adopt(snap)
            else:
                self.core.tick()
        except SnapshotSchemaError as exc:
            self.core.snapshot_invalid(str(exc))

    async def run(self) -> None:
        """Follow until cancelled; store errors back off (0.5 s doubling to 5 s) and are retried."""
        backoff = 0.5
        while True:
            sub: Subscription | None = None
            try:
                await self.refresh()
                sub = await self.store.subscribe()
                backoff = 0.5
                deadline = self.monotonic() + self.refresh_seconds
                while True:
                    announced = await sub.next(min(max(0.05, deadline - self.monotonic()), 1.0))
                    if announced is not None or self.monotonic() >= deadline:
                        await self.refresh()
                        deadline = self.monotonic() + self.refresh_seconds
                    else:
                        self.core.tick()  # a held snapshot goes stale with no new announcement
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.core.snapshot_unreachable()
                log.debug("routing snapshot refresh failed: %r", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if sub is not None:
                    await sub.close()
