"""The seed's routing module, kept as a thin entry point: LiteLLM loads this file (it sits
beside litellm-config.yaml) and registers ``proxy_handler_instance`` as a callback.
The routing logic lives in the shared package: chutes_lb.routing (decision.py is pure,
hook.py adapts it to LiteLLM)."""
from chutes_lb.routing.hook import get_hook

proxy_handler_instance = get_hook()
