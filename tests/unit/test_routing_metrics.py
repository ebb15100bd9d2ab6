"""PrometheusRoutingMetrics keeps each labelled child: repeated calls still count every time."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from chutes_lb.routing.metrics import PrometheusRoutingMetrics

pytestmark = pytest.mark.unit


def test_kept_children_count_every_call() -> None:
    reg = CollectorRegistry()
    m = PrometheusRoutingMetrics(reg)
    for _ in range(3):
        m.decision("a", "p2c", "headroom", "chat")
        m.attempt_started("a")
    m.decision("b", "p2c", "headroom", "chat")
    m.attempt_ended("a", "success", 1.5, 0.2, "chat")
    m.affinity("chat", "hit")
    m.affinity("chat", "hit")
    val = reg.get_sample_value
    assert val("chutes_lb_routing_decisions_total", {"chute": "a", "reason": "p2c", "strategy": "headroom", "api": "chat"}) == 3
    assert val("chutes_lb_routing_decisions_total", {"chute": "b", "reason": "p2c", "strategy": "headroom", "api": "chat"}) == 1
    assert val("chutes_lb_inflight_requests", {"chute": "a"}) == 2
    assert val("chutes_lb_upstream_requests_total", {"chute": "a", "outcome": "success", "api": "chat"}) == 1
    assert val("chutes_lb_upstream_latency_seconds_count", {"chute": "a"}) == 1
    assert val("chutes_lb_time_to_first_token_seconds_count", {"chute": "a"}) == 1
    assert val("chutes_lb_affinity_decisions_total", {"api": "chat", "outcome": "hit"}) == 2
