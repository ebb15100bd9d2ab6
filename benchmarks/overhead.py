#!/usr/bin/env python
"""Overhead of the proxy: the same load, side by side, against a zero-latency simulator.

Paths (all on loopback, same model list, same wrk load: short non-streamed chat requests at
fixed concurrency for a fixed time):

    direct     wrk -> simulator (what the upstream alone costs)
    stock      wrk -> plain ``litellm --config <same model list, no callback> --num_workers W``,
               routing_strategy simple-shuffle: the honest "stock LiteLLM" baseline
    ours       wrk -> ``python -m chutes_lb.proxy`` (our ASGI front middleware: auth, validation,
               /metrics; our routing hook, default strategy ``headroom``; Redis snapshot + poller)
    haproxy    wrk -> HAProxy -> ours (what the Compose stack's front door adds)

``stock`` and ``ours`` run at the same time (an idle proxy costs nothing) so their rounds can be
interleaved (stock, ours, stock, ours, ...): slow drift of the machine's load (other jobs on the
same cores) hits both alike. Reported: median over rounds of requests/s and p50/p99 latency, and
``ours / stock`` throughput (target of issue 6: the hook costs <= 3% throughput).

Then a tuning sweep, one configuration at a time: workers 1 vs 2 (2 cores: more cannot help), our hook with
ROUTING_STRATEGY=passthrough (the hook returns the list untouched: isolates the cost of the
routing decision from the rest of our app), stock with LITELLM_LOG=ERROR. uvloop/httptools are
already what ``python -m chutes_lb.proxy`` runs; the ``litellm`` CLI picks uvloop itself when
installed. The decision's own cost in isolation: ``benchmarks/decision_cost.py``.

    .venv/bin/python benchmarks/overhead.py                    # ~10 min on a busy 2-core machine
    .venv/bin/python benchmarks/overhead.py --no-tuning --rounds 2 --duration 8
    .venv/bin/python benchmarks/overhead.py --smoke            # ~1 min, used by the tests
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (ROOT, MASTER_KEY, CpuMeter, fmt, litellm_config, load_average, log, machine_info,  # noqa: E402
                    md_table, ratio, start_all)

import yaml  # noqa: E402

from chutes_lb.devstack import PollerProcess, ProxyProcess  # noqa: E402
from chutes_lb.localstack import ManagedProcess, RedisServer, free_port, wait_http, wait_port  # noqa: E402
from chutes_lb.proxy.environment import LITELLM_OFFLINE  # noqa: E402
from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

FLEET_PATH = ROOT / "simulator" / "fleet-bench.yaml"
TARGET_THROUGHPUT_RATIO = 0.97  # ours / stock: the hook may cost at most 3%


def fleet_chutes() -> list[dict[str, Any]]:
    data = yaml.safe_load(FLEET_PATH.read_text())
    conc = int(data.get("defaults", {}).get("concurrency", 8))
    return [{"chute_id": c["chute_id"], "name": c["name"], "concurrency": int(c.get("concurrency", conc))} for c in data["chutes"]]


# ---------------------------------------------------------------------------- processes
class StockLiteLLM:
    """``litellm --config ... --num_workers N``: LiteLLM's own CLI, no code of ours in the process."""

    def __init__(self, config: Path, inference_base: str, workers: int, env: Mapping[str, str] | None = None, log_dir: str = "") -> None:
        self.port = free_port()
        cli = Path(sys.executable).with_name("litellm")
        child_env = dict(os.environ)
        child_env.update({
            "LITELLM_MASTER_KEY": MASTER_KEY, "CHUTES_INFERENCE_BASE": inference_base, "CHUTES_API_KEY": "bench-no-key",
            # needed offline (otherwise it downloads a cost map at import); not a tuning
            **LITELLM_OFFLINE,
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="stock-metrics-"), **(env or {}),
        })
        if "LITELLM_LOG" not in (env or {}):
            child_env.pop("LITELLM_LOG", None)  # stock = LiteLLM's own default log level
        self.process = ManagedProcess(f"litellm-{self.port}", [str(cli), "--config", str(config), "--host", "127.0.0.1",
                                                               "--port", str(self.port), "--num_workers", str(workers)],
                                      env=child_env, log_path=os.path.join(log_dir or tempfile.mkdtemp(), f"litellm-{self.port}.log"),
                                      cwd=str(config.parent))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "StockLiteLLM":
        self.process.start()
        wait_http(self.base_url + "/health/liveliness", timeout, proc=self.process)
        return self

    def stop(self) -> int | None:
        return self.process.stop(25)


class HAProxy:
    """A local HAProxy forwarding to one backend (HTTP mode, keep-alive both sides)."""

    def __init__(self, backend_port: int, log_dir: str) -> None:
        self.port = free_port()
        cfg = Path(log_dir) / f"haproxy-{self.port}.cfg"
        cfg.write_text(f"""global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fe
    bind 127.0.0.1:{self.port}
    default_backend be
backend be
    server proxy 127.0.0.1:{backend_port}
""")
        self.process = ManagedProcess(f"haproxy-{self.port}", [shutil.which("haproxy") or "haproxy", "-f", str(cfg), "-db"],
                                      log_path=os.path.join(log_dir, f"haproxy-{self.port}.log"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HAProxy":
        self.process.start()
        wait_port(self.port, 10, proc=self.process)
        return self

    def stop(self) -> int | None:
        return self.process.stop(5)


# ---------------------------------------------------------------------------- load
def _unit_ms(value: str) -> float:
    """wrk's time format (format_time_us): a number with us, ms, s, m or h."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if not m:
        log(f"  (unparsed wrk latency {value!r}: reported as n/a)")
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}[m.group(2)]


def answered(url: str, model: str, timeout: float = 90.0) -> None:
    """Block until ``url`` answers one chat request with 200 (bounded), so wrk measures a warm path."""
    import urllib.request

    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 16}).encode()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"})
        try:
            with urllib.request.urlopen(req, timeout=max(1.0, deadline - time.monotonic())) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # not ready yet: retry until the deadline
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{url} never answered 200 within {timeout:.0f}s: {last!r}")


def wrk(url: str, model: str, duration: float, connections: int, workdir: Path) -> dict[str, float]:
    """One wrk run (1 thread) posting a 16-token non-streamed chat request; bounded by a timeout."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 16})
    script = workdir / "post.lua"
    script.write_text(f"""wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {MASTER_KEY}"
""")
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": rps, "requests": total, "non_2xx": non2xx, "socket_errors": errors,
            "p50_ms": _unit_ms(re.search(r"50%\s+(\S+)", out).group(1)), "p99_ms": _unit_ms(re.search(r"99%\s+(\S+)", out).group(1))}


def measure(label: str, url: str, model: str, args: argparse.Namespace, workdir: Path, groups: Mapping[str, int]) -> dict[str, float]:
    meter = CpuMeter(groups).start()
    r = wrk(url, model, args.duration, args.connections, workdir)
    cpu = meter.stop()
    r["target_cores"] = sum(v for k, v in cpu.items() if k.startswith("target"))
    r["machine_busy"] = cpu["machine_busy_fraction"]
    log(f"  {label:<28} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
        f"non-2xx {r['non_2xx']:.0f}  target CPU {r['target_cores']:.2f} cores  machine busy {r['machine_busy']:.0%}")
    if r["requests"] == 0 or r["non_2xx"] > 0.01 * r["requests"]:
        raise RuntimeError(f"{label}: {r['non_2xx']:.0f} of {r['requests']:.0f} answers were not 2xx")
    return r


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


# ---------------------------------------------------------------------------- runs
def side_by_side(args: argparse.Namespace, sim: SimulatorProcess, redis: RedisServer, chutes: list[dict[str, Any]],
                 workdir: Path) -> dict[str, Any]:
    """direct / stock / ours / haproxy->ours, interleaved rounds, W workers each."""
    ours_cfg = litellm_config(workdir / "ours", chutes, with_hook=True)
    stock_cfg = litellm_config(workdir / "stock", chutes, with_hook=False)
    with ExitStack() as stack:
        poller = PollerProcess(sim.base_url, redis.url, "overhead", config=ours_cfg, interval=1.0, env={"LOG_LEVEL": "warning"},
                               log_dir=str(workdir / "ours"))
        ours = ProxyProcess(sim.openai_base, redis.url, MASTER_KEY, "overhead", config=ours_cfg, workers=args.workers,
                            strategy="headroom", env={"LOG_LEVEL": "warning"}, log_dir=str(workdir / "ours"))
        stock = StockLiteLLM(stock_cfg, sim.openai_base, args.workers, log_dir=str(workdir / "stock"))
        log(f"starting poller, our proxy and stock LiteLLM ({args.workers} workers each)")
        start_all(stack, [poller, ours, stock])
        paths: dict[str, tuple[str, str, int]] = {
            "direct": (sim.openai_base + "/chat/completions", chutes[0]["name"], sim.process.pid),
            "stock": (stock.base_url + "/v1/chat/completions", "chutes-models", stock.process.pid),
            "ours": (ours.base_url + "/v1/chat/completions", "chutes-models", ours.process.pid),
        }
        if args.haproxy:
            hap = HAProxy(ours.port, str(workdir))
            start_all(stack, [hap])
            paths["haproxy+ours"] = (hap.base_url + "/v1/chat/completions", "chutes-models", ours.process.pid)
        log("warm-up: one answered request, then a short run per path")
        for label, (url, model, _) in paths.items():
            answered(url, model)  # a path's first request can take seconds (client set-up, imports)
            wrk(url, model, 1, 4, workdir)
        rounds: dict[str, list[dict[str, float]]] = {k: [] for k in paths}
        for i in range(args.rounds):
            log(f"round {i + 1}/{args.rounds}")
            for label, (url, model, pid) in paths.items():
                rounds[label].append(measure(label, url, model, args, workdir, {"target": pid}))
    return {"rounds": rounds, "median": {k: median_of(v) for k, v in rounds.items()}}


def tuning(args: argparse.Namespace, sim: SimulatorProcess, redis: RedisServer, chutes: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """One configuration at a time, each measured right before a stock reference (stock LiteLLM
    with ``--workers``, kept running throughout): ``vs_stock`` is that paired ratio, robust to the
    machine's load drifting between configurations."""
    configs: list[tuple[str, str, int, dict[str, str]]] = [
        ("stock, 1 worker", "stock", 1, {}),
        (f"stock, {args.workers} workers, LITELLM_LOG=ERROR", "stock", args.workers, {"LITELLM_LOG": "ERROR"}),
        ("ours, 1 worker", "ours", 1, {}),
        (f"ours, {args.workers} workers, passthrough (no routing decision)", "ours", args.workers, {"ROUTING_STRATEGY": "passthrough"}),
    ]
    results: dict[str, dict[str, float]] = {}
    ref_dir = workdir / "tune-ref"
    with ExitStack() as outer:
        ref = StockLiteLLM(litellm_config(ref_dir, chutes, with_hook=False), sim.openai_base, args.workers, log_dir=str(ref_dir))
        log(f"tuning: starting the stock reference ({args.workers} workers)")
        start_all(outer, [ref])
        ref_url = ref.base_url + "/v1/chat/completions"
        for label, kind, workers, env in configs:
            d = workdir / f"tune-{len(results)}"
            with ExitStack() as stack:
                if kind == "stock":
                    proc: Any = StockLiteLLM(litellm_config(d, chutes, with_hook=False), sim.openai_base, workers, env=env, log_dir=str(d))
                else:
                    cfg = litellm_config(d, chutes, with_hook=True)
                    poller = PollerProcess(sim.base_url, redis.url, f"tune{len(results)}", config=cfg, interval=1.0,
                                           env={"LOG_LEVEL": "warning"}, log_dir=str(d))
                    start_all(stack, [poller])
                    proc = ProxyProcess(sim.openai_base, redis.url, MASTER_KEY, f"tune{len(results)}", config=cfg, workers=workers,
                                        strategy=env.get("ROUTING_STRATEGY", "headroom"), env={"LOG_LEVEL": "warning", **env},
                                        log_dir=str(d))
                log(f"tuning: starting {label}")
                start_all(stack, [proc])
                url = proc.base_url + "/v1/chat/completions"
                wrk(url, "chutes-models", 1, 4, workdir)
                r = measure(label, url, "chutes-models", args, workdir, {"target": proc.process.pid})
                ref_r = measure("  stock reference", ref_url, "chutes-models", args, workdir, {"target": ref.process.pid})
                r["vs_stock"] = ratio(r["rps"], ref_r["rps"])
                r["cpu_ms_vs_stock"] = ratio(r["target_cores"] / r["rps"], ref_r["target_cores"] / ref_r["rps"])
                r["stock_rps"] = ref_r["rps"]
                results[label] = r
    return results


# ---------------------------------------------------------------------------- report
def write_report(out_dir: Path, info: dict[str, str], args: argparse.Namespace, main: dict[str, Any], tune: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    med = main["median"]
    stock, ours = med["stock"], med["ours"]
    # Paired per round: stock and ours ran back to back, so a round's ratio shares the machine's
    # state; the median of those ratios is the verdict (a ratio of medians can pair unlike rounds).
    paired = [ratio(o["rps"], s_["rps"]) for s_, o in zip(main["rounds"]["stock"], main["rounds"]["ours"])]
    tp = statistics.median(paired)
    cpu_ms = {k: [1000 * r["target_cores"] / r["rps"] for r in v] for k, v in main["rounds"].items()}
    verdict = "PASS" if tp >= TARGET_THROUGHPUT_RATIO else "MISS"
    lines = [f"# Proxy overhead ({info['date']})", "",
             f"Machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}; load average at start "
             f"{info['load_average_start']}, at end {info.get('load_average_end', 'n/a')}.", "",
             f"Load: wrk, 1 thread, {args.connections} connections, {args.duration:g} s per measurement, non-streamed chat "
             f"requests (max_tokens 16) against a zero-latency simulator (SIM_TIME_SCALE {args.time_scale:g}, "
             f"fleet-bench.yaml: 4 chutes x 1024 slots, never full). {args.rounds} interleaved rounds; medians. "
             f"Proxies: {args.workers} uvicorn workers each.", "",
             md_table(["path", "req/s", "p50 ms", "p99 ms", "target CPU (cores)", "CPU ms / request", "machine busy",
                       "rounds (req/s)"],
                      [[k, fmt(v["rps"], 1), fmt(v["p50_ms"], 1), fmt(v["p99_ms"], 1), fmt(v["target_cores"]),
                        fmt(statistics.median(cpu_ms[k]), 1), f"{v['machine_busy']:.0%}",
                        ", ".join(f"{r['rps']:.0f}" for r in main["rounds"][k])] for k, v in med.items()]), "",
             "Medians over rounds. 'target CPU' = CPU of the process tree receiving wrk's requests (the simulator for "
             "direct, the proxy's workers otherwise; HAProxy's own CPU is not counted).", "",
             f"**ours / stock throughput, paired per round: {', '.join(fmt(x, 3) for x in paired)}; median {fmt(tp, 3)} "
             f"(target >= {TARGET_THROUGHPUT_RATIO}: {verdict})**. Ratio of the medians: "
             f"{fmt(ratio(ours['rps'], stock['rps']), 3)}. CPU per request ours / stock (median of rounds): "
             f"{fmt(ratio(statistics.median(cpu_ms['ours']), statistics.median(cpu_ms['stock'])), 3)}. "
             f"Latency ours / stock: p50 {fmt(ratio(ours['p50_ms'], stock['p50_ms']))}, p99 {fmt(ratio(ours['p99_ms'], stock['p99_ms']))}.", ""]
    if verdict == "MISS":
        lines += [f"Likely reason: our path does more per request than stock LiteLLM: the front ASGI middleware (auth, "
                  f"JSON validation of the body), our prometheus-client metrics in multiprocess mode (files written per "
                  f"sample), the routing callback (snapshot lookup, in-flight bookkeeping in the success/failure "
                  f"callbacks) and the Redis pub/sub + in-flight publishing tasks. The tuning table separates the "
                  f"routing decision (passthrough) from the rest.", ""]
    if "haproxy+ours" in med:
        lines += [f"HAProxy in front of ours: throughput x{fmt(ratio(med['haproxy+ours']['rps'], ours['rps']), 3)}, "
                  f"p50 {med['haproxy+ours']['p50_ms'] - ours['p50_ms']:+.1f} ms (medians; HAProxy shares the 2 cores).", ""]
    if tune:
        lines += ["## Tuning", "",
                  f"One configuration at a time, each measured right before stock LiteLLM with {args.workers} workers "
                  "(running throughout): 'vs stock' is that paired ratio. Single measurements: +-5% is noise here.", "",
                  md_table(["configuration", "req/s", "p50 ms", "p99 ms", "CPU (cores)", "stock req/s (paired)", "vs stock (req/s)",
                            "CPU per request vs stock"],
                           [[k, fmt(v["rps"], 1), fmt(v["p50_ms"], 1), fmt(v["p99_ms"], 1), fmt(v["target_cores"]), fmt(v["stock_rps"], 1),
                             fmt(v["vs_stock"], 3), fmt(v["cpu_ms_vs_stock"], 3)] for k, v in tune.items()]), ""]
        candidates = {f"ours, {args.workers} workers, headroom (side by side)": tp,
                      **{k: v["vs_stock"] for k, v in tune.items() if k.startswith("ours") and "passthrough" not in k}}
        best = max(candidates.items(), key=lambda kv: kv[1])
        lines += [f"Best routing configuration of ours: **{best[0]}**, {fmt(best[1], 3)} x stock LiteLLM "
                  f"({args.workers} workers) in paired runs. The passthrough row is not a deployable configuration (no "
                  "routing): it shows how much of the gap is the routing decision and its bookkeeping versus the rest "
                  "of our app (middleware, metrics).", ""]
    lines += ["The routing decision alone: `benchmarks/decision_cost.py` (microbenchmark; see BENCHMARKS.md).", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps({"info": info, "args": vars(args), "side_by_side": main, "tuning": tune,
                                                      "ours_over_stock_throughput": tp, "paired_ratios": paired,
                                                      "verdict": verdict}, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the side-by-side runs (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers of each proxy (default 2, the project default)")
    ap.add_argument("--time-scale", type=float, default=1e-6, help="SIM_TIME_SCALE (default 1e-6: near-zero latency)")
    ap.add_argument("--no-haproxy", dest="haproxy", action="store_false", default=True, help="skip the HAProxy path")
    ap.add_argument("--no-tuning", dest="tuning", action="store_false", default=True, help="skip the tuning sweep")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "overhead"))
    ap.add_argument("--smoke", action="store_true", help="~2 s per path, 1 round, 1 worker, no HAProxy, no tuning (for the tests)")
    ap.add_argument("--report-from", metavar="RESULTS_JSON", help="only re-render report.md from a results.json of an earlier run")
    args = ap.parse_args(argv)
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        report = write_report(Path(args.out), saved["info"], argparse.Namespace(**saved["args"]), saved["side_by_side"], saved["tuning"])
        print(report.read_text())
        return 0
    if args.smoke:
        args.duration, args.rounds, args.workers, args.connections, args.haproxy, args.tuning = 3.0, 1, 1, 8, False, False
    if not shutil.which("wrk"):
        ap.error("wrk is required (apt-get install wrk)")
    if args.haproxy and not shutil.which("haproxy"):
        log("haproxy not found: skipping the haproxy path")
        args.haproxy = False
    info = machine_info()
    log(f"machine: {info['cores']} cores, {info['cpu']}, load average {info['load_average_start']}")
    chutes = fleet_chutes()
    workdir = Path(tempfile.mkdtemp(prefix="overhead-"))
    tune: dict[str, Any] = {}
    with ExitStack() as stack:
        redis = RedisServer().start()
        stack.callback(redis.stop)
        sim = SimulatorProcess(FLEET_PATH, time_scale=args.time_scale, refresh_seconds=5, env={"LOG_LEVEL": "warning"})
        start_all(stack, [sim])
        result = side_by_side(args, sim, redis, chutes, workdir)
        if args.tuning:
            tune = tuning(args, sim, redis, chutes, workdir)
    info["load_average_end"] = load_average()
    report = write_report(Path(args.out), info, args, result, tune)
    log(f"report: {report}")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
