#!/usr/bin/env python
"""Session routing on the real stack: Chutes-shaped multi-turn sessions through simulator + poller
+ Redis + 2 LiteLLM proxy replicas (issue 13 section 3, with issue 14's intervals).

Each strategy runs on a freshly started stack (new simulator with empty prefix caches, poller,
proxy replicas, Redis key prefix) and the SAME seeded sessions (arrival times, turn plans, texts):

    affinity            headroom with session affinity (ROUTING_AFFINITY=true, the default)
    no-affinity         headroom, every request picked alone (ROUTING_AFFINITY=false): the baseline
    sticky              pure stickiness: a session always on its own chute (ROUTING_STRATEGY=sticky)
    least-utilization   the seed's argmin of the snapshot's utilization
    weighted-shuffle    random in proportion to capacity

Workload: ``benchmarks/workload`` (profile ``minimax-m25`` by default: the published figures of
Nixon et al., PVLDB 2027, data CC BY 4.0). Prompts at full size (``--token-scale 1``: mean ~32k
tokens, 10k-100k+), every turn resends the conversation with the answers the simulator really
streamed, so the proxies' prefix hashing and the simulator's prefix caches see what production
would. The client sends no session id: the proxies key each session by its stable prefix (system
prompt + first user message), the fallback every chat client gets. Requests are round-robin over
the replicas, so the two replicas must agree on a session's chute. Closed loop per session: turn
k+1 leaves after turn k's answer plus its think time (``--think-scale`` of the published ones);
no turn is sent after ``--duration``; turns sent before ``--warmup`` (caches and sessions filling
up) are not measured.

Fleet: 6 chutes of 4-16 slots (1-4 instances x 4), each instance with a 500k-token LRU prefix
cache (simulator/README.md "Defaults and sources") and 20k tokens/s of prefill, one prefill at a
time (twice the simulator's default, so that on 2 cores the sessions' request rate stays where
the proxies are not the bottleneck while prefill and slots bind about equally); decode 20
tokens/s; the simulator slows a fuller chute by 1 + alpha x load (alpha 1). Load = the busier of
the fleet's two resources, slots and each instance's prefill, when NO prefix is reused (every
turn computes its whole prompt), over the measured window, calibrated on the plan before the run
(``offered_load``). So at 60% and 85% even routing that never hits a cache is not overloaded,
and what a cache hit saves shows as TTFT and prompt tokens computed.

Reported per strategy and load: TTFT of first and follow-up turns (p50/p95/p99), end-to-end
latency, prompt tokens computed (prompt - cached, from each answer's usage), upstream 429 rate
(the simulator's counters), max/mean chute load (time-averaged in-flight / slots, measured
window), share of multi-turn sessions served by one chute, failed turns, proxy CPU. Targets are
ratios to ``no-affinity`` with 95% bootstrap intervals (resampling turns, sessions and attempts
within each seed, pooled over ``--seeds``); PASS only when the whole interval meets the target.
Hot spot (``--hotspot``): at the first load, one of the two biggest chutes shrinks from 4 instances to 1 at
40% of the run; sticky against affinity on 429s and p99.

    .venv/bin/python benchmarks/session_quality.py                    # ~50 min: 5 strategies x 2 loads + hot spot
    .venv/bin/python benchmarks/session_quality.py --loads 0.6 --strategies affinity,no-affinity --duration 120
    .venv/bin/python benchmarks/session_quality.py --smoke            # ~1 min, used by the tests
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, which puts the repository (benchmarks.*) and src/ on the path

from common import (ROOT, MASTER_KEY, CpuMeter, fmt, litellm_config, load_average, log, machine_info,  # noqa: E402
                    md_table, pct, start_all)

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.stats import Interval, bootstrap_ratio, bootstrap_stat, mean, percentile  # noqa: E402
from benchmarks.workload.sessions import Session, SessionWorkload  # noqa: E402
from chutes_lb.devstack import PollerProcess, ProxyProcess  # noqa: E402
from chutes_lb.localstack import RedisServer  # noqa: E402
from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

#: label -> (ROUTING_STRATEGY, extra proxy environment)
STRATEGIES: dict[str, tuple[str, dict[str, str]]] = {
    "affinity": ("headroom", {"ROUTING_AFFINITY": "true"}),
    "no-affinity": ("headroom", {"ROUTING_AFFINITY": "false"}),
    "sticky": ("sticky", {}),
    "least-utilization": ("least-utilization", {}),
    "weighted-shuffle": ("weighted-shuffle", {}),
}
BASELINE = "no-affinity"
HEADLINE = "affinity"
HOTSPOT = ["affinity", "sticky", "no-affinity"]

ALPHA = 1.0
INSTANCES = [1, 2, 2, 3, 4, 4]
CONCURRENCY = 4
SLOTS = sum(INSTANCES) * CONCURRENCY
HOT_INDEX = 5  # a 4-instance chute, shrunk to 1 in the hot-spot run
TTFT = {"median": 0.3, "sigma": 0.3, "max": 10.0}
TPS = {"median": 20.0, "sigma": 0.2, "min": 5.0}
PREFILL_RATE = 20000.0
CACHE_TOKENS = 500_000
CONTEXT = 262_144


def fleet() -> list[dict[str, Any]]:
    return [{"chute_id": f"5e55{i + 1:04x}-0000-5000-8000-{i + 1:012x}", "name": f"bench/s{i + 1}-{n * CONCURRENCY}slots",
             "instances": n, "concurrency": CONCURRENCY} for i, n in enumerate(INSTANCES)]


def sim_config(chutes: list[dict[str, Any]]) -> dict[str, Any]:
    # output length = max_tokens: the simulator clips its draw to max_tokens, and the draw is
    # always above it, so each turn's answer has the planned length
    return {"alpha": ALPHA, "defaults": {"ttft": TTFT, "tps": TPS, "output_tokens": {"median": 100_000, "sigma": 0.0, "max": 100_000},
                                         "prefill_rate": PREFILL_RATE, "cache_tokens": CACHE_TOKENS, "cache_block_tokens": 64,
                                         "context_length": CONTEXT},
            "chutes": chutes}


# ---------------------------------------------------------------------------- the plan
def demand(s: Session, k: int, load: float) -> tuple[float, float]:
    """(slot-seconds, prefill-seconds of its instance) turn k asks for when no prefix is reused:
    mean base TTFT + prefill of the whole prompt + decode, and the prefill alone (an instance
    computes one prefill at a time), times the simulator's slowdown at ``load``."""
    t = s.turns[k]
    factor = 1 + ALPHA * load
    base = TTFT["median"] * math.exp(TTFT["sigma"] ** 2 / 2)
    tps = TPS["median"] * math.exp(TPS["sigma"] ** 2 / 2)
    prefill = t.prompt_tokens / PREFILL_RATE * factor
    return (base * factor + prefill + t.output_tokens / tps * factor), prefill


def offered_load(sessions: list[Session], duration: float, warmup: float, load: float) -> float:
    """The busier resource in [warmup, duration] when no prefix is reused: slot-seconds over the
    fleet's slots, or prefill-seconds over its instances; the closed loop replayed with those
    service times (no turn is sent after ``duration``)."""
    slot_busy = prefill_busy = 0.0
    for s in sessions:
        t = s.start
        for k in range(len(s.turns)):
            if k:
                t += s.turns[k].think
            if t >= duration:
                break
            d, pf = demand(s, k, load)
            slot_busy += max(0.0, min(t + d, duration) - max(t, warmup))
            prefill_busy += max(0.0, min(t + pf, duration) - max(t, warmup))
            t += d
    span = duration - warmup
    return max(slot_busy / (SLOTS * span), prefill_busy / (sum(INSTANCES) * span))


def plan_sessions(w: SessionWorkload, seed: int, load: float, duration: float, warmup: float) -> list[Session]:
    """Sessions arriving in [0, duration) at the rate that offers ``load`` (see ``offered_load``;
    a few fixed-point steps from a first guess)."""
    rate = 0.5
    for _ in range(4):
        got = offered_load(_draw(w, seed, rate, duration), duration, warmup, load)
        if got <= 0:
            break
        rate *= load / got
    return _draw(w, seed, rate, duration)


def _draw(w: SessionWorkload, seed: int, rate: float, duration: float) -> list[Session]:
    out = []
    for s in w.sessions(random.Random(seed), rate):
        if s.start >= duration:
            break
        out.append(s)
    return out


# ---------------------------------------------------------------------------- the client
@dataclass
class TurnResult:
    session: int
    turn: int
    sent: float
    replica: int
    status: int = 0  # -1 transport error, 599 error inside the stream
    ttft: float = math.nan
    latency: float = math.nan
    chute: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    error: str = ""


@dataclass
class Shared:
    urls: list[str]
    t0: float
    duration: float
    timeout: float
    next_replica: int = 0
    results: list[TurnResult] = field(default_factory=list)
    open_turns: int = 0


async def run_session(http: aiohttp.ClientSession, s: Session, sh: Shared) -> None:
    await _sleep_until(sh.t0 + s.start)
    answers: list[str] = []
    for k, turn in enumerate(s.turns):
        if k:
            await asyncio.sleep(turn.think)
        now = time.perf_counter() - sh.t0
        if now >= sh.duration:
            return
        replica = sh.next_replica % len(sh.urls)
        sh.next_replica += 1
        res = TurnResult(s.index, k, now, replica)
        sh.results.append(res)
        body = {"model": "chutes-models", "messages": s.messages(k, answers), "max_tokens": turn.output_tokens,
                "stream": True, "stream_options": {"include_usage": True}}
        sh.open_turns += 1
        try:
            text = await one_turn(http, sh.urls[replica], body, res, sh.timeout)
        finally:
            sh.open_turns -= 1
        if res.status != 200:
            return  # the client gives up the session (counted as a failed turn)
        answers.append(text)


async def _sleep_until(at: float) -> None:
    delay = at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def one_turn(http: aiohttp.ClientSession, url: str, body: dict[str, Any], res: TurnResult, timeout: float) -> str:
    t0 = time.perf_counter()
    parts: list[str] = []
    try:
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"},
                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            res.chute = resp.headers.get("x-litellm-model-id", "")
            if resp.status != 200:
                res.status, res.error = resp.status, (await resp.text())[:200]
                return ""
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    res.status, res.error = 599, str(chunk["error"])[:200]
                    continue
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        if math.isnan(res.ttft):
                            res.ttft = time.perf_counter() - t0
                        parts.append(piece)
                usage = chunk.get("usage")
                if usage:
                    res.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    res.cached_tokens = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            res.status = res.status or 200
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError, ValueError) as exc:
        res.status, res.error = -1, type(exc).__name__
    finally:
        res.latency = time.perf_counter() - t0
    return "".join(parts)


async def monitor(sim: SimulatorProcess, sh: Shared, stop: asyncio.Event, out: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            try:
                async with http.get(sim.base_url + "/admin/state", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    state = await r.json()
                out.append({"t": time.perf_counter() - sh.t0, "open": sh.open_turns,
                            "chutes": [{"id": c["chute_id"], "in_flight": c["in_flight"], "capacity": c["instances"] * c["concurrency"],
                                        "served": c["served"], "rejected_429": c["rejected_429"]} for c in state["chutes"]]})
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass


async def drive(sessions: list[Session], urls: list[str], sim: SimulatorProcess, args: argparse.Namespace,
                hot: tuple[float, str] | None) -> tuple[list[TurnResult], list[dict[str, Any]], dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sh = Shared(urls, time.perf_counter(), args.duration, args.request_timeout)
        mon = asyncio.create_task(monitor(sim, sh, stop, samples))
        tasks = [asyncio.create_task(run_session(http, s, sh)) for s in sessions]
        at_warmup: dict[str, Any] = {}
        marks = sorted([(args.warmup, "warmup"), *([(hot[0], "hot")] if hot else []), (args.duration, "end"),
                        *((t, "progress") for t in np.arange(10.0, args.duration, 10.0))])
        for at, what in marks:
            await _sleep_until(sh.t0 + at)
            if what == "warmup":
                at_warmup = await loop.run_in_executor(None, sim.state)
            elif what == "end":
                break
            elif what == "hot" and hot:
                await loop.run_in_executor(None, lambda: sim.set_chute(hot[1], instances=1))
                log(f"  t={at:5.1f}s hot spot: {hot[1]} shrunk to 1 instance")
            else:
                done = sum(r.status != 0 for r in sh.results)
                log(f"  t={at:5.0f}s turns sent {len(sh.results)} done {done} open {sh.open_turns}")
        log(f"  no new turns after t={args.duration:.0f}s; draining {sh.open_turns} open turns")
        await asyncio.wait(tasks, timeout=args.request_timeout + 10)
        for t in tasks:
            t.cancel()
        stop.set()
        await mon
        after = await loop.run_in_executor(None, sim.state)
    counts = {c["chute_id"]: {"served": c["served"] - w["served"], "rejected_429": c["rejected_429"] - w["rejected_429"]}
              for c, w in zip(after["chutes"], at_warmup.get("chutes", after["chutes"]))}
    return sh.results, samples, counts


async def _warmup(urls: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for url in urls:
            res = TurnResult(-1, 0, 0.0, 0)
            await one_turn(http, url, {"model": "chutes-models", "messages": [{"role": "user", "content": "warm-up"}],
                                       "max_tokens": 4, "stream": True}, res, 60)
            if res.status != 200:
                raise RuntimeError(f"warm-up request to {url} failed: {res.status} {res.error}")


# ---------------------------------------------------------------------------- one run
def run_one(name: str, load: float, sessions: list[Session], args: argparse.Namespace, chutes: list[dict[str, Any]],
            redis: RedisServer, workdir: Path, seed: int, hot: bool = False) -> dict[str, Any]:
    strategy, extra = STRATEGIES[name]
    tag = f"{name}-{load:g}-s{seed}{'-hot' if hot else ''}"
    log(f"== {tag}: {len(sessions)} sessions; starting simulator, poller, {args.replicas} proxy replicas")
    sdir = workdir / tag
    config = litellm_config(sdir, chutes, with_hook=True)
    prefix = f"bench-sess-{tag}-{os.getpid()}"
    with ExitStack() as stack:
        sim = SimulatorProcess(sim_config(chutes), time_scale=1.0, refresh_seconds=args.refresh, seed=seed, env={"LOG_LEVEL": "warning"})
        start_all(stack, [sim])
        poller = PollerProcess(sim.base_url, redis.url, prefix, config=config, interval=args.poll_interval,
                               env={"LOG_LEVEL": "warning"}, log_dir=str(sdir))
        proxies = []
        for r in range(args.replicas):
            (sdir / f"proxy{r}").mkdir(parents=True, exist_ok=True)
            proxies.append(ProxyProcess(sim.openai_base, redis.url, MASTER_KEY, prefix, config=config, workers=args.workers,
                                        strategy=strategy, env={"LOG_LEVEL": "warning", **extra}, log_dir=str(sdir / f"proxy{r}")))
        start_all(stack, [poller, *proxies])
        urls = [p.base_url + "/v1/chat/completions" for p in proxies]
        asyncio.run(_warmup(urls))
        sim.reset()
        sim.refresh_utilization()
        meter = CpuMeter({"simulator": sim.process.pid, "poller": poller.process.pid,
                          **{f"proxy{r}": p.process.pid for r, p in enumerate(proxies)}}).start()
        cpu0 = time.process_time()
        hot_at = (0.4 * args.duration, chutes[HOT_INDEX]["name"]) if hot else None
        results, samples, counts = asyncio.run(drive(sessions, urls, sim, args, hot_at))
        cpu = meter.stop()
        cpu["client_cores"] = (time.process_time() - cpu0) / cpu["wall_seconds"]
        outcomes = affinity_outcomes(proxies)
    out = summarize(tag, name, load, seed, results, samples, counts, chutes, args, cpu)
    out["affinity_outcomes"] = outcomes
    if outcomes:
        log(f"  {tag}: affinity outcomes " + ", ".join(f"{k} {v:.0f}" for k, v in outcomes.items()))
    return out


def affinity_outcomes(proxies: list[ProxyProcess]) -> dict[str, float]:
    """chutes_lb_affinity_decisions_total per outcome, summed over the replicas (whole run)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for p in proxies:
        try:
            text = p.metrics_text()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "chutes_lb_affinity_decisions_total":
                    out[sample.labels.get("outcome", "")] = out.get(sample.labels.get("outcome", ""), 0.0) + sample.value
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def summarize(tag: str, name: str, load: float, seed: int, results: list[TurnResult], samples: list[dict[str, Any]],
              counts: dict[str, dict[str, int]], chutes: list[dict[str, Any]], args: argparse.Namespace,
              cpu: dict[str, float]) -> dict[str, Any]:
    measured = [r for r in results if r.sent >= args.warmup]
    ok = [r for r in measured if r.status == 200]
    first = [r.ttft for r in ok if r.turn == 0 and not math.isnan(r.ttft)]
    follow = [r.ttft for r in ok if r.turn > 0 and not math.isnan(r.ttft)]
    computed = [max(0, r.prompt_tokens - r.cached_tokens) for r in ok]
    prompt = [r.prompt_tokens for r in ok]
    by_session: dict[int, list[TurnResult]] = {}
    for r in results:
        by_session.setdefault(r.session, []).append(r)
    one_chute = []  # per multi-turn session that ran in the measured window: 1 if one chute served all its turns
    for turns in by_session.values():
        served = [t for t in turns if t.status == 200]
        if len(served) >= 2 and any(t.sent >= args.warmup for t in served):
            one_chute.append(float(len({t.chute for t in served}) == 1))
    served_n = sum(c["served"] for c in counts.values())
    rejected_n = sum(c["rejected_429"] for c in counts.values())
    window = [s for s in samples if args.warmup <= s["t"] <= args.duration]
    slots = {c["chute_id"]: c["instances"] * c["concurrency"] for c in chutes}
    util = {cid: float(np.mean([next(c["in_flight"] for c in s["chutes"] if c["id"] == cid) / slots[cid] for s in window]))
            if window else math.nan for cid in slots}
    fleet_util = float(np.mean([sum(c["in_flight"] for c in s["chutes"]) / sum(slots.values()) for s in window])) if window else math.nan
    mean_util = float(np.mean(list(util.values())))
    out = {
        "tag": tag, "strategy": name, "load": load, "seed": seed,
        "turns": len(measured), "ok": len(ok), "failed": len(measured) - len(ok),
        "failures": {str(k): sum(r.status == k for r in measured) for k in sorted({r.status for r in measured}) if k != 200},
        "client_429": sum(r.status == 429 for r in measured),
        "first_turns": len(first), "follow_turns": len(follow),
        **{f"ttft_first_p{q}": pct(first, q) for q in (50, 95, 99)},
        **{f"ttft_follow_p{q}": pct(follow, q) for q in (50, 95, 99)},
        **{f"latency_p{q}": pct([r.latency for r in ok], q) for q in (50, 95, 99)},
        "prompt_tokens": int(sum(prompt)), "computed_tokens": int(sum(computed)),
        "computed_share": sum(computed) / sum(prompt) if prompt else math.nan,
        "upstream_attempts": served_n + rejected_n, "upstream_429": rejected_n,
        "upstream_429_rate": rejected_n / (served_n + rejected_n) if served_n + rejected_n else math.nan,
        "chute_utilization": {c["name"]: util[c["chute_id"]] for c in chutes}, "fleet_utilization": fleet_util,
        "max_over_mean_load": max(util.values()) / mean_util if mean_util > 0 else math.nan,
        "multi_turn_sessions": len(one_chute), "one_chute_share": float(np.mean(one_chute)) if one_chute else math.nan,
        "cpu": cpu, "samples": samples,
        # raw values for the intervals and the plots (not in results.json)
        "_first": np.array(first), "_follow": np.array(follow), "_latency": np.array([r.latency for r in ok]),
        "_computed": np.array(computed, dtype=float), "_one_chute": np.array(one_chute),
        "_rejects": np.r_[np.ones(rejected_n), np.zeros(served_n)], "_results": results,
    }
    log(f"  {tag}: turns {len(measured)} ok {len(ok)}; TTFT follow-up p50/p99 {fmt(out['ttft_follow_p50'])}/"
        f"{fmt(out['ttft_follow_p99'])} s, first p50 {fmt(out['ttft_first_p50'])} s; computed {out['computed_share']:.1%}; "
        f"429 {rejected_n}/{served_n + rejected_n}; max/mean load {fmt(out['max_over_mean_load'])}; one chute "
        f"{out['one_chute_share']:.0%}; fleet utilization {fleet_util:.0%}; proxy CPU "
        f"{sum(v for k, v in cpu.items() if k.startswith('proxy')):.2f} cores")
    return out


# ---------------------------------------------------------------------------- targets
#: (metric, raw array, statistic, bound, "le"/"ge", applies at loads) as ratios to the baseline
TARGETS = [
    ("follow-up TTFT p50", "_follow", percentile(50), 0.5),
    ("follow-up TTFT p99", "_follow", percentile(99), 0.8),
    ("prompt tokens computed (mean per turn)", "_computed", mean, 0.6),
    ("upstream 429 rate", "_rejects", mean, 1.1),
]


def intervals(runs: dict[str, list[dict[str, Any]]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """The issue-13 targets for the headline strategy at one load, each as a 95% interval."""
    out = []
    head, base = runs.get(HEADLINE), runs.get(BASELINE)
    if head and base:
        for metric, key, stat, bound in TARGETS:
            a, b = [r[key] for r in head], [r[key] for r in base]
            if not all(len(x) for x in a + b):
                iv = Interval(math.nan, math.nan, math.nan)
            elif key == "_rejects" and not any(x.sum() for x in a + b):
                iv = Interval(1.0, 1.0, 1.0)  # no 429 under either: no difference
            else:
                iv = bootstrap_ratio(a, b, stat, rng)
            out.append(_verdict(metric, f"<= {bound}x {BASELINE}", iv, iv.within(bound)))
    if head:
        mm = [r["max_over_mean_load"] for r in head]
        out.append({"metric": "max/mean chute load", "target": "<= 1.25", "value": f"{np.median(mm):.3g} (median of seeds; "
                    f"{min(mm):.3g}-{max(mm):.3g})", "verdict": "PASS" if max(mm) <= 1.25 else "MISS"})
        if abs(head[0]["load"] - 0.6) < 1e-9:
            iv = bootstrap_stat([r["_one_chute"] for r in head], mean, rng)
            out.append(_verdict("sessions served by one chute", ">= 0.90", iv, iv.above(0.9)))
    return out


def _verdict(metric: str, target: str, iv: Interval, ok: bool) -> dict[str, Any]:
    return {"metric": metric, "target": target, "value": str(iv), "verdict": "n/a" if math.isnan(iv.point) else ("PASS" if ok else "MISS")}


# ---------------------------------------------------------------------------- report
def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    header = ["strategy", "turns (failed)", "TTFT first p50 / p95 / p99", "TTFT follow-up p50 / p95 / p99", "latency p50 / p95 / p99",
              "prompt computed", "upstream 429 rate", "max/mean load", "one chute", "fleet util.", "proxy CPU"]
    rows = []
    for name, rs in runs.items():
        def pooled(key: str, q: float) -> str:
            return fmt(pct(np.concatenate([r[key] for r in rs]), q))
        turns, failed = sum(r["turns"] for r in rs), sum(r["failed"] for r in rs)
        comp = sum(r["computed_tokens"] for r in rs) / max(1, sum(r["prompt_tokens"] for r in rs))
        att, rej = sum(r["upstream_attempts"] for r in rs), sum(r["upstream_429"] for r in rs)
        one = np.concatenate([r["_one_chute"] for r in rs])
        rows.append([name, f"{turns} ({failed})", " / ".join(pooled("_first", q) for q in (50, 95, 99)),
                     " / ".join(pooled("_follow", q) for q in (50, 95, 99)), " / ".join(pooled("_latency", q) for q in (50, 95, 99)),
                     f"{comp:.1%}", f"{rej / att:.2%}" if att else "n/a", fmt(float(np.median([r["max_over_mean_load"] for r in rs]))),
                     f"{one.mean():.0%}" if len(one) else "n/a", f"{np.mean([r['fleet_utilization'] for r in rs]):.0%}",
                     f"{np.mean([sum(v for k, v in r['cpu'].items() if k.startswith('proxy')) for r in rs]):.2f}"])
    return md_table(header, rows)


def ratio_table(runs: dict[str, list[dict[str, Any]]], rng: np.random.Generator) -> str:
    rows = []
    base = runs.get(BASELINE)
    if not base:
        return ""
    for name, rs in runs.items():
        if name == BASELINE:
            continue
        cells = [name]
        for key, stat in (("_follow", percentile(50)), ("_follow", percentile(99)), ("_first", percentile(50)),
                          ("_latency", percentile(99)), ("_computed", mean), ("_rejects", mean)):
            a, b = [r[key] for r in rs], [r[key] for r in base]
            if not all(len(x) for x in a + b) or (key == "_rejects" and not any(x.sum() for x in a + b)):
                cells.append("n/a")
            else:
                cells.append(str(bootstrap_ratio(a, b, stat, rng)))
        rows.append(cells)
    return md_table(["vs " + BASELINE, "follow-up TTFT p50", "follow-up TTFT p99", "first TTFT p50", "latency p99",
                     "prompt computed", "upstream 429 rate"], rows)


def write_report(out_dir: Path, by_load: dict[float, dict[str, list[dict[str, Any]]]], hot: dict[str, list[dict[str, Any]]],
                 args: argparse.Namespace, info: dict[str, str], chutes: list[dict[str, Any]], plans: dict[float, list[int]]) -> Path:
    rng = np.random.default_rng(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Session routing on the real stack ({info['date']})", "",
             f"Machine: {info['cores']} cores, {info['cpu']}; load average at start {info['load_average_start']}, at end "
             f"{info.get('load_average_end', 'n/a')}. Stack: simulator + poller (every {args.poll_interval:g} s, utilization "
             f"refresh {args.refresh:g} s) + Redis + {args.replicas} proxy replicas x {args.workers} worker, requests round-robin "
             "over the replicas, all streamed, no session id sent (the proxies key sessions by prefix).", "",
             f"Fleet: {len(chutes)} chutes, slots {', '.join(str(c['instances'] * c['concurrency']) for c in chutes)} "
             f"({CONCURRENCY} per instance), prefix cache {CACHE_TOKENS:,} tokens and prefill {PREFILL_RATE:,.0f} tokens/s per "
             f"instance, decode {TPS['median']:g} tokens/s, alpha {ALPHA:g}.", "",
             f"Workload: profile {args.profile}, token scale {args.token_scale:g}, output scale {args.output_scale:g}, think scale "
             f"{args.think_scale:g}; {args.duration:.0f} s per run, the first {args.warmup:.0f} s not measured; seeds "
             f"{', '.join(map(str, args.seed_list))}; sessions per run (per seed): "
             + "; ".join(f"load {ld:g}: {', '.join(map(str, n))}" for ld, n in plans.items()) + ".", "",
             "Intervals: 95% bootstrap (turns, sessions and upstream attempts resampled within each seed, pooled); a "
             "target PASSes only when the whole interval meets it.", ""]
    for load, runs in by_load.items():
        lines += [f"## Load {load:.0%} (times in seconds, client-measured)", "", table(runs), "",
                  f"Ratios to {BASELINE}, point [95% interval]:", "", ratio_table(runs, rng), ""]
        iv = intervals(runs, rng)
        if iv:
            lines += [f"Targets of issue 13 ({HEADLINE} vs {BASELINE}):", "",
                      md_table(["metric", "target", "measured", "verdict"], [[t["metric"], t["target"], t["value"], t["verdict"]] for t in iv]), ""]
    if hot:
        load = next(iter(hot.values()))[0]["load"]
        lines += [f"## Hot spot at load {load:.0%}: {chutes[HOT_INDEX]['name']} shrinks from {INSTANCES[HOT_INDEX]} instances to 1 "
                  f"at t={0.4 * args.duration:.0f} s", "", table(hot), "", "Ratios to " + BASELINE + ":", "", ratio_table(hot, rng), ""]
        if "sticky" in hot and HEADLINE in hot:
            a, s = hot[HEADLINE], hot["sticky"]
            r429 = bootstrap_ratio([r["_rejects"] for r in a], [r["_rejects"] for r in s], mean, rng) \
                if any(x.sum() for x in [r["_rejects"] for r in a + s]) else Interval(1.0, 1.0, 1.0)
            rp99 = bootstrap_ratio([r["_latency"] for r in a], [r["_latency"] for r in s], percentile(99), rng)
            rt99 = bootstrap_ratio([r["_follow"] for r in a], [r["_follow"] for r in s], percentile(99), rng)
            lines += [f"{HEADLINE} / sticky under the hot spot: upstream 429 rate {r429} ({'PASS' if r429.hi < 1 else 'MISS'}: "
                      f"fewer 429s), latency p99 {rp99} ({'PASS' if rp99.hi < 1 else 'MISS'}: lower p99), follow-up TTFT p99 {rt99}.", ""]
    lines += ["Plots: `ttft_cdf.png` (TTFT CDF, first and follow-up turns, per strategy and load), `load_share.png` (each "
              "chute's in-flight share over time; dashed = its share of slots).", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    slim = {f"{ld:g}": {n: [{k: v for k, v in r.items() if not k.startswith("_") and k != "samples"} for r in rs] for n, rs in runs.items()}
            for ld, runs in by_load.items()}
    if hot:
        slim["hotspot"] = {n: [{k: v for k, v in r.items() if not k.startswith("_") and k != "samples"} for r in rs] for n, rs in hot.items()}
    (out_dir / "results.json").write_text(json.dumps({"info": info, "args": {k: v for k, v in vars(args).items()}, "runs": slim},
                                                     indent=1, default=str))
    with open(out_dir / "turns.csv", "w") as f:
        f.write("run,session,turn,sent_s,replica,status,ttft_s,latency_s,prompt_tokens,cached_tokens,chute_id\n")
        for runs in [*by_load.values(), hot]:
            for rs in runs.values():
                for r in rs:
                    for t in r["_results"]:
                        f.write(f"{r['tag']},{t.session},{t.turn},{t.sent:.3f},{t.replica},{t.status},{t.ttft:.4f},{t.latency:.4f},"
                                f"{t.prompt_tokens},{t.cached_tokens},{t.chute}\n")
    return report


def plot(out_dir: Path, by_load: dict[float, dict[str, list[dict[str, Any]]]], hot: dict[str, list[dict[str, Any]]],
         chutes: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = list(by_load)
    fig, axes = plt.subplots(len(loads), 2, figsize=(12, 4.2 * len(loads)), squeeze=False)
    for row, load in enumerate(loads):
        for col, (key, title) in enumerate((("_first", "first turns"), ("_follow", "follow-up turns"))):
            ax = axes[row, col]
            for name, rs in by_load[load].items():
                v = np.sort(np.concatenate([r[key] for r in rs]))
                if len(v):
                    ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name, lw=2 if name == HEADLINE else 1.2)
            ax.set_xscale("log")
            ax.set_xlabel("time to first token, s (client-measured)")
            ax.set_ylabel("fraction of turns")
            ax.set_title(f"load {load:.0%}: {title}")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_ylim(0, 1.001)
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "ttft_cdf.png", dpi=110)
    plt.close(fig)

    panels = [(f"load {ld:.0%}: {n}", rs[0]) for ld, runs in by_load.items() for n, rs in runs.items()]
    panels += [(f"hot spot: {n}", rs[0]) for n, rs in hot.items()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.3 * len(panels)), sharex=True, squeeze=False)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    total = sum(c["instances"] * c["concurrency"] for c in chutes)
    for ax, (title, r) in zip(axes[:, 0], panels):
        samples = [s for s in r["samples"] if s["t"] <= args.duration]
        if not samples:
            continue
        t = np.array([s["t"] for s in samples])
        inflight = np.array([[c["in_flight"] for c in s["chutes"]] for s in samples], dtype=float)
        k = min(5, len(samples))
        num = np.array([np.convolve(inflight[:, j], np.ones(k) / k, mode="same") for j in range(inflight.shape[1])]).T
        share = num / np.maximum(num.sum(axis=1, keepdims=True), 1e-9)
        for j, c in enumerate(chutes):
            ax.plot(t, share[:, j], color=colors[j % 10], lw=1.2, label=c["name"].split("/")[-1])
            ax.axhline(c["instances"] * c["concurrency"] / total, color=colors[j % 10], ls="--", lw=0.8)
        ax.axvline(args.warmup, color="grey", ls=":", lw=1)
        ax.set_ylabel("in-flight share")
        ax.set_title(f"{title}: max/mean load {fmt(r['max_over_mean_load'])}, 429 rate {r['upstream_429_rate']:.1%}", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0, 0].legend(ncol=6, fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel(f"seconds since the first session (dotted: end of warm-up at {args.warmup:.0f} s)")
    fig.tight_layout()
    fig.savefig(out_dir / "load_share.png", dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, in run order (default: all five)")
    ap.add_argument("--loads", default="0.6,0.85", help="offered loads, fractions of the fleet's slots (default 0.6,0.85)")
    ap.add_argument("--seeds", type=int, default=1, help="session schedules per load; every strategy runs each (default 1)")
    ap.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    ap.add_argument("--duration", type=float, default=150.0, help="seconds of sessions per run (default 150)")
    ap.add_argument("--warmup", type=float, default=40.0, help="seconds not measured at the start (default 40)")
    ap.add_argument("--profile", default="minimax-m25", help="session profile: minimax-m25 (default) or deepseek-v32")
    ap.add_argument("--token-scale", type=float, default=1.0, help="prompt sizes x this (default 1: the published sizes)")
    ap.add_argument("--output-scale", type=float, default=0.25, help="output tokens x this (default 0.25: fewer chunks for 2 cores)")
    ap.add_argument("--think-scale", type=float, default=0.1, help="think times x this (default 0.1: sessions progress within a run)")
    ap.add_argument("--refresh", type=float, default=30.0, help="simulator utilization refresh, seconds (default 30)")
    ap.add_argument("--poll-interval", type=float, default=5.0, help="poller interval, seconds (default 5)")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--request-timeout", type=float, default=120.0)
    ap.add_argument("--hotspot", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the hot-spot comparison at the first load (default on)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "session_quality"))
    ap.add_argument("--smoke", action="store_true", help="tiny run: 2 strategies, one load, ~20 s each (for the tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.strategies, args.loads, args.hotspot = "affinity,no-affinity", "0.5", False
        args.duration, args.warmup, args.token_scale, args.output_scale, args.think_scale = 16.0, 4.0, 0.1, 0.05, 0.02
        args.refresh, args.poll_interval, args.replicas, args.request_timeout = 4.0, 1.0, 1, 30.0
    args.strategy_list = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in args.strategy_list if s not in STRATEGIES]
    if unknown or not args.strategy_list:
        ap.error(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    try:
        args.load_list = [float(x) for x in args.loads.split(",") if x.strip()]
    except ValueError:
        ap.error("--loads: comma-separated numbers, e.g. 0.6,0.85")
    if not args.load_list or not all(0 < x < 2 for x in args.load_list):
        ap.error("--loads: each between 0 and 2")
    if not 0 <= args.warmup < args.duration:
        ap.error("--warmup must be below --duration")
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    args.seed_list = list(range(args.seed, args.seed + args.seeds))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    chutes = fleet()
    w = SessionWorkload.named(args.profile, token_scale=args.token_scale, output_scale=args.output_scale, think_scale=args.think_scale)
    log(f"machine: {info['cores']} cores, {info['cpu']}, load average {info['load_average_start']}")
    plans = {ld: {seed: plan_sessions(w, seed, ld, args.duration, args.warmup) for seed in args.seed_list} for ld in args.load_list}
    for ld, by_seed in plans.items():
        for seed, ss in by_seed.items():
            log(f"plan: load {ld:g} seed {seed}: {len(ss)} sessions, {sum(len(s.turns) for s in ss)} planned turns, "
                f"mean first prompt {np.mean([s.turns[0].prompt_tokens for s in ss]):,.0f} tokens")
    runs_total = len(args.load_list) * len(args.seed_list) * len(args.strategy_list) + (len(HOTSPOT) * len(args.seed_list) if args.hotspot else 0)
    log(f"{runs_total} runs of ~{args.duration + 25:.0f} s each")
    workdir = Path(tempfile.mkdtemp(prefix="session-quality-"))
    by_load: dict[float, dict[str, list[dict[str, Any]]]] = {}
    hot: dict[str, list[dict[str, Any]]] = {}
    redis = RedisServer().start()
    try:
        for ld in args.load_list:
            for name in args.strategy_list:
                for seed in args.seed_list:
                    by_load.setdefault(ld, {}).setdefault(name, []).append(
                        run_one(name, ld, plans[ld][seed], args, chutes, redis, workdir, seed))
        if args.hotspot:
            ld = args.load_list[0]
            for name in HOTSPOT:
                for seed in args.seed_list:
                    hot.setdefault(name, []).append(run_one(name, ld, plans[ld][seed], args, chutes, redis, workdir, seed, hot=True))
        info["load_average_end"] = load_average()
    finally:
        redis.stop()
    out_dir = Path(args.out)
    report = write_report(out_dir, by_load, hot, args, info, chutes, {ld: [len(p) for p in by_seed.values()] for ld, by_seed in plans.items()})
    try:
        plot(out_dir, by_load, hot, chutes, args)
    except Exception as exc:  # a plotting problem must not lose the measured numbers
        log(f"warning: plotting failed: {exc}")
    log(f"report: {report}")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
