"""The LiteLLM routing hook: adapts LiteLLM's callbacks to the pure decision logic.

One :class:`ChutesRoutingHook` per worker process (``get_hook()``), listed in the LiteLLM config
as ``litellm_settings.callbacks: ["chutes_routing.proxy_handler_instance"]``.

- ``async_filter_deployments`` (LiteLLM calls it on every pick with the deployments not in
  cooldown) builds the candidates from the in-memory snapshot, this worker's live signals and
  the other workers' in-flight counts, asks :func:`chutes_lb.routing.decision.decide`, and
  returns exactly one deployment. It does no network I/O.
- ``async_log_success_event`` / ``async_log_failure_event`` close the live bookkeeping of each
  attempt (latency, time to first token, 429s, errors) and feed the metrics.
- Background tasks (started on the first request, one set per worker) keep the snapshot in
  memory (Redis pub/sub announcements plus a periodic re-read), publish this worker's in-flight
  counts and read the others' every ``INFLIGHT_PUBLISH_SECONDS``, and log a routing summary.
  Redis being slow or gone never blocks a request: routing continues on live signals alone,
  logged once per transition and counted in ``chutes_lb_routing_fallbacks_total``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter as Tally
from dataclasses import replace
from typing import Any, Mapping

from litellm.integrations.custom_logger import CustomLogger

from chutes_lb.fleet import ChuteRef, load_chutes
from chutes_lb.proxy import metrics as m
from chutes_lb.routing.decision import DEFAULT_PARAMS, Candidate, CandidateSet, candidate_set, decide, is_slow
from chutes_lb.routing.live import LiveState, RemoteCounts, aggregate_remote
from chutes_lb.routing.requestinfo import (attempt_key, classify_failure, failed_ids_in_request, failure_kinds_in_request,
                                           last_failed_in_request, ttft_seconds, completion_tokens)
from chutes_lb.settings import Settings, load_settings
from chutes_lb.snapshot import RedisSnapshotStore, Snapshot, SnapshotLayout, SnapshotSchemaError

log = logging.getLogger("chutes_lb.routing")

SUMMARY_SECONDS = 10.0
DECISION_LOG_BUDGET = 5  # per-decision INFO lines per summary period; the rest are summarised


class ChutesRoutingHook(CustomLogger):
    def __init__(self, settings: Settings | None = None, rng: random.Random | None = None) -> None:
        super().__init__()
        self.settings = settings or load_settings()
        self.strategy = self.settings.routing_strategy
        ratio = self.settings.routing_slow_ratio
        self.params = replace(DEFAULT_PARAMS, use_speed=ratio > 0, slow_ratio=ratio or DEFAULT_PARAMS.slow_ratio)
        self.chutes: dict[str, ChuteRef] = {c.chute_id: c for c in load_chutes(self.settings.litellm_config_path)}
        self.rng = rng or random.Random()
        self.live = LiveState()
        self.remote: dict[str, RemoteCounts] = {}
        self.snapshot: Snapshot | None = None
        self.snapshot_state = "missing"  # ok | missing | stale | redis_unreachable | invalid
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # open upstream attempts: litellm_call_id -> chute id -> (live token, start time)
        self._attempts: dict[str, dict[str, tuple[int, float]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Any = None
        self._store: RedisSnapshotStore | None = None
        self._period_decisions: Tally[tuple[str, str]] = Tally()
        self._period_logged = 0
        self.last_headroom: dict[str, float] = {}
        for chute_id in self.chutes:
            self.live.chute(chute_id)
            self.remote[chute_id] = RemoteCounts()
        self._known_instances: dict[str, int] = {}
        self._candidate_cache: dict[tuple[object, tuple[str, ...]], CandidateSet] = {}
        self.snapshot_checked = False  # True after the first snapshot read attempt (readiness)
        self.replicas = 1  # worker processes routing to this fleet: 1 + fresh remote workers

    # ------------------------------------------------------------ decision (request path)
    def usable_snapshot(self, now: float) -> Snapshot | None:
        snap = self.snapshot
        if snap is None:
            return None
        if snap.age(now) > self.settings.snapshot_stale_seconds:
            return None  # the background loop reports the transition; requests only read
        return snap

    async def async_filter_deployments(self, model: str, healthy_deployments: list, messages: Any = None, request_kwargs: dict | None = None, parent_otel_span: Any = None) -> list[dict]:
        if not self._tasks:
            self.ensure_started()
        if not healthy_deployments or self.strategy == "passthrough":
            return healthy_deployments  # passthrough: LiteLLM's own routing_strategy decides
        now = time.time()
        by_id: dict[str, dict] = {}
        for dep in healthy_deployments:
            dep_id = str((dep.get("model_info") or {}).get("id", ""))
            by_id.setdefault(dep_id, dep)
        failed = failed_ids_in_request(request_kwargs)
        snap = self.usable_snapshot(now)
        cands = self._candidates(snap, tuple(by_id))
        result = decide(cands, self.strategy, self.rng, now=now, excluded=failed, replicas=self.replicas,
                        snapshot_version=self.live.snapshot_version, params=self.params,
                        explain=log.isEnabledFor(logging.DEBUG))
        choice = result.chute_id
        chute = self.chutes.get(choice)
        label = chute.name if chute else "unconfigured"
        m.DECISIONS.labels(label, result.reason.value, self.strategy).inc()
        if snap is None and self.strategy in ("headroom", "least-utilization"):
            m.FALLBACKS.labels(self.snapshot_state if self.snapshot_state != "ok" else "stale").inc()
        if failed:  # this pick re-routes a request: count it once, against the chute that just failed
            last = last_failed_in_request(request_kwargs)
            if last in self.chutes:
                m.FAILOVERS.labels(self.chutes[last].name).inc()
        if result.headroom:
            self.last_headroom = dict(zip(cands.ids, result.headroom))
        call_id = _call_id(request_kwargs)
        if call_id and call_id in self._attempts:
            # LiteLLM retries only after an attempt failed, and does not report every failed
            # attempt to the callbacks: whatever this request still has open has failed.
            self._close_call(call_id, now, failure_kinds_in_request(request_kwargs), "error")
        token = self.live.on_start(choice, now)
        if call_id:
            self._attempts.setdefault(call_id, {})[choice] = (token, now)
        m.INFLIGHT.labels(label).inc()
        self._note_decision(label, result.reason.value, failed, result.headroom[result.index] if result.headroom else None)
        return [by_id[choice]]

    def _candidates(self, snap: Snapshot | None, ids: tuple[str, ...]) -> CandidateSet:
        """Candidate objects for these ids under this snapshot, built once per snapshot version."""
        key = (snap.version if snap is not None else None, ids)
        cached = self._candidate_cache.get(key)
        if cached is not None:
            return cached
        cands = []
        for chute_id in ids:
            ref = self.chutes.get(chute_id)
            concurrency = ref.concurrency if ref else 1
            stats = snap.chutes.get(chute_id) if snap is not None else None
            if stats is not None:
                self._known_instances[chute_id] = stats.active_instance_count
                cands.append(Candidate(chute_id, stats.active_instance_count * concurrency, stats.utilization_current,
                                       stats.utilization_5m, stats.rate_limit_ratio_5m, self.live.chute(chute_id),
                                       self.remote.setdefault(chute_id, RemoteCounts())))
            else:  # no usable snapshot: last known instances (or 1) x concurrency, live counts only
                instances = max(1, self._known_instances.get(chute_id, 1))
                cands.append(Candidate(chute_id, instances * concurrency, None, None, None, self.live.chute(chute_id),
                                       self.remote.setdefault(chute_id, RemoteCounts())))
        if len(self._candidate_cache) > 32:
            self._candidate_cache.clear()
        built = self._candidate_cache[key] = candidate_set(cands)
        return built

    def _note_decision(self, label: str, reason: str, failed: frozenset[str], headroom: float | None) -> None:
        self._period_decisions[(label, reason)] += 1
        if log.isEnabledFor(logging.DEBUG) or self._period_logged < DECISION_LOG_BUDGET:
            self._period_logged += 1
            extra = f", after failure of {', '.join(self.chutes[f].name for f in failed if f in self.chutes)}" if failed else ""
            room = f", est. headroom {headroom:.1f} slots" if headroom is not None else ""
            log.info("routing -> %s (strategy %s, reason %s%s, snapshot %s%s)", label, self.strategy, reason, room, self.snapshot_state, extra)

    # ------------------------------------------------------------ outcomes
    def _end(self, call_id: str, chute_id: str, outcome: str, now: float, ttft: float | None = None,
             tokens: float | None = None) -> None:
        """Close one attempt exactly once: live bookkeeping, in-flight gauge, outcome metrics."""
        open_for_call = self._attempts.get(call_id)
        entry = open_for_call.pop(chute_id, None) if open_for_call is not None else None
        if entry is None:
            return
        if not open_for_call:
            del self._attempts[call_id]
        token, t0 = entry
        chute = self.chutes.get(chute_id)
        label = chute.name if chute else "unconfigured"
        if ttft is not None:
            self.live.on_first_token(token, t0 + ttft)
            m.TTFT.labels(label).observe(ttft)
        self.live.on_end(token, now, outcome, tokens)
        m.INFLIGHT.labels(label).dec()
        m.UPSTREAM.labels(label, outcome).inc()
        if outcome == "success":
            m.LATENCY.labels(label).observe(max(0.0, now - t0))

    def _close_call(self, call_id: str, now: float, kinds: Mapping[str, str], default: str) -> None:
        """Every attempt the request still has open has failed (outcome per chute, else ``default``)."""
        for chute_id in list(self._attempts.get(call_id, ())):
            self._end(call_id, chute_id, kinds.get(chute_id, default), now)

    def _close(self, kwargs: Mapping[str, Any], outcome: str, start: Any, tokens: float | None = None) -> None:
        key = attempt_key(kwargs)
        if key is not None:
            self._end(key[0], key[1], outcome, time.time(), ttft_seconds(kwargs, start), tokens)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            self._close(kwargs, "success", start_time, completion_tokens(response_obj))
        except Exception:  # never let bookkeeping break a response
            log.exception("routing bookkeeping failed on success")

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            self._close(kwargs, classify_failure(kwargs), start_time)
        except Exception:
            log.exception("routing bookkeeping failed on failure")

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception, user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        """The request failed for good: every attempt it still has open is over."""
        try:
            call_id = _call_id(request_data)
            if call_id:
                self._close_call(call_id, time.time(), {}, classify_failure({"exception": original_exception}))
        except Exception:
            log.exception("routing bookkeeping failed on request failure")
        return None

    # ------------------------------------------------------------ background
    def ensure_started(self) -> None:
        """Start the background tasks in the running loop (once per worker)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._snapshot_loop(), name="chutes-lb-snapshot"),
            loop.create_task(self._inflight_loop(), name="chutes-lb-inflight"),
            loop.create_task(self._summary_loop(), name="chutes-lb-summary"),
        ]

    def _set_state(self, state: str) -> None:
        if state == self.snapshot_state:
            return
        previous, self.snapshot_state = self.snapshot_state, state
        m.SNAPSHOT_USABLE.set(1 if state == "ok" else 0)
        if state == "ok":
            log.info("routing snapshot usable again (was %s): routing on utilization + live signals", previous)
        else:
            log.warning("routing snapshot %s (was %s): routing on live signals alone until it recovers", state, previous)

    def _client(self) -> RedisSnapshotStore:
        if self._store is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=10)
            self._store = RedisSnapshotStore(self._redis, self.settings.redis_key_prefix, self.settings.snapshot_ttl_seconds)
        return self._store

    async def _refresh_snapshot(self) -> None:
        store = self._client()
        try:
            version = await store.read_version()
            if version is None:
                self.snapshot = None
                self._set_state("missing")
                return
            if self.snapshot is None or version != self.snapshot.version:
                snap = await store.read()
                if snap is None:
                    self.snapshot = None
                    self._set_state("missing")
                    return
                self.snapshot = snap
                self.live.on_snapshot(snap.version, time.time())
        except SnapshotSchemaError as exc:
            log.error("routing snapshot unreadable: %s", exc)
            self.snapshot = None
            self._set_state("invalid")
            return
        self._update_state()

    def _update_state(self) -> None:
        """The one place the snapshot state is decided (Redis reachable: missing, stale or ok)."""
        if self.snapshot is None:
            if self.snapshot_state not in ("missing", "invalid"):
                self._set_state("missing")
            return
        stale = self.snapshot.age(time.time()) > self.settings.snapshot_stale_seconds
        self._set_state("stale" if stale else "ok")

    async def _snapshot_loop(self) -> None:
        backoff = 0.5
        while True:
            pubsub = None
            try:
                await self._refresh_snapshot()
                self.snapshot_checked = True
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(SnapshotLayout(self.settings.redis_key_prefix).announce)
                backoff = 0.5
                deadline = time.monotonic() + self.settings.snapshot_refresh_seconds
                while True:
                    timeout = max(0.05, deadline - time.monotonic())
                    msg = await pubsub.get_message(timeout=min(timeout, 1.0))
                    if msg is not None or time.monotonic() >= deadline:
                        await self._refresh_snapshot()
                        deadline = time.monotonic() + self.settings.snapshot_refresh_seconds
                    else:
                        self._update_state()  # a held snapshot goes stale with no new message
                    m.SNAPSHOT_AGE.set(self.snapshot.age(time.time()) if self.snapshot else -1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.snapshot_checked = True  # ready anyway: routing works on live signals alone
                self._set_state("redis_unreachable")
                log.debug("routing snapshot refresh failed: %r", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        await asyncio.wait_for(pubsub.aclose(), 1)
                    except Exception:
                        pass

    async def _inflight_loop(self) -> None:
        interval = self.settings.inflight_publish_seconds
        while True:
            await asyncio.sleep(interval * (0.8 + 0.4 * self.rng.random()))
            now = time.time()
            self._sweep(now)
            try:
                store = self._client()
                await asyncio.wait_for(store.publish_inflight(self.worker_id, self.live.export_counts(now), now), 2)
                others = await asyncio.wait_for(store.read_inflight(now, 3 * interval), 2)
                # each export carries the time it was measured, so the decision can age it
                exports = [(entry["chutes"], entry["ts"]) for wid, entry in others.items() if wid != self.worker_id]
                aggregate_remote(exports, into=self.remote, mark_from=self.live)
                self.replicas = 1 + len(exports)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("routing in-flight exchange failed: %r", exc)
                aggregate_remote((), into=self.remote)  # unknown, not zero: RemoteCounts become stale
            self._export_headroom(now)

    def _export_headroom(self, now: float) -> None:
        snap = self.usable_snapshot(now)
        ids = tuple(self.chutes)
        cands = self._candidates(snap, ids)
        result = decide(cands, "headroom", random.Random(0), now=now, replicas=self.replicas,
                        snapshot_version=self.live.snapshot_version, params=self.params, explain=True)
        if result.headroom:
            self.last_headroom = dict(zip(cands.ids, result.headroom))
            for chute_id, room in self.last_headroom.items():
                m.HEADROOM.labels(self.chutes[chute_id].name).set(room if room > -1e9 else -1)
        for chute_id, ref in self.chutes.items():
            live = self.live.chutes.get(chute_id)
            m.SLOWNESS.labels(ref.name).set(live.slowness(now, self.params.speed_memory) if live else 1.0)

    def _sweep(self, now: float) -> None:
        """Forget attempts whose callback never came (client gone): bounded memory, honest counts."""
        limit = self.settings.proxy_request_timeout_seconds
        for call_id, open_for_call in list(self._attempts.items()):
            for chute_id, (_, t0) in list(open_for_call.items()):
                if now - t0 > limit:
                    self._end(call_id, chute_id, "timeout", now)

    async def _summary_loop(self) -> None:
        while True:
            await asyncio.sleep(SUMMARY_SECONDS)
            counts, self._period_decisions = self._period_decisions, Tally()
            self._period_logged = 0
            if not counts:
                continue
            total = sum(counts.values())
            per_chute: Tally[str] = Tally()
            for (label, _), n in counts.items():
                per_chute[label] += n
            parts = ", ".join(f"{label} {n} ({100 * n / total:.0f}%)" for label, n in per_chute.most_common())
            per_reason: Tally[str] = Tally()
            for (_, reason), n in counts.items():
                per_reason[reason] += n
            reasons = ", ".join(f"{reason}={n}" for reason, n in per_reason.most_common())
            age = f"{self.snapshot.age(time.time()):.0f}s" if self.snapshot else "n/a"
            log.info("routing summary (%.0fs, worker %s): %d requests -> %s; reasons %s; snapshot %s v%s age %s",
                     SUMMARY_SECONDS, self.worker_id, total, parts, reasons, self.snapshot_state,
                     self.snapshot.version if self.snapshot else "-", age)

    # ------------------------------------------------------------ /info
    def info(self) -> dict[str, Any]:
        now = time.time()
        snap = self.snapshot
        chutes = []
        for chute_id, ref in self.chutes.items():
            stats = snap.chutes.get(chute_id) if snap else None
            live = self.live.chutes.get(chute_id)
            remote = self.remote.get(chute_id)
            chutes.append({
                "chute_id": chute_id, "name": ref.name, "concurrency_per_instance": ref.concurrency,
                "snapshot": None if stats is None else {
                    "utilization_current": stats.utilization_current, "utilization_5m": stats.utilization_5m,
                    "rate_limit_ratio_5m": stats.rate_limit_ratio_5m, "active_instance_count": stats.active_instance_count,
                },
                "in_flight_this_worker": live.in_flight if live else 0,
                "in_flight_other_workers": remote.in_flight if remote else 0,
                "estimated_headroom_slots": _finite(self.last_headroom.get(chute_id)),
                "latency_ewma_seconds": live.latency_ewma if live else None,
                "ttft_ewma_seconds": live.ttft_ewma if live else None,
                "decode_seconds_per_token_ewma": live.tpot_ewma if live else None,
                "slowness_vs_fleet": round(live.slowness(now, self.params.speed_memory), 3) if live else 1.0,
                "slow_overflow_only": bool(live and is_slow(live, now, self.params)),
                "recent_429_penalty": bool(live and live.penalized(now, self.live.snapshot_version)),
            })
        return {
            "strategy": self.strategy,
            "worker": self.worker_id,
            "snapshot": {
                "state": self.snapshot_state,
                "version": snap.version if snap else None,
                "age_seconds": round(snap.age(now), 3) if snap else None,
                "api_timestamp": snap.api_timestamp if snap else None,
                "stale_after_seconds": self.settings.snapshot_stale_seconds,
            },
            "deployments": chutes,
        }


def _finite(value: float | None) -> float | None:
    """JSON-safe: -inf (a 429 penalty) and NaN become None."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return round(value, 3)


def _call_id(request_kwargs: Mapping[str, Any] | None) -> str | None:
    if not request_kwargs:
        return None
    value = request_kwargs.get("litellm_call_id")
    return str(value) if value else None


_HOOK: ChutesRoutingHook | None = None
_SETTINGS: Settings | None = None


def configure(settings: Settings) -> None:
    """Fix the settings the worker's hook will use (called once by the proxy app at import)."""
    global _SETTINGS
    _SETTINGS = settings


def get_hook() -> ChutesRoutingHook:
    """The worker's one hook instance (created on first use, after settings are in place)."""
    global _HOOK
    if _HOOK is None:
        _HOOK = ChutesRoutingHook(_SETTINGS)
    return _HOOK
