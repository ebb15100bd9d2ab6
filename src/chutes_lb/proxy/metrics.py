"""Proxy metrics (prometheus-client, multiprocess mode: correct across workers).

Names are fixed (dashboard and alerts use them). The ``chute`` label is the chute NAME of a
configured deployment only (bounded); ``reason``/``outcome``/``strategy`` come from fixed enums.
Requires ``PROMETHEUS_MULTIPROC_DIR`` to be set before import (``python -m chutes_lb.proxy``
does it); ``/metrics`` aggregates every worker's files.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)

DECISIONS = Counter("chutes_lb_routing_decisions", "Routing decisions by chosen chute, reason and strategy", ["chute", "reason", "strategy"])
FALLBACKS = Counter("chutes_lb_routing_fallbacks", "Decisions made without a usable utilization snapshot, by why", ["reason"])
FAILOVERS = Counter("chutes_lb_failovers", "Requests re-routed to another chute after this chute failed them", ["chute"])
UPSTREAM = Counter("chutes_lb_upstream_requests", "Upstream attempts by chute and outcome", ["chute", "outcome"])
LATENCY = Histogram("chutes_lb_upstream_latency_seconds", "Upstream attempt latency (whole response)", ["chute"], buckets=_LATENCY_BUCKETS)
TTFT = Histogram("chutes_lb_time_to_first_token_seconds", "Time to first token of streamed responses", ["chute"], buckets=_TTFT_BUCKETS)
INFLIGHT = Gauge("chutes_lb_inflight_requests", "Requests open to each chute (this replica, all workers)", ["chute"], multiprocess_mode="livesum")
SLOWNESS = Gauge("chutes_lb_chute_slowness_ratio", "Typical request time on each chute / on the fleet's median chute, from this replica's responses (1 = ordinary; above ROUTING_SLOW_RATIO the chute is overflow only; max over workers)", ["chute"], multiprocess_mode="livemax")
HEADROOM = Gauge("chutes_lb_chute_headroom_slots", "Estimated free slots per chute (last estimate of any worker)", ["chute"], multiprocess_mode="livemax")
SNAPSHOT_AGE = Gauge("chutes_lb_snapshot_age_seconds", "Age of the utilization snapshot the workers route on (max over workers)", multiprocess_mode="livemax")
SNAPSHOT_USABLE = Gauge("chutes_lb_snapshot_usable", "1 when the worker routes with a fresh snapshot, 0 on live signals alone (min over workers)", multiprocess_mode="livemin")
