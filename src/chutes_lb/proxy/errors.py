"""Error bodies in each API's own shape: OpenAI's ``{"error": {message, type, param, code}}`` and
Anthropic's ``{"type": "error", "error": {type, message}}`` (``/v1/messages*``)."""
from __future__ import annotations

from typing import Any

__all__ = ["openai_error_body", "anthropic_error_body", "error_body", "openai_type", "anthropic_type"]

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
                 422: "invalid_request_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                    405: "invalid_request_error", 408: "invalid_request_error", 413: "request_too_large",
                    422: "invalid_request_error", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def openai_type(status: int) -> str:
    return _OPENAI_TYPES.get(status, "upstream_error" if status >= 500 else "invalid_request_error")


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def openai_error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_error_body(message: str, type_: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def error_body(shape: str, status: int, message: str, type_: str | None = None, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    if shape == "anthropic":
        return anthropic_error_body(message, type_ or anthropic_type(status))
    return openai_error_body(message, type_ or openai_type(status), code, param)
