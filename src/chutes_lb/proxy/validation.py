"""Cheap structural checks of completion requests, before LiteLLM sees them.

Only what is certainly wrong is refused (so every shape real OpenAI clients and coding agents
send still passes): the body must be a JSON object, ``model`` a non-empty string, chat
``messages`` a non-empty list of objects with a string ``role`` and content a string, null or a
list of typed parts, text ``prompt`` a string or a non-empty list of strings or token ids,
``stream`` a boolean, ``max_tokens``/``n`` positive integers, ``tools``/``functions`` lists of
objects, ``response_format``/``metadata``/``extra_body``/``stream_options`` objects,
``timeout`` a positive number. Fields that would let a client redirect the upstream call
(``api_base``, ``api_key``, ...) are refused: routing and credentials belong to the proxy.
Every rule here exists because LiteLLM answered such a body with a 500 (found by fuzzing).
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


# Chosen by the proxy's config only; a client setting them could send its prompt (and our
# Chutes key) elsewhere, or break the call.
FORBIDDEN_FIELDS = ("api_base", "base_url", "api_key", "api_version", "custom_llm_provider", "litellm_params",
                    "user_config", "mock_response", "mock_testing_fallbacks", "aws_access_key_id", "vertex_credentials")
_OBJECT_FIELDS = ("response_format", "metadata", "extra_body", "stream_options", "logit_bias", "litellm_metadata")
_LIST_OF_OBJECTS = ("tools", "functions")
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal", "video_url", "audio_url", "document"})


def _check_content(content: object, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestRejected(f"'{where}.content' must be a string, null or an array of parts", where)
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PART_TYPES:
            raise RequestRejected(f"'{where}.content[{j}]' must be an object with a known 'type' ({', '.join(sorted(_PART_TYPES))})", where)
        if kind == "text" and not isinstance(part.get("text"), str):
            raise RequestRejected(f"'{where}.content[{j}].text' must be a string", where)


def _check_prompt(prompt: object) -> None:
    if isinstance(prompt, str):
        return
    ok = isinstance(prompt, list) and bool(prompt) and (
        all(isinstance(p, str) for p in prompt)
        or all(isinstance(p, int) and not isinstance(p, bool) for p in prompt)
        or all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p) for p in prompt))
    if not ok:
        raise RequestRejected("'prompt' must be a string, or a non-empty array of strings or of token ids", "prompt")


def validate_json_object(raw: bytes) -> dict:
    """Any JSON request body the proxy accepts is one object."""
    if not raw.strip():
        raise RequestRejected("Request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestRejected(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestRejected("Request body must be a JSON object")
    return body


def validate_completion_body(kind: str, raw: bytes) -> dict:
    body = validate_json_object(raw)
    for name in FORBIDDEN_FIELDS:
        if name in body:
            raise RequestRejected(f"'{name}' cannot be set by a client: the proxy chooses the upstream", name)
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
            _check_content(message.get("content"), f"messages[{i}]")
    else:
        if "prompt" not in body:
            raise RequestRejected("'prompt' is required and must be a string or an array", "prompt")
        _check_prompt(body["prompt"])
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestRejected("'stream' must be a boolean", "stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        _positive_int(body, name)
    for name in _OBJECT_FIELDS:
        if name in body and body[name] is not None and not isinstance(body[name], dict):
            raise RequestRejected(f"'{name}' must be an object", name)
    for name in _LIST_OF_OBJECTS:
        value = body.get(name)
        if value is not None and (not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value)):
            raise RequestRejected(f"'{name}' must be a non-empty array of objects", name)
    if name_value := body.get("tool_choice"):
        if not isinstance(name_value, (str, dict)):
            raise RequestRejected("'tool_choice' must be a string or an object", "tool_choice")
    timeout = body.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
        raise RequestRejected("'timeout' must be a positive number of seconds", "timeout")
    return body
