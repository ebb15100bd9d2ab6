"""``/metrics`` of a proxy replica: every worker's prometheus-client files summed
(multiprocess mode; ``PROMETHEUS_MULTIPROC_DIR`` is set by ``python -m chutes_lb.proxy``).
The routing metrics themselves are defined in :mod:`chutes_lb.routing.metrics`."""
from __future__ import annotations


def metrics_payload() -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)
