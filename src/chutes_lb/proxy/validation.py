"""Cheap structural checks of completion requests, before LiteLLM sees them.

Only what is certainly wrong is refused (so every shape real OpenAI clients and coding agents
send still passes): the body must be a JSON object, ``model`` a non-empty string, chat
``messages`` a non-empty list of objects with a string ``role``, text ``prompt`` a string or a
list, ``stream`` a boolean, ``max_tokens``/``n`` positive integers.
"""
from __future__ import annotations

import orjson


class RequestRejected(ValueError):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def _positive_int(body: dict, name: str) -> None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise RequestRejected(f"'{name}' must be a positive integer", name)


def validate_completion_body(kind: str, raw: bytes) -> dict:
    if not raw.strip():
        raise RequestRejected("Request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestRejected(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestRejected("Request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestRejected("'model' is required and must be a non-empty string", "model")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestRejected("'messages' is required and must be a non-empty array", "messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise RequestRejected(f"'messages[{i}]' must be an object with a string 'role'", f"messages[{i}]")
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)):
            raise RequestRejected("'prompt' is required and must be a string or an array", "prompt")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestRejected("'stream' must be a boolean", "stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        _positive_int(body, name)
    return body
