"""The same store semantics, run against MemorySnapshotStore and RedisSnapshotStore (real Redis)."""
import asyncio
import time

import pytest
import redis.asyncio as aioredis

from chutes_lb.snapshot import (SCHEMA_VERSION, ChuteStats, MemorySnapshotStore, RedisSnapshotStore, Snapshot,
                                SnapshotLayout, SnapshotSchemaError)

pytestmark = pytest.mark.integration


def stats(cid="c1", util=0.5, ts="2026-02-18T05:48:08"):
    return ChuteStats(cid, f"org/{cid}", util, util, util, util, 0.0, 0.0, 0.0, 10.0, 0.0, 3, 4, 3, None, "no_action", True, ts)


def snap(ts="2026-02-18T05:48:08", fetched=100.0, util=0.5, poller="a"):
    return Snapshot(SCHEMA_VERSION, 0, fetched, ts, {"c1": stats(util=util, ts=ts), "c2": stats("c2", util, ts)}, poller)


@pytest.fixture(params=["memory", "redis"])
def run(request, redis_url, redis_prefix):
    """run(fn): fn(store, clock) inside one event loop, against the parametrized store."""
    def runner(fn, ttl=30.0):
        async def main():
            if request.param == "memory":
                return await fn(MemorySnapshotStore(ttl_seconds=ttl), None)
            client = aioredis.Redis.from_url(redis_url)
            try:
                return await fn(RedisSnapshotStore(client, redis_prefix, ttl_seconds=ttl), client)
            finally:
                await client.delete(*vars_of(SnapshotLayout(redis_prefix)))
                await client.aclose()
        return asyncio.run(main())
    runner.kind = request.param
    return runner


def vars_of(layout):
    return [layout.snapshot, layout.seq, layout.inflight]


def test_write_then_read_round_trips_with_increasing_versions(run):
    async def fn(store, _):
        assert await store.read() is None and await store.read_version() is None
        v1 = await store.write(snap(fetched=100.0))
        v2 = await store.write(snap(fetched=101.0, util=0.7))
        got = await store.read()
        return v1, v2, got, await store.read_version()
    v1, v2, got, rv = run(fn)
    assert (v1, v2, rv) == (1, 2, 2)
    assert got == Snapshot(SCHEMA_VERSION, 2, 101.0, "2026-02-18T05:48:08", snap(util=0.7).chutes, "a")


def test_never_rolls_back_to_an_older_api_timestamp(run):
    async def fn(store, _):
        newer = await store.write(snap(ts="2026-02-18T05:50:00", fetched=100.0, poller="a"))
        older = await store.write(snap(ts="2026-02-18T05:45:00", fetched=200.0, poller="b"))
        same_ts_older_fetch = await store.write(snap(ts="2026-02-18T05:50:00", fetched=99.0, poller="b"))
        same_ts_newer_fetch = await store.write(snap(ts="2026-02-18T05:50:00", fetched=150.0, poller="b"))
        return newer, older, same_ts_older_fetch, same_ts_newer_fetch, await store.read()
    newer, older, a, b, got = run(fn)
    assert (newer, older, a, b) == (1, None, None, 2)
    assert (got.version, got.poller_id, got.fetched_at, got.api_timestamp) == (2, "b", 150.0, "2026-02-18T05:50:00")


def test_ttl_expires_a_dead_pollers_data(run):
    async def fn(store, _):
        await store.write(snap())
        assert await store.read_version() == 1
        if isinstance(store, MemorySnapshotStore):
            store.clock = lambda: time.monotonic() + 1.0
        else:
            await asyncio.sleep(0.6)
        return await store.read(), await store.read_version()
    assert run(fn, ttl=0.5) == (None, None)


def test_inflight_returns_fresh_entries_and_deletes_very_old_ones(run):
    async def fn(store, _):
        await store.publish_inflight("w-fresh", {"c1": {"inflight": 3.0}}, now=1000.0)
        await store.publish_inflight("w-stale", {"c1": {"inflight": 9.0}}, now=995.0)
        await store.publish_inflight("w-dead", {"c2": {"inflight": 1.0}}, now=900.0)
        first = await store.read_inflight(now=1001.0, max_age=2.0)
        # w-dead (101 s > 10 * 2 s) was deleted; w-stale (6 s) is kept but not returned
        again = await store.read_inflight(now=1001.0, max_age=200.0)
        return first, again
    first, again = run(fn)
    assert first == {"w-fresh": {"ts": 1000.0, "chutes": {"c1": {"inflight": 3.0}}}}
    assert again == {"w-fresh": {"ts": 1000.0, "chutes": {"c1": {"inflight": 3.0}}},
                     "w-stale": {"ts": 995.0, "chutes": {"c1": {"inflight": 9.0}}}}


def test_redis_announces_each_version_and_rejects_foreign_schema(redis_url, redis_prefix):
    async def main():
        client = aioredis.Redis.from_url(redis_url)
        store = RedisSnapshotStore(client, redis_prefix, ttl_seconds=30)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(store.layout.announce)
            await pubsub.get_message(timeout=1.0)  # subscribe confirmation
            v1 = await store.write(snap(fetched=1.0))
            refused = await store.write(snap(ts="2000-01-01T00:00:00", fetched=2.0))
            v2 = await store.write(snap(fetched=3.0))
            got = []
            deadline = time.monotonic() + 3
            while len(got) < 2 and time.monotonic() < deadline:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if msg:
                    got.append(int(msg["data"]))
            ttl = await client.pttl(store.layout.snapshot)
            await client.hset(store.layout.snapshot, "schema", "99")
            with pytest.raises(SnapshotSchemaError, match="schema"):
                await store.read()
            return v1, refused, v2, got, ttl
        finally:
            await pubsub.aclose()
            await client.delete(store.layout.snapshot, store.layout.seq)
            await client.aclose()
    v1, refused, v2, got, ttl = asyncio.run(main())
    assert (v1, refused, v2, got) == (1, None, 2, [1, 2])
    assert 25_000 < ttl <= 30_000


def test_concurrent_writers_never_roll_back(redis_url, redis_prefix):
    """Many writers race; the stored api timestamp and version only ever go forward."""
    async def main():
        clients = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
        stores = [RedisSnapshotStore(c, redis_prefix, ttl_seconds=30) for c in clients]
        try:
            async def writer(i):
                results = []
                for k in range(30):
                    ts = f"2026-02-18T05:{(k * 7 + i * 13) % 60:02d}:00"
                    results.append((ts, await stores[i].write(snap(ts=ts, fetched=float(k), poller=str(i)))))
                return results
            async def reader():
                seen = []
                for _ in range(60):
                    s = await stores[0].read()
                    if s:
                        seen.append((s.version, s.api_timestamp))
                    await asyncio.sleep(0)
                return seen
            *writes, seen = await asyncio.gather(*(writer(i) for i in range(4)), reader())
            final = await stores[0].read()
            return writes, seen, final
        finally:
            await clients[0].delete(stores[0].layout.snapshot, stores[0].layout.seq)
            for c in clients:
                await c.aclose()
    writes, seen, final = asyncio.run(main())
    accepted = [(v, ts) for w in writes for ts, v in w if v is not None]
    assert len({v for v, _ in accepted}) == len(accepted)  # versions unique
    assert final.api_timestamp == max(ts for w in writes for ts, _ in w)
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(seen, seen[1:]) if a[0] != b[0])
    assert all(len(s) for s in seen)


def test_subscribe_delivers_each_accepted_version_and_times_out(run):
    """The seam the snapshot follower uses: announcements of accepted writes, None on a timeout."""
    async def fn(store, client):
        sub = await store.subscribe()
        try:
            assert await sub.next(0.2) is None  # nothing announced yet
            v1 = await store.write(snap(fetched=1.0))
            await store.write(snap(ts="2000-01-01T00:00:00", fetched=2.0))  # refused: never announced
            v2 = await store.write(snap(fetched=3.0))
            got = []
            deadline = time.monotonic() + 3
            while len(got) < 2 and time.monotonic() < deadline:
                version = await sub.next(0.5)
                if version is not None:
                    got.append(version)
            return v1, v2, got
        finally:
            await sub.close()

    v1, v2, got = run(fn)
    assert got == [v1, v2] == [1, 2]
