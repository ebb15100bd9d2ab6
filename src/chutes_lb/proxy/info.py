"""``GET /info``: the routing state of the worker that answers (strategy, snapshot, per chute the
snapshot figures, live counts, the latest estimate, latency EWMAs, slowness and the 429 hold),
rendered from what the routing core keeps fresh whatever the log level. Protected by the master
key like every non-probe route."""
from __future__ import annotations

import math
from typing import Any, Callable

from chutes_lb.routing.core import RoutingCore
from chutes_lb.routing.decision import REGISTRY
from chutes_lb.routing.estimate import is_slow


def render(core: RoutingCore, waiting: int | None = None) -> dict[str, Any]:
    now = core.clock()
    snap = core.snapshot
    chutes = []
    for chute_id, ref in core.chutes.items():
        stats = snap.chutes.get(chute_id) if snap else None
        live = core.live.chute(chute_id)
        remote = core.remote.get(chute_id)
        est = core.estimates.get(chute_id)
        cap = core.capability(chute_id)
        chutes.append({
            "chute_id": chute_id, "name": ref.name, "model_groups": core.groups_of.get(chute_id, []),
            "concurrency_per_instance": ref.concurrency,
            "max_model_len": cap.max_model_len,
            "supported_features": None if cap.features is None else sorted(cap.features),
            "in_snapshot": stats is not None,
            "snapshot": None if stats is None else {
                "utilization_current": stats.utilization_current, "utilization_5m": stats.utilization_5m,
                "rate_limit_ratio_5m": stats.rate_limit_ratio_5m, "active_instance_count": stats.active_instance_count,
            },
            "in_flight_this_worker": live.in_flight,
            "in_flight_other_workers": remote.in_flight if remote else 0,
            "estimated_headroom_slots": None if est is None or est.penalized else _finite(est.free),
            "latency_ewma_seconds": live.latency_ewma,
            "ttft_ewma_seconds": live.ttft_ewma,
            "decode_seconds_per_token_ewma": live.tpot_ewma,
            "slowness_vs_fleet": round(live.slowness(now, core.params.speed_memory), 3),
            "slow_overflow_only": is_slow(live, now, core.params),
            "recent_429_penalty": core.penalty_active(chute_id),
        })
    return {
        "strategy": core.strategy,
        "strategies": {name: {"summary": spec.summary, "sessions": spec.sessions, "reads_snapshot": spec.reads_snapshot}
                       for name, spec in REGISTRY.items()},
        "worker": core.worker_id,
        "waiting_for_a_slot": waiting,  # requests this worker holds while every chute is full (ROUTING_WAIT_SECONDS)
        "affinity": {
            "enabled": core.uses_sessions,
            "load_bound": core.config.affinity_bound,
            "sessions_remembered": len(core.sessions),
            "decisions_this_worker": dict(core.affinity_counts),
        },
        "estimated_at_age_seconds": None if core.estimated_at is None else round(now - core.estimated_at, 3),
        "snapshot": {
            "state": core.snapshot_state,
            "version": snap.version if snap else None,
            "age_seconds": round(snap.age(now), 3) if snap else None,
            "api_timestamp": snap.api_timestamp if snap else None,
            "stale_after_seconds": core.config.stale_seconds,
        },
        "deployments": chutes,
    }


def _finite(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def install_info_route(app: Any, core: RoutingCore, waiting: Callable[[], int] | None = None) -> None:
    async def info() -> dict[str, Any]:
        """Routing state of the worker that answers: strategy, snapshot, per-chute headroom."""
        return render(core, waiting() if waiting is not None else None)

    app.add_api_route("/info", info, methods=["GET"], tags=["chutes-lb"], summary="Routing state: deployments, strategy, snapshot age, headroom")
