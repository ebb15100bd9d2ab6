"""``POST /v1/chat/completions`` and ``POST /v1/completions``: the :data:`CHAT` and :data:`TEXT`
adapters of the one serving path (:mod:`.serve`), so chat and text take the same way to the router
as the translated APIs.

The body is checked by :mod:`.validation`. Only the OpenAI parameters listed below reach the
upstream (plus ``extra_body``), so a client cannot set LiteLLM's internal arguments through the
body. Streams are OpenAI's SSE: one ``data:`` event per chunk, then ``[DONE]``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, AsyncIterator, Callable

import orjson

from chutes_lb.proxy.errors import openai_error_body
from chutes_lb.proxy.serve import Adapter, StreamFailed, Translated
from chutes_lb.proxy.validation import validate_completion_body

__all__ = ["CHAT_PARAMS", "TEXT_PARAMS", "CHAT", "TEXT", "serialize_chunk", "sse_events"]

_COMMON = ("temperature", "top_p", "n", "stop", "max_tokens", "presence_penalty", "frequency_penalty", "logit_bias",
           "logprobs", "seed", "user", "stream_options", "extra_body", "top_k", "min_p", "repetition_penalty")
CHAT_PARAMS = frozenset(_COMMON + ("messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                                   "parallel_tool_calls", "response_format", "functions", "function_call",
                                   "reasoning_effort", "modalities", "prediction"))
TEXT_PARAMS = frozenset(_COMMON + ("prompt", "echo", "suffix", "best_of"))

_litellm_serialize: Callable[[Any], Any] | None = None


def serialize_chunk(chunk: Any) -> bytes:
    """A stream chunk as JSON, with LiteLLM's own serializer (its fast path for plain text chunks)
    when this release has it; imported on first use, when LiteLLM's proxy is loaded already."""
    global _litellm_serialize
    if _litellm_serialize is None:
        try:
            from litellm.proxy.proxy_server import _serialize_streaming_chunk as found
        except ImportError:  # pragma: no cover - pinned release has it
            found = None
        _litellm_serialize = found or (lambda c: c.model_dump_json(exclude_none=True, exclude_unset=True))
    out = _litellm_serialize(chunk)
    return out if isinstance(out, bytes) else out.encode()


async def sse_events(stream: Any, failed: StreamFailed) -> AsyncIterator[bytes]:
    """OpenAI SSE; an error mid-way is an ``error`` event (the status line went out with the first
    chunk) and the stream ends."""
    try:
        async for chunk in stream:
            yield b"data: " + serialize_chunk(chunk) + b"\n\n"
    except Exception as exc:  # the stream broke after tokens went out: say so, never hang
        yield b"data: " + orjson.dumps(openai_error_body(failed(exc), "upstream_error", "stream_interrupted")) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


def _translate(allowed: frozenset[str], body: dict[str, Any], group: str) -> Translated:
    params = {k: v for k, v in body.items() if k in allowed and v is not None}
    return Translated(params, answer=lambda response: response.model_dump(), events=sse_events)


CHAT = Adapter("chat", "chat", "openai", partial(validate_completion_body, "chat"), partial(_translate, CHAT_PARAMS))
TEXT = Adapter("text", "text", "openai", partial(validate_completion_body, "text"), partial(_translate, TEXT_PARAMS))
