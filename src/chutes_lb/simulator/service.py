"""The simulator's state: one :class:`ChuteRuntime` per chute and the utilization board.

No HTTP here (that is ``app.py``); the clocks and the rng are injected so the capacity and
utilization bookkeeping is unit-testable with a fake clock.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from dataclasses import asdict
from typing import Any, Callable

import orjson

from chutes_lb.simulator import utilization as util
from chutes_lb.simulator.faults import ChuteControls
from chutes_lb.simulator.fleet_config import ChuteSpec, FleetConfig
from chutes_lb.simulator.model import WINDOWS, LoadRing

__all__ = ["ChuteRuntime", "Simulator", "UtilizationBoard"]

log = logging.getLogger(__name__)
FILLER_SEED = 20260218


class ChuteRuntime:
    """One chute: its spec, mutable controls, in-flight count and load history."""

    def __init__(self, spec: ChuteSpec, now: float) -> None:
        self.spec = spec
        self.controls = ChuteControls(spec.instances, spec.concurrency)
        self.in_flight = 0
        self.served = 0
        self.rejected_429 = 0
        self.ring = LoadRing(now, self.controls.capacity)
        self.unhung = asyncio.Event()
        self.unhung.set()

    @property
    def capacity(self) -> int:
        return self.controls.capacity

    def admit(self, now: float) -> int:
        """0 = admitted (caller must :meth:`release`), else the status to answer (503/429)."""
        if self.controls.instances == 0:
            self.ring.count(now, requests=1)
            return 503
        if self.in_flight >= self.controls.capacity:
            self.rejected_429 += 1
            self.ring.count(now, requests=1, rate_limited=1)
            return 429
        self.in_flight += 1
        self.ring.set_load(now, self.in_flight, self.controls.capacity)
        self.ring.count(now, requests=1)
        return 0

    def release(self, now: float, completed: bool) -> None:
        self.in_flight -= 1
        self.ring.set_load(now, self.in_flight, self.controls.capacity)
        if completed:
            self.served += 1
            self.ring.count(now, completed=1)

    def set_controls(self, controls: ChuteControls, now: float) -> None:
        self.controls = controls
        self.ring.set_load(now, self.in_flight, controls.capacity)
        if controls.hang:
            self.unhung.clear()
        else:
            self.unhung.set()

    def state(self) -> dict[str, Any]:
        return {"chute_id": self.spec.chute_id, "name": self.spec.name, **asdict(self.controls),
                "in_flight": self.in_flight, "served": self.served, "rejected_429": self.rejected_429}


def iso_utc(epoch: float) -> str:
    """ISO timestamp without timezone, like the real API (``2026-02-18T05:48:08.568123``)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


class UtilizationBoard:
    """The cached ``/chutes/utilization`` answer, recomputed only on :meth:`refresh`."""

    def __init__(self, refresh_seconds: float, filler_count: int, seed: int) -> None:
        self.refresh_seconds = refresh_seconds
        self.mode = "normal"
        self.status = 500
        self.delay_seconds = 0.0
        self.size_bytes = 0
        self.version = 0
        self.refreshed_at = 0.0
        self.malformed: list[str] = []
        self._rng = random.Random(seed or FILLER_SEED)
        self._fillers = util.filler_entries(filler_count, self._rng, "")
        self._entries: list[dict[str, Any]] = []
        self._normal = b"[]"
        self.body = b"[]"

    def refresh(self, chutes: list[ChuteRuntime], now: float, wall: float) -> int:
        ts = iso_utc(wall)
        entries = [util.entry(c.spec.chute_id, c.spec.name, ts, {k: c.ring.window(now, s) for k, s in WINDOWS.items()},
                              c.controls.instances, util.multiplier_for(c.spec.chute_id)) for c in chutes]
        entries += [{**f, "timestamp": ts} for f in self._fillers]
        self._entries = util.sort_entries(entries)
        self._normal = orjson.dumps(self._entries)
        self.version += 1
        self.refreshed_at = wall
        self.rerender()
        return self.version

    def rerender(self) -> None:
        ts = self._entries[0]["timestamp"] if self._entries else ""
        self.body, self.malformed = util.render(self.mode, self._entries, self._normal, self.size_bytes, self._rng, ts)

    @property
    def http_status(self) -> int:
        return self.status if self.mode == "status" else 200

    @property
    def content_type(self) -> str:
        return "text/html" if self.mode == "garbage" else "application/json"

    def configure(self, fields: dict[str, Any]) -> None:
        for k, v in fields.items():
            setattr(self, k, v)
        if "mode" in fields and fields["mode"] != "status" and "status" not in fields:
            self.status = 500
        self.rerender()

    def state(self) -> dict[str, Any]:
        return {"mode": self.mode, "refresh_seconds": self.refresh_seconds, "version": self.version,
                "refreshed_at": self.refreshed_at, "status": self.status, "delay_seconds": self.delay_seconds,
                "size_bytes": self.size_bytes, "body_bytes": len(self.body), "malformed_chute_ids": self.malformed}


class Simulator:
    """The fleet: chute lookup by name or UUID, fault controls, the utilization board."""

    def __init__(self, fleet: FleetConfig, *, time_scale: float, refresh_seconds: float, filler_count: int, seed: int,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self.time_scale = time_scale
        self.alpha = fleet.alpha
        self.clock = clock
        self.wall = wall
        self.rng = random.Random(seed) if seed else random.Random()
        self.initial_refresh_seconds = refresh_seconds
        now = clock()
        self.chutes = [ChuteRuntime(spec, now) for spec in fleet.chutes]
        self.by_key: dict[str, ChuteRuntime] = {}
        for c in self.chutes:
            self.by_key[c.spec.chute_id] = c
            self.by_key[c.spec.name] = c
        self.board = UtilizationBoard(refresh_seconds, filler_count, seed)
        self.refresh_now()

    def lookup(self, key: str) -> ChuteRuntime | None:
        return self.by_key.get(key)

    def refresh_now(self) -> int:
        return self.board.refresh(self.chutes, self.clock(), self.wall())

    def reset(self) -> None:
        now = self.clock()
        for c in self.chutes:
            c.set_controls(ChuteControls(c.spec.instances, c.spec.concurrency), now)
        self.board.configure({"mode": "normal", "status": 500, "delay_seconds": 0.0, "size_bytes": 0,
                              "refresh_seconds": self.initial_refresh_seconds})

    def state(self) -> dict[str, Any]:
        return {"chutes": [c.state() for c in self.chutes], "utilization": self.board.state()}

    def models_body(self) -> bytes:
        return orjson.dumps({"object": "list", "data": [
            {"id": c.spec.name, "object": "model", "created": 1735689600, "owned_by": "chutes", "root": c.spec.name,
             "chute_id": c.spec.chute_id, "max_model_len": 131072} for c in self.chutes]})
