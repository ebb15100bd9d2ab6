"""The ASGI app each proxy worker serves, built by :func:`create_app` (uvicorn ``factory=True``):
LiteLLM's proxy app (models, health, ``/info`` and the docs) behind a list of pure-ASGI
middlewares, one job each: the edge (:mod:`.middleware`), our API routes (:mod:`.routes`, served
through :mod:`.serve` and :mod:`.gateway`), then what reaches LiteLLM (:mod:`.passthrough`).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from chutes_lb.fleet import read_fleet
from chutes_lb.logs import plain_stdout, quiet_third_party, setup_logging
from chutes_lb.proxy import environment, protocol
from chutes_lb.proxy.drain import Drain
from chutes_lb.proxy.info import install_info_route
from chutes_lb.proxy.metrics import metrics_payload
from chutes_lb.proxy.middleware import AccessLog, Auth, Probes, Redaction, StartOnFirstCall
from chutes_lb.proxy.passthrough import JsonBodies, OpenAIErrors, PathAllowList
from chutes_lb.proxy.routes import ApiRoutes
from chutes_lb.redact import Redactor
from chutes_lb.routing.retry import RetryBudget
from chutes_lb.settings import load_settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

# POST paths served by our own routes, each with and without /v1: API -> its paths
API_PATHS = {"chat": ("/chat/completions",), "text": ("/completions",), "messages": ("/messages",),
             "count_tokens": ("/messages/count_tokens",), "responses": ("/responses",)}


def die_with_parent() -> None:
    """A worker ends when the process that started it dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG), so no orphaned worker keeps serving the port."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the scripts still stop the whole process group
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), 15)


def create_app() -> Any:
    """Settings read once in this worker process, the environment set before LiteLLM is
    imported, the routing runtime built and installed, then LiteLLM's app with our routes."""
    if os.environ.get("CHUTES_LB_WORKER_OF", str(os.getpid())) != str(os.getpid()):  # a worker process
        die_with_parent()
    settings = load_settings()
    environment.validate(settings)
    setup_logging(settings.log_level, settings.secrets())  # each worker is a fresh process
    plain_stdout()
    environment.apply(settings, os.environ)
    protocol.configure(settings.proxy_header_timeout_seconds)
    from chutes_lb.proxy import runtime  # imports LiteLLM (the hook's base class): after the environment is set

    rt = runtime.build_runtime(settings)
    runtime.install(rt)
    from litellm.proxy import proxy_server  # (imports litellm, which loads .env into os.environ)

    from chutes_lb.proxy.admission import Admission, AdmissionMetrics
    from chutes_lb.proxy.agent_api import COUNT_TOKENS, MESSAGES, RESPONSES
    from chutes_lb.proxy.gateway import Gateway, LiteLLMSender
    from chutes_lb.proxy.models import ModelList
    from chutes_lb.proxy.openai_api import CHAT, TEXT
    from chutes_lb.proxy.serve import Server
    from chutes_lb.proxy.slotwait import SlotWait

    environment.after_litellm_import(os.environ)
    quiet_third_party(settings.log_level)
    fleet = read_fleet(settings.litellm_config_path)
    redactor = Redactor(settings.secrets())
    gateway = Gateway(LiteLLMSender(lambda: proxy_server.llm_router), rt.core, fleet,
                      RetryBudget(percent=settings.retry_budget_percent / 100.0), redactor,
                      key_sources=settings.routing_affinity_keys if rt.core.uses_sessions else (),
                      slot_wait=SlotWait(settings.routing_wait_seconds, rt.core.metrics))
    adapters = {a.api: a for a in (CHAT, TEXT, MESSAGES, COUNT_TOKENS, RESPONSES)}
    routes = {prefix + path: adapters[api] for api, paths in API_PATHS.items() for path in paths for prefix in ("/v1", "")}
    admitted = {path for path, adapter in routes.items() if adapter.api != "count_tokens"}  # answered locally: never queued
    inner = proxy_server.app
    install_info_route(inner, rt.core, lambda: len(gateway.slot_wait) if gateway.slot_wait is not None else 0)

    def ready() -> bool:
        return proxy_server.llm_router is not None and rt.core.snapshot_checked

    drain = Drain(settings.proxy_drain_seconds)
    key = settings.litellm_master_key.get()
    limits = {"max_body_bytes": settings.proxy_max_body_bytes, "body_timeout": settings.proxy_body_timeout_seconds}
    stack: list[tuple[type, dict[str, Any]]] = [  # outermost first; LiteLLM's app is behind the last one
        (StartOnFirstCall, {"start": rt.tasks.start}),
        (Redaction, {"redactor": redactor}),
        *([(AccessLog, {"chute_label": rt.core.label})] if settings.proxy_access_log else []),
        (Probes, {"ready": ready, "metrics": metrics_payload, "master_key": key, "draining": lambda: drain.draining,
                  "metrics_public": settings.proxy_metrics_public}),
        (Auth, {"master_key": key, "shapes": {path: adapter.shape for path, adapter in routes.items()}}),
        (ModelList, {"fleet": fleet, "group_of": gateway.group_of, "window_of": gateway.window_of}),
        (Admission, {"limit": settings.proxy_max_concurrent, "queue": settings.proxy_queue,
                      "queue_seconds": settings.proxy_queue_seconds, "paths": admitted, "metrics": AdmissionMetrics(),
                      "anthropic_paths": {p for p in admitted if routes[p].shape == "anthropic"}}),
        (ApiRoutes, {"routes": routes, "serve": Server(gateway, rt.core.metrics).serve, **limits}),
        (PathAllowList, {}),
        (OpenAIErrors, {}),
        (JsonBodies, limits),
    ]
    for cls, options in reversed(stack):  # Starlette puts the latest added outermost
        inner.add_middleware(cls, **options)  # type: ignore[arg-type]
    if drain.install():  # in a uvicorn worker: wraps uvicorn's SIGTERM handler
        log.debug("SIGTERM drains for %.0f s before uvicorn stops", settings.proxy_drain_seconds)
    return inner
