"""OpenAI request validation (pure): :func:`parse_request` -> :class:`Parsed` or :class:`BadRequest`.

Accepts every shape real clients send (content parts, tools, tool_choice, response_format,
stream_options, n, stop, logprobs / top_logprobs, max_tokens / max_completion_tokens, unknown
extra fields) and rejects malformed ones with :class:`BadRequest` (-> 400 with OpenAI's error
body), checking types where vLLM's request model would. The canonical prompt bytes come from
:mod:`chutes_lb.simulator.prompt`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from chutes_lb.simulator.prefix import prefix_keys
from chutes_lb.simulator.prompt import chat_prompt, completion_prompt, tokens_of

__all__ = ["BadRequest", "Parsed", "parse_request", "error_body", "context_error_body", "NO_TOOLS_BODY", "MAX_LOGPROBS"]

MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
RESPONSE_FORMATS = ("text", "json_object", "json_schema")


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
    prompt: bytes  # canonical prompt (prompt.py), hashed by the prefix cache
    chat: bool = True
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None
    logprobs: int | None = None  # None = off, else the number of top alternatives per token
    tools: list[Any] | None = None
    tool_choice: Any = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    prefix_text: str | None = None  # what Chutes hashes for instance choice: string contents joined, else None

    @cached_property
    def prefix_keys(self) -> list[bytes]:
        """Chutes' prefix keys (``prefix.prefix_keys``), computed once even when a list tries several chutes."""
        return prefix_keys(self.prefix_text)

    @property
    def prompt_tokens(self) -> int:
        return tokens_of(self.prompt)


def _opt_int(body: dict[str, Any], name: str, minimum: int, maximum: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum is not None and v > maximum):
        raise BadRequest(f"'{name}' must be an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else ""), name)
    return v


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise BadRequest("'stop' must be a string or an array of strings", "stop")


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    rf = body.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, dict) or rf.get("type") not in RESPONSE_FORMATS:
        raise BadRequest("'response_format.type' must be one of " + ", ".join(RESPONSE_FORMATS), "response_format")
    if rf["type"] == "json_schema" and not isinstance(rf.get("json_schema"), dict):
        raise BadRequest("'response_format.json_schema' must be an object", "response_format")
    return None if rf["type"] == "text" else rf


def _logprobs(body: dict[str, Any], chat: bool) -> int | None:
    if not chat:
        return _opt_int(body, "logprobs", 0, MAX_LOGPROBS)
    on = body.get("logprobs")
    if on is not None and not isinstance(on, bool):
        raise BadRequest("'logprobs' must be a boolean", "logprobs")
    top = _opt_int(body, "top_logprobs", 0, MAX_LOGPROBS)
    if top and not on:
        raise BadRequest("when using 'top_logprobs', 'logprobs' must be set to true", "top_logprobs")
    return (top or 0) if on else None


def _tools(body: dict[str, Any]) -> tuple[list[Any] | None, Any]:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadRequest("'tools' must be an array", "tools")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise BadRequest(f"'tools[{i}]' must be an object with function.name", f"tools[{i}]")
    choice = body.get("tool_choice")
    if choice is not None and not (choice in ("none", "auto", "required") or isinstance(choice, dict)):
        raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or an object naming a function", "tool_choice")
    if isinstance(choice, dict):
        fn = choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest("'tool_choice.function.name' must be a string", "tool_choice")
    return tools, choice


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
    common = {"stop": _stop(body), "response_format": _response_format(body), "logprobs": _logprobs(body, chat)}
    if not chat:
        if "prompt" not in body:
            raise BadRequest("Missing required parameter: 'prompt'.", "prompt")
        try:
            prompt = completion_prompt(body["prompt"])
        except ValueError as exc:
            raise BadRequest(str(exc), "prompt") from None
        text = body["prompt"] if isinstance(body["prompt"], str) else None
        return Parsed(model, stream, n, max_tokens, prompt, False, prefix_text=text, **common)
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("Missing required parameter: 'messages'.", "messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"'messages[{i}]' must be an object with a 'role'", f"messages[{i}]")
    tools, choice = _tools(body)
    functions = body.get("functions")
    prompt = chat_prompt(messages, tools, functions if isinstance(functions, list) else None)
    # Chutes' prefix routing reads the contents only when every one is a plain string
    text = "".join(m["content"] for m in messages) if all(isinstance(m.get("content"), str) for m in messages) else None
    return Parsed(model, stream, n, max_tokens, prompt, True, tools=tools, tool_choice=choice, messages=messages,
                  prefix_text=text, **common)


#: vLLM's 400 for ``tools`` on a server started without a tool-call parser (Chutes adds
#: ``tool_choice: "auto"`` when tools come without one, so this is what a tool-less chute answers).
NO_TOOLS_BODY = orjson.dumps({"object": "error", "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
                              "type": "BadRequestError", "param": None, "code": 400})


def context_error_body(limit: int, prompt_tokens: int, max_tokens: int | None) -> bytes:
    """vLLM's 400 for a request beyond the context window (its wording)."""
    if max_tokens is None:
        message = (f"This model's maximum context length is {limit} tokens. However, you requested {prompt_tokens} tokens "
                   "in the messages, Please reduce the length of the messages.")
    else:
        message = (f"This model's maximum context length is {limit} tokens. However, you requested {prompt_tokens + max_tokens} "
                   f"tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the "
                   "messages or completion.")
    return orjson.dumps({"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400})
