"""The ASGI app each proxy worker serves, built by :func:`create_app` (uvicorn ``factory=True``):
LiteLLM's proxy app (models, health, ``/info`` and the docs) behind our front middleware
(:mod:`.middleware`), which serves the completion APIs itself through :mod:`.gateway`.
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
from chutes_lb.proxy.middleware import ApiRoute, FrontMiddleware, send_json
from chutes_lb.proxy.validation import validate_completion_body
from chutes_lb.redact import Redactor
from chutes_lb.routing.retry import RetryBudget
from chutes_lb.settings import load_settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

# POST paths served by our own routes: name -> (paths, error shape)
OPENAI_PATHS = {"chat": ("/v1/chat/completions", "/chat/completions"), "text": ("/v1/completions", "/completions")}


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

    from chutes_lb.proxy.agent_api import AgentRoutes
    from chutes_lb.proxy.gateway import Gateway, LiteLLMSender
    from chutes_lb.proxy.slotwait import SlotWait
    from chutes_lb.proxy.messages import validate_messages_body
    from chutes_lb.proxy.openai_api import OpenAIRoutes
    from chutes_lb.proxy.responses import validate_responses_body

    environment.after_litellm_import(os.environ)
    quiet_third_party(settings.log_level)
    fleet = read_fleet(settings.litellm_config_path)
    redactor = Redactor(settings.secrets())
    gateway = Gateway(LiteLLMSender(lambda: proxy_server.llm_router), rt.core, fleet, RetryBudget(percent=settings.retry_budget_percent / 100.0),
                      redactor, key_sources=settings.routing_affinity_keys if rt.core.uses_sessions else (),
                      slot_wait=SlotWait(settings.routing_wait_seconds, rt.core.metrics))
    openai_routes = OpenAIRoutes(gateway, send_json, rt.core.metrics)
    routes: dict[str, ApiRoute] = {}
    for kind, paths in OPENAI_PATHS.items():
        route = ApiRoute(kind, "openai", lambda raw, kind=kind: validate_completion_body(kind, raw),
                         lambda body, send, receive, headers, kind=kind: openai_routes.handle(kind, body, send, receive, headers))
        for path in paths:
            routes[path] = route
    agents = AgentRoutes(gateway, rt.core.metrics)
    for path in ("/v1/messages", "/messages"):
        routes[path] = ApiRoute("messages", "anthropic", validate_messages_body, agents.messages)
    for path in ("/v1/messages/count_tokens", "/messages/count_tokens"):
        routes[path] = ApiRoute("count_tokens", "anthropic", lambda raw: validate_messages_body(raw, require_max_tokens=False),
                                agents.count_tokens)
    for path in ("/v1/responses", "/responses"):
        routes[path] = ApiRoute("responses", "openai", validate_responses_body, agents.responses)
    inner = proxy_server.app
    install_info_route(inner, rt.core, lambda: len(gateway.slot_wait) if gateway.slot_wait is not None else 0)

    def ready() -> bool:
        return proxy_server.llm_router is not None and rt.core.snapshot_checked

    drain = Drain(settings.proxy_drain_seconds)
    inner.add_middleware(
        FrontMiddleware,  # type: ignore[arg-type]
        master_key=settings.litellm_master_key.get(),
        max_body_bytes=settings.proxy_max_body_bytes,
        body_timeout=settings.proxy_body_timeout_seconds,
        metrics=metrics_payload,
        ready=ready,
        on_first_request=rt.tasks.start,
        routes=routes,
        redactor=redactor,
        metrics_public=settings.proxy_metrics_public,
        access_log=settings.proxy_access_log,
        chute_label=rt.core.label,
        draining=lambda: drain.draining,
    )
    if drain.install():  # in a uvicorn worker: wraps uvicorn's SIGTERM handler
        log.debug("SIGTERM drains for %.0f s before uvicorn stops", settings.proxy_drain_seconds)
    return inner
