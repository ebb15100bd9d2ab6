"""The last step of every translation to a chat request (Messages, Responses): a shape that keeps
Chutes' prefix cache working.

Chutes routes a request inside a chute to the instance that holds its prompt's prefix only when
every message's ``content`` is a plain string: it hashes the *character* prefix, and a list of
parts falls back to fewest connections, so the cache is found only by chance
(``shared/reference/chutes-api.md``, "Chutes' own multi-chute routing"). LiteLLM's adapters send
user contents as lists of text parts and Responses' ``developer`` as a second system message. So
here:

- a content whose parts are all text becomes one string (the parts joined by a newline); parts
  stay only where they must (an image, a file);
- the system and developer messages become one system message, first;
- Anthropic's ``cache_control`` marks are dropped (knowingly: Chutes has no such API, and the
  marks would change bytes between turns);
- tool definitions are sorted by name, so the same tools give the same bytes on every turn.
The same conversation thus gives byte-identical message prefixes turn after turn
(``tests/unit/test_chatform.py``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["cache_friendly", "plain_content"]

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_SYSTEM_ROLES = frozenset({"system", "developer"})


def plain_content(content: Any) -> Any:
    """One string for a list of text parts; anything else as it is (``cache_control`` dropped)."""
    if not isinstance(content, list):
        return content
    parts = [{k: v for k, v in p.items() if k != "cache_control"} if isinstance(p, dict) else p for p in content]
    if parts and all(isinstance(p, dict) and p.get("type") in _TEXT_PARTS and isinstance(p.get("text"), str) for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def cache_friendly(chat: dict[str, Any]) -> dict[str, Any]:
    """``chat`` (a translated chat request) with string contents, one system message first, no
    ``cache_control`` and tools sorted by name. A new dict; the input is not changed."""
    out = dict(chat)
    messages = out.get("messages")
    if isinstance(messages, list):
        systems: list[str] = []
        rest: list[Any] = []
        for m in messages:
            if not isinstance(m, dict):
                rest.append(m)
                continue
            m = {k: v for k, v in m.items() if k != "cache_control"}
            content = plain_content(m.get("content"))
            if m.get("role") in _SYSTEM_ROLES and (isinstance(content, str) or content is None):
                if content:
                    systems.append(content)
                continue
            if "content" in m:
                m["content"] = content
            rest.append(m)
        out["messages"] = ([{"role": "system", "content": "\n\n".join(systems)}] if systems else []) + rest
    tools = out.get("tools")
    if isinstance(tools, list) and all(isinstance(t, dict) for t in tools):
        out["tools"] = sorted(tools, key=_tool_name)
    return out


def _tool_name(tool: dict[str, Any]) -> str:
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
    return name if isinstance(name, str) else ""
