"""The session key of a client request: which conversation it belongs to, as a 64-bit hash (never
its text). It comes from what the client sends, in a configured order of sources
(``ROUTING_AFFINITY_KEYS``): a session header (``x-session-id``, or the ones coding agents send),
OpenAI's ``prompt_cache_key``, Anthropic's ``metadata.user_id`` (Claude Code puts its session
there), OpenAI's ``user``, and last a hash of the conversation's stable prefix (the system prompt
and the first user message, as llm-d's prefix scorer does). Every replica and worker computes the
same key for the same conversation. This is the one place that knows the body layouts of the
three APIs (chat, Messages, Responses) for routing; the routing core only gets the integer.

Must not import: LiteLLM, Redis.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from chutes_lb.routing.affinity import h64
from chutes_lb.settings import KEY_SOURCES

__all__ = ["KEY_SOURCES", "DEFAULT_KEY_SOURCES", "SESSION_HEADERS", "PREFIX_CHARS", "session_key"]

DEFAULT_KEY_SOURCES = KEY_SOURCES
# headers that name a session: ours first, then what coding agents send
SESSION_HEADERS = ("x-session-id", "x-claude-code-session-id", "session-id", "session_id", "x-session-affinity")
PREFIX_CHARS = 8192  # of the system prompt and of the first user message: enough to tell sessions apart


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
                elif part.get("type") in ("input_text", "output_text") and isinstance(part.get("text"), str):
                    out.append(part["text"])
        return "\n".join(out)
    return ""


def _prefix(body: Mapping[str, Any]) -> str | None:
    """System prompt + first user message of a chat, Messages or Responses body (None if none)."""
    system = _text(body.get("system")) or (body.get("instructions") if isinstance(body.get("instructions"), str) else "")
    items = body.get("messages")
    if items is None:
        inp = body.get("input")
        items = [{"role": "user", "content": inp}] if isinstance(inp, str) else inp
    if not isinstance(items, list):
        prompt = body.get("prompt")
        return prompt[:PREFIX_CHARS] if isinstance(prompt, str) and prompt else None
    first_user = ""
    for item in items:
        if not isinstance(item, dict):
            continue
        role = item.get("role")
        if role in ("system", "developer") and not system:
            system = _text(item.get("content"))
        elif role == "user":
            first_user = _text(item.get("content"))
            break
    if not system and not first_user:
        return None
    return system[:PREFIX_CHARS] + "\x1e" + first_user[:PREFIX_CHARS]


def session_key(body: Mapping[str, Any], headers: Mapping[str, str], sources: Iterable[str] = DEFAULT_KEY_SOURCES) -> tuple[int, str] | None:
    """(64-bit key, source name) for this request, or None when no source applies."""
    for source in sources:
        value: str | None = None
        if source == "header":
            value = next((headers[h] for h in SESSION_HEADERS if headers.get(h)), None)
        elif source == "prompt_cache_key":
            v = body.get("prompt_cache_key")
            value = v if isinstance(v, str) and v else None
        elif source == "metadata":
            meta = body.get("metadata")
            v = meta.get("user_id") if isinstance(meta, dict) else None
            value = v if isinstance(v, str) and v else None
        elif source == "user":
            v = body.get("user")
            value = v if isinstance(v, str) and v else None
        elif source == "prefix":
            value = _prefix(body)
        if value:
            return h64(source, value), source
    return None
