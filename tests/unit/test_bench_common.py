"""The benchmarks' interval over rounds (``benchmarks/common.py::round_interval``, through
``benchmarks/stats.py``) and per-process CPU shares: hand-checkable cases, and a coverage check on
data whose true mean is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.common import busiest_shares, interval, interval_text, round_interval

pytestmark = pytest.mark.unit


def test_constant_rounds_give_a_zero_width_interval() -> None:
    iv = round_interval([1.04] * 6)
    assert (iv["point"], iv["lo"], iv["hi"], iv["n"]) == pytest.approx((1.04, 1.04, 1.04, 6))


def test_one_round_is_a_point_and_no_round_is_nan() -> None:
    assert round_interval([0.9]) == {"point": 0.9, "lo": 0.9, "hi": 0.9, "conf": 0.95, "n": 1}
    empty = round_interval([])
    assert math.isnan(empty["point"]) and math.isnan(empty["lo"]) and math.isnan(empty["hi"]) and empty["n"] == 0
    assert round_interval([1.0, float("nan"), 3.0])["n"] == 2  # a round that measured nothing is dropped


def test_interval_brackets_the_mean_and_stays_inside_the_range() -> None:
    values = [0.947, 0.951, 1.157, 1.388, 0.99]  # issue 14's five paired rounds
    iv = round_interval(values)
    assert iv["point"] == pytest.approx(np.mean(values))
    assert min(values) <= iv["lo"] < iv["point"] < iv["hi"] <= max(values)


def test_deterministic_for_a_seed() -> None:
    values = [1.0, 1.2, 0.8, 1.1]
    assert round_interval(values, seed=3) == round_interval(values, seed=3)


def test_verdicts_use_the_whole_interval() -> None:
    d = {"point": 1.01, "lo": 0.98, "hi": 1.04, "conf": 0.95, "n": 8}
    assert not interval(d).within(1.03) and interval(d).within(1.04)  # cost target: the upper bound decides
    assert interval(d).above(0.97) and not interval(d).above(0.99)  # throughput target: the lower bound decides
    assert interval_text(d) == "1.010 [0.980, 1.040]"


def test_coverage_of_a_known_mean() -> None:
    """20 rounds from a normal with mean 1: the 95% interval covers 1 in about 95% of 300 trials
    (a percentile bootstrap is slightly narrow at small n: 88-99% is accepted)."""
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(300):
        iv = round_interval(rng.normal(1.0, 0.05, 20), n_boot=1000, seed=i)
        covered += iv["lo"] <= 1.0 <= iv["hi"]
    assert 0.88 <= covered / 300 <= 0.99


def test_width_shrinks_with_more_rounds() -> None:
    rng = np.random.default_rng(1)
    few = round_interval(rng.normal(1.0, 0.05, 5))
    many = round_interval(rng.normal(1.0, 0.05, 80))
    assert many["hi"] - many["lo"] < few["hi"] - few["lo"]


def test_busiest_shares_say_whether_every_worker_served() -> None:
    before = {10: 5.0, 11: 30.0, 12: 31.0}  # supervisor, worker, worker
    both = {10: 5.1, 11: 38.0, 12: 39.0}
    one = {10: 5.1, 11: 46.0, 12: 31.1}
    assert busiest_shares(before, both, 10.0, 2) == pytest.approx([0.8, 0.8])
    assert busiest_shares(before, one, 10.0, 2) == pytest.approx([1.6, 0.01])
    # a process born in between used all its CPU in between
    assert busiest_shares({}, {7: 3.0}, 1.0, 2) == [3.0, 0.0]
