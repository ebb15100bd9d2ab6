"""The worker's routing runtime, built once by the app factory from the settings it read:
metrics, the Redis snapshot store, the routing core, its background tasks and the LiteLLM hook.

LiteLLM instantiates callbacks by importing a module attribute named in the config
(``chutes_routing.proxy_handler_instance``); that module asks :func:`current` for the hook. If the
factory has not run in this process, :func:`current` raises instead of reading settings again.
"""
from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, replace
from typing import Any

from chutes_lb.fleet import load_deployments
from chutes_lb.routing.core import RoutingConfig, RoutingCore
from chutes_lb.routing.estimate import DEFAULT_PARAMS
from chutes_lb.routing.follower import SnapshotFollower
from chutes_lb.routing.hook import BackgroundTasks, ChutesRoutingHook
from chutes_lb.routing.metrics import PrometheusRoutingMetrics
from chutes_lb.routing.sharing import InflightSharing
from chutes_lb.settings import Settings
from chutes_lb.snapshot import RedisSnapshotStore

__all__ = ["ProxyRuntime", "routing_config", "build_runtime", "install", "current"]


def routing_config(settings: Settings) -> RoutingConfig:
    """The routing core's parameters, from the settings read once (the core never reads them)."""
    return RoutingConfig(strategy=settings.routing_strategy,
                         params=replace(DEFAULT_PARAMS, slow_ratio=settings.routing_slow_ratio,
                                        rl_prior_weight=settings.routing_rate_limit_prior,
                                        free_fraction=settings.routing_free_fraction),
                         stale_seconds=settings.snapshot_stale_seconds,
                         request_timeout_seconds=settings.proxy_request_timeout_seconds,
                         affinity=settings.routing_affinity, affinity_bound=settings.routing_affinity_bound)


@dataclass
class ProxyRuntime:
    settings: Settings
    core: RoutingCore
    hook: ChutesRoutingHook
    tasks: BackgroundTasks
    redis: Any


def build_runtime(settings: Settings) -> ProxyRuntime:
    import redis.asyncio as aioredis

    deployments = load_deployments(settings.litellm_config_path)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    core = RoutingCore(deployments, routing_config(settings), PrometheusRoutingMetrics(), worker_id=worker_id)
    client = aioredis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=10)
    store = RedisSnapshotStore(client, settings.redis_key_prefix, settings.snapshot_ttl_seconds)
    tasks = BackgroundTasks(core, SnapshotFollower(core, store, settings.snapshot_refresh_seconds),
                            InflightSharing(core, store, settings.inflight_publish_seconds))
    return ProxyRuntime(settings, core, ChutesRoutingHook(core, tasks.start), tasks, client)


_CURRENT: ProxyRuntime | None = None


def install(runtime: ProxyRuntime) -> None:
    global _CURRENT
    if _CURRENT is not None and _CURRENT is not runtime:
        raise RuntimeError("a routing runtime is already installed in this process")
    _CURRENT = runtime


def current() -> ProxyRuntime:
    if _CURRENT is None:
        raise RuntimeError("chutes-lb: the routing hook is loaded before the proxy app was built; start the proxy "
                           "with `python -m chutes_lb.proxy` (or uvicorn --factory chutes_lb.proxy.app:create_app)")
    return _CURRENT
