"""OpenAI Responses <-> chat completions, for ``POST /v1/responses`` (Codex CLI's only API).

LiteLLM's Responses-to-chat bridge does the translation
(``LiteLLMCompletionResponsesConfig`` both ways, ``LiteLLMCompletionStreamingIterator`` for
streams); this module checks the request and fixes what the bridge gets wrong, each fix pinned
by a test (tests/unit/test_translation.py; streams in tests/integration/test_agent_apis.py):

- ``previous_response_id`` is refused with a 400: LiteLLM needs its database to look the history
  up and without one silently answers as if the conversation were new; responses are not stored
  here (``store`` is accepted and ignored), so clients send the whole conversation in ``input``;
- only ``function`` and ``custom`` tools reach the upstream (``file_search``, ``mcp``,
  ``web_search``, ``local_shell``, ... cannot run on a chat upstream; LiteLLM passed some through);
- only chat parameters reach the upstream, made cache-friendly for Chutes (:mod:`.chatform`:
  string contents, ``developer`` joins the one system message, tools sorted);
- streams: ``sequence_number`` is renumbered over the whole stream (LiteLLM's restart or are
  missing) and an upstream error mid-way ends the stream with ``response.failed`` (LiteLLM
  re-raised, which cut the stream without an event).
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Mapping

import orjson

from chutes_lb.proxy.chatform import cache_friendly
from chutes_lb.proxy.validation import FORBIDDEN_FIELDS, RequestRejected, validate_json_object

__all__ = ["validate_responses_body", "responses_to_chat", "chat_to_responses", "responses_sse", "CHAT_PARAMS"]

CHAT_PARAMS = frozenset({"messages", "max_tokens", "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls",
                         "response_format"})
_OPTIONAL = ("instructions", "tools", "tool_choice", "max_output_tokens", "temperature", "top_p", "parallel_tool_calls",
             "text", "reasoning", "store", "metadata", "user", "truncation", "include")
_TOOL_TYPES = frozenset({"function", "custom"})


def _reject(message: str, param: str | None = None, code: str = "invalid_request") -> RequestRejected:
    return RequestRejected(message, param, code=code)


def validate_responses_body(raw: bytes) -> dict:
    body = validate_json_object(raw)
    for name in FORBIDDEN_FIELDS:
        if name in body:
            raise _reject(f"'{name}' cannot be set by a client: the proxy chooses the upstream", name)
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise _reject("'model' is required and must be a non-empty string", "model")
    if body.get("previous_response_id") is not None:
        raise _reject("'previous_response_id' is not supported: this proxy stores no responses; send the whole "
                      "conversation in 'input' (as with store: false)", "previous_response_id", "unsupported_parameter")
    inp = body.get("input")
    if not isinstance(inp, str) and not (isinstance(inp, list) and inp and all(isinstance(i, dict) for i in inp)):
        raise _reject("'input' is required: a string or a non-empty array of input items", "input")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _reject("'stream' must be a boolean", "stream")
    mot = body.get("max_output_tokens")
    if mot is not None and (isinstance(mot, bool) or not isinstance(mot, int) or mot < 1):
        raise _reject("'max_output_tokens' must be a positive integer", "max_output_tokens")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools)):
        raise _reject("'tools' must be an array of tools, each with a type", "tools")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise _reject("'instructions' must be a string", "instructions")
    for name in ("temperature", "top_p"):
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _reject(f"'{name}' must be a number", name)
    for name in ("metadata", "reasoning", "text"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _reject(f"'{name}' must be an object", name)
    return body


def responses_to_chat(body: Mapping[str, Any], group: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """(chat request without ``model``/``stream``, the request input and the Responses request the
    way back needs)."""
    from litellm.responses.additional_tools import hoist_additional_tools
    from litellm.responses.litellm_completion_transformation.transformation import LiteLLMCompletionResponsesConfig

    request = {k: body[k] for k in _OPTIONAL if body.get(k) is not None}
    if "tools" in request:
        request["tools"] = [t for t in request["tools"] if t.get("type") in _TOOL_TYPES]
        if not request["tools"]:
            request.pop("tools")
            request.pop("tool_choice", None)
    try:
        hoisted = hoist_additional_tools(body["input"], request.get("tools"))
        if hoisted.hoisted:
            request["tools"] = [t for t in hoisted.tools if isinstance(t, dict) and t.get("type") in _TOOL_TYPES]
        chat = LiteLLMCompletionResponsesConfig.transform_responses_api_request_to_chat_completion_request(
            model=group, input=hoisted.input, responses_api_request=request, custom_llm_provider="openai",
            stream=bool(body.get("stream")))
    except RequestRejected:
        raise
    except Exception as exc:  # a shape the bridge cannot translate is the client's to fix, never a 500
        raise _reject(f"'input': this request cannot be translated for the upstream ({type(exc).__name__})", "input") from None
    out = {k: v for k, v in dict(chat).items() if k in CHAT_PARAMS}
    if out.get("tools"):
        out["tools"] = [t for t in out["tools"] if isinstance(t, dict) and t.get("type") == "function"]
        if not out["tools"]:
            out.pop("tools")
            out.pop("tool_choice", None)
    return cache_friendly(out), hoisted.input, request


def chat_to_responses(response: Any, request_input: Any, request: dict[str, Any], client_model: str) -> dict[str, Any]:
    from litellm.responses.litellm_completion_transformation.transformation import LiteLLMCompletionResponsesConfig

    out = LiteLLMCompletionResponsesConfig.transform_chat_completion_response_to_responses_api_response(
        request_input=request_input, responses_api_request=request, chat_completion_response=response)
    data = out.model_dump(mode="json", exclude_none=True)
    data["model"] = client_model
    return data


def _event(data: dict[str, Any]) -> bytes:
    return b"event: " + str(data.get("type")).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def responses_sse(stream: Any, request_input: Any, request: dict[str, Any], client_model: str,
                        failed_message: Any) -> AsyncIterator[bytes]:
    """Responses SSE events from a chat stream; ``failed_message(exc) -> str`` words a mid-stream error."""
    from litellm.responses.litellm_completion_transformation.streaming_iterator import LiteLLMCompletionStreamingIterator

    events = LiteLLMCompletionStreamingIterator(model=client_model, litellm_custom_stream_wrapper=stream,
                                                request_input=request_input, responses_api_request=request,
                                                custom_llm_provider="openai")
    seq = 0
    response_id = None
    try:
        async for ev in events:
            data = ev.model_dump(mode="json", exclude_none=True) if hasattr(ev, "model_dump") else dict(ev)
            data["sequence_number"] = seq
            seq += 1
            resp = data.get("response")
            if isinstance(resp, dict):
                resp["model"] = client_model
                response_id = resp.get("id", response_id)
            yield _event(data)
    except Exception as exc:  # the upstream broke mid-way: end with response.failed, never a bare cut
        yield _event({"type": "response.failed", "sequence_number": seq,
                      "response": {"id": response_id, "object": "response", "status": "failed", "model": client_model,
                                   "output": [], "error": {"code": "server_error", "message": failed_message(exc)}}})
