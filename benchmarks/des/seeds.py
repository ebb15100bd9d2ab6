"""``--seeds N`` for the request scenarios (issue 14): per-seed spread and pooled bootstrap intervals.

Each strategy runs on the same N schedules: seeds 7, 8, ... with ``common_streams`` (arrivals,
replica choice and service demands on streams of their own), so a seed's requests are the same
for every strategy. Those runs differ from the single default run (one shared stream), whose
figures stay as they were.
"""
from __future__ import annotations

import numpy as np

from benchmarks.des.config import SimResult
from benchmarks.stats import bootstrap_ratio, mean, percentile, spread

__all__ = ["seed_spread", "seed_targets"]

BySeed = dict[tuple[str, str], list[SimResult]]


def _cell(vals: list[float], f: str) -> str:
    lo, mid, hi = spread(vals)
    return f"{mid:{f}} [{lo:{f}}, {hi:{f}}]"


def seed_spread(results: BySeed) -> list[str]:
    lines = ["| mode | strategy | p50 | p99 | 429 rate | failed share |", "|---|---|---|---|---|---|"]
    for (mode, s), rs in results.items():
        lines.append(f"| {mode} | {s} | {_cell([r.pct(50) for r in rs], '.4g')} | {_cell([r.pct(99) for r in rs], '.4g')} | "
                     f"{_cell([r.reject_rate for r in rs], '.4f')} | {_cell([r.failed / r.n for r in rs], '.4f')} |")
    return lines


def _ind(count: int, total: int) -> np.ndarray:
    return np.r_[np.ones(count), np.zeros(max(0, total - count))]


def seed_targets(results: BySeed, n_boot: int = 300) -> list[str]:
    """The scenario's ratio targets with a 95% interval pooled over seeds (PASS = whole interval)."""
    rng = np.random.default_rng(1)
    lines = ["| target | ratio [95% pooled bootstrap] | per-seed min / median / max | |", "|---|---|---|---|"]

    def row(name: str, a: list, b: list, stat, per_seed: list[float], bound: float) -> None:
        iv = bootstrap_ratio(a, b, stat, rng, n_boot)
        lo, mid, hi = spread(per_seed)
        lines.append(f"| {name} <= {bound} | {iv} | {lo:.3f} / {mid:.3f} / {hi:.3f} | {'PASS' if iv.within(bound) else 'MISS'} |")

    hq, hr = results.get(("queue", "headroom")), results.get(("reject", "headroom"))
    for other, bound in (("shuffle", 0.5), ("least-utilization", 0.7), ("weighted-shuffle", 1.0), ("oracle-p2c", 1.3)):
        o = results.get(("queue", other))
        if hq and o:
            row(f"p99 headroom / {other} (queue)", [r.latencies for r in hq], [r.latencies for r in o], percentile(99),
                [x.pct(99) / y.pct(99) for x, y in zip(hq, o)], bound)
    for other, bound in (("least-utilization", 0.2), ("weighted-shuffle", 0.5)):
        o = results.get(("reject", other))
        if hr and o:
            row(f"429 rate headroom / {other} (reject)", [_ind(r.rejected, r.attempts) for r in hr],
                [_ind(r.rejected, r.attempts) for r in o], mean,
                [x.reject_rate / y.reject_rate if y.reject_rate else float("inf") for x, y in zip(hr, o)], bound)
    return lines
