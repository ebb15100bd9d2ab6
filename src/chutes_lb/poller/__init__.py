"""The utilization-poller: fetch Chutes' utilization, keep the configured chutes, write the
snapshot to Redis (:mod:`chutes_lb.snapshot`), expose /metrics and /healthz."""
