#!/usr/bin/env python
"""Throughput of the Chutes simulator on ONE core (the simulator must never be the bottleneck).

Starts the simulator pinned to core 0 (``taskset -c 0``) with near-zero latency
(SIM_TIME_SCALE tiny) and the benchmark fleet, drives it from core 1 with ``wrk`` (a Lua script
posts short non-streamed chat requests; falls back to an aiohttp client when wrk is missing)
and prints requests/s, p50/p99 latency and the count of non-200 answers.

    .venv/bin/python benchmarks/simulator_throughput.py [--duration 10] [--connections 64]
    .venv/bin/python benchmarks/simulator_throughput.py --smoke   # ~2 s, asserts it served requests
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

BODY = '{"model":"deepseek-ai/DeepSeek-V3-0324","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16}'
LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer cpk_bench"
""" % BODY


def _unit_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def run_wrk(url: str, duration: float, connections: int, pin: list[str]) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
    try:
        argv = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", f.name, url]
        print("driver:", " ".join(argv), flush=True)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    p50 = _unit_ms(re.search(r"50%\s+(\S+)", out).group(1))
    p99 = _unit_ms(re.search(r"99%\s+(\S+)", out).group(1))
    return {"rps": rps, "requests": total, "non_200": non2xx, "p50_ms": p50, "p99_ms": p99}


async def _aiohttp_driver(url: str, duration: float, connections: int) -> dict[str, float]:
    import aiohttp

    lat: list[float] = []
    non200 = 0
    deadline = time.perf_counter() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal non200
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                non200 += resp.status != 200
            lat.append(time.perf_counter() - t0)

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [float("nan")] * 99
    return {"rps": len(lat) / elapsed, "requests": len(lat), "non_200": non200, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    ap.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64; fleet capacity is 4096)")
    ap.add_argument("--time-scale", type=float, default=1e-6, help="SIM_TIME_SCALE (default 1e-6: near-zero latency)")
    ap.add_argument("--fleet", default=str(ROOT / "simulator" / "fleet-bench.yaml"))
    ap.add_argument("--no-wrk", action="store_true", help="use the aiohttp client even if wrk is installed")
    ap.add_argument("--smoke", action="store_true", help="run ~2 s and assert requests were served")
    args = ap.parse_args(argv)
    if args.smoke:
        args.duration, args.connections = 2.0, 8
    cores = os.cpu_count() or 1
    pinned = shutil.which("taskset") is not None and cores >= 2
    sim_prefix = ["taskset", "-c", "0"] if pinned else []
    driver_pin = ["taskset", "-c", "1"] if pinned else []
    print(f"starting simulator ({'pinned to core 0' if pinned else 'NOT pinned: taskset missing or 1 core'}, "
          f"SIM_TIME_SCALE={args.time_scale}) ...", flush=True)
    with SimulatorProcess(args.fleet, time_scale=args.time_scale, refresh_seconds=60, filler_entries=500,
                          prefix=sim_prefix, env={"LOG_LEVEL": "warning"}) as sim:
        url = sim.openai_base + "/chat/completions"
        print(f"load: {args.connections} connections for {args.duration:g}s against {url}", flush=True)
        if shutil.which("wrk") and not args.no_wrk:
            result = run_wrk(url, args.duration, args.connections, driver_pin)
        else:
            print("driver: aiohttp client (wrk not found or --no-wrk)", flush=True)
            result = asyncio.run(_aiohttp_driver(url, args.duration, args.connections))
        served = sim.state()
    total_served = sum(c["served"] for c in served["chutes"])
    print(f"requests/s: {result['rps']:.0f}   p50: {result['p50_ms']:.2f} ms   p99: {result['p99_ms']:.2f} ms   "
          f"requests: {result['requests']:.0f}   non-200: {result['non_200']:.0f}   served (simulator count): {total_served}")
    if args.smoke:
        assert result["requests"] > 0 and total_served > 0, "the simulator served no requests"
        assert result["non_200"] == 0, f"{result['non_200']} non-200 answers"
        print("smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
