#!/usr/bin/env python
"""Parse time of a realistic /chutes/utilization body (default 10,000 entries, 4 configured).

    .venv/bin/python benchmarks/parse_utilization.py [--entries N] [--repeat R]

Prints body size and the median/max wall time of decode + filter + validate.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid

from chutes_lb.fleet import load_chutes
from chutes_lb.poller.parse import parse_utilization


def make_body(n: int, configured, rng: random.Random) -> bytes:
    ts = "2026-11-28T10:00:00.123456"
    rows = []
    for i in range(n):
        u = rng.random()
        ref = configured[i] if i < len(configured) else None
        rows.append({
            "chute_id": ref.chute_id if ref else str(uuid.UUID(int=rng.getrandbits(128))),
            "name": ref.name if ref else (f"org{i}/model-{i}" if i % 3 else "[private chute]"), "timestamp": ts,
            "utilization_current": u, "utilization_5m": u, "utilization_15m": u, "utilization_1h": u,
            "rate_limit_ratio_5m": 0.0, "rate_limit_ratio_15m": 0.0, "rate_limit_ratio_1h": 0.0,
            "total_requests_5m": 286.25, "total_requests_15m": 1014.64, "total_requests_1h": 4706.44,
            "completed_requests_5m": 286.25, "completed_requests_15m": 1014.64, "completed_requests_1h": 4706.44,
            "rate_limited_requests_5m": 0.0, "rate_limited_requests_15m": 0.0, "rate_limited_requests_1h": 0.0,
            "instance_count": 7, "action_taken": "scale_up_candidate", "target_count": 8, "effective_multiplier": 22.0,
            "total_instance_count": 10, "active_instance_count": 7, "scalable": True, "scale_allowance": 1,
            "avg_busy_ratio": u, "total_invocations": 4706.44, "total_rate_limit_errors": 0.0})
    rng.shuffle(rows)
    return json.dumps(rows).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--config", default="proxy/litellm-config.yaml")
    args = ap.parse_args()
    chutes = load_chutes(args.config)
    body = make_body(args.entries, chutes, random.Random(0))
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = parse_utilization(body, chutes)
        times.append(time.perf_counter() - t0)
    assert len(result.chutes) == len(chutes), result
    print(f"{args.entries} entries, {len(body) / 1e6:.1f} MB, {len(result.chutes)} kept: "
          f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms over {args.repeat} runs")


if __name__ == "__main__":
    main()
