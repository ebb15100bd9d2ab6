"""The metrics the router emits, as an object passed into the routing core.

:class:`RoutingMetrics` is the seam: :class:`PrometheusRoutingMetrics` (prometheus-client,
multiprocess mode under the proxy: ``PROMETHEUS_MULTIPROC_DIR`` must be set before
prometheus_client is imported, which ``python -m chutes_lb.proxy`` does for its workers) and
:class:`RecordingMetrics` (in memory, for tests). Names are fixed (the dashboard and the alert
rules use them). Label values are bounded: ``chute`` is the name of a configured chute (or
``unconfigured``); ``api`` is one of :data:`APIS`; ``reason``, ``outcome``, ``strategy`` come
from fixed enums.

Must not import: Redis, HTTP clients, LiteLLM, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

__all__ = ["RoutingMetrics", "PrometheusRoutingMetrics", "RecordingMetrics", "APIS", "REQUEST_OUTCOMES"]

APIS = ("chat", "text", "messages", "responses")
# how a client request ended: served; refused as bad input; every attempt rate-limited; failed upstream
REQUEST_OUTCOMES = ("ok", "client_error", "rate_limited", "upstream_error", "cancelled")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


class RoutingMetrics(Protocol):
    def decision(self, chute: str, reason: str, strategy: str, api: str) -> None: ...
    def fallback(self, reason: str) -> None: ...
    def failover(self, chute: str) -> None: ...
    def attempt_started(self, chute: str) -> None: ...
    def attempt_ended(self, chute: str, outcome: str, latency: float | None, ttft: float | None, api: str) -> None: ...
    def request(self, api: str, outcome: str, seconds: float) -> None: ...
    def retry(self, api: str, reason: str) -> None: ...
    def retry_refused(self, api: str) -> None: ...
    def affinity(self, api: str, outcome: str) -> None: ...
    def prompt_tokens(self, api: str, chute: str, cached: float, computed: float) -> None: ...
    def chute_estimate(self, chute: str, headroom: float, slowness: float) -> None: ...
    def snapshot(self, age_seconds: float | None, usable: bool) -> None: ...
    def slot_waiting(self, delta: int) -> None: ...
    def slot_waited(self, seconds: float, outcome: str) -> None: ...


class PrometheusRoutingMetrics:
    """prometheus-client metrics; pass ``registry=None`` (the default under the proxy, where
    ``/metrics`` reads the multiprocess files) or a ``CollectorRegistry`` to collect them."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import Counter as PCounter
        from prometheus_client import Gauge, Histogram

        r = {"registry": registry}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._decisions = PCounter("chutes_lb_routing_decisions", "Routing decisions by chosen chute, reason, strategy and API", ["chute", "reason", "strategy", "api"], **r)
        self._fallbacks = PCounter("chutes_lb_routing_fallbacks", "Decisions made without a usable utilization snapshot, by why", ["reason"], **r)
        self._failovers = PCounter("chutes_lb_failovers", "Requests re-routed to another chute after this chute failed them", ["chute"], **r)
        self._upstream = PCounter("chutes_lb_upstream_requests", "Upstream attempts by chute, outcome and API", ["chute", "outcome", "api"], **r)
        self._requests = PCounter("chutes_lb_requests", "Client requests by API and how they ended", ["api", "outcome"], **r)
        self._duration = Histogram("chutes_lb_request_duration_seconds", "Client request time in the proxy, retries included (streams: to the last byte)", ["api"], buckets=_LATENCY_BUCKETS, **r)
        self._retries = PCounter("chutes_lb_retries", "Upstream attempts retried on another chute, by API and why", ["api", "reason"], **r)
        self._retry_refused = PCounter("chutes_lb_retry_budget_exhausted", "Retries not made because the retry budget (RETRY_BUDGET_PERCENT of the request rate) was spent", ["api"], **r)
        self._affinity = PCounter("chutes_lb_affinity_decisions", "Session decisions: hit (the session's chute), spill (its next one), or why affinity was dropped", ["api", "outcome"], **r)
        self._prompt = PCounter("chutes_lb_prompt_tokens", "Prompt tokens of successful attempts: cached (prefix cache hit) or computed", ["api", "chute", "kind"], **r)
        self._latency = Histogram("chutes_lb_upstream_latency_seconds", "Upstream attempt latency (whole response)", ["chute"], buckets=_LATENCY_BUCKETS, **r)
        self._ttft = Histogram("chutes_lb_time_to_first_token_seconds", "Time to first token of streamed responses", ["chute"], buckets=_TTFT_BUCKETS, **r)
        self._waiting = Gauge("chutes_lb_slot_waiting_requests", "Requests held for a free slot: every chute they may use was estimated full (ROUTING_WAIT_SECONDS)", multiprocess_mode="livesum", **r)
        self._waited = Histogram("chutes_lb_slot_wait_seconds", "Time requests were held for a free slot, by how the wait ended (slot: one freed; timeout: ROUTING_WAIT_SECONDS passed, sent anyway)", ["outcome"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30), **r)
        self._inflight = Gauge("chutes_lb_inflight_requests", "Requests open to each chute (this replica, all workers)", ["chute"], multiprocess_mode="livesum", **r)
        self._slowness = Gauge("chutes_lb_chute_slowness_ratio", "Typical request time on each chute / on the fleet's median chute, from this replica's responses (1 = ordinary; above ROUTING_SLOW_RATIO the chute is overflow only; max over workers)", ["chute"], multiprocess_mode="livemax", **r)
        self._headroom = Gauge("chutes_lb_chute_headroom_slots", "Estimated free slots per chute (last estimate of any worker)", ["chute"], multiprocess_mode="livemax", **r)
        self._snapshot_age = Gauge("chutes_lb_snapshot_age_seconds", "Age of the utilization snapshot the workers route on (max over workers)", multiprocess_mode="livemax", **r)
        self._snapshot_usable = Gauge("chutes_lb_snapshot_usable", "1 when the worker routes with a fresh snapshot, 0 on live signals alone (min over workers)", multiprocess_mode="livemin", **r)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: prometheus-client's ``labels()`` takes a lock and
        validates on every call, ~5 us each, several per upstream attempt (label sets are bounded:
        configured chutes x fixed values)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def decision(self, chute: str, reason: str, strategy: str, api: str) -> None:
        self._child(self._decisions, chute, reason, strategy, api).inc()

    def fallback(self, reason: str) -> None:
        self._fallbacks.labels(reason).inc()

    def failover(self, chute: str) -> None:
        self._failovers.labels(chute).inc()

    def attempt_started(self, chute: str) -> None:
        self._child(self._inflight, chute).inc()

    def attempt_ended(self, chute: str, outcome: str, latency: float | None, ttft: float | None, api: str) -> None:
        self._child(self._inflight, chute).dec()
        self._child(self._upstream, chute, outcome, api).inc()
        if ttft is not None:
            self._child(self._ttft, chute).observe(ttft)
        if latency is not None:
            self._child(self._latency, chute).observe(latency)

    def request(self, api: str, outcome: str, seconds: float) -> None:
        self._requests.labels(api, outcome).inc()
        self._duration.labels(api).observe(seconds)

    def retry(self, api: str, reason: str) -> None:
        self._retries.labels(api, reason).inc()

    def retry_refused(self, api: str) -> None:
        self._retry_refused.labels(api).inc()

    def affinity(self, api: str, outcome: str) -> None:
        self._child(self._affinity, api, outcome).inc()

    def prompt_tokens(self, api: str, chute: str, cached: float, computed: float) -> None:
        if cached > 0:
            self._prompt.labels(api, chute, "cached").inc(cached)
        if computed > 0:
            self._prompt.labels(api, chute, "computed").inc(computed)

    def chute_estimate(self, chute: str, headroom: float, slowness: float) -> None:
        self._headroom.labels(chute).set(headroom)
        self._slowness.labels(chute).set(slowness)

    def snapshot(self, age_seconds: float | None, usable: bool) -> None:
        self._snapshot_age.set(-1 if age_seconds is None else age_seconds)
        self._snapshot_usable.set(1 if usable else 0)

    def slot_waiting(self, delta: int) -> None:
        self._waiting.inc(delta)

    def slot_waited(self, seconds: float, outcome: str) -> None:
        self._waited.labels(outcome).observe(seconds)


class RecordingMetrics:
    """In-memory metrics with the same calls (tests read the counters)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[Any, ...]] = Counter()
        self.inflight: Counter[str] = Counter()
        self.gauges: dict[tuple[str, str], float] = {}
        self.snapshot_state: tuple[float | None, bool] | None = None
        self.ttfts: list[tuple[str, float]] = []  # (chute, seconds) of every attempt that reported one

    def decision(self, chute: str, reason: str, strategy: str, api: str = "chat") -> None:
        self.counts[("decision", chute, reason, strategy, api)] += 1

    def fallback(self, reason: str) -> None:
        self.counts[("fallback", reason)] += 1

    def failover(self, chute: str) -> None:
        self.counts[("failover", chute)] += 1

    def attempt_started(self, chute: str) -> None:
        self.inflight[chute] += 1

    def attempt_ended(self, chute: str, outcome: str, latency: float | None, ttft: float | None, api: str = "chat") -> None:
        self.inflight[chute] -= 1
        self.counts[("upstream", chute, outcome, api)] += 1
        if ttft is not None:
            self.ttfts.append((chute, ttft))

    def request(self, api: str, outcome: str, seconds: float) -> None:
        self.counts[("request", api, outcome)] += 1

    def retry(self, api: str, reason: str) -> None:
        self.counts[("retry", api, reason)] += 1

    def retry_refused(self, api: str) -> None:
        self.counts[("retry_refused", api)] += 1

    def affinity(self, api: str, outcome: str) -> None:
        self.counts[("affinity", api, outcome)] += 1

    def prompt_tokens(self, api: str, chute: str, cached: float, computed: float) -> None:
        self.counts[("prompt_tokens", api, chute, "cached")] += int(cached)
        self.counts[("prompt_tokens", api, chute, "computed")] += int(computed)

    def chute_estimate(self, chute: str, headroom: float, slowness: float) -> None:
        self.gauges[("headroom", chute)] = headroom
        self.gauges[("slowness", chute)] = slowness

    def snapshot(self, age_seconds: float | None, usable: bool) -> None:
        self.snapshot_state = (age_seconds, usable)

    def slot_waiting(self, delta: int) -> None:
        self.gauges[("slot_waiting", "")] = self.gauges.get(("slot_waiting", ""), 0.0) + delta

    def slot_waited(self, seconds: float, outcome: str) -> None:
        self.counts[("slot_waited", outcome)] += 1

    def total(self, kind: str, *labels: str) -> int:
        """Sum of the counts of ``kind`` whose labels start with ``labels``."""
        return sum(n for key, n in self.counts.items() if key[0] == kind and key[1:1 + len(labels)] == labels)
