"""The seed's routing module, kept as a thin entry point: LiteLLM imports it for the config's
``litellm_settings.callbacks: ["chutes_routing.proxy_handler_instance"]``. The hook is the one
the proxy's app factory built for this worker (chutes_lb.proxy.runtime); the routing logic lives
in chutes_lb.routing (see docs/ARCHITECTURE.md)."""
from chutes_lb.proxy.runtime import current

proxy_handler_instance = current().hook
