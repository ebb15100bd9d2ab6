"""Everything the proxy puts into the process environment, in one place: what LiteLLM and the
worker processes read. :func:`proxy_environment` is a pure function of the settings; the parent
(``python -m chutes_lb.proxy``) applies it before it starts the workers, and each worker's app
factory applies the same values before it imports LiteLLM (so the app also starts correctly under
a plain ``uvicorn --factory``). LiteLLM loads ``.env`` into ``os.environ`` when it is imported;
:func:`after_litellm_import` removes what it must not act on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

from chutes_lb.settings import Settings, SettingsError

__all__ = ["LITELLM_OFFLINE", "DEMO_PLACEHOLDER_KEY", "validate", "proxy_environment", "apply", "after_litellm_import"]

# No download of LiteLLM's model cost map (3 tries x 5 s offline), no telemetry, no banner.
LITELLM_OFFLINE = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY_DISABLED": "true",
                   "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true"}
DEMO_PLACEHOLDER_KEY = "demo-mode-no-chutes-key"
# LiteLLM turns any of these into a "coordination Redis" it calls on every request (rate-limit
# counters). Our Redis is for the snapshot only, read off the request path.
LITELLM_REDIS_VARS = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_SSL",
                      "REDIS_CLUSTER_NODES", "REDIS_SENTINEL_NODES")


def validate(settings: Settings) -> None:
    """Refuse settings the proxy cannot run with, naming the variable."""
    settings.require("litellm_master_key")
    if settings.litellm_master_key.get() == "sk-1234":
        raise SettingsError("LITELLM_MASTER_KEY: the sample value sk-1234 is refused; choose a secret")
    if not settings.demo_mode:
        settings.require("chutes_api_key")


def proxy_environment(settings: Settings, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The variables LiteLLM and the workers read (a pure function of the settings; ``environ``
    only decides whether an operator's own ``LITELLM_LOG`` is kept)."""
    config = str(Path(settings.litellm_config_path).resolve())
    env = {
        **LITELLM_OFFLINE,
        "CONFIG_FILE_PATH": config,
        "LITELLM_CONFIG_PATH": config,
        "LITELLM_MASTER_KEY": settings.litellm_master_key.get(),
        "CHUTES_INFERENCE_BASE": settings.chutes_inference_base,
        "LITELLM_LOG": (environ or os.environ).get("LITELLM_LOG", "ERROR"),
    }
    if settings.demo_mode and not settings.chutes_api_key:
        env["CHUTES_API_KEY"] = DEMO_PLACEHOLDER_KEY  # the simulator ignores it
    return env


def apply(settings: Settings, environ: MutableMapping[str, str]) -> None:
    environ.update(proxy_environment(settings, environ))


def after_litellm_import(environ: MutableMapping[str, str]) -> None:
    for name in LITELLM_REDIS_VARS:
        environ.pop(name, None)
