"""OpenAI-style error bodies, the one shape every client error of the proxy takes."""
from __future__ import annotations

from typing import Any


def openai_error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
