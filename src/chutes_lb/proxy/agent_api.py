"""``POST /v1/messages``, ``POST /v1/messages/count_tokens`` (Anthropic) and ``POST /v1/responses``
(OpenAI Responses): the coding agents' APIs, as adapters of the one serving path (:mod:`.serve`):
translated to chat completions (:mod:`.messages`, :mod:`.responses`) and sent through the same
gateway as chat, so they get the same routing decision, failover, accounting, headers, logs and
metrics (``api`` label ``messages`` / ``responses``). Errors use each API's own shape.

``count_tokens`` is computed here, never upstream: N = the tiktoken ``cl100k_base`` count of the
translated chat request (system, messages and tools), an estimate (Chutes models have their own
tokenizers), offline (LiteLLM bundles the encoding), in a worker thread (about 10 ms per 100 KB).
"""
from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, AsyncIterator, Mapping

import orjson

from chutes_lb.proxy.errors import anthropic_error_body
from chutes_lb.proxy.messages import chat_to_messages, messages_to_chat, validate_messages_body
from chutes_lb.proxy.responses import chat_to_responses, responses_sse, responses_to_chat, validate_responses_body
from chutes_lb.proxy.serve import Adapter, StreamFailed, Translated

__all__ = ["MESSAGES", "COUNT_TOKENS", "RESPONSES", "count_tokens"]

_ENCODING: Any = None


def count_tokens(chat: dict[str, Any]) -> int:
    """cl100k_base tokens of a translated chat request (see the module docstring)."""
    global _ENCODING
    import litellm

    if _ENCODING is None:
        # LiteLLM's bundled cl100k_base (it points TIKTOKEN_CACHE_DIR at its own copy on import;
        # tiktoken alone would try to download the encoding)
        from litellm.litellm_core_utils.default_encoding import encoding

        litellm.disable_hf_tokenizer_download = True  # a model name with "llama-3" would try huggingface.co
        _ENCODING = encoding
    return int(litellm.token_counter(messages=chat.get("messages") or [], tools=chat.get("tools"),
                                     custom_tokenizer={"type": "openai_tokenizer", "tokenizer": _ENCODING}))


# ------------------------------------------------------------ Anthropic Messages
def _anthropic_error_event(message: str) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(anthropic_error_body(message, "api_error")) + b"\n\n"


async def _anthropic_sse(stream: Any, failed: StreamFailed, client_model: str, mapping: dict[str, str]) -> AsyncIterator[bytes]:
    from litellm.llms.anthropic.pass_through.adapters.streaming_iterator import AnthropicSSEStream, AnthropicStreamWrapper

    sse = AnthropicSSEStream(AnthropicStreamWrapper(completion_stream=stream, model=client_model, tool_name_mapping=mapping))
    try:
        async for event in sse:
            event = event if isinstance(event, bytes) else str(event).encode()
            if event.startswith(b"event: error"):  # LiteLLM's text names its internals: ours names what failed
                event = _anthropic_error_event(failed(RuntimeError("stream cut")))
            yield event
    except Exception as exc:
        yield _anthropic_error_event(failed(exc))


def _messages(body: dict[str, Any], group: str) -> Translated:
    chat, mapping = messages_to_chat(body, group)
    params = {**chat, "max_tokens": body["max_tokens"]}
    if body.get("stream"):
        params["stream_options"] = {"include_usage": True}
    return Translated(params, answer=lambda response: chat_to_messages(response, mapping, body["model"], body.get("stop_sequences")),
                      events=lambda stream, failed: _anthropic_sse(stream, failed, body["model"], mapping))


def _count_tokens(body: dict[str, Any], group: str) -> Translated:
    chat, _ = messages_to_chat({**body, "max_tokens": 1}, group)

    async def counted() -> Mapping[str, int]:
        return {"input_tokens": await asyncio.to_thread(count_tokens, chat)}

    return Translated(chat, local=counted)


# ------------------------------------------------------------ OpenAI Responses
def _responses(body: dict[str, Any], group: str) -> Translated:
    chat, request_input, request = responses_to_chat(body, group)
    params = dict(chat)
    if body.get("stream"):
        params["stream_options"] = {"include_usage": True}
    return Translated(params, answer=lambda response: chat_to_responses(response, request_input, request, body["model"]),
                      events=lambda stream, failed: responses_sse(stream, request_input, request, body["model"], failed))


MESSAGES = Adapter("messages", "chat", "anthropic", validate_messages_body, _messages)
COUNT_TOKENS = Adapter("count_tokens", "chat", "anthropic", partial(validate_messages_body, require_max_tokens=False), _count_tokens,
                       counted=False)
RESPONSES = Adapter("responses", "chat", "openai", validate_responses_body, _responses)
