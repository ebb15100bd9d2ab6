"""The in-flight exchange loop: every ``interval`` (with jitter) each worker publishes its own
in-flight counts through the :class:`~chutes_lb.snapshot.SnapshotStore` and reads the other
workers', which the core folds in with the pure :func:`chutes_lb.routing.remote.exchange` (the DES
calls the same function). The loop also sweeps attempts whose callback never came and refreshes
the per-chute estimates behind ``/info`` and the gauges.

Must not import: Redis (the store is passed in), HTTP clients, LiteLLM, prometheus_client, or
anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import asyncio
import logging
import random

from chutes_lb.routing.core import RoutingCore
from chutes_lb.snapshot import SnapshotStore

__all__ = ["InflightSharing"]

log = logging.getLogger("chutes_lb.routing")

IO_TIMEOUT_SECONDS = 2.0


class InflightSharing:
    def __init__(self, core: RoutingCore, store: SnapshotStore, interval: float, rng: random.Random | None = None) -> None:
        self.core = core
        self.store = store
        self.interval = interval
        self.rng = rng or random.Random()

    async def once(self) -> None:
        """Publish own counts, read the others' (fresh within 3 intervals), fold them in."""
        core = self.core
        core.sweep()
        now = core.clock()
        try:
            await asyncio.wait_for(self.store.publish_inflight(core.worker_id, core.export_counts(), now), IO_TIMEOUT_SECONDS)
            entries = await asyncio.wait_for(self.store.read_inflight(now, 3 * self.interval), IO_TIMEOUT_SECONDS)
            core.exchanged((worker, entry["chutes"], entry["ts"]) for worker, entry in entries.items())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("routing in-flight exchange failed: %r", exc)
            core.exchange_failed()
        core.refresh_estimates()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval * (0.8 + 0.4 * self.rng.random()))
            await self.once()
