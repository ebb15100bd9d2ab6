"""Canonical prompt bytes of a request: what the prefix cache hashes and the tokens are counted on.

A chat request becomes: the ``tools`` JSON (keys sorted, so a translation layer that reorders
keys does not break the prefix), then each message as its role, its text (string content, or
the text parts of a content list; other parts such as images count as a 64-byte placeholder
that names the part's hash), the name and arguments of each of its tool calls, with separator
bytes between. A tool result (role ``tool``) is a message like any other. Each message is
rendered on its own and appended, so the prompt of turn *n* is a byte prefix of turn *n+1*'s
when the client resends the conversation, as real chat templates are.

A legacy completion prompt is the string itself (strings of a list joined), or 4 bytes per
token id for token prompts.

Tokens are approximated as UTF-8 bytes / 4 (at least 1): about right for English and code
(~4 characters per token for the usual tokenizers), closer than characters / 4 for scripts
of multi-byte characters. Pure functions; they raise ``ValueError`` with a message for the
400 body when a shape is wrong.
"""
from __future__ import annotations

import hashlib
from array import array
from typing import Any

import orjson

__all__ = ["chat_prompt", "completion_prompt", "tokens_of", "text_of"]

_RS, _US, _GS = "\x1e", "\x1f", "\x1d"
_PART_BYTES = 64


def tokens_of(data: bytes) -> int:
    return max(1, len(data) // 4)


def _part_placeholder(part: Any) -> str:
    kind = part.get("type", "part") if isinstance(part, dict) else type(part).__name__
    digest = hashlib.blake2b(orjson.dumps(part, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
    return f"<{kind}:{digest}>".ljust(_PART_BYTES, ".")


def text_of(content: Any) -> str:
    """The text of a message content (string, or the text parts of a list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
        return "".join(out)
    return ""


def _content(content: Any, out: list[str]) -> None:
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                out.append(_part_placeholder(part))
    elif content is not None:
        out.append(orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode())


def chat_prompt(messages: list[Any], tools: Any = None, functions: Any = None) -> bytes:
    """Canonical bytes of a chat request (messages already checked to be objects with a role)."""
    out: list[str] = []
    for defs in (tools, functions):
        if defs:
            out += ["tools", _US, orjson.dumps(defs, option=orjson.OPT_SORT_KEYS).decode(), _RS]
    for m in messages:
        out += [m["role"], _US]
        _content(m.get("content"), out)
        calls = m.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    args = fn.get("arguments")
                    out += [_GS, str(fn.get("name") or ""), _US, args if isinstance(args, str) else orjson.dumps(args).decode()]
        fc = m.get("function_call")
        if isinstance(fc, dict):
            out += [_GS, str(fc.get("name") or ""), _US, str(fc.get("arguments") or "")]
        out.append(_RS)
    return "".join(out).encode()


def completion_prompt(prompt: Any) -> bytes:
    """Canonical bytes of a legacy completion ``prompt``; ``ValueError`` for a bad shape."""
    if isinstance(prompt, str):
        return prompt.encode()
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return _RS.join(prompt).encode()
    try:
        if isinstance(prompt, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return array("I", prompt).tobytes() if prompt else b"\0\0\0\0"
        if isinstance(prompt, list) and all(isinstance(p, list) for p in prompt):
            flat = [t for p in prompt for t in p]
            if all(isinstance(t, int) and not isinstance(t, bool) for t in flat):
                return array("I", flat).tobytes() if flat else b"\0\0\0\0"
    except OverflowError:
        raise ValueError("token ids must be integers 0..4294967295") from None
    raise ValueError("'prompt' must be a string, an array of strings or an array of tokens")
