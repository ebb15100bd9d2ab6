"""The module LiteLLM's config names: ``litellm_settings.callbacks: ["chutes_routing.proxy_handler_instance"]``.

It is installed with the package (a top-level module), so LiteLLM finds it whatever directory the
config is in (LiteLLM first looks beside the config, then imports it by name). The hook is the one
the proxy's app factory built for this worker (:mod:`chutes_lb.proxy.runtime`); the routing logic
lives in :mod:`chutes_lb.routing` (see docs/ARCHITECTURE.md).
"""
from chutes_lb.proxy.runtime import current

proxy_handler_instance = current().hook
