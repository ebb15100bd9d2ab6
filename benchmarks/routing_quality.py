#!/usr/bin/env python
"""Routing quality on the real stack: simulator + poller + Redis + 2 proxy replicas, open-loop load.

Compares routing strategies IN ONE RUN, one after the other, each on a freshly started stack
(new simulator, poller, proxy replicas, Redis key prefix) and the SAME seeded arrival schedule:

    headroom            our default (ROUTING_STRATEGY=headroom: more free slots wins, sessions keep their chute)
    headroom-slots      headroom without sessions (the estimator alone)
    least-utilization   the seed's rule: argmin of the snapshot's utilization
    shuffle             unweighted random (what stock LiteLLM does)
    weighted-shuffle    random in proportion to capacity (the fair baseline)
    least-busy          LiteLLM's own least-busy (ROUTING_STRATEGY=passthrough + routing_strategy: least-busy)

Opt-in ablations: --strategies headroom,headroom-no-slow: headroom with ROUTING_SLOW_RATIO=0
(slow chutes not treated as overflow); --reject-share 0.5 --strategies headroom,headroom-no-prior:
one 32-slot chute refuses half its requests at any load, and headroom with
ROUTING_RATE_LIMIT_PRIOR=0 ignores the Utilization API's rate_limit_ratio (only its own 429s);
--strategies headroom-no-affinity,headroom-slots: headroom with ROUTING_AFFINITY=false (every
request here is its own conversation, which headroom would otherwise first offer to its session
key's chute); headroom-fraction: ROUTING_FREE_FRACTION=true (free fraction among chutes with a
free slot instead of free slots).

Fleet: 8 chutes whose capacities (instances x concurrency) differ tenfold, mean idle service ~8 s
(few, slow tokens: the proxies' CPU must not be the bottleneck on 2 shared cores). The
utilization refresh lag is 30 s (--refresh, Chutes: 30-120 s) plus up to --poll-interval.
Default SIM_TIME_SCALE 1 (real time): with more cores, --time-scale 0.25 --refresh 7.5 runs the
same experiment 4x faster at 4x the request rate (refresh scaled by the same factor). Load: Poisson arrivals (half streamed, half plain) at --load of the
fleet's capacity, a step to --step-load at 35% of the run, and one large chute degraded
(decode speed x --degrade-speed) at 60%. Capacity = the request rate that keeps every slot busy,
slots / (mean idle service time x (1 + alpha)) (the simulator slows a full chute by 1 + alpha).

Measured per strategy: client latency and time to first token (p50/p95/p99), 429s seen by
clients, 429s the simulator answered (upstream attempts), failures, each chute's share of the
in-flight load over time vs its share of capacity, and the CPU the proxies used (so the reader
can see the proxies were not the bottleneck). Writes report.md, results.json and PNGs to --out.

Seeds (issue 14): ``--seeds N`` runs every strategy on N arrival schedules (seeds --seed ..
--seed+N-1). Ratios are reported with 95% bootstrap intervals (requests and upstream attempts
resampled within each seed, pooled; ``benchmarks/stats.py``), and a target PASSes only when the
whole interval meets it. The per-chute tables and plots show the first seed.

    .venv/bin/python benchmarks/routing_quality.py                      # ~23 min, all 6 strategies
    .venv/bin/python benchmarks/routing_quality.py --seeds 3 --duration 100 \
        --strategies headroom,headroom-slots,weighted-shuffle,least-utilization   # ~35 min, issue 14
    .venv/bin/python benchmarks/routing_quality.py --duration 60 --strategies headroom,shuffle
    .venv/bin/python benchmarks/routing_quality.py --smoke              # ~1 min, used by the tests
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, which puts the repository (benchmarks.*) and src/ on the path

from common import (ROOT, MASTER_KEY, CpuMeter, fmt, litellm_config, load_average, log, machine_info,  # noqa: E402
                    md_table, pct, ratio, start_all)

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.stats import Interval, bootstrap_ratio, mean, percentile  # noqa: E402
from chutes_lb.devstack import PollerProcess, ProxyProcess, metric_value  # noqa: E402
from chutes_lb.localstack import RedisServer  # noqa: E402
from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

#: strategy label -> (ROUTING_STRATEGY of our hook, LiteLLM router_settings.routing_strategy)
STRATEGIES: dict[str, tuple[str, str]] = {
    "headroom": ("headroom", "simple-shuffle"),
    "headroom-slots": ("headroom-slots", "simple-shuffle"),
    "least-utilization": ("least-utilization", "simple-shuffle"),
    "shuffle": ("shuffle", "simple-shuffle"),
    "weighted-shuffle": ("weighted-shuffle", "simple-shuffle"),
    "least-busy": ("passthrough", "least-busy"),
}
DEFAULT = "headroom"
#: opt-in ablations: label -> (hook strategy, LiteLLM strategy, extra proxy environment)
ABLATIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "headroom-no-slow": ("headroom", "simple-shuffle", {"ROUTING_SLOW_RATIO": "0"}),
    # the Utilization API's rate_limit_ratio ignored: only each worker's own 429s (with --reject-share)
    "headroom-no-prior": ("headroom", "simple-shuffle", {"ROUTING_RATE_LIMIT_PRIOR": "0"}),
    # every request picked alone: here each request is its own conversation, so with affinity on
    # headroom first offers it to its key's rendezvous chute (a capacity-weighted hash) while that
    # chute is within its load bound, and the estimator decides only the rest
    "headroom-no-affinity": ("headroom", "simple-shuffle", {"ROUTING_AFFINITY": "false"}),
    # issue 14's free-fraction rule (the default from commit 9813080 until it measured worse than free slots)
    "headroom-fraction": ("headroom", "simple-shuffle", {"ROUTING_FREE_FRACTION": "true"}),
}

#: Targets of issue 6 that apply to the real stack: (baseline, metric, max ratio default/baseline).
TARGETS: list[tuple[str, str, float]] = [
    ("shuffle", "p99_latency", 0.5),
    ("least-utilization", "p99_latency", 0.7),
    ("least-utilization", "upstream_429_rate", 0.2),
    ("weighted-shuffle", "upstream_429_rate", 0.5),
]
#: Targets of issue 14 (>= 3 seeds pooled, the upper bound of the 95% interval).
TARGETS_14: list[tuple[str, str, float]] = [
    ("weighted-shuffle", "p50_ttft", 1.0),
    ("weighted-shuffle", "p95_ttft", 1.0),
    ("weighted-shuffle", "p50_latency", 1.0),
    ("weighted-shuffle", "p95_latency", 1.0),
    ("weighted-shuffle", "p99_latency_without_degraded_chute", 1.0),
    ("weighted-shuffle", "upstream_429_rate", 0.5),
    ("least-utilization", "upstream_429_rate", 0.2),
]
#: metric -> (raw array in a run, statistic) for the intervals
RAW = {"p50_ttft": ("_ttft", 50), "p95_ttft": ("_ttft", 95), "p99_ttft": ("_ttft", 99),
       "p50_latency": ("_lat", 50), "p95_latency": ("_lat", 95), "p99_latency": ("_lat", 99),
       "p99_latency_without_degraded_chute": ("_lat_others", 99), "upstream_429_rate": ("_rejects", None),
       "client_429_rate": ("_client429", None)}


# Fleet: ttft ~2.3 s mean, ~23 tokens at ~4 tok/s: mean idle service ~8 s. Few, slow tokens on
# purpose: every streamed token is a chunk LiteLLM parses in Python, and the proxy's CPU must not
# be the bottleneck on 2 shared cores.
FLEET_DEFAULTS = {
    "concurrency": 4,
    "ttft": {"median": 2.0, "sigma": 0.5, "max": 20.0},
    "tps": {"median": 4.0, "sigma": 0.2, "min": 1.0},
    "output_tokens": {"median": 20, "sigma": 0.5, "max": 80},
}
INSTANCES = [1, 2, 2, 4, 4, 8, 8, 10]  # x concurrency 4 = 4..40 slots: tenfold
ALPHA = 0.5
DEGRADED_INDEX = 5  # an 8-instance chute (32 slots)
REJECT_INDEX = 6  # the other 8-instance chute: with --reject-share, it refuses that share at any load
MAX_TOKENS = 400


def fleet(concurrency: int) -> list[dict[str, Any]]:
    return [{"chute_id": f"{i + 1:08x}-0000-5000-8000-{i + 1:012x}", "name": f"bench/c{i + 1}-{n * concurrency}slots",
             "instances": n, "concurrency": concurrency} for i, n in enumerate(INSTANCES)]


def mean_service_seconds(time_scale: float, rng: np.random.Generator, n: int = 200_000) -> float:
    """Mean idle service time (wall seconds) of the fleet's distributions, by Monte Carlo."""
    d = FLEET_DEFAULTS
    ttft = np.minimum(d["ttft"]["median"] * np.exp(d["ttft"]["sigma"] * rng.standard_normal(n)), d["ttft"]["max"])
    tps = np.maximum(d["tps"]["median"] * np.exp(d["tps"]["sigma"] * rng.standard_normal(n)), d["tps"]["min"])
    tok = np.clip(np.round(d["output_tokens"]["median"] * np.exp(d["output_tokens"]["sigma"] * rng.standard_normal(n))),
                  1, min(d["output_tokens"]["max"], MAX_TOKENS))
    return float(np.mean(ttft + tok / tps)) * time_scale


# ---------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """Everything that must be identical for every strategy."""

    duration: float
    rate1: float
    rate2: float
    step_at: float
    degrade_at: float
    degrade_speed: float
    stream_share: float
    seed: int
    arrivals: list[float] = field(default_factory=list)
    streamed: list[bool] = field(default_factory=list)

    def build(self) -> "Plan":
        rng = np.random.default_rng(self.seed)
        t, times = 0.0, []
        while True:
            rate = self.rate1 if t < self.step_at else self.rate2
            nxt = t + rng.exponential(1.0 / rate)
            if t < self.step_at <= nxt:  # memoryless: restart the clock at the step
                t = self.step_at
                continue
            if nxt >= self.duration:
                break
            t = nxt
            times.append(t)
        self.arrivals = times
        self.streamed = list(rng.random(len(times)) < self.stream_share)
        return self


@dataclass
class Result:
    sched: float
    lag: float
    replica: int
    stream: bool
    status: int = 0  # -1 transport error
    latency: float = math.nan
    ttft: float = math.nan
    chute: str = ""
    error: str = ""


# ---------------------------------------------------------------------------- load generator
async def tracked(counter: list[int], coro: Any) -> None:
    """Run ``coro`` while counting it in ``counter[0]`` (requests the client has open)."""
    counter[0] += 1
    try:
        await coro
    finally:
        counter[0] -= 1


async def one_request(session: aiohttp.ClientSession, url: str, stream: bool, res: Result, timeout: float) -> None:
    # each request its own conversation (a prompt of its own): with one shared prompt the proxies
    # would key the whole run as one session, and affinity, not the estimator, would place it
    body = {"model": "chutes-models", "messages": [{"role": "user", "content": f"benchmark request {res.sched:.6f}"}],
            "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
    t0 = time.perf_counter()
    try:
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            res.chute = resp.headers.get("x-litellm-model-id", "")
            if resp.status != 200:
                res.status = resp.status
                res.error = (await resp.text())[:1000]
                res.latency = time.perf_counter() - t0
                return
            if not stream:
                await resp.read()
            else:
                async for line in resp.content:
                    if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                        continue
                    if b'"error"' in line[:40]:
                        res.status, res.error = 599, line[:200].decode(errors="replace")
                    elif math.isnan(res.ttft):
                        chunk = json.loads(line[6:])
                        choices = chunk.get("choices") or []
                        if choices and (choices[0].get("delta") or {}).get("content"):
                            res.ttft = time.perf_counter() - t0
            res.status = res.status or 200
            res.latency = time.perf_counter() - t0
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
        res.status, res.error = -1, type(exc).__name__
        res.latency = time.perf_counter() - t0


async def monitor(sim: SimulatorProcess, t0: float, stop: asyncio.Event, out: list[dict[str, Any]], client_open: list[int],
                  interval: float = 1.0) -> None:
    """Sample the simulator's admin state (in-flight, capacity, counters per chute) every second,
    and the requests the client has open (open minus the simulator's in-flight = held in the proxies)."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.get(sim.base_url + "/admin/state", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    state = await r.json()
                out.append({"t": time.perf_counter() - t0, "client_open": client_open[0], "chutes": [
                    {"id": c["chute_id"], "in_flight": c["in_flight"], "capacity": c["instances"] * c["concurrency"],
                     "served": c["served"], "rejected_429": c["rejected_429"]} for c in state["chutes"]]})
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass


async def drive(plan: Plan, urls: list[str], sim: SimulatorProcess, degrade_chute: str, timeout: float) -> tuple[list[Result], list[dict[str, Any]]]:
    """Replay the plan's arrival schedule open-loop, round-robin over the proxy replicas."""
    results: list[Result] = []
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        client_open = [0]
        mon = asyncio.create_task(monitor(sim, t0, stop, samples, client_open))
        tasks: list[asyncio.Task[None]] = []
        degraded = step_logged = False
        next_progress = 10.0
        for i, (at, stream) in enumerate(zip(plan.arrivals, plan.streamed)):
            now = time.perf_counter() - t0
            if not degraded and at >= plan.degrade_at:
                await loop.run_in_executor(None, lambda: sim.set_chute(degrade_chute, speed=plan.degrade_speed))
                log(f"  t={now:5.1f}s degraded {degrade_chute} (speed x{plan.degrade_speed})")
                degraded = True
            if not step_logged and at >= plan.step_at:
                log(f"  t={now:5.1f}s load step {plan.rate1:.1f} -> {plan.rate2:.1f} req/s")
                step_logged = True
            if at > now:
                await asyncio.sleep(at - now)
            now = time.perf_counter() - t0
            if now >= next_progress:
                done = sum(t.done() for t in tasks)
                log(f"  t={now:5.1f}s sent {i} done {done} open {i - done}")
                next_progress += 10.0
            res = Result(sched=at, lag=now - at, replica=i % len(urls), stream=stream)
            results.append(res)
            tasks.append(asyncio.create_task(tracked(client_open, one_request(session, urls[res.replica], stream, res, timeout))))
        log(f"  schedule done at t={time.perf_counter() - t0:.1f}s; draining {sum(not t.done() for t in tasks)} open requests")
        await asyncio.wait(tasks, timeout=timeout + 10)
        stop.set()
        await mon
    return results, samples


# ---------------------------------------------------------------------------- one strategy
def run_strategy(name: str, plan: Plan, args: argparse.Namespace, chutes: list[dict[str, Any]], redis: RedisServer,
                 workdir: Path) -> dict[str, Any]:
    hook_strategy, litellm_strategy, extra_env = ABLATIONS.get(name) or (*STRATEGIES[name], {})
    log(f"== {name}: starting simulator, poller, {args.replicas} proxy replicas x {args.workers} workers")
    sdir = workdir / name
    config = litellm_config(sdir, chutes, routing_strategy=litellm_strategy, with_hook=True)
    prefix = f"bench-{name}-{os.getpid()}"
    with ExitStack() as stack:
        sim = SimulatorProcess({"alpha": ALPHA, "defaults": {k: v for k, v in FLEET_DEFAULTS.items() if k != "concurrency"},
                                "chutes": chutes}, time_scale=args.time_scale, refresh_seconds=args.refresh,
                               seed=plan.seed, env={"LOG_LEVEL": "warning"})
        start_all(stack, [sim])
        poller = PollerProcess(sim.base_url, redis.url, prefix, config=config, interval=args.poll_interval,
                               env={"LOG_LEVEL": "warning"}, log_dir=str(sdir))
        proxies = [ProxyProcess(sim.openai_base, redis.url, MASTER_KEY, prefix, config=config, workers=args.workers,
                                strategy=hook_strategy, env={"LOG_LEVEL": "warning", **extra_env},
                                log_dir=str(sdir / f"proxy{r}"))
                   for r in range(args.replicas)]
        for r, p in enumerate(proxies):
            (sdir / f"proxy{r}").mkdir(parents=True, exist_ok=True)
        start_all(stack, [poller, *proxies])
        urls = [p.base_url + "/v1/chat/completions" for p in proxies]
        # warm-up: one plain and one streamed request per replica (lazy imports, connection pools)
        asyncio.run(_warmup(urls))
        sim.reset()
        sim.refresh_utilization()
        before = {c["chute_id"]: c for c in sim.state()["chutes"]}
        degrade_chute = chutes[DEGRADED_INDEX]["name"]
        meter = CpuMeter({"simulator": sim.process.pid, "poller": poller.process.pid,
                          **{f"proxy{r}": p.process.pid for r, p in enumerate(proxies)}}).start()
        cpu_client0 = time.process_time()
        log(f"  load: {len(plan.arrivals)} requests over {plan.duration:.0f}s")
        results, samples = asyncio.run(drive(plan, urls, sim, degrade_chute, args.request_timeout))
        cpu = meter.stop()
        cpu["client_cores"] = (time.process_time() - cpu_client0) / cpu["wall_seconds"]
        after = {c["chute_id"]: c for c in sim.state()["chutes"]}
        proxy_rl = 0.0
        for p in proxies:
            try:
                proxy_rl += metric_value(p.metrics_text(), "chutes_lb_upstream_requests_total", {"outcome": "rate_limited"})
            except OSError:
                proxy_rl = math.nan
    return summarize(name, plan, args, chutes, results, samples, before, after, cpu, proxy_rl)


async def _warmup(urls: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for url in urls:
            for stream in (False, True):
                res = Result(0, 0, 0, stream)
                await one_request(session, url, stream, res, 60)
                if res.status != 200:
                    raise RuntimeError(f"warm-up request to {url} failed: {res.status} {res.error}")


# ---------------------------------------------------------------------------- numbers
def summarize(name: str, plan: Plan, args: argparse.Namespace, chutes: list[dict[str, Any]], results: list[Result],
              samples: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any], cpu: dict[str, float],
              proxy_rl: float) -> dict[str, Any]:
    ok = [r for r in results if r.status == 200]
    lat = [r.latency for r in ok]
    ttft = [r.ttft for r in ok if r.stream and not math.isnan(r.ttft)]
    n = len(results)
    client_429 = sum(r.status == 429 for r in results)
    budget_429 = sum(r.status == 429 and "retry budget exhausted" in r.error for r in results)
    failed = n - len(ok)
    served = {cid: after[cid]["served"] - before[cid]["served"] for cid in after}
    rejected = {cid: after[cid]["rejected_429"] - before[cid]["rejected_429"] for cid in after}
    attempts = sum(served.values()) + sum(rejected.values())
    slots = {c["chute_id"]: c["instances"] * c["concurrency"] for c in chutes}
    total_slots = sum(slots.values())
    # mean share of in-flight load per chute while load was on
    inflight_sum = {cid: 0.0 for cid in slots}
    for s in samples:
        for c in s["chutes"]:
            inflight_sum[c["id"]] += c["in_flight"]
    total_inflight = sum(inflight_sum.values()) or 1.0
    lat_by_chute: dict[str, list[float]] = {}
    for r in ok:
        lat_by_chute.setdefault(r.chute, []).append(r.latency)
    per_chute = [{
        "chute": c["name"], "slots": slots[c["chute_id"]], "capacity_share": slots[c["chute_id"]] / total_slots,
        "inflight_share": inflight_sum[c["chute_id"]] / total_inflight,
        "served": served[c["chute_id"]], "upstream_429": rejected[c["chute_id"]],
        "served_share": served[c["chute_id"]] / max(sum(served.values()), 1),
        "p99_latency": pct(lat_by_chute.get(c["chute_id"], []), 99),
    } for c in chutes]
    degraded_id = chutes[DEGRADED_INDEX]["chute_id"]
    lat_others = [r.latency for r in ok if r.chute != degraded_id]
    lags = [r.lag for r in results]
    held = [s["client_open"] - sum(c["in_flight"] for c in s["chutes"]) for s in samples]
    out = {
        "strategy": name, "requests": n, "ok": len(ok), "failed": failed, "client_429": client_429,
        "client_429_rate": client_429 / n if n else math.nan,
        "client_429_budget": budget_429,  # of client_429: a retry the retry budget refused (the rest: every attempt 429)
        "other_failures": {str(k): v for k, v in _count(r.status for r in results if r.status not in (200, 429)).items()},
        "p50_latency": pct(lat, 50), "p95_latency": pct(lat, 95), "p99_latency": pct(lat, 99),
        "p99_latency_without_degraded_chute": pct(lat_others, 99),
        "p50_ttft": pct(ttft, 50), "p95_ttft": pct(ttft, 95), "p99_ttft": pct(ttft, 99),
        "upstream_attempts": attempts, "upstream_429": sum(rejected.values()),
        "upstream_429_rate": sum(rejected.values()) / attempts if attempts else math.nan,
        "proxy_rate_limited_outcomes": proxy_rl,
        "send_lag_p99": pct(lags, 99), "send_lag_max": max(lags) if lags else math.nan,
        "held_in_proxy_mean": float(np.mean(held)) if held else math.nan, "held_in_proxy_max": max(held) if held else math.nan,
        "cpu": cpu, "per_chute": per_chute, "samples": samples,
        "by_chute_requests": _count(r.chute for r in ok),
        "_lat": lat, "_ttft": ttft, "_results": results,  # for the plots, intervals and requests.csv, not the JSON
        "_lat_others": lat_others, "_rejects": np.r_[np.ones(sum(rejected.values())), np.zeros(sum(served.values()))],
        "_client429": np.array([float(r.status == 429) for r in results]), "seed": plan.seed,
    }
    log(f"  {name}: {n} requests, ok {len(ok)}, client 429 {client_429} ({budget_429} retry budget), failed {failed}, p50/p99 latency "
        f"{fmt(out['p50_latency'])}/{fmt(out['p99_latency'])} s, upstream 429 {out['upstream_429']}/{attempts}, "
        f"proxy CPU {sum(v for k, v in cpu.items() if k.startswith('proxy')):.2f} cores, machine busy {cpu['machine_busy_fraction']:.0%}")
    return out


def _count(items: Any) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for x in items:
        counts[x] = counts.get(x, 0) + 1
    return counts


def interval_of(all_runs: dict[str, list[dict[str, Any]]], name: str, base: str, metric: str, rng: np.random.Generator) -> Interval:
    """name / base of ``metric``, pooled over the seeds, with a 95% bootstrap interval."""
    key, q = RAW[metric]
    a, b = [np.asarray(r[key], dtype=float) for r in all_runs[name]], [np.asarray(r[key], dtype=float) for r in all_runs[base]]
    if not all(len(x) for x in a + b):
        return Interval(math.nan, math.nan, math.nan)
    if q is None and not any(x.sum() for x in a + b):
        return Interval(1.0, 1.0, 1.0)  # none under either: no difference
    return bootstrap_ratio(a, b, mean if q is None else percentile(q), rng)


def evaluate_targets(all_runs: dict[str, list[dict[str, Any]]], targets: list[tuple[str, str, float]],
                     rng: np.random.Generator, *, no_client_429s: bool = False) -> list[dict[str, Any]]:
    """PASS/MISS of each target whose baseline was run: PASS only when the whole 95% interval of
    default / baseline meets the bound; with a likely reason for a miss. ``no_client_429s``: also
    the target "the default lets no 429 through to a client" (issue 14, with least-utilization run)."""
    out = []
    d = all_runs.get(DEFAULT)
    for base, metric, limit in targets:
        if d is None or base not in all_runs:
            continue
        iv = interval_of(all_runs, DEFAULT, base, metric, rng)
        pooled_d, pooled_b = _pooled(d, metric), _pooled(all_runs[base], metric)
        if metric.endswith("429_rate") and pooled_d == 0 and pooled_b == 0:
            verdict, reason = "n/a", "no 429s at all under either strategy: nothing to reduce at this load"
        elif iv.within(limit):
            verdict, reason = "PASS", ""
        elif iv.point <= limit:
            verdict, reason = "MISS", "the point estimate meets the target but the 95% interval does not: not shown at this sample size"
        else:
            verdict, reason = "MISS", _miss_reason(base, metric, {metric: pooled_d, "upstream_429_rate": _pooled(d, "upstream_429_rate")},
                                                   {metric: pooled_b, "upstream_429_rate": _pooled(all_runs[base], "upstream_429_rate")})
        out.append({"baseline": base, "metric": metric, "target": f"<= {limit}x", "ratio": iv.point, "interval": [iv.lo, iv.hi],
                    "verdict": verdict, "reason": reason})
    if d is not None and "least-utilization" in all_runs and no_client_429s:
        c429 = sum(r["client_429"] for r in d)
        out.append({"baseline": "least-utilization", "metric": "client 429s", "target": "= 0", "ratio": float(c429),
                    "interval": [float(c429), float(c429)], "verdict": "PASS" if c429 == 0 else "MISS",
                    "reason": "" if c429 == 0 else "every retry of some request met a full or held chute"})
    return out


def _pooled(rs: list[dict[str, Any]], metric: str) -> float:
    key, q = RAW[metric]
    x = np.concatenate([np.asarray(r[key], dtype=float) for r in rs]) if rs else np.zeros(0)
    if not len(x):
        return math.nan
    return float(np.mean(x)) if q is None else float(np.percentile(x, q))


def _miss_reason(base: str, metric: str, d: dict[str, Any], b: dict[str, Any]) -> str:
    if metric == "upstream_429_rate" and b[metric] < 0.01:
        return (f"the baseline itself rarely hits a full chute ({b[metric]:.2%} of attempts): too little saturation at this "
                "load/refresh lag for a ratio to mean much")
    if metric == "p99_latency" and b["upstream_429_rate"] < 0.02:
        return ("the baseline's tail is service time, not queueing or retries: the simulator answers 429 instead of "
                "queueing, so a misrouted request costs one fast retry, not a long wait")
    if metric == "p99_latency":
        return ("p99 is dominated by the service-time distribution and the slowed chute, which every strategy pays for; "
                "429 retries add only one round trip each")
    return "default and baseline saturate chutes similarly at this load; see per-chute shares"


# ---------------------------------------------------------------------------- report
def write_report(out_dir: Path, all_runs: dict[str, list[dict[str, Any]]], plan: Plan, args: argparse.Namespace, info: dict[str, str],
                 chutes: list[dict[str, Any]], capacity: float, service: float) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {name: rs[0] for name, rs in all_runs.items()}  # the first seed: per-strategy and per-chute tables
    rng = np.random.default_rng(0)
    targets = evaluate_targets(all_runs, TARGETS, rng)
    targets_14 = evaluate_targets(all_runs, TARGETS_14, rng, no_client_429s=True)
    d = runs.get(DEFAULT)
    lines = [f"# Routing quality on the real stack ({info['date']})", "",
             f"Machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}; load average at start "
             f"{info['load_average_start']}, at end {info.get('load_average_end', 'n/a')}.", "",
             f"Stack: simulator + poller (every {args.poll_interval:g} s) + Redis + {args.replicas} proxy replicas x "
             f"{args.workers} uvicorn workers; client round-robin over the replicas.", "",
             f"Fleet: {len(chutes)} chutes, slots {', '.join(str(c['instances'] * c['concurrency']) for c in chutes)} "
             f"(instances x concurrency; {sum(c['instances'] * c['concurrency'] for c in chutes)} in all), alpha {ALPHA}. "
             f"SIM_TIME_SCALE {args.time_scale:g}: mean idle service {service:.2f} s wall; utilization refresh every "
             f"{args.refresh:g} s wall (= {args.refresh / args.time_scale:.0f} s of model time). Capacity "
             f"{capacity:.1f} req/s = slots / (mean service x (1 + alpha)).", "",
             f"Load: Poisson, seed {plan.seed}, {len(plan.arrivals)} requests in {plan.duration:.0f} s, "
             f"{plan.stream_share:.0%} streamed; {plan.rate1:.1f} req/s ({args.load:.0%} of capacity) then "
             f"{plan.rate2:.1f} req/s ({args.step_load:.0%}) from t={plan.step_at:.0f} s; chute "
             f"{chutes[DEGRADED_INDEX]['name']} decode speed x{plan.degrade_speed} from t={plan.degrade_at:.0f} s."
             + (f" Chute {chutes[REJECT_INDEX]['name']} answers 429 to {args.reject_share:.0%} of requests at any load "
                "(simulator reject_share; the Utilization API reports it as rate_limit_ratio)." if args.reject_share > 0 else ""), "",
             f"Seeds: {', '.join(map(str, args.seed_list))} (every strategy on each arrival schedule); tables per strategy and "
             f"per chute show seed {plan.seed}, ratios and targets pool all seeds with 95% bootstrap intervals.", "",
             f"## Per strategy, seed {plan.seed} (latency and TTFT in seconds, client-measured; TTFT over streamed requests)", ""]
    header = ["strategy", "requests", "p50 lat", "p95 lat", "p99 lat", "p99 lat, not on the slowed chute", "p50 TTFT", "p95 TTFT", "p99 TTFT",
              "client 429", "failed (other)", "upstream 429 / attempts", "upstream 429 rate"]
    rows = []
    for name, r in runs.items():
        rows.append([name, r["requests"], fmt(r["p50_latency"]), fmt(r["p95_latency"]), fmt(r["p99_latency"]),
                     fmt(r["p99_latency_without_degraded_chute"]),
                     fmt(r["p50_ttft"]), fmt(r["p95_ttft"]), fmt(r["p99_ttft"]),
                     f"{r['client_429']} ({r['client_429_rate']:.2%})", r["failed"] - r["client_429"],
                     f"{r['upstream_429']} / {r['upstream_attempts']}", f"{r['upstream_429_rate']:.2%}"])
    lines += [md_table(header, rows), ""]
    lines += ["Client 429s per seed, and of them how many a retry the retry budget refused (the others: every attempt "
              "met a 429):", "",
              md_table(["strategy", *[f"seed {s}" for s in args.seed_list], "all seeds"],
                       [[name, *[f"{r['client_429']} ({r.get('client_429_budget', 0)} budget)" for r in rs],
                         f"{sum(r['client_429'] for r in rs)} ({sum(r.get('client_429_budget', 0) for r in rs)} budget)"]
                        for name, rs in all_runs.items()]), ""]
    if d is not None:
        lines += [f"## Ratios: {DEFAULT} / strategy (below 1 = {DEFAULT} better)", ""]
        rows = [[name, fmt(ratio(d["p50_latency"], r["p50_latency"])), fmt(ratio(d["p99_latency"], r["p99_latency"])),
                 fmt(ratio(d["p99_ttft"], r["p99_ttft"])), fmt(ratio(d["client_429_rate"], r["client_429_rate"])),
                 fmt(ratio(d["upstream_429_rate"], r["upstream_429_rate"]))]
                for name, r in runs.items() if name != DEFAULT]
        lines += [md_table(["vs", "p50 latency", "p99 latency", "p99 TTFT", "client 429 rate", "upstream 429 rate"], rows), ""]
    subject = DEFAULT if DEFAULT in all_runs else next(iter(all_runs), None)  # an ablation run: its first strategy
    if subject is not None and len(all_runs) > 1:
        lines += [f"## Ratios {subject} / strategy, pooled over {len(args.seed_list)} seed(s): point [95% interval]", ""]
        metrics = ["p50_ttft", "p95_ttft", "p50_latency", "p95_latency", "p99_latency_without_degraded_chute", "upstream_429_rate",
                   "client_429_rate"]
        rows = [[name, *(str(interval_of(all_runs, subject, name, m, rng)) for m in metrics)] for name in all_runs if name != subject]
        lines += [md_table(["vs", *metrics], rows), ""]
    for title, ts in (("Targets of issue 6 that apply here (429 rate = upstream attempts answered 429)", targets),
                      (f"Targets of issue 14 ({len(args.seed_list)} seed(s) pooled; PASS only when the whole 95% interval meets the bound)", targets_14)):
        if ts:
            lines += [f"## {title}", ""]
            lines += [md_table(["baseline", "metric", "target", "ratio [95% interval]", "verdict", "likely reason if missed"],
                               [[t["baseline"], t["metric"], t["target"], f"{fmt(t['ratio'], 3)} [{fmt(t['interval'][0], 3)}, {fmt(t['interval'][1], 3)}]",
                                 t["verdict"], t["reason"]] for t in ts]), ""]
    lines += ["## Load share per chute vs capacity share", "",
              "Each cell: mean share of the in-flight requests over the run / share of the requests it served, and "
              "the 429s it answered. A slowed chute holds its requests longer, so its in-flight share rises even "
              "when its share of requests does not.", ""]
    header = ["chute", "slots", "capacity share", *runs.keys()]
    rows = []
    for i, c in enumerate(chutes):
        first = next(iter(runs.values()))["per_chute"][i]
        rows.append([c["name"], first["slots"], f"{first['capacity_share']:.1%}",
                     *(f"{r['per_chute'][i]['inflight_share']:.1%} / {r['per_chute'][i]['served_share']:.1%} ({r['per_chute'][i]['upstream_429']} x429)"
                       for r in runs.values())])
    lines += [md_table(header, rows), ""]
    lines += ["## Was the proxy the bottleneck? (CPU in cores, averaged over the load)", ""]
    rows = []
    for name, r in runs.items():
        c = r["cpu"]
        proxy = sum(v for k, v in c.items() if k.startswith("proxy"))
        rows.append([name, f"{proxy:.2f}", f"{proxy / (args.replicas * args.workers):.0%}", f"{c['simulator_cores']:.2f}",
                     f"{c['client_cores']:.2f}", f"{c['machine_busy_fraction']:.0%}", f"{r['send_lag_p99'] * 1000:.0f} ms",
                     f"{r['held_in_proxy_mean']:.1f} / {r['held_in_proxy_max']}"])
    lines += [md_table(["strategy", "proxies (all)", "per worker (of 1 core)", "simulator", "load generator",
                        "machine busy (all processes)", "send lag p99", "held in proxies mean / max"], rows), ""]
    lines += ["Per-worker CPU well below 100%, a small send lag and few requests held in the proxies (open at the client "
              "but not in flight at the simulator, sampled every second) mean the numbers measure routing, not a "
              "saturated proxy or client. 'machine busy' includes every process on the box (other engineers' jobs "
              "too); when it is near 100% the proxies compete for CPU and their queueing shows in 'held in proxies'.", "",
              "Plots: `latency_cdf.png` (latency and TTFT CDF per strategy), `load_share.png` (each chute's share of the "
              "in-flight load over time; dashed = its share of slots).", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    slim = {k: {kk: vv for kk, vv in v.items() if kk != "samples" and not kk.startswith("_")} for k, v in runs.items()}
    by_seed = {k: [{kk: vv for kk, vv in v.items() if kk != "samples" and not kk.startswith("_")} for v in rs] for k, rs in all_runs.items()}
    (out_dir / "samples.json").write_text(json.dumps({k: v["samples"] for k, v in runs.items()}))
    with open(out_dir / "requests.csv", "w") as f:
        f.write("strategy,seed,scheduled_s,send_lag_s,replica,stream,status,latency_s,ttft_s,chute_id\n")
        for k, rs in all_runs.items():
            for v in rs:
                for r in v.get("_results", []):
                    f.write(f"{k},{v['seed']},{r.sched:.3f},{r.lag:.4f},{r.replica},{int(r.stream)},{r.status},{r.latency:.4f},"
                            f"{r.ttft:.4f},{r.chute}\n")
    (out_dir / "results.json").write_text(json.dumps({"info": info, "args": vars(args), "runs": slim, "runs_by_seed": by_seed,
                                                      "targets": targets, "targets_14": targets_14,
                                                      "plan": {k: v for k, v in asdict(plan).items() if k not in ("arrivals", "streamed")}},
                                                     indent=1, default=str))
    return report


def plot(out_dir: Path, runs: dict[str, dict[str, Any]], latencies: dict[str, tuple[list[float], list[float]]],
         chutes: list[dict[str, Any]], plan: Plan) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, (lat, ttft) in latencies.items():
        for ax, vals in zip(axes, (lat, ttft)):
            if vals:
                v = np.sort(vals)
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name, lw=2 if name == DEFAULT else 1.2)
    for ax, title in zip(axes, ("latency (all successful requests)", "time to first token (streamed)")):
        ax.set_xscale("log")
        ax.set_xlabel("seconds (client-measured)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(0, 1.001)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "latency_cdf.png", dpi=110)
    plt.close(fig)

    n = len(runs)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.6 * n), sharex=True, squeeze=False)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    total_slots = sum(c["instances"] * c["concurrency"] for c in chutes)
    for ax, (name, r) in zip(axes[:, 0], runs.items()):
        samples = r["samples"]
        if not samples:
            continue
        samples = [s for s in samples if s["t"] <= plan.duration]  # not the drain: only the slowest requests remain
        t = np.array([s["t"] for s in samples])
        inflight = np.array([[c["in_flight"] for c in s["chutes"]] for s in samples], dtype=float)
        k = min(5, len(samples))  # moving average over up to 5 samples ("same" mode needs k <= samples)
        kernel = np.ones(k) / k
        num = np.array([np.convolve(inflight[:, j], kernel, mode="same") for j in range(inflight.shape[1])]).T
        share = num / np.maximum(num.sum(axis=1, keepdims=True), 1e-9)
        for j, c in enumerate(chutes):
            ax.plot(t, share[:, j], color=colors[j % 10], lw=1.2, label=c["name"].split("/")[-1])
            ax.axhline(c["instances"] * c["concurrency"] / total_slots, color=colors[j % 10], ls="--", lw=0.8)
        for x in (plan.step_at, plan.degrade_at):
            ax.axvline(x, color="grey", ls=":", lw=1)
        ax.set_ylabel("in-flight share")
        ax.set_title(f"{name}: upstream 429 rate {r['upstream_429_rate']:.1%}, p99 {fmt(r['p99_latency'])} s", fontsize=10)
        ax.set_ylim(0, max(0.5, float(share.max()) * 1.05 if share.size else 0.5))
        ax.grid(True, alpha=0.3)
    axes[0, 0].legend(ncol=4, fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel(f"seconds since load start (dotted: load step at {plan.step_at:.0f} s, chute degraded at {plan.degrade_at:.0f} s)")
    fig.tight_layout()
    fig.savefig(out_dir / "load_share.png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, in run order (default: all six)")
    ap.add_argument("--duration", type=float, default=150.0, help="seconds of load per strategy (default 150)")
    ap.add_argument("--load", type=float, default=0.6, help="arrival rate before the step, fraction of capacity (default 0.6)")
    ap.add_argument("--step-load", type=float, default=0.8, help="arrival rate after the step (default 0.8)")
    ap.add_argument("--degrade-speed", type=float, default=0.3, help="decode speed factor of the degraded chute (default 0.3)")
    ap.add_argument("--reject-share", type=float, default=0.0,
                    help="one 32-slot chute answers 429 to this share of requests at any load (the rate-limit mode; compare "
                         "headroom with headroom-no-prior; default 0)")
    ap.add_argument("--stream-share", type=float, default=0.5, help="fraction of streamed requests (default 0.5)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="SIM_TIME_SCALE (default 1: real time)")
    ap.add_argument("--refresh", type=float, default=30.0, help="simulator utilization refresh, wall seconds (default 30)")
    ap.add_argument("--poll-interval", type=float, default=5.0, help="poller interval, seconds (default 5)")
    ap.add_argument("--concurrency", type=int, default=4, help="slots per instance (default 4)")
    ap.add_argument("--replicas", type=int, default=2, help="proxy replicas (default 2)")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers per replica (default 1)")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="client timeout per request (default 120)")
    ap.add_argument("--seed", type=int, default=6, help="first seed (default 6)")
    ap.add_argument("--seeds", type=int, default=1, help="arrival schedules: every strategy runs each (default 1)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "routing_quality"))
    ap.add_argument("--smoke", action="store_true", help="tiny run: 2 strategies, a few seconds each (for the tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.strategies = "headroom,shuffle"
        args.time_scale, args.refresh, args.poll_interval = 0.1, 2.0, 0.5
        args.concurrency, args.load, args.step_load, args.request_timeout = 1, 0.4, 0.6, 30.0
        args.duration, args.replicas = 4.0, 1  # proxy start-up (LiteLLM import) dominates; 1 replica halves it
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    args.seed_list = list(range(args.seed, args.seed + args.seeds))
    args.strategy_list = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in args.strategy_list if s not in STRATEGIES and s not in ABLATIONS]
    if unknown or not args.strategy_list:
        ap.error(f"unknown strategies {unknown}; choose from {', '.join([*STRATEGIES, *ABLATIONS])}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    chutes = fleet(args.concurrency)
    if args.reject_share > 0:
        chutes[REJECT_INDEX]["reject_share"] = args.reject_share
    FLEET_DEFAULTS["concurrency"] = args.concurrency
    service = mean_service_seconds(args.time_scale, np.random.default_rng(0))
    slots = sum(c["instances"] * c["concurrency"] for c in chutes)
    capacity = slots / (service * (1 + ALPHA))
    plans = [Plan(duration=args.duration, rate1=args.load * capacity, rate2=args.step_load * capacity,
                  step_at=0.35 * args.duration, degrade_at=0.6 * args.duration, degrade_speed=args.degrade_speed,
                  stream_share=args.stream_share, seed=seed).build() for seed in args.seed_list]
    plan = plans[0]
    log(f"machine: {info['cores']} cores, {info['cpu']}, load average {info['load_average_start']}")
    log(f"fleet: {slots} slots, mean service {service:.2f} s, capacity {capacity:.1f} req/s; "
        f"load {plan.rate1:.1f} -> {plan.rate2:.1f} req/s; {len(plan.arrivals)} requests per strategy")
    out_dir = Path(args.out)
    workdir = Path(tempfile.mkdtemp(prefix="routing-quality-"))
    all_runs: dict[str, list[dict[str, Any]]] = {}
    redis = RedisServer().start()
    try:
        for i, p in enumerate(plans):
            if len(plans) > 1:
                log(f"== seed {p.seed} ({i + 1} of {len(plans)})")
            for name in args.strategy_list:
                all_runs.setdefault(name, []).append(run_strategy(name, p, args, chutes, redis, workdir))
        info["load_average_end"] = load_average()
    finally:
        redis.stop()
    report = write_report(out_dir, all_runs, plan, args, info, chutes, capacity, service)
    try:
        runs = {n: rs[0] for n, rs in all_runs.items()}
        plot(out_dir, runs, {n: (r["_lat"], r["_ttft"]) for n, r in runs.items()}, chutes, plan)
    except Exception as exc:  # a plotting problem must not lose the measured numbers
        log(f"warning: plotting failed: {exc}")
    log(f"report: {report}")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
