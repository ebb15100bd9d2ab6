"""The poller's Prometheus metrics, in their own registry; labels bounded to configured chutes
(by NAME) and fixed enums."""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chutes_lb.fleet import ChuteRef
from chutes_lb.poller.parse import ERROR_KINDS
from chutes_lb.snapshot import ChuteStats

__all__ = ["PollerMetrics", "UTILIZATION_WINDOWS", "RATE_LIMIT_WINDOWS"]

UTILIZATION_WINDOWS = ("current", "5m", "15m", "1h")
RATE_LIMIT_WINDOWS = ("5m", "15m", "1h")


class PollerMetrics:
    def __init__(self, chutes: Sequence[ChuteRef], clock: Callable[[], float], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.chutes = list(chutes)
        self._clock = clock
        self.last_fetched_at: float | None = None
        r = self.registry
        ns = "chutes_lb_poller"
        self.poll_duration = Histogram("poll_duration_seconds", "Duration of one poll cycle (fetch, parse, write)", namespace=ns, registry=r,
                                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.poll_errors = Counter("poll_errors_total", "Failed poll cycles by kind", ["kind"], namespace=ns, registry=r)
        for kind in ERROR_KINDS:
            self.poll_errors.labels(kind)  # export zeros: absent series hide problems
        self.last_success = Gauge("last_success_timestamp_seconds", "Epoch of the last successful poll and write", namespace=ns, registry=r)
        self.entries_parsed = Counter("entries_parsed_total", "Configured chutes' utilization entries that validated", namespace=ns, registry=r)
        self.entries_skipped = Counter("entries_skipped_total", "Malformed utilization entries skipped", namespace=ns, registry=r)
        self.snapshot_age = Gauge("snapshot_age_seconds", "Now minus fetched_at of the last snapshot this poller wrote (NaN before the first)", namespace=ns, registry=r)
        self.snapshot_age.set_function(self._age)
        self.snapshot_version = Gauge("snapshot_version", "Version of the last snapshot this poller wrote", namespace=ns, registry=r)
        self.utilization = Gauge("chutes_lb_chute_utilization_ratio", "Chutes-reported utilization (0..1)", ["chute", "window"], registry=r)
        self.rate_limit = Gauge("chutes_lb_chute_rate_limit_ratio", "Chutes-reported rate-limited share of requests (0..1)", ["chute", "window"], registry=r)
        self.active_instances = Gauge("chutes_lb_chute_active_instances", "Chutes-reported active instances", ["chute"], registry=r)
        self.in_snapshot = Gauge("chutes_lb_chute_in_snapshot", "1 when the chute is in the last snapshot, else 0", ["chute"], registry=r)
        self.missing_polls = Counter("chutes_lb_poller_chute_missing_polls", "Successful polls whose utilization data lacked this configured chute", ["chute"], registry=r)
        self.api_concurrency = Gauge("chutes_lb_chute_api_concurrency", "Per-instance concurrency the Chutes API reports for the chute (GET /chutes/{id})", ["chute"], registry=r)
        for ref in self.chutes:
            self.in_snapshot.labels(ref.name).set(0)

    def _age(self) -> float:
        return math.nan if self.last_fetched_at is None else self._clock() - self.last_fetched_at

    def _forget(self, name: str) -> None:
        """Drop the per-chute series of a chute absent from the snapshot (no stale values)."""
        series = [(self.utilization, (name, w)) for w in UTILIZATION_WINDOWS]
        series += [(self.rate_limit, (name, w)) for w in RATE_LIMIT_WINDOWS] + [(self.active_instances, (name,))]
        for metric, labels in series:
            try:
                metric.remove(*labels)
            except KeyError:
                pass

    def error(self, kind: str) -> None:
        self.poll_errors.labels(kind).inc()

    def written(self, version: int | None, fetched_at: float, chutes: Mapping[str, ChuteStats]) -> None:
        """Record what the snapshot says (``version`` None: a newer one from another poller won)."""
        if version is not None:
            self.snapshot_version.set(version)
            self.last_fetched_at = fetched_at
        self.last_success.set(self._clock())
        for ref in self.chutes:
            stats = chutes.get(ref.chute_id)
            self.in_snapshot.labels(ref.name).set(1 if stats else 0)
            if stats is None:
                self._forget(ref.name)
                continue
            for window in UTILIZATION_WINDOWS:
                self.utilization.labels(ref.name, window).set(getattr(stats, f"utilization_{window}"))
            for window in RATE_LIMIT_WINDOWS:
                self.rate_limit.labels(ref.name, window).set(getattr(stats, f"rate_limit_ratio_{window}"))
            self.active_instances.labels(ref.name).set(stats.active_instance_count)
