"""What a request needs of a chute, read from the upstream chat or text request the gateway is
about to send: its size (estimated prompt tokens: UTF-8 bytes of the texts and tool definitions
/ 4, as the simulator counts), ``max_tokens``, and the features it uses (tools, JSON mode,
reasoning). The routing core filters the candidates by it (:mod:`chutes_lb.routing.capability`).
Pure; cheap (one pass over the texts).
"""
from __future__ import annotations

from typing import Any, Mapping

import orjson

from chutes_lb.routing.capability import Needs

__all__ = ["needs_of"]


def _text_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode("utf-8", "surrogatepass"))
    if isinstance(content, list):
        n = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                n += len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else 64
            elif isinstance(part, str):
                n += len(part.encode("utf-8", "surrogatepass"))
        return n
    return 0


def needs_of(kind: str, params: Mapping[str, Any]) -> Needs:
    size = 0
    if kind == "chat":
        for m in params.get("messages") or ():
            if isinstance(m, dict):
                size += _text_bytes(m.get("content")) + 8
                for call in m.get("tool_calls") or ():
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        size += len(str(fn.get("name", ""))) + len(str(fn.get("arguments", "")))
        tools = params.get("tools") or params.get("functions")
        if tools:
            size += len(orjson.dumps(tools))
    else:
        prompt = params.get("prompt")
        if isinstance(prompt, str):
            size = len(prompt.encode("utf-8", "surrogatepass"))
        elif isinstance(prompt, list):
            size = sum(_text_bytes(p) if isinstance(p, str) else 4 for p in prompt)
    limit = params.get("max_tokens") or params.get("max_completion_tokens")
    max_tokens = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
    features = set()
    if params.get("tools") or params.get("functions"):
        features.add("tools")
    fmt = params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        features.add("json_mode")
    if params.get("reasoning_effort"):
        features.add("reasoning")
    return Needs(max(1, size // 4), max_tokens, frozenset(features))
