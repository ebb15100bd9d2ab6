"""The bootstrap helper: its intervals cover what they should and are reproducible."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.stats import Interval, bootstrap_ratio, bootstrap_stat, mean, percentile, ratio, spread

pytestmark = pytest.mark.unit


def test_ratio_of_medians_interval_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(1)
    # A is B scaled by 0.8: the true ratio of any percentile is 0.8
    a = [rng.exponential(0.8, 3000) for _ in range(3)]
    b = [rng.exponential(1.0, 3000) for _ in range(3)]
    iv = bootstrap_ratio(a, b, percentile(50), np.random.default_rng(2), n_boot=400)
    assert iv.lo < 0.8 < iv.hi
    assert iv.lo < iv.point < iv.hi
    assert iv.hi - iv.lo < 0.15
    assert iv.within(0.9) and not iv.within(0.8) and iv.above(0.7)


def test_interval_narrows_with_more_data_and_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    small = bootstrap_ratio([rng.normal(10, 2, 100)], [rng.normal(10, 2, 100)], mean, np.random.default_rng(4), 300)
    big = bootstrap_ratio([rng.normal(10, 2, 10_000)], [rng.normal(10, 2, 10_000)], mean, np.random.default_rng(4), 300)
    assert big.hi - big.lo < (small.hi - small.lo) / 5
    x, y = [np.arange(50.0)], [np.arange(1.0, 51.0)]
    assert bootstrap_ratio(x, y, mean, np.random.default_rng(7), 200) == bootstrap_ratio(x, y, mean, np.random.default_rng(7), 200)


def test_pooled_over_seeds_stratified() -> None:
    # seed 1 is slow for both strategies, seed 2 fast: resampling within seeds keeps the mix
    a = [np.full(100, 10.0), np.full(100, 1.0)]
    b = [np.full(100, 20.0), np.full(100, 2.0)]
    iv = bootstrap_ratio(a, b, mean, np.random.default_rng(0), 100)
    assert iv.point == iv.lo == iv.hi == pytest.approx(0.5)
    with pytest.raises(ValueError):
        bootstrap_ratio(a, b[:1], mean, np.random.default_rng(0), 10)


def test_rates_as_indicator_means_and_edge_cases() -> None:
    rng = np.random.default_rng(5)
    rejected_a = [(rng.random(20_000) < 0.02).astype(float)]
    rejected_b = [(rng.random(20_000) < 0.04).astype(float)]
    iv = bootstrap_ratio(rejected_a, rejected_b, mean, np.random.default_rng(6), 300)
    assert iv.lo < 0.5 < iv.hi
    assert ratio(0.0, 0.0) == 1.0 and ratio(1.0, 0.0) == float("inf")
    one = bootstrap_stat([np.arange(1.0, 101.0)], percentile(50), np.random.default_rng(1), 200)
    assert one.lo <= 50.5 <= one.hi
    assert percentile(99).__name__ == "p99"
    assert spread([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)
    assert str(Interval(1.0, 0.9, 1.1)) == "1 [0.9, 1.1]"
