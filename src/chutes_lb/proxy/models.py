"""``GET /v1/models``, ``GET /v1/models/{id}`` and the APIs this proxy does not serve, answered here
(one pure-ASGI middleware, behind auth): the names a client may send, not LiteLLM's expansion of
them.

LiteLLM's own ``/v1/models`` expanded the ``anthropic/*`` alias into one entry per OpenAI model it
knows (845 entries for one model group). Here the list is: each model group (with its chutes'
largest context window, since a request is routed to a chute it fits) and each alias or alias
pattern of ``router_settings.model_group_alias`` (``claude-*``), naming its group.
``GET /v1/models/{id}`` answers for a group, an alias or a name an alias pattern matches; anything
else is a 404 in OpenAI's shape. ``POST /v1/embeddings`` is refused with a 404 that names what is
served (no Chutes LLM chute serves embeddings through this proxy).
"""
from __future__ import annotations

from typing import Any, Callable

from chutes_lb.fleet import Fleet
from chutes_lb.proxy.asgi import ASGIApp, Receive, Scope, Send, send_json
from chutes_lb.proxy.errors import error_body

__all__ = ["ModelList", "SERVED_APIS"]

SERVED_APIS = "/v1/chat/completions, /v1/completions, /v1/messages (and count_tokens), /v1/responses"
_UNSERVED = {"/v1/embeddings": "embeddings", "/embeddings": "embeddings", "/v1/images/generations": "image generation",
             "/v1/audio/transcriptions": "audio transcription", "/v1/audio/speech": "speech"}


class ModelList:
    def __init__(self, app: ASGIApp, fleet: Fleet, group_of: Callable[[str], str | None],
                 window_of: Callable[[str], int | None] = lambda group: None) -> None:
        self.app = app
        self.fleet = fleet
        self.group_of = group_of
        self.window_of = window_of

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for group, chutes in self.fleet.groups.items():
            entry: dict[str, Any] = {"id": group, "object": "model", "created": 0, "owned_by": "chutes-lb",
                                     "chutes_lb": {"kind": "model_group", "chutes": len(chutes)}}
            window = self.window_of(group)
            if window is not None:
                entry["chutes_lb"]["max_model_len"] = window
            out.append(entry)
        for alias, group in self.fleet.aliases.items():
            pattern = "*" in alias or "?" in alias
            out.append({"id": alias, "object": "model", "created": 0, "owned_by": "chutes-lb",
                        "chutes_lb": {"kind": "alias_pattern" if pattern else "alias", "model_group": group}})
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        method = scope.get("method", "GET")
        if path in _UNSERVED:
            await send_json(send, 404, error_body("openai", 404, f"{_UNSERVED[path]} is not served by this proxy; it serves "
                                                                  f"{SERVED_APIS}", code="unsupported_endpoint"))
            return
        if method == "GET" and path in ("/v1/models", "/models"):
            await send_json(send, 200, {"object": "list", "data": self.entries()})
            return
        for prefix in ("/v1/models/", "/models/"):
            if method == "GET" and path.startswith(prefix) and len(path) > len(prefix):
                await self._one(path[len(prefix):], send)
                return
        await self.app(scope, receive, send)

    async def _one(self, name: str, send: Send) -> None:
        for entry in self.entries():
            if entry["id"] == name:
                await send_json(send, 200, entry)
                return
        group = self.group_of(name)
        if group is not None:  # a name an alias pattern matches
            await send_json(send, 200, {"id": name, "object": "model", "created": 0, "owned_by": "chutes-lb",
                                        "chutes_lb": {"kind": "alias", "model_group": group}})
            return
        groups = ", ".join(sorted(self.fleet.groups))
        await send_json(send, 404, error_body("openai", 404, f"The model '{name}' does not exist on this proxy; model groups: "
                                                              f"{groups}", code="model_not_found"))
