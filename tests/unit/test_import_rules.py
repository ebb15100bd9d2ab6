"""The import rules of docs/ARCHITECTURE.md, checked on a fresh interpreter: what each module
loads, not what its source mentions (an import inside a function that runs at import counts)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# the pure routing modules: data in, data out; they get plain parameters and an integer session key
PURE = ("chutes_lb.routing.core", "chutes_lb.routing.decision", "chutes_lb.routing.estimate", "chutes_lb.routing.live",
        "chutes_lb.routing.affinity", "chutes_lb.routing.attempts", "chutes_lb.routing.ledger", "chutes_lb.routing.retry",
        "chutes_lb.routing.remote", "chutes_lb.routing.pace", "chutes_lb.routing.report", "chutes_lb.routing.metrics")
PURE_MAY_NOT = ("chutes_lb.settings", "chutes_lb.proxy", "litellm", "redis", "httpx", "prometheus_client")
# the routing package as a whole (the background loops included): never the proxy, LiteLLM or Redis
ROUTING = ("chutes_lb.routing", "chutes_lb.routing.follower", "chutes_lb.routing.sharing", "chutes_lb.routing.requestinfo")
ROUTING_MAY_NOT = ("chutes_lb.settings", "chutes_lb.proxy", "litellm", "redis")


def loaded_by(module: str) -> list[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bad(mods: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return [m for m in mods if any(m == f or m.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize("module", PURE)
def test_pure_routing_modules_load_nothing_from_settings_proxy_litellm_or_redis(module: str) -> None:
    assert _bad(loaded_by(module), PURE_MAY_NOT) == []


@pytest.mark.parametrize("module", ROUTING)
def test_the_routing_package_never_loads_the_proxy_litellm_or_redis(module: str) -> None:
    assert _bad(loaded_by(module), ROUTING_MAY_NOT) == []


def test_the_checker_sees_a_forbidden_import() -> None:
    """The check itself can fail: the proxy's runtime does load the settings and LiteLLM."""
    mods = loaded_by("chutes_lb.proxy.session")
    assert _bad(mods, ("chutes_lb.settings",)) == ["chutes_lb.settings"]
