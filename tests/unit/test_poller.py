import asyncio
import json
import random

import pytest
from prometheus_client import generate_latest

from chutes_lb.fleet import ChuteRef
from chutes_lb.poller.metrics import PollerMetrics
from chutes_lb.poller.parse import PollError, decode_body, parse_utilization
from chutes_lb.poller.service import Poller, backoff_delay
from chutes_lb.snapshot import MemorySnapshotStore, Snapshot

pytestmark = pytest.mark.unit

TS = "2026-02-18T05:48:08.568123"
CHUTES = [ChuteRef("id-a", "org/A", "g"), ChuteRef("id-b", "org/B", "g")]


def entry(cid, name, util=0.25, ts=TS, **over):
    e = {"chute_id": cid, "name": name, "timestamp": ts, "utilization_current": util, "utilization_5m": util,
         "utilization_15m": util, "utilization_1h": util, "rate_limit_ratio_5m": 0.1, "rate_limit_ratio_15m": 0.0,
         "rate_limit_ratio_1h": 0.0, "total_requests_5m": 5.0, "rate_limited_requests_5m": 0.5, "instance_count": 2,
         "action_taken": "no_action", "target_count": None, "total_instance_count": 3, "active_instance_count": 2, "scalable": True}
    e.update(over)
    return e


def body(*entries):
    return json.dumps(list(entries)).encode()


# ---------------------------------------------------------------- parse / filter
@pytest.mark.parametrize("raw,kind", [
    (b"<html>oops</html>", "invalid_json"), (b"", "invalid_json"), (b'{"detail": "x"}', "not_a_list"), (b"null", "not_a_list"),
    (b'[{"chute_id": "id-a", "na', "truncated"), (b"[1, 2", "truncated"), (b"[1]]", "invalid_json"),
])
def test_bad_bodies_rejected_whole(raw, kind):
    with pytest.raises(PollError) as info:
        decode_body(raw)
    assert info.value.kind == kind


def test_keeps_only_configured_chutes_by_id_or_name():
    r = parse_utilization(body(entry("id-x", "other/X"), entry("id-a", "org/A", 0.5), entry("id-new", "org/B", 0.7),
                               entry("id-y", "[private chute]")), CHUTES)
    assert set(r.chutes) == {"id-a", "id-b"}  # keyed by the CONFIGURED id
    assert r.chutes["id-b"].chute_id == "id-new" and r.chutes["id-b"].utilization_5m == 0.7
    assert (r.parsed, r.skipped, r.total, r.api_timestamp) == (2, 0, 4, TS)


def test_id_match_beats_name_match_and_first_name_match_wins():
    r = parse_utilization(body(entry("old-b", "org/B", 0.1), entry("newer-b", "org/B", 0.2), entry("id-b", "renamed", 0.9)), CHUTES)
    assert r.chutes["id-b"].utilization_5m == 0.9
    r = parse_utilization(body(entry("old-b", "org/B", 0.1), entry("newer-b", "org/B", 0.2)), CHUTES)
    assert r.chutes["id-b"].chute_id == "old-b"


def test_malformed_configured_entries_are_skipped_and_counted():
    r = parse_utilization(body(entry("id-a", "org/A", -1.0), "junk", 7,
                               entry("id-b", "org/B", 0.3), entry("id-x", "x", "bad")), CHUTES)
    assert set(r.chutes) == {"id-b"}
    assert (r.parsed, r.skipped) == (1, 3)  # bad id-a, "junk", 7; id-x is not ours: ignored


def test_shared_timestamp_is_newest_when_rows_disagree():
    r = parse_utilization(body(entry("id-a", "org/A", ts="2026-02-18T05:00:00"), entry("id-b", "org/B", ts="2026-02-18T06:00:00")), CHUTES)
    assert r.api_timestamp == "2026-02-18T06:00:00"


# ---------------------------------------------------------------- backoff
def test_backoff_grows_then_caps_at_the_interval():
    rng = random.Random(1)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (50, 30.0)]:
        delays = [backoff_delay(failures, 30.0, rng) for _ in range(200)]
        assert ceiling * 0.5 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > 0.1 * ceiling  # jittered


def test_backoff_short_interval_base():
    assert backoff_delay(1, 0.5, random.Random(0)) <= 0.125


# ---------------------------------------------------------------- one cycle
class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def make(fetch_results, store=None, clock=None):
    clock = clock or Clock()
    results = list(fetch_results)

    async def fetch():
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r
    store = store or MemorySnapshotStore(ttl_seconds=600, clock=clock)
    metrics = PollerMetrics(CHUTES, clock)
    return Poller(CHUTES, fetch, store, metrics, interval=1.0, healthy_seconds=5.0, poller_id="p1", clock=clock, rng=random.Random(0)), store, clock, metrics


def scrape(metrics):
    return generate_latest(metrics.registry).decode()


def test_cycle_writes_snapshot_and_metrics():
    poller, store, clock, metrics = make([body(entry("id-a", "org/A", 0.5), entry("z", "zz"))])
    out = asyncio.run(poller.poll_once())
    assert out.ok and out.version == 1
    snap = asyncio.run(store.read())
    assert set(snap.chutes) == {"id-a"} and snap.fetched_at == 1000.0 and snap.poller_id == "p1" and snap.api_timestamp == TS
    text = scrape(metrics)
    assert 'chutes_lb_chute_utilization_ratio{chute="org/A",window="5m"} 0.5' in text
    assert 'chutes_lb_chute_rate_limit_ratio{chute="org/A",window="5m"} 0.1' in text
    assert 'chutes_lb_chute_in_snapshot{chute="org/A"} 1.0' in text
    assert 'chutes_lb_chute_in_snapshot{chute="org/B"} 0.0' in text
    assert 'chutes_lb_chute_active_instances{chute="org/A"} 2.0' in text
    assert "chutes_lb_poller_snapshot_version 1.0" in text
    assert "chutes_lb_poller_entries_parsed_total 1.0" in text
    clock.t = 1003.5
    assert "chutes_lb_poller_snapshot_age_seconds 3.5" in scrape(metrics)
    assert poller.health()[0] is True


@pytest.mark.parametrize("bad,kind", [
    (b"garbage", "invalid_json"), (b'{"a": 1}', "not_a_list"), (b"[1, 2", "truncated"),
    (json.dumps([entry("z", "zz")]).encode(), "no_configured_chutes"),
    (PollError("timeout"), "timeout"), (PollError("http_status", "HTTP 500"), "http_status"), (PollError("too_large"), "too_large"),
])
def test_failed_cycle_keeps_last_good_snapshot_and_counts(bad, kind):
    poller, store, clock, metrics = make([body(entry("id-a", "org/A", 0.5)), bad])
    asyncio.run(poller.poll_once())
    clock.t += 1
    out = asyncio.run(poller.poll_once())
    assert (out.ok, out.error) == (False, kind)
    snap = asyncio.run(store.read())
    assert snap.version == 1 and snap.chutes["id-a"].utilization_5m == 0.5
    assert f'chutes_lb_poller_poll_errors_total{{kind="{kind}"}} 1.0' in scrape(metrics)
    assert poller.failures == 1


def test_rolled_back_write_is_counted_not_unhealthy():
    store = MemorySnapshotStore(ttl_seconds=600)
    newer = Snapshot(1, 0, 1.0, "2030-01-01T00:00:00", parse_utilization(body(entry("id-a", "org/A")), CHUTES).chutes)
    asyncio.run(store.write(newer))
    poller, _, _, metrics = make([body(entry("id-a", "org/A", 0.9))], store=store)
    out = asyncio.run(poller.poll_once())
    assert (out.ok, out.error, out.version) == (True, "rolled_back", None)
    assert asyncio.run(store.read()).api_timestamp == "2030-01-01T00:00:00"
    assert 'chutes_lb_poller_poll_errors_total{kind="rolled_back"} 1.0' in scrape(metrics)
    assert poller.health()[0] is True


class BrokenStore(MemorySnapshotStore):
    def __init__(self):
        super().__init__(ttl_seconds=600)
        self.broken = True

    async def write(self, snapshot):
        if self.broken:
            raise ConnectionError("redis down")
        return await super().write(snapshot)


def test_redis_failure_is_counted_and_health_follows_last_success():
    store = BrokenStore()
    poller, _, clock, metrics = make([body(entry("id-a", "org/A"))] * 3, store=store)
    ok, why = poller.health()
    assert not ok and why["reason"] == "no successful poll yet"
    out = asyncio.run(poller.poll_once())
    assert out.error == "redis" and 'kind="redis"} 1.0' in scrape(metrics)
    store.broken = False
    assert asyncio.run(poller.poll_once()).version == 1
    store.broken = True
    clock.t += 5.5
    assert asyncio.run(poller.poll_once()).error == "redis"
    ok, why = poller.health()
    assert not ok and why["last_error"] == "redis" and "5.5s ago" in why["reason"]
    assert poller.next_delay(asyncio.run(poller.poll_once()), 0.0) <= 0.5  # 2nd failure: base 0.25 * 2


def test_absent_chute_drops_its_series():
    poller, _, _, metrics = make([body(entry("id-a", "org/A"), entry("id-b", "org/B")), body(entry("id-a", "org/A"))])
    asyncio.run(poller.poll_once())
    assert 'chute="org/B",window="1h"' in scrape(metrics)
    asyncio.run(poller.poll_once())
    text = scrape(metrics)
    assert 'chute="org/B",window="1h"' not in text and 'chutes_lb_chute_in_snapshot{chute="org/B"} 0.0' in text


def test_run_stops_promptly_during_a_slow_fetch():
    async def main():
        async def slow():
            await asyncio.sleep(60)
        poller = Poller(CHUTES, slow, MemorySnapshotStore(ttl_seconds=60), PollerMetrics(CHUTES, Clock()), interval=1.0,
                        healthy_seconds=5.0, poller_id="p")
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 1.0)
    asyncio.run(main())


# ---------------------------------------------------------------- configured chutes watched
def test_a_configured_chute_missing_from_the_data_is_logged_once_per_change(caplog):
    from chutes_lb.poller.watch import ChuteWatch

    missing = []
    watch = ChuteWatch(CHUTES, on_missing=missing.append)
    caplog.set_level("WARNING", logger="chutes_lb.poller")
    assert watch.seen({"id-a"}) and len(caplog.records) == 1 and "org/B" in caplog.text and "missing" in caplog.text
    assert watch.seen({"id-a"}) == [] and missing == ["org/B", "org/B"]  # counted every poll, logged once
    back = watch.seen({"id-a", "id-b"})
    assert len(back) == 1 and "is back" in back[0]


def test_a_concurrency_the_api_contradicts_is_warned_once_per_value():
    from chutes_lb.poller.watch import ChuteWatch

    records = {"id-a": {"concurrency": 4}, "id-b": {"concurrency": 8}}

    async def fetch(chute_id):
        return records[chute_id]

    seen = {}
    watch = ChuteWatch(CHUTES, fetch, every=2, on_concurrency=seen.__setitem__)
    first = asyncio.run(watch.after_success())
    assert len(first) == 1 and "org/A" in first[0] and "concurrency 4" in first[0] and "says 8" in first[0]
    assert seen == {"org/A": 4, "org/B": 8}
    assert asyncio.run(watch.after_success()) == []  # not due (every 2 polls)
    assert asyncio.run(watch.after_success()) == []  # due, same value: not repeated
    records["id-a"] = {"concurrency": 2}
    asyncio.run(watch.after_success())
    assert asyncio.run(watch.after_success())[0].count("concurrency 2") == 1
    records["id-a"] = {"concurrency": 8}
    asyncio.run(watch.after_success())
    assert asyncio.run(watch.after_success()) == [] and "id-a" not in watch.reported_concurrency


def test_a_failing_record_fetch_never_fails_the_poll():
    from chutes_lb.poller.watch import ChuteWatch

    async def broken(chute_id):
        raise OSError("no route")

    assert asyncio.run(ChuteWatch(CHUTES, broken).after_success()) == []
