"""``GET /info``: deployments, routing strategy, snapshot age and per-chute headroom as this
worker sees them (protected by the master key like every non-probe route)."""
from __future__ import annotations

from typing import Any


def install_info_route(app: Any) -> None:
    from chutes_lb.routing.hook import get_hook

    async def info() -> dict[str, Any]:
        """Routing state of the worker that answers: strategy, snapshot, per-chute headroom."""
        return get_hook().info()

    app.add_api_route("/info", info, methods=["GET"], tags=["chutes-lb"], summary="Routing state: deployments, strategy, snapshot age, headroom")
