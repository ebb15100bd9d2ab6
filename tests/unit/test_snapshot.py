import math

import pytest
from hypothesis import given, settings, strategies as st

from chutes_lb.snapshot import (RATIO_TOLERANCE, SCHEMA_VERSION, ChuteStats, EntryError, MemorySnapshotStore, Snapshot,
                                SnapshotLayout, SnapshotSchemaError, decode, encode, parse_entry, should_replace, timestamp_order)

pytestmark = pytest.mark.unit

TS = "2026-02-18T05:48:08.568123"


def entry(**over):
    e = {"chute_id": "2ff25e81-4586-5ec8-b892-3a6f342693d7", "name": "moonshotai/Kimi-K2.5-TEE", "timestamp": TS,
         "utilization_current": 0.1566, "utilization_5m": 0.1459, "utilization_15m": 0.1563, "utilization_1h": 0.1451,
         "rate_limit_ratio_5m": 0.0, "rate_limit_ratio_15m": 0.0, "rate_limit_ratio_1h": 0.0,
         "total_requests_5m": 286.25, "total_requests_15m": 1014.64, "rate_limited_requests_5m": 0.0,
         "instance_count": 7, "action_taken": "scale_up_candidate", "target_count": 8, "total_instance_count": 10,
         "active_instance_count": 7, "scalable": True, "effective_multiplier": 22.0}
    e.update(over)
    return e


def test_parse_real_entry():
    s = parse_entry(entry())
    assert s == ChuteStats("2ff25e81-4586-5ec8-b892-3a6f342693d7", "moonshotai/Kimi-K2.5-TEE", 0.1566, 0.1459, 0.1563, 0.1451,
                           0.0, 0.0, 0.0, 286.25, 0.0, 7, 10, 7, 8, "scale_up_candidate", True, TS)
    assert isinstance(s.active_instance_count, int)


def test_target_count_may_be_null_and_integral_floats_are_counts():
    s = parse_entry(entry(target_count=None, instance_count=7.0))
    assert s.target_count is None and s.instance_count == 7 and type(s.instance_count) is int


def test_slightly_over_one_is_clamped_more_is_rejected():
    assert parse_entry(entry(utilization_5m=1.0 + RATIO_TOLERANCE)).utilization_5m == 1.0
    with pytest.raises(EntryError, match="utilization_5m"):
        parse_entry(entry(utilization_5m=1.0 + RATIO_TOLERANCE + 0.001))


@pytest.mark.parametrize("field,value", [
    ("utilization_current", math.nan), ("utilization_1h", math.inf), ("utilization_15m", -0.01), ("rate_limit_ratio_5m", "0.1"),
    ("utilization_5m", None), ("utilization_5m", True), ("total_requests_5m", -1.0), ("active_instance_count", -1),
    ("active_instance_count", 2.5), ("total_instance_count", "3"), ("instance_count", False), ("target_count", "8"),
    ("scalable", 1), ("scalable", "true"), ("action_taken", None), ("chute_id", ""), ("chute_id", 5), ("name", None),
    ("timestamp", 12345),
])
def test_malformed_fields_rejected_naming_the_field(field, value):
    with pytest.raises(EntryError, match=field):
        parse_entry(entry(**{field: value}))


@pytest.mark.parametrize("field", ["utilization_current", "active_instance_count", "scalable", "timestamp", "chute_id"])
def test_missing_field_rejected(field):
    e = entry()
    del e[field]
    with pytest.raises(EntryError, match=field):
        parse_entry(e)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({k: json_values for k in entry()})))
def test_parse_entry_over_junk_either_validates_or_raises_entry_error(obj):
    try:
        s = parse_entry(obj)
    except EntryError:
        return
    for name in ("utilization_current", "utilization_5m", "utilization_15m", "utilization_1h",
                 "rate_limit_ratio_5m", "rate_limit_ratio_15m", "rate_limit_ratio_1h"):
        v = getattr(s, name)
        assert type(v) is float and 0.0 <= v <= 1.0
    assert all(type(getattr(s, n)) is int and getattr(s, n) >= 0 for n in ("active_instance_count", "total_instance_count", "instance_count"))


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({k: st.sampled_from([v, None, -1, math.nan, "x", 1.5, True]) for k, v in entry().items()}))
def test_parse_entry_over_mutated_entries(obj):
    try:
        parse_entry(obj)
    except EntryError:
        pass


def test_layout_names():
    lay = SnapshotLayout("p")
    assert (lay.snapshot, lay.seq, lay.announce, lay.inflight) == ("p:snapshot:v1", "p:snapshot:seq", "p:snapshot:announce", "p:inflight:v1")


def test_encode_decode_round_trip():
    snap = Snapshot(SCHEMA_VERSION, 0, 1700000000.25, TS, {"k": parse_entry(entry())}, "poller-a")
    fields = encode(snap, 7)
    assert set(fields) == {"schema", "version", "fetched_at", "api_timestamp", "api_order", "poller_id", "data"}
    back = decode({k.encode(): v.encode() for k, v in fields.items()})
    assert back == Snapshot(SCHEMA_VERSION, 7, 1700000000.25, TS, {"k": parse_entry(entry())}, "poller-a")
    assert back.age(1700000010.25) == 10.0
    assert decode({}) is None


def test_decode_rejects_other_schema_and_corrupt_data():
    fields = encode(Snapshot(SCHEMA_VERSION, 0, 1.0, TS, {"k": parse_entry(entry())}), 1)
    with pytest.raises(SnapshotSchemaError, match="schema"):
        decode({**fields, "schema": "2"})
    for bad in ("{not json", "[]", '{"k": {"chute_id": "x"}}'):
        with pytest.raises(SnapshotSchemaError, match="corrupt"):
            decode({**fields, "data": bad})


def test_timestamp_order():
    assert timestamp_order("2026-02-18T05:48:08.568123") == timestamp_order("2026-02-18T05:48:08.568123+00:00")
    assert timestamp_order("2026-02-18T05:48:09") > timestamp_order("2026-02-18T05:48:08.9")
    assert timestamp_order("") is None and timestamp_order("yesterday") is None


@pytest.mark.parametrize("cur_order,cur_f,new_order,new_f,expected", [
    (10.0, 5.0, 11.0, 1.0, True),   # newer API timestamp wins even if fetched earlier
    (11.0, 1.0, 10.0, 5.0, False),  # never roll back to an older API timestamp
    (10.0, 5.0, 10.0, 6.0, True),   # equal: newer fetched_at wins
    (10.0, 6.0, 10.0, 5.0, False),
    (10.0, 5.0, 10.0, 5.0, True),   # exact tie accepted
    (None, 5.0, 10.0, 4.0, False),  # unknown order: fetched_at decides
    (10.0, 5.0, None, 6.0, True),
])
def test_write_rule(cur_order, cur_f, new_order, new_f, expected):
    assert should_replace(cur_order, cur_f, new_order, new_f) is expected


async def _noop():
    return None


def test_memory_store_ttl_uses_injected_clock():
    import asyncio

    now = [0.0]
    store = MemorySnapshotStore(ttl_seconds=10, clock=lambda: now[0])
    snap = Snapshot(SCHEMA_VERSION, 0, 1.0, TS, {"k": parse_entry(entry())})
    assert asyncio.run(store.write(snap)) == 1
    now[0] = 9.9
    assert asyncio.run(store.read_version()) == 1
    now[0] = 10.0
    assert asyncio.run(store.read()) is None
    assert store.announcements == [1]


def test_decode_refuses_entries_the_poller_would_never_write():
    """A snapshot written by something else (or corrupted) is invalid as a whole, never used as-is."""
    import dataclasses

    import json

    good = parse_entry(entry())
    for field, bad in (("utilization_current", -5.0), ("utilization_current", float("nan")), ("utilization_5m", 3.0),
                       ("active_instance_count", -3), ("rate_limit_ratio_5m", "x")):
        stats = dataclasses.asdict(good) | {field: bad}
        raw = {"schema": str(SCHEMA_VERSION), "version": "3", "fetched_at": "1.0", "api_timestamp": "",
               "data": json.dumps({good.chute_id: stats})}
        with pytest.raises(SnapshotSchemaError):
            decode(raw)
