"""Where the utilization snapshot lives: the Redis layout, the :class:`SnapshotStore` seam with
its Redis and in-memory implementations, the announcement subscription, and the replicas'
in-flight hash (each worker's counts, for the others).

Layout (all names built by :class:`SnapshotLayout`):

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
side has no parseable API timestamp, ``fetched_at`` alone decides
(:func:`chutes_lb.snapshot.model.should_replace`).

The Redis client is passed in: this module does not import Redis.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Mapping, Protocol

from chutes_lb.snapshot.model import SCHEMA_VERSION, Snapshot, SnapshotSchemaError, _s, decode, dumps, encode, loads, should_replace

__all__ = ["SnapshotLayout", "SnapshotStore", "Subscription", "MemorySnapshotStore", "RedisSnapshotStore"]


class SnapshotLayout:
    """Every Redis key and channel name of the project's snapshot, built once."""

    __slots__ = ("prefix", "snapshot", "seq", "announce", "inflight")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.snapshot = f"{prefix}:snapshot:v{SCHEMA_VERSION}"
        self.seq = f"{prefix}:snapshot:seq"
        self.announce = f"{prefix}:snapshot:announce"
        self.inflight = f"{prefix}:inflight:v1"


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
