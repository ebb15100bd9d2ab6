"""What a chute can do and what a request needs of it: the context window and the features
(tools, JSON mode, reasoning) Chutes publishes per chute (``/v1/models``: ``max_model_len``,
``supported_features``). Pure: data in, data out.

:func:`unfit` tells why a chute cannot take a request (None when it can). The prompt's size is an
estimate (UTF-8 bytes / 4, as the simulator counts; real tokenizers differ), so a chute is
*preferred* only when the request fits with :data:`CONTEXT_MARGIN` to spare; a request that fits
no chute with the margin but some chute without it is still tried there (the chute decides), and
only a request that fits no window at all is refused without trying any chute. An unknown window
or feature list never excludes a chute.

Must not import: ``chutes_lb.settings``, Redis, HTTP clients, LiteLLM, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["Capability", "Needs", "NoChuteFits", "CONTEXT_MARGIN", "unfit", "FEATURES"]

CONTEXT_MARGIN = 0.05  # of the window, kept free for the estimate's error (chat template, tokenizer)
FEATURES = ("tools", "json_mode", "reasoning")  # the features a request can need and Chutes lists


class Capability(NamedTuple):
    max_model_len: int | None = None  # tokens; None = unknown
    features: frozenset[str] | None = None  # None = unknown (anything goes)


class Needs(NamedTuple):
    prompt_tokens: int = 0  # estimated
    max_tokens: int | None = None  # asked for; None = the chute's default (the rest of its window)
    features: frozenset[str] = frozenset()
    min_window: int = 0  # a retry after a context-length 400: only a larger window than the one that refused

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + (self.max_tokens or 0)


class NoChuteFits(Exception):
    """No chute of the group can take the request: a 400 for the client, no chute tried."""

    def __init__(self, message: str, largest_window: int | None) -> None:
        super().__init__(message)
        self.message, self.largest_window = message, largest_window


def unfit(cap: Capability, needs: Needs, margin: float = CONTEXT_MARGIN) -> str | None:
    """Why this chute cannot take the request: ``context`` (too long for its window, ``margin``
    kept free), ``feature:<name>``, or None when it can."""
    if cap.features is not None:
        for f in needs.features:
            if f not in cap.features:
                return f"feature:{f}"
    if cap.max_model_len is not None:
        if cap.max_model_len < needs.min_window:
            return "context"
        if needs.tokens > cap.max_model_len * (1.0 - margin):
            return "context"
    return None
