"""The simulator's state: one :class:`ChuteRuntime` per chute and the utilization board.

No HTTP here (that is ``app.py``); the clocks and the rng are injected so the capacity,
instance and utilization bookkeeping is unit-testable with a fake clock.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from dataclasses import asdict
from typing import Any, Callable, NamedTuple, Sequence

import orjson

from chutes_lb.simulator import utilization as util
from chutes_lb.simulator.chute_api import model_entry
from chutes_lb.simulator.faults import AccountControls, ChuteControls, error_for
from chutes_lb.simulator.fleet_config import ChuteSpec, FleetConfig
from chutes_lb.simulator.model import WINDOWS, LoadRing
from chutes_lb.simulator.prefix import PREFIX_TTL_SECONDS, Instance, PrefixMemo, cacheable_blocks, choose_instance

__all__ = ["Account", "Admission", "ChuteRuntime", "Simulator", "UtilizationBoard", "controls_for", "next_utc_midnight"]

log = logging.getLogger(__name__)
FILLER_SEED = 20260218
EMA_WEIGHT = 0.2  # weight of a new sample in the TTFT / output-rate moving averages
_RNG = random.Random(0)  # instance tie-breaks when the caller passes no rng (unit tests)


def controls_for(spec: ChuteSpec) -> ChuteControls:
    """A chute's controls as its fleet entry sets them (no faults)."""
    return ChuteControls(spec.instances, spec.concurrency, reject_share=spec.reject_share, prefill_rate=spec.prefill_rate,
                         cache_tokens=spec.cache_tokens, context_length=spec.context_length)


class Admission(NamedTuple):
    """``status`` 0 = admitted on ``instance`` (release it later), else 503/429 to answer."""

    status: int
    instance: Instance | None = None
    cached_blocks: int = 0


class ChuteRuntime:
    """One chute: its spec, mutable controls, instances, in-flight count and load history.

    ``in_flight`` counts every admitted request, also those still running on an instance that
    an admin change removed (they hold capacity until they end, as before instances existed).
    Rate-limit mode: with ``reject_share`` s, a request is rejected with 429 whenever the running
    sum of s reaches 1 (error diffusion: exactly that share over any run of requests, with no
    randomness), before any capacity check, and counted as rate-limited in the windows.
    """

    def __init__(self, spec: ChuteSpec, now: float, memo_ttl: float = PREFIX_TTL_SECONDS, cache_scale: float = 1.0) -> None:
        self.spec = spec
        self.cache_scale = cache_scale  # SIM_CACHE_SCALE: every instance holds cache_tokens x this
        self.memo = PrefixMemo(memo_ttl)  # Chutes' prefix key -> instance memory (prefix.py)
        self.controls = controls_for(spec)
        self.in_flight = 0
        self.served = 0
        self.received = 0  # every completion request that named this chute (retry bounds are counted here)
        self.rejected_429 = 0
        self.ttft_ema: float | None = None  # seconds to the first token, moving average (``:latency`` ranking)
        self.otps_ema: float | None = None  # output tokens/s while decoding, moving average (``:throughput``)
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._reject_acc = 0.0
        self.instances: list[Instance] = []
        self._fit_instances()
        self.ring = LoadRing(now, self.controls.capacity)
        self.unhung = asyncio.Event()
        self.unhung.set()

    @property
    def capacity(self) -> int:
        return self.controls.capacity

    @property
    def has_instances(self) -> bool:
        return self.controls.instances > 0

    @property
    def has_free_slot(self) -> bool:
        """At least one instance below its concurrency right now (Chutes' availability check)."""
        conc = self.controls.concurrency
        return any(i.in_flight < conc for i in self.instances)

    def observe(self, ttft_seconds: float, output_tokens_per_second: float | None) -> None:
        """Feed the moving averages Chutes ranks ``:latency`` / ``:throughput`` lists by."""
        a = EMA_WEIGHT
        self.ttft_ema = ttft_seconds if self.ttft_ema is None else (1 - a) * self.ttft_ema + a * ttft_seconds
        if output_tokens_per_second is not None:
            o = output_tokens_per_second
            self.otps_ema = o if self.otps_ema is None else (1 - a) * self.otps_ema + a * o

    def _fit_instances(self) -> None:
        c = self.controls
        tokens = int(c.cache_tokens * self.cache_scale)
        del self.instances[c.instances:]
        for inst in self.instances:
            inst.cache.resize(tokens)
        while len(self.instances) < c.instances:
            self.instances.append(Instance(len(self.instances), tokens, self.spec.block_tokens))

    def admit(self, now: float, hashes: Sequence[bytes] = (), prompt_tokens: int = 0, rng: random.Random | None = None,
              keys: Sequence[bytes] = ()) -> Admission:
        """Admit a request (the caller must :meth:`release` it) or say what to answer.

        ``hashes`` are the prompt's block hashes (what the chosen instance's KV cache may hold),
        ``keys`` its prefix keys (what Chutes' instance choice uses; ``prefix.prefix_keys``).
        """
        c = self.controls
        if c.instances == 0:
            self.ring.count(now, requests=1)
            return Admission(503)
        if c.reject_share:
            self._reject_acc += c.reject_share
            if self._reject_acc >= 1.0 - 1e-9:
                self._reject_acc -= 1.0
                return self._reject(now)
        if self.in_flight >= c.capacity:
            return self._reject(now)
        inst = choose_instance(self.instances, c.concurrency, keys, self.memo, now, rng or _RNG)
        if inst is None:
            return self._reject(now)
        cached = inst.cache.match(hashes, cacheable_blocks(hashes, prompt_tokens, self.spec.block_tokens)) if hashes else 0
        inst.in_flight += 1
        self.in_flight += 1
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached * self.spec.block_tokens
        self.ring.set_load(now, self.in_flight, c.capacity)
        self.ring.count(now, requests=1)
        return Admission(0, inst, cached)

    def refuse(self, now: float, status: int) -> None:
        """Count an injected error answered before admission (a 429 counts as rate-limited)."""
        limited = status == 429
        self.rejected_429 += limited
        self.ring.count(now, requests=1, rate_limited=int(limited))

    def _reject(self, now: float) -> Admission:
        self.rejected_429 += 1
        self.ring.count(now, requests=1, rate_limited=1)
        return Admission(429)

    def release(self, now: float, completed: bool, instance: Instance | None = None) -> None:
        if instance is not None:
            instance.in_flight -= 1
        self.in_flight -= 1
        self.ring.set_load(now, self.in_flight, self.controls.capacity)
        if completed:
            self.served += 1
            self.ring.count(now, completed=1)

    def set_controls(self, controls: ChuteControls, now: float) -> None:
        self.controls = controls
        self._fit_instances()
        self.ring.set_load(now, self.in_flight, controls.capacity)
        if controls.hang:
            self.unhung.clear()
        else:
            self.unhung.set()

    def restore(self, now: float) -> None:
        """Back to the fleet entry: its controls, empty caches and prefill queues, no reject carry."""
        self.set_controls(controls_for(self.spec), now)
        for inst in self.instances:
            inst.cache.clear()
            inst.prefill_free_at = 0.0
        self.memo.clear()
        self._reject_acc = 0.0
        self.ttft_ema = self.otps_ema = None

    def state(self) -> dict[str, Any]:
        return {"chute_id": self.spec.chute_id, "name": self.spec.name, **asdict(self.controls),
                "in_flight": self.in_flight, "served": self.served, "received": self.received, "rejected_429": self.rejected_429,
                "prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "instance_state": [{"in_flight": i.in_flight, "cached_tokens": i.cache.tokens,
                                    "cache_capacity_tokens": i.cache.capacity_blocks * self.spec.block_tokens} for i in self.instances]}


def iso_utc(epoch: float) -> str:
    """ISO timestamp without timezone, like the real API (``2026-02-18T05:48:08.568123``)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def next_utc_midnight(wall: float) -> str:
    """When a daily quota resets: the next 00:00 UTC, ISO with ``Z``."""
    day = datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).date() + datetime.timedelta(days=1)
    return f"{day.isoformat()}T00:00:00Z"


class Account:
    """The one simulated account: its controls and its quota count (see ``faults.AccountControls``)."""

    def __init__(self) -> None:
        self.controls = AccountControls()
        self.quota_used = 0

    def configure(self, controls: AccountControls, fields: Sequence[str]) -> None:
        self.controls = controls
        if "quota_used" in fields:
            self.quota_used = controls.quota_used

    def headers(self) -> dict[str, str]:
        c = self.controls
        out = {"X-Chutes-Quota-Total": str(c.quota_total), "X-Chutes-Quota-Used": str(self.quota_used),
               "X-Chutes-Quota-Remaining": str(max(0, c.quota_total - self.quota_used)), "X-Chutes-RL-User": str(c.rl_user)}
        if c.rl_chute is not None:
            out["X-Chutes-RL-Chute"] = str(c.rl_chute)
        return out

    def check(self, rng: random.Random, chute_id: str) -> tuple[int, str] | None:
        """``(status, detail)`` when the account refuses this request, else None (and the request counts)."""
        c = self.controls
        if c.error_rate and rng.random() < c.error_rate:
            return error_for(c.error_kind, c.error_status, chute_id)
        if self.quota_used >= c.quota_total and c.balance <= 0:
            return error_for("quota", 402, chute_id)
        if c.quota_total:
            self.quota_used += 1
        return None

    def state(self) -> dict[str, Any]:
        return {**asdict(self.controls), "quota_used": self.quota_used}


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
                 cache_scale: float = 1.0, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self.time_scale = time_scale
        self.alpha = fleet.alpha
        self.clock = clock
        self.wall = wall
        self.rng = random.Random(seed) if seed else random.Random()
        self.initial_refresh_seconds = refresh_seconds
        now = clock()
        # the 600 s of Chutes' prefix memo are simulated time, like every latency
        self.chutes = [ChuteRuntime(spec, now, PREFIX_TTL_SECONDS * time_scale, cache_scale) for spec in fleet.chutes]
        self.by_key: dict[str, ChuteRuntime] = {}
        for c in self.chutes:
            self.by_key[c.spec.chute_id] = c
            self.by_key[c.spec.name] = c
        self.aliases: dict[str, list[str]] = {}  # lower-case alias -> chute names/UUIDs (POST /model_aliases/)
        self.account = Account()
        self.board = UtilizationBoard(refresh_seconds, filler_count, seed)
        self.refresh_now()

    def lookup(self, key: str) -> ChuteRuntime | None:
        return self.by_key.get(key)

    def refresh_now(self) -> int:
        return self.board.refresh(self.chutes, self.clock(), self.wall())

    def reset(self) -> None:
        now = self.clock()
        for c in self.chutes:
            c.restore(now)
        self.aliases.clear()
        self.account = Account()
        self.board.configure({"mode": "normal", "status": 500, "delay_seconds": 0.0, "size_bytes": 0,
                              "refresh_seconds": self.initial_refresh_seconds})

    def state(self) -> dict[str, Any]:
        return {"chutes": [c.state() for c in self.chutes], "utilization": self.board.state(), "aliases": dict(self.aliases),
                "account": self.account.state()}

    def models_body(self) -> bytes:
        return orjson.dumps({"object": "list", "data": [model_entry(c) for c in self.chutes]})
