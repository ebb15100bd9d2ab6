"""``GET /chutes/utilization`` over HTTP: stale between refreshes, then reflecting load; fault modes."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from chutes_lb.simulator.launch import SimulatorProcess

from sim_fleets import FLEET, SLOW_ID, TIME_SCALE

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"chute_id": str, "name": str, "timestamp": str, "utilization_current": float, "utilization_5m": float,
          "utilization_15m": float, "utilization_1h": float, "rate_limit_ratio_5m": float, "rate_limit_ratio_15m": float,
          "rate_limit_ratio_1h": float, "total_requests_5m": float, "total_requests_15m": float, "total_requests_1h": float,
          "completed_requests_5m": float, "completed_requests_15m": float, "completed_requests_1h": float,
          "rate_limited_requests_5m": float, "rate_limited_requests_15m": float, "rate_limited_requests_1h": float,
          "instance_count": int, "action_taken": str, "target_count": int, "effective_multiplier": float,
          "total_instance_count": int, "active_instance_count": int, "scalable": bool, "scale_allowance": int,
          "avg_busy_ratio": float, "total_invocations": float, "total_rate_limit_errors": float}


def valid(e: dict) -> bool:
    return set(e) == set(FIELDS) and all(type(e[k]) is t for k, t in FIELDS.items()) and all(
        math.isfinite(e[k]) and 0 <= e[k] <= 1 for k in FIELDS if k.startswith("utilization_"))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(FLEET, time_scale=TIME_SCALE, refresh_seconds=2.0, filler_entries=50) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(sim):
    sim.reset()


def _chat(sim: SimulatorProcess, model: str) -> int:
    req = urllib.request.Request(sim.openai_base + "/chat/completions", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_shape_and_sorting(sim):
    status, body = sim.utilization()
    entries = json.loads(body)
    assert status == 200 and len(entries) == 3 + 50
    assert all(valid(e) for e in entries)
    assert len({e["timestamp"] for e in entries}) == 1 and "+" not in entries[0]["timestamp"] and "Z" not in entries[0]["timestamp"]
    totals = [e["total_requests_1h"] for e in entries]
    assert totals == sorted(totals, reverse=True)
    cold = next(e for e in entries if e["name"] == "sim/cold")
    assert (cold["instance_count"], cold["active_instance_count"], cold["total_instance_count"]) == (0, 0, 0)


def test_stale_until_refresh_then_reflects_load(sim):
    v0 = sim.refresh_utilization()
    _, body0 = sim.utilization()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(_chat(sim, "sim/slow"))) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.4)  # all 3 slots busy, one 429 already counted
    assert sim.chute_state(SLOW_ID)["in_flight"] == 3
    _, during = sim.utilization()
    assert during == body0 and sim.state()["utilization"]["version"] == v0  # stale: same cached bytes
    for t in threads:
        t.join(10)
    assert sorted(results) == [200, 200, 200, 429]
    # the next scheduled refresh after every request finished (ttft grows with load: up to ~2 s)
    v1 = sim.state()["utilization"]["version"]
    deadline = time.monotonic() + 6
    while sim.state()["utilization"]["version"] == v1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sim.state()["utilization"]["version"] > v1
    entries = json.loads(sim.utilization()[1])
    slow = next(e for e in entries if e["chute_id"] == SLOW_ID)
    assert valid(slow)
    assert (slow["total_requests_5m"], slow["completed_requests_5m"], slow["rate_limited_requests_5m"]) == (4.0, 3.0, 1.0)
    assert slow["rate_limit_ratio_5m"] == pytest.approx(0.25)
    assert slow["utilization_current"] > 0.05 and slow["utilization_5m"] > 0
    assert slow["timestamp"] > json.loads(body0)[0]["timestamp"]


def test_admin_refresh_bumps_version(sim):
    v = sim.refresh_utilization()
    assert sim.refresh_utilization() == v + 1 and sim.state()["utilization"]["version"] == v + 1


@pytest.mark.parametrize("mode", ["normal", "garbage", "not_list", "status", "slow", "truncated", "huge", "bad_entries"])
def test_utilization_modes(sim, mode):
    fields = {"mode": mode}
    if mode == "status":
        fields["status"] = 503
    if mode == "slow":
        fields["delay_seconds"] = 0.7
    if mode == "huge":
        fields["size_bytes"] = 3_000_000
    assert sim.set_utilization(**fields)["mode"] == mode
    t0 = time.perf_counter()
    status, body = sim.utilization()
    elapsed = time.perf_counter() - t0
    if mode == "status":
        assert status == 503
        return
    assert status == 200
    if mode in ("garbage", "truncated"):
        with pytest.raises(ValueError):
            json.loads(body)
        return
    data = json.loads(body)
    if mode == "not_list":
        assert isinstance(data, dict)
        return
    assert isinstance(data, list)
    if mode == "slow":
        assert elapsed >= 0.7 and all(valid(e) for e in data)
    elif mode == "huge":
        assert len(body) >= 3_000_000 and all(valid(e) for e in data)
    elif mode == "bad_entries":
        good = [e for e in data if valid(e)]
        assert 0 < len(good) < len(data)
        assert len(data) - len(good) == len(sim.state()["utilization"]["malformed_chute_ids"])
    else:
        assert all(valid(e) for e in data)


def test_refresh_seconds_can_change(sim):
    sim.set_utilization(refresh_seconds=0.3)
    v = sim.state()["utilization"]["version"]
    t0 = time.monotonic()
    while sim.state()["utilization"]["version"] < v + 2 and time.monotonic() - t0 < 10:
        time.sleep(0.1)  # bounded: a busy machine may delay the refresh task, not stop it
    assert sim.state()["utilization"]["version"] >= v + 2
    assert time.monotonic() - t0 < 10


def test_benchmark_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/simulator_throughput.py"), "--smoke"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "smoke: OK" in out.stdout and "requests/s:" in out.stdout
