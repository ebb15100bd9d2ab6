"""Anthropic Messages <-> chat completions, for ``POST /v1/messages`` (Claude Code's API).

LiteLLM's adapter does the translation (``LiteLLMAnthropicMessagesAdapter``, and its
``AnthropicStreamWrapper`` for streams); this module checks the request and fixes what the
adapter gets wrong for a chat-only upstream, each fix pinned by a test
(tests/unit/test_translation.py; streams in tests/integration/test_agent_apis.py):

- the request is translated under the *model group* name, never the client's ``claude-*`` name
  (with a Claude name LiteLLM keeps ``thinking`` and ``cache_control`` for the upstream);
- ``thinking``, ``container``, ``mcp_servers``, ``top_k``, ``service_tier``, ``context_management``,
  ``output_config`` and Anthropic's server tools (web search, bash, editor) are dropped: only
  chat parameters reach the upstream (LiteLLM forwarded several of them);
- ``tool_choice.disable_parallel_tool_use`` becomes ``parallel_tool_calls: false`` (ignored by LiteLLM);
- a ``system`` message inside ``messages`` (Claude Code sends one) joins the system prompt;
  ``thinking`` blocks in the history are dropped;
- on the way back: tool-call arguments that are not valid JSON (a model cut off mid-call) become
  ``{"raw_arguments": "..."}`` instead of a 500; empty text blocks are dropped; a stop sequence
  the upstream reports (vLLM's ``stop_reason``) gives ``stop_reason: "stop_sequence"``;
- the chat request is made cache-friendly for Chutes (:mod:`.chatform`: string contents, one
  system message, no ``cache_control``, tools sorted).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from chutes_lb.proxy.chatform import cache_friendly
from chutes_lb.proxy.validation import FORBIDDEN_FIELDS, RequestRejected, validate_json_object

__all__ = ["validate_messages_body", "messages_to_chat", "chat_to_messages", "CHAT_PARAMS"]

# what LiteLLM's translation may produce that a chat upstream should get
CHAT_PARAMS = frozenset({"model", "messages", "max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice",
                         "parallel_tool_calls", "response_format"})
_ANTHROPIC_FIELDS = ("model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "tools",
                     "tool_choice", "metadata")
_BLOCK_TYPES = frozenset({"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "document"})
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_ROLES = frozenset({"user", "assistant", "system"})


def _reject(message: str, param: str | None = None) -> RequestRejected:
    return RequestRejected(message, param, code="invalid_request_error")


def _number(body: Mapping[str, Any], name: str) -> None:
    v = body.get(name)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise _reject(f"{name}: must be a number", name)


def _blocks(content: Any, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _reject(f"{where}.content: must be a string or an array of content blocks", where)
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in _BLOCK_TYPES:
            raise _reject(f"{where}.content.{j}: a content block needs a known type ({', '.join(sorted(_BLOCK_TYPES))})", where)
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _reject(f"{where}.content.{j}.text: must be a string", where)
        if kind == "tool_use" and (not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str)):
            raise _reject(f"{where}.content.{j}: tool_use needs a string id and name", where)
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise _reject(f"{where}.content.{j}: tool_result needs a string tool_use_id", where)


def validate_messages_body(raw: bytes, require_max_tokens: bool = True) -> dict:
    """The checks Anthropic's API makes that, if skipped, would make the translation fail
    (``count_tokens`` bodies have no ``max_tokens``)."""
    body = validate_json_object(raw)
    for name in FORBIDDEN_FIELDS:
        if name in body:
            raise _reject(f"{name}: cannot be set by a client (the proxy chooses the upstream)", name)
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise _reject("model: Field required (a non-empty string)", "model")
    mt = body.get("max_tokens")
    if (require_max_tokens or mt is not None) and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        raise _reject("max_tokens: Field required (a positive integer)", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _reject("messages: Field required (a non-empty array)", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise _reject(f"messages.{i}.role: must be 'user' or 'assistant'", f"messages.{i}")
        _blocks(m.get("content"), f"messages.{i}")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or not all(isinstance(b, dict) and isinstance(b.get("text"), str) for b in system):
            raise _reject("system: must be a string or an array of text blocks", "system")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _reject("stream: must be a boolean", "stream")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)):
        raise _reject("tools: must be an array of tools, each with a name", "tools")
    tc = body.get("tool_choice")
    if tc is not None and (not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none")
                           or (tc.get("type") == "tool" and not isinstance(tc.get("name"), str))):
        raise _reject("tool_choice: must be {type: auto|any|none} or {type: tool, name}", "tool_choice")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _reject("stop_sequences: must be an array of strings", "stop_sequences")
    for name in ("temperature", "top_p", "top_k"):
        _number(body, name)
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise _reject("metadata: must be an object", "metadata")
    return body


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(b["text"] for b in system or [] if isinstance(b, dict) and isinstance(b.get("text"), str))


def _clean_request(body: Mapping[str, Any], group: str) -> dict[str, Any]:
    req = {k: body[k] for k in _ANTHROPIC_FIELDS if body.get(k) is not None}
    req["model"] = group
    systems = [_system_text(m.get("content")) for m in body["messages"] if m.get("role") == "system"]
    messages = []
    for m in body["messages"]:
        if m.get("role") == "system":
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = [b for b in content if b.get("type") not in _DROPPED_BLOCKS]
            if not content:
                continue
        messages.append({**m, "content": content})
    req["messages"] = messages
    if systems:
        req["system"] = "\n\n".join([_system_text(req.get("system")), *systems]).strip()
    elif isinstance(req.get("system"), list):
        req["system"] = _system_text(req["system"])
    tools = []
    for t in body.get("tools") or []:
        if t.get("type") not in (None, "custom"):
            continue  # Anthropic server tools (web search, bash, editor) cannot run on a chat upstream
        schema = dict(t.get("input_schema") or {"type": "object", "properties": {}})
        schema.pop("$schema", None)
        tools.append({"name": t["name"], "description": t.get("description", ""), "input_schema": schema})
    if tools:
        req["tools"] = tools
    else:
        req.pop("tools", None)
        req.pop("tool_choice", None)
    return req


def messages_to_chat(body: Mapping[str, Any], group: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(chat request without ``model``/``stream``, tool name mapping for the way back)."""
    from litellm.llms.anthropic.pass_through.adapters.transformation import LiteLLMAnthropicMessagesAdapter
    from litellm.types.llms.anthropic import AnthropicMessagesRequest

    req = _clean_request(body, group)
    try:
        chat, mapping = LiteLLMAnthropicMessagesAdapter().translate_anthropic_to_openai(AnthropicMessagesRequest(**req))  # type: ignore[typeddict-item]
    except Exception as exc:  # a shape the adapter cannot translate is the client's to fix, never a 500
        raise _reject(f"messages: this request cannot be translated for the upstream ({type(exc).__name__})") from None
    out = {k: v for k, v in dict(chat).items() if k in CHAT_PARAMS and k != "model"}
    tc = body.get("tool_choice")
    if isinstance(tc, dict) and tc.get("disable_parallel_tool_use") and out.get("tools"):
        out["parallel_tool_calls"] = False
    return cache_friendly(out), dict(mapping or {})


def _fix_tool_arguments(response: Any) -> None:
    """Tool-call arguments that are not valid JSON (a call cut off at max_tokens) -> an object."""
    for choice in getattr(response, "choices", None) or []:
        message = getattr(choice, "message", None)
        for call in getattr(message, "tool_calls", None) or []:
            fn = getattr(call, "function", None)
            args = getattr(fn, "arguments", None)
            if isinstance(args, str):
                try:
                    parsed = json.loads(args) if args.strip() else {}
                    ok = isinstance(parsed, dict)
                except ValueError:
                    ok = False
                if not ok:
                    fn.arguments = json.dumps({"raw_arguments": args})
                elif not args.strip():
                    fn.arguments = "{}"


def _plain(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return _plain(obj.model_dump(exclude_none=True))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _matched_stop(response: Any, stops: list[str]) -> str | None:
    choice = (getattr(response, "choices", None) or [None])[0]
    fields = getattr(choice, "provider_specific_fields", None) or {}
    value = fields.get("stop_reason") if isinstance(fields, dict) else None
    return value if isinstance(value, str) and value in stops else None


def chat_to_messages(response: Any, mapping: Mapping[str, str], client_model: str, stops: list[str] | None = None) -> dict[str, Any]:
    from litellm.llms.anthropic.pass_through.adapters.transformation import LiteLLMAnthropicMessagesAdapter

    _fix_tool_arguments(response)
    out = _plain(LiteLLMAnthropicMessagesAdapter().translate_openai_response_to_anthropic(response=response, tool_name_mapping=dict(mapping)))
    out["content"] = [b for b in out.get("content") or [] if not (b.get("type") == "text" and not b.get("text"))]
    out["model"] = client_model
    out.setdefault("stop_sequence", None)
    matched = _matched_stop(response, stops or [])
    if matched is not None and out.get("stop_reason") == "end_turn":
        out["stop_reason"], out["stop_sequence"] = "stop_sequence", matched
    return out
