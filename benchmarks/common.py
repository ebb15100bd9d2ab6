"""Shared helpers of the real-stack benchmarks (``routing_quality.py``, ``overhead.py``).

What lives here: progress logging on stderr, a description of the machine (cores, CPU model,
load average) for the reports, CPU accounting of process groups and of the whole machine
(``/proc``) so a report can say how much headroom the proxy had, LiteLLM configs generated for
a fleet (with or without our routing callback), starting several processes at once with every
one of them stopped on the way out, and percentiles.

Nothing here talks to anything but 127.0.0.1.
"""
from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

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


def group_cpu_seconds(pgid: int) -> float:
    """utime+stime of every live process whose process group is ``pgid`` (a ManagedProcess
    runs in its own session, so this is the process and all its workers)."""
    total = 0
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
            total += int(fields[11]) + int(fields[12])
    return total / _CLK


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

    def start(self) -> "CpuMeter":
        self._start = {k: group_cpu_seconds(p) for k, p in self.groups.items()}
        self._machine = machine_cpu_times()
        self._t = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t, 1e-9)
        busy, total = machine_cpu_times()
        cores = os.cpu_count() or 1
        self.result = {f"{k}_cores": (group_cpu_seconds(p) - self._start[k]) / wall for k, p in self.groups.items()}
        self.result["machine_busy_fraction"] = (busy - self._machine[0]) / max(total - self._machine[1], 1.0)
        self.result["machine_cores"] = float(cores)
        self.result["wall_seconds"] = wall
        return self.result


# ---------------------------------------------------------------------------- configs
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
