"""Chutes' own multi-chute routing on the inference host (pure: no HTTP, no clock).

What a user gets *without* chutes-lb (shared/reference/chutes-api.md, "Chutes' own multi-chute
routing"; public chutes-api ``api/model_routing.py``). The ``model`` field resolves, in order:

1. an exact chute name or UUID: that chute alone, no failover;
2. else the suffix ``:latency`` / ``:throughput`` is stripped (case-insensitive) and sets the mode;
3. a comma-separated list (``"A,B,C"``): each token a chute name/UUID, else one of the account's
   aliases (expanded to its chutes), else dropped; duplicates dropped, order kept;
4. else a single chute name (after the suffix) or an alias;
5. else nothing: ``model not found``.

Ranking of the candidates (:func:`rank`):

* failover (no suffix): the chutes with at least one instance below its concurrency *now* (live
  counts), in the user's order, then the chutes at capacity that have instances; chutes without
  instances are dropped;
* ``latency`` / ``throughput``: the available chutes by TTFT moving average (lowest first) or
  output tokens/s (highest first), chutes without a measurement after them in order. As in
  Chutes' source the at-capacity chutes are left out when some chute is available; when none is,
  the failover order is used.

Execution (``app.py``): the first is tried; a 429 or 503 before any byte tries the next; any
other status is returned. The answer's ``model`` names the chute that served.
"""
from __future__ import annotations

from typing import Callable, Mapping, Protocol, Sequence, TypeVar

__all__ = ["MODES", "Candidate", "resolve", "rank", "split_mode"]

MODES = ("latency", "throughput")


class Candidate(Protocol):
    """What ranking reads of a chute (``service.ChuteRuntime`` is one)."""

    @property
    def has_instances(self) -> bool: ...

    @property
    def has_free_slot(self) -> bool: ...

    @property
    def ttft_ema(self) -> float | None: ...

    @property
    def otps_ema(self) -> float | None: ...


C = TypeVar("C", bound=Candidate)


def split_mode(model: str) -> tuple[str, str | None]:
    """``("A,B", "latency")`` for ``"A,B:latency"``; ``(model, None)`` without a suffix."""
    model = model.strip()
    lower = model.lower()
    for mode in MODES:
        if lower.endswith(":" + mode):
            return model[: -len(mode) - 1], mode
    return model, None


def resolve(model: str, lookup: Callable[[str], C | None], aliases: Mapping[str, Sequence[str]]) -> tuple[list[C], str | None, bool]:
    """``(candidates in the user's order, mode, exact)`` for a ``model`` field; no candidate = not found.

    ``aliases`` maps a lower-case alias to chute names or UUIDs (``POST /model_aliases/``).
    ``exact`` is true when the field named one chute exactly (no failover, no suffix).
    """
    exact = lookup(model)
    if exact is not None:
        return [exact], None, True
    raw, mode = split_mode(model)
    if "," in raw:
        keys: list[str] = []
        for token in (t.strip() for t in raw.split(",")):
            if not token:
                continue
            if lookup(token) is not None:
                keys.append(token)
            else:
                keys.extend(aliases.get(token.lower(), ()))
    else:
        keys = [raw] if lookup(raw) is not None else list(aliases.get(raw.lower(), ()))
    out: list[C] = []
    seen: set[int] = set()
    for key in keys:
        chute = lookup(key)
        if chute is not None and id(chute) not in seen:
            seen.add(id(chute))
            out.append(chute)
    return out, mode, False


def _failover(chutes: Sequence[C]) -> list[C]:
    available = [c for c in chutes if c.has_free_slot]
    return available + [c for c in chutes if c.has_instances and not c.has_free_slot]


def rank(chutes: Sequence[C], mode: str | None) -> list[C]:
    """The order in which the chutes are tried (see the module docstring)."""
    if mode is None:
        return _failover(chutes)
    scored: list[tuple[float, int, C]] = []
    unscored: list[C] = []
    for i, c in enumerate(chutes):
        if not c.has_free_slot:
            continue
        value = c.ttft_ema if mode == "latency" else c.otps_ema
        if value is None:
            unscored.append(c)
        else:
            scored.append((value if mode == "latency" else -value, i, c))
    scored.sort(key=lambda t: (t[0], t[1]))
    ranked = [c for _, _, c in scored] + unscored
    return ranked or _failover(chutes)
