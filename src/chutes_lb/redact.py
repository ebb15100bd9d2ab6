"""Secrets out of everything the project writes: :class:`Redactor` replaces each configured secret,
and its ``Bearer <secret>`` form, with ``****`` in text and bytes. The log filter
(:mod:`chutes_lb.logs`) and the proxy's response bodies (errors, ``/health``, stream events) use
the same one, so an upstream that echoes the key (``{"detail": "Invalid token Bearer cpk_..."}``)
never hands it to a client or a log file."""
from __future__ import annotations

from typing import Iterable

__all__ = ["Redactor", "MASK"]

MASK = "****"


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._text = values
        self._bytes = [v.encode() for v in values]
        self.longest = max((len(b) for b in self._bytes), default=0)

    def __bool__(self) -> bool:
        return bool(self._text)

    def text(self, value: str) -> str:
        for secret in self._text:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def bytes(self, value: bytes) -> bytes:
        for secret in self._bytes:
            if secret in value:
                value = value.replace(secret, MASK.encode())
        return value
