"""Pure parsing and filtering of a ``/chutes/utilization`` body: data in, data out.

A body that is not JSON, is cut short, or is not a JSON array is rejected whole
(:class:`PollError`). Inside the array, only entries for configured chutes are validated
(:func:`chutes_lb.snapshot.parse_entry`); a malformed one is skipped and counted. Entries that
are not objects are counted as skipped too (they cannot be matched to a chute).

Matching: an entry belongs to a configured chute when its ``chute_id`` equals the configured id,
or else when its ``name`` equals the configured name (a redeployed chute keeps its name). An id
match beats a name match; among several name matches the first wins (the API sorts by
``total_requests_1h`` descending, so that is the busiest deployment). The snapshot is keyed by
the CONFIGURED chute id; ``ChuteStats.chute_id`` keeps the API's id.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from chutes_lb.fleet import ChuteRef
from chutes_lb.snapshot import ChuteStats, EntryError, loads, parse_entry, timestamp_order

__all__ = ["ERROR_KINDS", "PollError", "ParseResult", "parse_utilization", "select_configured", "shared_timestamp"]

# The fixed label set of chutes_lb_poller_poll_errors_total{kind}.
ERROR_KINDS = ("timeout", "connect", "http_status", "too_large", "invalid_json", "not_a_list", "truncated",
               "no_configured_chutes", "redis", "rolled_back")


class PollError(Exception):
    """One poll cycle failed; ``kind`` is one of :data:`ERROR_KINDS`."""

    def __init__(self, kind: str, detail: str = "") -> None:
        assert kind in ERROR_KINDS, kind
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass
class ParseResult:
    chutes: dict[str, ChuteStats] = field(default_factory=dict)  # configured chute_id -> stats
    parsed: int = 0  # configured entries that validated
    skipped: int = 0  # configured entries that did not, plus non-object entries
    total: int = 0  # entries in the body
    api_timestamp: str = ""


def decode_body(body: bytes) -> list[Any]:
    """JSON array from bytes; ``PollError`` truncated / invalid_json / not_a_list."""
    try:
        data = loads(body)
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", None)
        stripped = len(body.rstrip())
        if stripped and pos is not None and pos >= stripped and body.lstrip()[:1] in (b"[", b"{"):
            raise PollError("truncated", f"JSON ends early at byte {pos} of {len(body)}") from None
        raise PollError("invalid_json", str(exc)[:200]) from None
    if not isinstance(data, list):
        raise PollError("not_a_list", f"top level is {type(data).__name__}")
    return data


def select_configured(entries: Iterable[Any], chutes: Sequence[ChuteRef]) -> ParseResult:
    """Keep and validate the entries of configured chutes (see module docstring)."""
    by_id = {c.chute_id: c for c in chutes}
    by_name = {c.name: c for c in chutes}
    result = ParseResult()
    id_matched: set[str] = set()
    for obj in entries:
        result.total += 1
        if not isinstance(obj, dict):
            result.skipped += 1
            continue
        raw_id, raw_name = obj.get("chute_id"), obj.get("name")
        ref = by_id.get(raw_id) if isinstance(raw_id, str) else None
        via_id = ref is not None
        if ref is None and isinstance(raw_name, str):
            ref = by_name.get(raw_name)
        if ref is None:
            continue
        if ref.chute_id in id_matched or (not via_id and ref.chute_id in result.chutes):
            continue  # already have a better (id) or earlier (name) match
        try:
            stats = parse_entry(obj)
        except EntryError:
            result.skipped += 1
            continue
        result.parsed += 1
        result.chutes[ref.chute_id] = stats
        if via_id:
            id_matched.add(ref.chute_id)
    result.api_timestamp = shared_timestamp(s.timestamp for s in result.chutes.values())
    return result


def shared_timestamp(timestamps: Iterable[str]) -> str:
    """The rows' shared API timestamp; if they differ, the newest parseable one ("" if none)."""
    best, best_order = "", None
    for ts in timestamps:
        order = timestamp_order(ts)
        if order is not None and (best_order is None or order > best_order):
            best, best_order = ts, order
    return best


def parse_utilization(body: bytes, chutes: Sequence[ChuteRef]) -> ParseResult:
    """Whole body -> configured chutes' stats (may be empty: the caller decides what that means)."""
    return select_configured(decode_body(body), chutes)
