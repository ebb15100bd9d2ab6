"""OpenAI wire format: request validation and response / SSE chunk bodies (pure).

:func:`parse_request` accepts every shape real clients send (content parts, tools,
response_format, stream_options, n, stop, max_tokens / max_completion_tokens, unknown extra
fields) and rejects malformed ones with :class:`BadRequest` (-> 400 with OpenAI's error body).
Generated text is a fixed word sequence sliced by token count (precomputed: no per-request work).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["BadRequest", "Parsed", "parse_request", "error_body", "text_for", "completion_body", "chunk"]

_WORDS = ("The quick brown fox jumps over the lazy dog while the simulator streams plausible "
          "tokens to every client that asks politely and some that do not").split()
MAX_TOKENS_TEXT = 65536
_TOKENS = [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(MAX_TOKENS_TEXT)]
_OFFSETS = [0]
for _t in _TOKENS:
    _OFFSETS.append(_OFFSETS[-1] + len(_t))
_TEXT = "".join(_TOKENS)


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def error_body(message: str, param: str | None = None, code: str | None = None, type_: str = "invalid_request_error") -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


@dataclass(frozen=True)
class Parsed:
    model: str
    stream: bool
    n: int
    max_tokens: int | None
    prompt_tokens: int


def _text_len(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                total += len(text) if isinstance(text, str) else 64  # images, audio: a flat guess
            elif isinstance(part, str):
                total += len(part)
        return total
    return 0


def _opt_int(body: dict[str, Any], name: str, minimum: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise BadRequest(f"'{name}' must be an integer >= {minimum}", name)
    return v


def parse_request(raw: bytes, chat: bool) -> Parsed:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", "stream")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    n = _opt_int(body, "n", 1) or 1
    if n > 128:
        raise BadRequest("'n' must be <= 128", "n")
    max_tokens = _opt_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _opt_int(body, "max_tokens", 1)
    chars = 0
    if chat:
        messages = body.get("messages")
        if messages is None:
            raise BadRequest("Missing required parameter: 'messages'.", "messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array", "messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise BadRequest(f"'messages[{i}]' must be an object with a 'role'", f"messages[{i}]")
            chars += _text_len(m.get("content")) + 4
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                raise BadRequest("'tools' must be an array", "tools")
            chars += len(orjson.dumps(tools))
    else:
        if "prompt" not in body:
            raise BadRequest("Missing required parameter: 'prompt'.", "prompt")
        prompt = body["prompt"]
        if isinstance(prompt, str):
            chars = len(prompt)
        elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            chars = sum(len(p) for p in prompt)
        elif isinstance(prompt, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            chars = 4 * len(prompt)
        elif isinstance(prompt, list) and all(isinstance(p, list) for p in prompt):
            chars = 4 * sum(len(p) for p in prompt)
        else:
            raise BadRequest("'prompt' must be a string, an array of strings or an array of tokens", "prompt")
    return Parsed(model, stream, n, max_tokens, max(1, chars // 4))


def text_for(tokens: int) -> str:
    return _TEXT[: _OFFSETS[min(tokens, MAX_TOKENS_TEXT)]]


def token(i: int) -> str:
    return _TOKENS[i % MAX_TOKENS_TEXT] if i < MAX_TOKENS_TEXT else " more"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(chat: bool, rid: str, created: int, model: str, lengths: list[int], finish: list[str], prompt_tokens: int) -> bytes:
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": text_for(k), "tool_calls": None},
                    "logprobs": None, "finish_reason": finish[i]} for i, k in enumerate(lengths)]
        obj = "chat.completion"
    else:
        choices = [{"index": i, "text": text_for(k), "logprobs": None, "finish_reason": finish[i]} for i, k in enumerate(lengths)]
        obj = "text_completion"
    return orjson.dumps({"id": rid, "object": obj, "created": created, "model": model, "choices": choices,
                         "usage": usage(prompt_tokens, sum(lengths))})


def chunk(chat: bool, rid: str, created: int, model: str, choices: list[dict[str, Any]], usage_: dict[str, int] | None = None, with_usage_key: bool = True) -> bytes:
    obj: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                           "created": created, "model": model, "choices": choices}
    if with_usage_key:
        obj["usage"] = usage_
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def delta_choice(chat: bool, index: int, content: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
    if chat:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if content is not None:
            delta["content"] = content
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"index": index, "text": content or "", "logprobs": None, "finish_reason": finish}
