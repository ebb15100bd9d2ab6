"""``POST /v1/messages``, ``POST /v1/messages/count_tokens`` (Anthropic) and ``POST /v1/responses``
(OpenAI Responses): the coding agents' APIs, translated to chat completions (:mod:`.messages`,
:mod:`.responses`) and sent through the same gateway as chat, so they get the same routing
decision, failover, accounting, headers, logs and metrics (``api`` label ``messages`` /
``responses``). Errors use each API's own shape.

``count_tokens`` is computed here, never upstream: N = the tiktoken ``cl100k_base`` count of the
translated chat request (system, messages and tools), an estimate (Chutes models have their own
tokenizers), offline (LiteLLM bundles the encoding), in a worker thread (about 10 ms per 100 KB).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable, Mapping

import orjson

from chutes_lb.proxy.errors import anthropic_error_body, anthropic_type, openai_error_body
from chutes_lb.proxy.gateway import Gateway, UpstreamFailure
from chutes_lb.proxy.messages import chat_to_messages, messages_to_chat
from chutes_lb.proxy.openai_api import error_headers, model_error, openai_upstream_error, response_headers
from chutes_lb.proxy.responses import chat_to_responses, responses_sse, responses_to_chat
from chutes_lb.proxy.streaming import pump
from chutes_lb.proxy.validation import RequestRejected
from chutes_lb.routing.retry import failure_of

__all__ = ["AgentRoutes", "count_tokens"]

log = logging.getLogger("chutes_lb.proxy")

Send = Callable[[dict[str, Any]], Any]


async def _json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


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


class AgentRoutes:
    def __init__(self, gateway: Gateway, metrics: Any) -> None:
        self.gateway = gateway
        self.metrics = metrics

    def _stream_failed(self, exc: BaseException) -> str:
        failure = failure_of(type(exc).__name__, getattr(exc, "status_code", None), str(exc))
        return self.gateway.redactor.text(f"the upstream stream failed mid-way ({failure.what}); the answer is incomplete")

    # ------------------------------------------------------------ Anthropic Messages
    async def messages(self, body: dict[str, Any], send: Send, receive: Any, headers: Mapping[str, str]) -> None:
        started = time.monotonic()
        group = self.gateway.group_of(body["model"])
        if group is None:
            status, _, message = model_error(self.gateway, body["model"])
            self.metrics.request("messages", "client_error", time.monotonic() - started)
            await _json(send, status, anthropic_error_body(message, anthropic_type(status)))
            return
        try:
            chat, mapping = messages_to_chat(body, group)
        except RequestRejected as exc:
            self.metrics.request("messages", "client_error", time.monotonic() - started)
            await _json(send, exc.status, anthropic_error_body(exc.message, anthropic_type(exc.status)))
            return
        stream = bool(body.get("stream"))
        params = {**chat, "max_tokens": body["max_tokens"]}
        if stream:
            params["stream_options"] = {"include_usage": True}
        try:
            result = await self.gateway.call("messages", "chat", group, params, stream=stream,
                                             affinity_key=self.gateway.session(body, headers))
        except UpstreamFailure as exc:
            self.metrics.request("messages", exc.kind, time.monotonic() - started)
            await _json(send, exc.status, anthropic_error_body(exc.message, anthropic_type(exc.status)), error_headers(exc))
            return
        if result.stream is None:
            out = chat_to_messages(result.response, mapping, body["model"], body.get("stop_sequences"))
            await _json(send, 200, out, response_headers(result))
            self.metrics.request("messages", "ok", time.monotonic() - started)
            return
        outcome = "cancelled"
        try:
            outcome = await pump(self._anthropic_sse(result.stream, body["model"], mapping), send, receive, response_headers(result))
        finally:
            self.metrics.request("messages", outcome, time.monotonic() - started)

    async def _anthropic_sse(self, stream: Any, client_model: str, mapping: dict[str, str]) -> AsyncIterator[bytes]:
        from litellm.llms.anthropic.pass_through.adapters.streaming_iterator import AnthropicSSEStream, AnthropicStreamWrapper

        sse = AnthropicSSEStream(AnthropicStreamWrapper(completion_stream=stream, model=client_model, tool_name_mapping=mapping))
        failed = False
        try:
            async for event in sse:
                event = event if isinstance(event, bytes) else str(event).encode()
                if event.startswith(b"event: error"):  # LiteLLM's text names its internals: ours names what failed
                    failed = True
                    event = b"event: error\ndata: " + orjson.dumps(anthropic_error_body(self._stream_failed(RuntimeError("stream cut")), "api_error")) + b"\n\n"
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            await stream.aclose()
            raise
        except Exception as exc:
            failed = True
            yield b"event: error\ndata: " + orjson.dumps(anthropic_error_body(self._stream_failed(exc), "api_error")) + b"\n\n"
        if failed:
            log.warning("messages stream failed mid-way (call %s)", getattr(stream, "call_id", "?")[:8])

    async def count_tokens(self, body: dict[str, Any], send: Send, receive: Any, headers: Mapping[str, str]) -> None:
        group = self.gateway.group_of(body["model"])
        if group is None:
            status, _, message = model_error(self.gateway, body["model"])
            await _json(send, status, anthropic_error_body(message, anthropic_type(status)))
            return
        try:
            chat, _ = messages_to_chat({**body, "max_tokens": 1}, group)
        except RequestRejected as exc:
            await _json(send, exc.status, anthropic_error_body(exc.message, anthropic_type(exc.status)))
            return
        n = await asyncio.to_thread(count_tokens, chat)
        await _json(send, 200, {"input_tokens": n})

    # ------------------------------------------------------------ OpenAI Responses
    async def responses(self, body: dict[str, Any], send: Send, receive: Any, headers: Mapping[str, str]) -> None:
        started = time.monotonic()
        group = self.gateway.group_of(body["model"])
        if group is None:
            status, code, message = model_error(self.gateway, body["model"])
            self.metrics.request("responses", "client_error", time.monotonic() - started)
            await _json(send, status, openai_error_body(message, "invalid_request_error" if status == 400 else "not_found_error", code, "model"))
            return
        try:
            chat, request_input, request = responses_to_chat(body, group)
        except RequestRejected as exc:
            self.metrics.request("responses", "client_error", time.monotonic() - started)
            await _json(send, exc.status, openai_error_body(exc.message, "invalid_request_error", exc.code, exc.param))
            return
        stream = bool(body.get("stream"))
        params = dict(chat)
        if stream:
            params["stream_options"] = {"include_usage": True}
        try:
            result = await self.gateway.call("responses", "chat", group, params, stream=stream,
                                             affinity_key=self.gateway.session(body, headers))
        except UpstreamFailure as exc:
            self.metrics.request("responses", exc.kind, time.monotonic() - started)
            await _json(send, exc.status, openai_upstream_error(exc), error_headers(exc))
            return
        if result.stream is None:
            await _json(send, 200, chat_to_responses(result.response, request_input, request, body["model"]), response_headers(result))
            self.metrics.request("responses", "ok", time.monotonic() - started)
            return
        outcome = "cancelled"
        try:
            events = responses_sse(result.stream, request_input, request, body["model"], self._stream_failed)
            outcome = await pump(_closing(events, result.stream), send, receive, response_headers(result))
        finally:
            self.metrics.request("responses", outcome, time.monotonic() - started)


async def _closing(events: AsyncIterator[bytes], stream: Any) -> AsyncIterator[bytes]:
    """``events``, closing the upstream stream when the client goes away."""
    try:
        async for event in events:
            yield event
    except (GeneratorExit, asyncio.CancelledError):
        await stream.aclose()
        raise
