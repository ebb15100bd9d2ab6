"""uvicorn's httptools protocol with a header-read timeout (slow-loris protection).

uvicorn has no limit on how long a client may take to send its request line and headers, so a
client trickling one byte a second holds a connection forever. This protocol starts a timer when a
connection opens and whenever a new request begins on a kept-alive connection; if the headers are
not complete after ``PROXY_HEADER_TIMEOUT_SECONDS``, the client gets a 408 with an OpenAI-style
body and the connection is closed. The body has its own limit (``PROXY_BODY_TIMEOUT_SECONDS``, in
the front middleware). Pass the class as uvicorn's ``http``; it must stay importable by path
because uvicorn hands it to each worker process.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from chutes_lb.proxy.errors import error_body

log = logging.getLogger("chutes_lb.proxy")

_timeout: float | None = None


def configure(seconds: float) -> None:
    """PROXY_HEADER_TIMEOUT_SECONDS, from the settings the app factory read (before any connection)."""
    global _timeout
    _timeout = seconds


def header_timeout() -> float:
    if _timeout is None:
        raise RuntimeError("HeaderTimeoutProtocol used before the app factory configured it")
    return _timeout


def timeout_response(seconds: float) -> bytes:
    body = json.dumps(error_body("openai", 408, f"Request headers not received within {seconds:g}s (PROXY_HEADER_TIMEOUT_SECONDS)",
                                 code="request_timeout")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_timeout = header_timeout()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout, self._on_header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a new request on a kept-alive connection (no-op while the first one is timed)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served (its headers completed): not ours to cut
        log.info("closing a connection whose request headers took longer than %gs (slow client)", self._header_timeout)
        self.transport.write(timeout_response(self._header_timeout))
        self.transport.close()
