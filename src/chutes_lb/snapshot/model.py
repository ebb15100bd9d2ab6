"""The utilization snapshot's data types and codec: :class:`ChuteStats` (one chute's entry,
validated by :func:`parse_entry`), :class:`Snapshot`, and the hash fields it is stored as
(:func:`encode` / :func:`decode`), with the write rule :func:`should_replace`. No I/O: the routing
core, the poller and the stores (:mod:`chutes_lb.snapshot.stores`) all read these.

Entry validation (:func:`parse_entry`): NaN/inf, negative numbers, booleans where numbers are
expected and ill-typed fields are rejected. Ratios above 1 by at most
``RATIO_TOLERANCE`` (averaging/rounding artefacts) are clamped to 1.0; larger ones are rejected.

Must not import: Redis, HTTP clients, LiteLLM, ``chutes_lb.settings``, ``chutes_lb.proxy``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Mapping

try:  # optional speed-up; json is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

__all__ = [
    "SCHEMA_VERSION", "RATIO_TOLERANCE", "ChuteStats", "EntryError", "Snapshot", "SnapshotSchemaError",
    "parse_entry", "timestamp_order", "encode", "decode", "dumps", "loads", "should_replace",
]

SCHEMA_VERSION = 1
RATIO_TOLERANCE = 0.05  # ratios in (1, 1.05] are clamped to 1.0


class EntryError(ValueError):
    """One utilization entry is malformed; the message names the field."""


class SnapshotSchemaError(ValueError):
    """The stored snapshot has another schema version or cannot be decoded."""


def dumps(obj: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def loads(data: bytes | str) -> Any:
    """JSON decode; raises ``json.JSONDecodeError`` (orjson's error subclasses it)."""
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


@dataclass(frozen=True, slots=True)
class ChuteStats:
    chute_id: str
    name: str
    utilization_current: float
    utilization_5m: float
    utilization_15m: float
    utilization_1h: float
    rate_limit_ratio_5m: float
    rate_limit_ratio_15m: float
    rate_limit_ratio_1h: float
    total_requests_5m: float
    rate_limited_requests_5m: float
    active_instance_count: int
    total_instance_count: int
    instance_count: int
    target_count: int | None
    action_taken: str
    scalable: bool
    timestamp: str


_RATIOS = ("utilization_current", "utilization_5m", "utilization_15m", "utilization_1h",
           "rate_limit_ratio_5m", "rate_limit_ratio_15m", "rate_limit_ratio_1h")
_AMOUNTS = ("total_requests_5m", "rate_limited_requests_5m")
_COUNTS = ("active_instance_count", "total_instance_count", "instance_count")
STATS_FIELDS = tuple(f.name for f in fields(ChuteStats))


def _number(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EntryError(f"{key}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise EntryError(f"{key}: not finite")
    if value < 0:
        raise EntryError(f"{key}: negative")
    return value


def _count(obj: Mapping[str, Any], key: str) -> int:
    value = _number(obj, key)
    if value != int(value):
        raise EntryError(f"{key}: not an integer")
    return int(value)


def _text(obj: Mapping[str, Any], key: str, required: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (required and not value):
        raise EntryError(f"{key}: expected a {'non-empty ' if required else ''}string")
    return value


def parse_entry(obj: Any) -> ChuteStats:
    """Validate one utilization entry (extra fields are ignored); raise :class:`EntryError`."""
    if not isinstance(obj, dict):
        raise EntryError(f"entry: expected an object, got {type(obj).__name__}")
    values: dict[str, Any] = {}
    for key in _RATIOS:
        v = _number(obj, key)
        if v > 1.0 + RATIO_TOLERANCE:
            raise EntryError(f"{key}: {v} is above 1")
        values[key] = min(v, 1.0)
    for key in _AMOUNTS:
        values[key] = _number(obj, key)
    for key in _COUNTS:
        values[key] = _count(obj, key)
    values["target_count"] = None if obj.get("target_count") is None else _count(obj, "target_count")
    scalable = obj.get("scalable")
    if not isinstance(scalable, bool):
        raise EntryError("scalable: expected a boolean")
    return ChuteStats(chute_id=_text(obj, "chute_id", True), name=_text(obj, "name"), action_taken=_text(obj, "action_taken"),
                      scalable=scalable, timestamp=_text(obj, "timestamp"), **values)


def timestamp_order(ts: str) -> float | None:
    """Epoch seconds of an API timestamp (ISO 8601; naive = UTC), ``None`` if unparseable."""
    if not ts:
        return None
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


@dataclass(frozen=True)
class Snapshot:
    schema: int
    version: int
    fetched_at: float
    api_timestamp: str
    chutes: Mapping[str, ChuteStats] = field(default_factory=dict)
    poller_id: str = ""

    def age(self, now: float) -> float:
        return now - self.fetched_at


def encode(snapshot: Snapshot, version: int | None = None) -> dict[str, str]:
    """Hash fields of a snapshot (``version`` overrides the snapshot's own)."""
    order = timestamp_order(snapshot.api_timestamp)
    data = {key: {k: v for k, v in asdict(stats).items()} for key, stats in snapshot.chutes.items()}
    return {
        "schema": str(snapshot.schema),
        "version": str(snapshot.version if version is None else version),
        "fetched_at": repr(float(snapshot.fetched_at)),
        "api_timestamp": snapshot.api_timestamp,
        "api_order": "" if order is None else repr(order),
        "poller_id": snapshot.poller_id,
        "data": dumps(data).decode(),
    }


def _s(value: Any) -> str:
    """Text of a Redis field or value (bytes or str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def decode(raw: Mapping[Any, Any]) -> Snapshot | None:
    """Snapshot from hash fields (bytes or str); ``None`` for an empty hash."""
    if not raw:
        return None
    h = {_s(k): _s(v) for k, v in raw.items()}
    if h.get("schema") != str(SCHEMA_VERSION):
        raise SnapshotSchemaError(f"snapshot schema {h.get('schema')!r}, this code reads {SCHEMA_VERSION}")
    try:
        data = loads(h["data"])
        if not isinstance(data, dict):
            raise ValueError("data is not an object")
        # the same validation as the poller's: a value it would never write (NaN, negative,
        # utilization > 1, wrong type) makes the whole snapshot invalid rather than used as-is
        chutes = {str(key): parse_entry(stats) for key, stats in data.items()}
        return Snapshot(schema=SCHEMA_VERSION, version=int(h["version"]), fetched_at=float(h["fetched_at"]),
                        api_timestamp=h.get("api_timestamp", ""), chutes=chutes, poller_id=h.get("poller_id", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotSchemaError(f"corrupt snapshot: {exc}") from None


def should_replace(cur_order: float | None, cur_fetched: float, new_order: float | None, new_fetched: float) -> bool:
    """The write rule (mirrored by the Lua script): never roll back to an older API timestamp."""
    if cur_order is not None and new_order is not None and cur_order != new_order:
        return new_order > cur_order
    return new_fetched >= cur_fetched
