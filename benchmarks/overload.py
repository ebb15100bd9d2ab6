"""Overload, open loop: what clients get when the fleet is full, before and after issue 23.

    .venv/bin/python benchmarks/overload.py                 # ~6 min: 2 variants x 2 loads x 60 s
    .venv/bin/python benchmarks/overload.py --smoke         # a few seconds each (the test suite)

One proxy replica (2 workers), a simulated fleet of 24 slots (3 chutes x 2 instances x 4) with
~3 s requests unloaded (slower when a chute is full). Its capacity is measured first, closed loop
(24 clients, one request after the other), and reused for both variants. Requests arrive as a Poisson process (open
loop: arrivals do not wait for answers) at 1.0x and 2.0x that capacity, each its own conversation,
non-streamed. Two variants of the same code, side by side on the same arrival schedule:

- ``before``: ``ROUTING_WAIT_SECONDS=0`` and ``PROXY_MAX_CONCURRENT=0`` (no wait for a slot, no
  admission bound: what the proxy did before issue 23);
- ``after``: the defaults (a 2 s wait for a slot, admission control).

Per variant and load: requests, 200s, client 429s and other errors, the share of non-200s that
carry ``Retry-After``, the time to a non-200 (p50/p99), and the latency of the 200s (p50/p99).
Targets (issue 23): at 1.0x client-visible 429s <= 0.5% with the added wait p99 within the bound;
at 2.0x every non-200 carries ``Retry-After``. A report goes to ``--out`` (JSON and markdown).
Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import log, machine_info, md_table, pct, start_all  # noqa: E402
from chutes_lb.devstack import PollerProcess, ProxyProcess, write_config  # noqa: E402
from chutes_lb.localstack import RedisServer  # noqa: E402
from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

KEY = "sk-bench-overload-51c9"
FLEET = [{"chute_id": f"0{i}aaaaaa-0000-5000-8000-00000000000{i}", "name": f"bench/full-{i}", "instances": 2, "concurrency": 4}
         for i in range(3)]
SLOTS = sum(c["instances"] * c["concurrency"] for c in FLEET)
# ~3 s a request: 0.3 s to the first token, ~270 tokens at 100 tokens/s
SIM_DEFAULTS = {"ttft": {"median": 0.3, "sigma": 0.1}, "tps": {"median": 100, "sigma": 0.1},
                "output_tokens": {"median": 270, "sigma": 0.1, "max": 400}}
MEAN_SECONDS = 3.1
VARIANTS = {"before": {"ROUTING_WAIT_SECONDS": "0", "PROXY_MAX_CONCURRENT": "0"}, "after": {}}


async def drive(url: str, arrivals: list[float], timeout: float) -> list[dict[str, Any]]:
    """Send one request at each arrival time (seconds from now); never wait for answers to send."""
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=timeout, limits=limits) as client:
        t0 = time.monotonic()

        async def one(i: int, at: float) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            body = {"model": "chutes-models", "max_tokens": 300,
                    "messages": [{"role": "user", "content": f"request {i} {random.random()}"}]}
            start = time.monotonic()
            try:
                r = await client.post(url, json=body)
                return {"status": r.status_code, "seconds": time.monotonic() - start,
                        "retry_after": r.headers.get("retry-after")}
            except httpx.TimeoutException:
                return {"status": "timeout", "seconds": time.monotonic() - start, "retry_after": None}
            except httpx.HTTPError as exc:
                return {"status": type(exc).__name__, "seconds": time.monotonic() - start, "retry_after": None}

        return await asyncio.gather(*(one(i, at) for i, at in enumerate(arrivals)))


async def closed_loop(url: str, clients: int, seconds: float) -> float:
    """The fleet's real capacity: ``clients`` (= its slots) each sending one request after the
    other until ``seconds`` have passed (the last ones finish after); returns the 200s per second (full occupancy slows a chute's decode, so
    this is below slots / unloaded request time)."""
    done = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60.0) as client:
        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < deadline:
                i += 1
                body = {"model": "chutes-models", "max_tokens": 300,
                        "messages": [{"role": "user", "content": f"capacity {w} {i} {random.random()}"}]}
                r = await client.post(url, json=body)
                if r.status_code == 200:
                    done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(clients)))  # the last requests finish past the deadline
        return max(done, 1) / (time.monotonic() - t0)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r["seconds"] for r in results if r["status"] == 200]
    bad = [r for r in results if r["status"] != 200]
    n429 = sum(1 for r in results if r["status"] == 429)
    return {
        "sent": len(results), "ok": len(ok), "client_429": n429, "other_errors": len(bad) - n429,
        "client_429_share": n429 / len(results) if results else 0.0,
        "non_200_with_retry_after": (sum(1 for r in bad if r["retry_after"]) / len(bad)) if bad else None,
        "non_200_seconds_p50": pct([r["seconds"] for r in bad], 50) if bad else None,
        "non_200_seconds_p99": pct([r["seconds"] for r in bad], 99) if bad else None,
        "ok_seconds_p50": pct(ok, 50) if ok else None, "ok_seconds_p99": pct(ok, 99) if ok else None,
        "statuses": {str(s): sum(1 for r in results if r["status"] == s) for s in {r["status"] for r in results}},
    }


def run_variant(name: str, env: dict[str, str], loads: list[float], duration: float, seed: int, redis: RedisServer,
                workdir: Path, capacity: list[float]) -> dict[str, Any]:
    """``capacity``: [req/s] measured by the first variant and reused by the next (the same rates)."""
    sdir = workdir / name
    (sdir / "proxy").mkdir(parents=True, exist_ok=True)
    config = write_config(sdir / "litellm-config.yaml", FLEET)
    prefix = f"overload-{name}-{os.getpid()}"
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        sim = SimulatorProcess({"defaults": SIM_DEFAULTS, "chutes": FLEET}, time_scale=1.0, refresh_seconds=5.0, seed=seed,
                               env={"LOG_LEVEL": "warning"})
        start_all(stack, [sim])
        poller = PollerProcess(sim.base_url, redis.url, prefix, config=config, interval=2.0, env={"LOG_LEVEL": "warning"},
                               log_dir=str(sdir))
        proxy = ProxyProcess(sim.openai_base, redis.url, KEY, prefix, config=config, workers=2,
                             env={"LOG_LEVEL": "warning", "SNAPSHOT_REFRESH_SECONDS": "1", "INFLIGHT_PUBLISH_SECONDS": "0.5", **env},
                             log_dir=str(sdir / "proxy"))
        start_all(stack, [poller, proxy])
        url = proxy.base_url + "/v1/chat/completions"
        if not capacity:
            capacity.append(asyncio.run(closed_loop(url, SLOTS, min(20.0, max(4.0, duration / 2)))))
            log(f"== capacity (closed loop, {SLOTS} clients): {capacity[0]:.2f} requests/s")
            time.sleep(MEAN_SECONDS * 2)
        out["capacity_per_second"] = capacity[0]
        for load in loads:
            rng = random.Random(seed * 1000 + int(load * 100))  # the same schedule for every variant
            rate = load * capacity[0]
            arrivals, t = [], 0.0
            while True:
                t += rng.expovariate(rate)
                if t >= duration:
                    break
                arrivals.append(t)
            log(f"== {name}, load {load:.1f}x: {len(arrivals)} requests over {duration:.0f}s ({rate:.1f}/s)")
            results = asyncio.run(drive(url, arrivals, timeout=60.0))
            out[f"{load:.1f}"] = summarize(results)
            log(f"   {out[f'{load:.1f}']['statuses']}")
            time.sleep(MEAN_SECONDS * 2)  # the fleet drains before the next load
    return out


def report(runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for variant, by_load in runs.items():
        for load, s in by_load.items():
            if load == "capacity_per_second":
                continue
            def f(x: Any, pattern: str = "{:.2f}") -> str:
                return "-" if x is None else pattern.format(x)
            rows.append([variant, f"{load}x", s["sent"], s["ok"], f"{s['client_429']} ({s['client_429_share']:.1%})",
                         s["other_errors"], f(s["non_200_with_retry_after"], "{:.0%}"),
                         f"{f(s['non_200_seconds_p50'])}/{f(s['non_200_seconds_p99'])}",
                         f"{f(s['ok_seconds_p50'])}/{f(s['ok_seconds_p99'])}"])
    return md_table(["variant", "offered", "sent", "200", "client 429", "other errors", "non-200 with Retry-After",
                     "time to a non-200 p50/p99 s", "200 p50/p99 s"], rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per load (default 60)")
    ap.add_argument("--loads", default="1.0,2.0", help="offered load as multiples of the fleet's capacity (default 1.0,2.0)")
    ap.add_argument("--variants", default="before,after", help="comma list of before, after")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "overload")
    ap.add_argument("--smoke", action="store_true", help="tiny run for the test suite (a few seconds per load)")
    args = ap.parse_args()
    loads = [float(x) for x in args.loads.split(",")]
    duration = args.duration
    if args.smoke:
        loads, duration = [1.0], 4.0
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="overload-"))
    redis = RedisServer().start()
    try:
        capacity: list[float] = []
        runs = {v: run_variant(v, VARIANTS[v], loads, duration, args.seed, redis, workdir, capacity) for v in variants}
    finally:
        redis.stop()
    table = report(runs)
    (args.out / "results.json").write_text(json.dumps({"machine": machine_info(), "fleet_slots": SLOTS,
                                                       "mean_request_seconds": MEAN_SECONDS, "duration": duration,
                                                       "runs": runs}, indent=2))
    (args.out / "report.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
