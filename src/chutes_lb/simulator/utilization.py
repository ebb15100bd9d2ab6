"""``GET /chutes/utilization`` bodies: entries with the real field set, filler, fault modes.

Pure: entries are built from :class:`~chutes_lb.simulator.model.WindowStats` and a timestamp;
the served bytes are rendered once per refresh (or per mode change) by :func:`render`.
The field set and types match the real API (see shared/reference/chutes-api.md).
"""
from __future__ import annotations

import json
import math
import random
import uuid
from typing import Any

import orjson

from chutes_lb.simulator.model import WindowStats

__all__ = ["FIELDS", "entry", "filler_entries", "render", "GARBAGE_BODY"]

#: field -> type of every utilization entry, in the real API's order.
FIELDS: dict[str, type] = {
    "chute_id": str, "name": str, "timestamp": str,
    "utilization_current": float, "utilization_5m": float, "utilization_15m": float, "utilization_1h": float,
    "rate_limit_ratio_5m": float, "rate_limit_ratio_15m": float, "rate_limit_ratio_1h": float,
    "total_requests_5m": float, "total_requests_15m": float, "total_requests_1h": float,
    "completed_requests_5m": float, "completed_requests_15m": float, "completed_requests_1h": float,
    "rate_limited_requests_5m": float, "rate_limited_requests_15m": float, "rate_limited_requests_1h": float,
    "instance_count": int, "action_taken": str, "target_count": int, "effective_multiplier": float,
    "total_instance_count": int, "active_instance_count": int, "scalable": bool, "scale_allowance": int,
    "avg_busy_ratio": float, "total_invocations": float, "total_rate_limit_errors": float,
}
ACTIONS = ("no_action", "scale_up_candidate", "scaled_down", "skipped_rolling_update")
GARBAGE_BODY = b"<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>\n"
_MULTIPLIERS = (1.0, 2.0, 4.0, 8.0, 12.0, 22.0)


def _r(x: float) -> float:
    return float(round(x, 6))


def autoscaler(instances: int, util_1h: float, rl_ratio_1h: float) -> tuple[str, int, int]:
    """(action_taken, target_count, scale_allowance) a plausible autoscaler would report."""
    if util_1h >= 0.6 or rl_ratio_1h >= 0.05:
        return "scale_up_candidate", instances + 1, 1
    if util_1h < 0.05 and instances > 1:
        return "scaled_down", instances - 1, 0
    return "no_action", instances, 0


def entry(chute_id: str, name: str, timestamp: str, windows: dict[str, WindowStats], instances: int, multiplier: float) -> dict[str, Any]:
    w5, w15, w1h = windows["5m"], windows["15m"], windows["1h"]
    action, target, allowance = autoscaler(instances, w1h.utilization, w1h.rate_limit_ratio)
    return {
        "chute_id": chute_id, "name": name, "timestamp": timestamp,
        "utilization_current": _r(windows["current"].utilization), "utilization_5m": _r(w5.utilization),
        "utilization_15m": _r(w15.utilization), "utilization_1h": _r(w1h.utilization),
        "rate_limit_ratio_5m": _r(w5.rate_limit_ratio), "rate_limit_ratio_15m": _r(w15.rate_limit_ratio),
        "rate_limit_ratio_1h": _r(w1h.rate_limit_ratio),
        "total_requests_5m": float(w5.requests), "total_requests_15m": float(w15.requests), "total_requests_1h": float(w1h.requests),
        "completed_requests_5m": float(w5.completed), "completed_requests_15m": float(w15.completed),
        "completed_requests_1h": float(w1h.completed),
        "rate_limited_requests_5m": float(w5.rate_limited), "rate_limited_requests_15m": float(w15.rate_limited),
        "rate_limited_requests_1h": float(w1h.rate_limited),
        "instance_count": instances, "action_taken": action, "target_count": target,
        "effective_multiplier": float(multiplier), "total_instance_count": instances, "active_instance_count": instances,
        "scalable": True, "scale_allowance": allowance,
        "avg_busy_ratio": _r(w1h.utilization), "total_invocations": float(w1h.requests),
        "total_rate_limit_errors": float(w1h.rate_limited),
    }


def multiplier_for(chute_id: str) -> float:
    return _MULTIPLIERS[uuid.UUID(chute_id).int % len(_MULTIPLIERS)]


def filler_entries(count: int, rng: random.Random, timestamp: str) -> list[dict[str, Any]]:
    """Entries for chutes outside the fleet, with plausible random (seeded) numbers."""
    out = []
    for i in range(count):
        chute_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = "[private chute]" if rng.random() < 0.3 else f"sim-org-{rng.randrange(200)}/Model-{i}-{rng.choice(('7B', '32B', '70B', '235B'))}"
        instances = rng.choice((0, 1, 1, 2, 3, 5, 8))
        req1h = round(rng.paretovariate(1.2) * 20 - 20, 2) if instances else 0.0
        util = round(min(1.0, rng.random() * (0.9 if instances else 0)), 4)
        rl = round(req1h * rng.random() * 0.05, 2)
        w = {
            "current": WindowStats(util, 0.0, 0.0, 0.0),
            "5m": WindowStats(util, req1h / 12, (req1h - rl) / 12, rl / 12),
            "15m": WindowStats(util, req1h / 4, (req1h - rl) / 4, rl / 4),
            "1h": WindowStats(util, req1h, req1h - rl, rl),
        }
        e = entry(chute_id, name, timestamp, w, instances, rng.choice(_MULTIPLIERS))
        for k in ("total_requests_5m", "total_requests_15m", "completed_requests_5m", "completed_requests_15m",
                  "rate_limited_requests_5m", "rate_limited_requests_15m", "completed_requests_1h"):
            e[k] = round(e[k], 2)
        out.append(e)
    return out


def sort_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: e["total_requests_1h"], reverse=True)


def malform(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every third entry (from the second) gets one defect, cycling through four kinds."""
    out, bad = [], []
    for i, e in enumerate(entries):
        e = dict(e)
        if i % 3 == 1:
            kind = (i // 3) % 4
            if kind == 0:
                del e["utilization_current"]
            elif kind == 1:
                e["utilization_5m"] = str(e["utilization_5m"])
                e["total_requests_1h"] = "many"
            elif kind == 2:
                e["utilization_current"] = math.nan
            else:
                e["utilization_current"] = -0.5
                e["utilization_1h"] = -1.0
            bad.append(e["chute_id"])
        out.append(e)
    return out, bad


def render(mode: str, entries: list[dict[str, Any]], normal: bytes, size_bytes: int, rng: random.Random, timestamp: str) -> tuple[bytes, list[str]]:
    """The body served in ``mode`` (the status, delay and content type are the caller's)."""
    if mode == "garbage":
        return GARBAGE_BODY, []
    if mode == "not_list":
        return orjson.dumps({"detail": "unexpected shape", "chutes": len(entries)}), []
    if mode == "status":
        return orjson.dumps({"detail": "Internal Server Error"}), []
    if mode == "truncated":
        return normal[: max(1, len(normal) // 2)], []
    if mode == "bad_entries":
        bad_entries, bad = malform(entries)
        return json.dumps(bad_entries, allow_nan=True, separators=(",", ":")).encode(), bad
    if mode == "huge":
        extra: list[dict[str, Any]] = []
        size = len(normal)
        while size < size_bytes:
            chunk = filler_entries(500, rng, timestamp)
            extra.extend(chunk)
            size += len(orjson.dumps(chunk))
        return orjson.dumps(sort_entries(entries + extra)), []
    return normal, []
