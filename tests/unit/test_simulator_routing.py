"""Chutes' own multi-chute routing (``simulator/routing.py``): resolution of ``model`` and ranking (pure)."""
from dataclasses import dataclass

import pytest

from chutes_lb.simulator.routing import rank, resolve, split_mode

pytestmark = pytest.mark.unit


@dataclass(eq=False)
class FakeChute:
    name: str
    has_instances: bool = True
    has_free_slot: bool = True
    ttft_ema: float | None = None
    otps_ema: float | None = None


A, B, C = FakeChute("org/A"), FakeChute("org/B"), FakeChute("org/C")
UUIDS = {"aaaa-uuid": A}
BY_KEY = {c.name: c for c in (A, B, C)} | UUIDS


def _resolve(model, aliases=None):
    return resolve(model, BY_KEY.get, aliases or {})


def test_split_mode_strips_only_the_two_suffixes():
    assert split_mode("A,B:latency") == ("A,B", "latency")
    assert split_mode(" A:THROUGHPUT ") == ("A", "throughput")
    assert split_mode("A:fast") == ("A:fast", None)


def test_exact_name_or_uuid_first_then_list_then_alias():
    assert _resolve("org/A") == ([A], None, True)
    assert _resolve("aaaa-uuid") == ([A], None, True)
    assert _resolve("org/B:latency") == ([B], "latency", False)
    # a list: names, UUIDs and aliases, duplicates (also a name and its UUID) dropped, order kept
    assert _resolve("org/C, org/A,aaaa-uuid,,org/C") == ([C, A], None, False)
    assert _resolve("mine,org/A:throughput", {"mine": ["org/B", "org/C"]}) == ([B, C, A], "throughput", False)
    assert _resolve("mine", {"mine": ["org/B", "org/A"]}) == ([B, A], None, False)
    assert _resolve("MINE", {"mine": ["org/B"]}) == ([B], None, False)  # aliases are case-insensitive
    assert _resolve("org/Z") == ([], None, False)
    assert _resolve("org/Z,org/Y") == ([], None, False)
    # a chute name wins over an alias of the same name
    assert _resolve("org/A,x", {"org/a": ["org/C"], "x": ["org/B"]}) == ([A, B], None, False)


def test_failover_available_first_then_full_cold_dropped():
    full = FakeChute("full", has_free_slot=False)
    cold = FakeChute("cold", has_instances=False, has_free_slot=False)
    free = FakeChute("free")
    assert rank([full, cold, free], None) == [free, full]
    assert rank([cold], None) == []


def test_latency_and_throughput_rank_available_chutes_by_their_averages():
    slow = FakeChute("slow", ttft_ema=2.0, otps_ema=20.0)
    fast = FakeChute("fast", ttft_ema=0.5, otps_ema=60.0)
    new = FakeChute("new")  # no measurement yet: after the measured ones
    full = FakeChute("full", has_free_slot=False, ttft_ema=0.1, otps_ema=99.0)
    assert rank([slow, new, full, fast], "latency") == [fast, slow, new]
    assert rank([slow, new, full, fast], "throughput") == [fast, slow, new]
    # none available: the failover order (chutes at capacity that have instances)
    cold = FakeChute("cold", has_instances=False, has_free_slot=False)
    assert rank([cold, full], "latency") == [full]
