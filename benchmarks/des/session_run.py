"""The ``sessions`` scenario (issue 13): routing strategies on Chutes-shaped multi-turn sessions.

    python -m benchmarks.des --scenario sessions --load 0.6,0.85 --seeds 3 --out benchmarks/out/des-sessions

Every strategy runs on the same session schedules per seed (workload streams of their own). A
strategy label is ``<strategy>[+<affinity>]``: ``+affinity[:c]`` is the proxies' own session
affinity with load bound c (``ROUTING_AFFINITY=true``, run by each replica's ``RoutingCore``),
``sticky`` the registry's pure stickiness (the first chute of the session's rendezvous order,
always; a retry after a 429 goes to the next one). Targets are ratios to
``headroom`` without affinity; intervals are 95% bootstraps pooled over seeds
(:mod:`benchmarks.stats`); a target PASSes only when the whole interval meets it. The hot-spot run
halves the biggest chute's speed a third of the way through the measured sessions.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from benchmarks.des.sessions import SessionConfig, SessionResult
from benchmarks.des.sim import SimConfig, run
from benchmarks.stats import Interval, bootstrap_ratio, mean, percentile, spread
from benchmarks.workload.profiles import profile

__all__ = ["STRATEGIES", "BASELINE", "HOTSPOT", "run_sessions", "session_main", "split_label"]

STRATEGIES = ["headroom+affinity", "headroom", "sticky", "least-utilization", "weighted-shuffle"]
BASELINE = "headroom"
HOTSPOT = ["sticky", "headroom+affinity", "headroom"]
Runs = dict[str, list[SessionResult]]  # label -> one result per seed


def split_label(label: str) -> tuple[str, str | None]:
    strategy, _, affinity = label.partition("+")
    return strategy, affinity or None


def run_sessions(caps: list[int], replicas: int, labels: list[str], load: float, seeds: list[int], sc: SessionConfig,
                 mode: str = "reject", alpha: float = 0.0, changes: list | None = None, log=None) -> Runs:
    out: Runs = {}
    for label in labels:
        strategy, affinity = split_label(label)
        for seed in seeds:
            cfg = SimConfig(caps=caps, strategy=strategy, affinity=affinity, mode=mode, load=load, replicas=replicas,
                            seed=seed, alpha=alpha, sessions=sc, changes=list(changes or []))
            r = run(cfg)
            if log:
                log(f"  sessions load {load} {label} seed {seed}: {r.wall:.1f}s, follow-up TTFT p50 "
                    f"{_p(r.ttft_follow, 50) * r.seconds_per_unit:.2f}s, computed {r.computed_share:.3f}, "
                    f"429 {r.reject_rate:.4f}, one chute {r.one_chute_share:.3f}")
            out.setdefault(label, []).append(r)  # type: ignore[arg-type]
    return out


def _p(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else math.nan


def _pool(rs: list[SessionResult], attr: str, seconds: bool = True) -> np.ndarray:
    parts = [getattr(r, attr) * (r.seconds_per_unit if seconds else 1.0) for r in rs]
    return np.concatenate(parts) if parts else np.zeros(0)


def _rejects(r: SessionResult) -> np.ndarray:
    return np.r_[np.ones(r.rejected), np.zeros(r.attempts - r.rejected)]


def table(runs: Runs) -> list[str]:
    lines = ["| strategy | TTFT first p50 / p95 / p99 (s) | TTFT follow-up p50 / p95 / p99 (s) | latency p50 / p99 (s) | "
             "prompt computed | 429 rate | failed turns | max/mean load | one chute | utilization | unfinished | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, rs in runs.items():
        f, u, e = _pool(rs, "ttft_first"), _pool(rs, "ttft_follow"), _pool(rs, "latencies")
        att, rej, fail = (sum(getattr(r, k) for r in rs) for k in ("attempts", "rejected", "failed"))
        tot, comp = sum(r.prompt_total for r in rs), sum(r.prompt_computed for r in rs)
        multi, one = sum(r.multi_turn for r in rs), sum(r.one_chute for r in rs)
        mm = np.median([r.max_over_mean_load for r in rs])
        lines.append(f"| {label} | {_p(f, 50):.2f} / {_p(f, 95):.2f} / {_p(f, 99):.2f} | "
                     f"{_p(u, 50):.2f} / {_p(u, 95):.2f} / {_p(u, 99):.2f} | {_p(e, 50):.1f} / {_p(e, 99):.1f} | "
                     f"{comp / tot:.3f} | {rej / max(att, 1):.4f} | {fail} | {mm:.3f} | {one / max(multi, 1):.3f} | "
                     f"{np.median([r.utilization for r in rs]):.3f} | {sum(r.unfinished for r in rs)} | "
                     f"{sum(r.wall for r in rs):.0f} |")
    return lines


def spread_table(runs: Runs) -> list[str]:
    lines = ["| strategy | follow-up TTFT p50 (s) | follow-up TTFT p99 (s) | prompt computed | 429 rate | max/mean load | one chute |",
             "|---|---|---|---|---|---|---|"]

    def cell(vals: list[float], f: str = ".3f") -> str:
        lo, mid, hi = spread(vals)
        return f"{mid:{f}} [{lo:{f}}, {hi:{f}}]"

    for label, rs in runs.items():
        lines.append(f"| {label} | {cell([_p(r.ttft_follow, 50) * r.seconds_per_unit for r in rs], '.2f')} | "
                     f"{cell([_p(r.ttft_follow, 99) * r.seconds_per_unit for r in rs], '.2f')} | "
                     f"{cell([r.computed_share for r in rs])} | {cell([r.reject_rate for r in rs], '.4f')} | "
                     f"{cell([r.max_over_mean_load for r in rs])} | {cell([r.one_chute_share for r in rs])} |")
    return lines


def targets(runs: Runs, load: float, n_boot: int = 400, seed: int = 1) -> list[str]:
    """Rows = targets, columns = strategies other than the baseline: value [95% interval] PASS/MISS."""
    base = runs.get(BASELINE)
    others = [k for k in runs if k != BASELINE]
    if base is None or not others:
        return []
    rng = np.random.default_rng(seed)

    def ratio(rs: list[SessionResult], attr: str, stat) -> Interval:
        return bootstrap_ratio([getattr(r, attr) for r in rs], [getattr(r, attr) for r in base], stat, rng, n_boot)

    def fmt(iv: Interval, ok: bool) -> str:
        return f"{iv} {'PASS' if ok else 'MISS'}"

    def rejects(rs: list[SessionResult]) -> str:
        x, y = (sum(r.rejected for r in g) / max(1, sum(r.attempts for r in g)) for g in (rs, base))
        if x < 1e-3 and y < 1e-3:  # a handful of 429s in ~10^5 attempts: a ratio would be noise
            return f"{x:.5f} vs {y:.5f} PASS"
        iv = bootstrap_ratio([_rejects(r) for r in rs], [_rejects(r) for r in base], mean, rng, n_boot)
        return fmt(iv, iv.within(1.1))

    rows = [("follow-up TTFT p50 <= 0.5x", lambda rs: fmt(iv := ratio(rs, "ttft_follow", percentile(50)), iv.within(0.5))),
            ("follow-up TTFT p99 <= 0.8x", lambda rs: fmt(iv := ratio(rs, "ttft_follow", percentile(99)), iv.within(0.8))),
            ("prompt tokens computed <= 0.6x", lambda rs: fmt(iv := ratio(rs, "computed_turns", mean), iv.within(0.6))),
            ("429 rate <= 1.1x (both under 0.1%: shown as rates)", lambda rs: rejects(rs)),
            ("max/mean load <= 1.25 (max over seeds)",
             lambda rs: f"{max(r.max_over_mean_load for r in rs):.3f} {'PASS' if max(r.max_over_mean_load for r in rs) <= 1.25 else 'MISS'}")]
    if abs(load - 0.6) < 1e-9:
        rows.append((">= 90% of multi-turn sessions on one chute (min over seeds)",
                     lambda rs: f"{min(r.one_chute_share for r in rs):.3f} {'PASS' if min(r.one_chute_share for r in rs) >= 0.9 else 'MISS'}"))
    lines = ["| target (vs headroom without affinity) | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
    for name, f in rows:
        lines.append(f"| {name} | " + " | ".join(f(runs[k]) for k in others) + " |")
    return lines


def hotspot_targets(runs: Runs, n_boot: int = 400) -> list[str]:
    a, s = runs.get("headroom+affinity"), runs.get("sticky")
    if not a or not s:
        return []
    rng = np.random.default_rng(2)
    rows = [("429 rate", bootstrap_ratio([_rejects(r) for r in a], [_rejects(r) for r in s], mean, rng, n_boot)),
            ("follow-up TTFT p99", bootstrap_ratio([r.ttft_follow for r in a], [r.ttft_follow for r in s], percentile(99), rng, n_boot)),
            ("latency p99", bootstrap_ratio([r.latencies for r in a], [r.latencies for r in s], percentile(99), rng, n_boot))]
    lines = ["| affinity / stickiness under the hot spot | ratio [95%] | target < 1 |", "|---|---|---|"]
    return lines + [f"| {n} | {iv} | {'PASS' if iv.hi < 1.0 else 'MISS'} |" for n, iv in rows]


def session_main(a: argparse.Namespace, caps: list[int], replicas: int, log) -> list[str]:
    """Runs the scenario and returns the report's lines (plots written when ``a.out`` is set)."""
    loads = [float(x) for x in a.load.split(",")]
    seeds = [7 + i for i in range(a.seeds)]
    labels = a.strategies.split(",") if a.strategies else STRATEGIES
    sc = SessionConfig(profile=a.profile, n_sessions=a.sessions, warmup_sessions=max(1, a.sessions // 5),
                       cache_tokens_per_slot=a.cache_per_slot)
    p = profile(a.profile)
    t0 = time.perf_counter()
    lines = ["## Scenario sessions", "",
             f"{len(caps)} chutes, slots {caps if len(caps) <= 10 else f'{sum(caps)} total'}, R={replicas}; profile "
             f"{a.profile} ({p.chain.model}: {p.mean_turns:.2f} turns per session, ~{p.chain.mean_input_tokens:,.0f} input "
             f"tokens per request); {sc.n_sessions} measured sessions after {sc.warmup_sessions} warm-up ones per run; "
             f"seeds {seeds}; {a.session_mode} mode; alpha {a.alpha}; prefill {sc.prefill_rate:,.0f} tokens/s, decode "
             f"{sc.tps:g} tokens/s, cache {sc.cache_tokens_per_slot:,.0f} tokens per slot. Times in seconds "
             "(one DES unit = the mean uncached service time of a turn).", ""]
    out: dict[str, Runs] = {}
    for load in loads:
        runs = run_sessions(caps, replicas, labels, load, seeds, sc, a.session_mode, a.alpha, log=log)
        out[f"load {load}"] = runs
        lines += [f"### Load {load}", ""] + table(runs) + ["", "Per-seed spread: median [min, max]", ""]
        lines += spread_table(runs) + ["", "Targets", ""] + targets(runs, load) + [""]
    if not a.no_hotspot:
        load = loads[0]
        big = int(np.argmax(caps))
        lam = load * sum(caps) / p.mean_turns
        t_hot = (sc.warmup_sessions + sc.n_sessions / 3) / lam
        hot = run_sessions(caps, replicas, [x for x in HOTSPOT if x in labels] or HOTSPOT, load, seeds, sc,
                           a.session_mode, a.alpha, changes=[(t_hot, "speed", big, 0.5)], log=log)
        out["hotspot"] = hot
        lines += [f"### Hot spot: load {load}, chute {big} ({caps[big]} slots) at half speed from t={t_hot:.0f}", ""]
        lines += table(hot) + [""] + hotspot_targets(hot) + [""]
    if a.out:
        from benchmarks.des.plots import session_plots

        a.out.mkdir(parents=True, exist_ok=True)
        for tag, runs in out.items():
            first = {k: v[0] for k, v in runs.items()}
            share = ("sticky", "headroom+affinity") if tag == "hotspot" else ()
            for f in session_plots(first, a.out, tag.replace(" ", "-"), share):
                lines.append(f"![{f}]({f})")
    lines.append(f"\n(sessions scenario wall time {time.perf_counter() - t0:.0f} s)")
    return lines
