"""The utilization snapshot, defined once: its types and codec (:mod:`.model`, no I/O) and its
stores (:mod:`.stores`: the Redis layout, Redis and in-memory stores, the in-flight hash). The
poller writes, every proxy replica reads. This package re-exports both, so callers import from
``chutes_lb.snapshot``; the pure routing core imports :mod:`chutes_lb.snapshot.model` only.
"""
from chutes_lb.snapshot.model import (RATIO_TOLERANCE, SCHEMA_VERSION, ChuteStats, EntryError, Snapshot,
                                      SnapshotSchemaError, decode, dumps, encode, loads, parse_entry, should_replace,
                                      timestamp_order)
from chutes_lb.snapshot.stores import MemorySnapshotStore, RedisSnapshotStore, SnapshotLayout, SnapshotStore, Subscription

__all__ = [
    "SCHEMA_VERSION", "RATIO_TOLERANCE", "ChuteStats", "EntryError", "Snapshot", "SnapshotSchemaError",
    "SnapshotLayout", "SnapshotStore", "Subscription", "MemorySnapshotStore", "RedisSnapshotStore",
    "parse_entry", "timestamp_order", "encode", "decode", "dumps", "loads", "should_replace",
]
