"""Error bodies in each API's own shape: OpenAI's ``{"error": {message, type, param, code}}`` and
Anthropic's ``{"type": "error", "error": {type, message}}`` (``/v1/messages*``).

One table gives every error type from the status, for every body the proxy writes: its own
refusals, failed upstream requests, and LiteLLM's error bodies rewritten in OpenAI's shape. On the
OpenAI side a 500 is the proxy's own failure (``server_error``, OpenAI's name for it) and every
other 5xx means the upstream failed or is unavailable (``upstream_error``); a 408 is a client too
slow to send its request (``invalid_request_error``). On the Anthropic side 503 and 529 are
``overloaded_error`` and every other 5xx ``api_error``, as Anthropic's API answers.
"""
from __future__ import annotations

from typing import Any

__all__ = ["openai_error_body", "anthropic_error_body", "error_body", "upstream_error_body", "openai_type", "anthropic_type"]

_INVALID = ("invalid_request_error", "invalid_request_error")
# status: (OpenAI type, Anthropic type)
_TYPES: dict[int, tuple[str, str]] = {
    400: _INVALID,
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("not_found_error", "not_found_error"),
    405: _INVALID,
    408: _INVALID,
    413: ("invalid_request_error", "request_too_large"),
    422: _INVALID,
    429: ("rate_limit_error", "rate_limit_error"),
    500: ("server_error", "api_error"),
    503: ("upstream_error", "overloaded_error"),
    529: ("upstream_error", "overloaded_error"),
}
_SERVER = ("upstream_error", "api_error")  # any other 5xx
# the OpenAI ``code`` of a failed upstream request
_UPSTREAM_CODES = {429: "rate_limited", 502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}


def _types(status: int) -> tuple[str, str]:
    return _TYPES.get(status, _SERVER if status >= 500 else _INVALID)


def openai_type(status: int) -> str:
    return _types(status)[0]


def anthropic_type(status: int) -> str:
    return _types(status)[1]


def openai_error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_error_body(message: str, type_: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def error_body(shape: str, status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The body of an error answer with ``status`` in ``shape`` (``openai`` or ``anthropic``;
    Anthropic's shape has no code or param)."""
    if shape == "anthropic":
        return anthropic_error_body(message, anthropic_type(status))
    return openai_error_body(message, openai_type(status), code, param)


def upstream_error_body(shape: str, status: int, message: str) -> dict[str, Any]:
    """The body of a request that failed upstream for good (:class:`~chutes_lb.proxy.gateway.UpstreamFailure`)."""
    return error_body(shape, status, message, code=_UPSTREAM_CODES.get(status, str(status)))
