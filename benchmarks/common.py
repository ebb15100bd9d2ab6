"""Shared helpers of the real-stack benchmarks (``routing_quality.py``, ``overhead.py``).

What lives here: progress logging on stderr, a description of the machine (cores, CPU model,
load average) for the reports, CPU accounting of process groups, of each process in a group
and of the whole machine (``/proc``) so a report can say how much headroom the proxy had and
whether every worker served, LiteLLM configs generated for a fleet (with or without our routing
callback), starting several processes at once with every one of them stopped on the way out,
one ``wrk`` run posting a body from a file, percentiles, and the interval of a mean over rounds
(:func:`round_interval`, through ``benchmarks/stats.py``) for verdicts that must hold for the
whole interval.

Nothing here talks to anything but 127.0.0.1.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "src", ROOT):  # chutes_lb, and benchmarks.stats
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from chutes_lb.devstack import write_config  # noqa: E402

MASTER_KEY = "sk-bench-7c1f0e55a9"
_T0 = time.monotonic()


def log(message: str) -> None:
    """One progress line on stderr, prefixed with seconds since start."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def machine_info() -> dict[str, str]:
    """What a reader needs to judge the numbers: when, where, how busy the machine was."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "load_average_start": load_average(),
    }


# ---------------------------------------------------------------------------- CPU accounting
_CLK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pgid: int) -> dict[int, float]:
    """pid -> utime+stime (seconds) of every live process whose process group is ``pgid`` (a
    ManagedProcess runs in its own session, so this is the process and all its workers)."""
    out: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        # after "pid (comm) ": state ppid pgrp session ... utime(idx 11) stime(idx 12)
        if int(fields[2]) == pgid:
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _CLK
    return out


def group_cpu_seconds(pgid: int) -> float:
    """utime+stime of every live process whose process group is ``pgid``."""
    return sum(process_cpu_seconds(pgid).values())


def busiest_shares(before: Mapping[int, float], after: Mapping[int, float], wall: float, n: int) -> list[float]:
    """Cores used by each of the ``n`` busiest processes between two :func:`process_cpu_seconds`
    readings, busiest first (a process born in between counts from 0, one that is gone is left
    out): with ``n`` = the workers of a proxy, the smallest entry says whether every worker served."""
    used = sorted(((after[pid] - before.get(pid, 0.0)) / max(wall, 1e-9) for pid in after), reverse=True)
    return (used + [0.0] * n)[:n]


def machine_cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return float(total - idle), float(total)


class CpuMeter:
    """CPU used by some process groups and by the machine between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: Mapping[str, int]) -> None:
        self.groups = dict(groups)
        self._start: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self._t = 0.0
        self.result: dict[str, float] = {}
        self._procs: dict[str, dict[int, float]] = {}
        self.per_process: dict[str, tuple[dict[int, float], dict[int, float], float]] = {}

    def shares(self, group: str, n: int) -> list[float]:
        """After :meth:`stop`: cores used by the ``n`` busiest processes of ``group`` (see
        :func:`busiest_shares`)."""
        before, after, wall = self.per_process[group]
        return busiest_shares(before, after, wall, n)

    def start(self) -> "CpuMeter":
        self._procs = {k: process_cpu_seconds(p) for k, p in self.groups.items()}
        self._start = {k: sum(v.values()) for k, v in self._procs.items()}
        self._machine = machine_cpu_times()
        self._t = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t, 1e-9)
        busy, total = machine_cpu_times()
        cores = os.cpu_count() or 1
        now = {k: process_cpu_seconds(p) for k, p in self.groups.items()}
        self.per_process = {k: (self._procs[k], v, wall) for k, v in now.items()}
        self.result = {f"{k}_cores": (sum(now[k].values()) - self._start[k]) / wall for k in self.groups}
        self.result["machine_busy_fraction"] = (busy - self._machine[0]) / max(total - self._machine[1], 1.0)
        self.result["machine_cores"] = float(cores)
        self.result["wall_seconds"] = wall
        return self.result


# ---------------------------------------------------------------------------- configs
BENCH_FLEET = ROOT / "simulator" / "fleet-bench.yaml"  # 4 chutes x 1,024 slots: never full


def bench_fleet_chutes() -> list[dict[str, Any]]:
    """The chutes of :data:`BENCH_FLEET` (id, name, concurrency), for :func:`litellm_config`."""
    data = yaml.safe_load(BENCH_FLEET.read_text())
    conc = int(data.get("defaults", {}).get("concurrency", 8))
    return [{"chute_id": c["chute_id"], "name": c["name"], "concurrency": int(c.get("concurrency", conc))} for c in data["chutes"]]


def litellm_config(directory: Path, chutes: Sequence[Mapping[str, Any]], *, routing_strategy: str = "simple-shuffle",
                   with_hook: bool = True, timeout: float | None = None, extra_callbacks: Iterable[str] = ()) -> Path:
    """A LiteLLM config for ``chutes`` in ``directory`` (the project's router settings).

    ``with_hook`` keeps our routing callback (the installed ``chutes_routing`` module); without it
    the config is what a stock LiteLLM proxy would run.
    ``model_info.concurrency`` is per instance, as in the project's config.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = write_config(directory / "litellm-config.yaml", chutes)
    data = yaml.safe_load(path.read_text())
    data["router_settings"]["routing_strategy"] = routing_strategy
    callbacks = [c for c in data["litellm_settings"].get("callbacks", []) if with_hook or "chutes_routing" not in c]
    data["litellm_settings"]["callbacks"] = [*callbacks, *extra_callbacks]
    if timeout is not None:
        for entry in data["model_list"]:
            entry["litellm_params"]["timeout"] = timeout
            entry["litellm_params"]["stream_timeout"] = timeout
        data["router_settings"]["timeout"] = timeout
        data["litellm_settings"]["request_timeout"] = timeout
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- processes
def start_all(stack: ExitStack, processes: Sequence[Any], timeout_note: str = "") -> list[Any]:
    """Start processes (objects with ``start()``/``stop()``) concurrently; each is registered on
    ``stack`` to be stopped even when another fails to start. Raises the first start error."""
    for p in processes:
        stack.callback(_quiet_stop, p)
    with ThreadPoolExecutor(max_workers=len(processes) or 1) as pool:
        futures = [pool.submit(p.start) for p in processes]
        errors = [f.exception() for f in futures]
    for err in errors:
        if err is not None:
            raise RuntimeError(f"start failed{timeout_note}: {err}") from err
    return list(processes)


def _quiet_stop(process: Any) -> None:
    try:
        process.stop()
    except Exception as exc:  # a stop must never hide the benchmark's own error
        log(f"warning: stopping {process!r} failed: {exc}")


# ---------------------------------------------------------------------------- load
def _unit_ms(value: str) -> float:
    """wrk's time format (format_time_us): a number with us, ms, s, m or h."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if not m:
        log(f"  (unparsed wrk latency {value!r}: reported as n/a)")
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}[m.group(2)]


def wrk_post(url: str, body: bytes | str, duration: float, connections: int, workdir: Path,
             headers: Mapping[str, str] | None = None, name: str = "post") -> dict[str, float]:
    """One ``wrk`` run (1 thread, ``connections`` keep-alive connections, ``duration`` seconds)
    POSTing ``body`` (read from a file by the Lua script, so any size and any bytes work) with
    ``Content-Type: application/json`` and the bench master key; bounded by a timeout. wrk reads
    each answer to its end (a stream too), so "requests" counts whole answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    body_path = workdir / f"{name}.body"
    body_path.write_bytes(body.encode() if isinstance(body, str) else body)
    all_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}", **(headers or {})}
    script = workdir / f"{name}.lua"
    script.write_text("local f = assert(io.open(" + json.dumps(str(body_path)) + ", \"rb\"))\n"
                      "wrk.body = f:read(\"*a\")\nf:close()\nwrk.method = \"POST\"\n"
                      + "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in all_headers.items()))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    # the "Latency Distribution" lines ("     50%    3.10ms"), not a "+/- Stdev" column ending in 50%
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return {"rps": rps, "requests": total, "non_2xx": non2xx, "socket_errors": errors,
            "p50_ms": _unit_ms(p50.group(1)) if p50 else float("nan"), "p99_ms": _unit_ms(p99.group(1)) if p99 else float("nan")}


# ---------------------------------------------------------------------------- numbers
def pct(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0-100), NaN for no values."""
    arr = np.asarray(values, dtype=float)
    return float(np.percentile(arr, q)) if arr.size else float("nan")


def ratio(a: float, b: float) -> float:
    """a / b; NaN when undefined, inf when only the denominator is zero."""
    if b == 0:
        return float("nan") if a == 0 else float("inf")
    return a / b


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x != x else ("inf" if x == float("inf") else f"{x:.{digits}f}")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- intervals
def round_interval(values: Sequence[float], n_boot: int = 10_000, conf: float = 0.95, seed: int = 0) -> dict[str, float]:
    """The mean of per-round values (e.g. each round's paired ratio ours / stock) with its
    percentile bootstrap interval, rounds resampled with replacement: ``benchmarks/stats.py``'s
    ``bootstrap_stat`` (the project's one bootstrap), seeded, so a report re-renders the same.

    Returned as a dict (``point``, ``lo``, ``hi``, ``conf``, ``n`` = rounds it rests on) for the
    results JSON; :func:`interval` turns it back into a ``stats.Interval`` for ``within`` /
    ``above``. NaN rounds are dropped; none give NaNs; one gives a zero-width interval (the report
    says ``n``). With few rounds (< 10) a percentile interval is somewhat too narrow."""
    from benchmarks.stats import bootstrap_stat, mean

    v = np.asarray([x for x in values if x == x], dtype=float)
    if not v.size:
        return {"point": float("nan"), "lo": float("nan"), "hi": float("nan"), "conf": conf, "n": 0}
    iv = bootstrap_stat(v, mean, np.random.default_rng(seed), n_boot=n_boot, conf=conf)
    return {"point": iv.point, "lo": iv.lo, "hi": iv.hi, "conf": iv.conf, "n": int(v.size)}


def interval(d: Mapping[str, float]) -> Any:
    """A :func:`round_interval` dict as a ``benchmarks.stats.Interval``."""
    from benchmarks.stats import Interval

    return Interval(d["point"], d["lo"], d["hi"], d.get("conf", 0.95))


def interval_text(d: Mapping[str, float], digits: int = 3) -> str:
    """``1.010 [0.980, 1.040]``"""
    return f"{fmt(d['point'], digits)} [{fmt(d['lo'], digits)}, {fmt(d['hi'], digits)}]"
