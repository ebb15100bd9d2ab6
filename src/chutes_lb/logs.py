"""Logging, configured once at each entry point; secrets are scrubbed from every line."""
from __future__ import annotations

import logging
import re
import sys
from typing import Any, Iterable

from chutes_lb.redact import Redactor

__all__ = ["setup_logging", "quiet_third_party", "plain_stdout", "RedactingFilter", "CleanFilter"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Replaces each known secret value with ``****`` in the rendered message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redactor:
            return True
        message = record.getMessage()
        redacted = self._redactor.text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info:  # a traceback can carry an echoed key too: render it now, redacted
            record.exc_text = self._redactor.text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._redactor.text(record.exc_text)
        return True


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Loggers of the libraries under the proxy: silent at the default level (LiteLLM logs every failed
# attempt as a multi-line ERROR; our own lines say what failed, one per attempt); everything, with
# tracebacks, at LOG_LEVEL=debug.
THIRD_PARTY = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "httpcore", "openai", "aiohttp.access")


class CleanFilter(logging.Filter):
    """No ANSI colour codes when the output is not a terminal; no third-party tracebacks unless
    debugging."""

    def __init__(self, strip_ansi: bool, keep_tracebacks: bool) -> None:
        super().__init__()
        self._strip, self._keep = strip_ansi, keep_tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._keep and record.name in THIRD_PARTY:
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        if self._strip:
            message = record.getMessage()
            if "\x1b" in message:
                record.msg, record.args = _ANSI.sub("", message), None
        return True


class _PlainStream:
    """A text stream without ANSI colour codes (LiteLLM prints coloured lines to stdout itself)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_ANSI.sub("", text) if "\x1b" in text else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def plain_stdout() -> None:
    """Strip colour codes from what third-party code prints, unless stdout is a terminal."""
    if not sys.stdout.isatty() and not isinstance(sys.stdout, _PlainStream):
        sys.stdout = _PlainStream(sys.stdout)  # type: ignore[assignment]


def quiet_third_party(level: str) -> None:
    """Route the third-party loggers through our (redacting) handler, at ERROR unless debugging;
    call after LiteLLM is imported (it attaches handlers of its own)."""
    debug = level.upper() == "DEBUG"
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.setLevel(logging.DEBUG if debug else logging.CRITICAL)


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(CleanFilter(strip_ansi=not sys.stderr.isatty(), keep_tracebacks=level.upper() == "DEBUG"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
