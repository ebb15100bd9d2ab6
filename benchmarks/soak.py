"""Bounded soak of the native stack: steady load for minutes, memory of every process sampled.

    .venv/bin/python benchmarks/soak.py --minutes 5            # writes benchmarks/README-soak.md
    .venv/bin/python benchmarks/soak.py --smoke                # ~1 min, JSON only (the test suite)

Starts Redis (a local redis-server, or REDIS_URL), the simulator, the utilization poller and the
proxy (LiteLLM + hook, 2 workers) on loopback; keeps ``--concurrency`` clients busy (every 4th
request streamed), and every ``--sample-seconds`` reads VmRSS from /proc for each process: the
proxy's parent and every descendant (uvicorn workers), the poller, the simulator, Redis.
Reports, per process, RSS at the end of the warm-up (median of 3 samples) and at the end (median
of the last 3), the growth in percent, and the requests: sent, ok, failed with a clear error,
lost (timeout/transport error). Exit status 1 when lost > 0 or any growth > --max-growth.
Only 127.0.0.1 is touched.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "src", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import httpx  # noqa: E402

from chutes_lb.devstack import PollerProcess, ProxyProcess, write_config  # noqa: E402
from chutes_lb.localstack import RedisServer  # noqa: E402
from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

MASTER_KEY = "sk-soak-" + uuid.uuid4().hex[:12]
FLEET = [
    {"chute_id": "aaaaaaaa-0000-5000-8000-0000000000a1", "name": "soak/big", "instances": 4, "concurrency": 4},
    {"chute_id": "bbbbbbbb-0000-5000-8000-0000000000b2", "name": "soak/medium", "instances": 2, "concurrency": 4},
    {"chute_id": "cccccccc-0000-5000-8000-0000000000c3", "name": "soak/small", "instances": 1, "concurrency": 4},
]
SIM_DEFAULTS = {"ttft": {"median": 0.3, "sigma": 0.1}, "tps": {"median": 100, "sigma": 0.1},
                "output_tokens": {"median": 60, "sigma": 0.2, "max": 200}}
OUT = ROOT / "benchmarks" / "out"


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ memory
def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                out.append(int(k))
                stack.append(int(k))
    return out


def _role(pid: int) -> str:
    """'worker' for a uvicorn worker, else what the command line says (multiprocessing helpers)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"pid {pid}"
    if "resource_tracker" in cmd:
        return "resource tracker"
    return "worker" if "spawn_main" in cmd or "chutes_lb" in cmd else cmd[:40]


def sample(procs: dict[str, int]) -> dict[str, int]:
    """RSS (KiB) per process; the proxy's descendants are listed one by one (workers)."""
    result: dict[str, int] = {}
    for name, pid in procs.items():
        result[name] = rss_kib(pid)
        if name == "proxy":
            for i, child in enumerate(sorted(descendants(pid))):
                result[f"proxy child {i} ({_role(child)})"] = rss_kib(child)
    return result


# ------------------------------------------------------------------ load
class Load:
    def __init__(self, url: str, concurrency: int, timeout: float) -> None:
        self.url, self.concurrency, self.timeout = url, concurrency, timeout
        self.counts = {"sent": 0, "ok": 0, "failed_clear": 0, "failed_unclear": 0, "lost": 0}
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 30)

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        from tests.integration.reliability_matrix import one_request

        body = {"model": "chutes-models", "messages": [{"role": "user", "content": f"soak {i}"}], "max_tokens": 40, "stream": i % 4 == 0}
        res = await one_request(client, body)
        self.counts["sent"] += 1
        self.counts[res.outcome] += 1
        if res.outcome != "ok":
            key = f"{res.outcome} {res.status} {res.detail[:80]}"
            self.errors[key] = self.errors.get(key, 0) + 1

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency + 2, max_keepalive_connections=self.concurrency + 2)
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=self.timeout, limits=limits) as client:
            counter = iter(range(1 << 62))

            async def worker() -> None:
                while not self._stop.is_set():
                    await self._one(client, next(counter))

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))


# ------------------------------------------------------------------ run
def run(minutes: float, warmup: float, concurrency: int, sample_seconds: float, time_scale: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="chutes-soak-"))
    config = write_config(tmp / "litellm-config.yaml", FLEET)
    redis = None
    redis_url = os.environ.get("REDIS_URL")
    started: list[Any] = []
    try:
        if not redis_url:
            redis = RedisServer().start()
            redis_url = redis.url
        prefix = f"soak-{uuid.uuid4().hex[:8]}"
        sim = SimulatorProcess({"defaults": SIM_DEFAULTS, "chutes": FLEET}, time_scale=time_scale, refresh_seconds=5).start()
        started.append(sim)
        poller = PollerProcess(sim.base_url, redis_url, prefix, config=config, interval=2, log_dir=str(tmp)).start()
        started.append(poller)
        log("starting the proxy (LiteLLM import takes 20-60 s)")
        proxy = ProxyProcess(sim.openai_base, redis_url, MASTER_KEY, prefix, config=config, workers=2, log_dir=str(tmp)).start()
        started.append(proxy)
        procs = {"proxy": proxy.process.pid, "poller": poller.process.pid, "simulator": sim.process.pid}
        if redis is not None and redis.proc is not None:
            procs["redis"] = redis.proc.pid
        load = Load(proxy.base_url, concurrency, timeout=60).start()
        t0 = time.monotonic()
        samples: list[tuple[float, dict[str, int]]] = []
        total = minutes * 60
        while time.monotonic() - t0 < total:
            time.sleep(sample_seconds)
            samples.append((time.monotonic() - t0, sample(procs)))
            if len(samples) % max(1, int(30 / sample_seconds)) == 0:
                log(f"{samples[-1][0]:.0f}s: {load.counts} proxy tree {sum(v for k, v in samples[-1][1].items() if k.startswith('proxy')) / 1024:.0f} MiB")
        load.stop()
        elapsed = time.monotonic() - t0
        after = [s for s in samples if s[0] >= warmup]
        if len(after) < 6:
            raise SystemExit(f"too few samples after the warm-up ({len(after)}): run longer or sample more often")
        names = sorted({k for _, s in after for k in s})
        processes = {}
        for name in names:
            start = statistics.median(s.get(name, 0) for _, s in after[:3])
            end = statistics.median(s.get(name, 0) for _, s in after[-3:])
            peak = max(s.get(name, 0) for _, s in after)
            processes[name] = {"rss_after_warmup_mib": round(start / 1024, 1), "rss_end_mib": round(end / 1024, 1),
                               "peak_mib": round(peak / 1024, 1), "growth_pct": round(100 * (end - start) / start, 2) if start else None}
        proxy_total = [sum(v for k, v in s.items() if k.startswith("proxy")) for _, s in after]
        p_start, p_end = statistics.median(proxy_total[:3]), statistics.median(proxy_total[-3:])
        processes["proxy (parent + workers)"] = {"rss_after_warmup_mib": round(p_start / 1024, 1), "rss_end_mib": round(p_end / 1024, 1),
                                                 "peak_mib": round(max(proxy_total) / 1024, 1), "growth_pct": round(100 * (p_end - p_start) / p_start, 2)}
        return {
            "minutes": round(elapsed / 60, 2), "warmup_seconds": warmup, "concurrency": concurrency, "sample_seconds": sample_seconds,
            "time_scale": time_scale, "requests": dict(load.counts), "errors": load.errors,
            "requests_per_second": round(load.counts["sent"] / elapsed, 1), "processes": processes,
            "samples": len(samples), "cores": os.cpu_count(), "loadavg": os.getloadavg(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    finally:
        for p in reversed(started):
            try:
                p.stop()
            except Exception:
                pass
        if redis is not None:
            redis.stop()


def markdown(result: dict[str, Any], max_growth: float) -> str:
    r = result["requests"]
    lines = [
        "# Soak (native stack)", "",
        f"`benchmarks/soak.py --minutes {result['minutes']:.0f}` on {result['cores']} cores (load average at the end "
        f"{', '.join(f'{x:.1f}' for x in result['loadavg'])}; the machine is shared), finished {result['finished_at']}. "
        f"Redis, simulator (time scale {result['time_scale']}), poller, proxy with 2 workers; {result['concurrency']} clients "
        f"kept busy, every 4th request streamed; RSS sampled every {result['sample_seconds']} s from /proc; growth = median "
        f"of the last 3 samples vs median of the first 3 after a {result['warmup_seconds']:.0f} s warm-up.", "",
        f"Requests: **{r['sent']} sent, {r['ok']} ok, {r['failed_clear']} failed with a clear error, "
        f"{r['failed_unclear']} failed unclearly, {r['lost']} lost** ({result['requests_per_second']} req/s).", "",
        "| process | RSS after warm-up (MiB) | RSS at the end (MiB) | peak (MiB) | growth |",
        "|---|---|---|---|---|",
    ]
    for name, p in result["processes"].items():
        lines.append(f"| {name} | {p['rss_after_warmup_mib']} | {p['rss_end_mib']} | {p['peak_mib']} | {p['growth_pct']}% |")
    worst = max((p["growth_pct"] or 0) for p in result["processes"].values())
    verdict = "met" if worst <= max_growth and r["lost"] == 0 else "NOT met"
    lines += ["", f"Goal (growth after warm-up <= {max_growth:.0f}% for every process, zero lost requests): **{verdict}** "
              f"(worst growth {worst}%).", ""]
    if result["errors"]:
        lines += ["Errors seen:", ""] + [f"- {k}: {v}" for k, v in sorted(result["errors"].items())] + [""]
    lines += ["A short version (`--smoke`, about a minute) runs in the test suite: `tests/integration/test_soak_smoke.py`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=None, help="seconds (default: 20%% of the run, at least 30)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sample-seconds", type=float, default=5.0)
    ap.add_argument("--time-scale", type=float, default=0.5)
    ap.add_argument("--max-growth", type=float, default=10.0)
    ap.add_argument("--smoke", action="store_true", help="about a minute; JSON only, README-soak.md untouched")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.smoke:
        args.minutes, args.sample_seconds = 1.0, 2.0
        args.warmup = 20.0 if args.warmup is None else args.warmup
    warmup = args.warmup if args.warmup is not None else max(30.0, 0.2 * args.minutes * 60)
    result = run(args.minutes, warmup, args.concurrency, args.sample_seconds, args.time_scale)
    out = args.out or OUT / ("soak-smoke.json" if args.smoke else "soak.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out}")
    if not args.smoke:
        (ROOT / "benchmarks" / "README-soak.md").write_text(markdown(result, args.max_growth))
        log("wrote benchmarks/README-soak.md")
    print(json.dumps({k: result[k] for k in ("requests", "processes")}, indent=2))
    worst = max((p["growth_pct"] or 0) for p in result["processes"].values())
    return 0 if result["requests"]["lost"] == 0 and worst <= args.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
