"""Intervals for benchmark ratios: a stratified bootstrap pooled over seeds, and per-seed spread.

Pure (numpy only); the random source is an injected ``numpy.random.Generator``.

:func:`bootstrap_ratio` answers "how sure is stat(A) / stat(B)?" for two strategies run on the
same N seeds (arrival schedules): each bootstrap replicate resamples, within every seed, A's
values and B's values with replacement (independently: requests of two runs do not pair up),
pools the seeds, and takes ``stat(pooled A) / stat(pooled B)``. The interval is the percentile
interval of the replicates; the point estimate is the ratio on the data as measured. A verdict
should PASS only when the whole interval meets its bound (:meth:`Interval.within`).

:func:`spread` is the per-seed view: min / median / max of a figure over seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["Interval", "bootstrap_ratio", "bootstrap_stat", "spread", "percentile", "mean", "ratio"]

Stat = Callable[[np.ndarray], float]


def percentile(q: float) -> Stat:
    """The q-th percentile (0..100) as a statistic; ``stat.__name__`` says which."""
    def stat(x: np.ndarray) -> float:
        return float(np.percentile(x, q)) if len(x) else float("nan")
    stat.__name__ = f"p{q:g}"
    return stat


def mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def ratio(a: float, b: float) -> float:
    """a / b with 0/0 = 1 (both none: no difference) and a/0 = inf."""
    if b == 0:
        return 1.0 if a == 0 else float("inf")
    return a / b


@dataclass(frozen=True)
class Interval:
    point: float
    lo: float
    hi: float
    conf: float = 0.95

    def within(self, bound: float) -> bool:
        """True when the whole interval is at most ``bound``."""
        return self.hi <= bound

    def above(self, bound: float) -> bool:
        """True when the whole interval is at least ``bound``."""
        return self.lo >= bound

    def __str__(self) -> str:
        return f"{self.point:.3g} [{self.lo:.3g}, {self.hi:.3g}]"


def _groups(x: Sequence[Sequence[float]] | np.ndarray) -> list[np.ndarray]:
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return [x.astype(float)]
    return [np.asarray(g, dtype=float) for g in x]


def _resample(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([g[rng.integers(0, len(g), len(g))] if len(g) else g for g in groups])


def _bounds(reps: np.ndarray, conf: float) -> tuple[float, float]:
    """Percentile interval; outward rounding (lower/higher) so infinite replicates (x / 0) stay inf."""
    reps = reps[~np.isnan(reps)]
    if not len(reps):
        return float("nan"), float("nan")
    q = 50 * (1 - conf)
    return float(np.percentile(reps, q, method="lower")), float(np.percentile(reps, 100 - q, method="higher"))


def bootstrap_ratio(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], stat: Stat,
                    rng: np.random.Generator, n_boot: int = 1000, conf: float = 0.95) -> Interval:
    """Interval of ``stat(A) / stat(B)``; ``a`` and ``b`` hold one array per seed (or one array).

    Rates (e.g. the 429 rate) are means of 0/1 values per attempt; totals per request work with
    ``mean`` as well (the ratio of means = the ratio of sums when both ran the same schedule)."""
    ga, gb = _groups(a), _groups(b)
    if len(ga) != len(gb):
        raise ValueError(f"a has {len(ga)} seeds, b has {len(gb)}")
    point = ratio(stat(np.concatenate(ga)), stat(np.concatenate(gb)))
    reps = np.array([ratio(stat(_resample(ga, rng)), stat(_resample(gb, rng))) for _ in range(n_boot)])
    lo, hi = _bounds(reps, conf)
    return Interval(point, lo, hi, conf)


def bootstrap_stat(a: Sequence[Sequence[float]], stat: Stat, rng: np.random.Generator, n_boot: int = 1000,
                   conf: float = 0.95) -> Interval:
    """Interval of ``stat`` of one strategy, pooled over seeds (same resampling as above)."""
    ga = _groups(a)
    point = stat(np.concatenate(ga))
    reps = np.array([stat(_resample(ga, rng)) for _ in range(n_boot)])
    lo, hi = _bounds(reps, conf)
    return Interval(float(point), lo, hi, conf)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max) over seeds."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        return (float("nan"),) * 3
    return float(v.min()), float(np.median(v)), float(v.max())
