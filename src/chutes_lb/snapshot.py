"""The utilization snapshot: its data types, its Redis layout and its stores, defined once.

The poller writes, every proxy replica reads. Layout (all names built by :class:`SnapshotLayout`):

- ``{prefix}:snapshot:v1``  hash ``schema, version, fetched_at, api_timestamp, api_order,
  poller_id, data`` (``data`` = compact JSON ``{chute_key: {field: value}}``); has a TTL so a
  dead poller's data expires.
- ``{prefix}:snapshot:seq``  counter; each accepted write takes ``INCR`` of it as its version
  (no TTL; note it restarts at 1 if Redis loses its data).
- ``{prefix}:snapshot:announce``  channel; each accepted write PUBLISHes its version.
- ``{prefix}:inflight:v1``  hash ``worker_id -> {"ts": epoch, "chutes": {...}}`` (opaque numbers).

Write rule (one Lua script, so readers never see half a snapshot): a write is refused
(``write`` returns ``None``) when the stored snapshot's API timestamp is newer than the new
one's; on equal API timestamps the newer ``fetched_at`` wins (ties are accepted). When either
side has no parseable API timestamp, ``fetched_at`` alone decides.

Entry validation (:func:`parse_entry`): NaN/inf, negative numbers, booleans where numbers are
expected and ill-typed fields are rejected. Ratios above 1 by at most
``RATIO_TOLERANCE`` (averaging/rounding artefacts) are clamped to 1.0; larger ones are rejected.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

try:  # optional speed-up; json is the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

__all__ = [
    "SCHEMA_VERSION", "RATIO_TOLERANCE", "ChuteStats", "EntryError", "Snapshot", "SnapshotSchemaError",
    "SnapshotLayout", "SnapshotStore", "Subscription", "MemorySnapshotStore", "RedisSnapshotStore",
    "parse_entry", "timestamp_order", "encode", "decode", "dumps", "loads",
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


class SnapshotLayout:
    """Every Redis key and channel name of the project's snapshot, built once."""

    __slots__ = ("prefix", "snapshot", "seq", "announce", "inflight")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.snapshot = f"{prefix}:snapshot:v{SCHEMA_VERSION}"
        self.seq = f"{prefix}:snapshot:seq"
        self.announce = f"{prefix}:snapshot:announce"
        self.inflight = f"{prefix}:inflight:v1"


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


class Subscription(Protocol):
    """Announcements of new snapshot versions (the poller's PUBLISH after each accepted write)."""

    async def next(self, timeout: float) -> int | None:
        """The next announced version (0 when unparseable), or None after ``timeout`` seconds."""
        ...

    async def close(self) -> None: ...


class SnapshotStore(Protocol):
    async def write(self, snapshot: Snapshot) -> int | None: ...
    async def read(self) -> Snapshot | None: ...
    async def read_version(self) -> int | None: ...
    async def subscribe(self) -> Subscription: ...
    async def publish_inflight(self, worker_id: str, counts: Mapping[str, Mapping[str, float]], now: float) -> None: ...
    async def read_inflight(self, now: float, max_age: float) -> dict[str, dict[str, Any]]: ...


def _announced(data: Any) -> int:
    try:
        return int(data)
    except (TypeError, ValueError):
        return 0


class _QueueSubscription:
    def __init__(self, queue: "asyncio.Queue[int]", subscribers: list["asyncio.Queue[int]"]) -> None:
        self._queue, self._subscribers = queue, subscribers

    async def next(self, timeout: float) -> int | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        if self._queue in self._subscribers:
            self._subscribers.remove(self._queue)


class _RedisSubscription:
    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def next(self, timeout: float) -> int | None:
        msg = await self._pubsub.get_message(timeout=timeout)
        return None if msg is None else _announced(msg.get("data"))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pubsub.aclose(), 1)
        except Exception:  # closing a dead connection must not mask why it died
            pass


def _inflight_payload(counts: Mapping[str, Mapping[str, float]], now: float) -> str:
    return dumps({"ts": now, "chutes": {str(c): dict(v) for c, v in counts.items()}}).decode()


def _inflight_select(raw: Mapping[Any, Any], now: float, max_age: float) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(fresh entries ``worker -> {"ts": measured_at, "chutes": {...}}``, worker ids to delete:
    older than 10 * max_age)."""
    fresh: dict[str, dict[str, Any]] = {}
    expired: list[str] = []
    for worker, payload in raw.items():
        worker = _s(worker)
        try:
            entry = loads(payload)
            ts = float(entry["ts"])
            chutes = entry["chutes"]
            if not isinstance(chutes, dict):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            continue  # corrupt or foreign: ignore, the hash TTL clears it eventually
        age = now - ts
        if age > 10 * max_age:
            expired.append(worker)
        elif age <= max_age:
            fresh[worker] = {"ts": ts, "chutes": chutes}
    return fresh, expired


class MemorySnapshotStore:
    """In-memory store with the same semantics as :class:`RedisSnapshotStore` (for tests)."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic, inflight_ttl_seconds: float = 300.0) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.inflight_ttl_seconds = inflight_ttl_seconds
        self.seq = 0
        self.announcements: list[int] = []
        self._fields: dict[str, str] | None = None
        self._expires_at = 0.0
        self._inflight: dict[str, str] = {}
        self._inflight_expires_at = 0.0
        self._subscribers: list[asyncio.Queue[int]] = []

    def _current(self) -> dict[str, str] | None:
        if self._fields is not None and self.clock() >= self._expires_at:
            self._fields = None
        return self._fields

    async def write(self, snapshot: Snapshot) -> int | None:
        new = encode(snapshot, 0)
        cur = self._current()
        if cur is not None:
            cur_order = float(cur["api_order"]) if cur["api_order"] else None
            new_order = float(new["api_order"]) if new["api_order"] else None
            if not should_replace(cur_order, float(cur["fetched_at"]), new_order, float(new["fetched_at"])):
                return None
        self.seq += 1
        new["version"] = str(self.seq)
        self._fields = new
        self._expires_at = self.clock() + self.ttl_seconds
        self.announcements.append(self.seq)
        for queue in self._subscribers:
            queue.put_nowait(self.seq)
        return self.seq

    async def read(self) -> Snapshot | None:
        cur = self._current()
        return None if cur is None else decode(cur)

    async def read_version(self) -> int | None:
        cur = self._current()
        return None if cur is None else int(cur["version"])

    async def subscribe(self) -> Subscription:
        queue: asyncio.Queue[int] = asyncio.Queue()
        self._subscribers.append(queue)
        return _QueueSubscription(queue, self._subscribers)

    async def publish_inflight(self, worker_id: str, counts: Mapping[str, Mapping[str, float]], now: float) -> None:
        if self.clock() >= self._inflight_expires_at:
            self._inflight.clear()
        self._inflight[worker_id] = _inflight_payload(counts, now)
        self._inflight_expires_at = self.clock() + self.inflight_ttl_seconds

    async def read_inflight(self, now: float, max_age: float) -> dict[str, dict[str, Any]]:
        if self.clock() >= self._inflight_expires_at:
            self._inflight.clear()
        fresh, expired = _inflight_select(self._inflight, now, max_age)
        for worker in expired:
            self._inflight.pop(worker, None)
        return fresh


# KEYS: snapshot hash, seq counter. ARGV: schema, fetched_at, api_timestamp, api_order,
# poller_id, data, ttl_ms, announce channel. Returns the new version, or -1 when refused.
_WRITE_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'api_order', 'fetched_at')
if cur[2] then
  local cur_order = tonumber(cur[1])
  local new_order = tonumber(ARGV[4])
  if cur_order and new_order and cur_order ~= new_order then
    if new_order < cur_order then return -1 end
  elseif tonumber(cur[2]) and tonumber(ARGV[2]) < tonumber(cur[2]) then
    return -1  -- a stored fetched_at that is not a number is corrupt: replace it
  end
end
local version = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'schema', ARGV[1], 'version', version, 'fetched_at', ARGV[2],
  'api_timestamp', ARGV[3], 'api_order', ARGV[4], 'poller_id', ARGV[5], 'data', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[8], version)
return version
"""


class RedisSnapshotStore:
    """The snapshot in Redis (``redis.asyncio``); errors of the client propagate to the caller."""

    def __init__(self, client: Any, prefix: str, ttl_seconds: float, inflight_ttl_seconds: float = 300.0) -> None:
        self.client = client
        self.layout = SnapshotLayout(prefix)
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.inflight_ttl_ms = max(1, int(inflight_ttl_seconds * 1000))
        self._write_script = client.register_script(_WRITE_LUA)

    async def write(self, snapshot: Snapshot) -> int | None:
        f = encode(snapshot, 0)
        result = await self._write_script(
            keys=[self.layout.snapshot, self.layout.seq],
            args=[f["schema"], f["fetched_at"], f["api_timestamp"], f["api_order"], f["poller_id"], f["data"],
                  self.ttl_ms, self.layout.announce])
        version = int(result)
        return None if version < 0 else version

    async def read(self) -> Snapshot | None:
        return decode(await self.client.hgetall(self.layout.snapshot))

    async def read_version(self) -> int | None:
        raw = await self.client.hget(self.layout.snapshot, "version")
        try:
            return None if raw is None else int(raw)
        except ValueError:
            raise SnapshotSchemaError(f"corrupt snapshot version {raw!r}") from None

    async def subscribe(self) -> Subscription:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.layout.announce)
        except BaseException:
            await _RedisSubscription(pubsub).close()
            raise
        return _RedisSubscription(pubsub)

    async def publish_inflight(self, worker_id: str, counts: Mapping[str, Mapping[str, float]], now: float) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.layout.inflight, worker_id, _inflight_payload(counts, now))
            pipe.pexpire(self.layout.inflight, self.inflight_ttl_ms)
            await pipe.execute()

    async def read_inflight(self, now: float, max_age: float) -> dict[str, dict[str, Any]]:
        fresh, expired = _inflight_select(await self.client.hgetall(self.layout.inflight), now, max_age)
        if expired:
            await self.client.hdel(self.layout.inflight, *expired)
        return fresh
