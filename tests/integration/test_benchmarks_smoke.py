"""The real-stack benchmarks still run: ``--smoke`` of ``routing_quality.py``, ``overhead.py`` and
``api_cost.py``.

Each starts the real processes (simulator, Redis, poller, LiteLLM proxies; wrk for the overhead
and the API cost) for a few seconds of load and writes its report. Most of the time is LiteLLM's
start-up (one or two proxy processes each); on a busy 2-core machine each command takes ~50-80 s.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds per command: start-up of two LiteLLM proxies dominates and the cores are shared


def _run(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{script} --smoke exited {proc.returncode}\n--- stderr ---\n{proc.stderr[-4000:]}"
    return proc


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_routing_quality_smoke(tmp_path: Path) -> None:
    proc = _run("routing_quality.py", tmp_path)
    report = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["runs"]) == {"headroom", "shuffle"}
    for name, run in results["runs"].items():
        assert run["requests"] > 20, name
        assert run["ok"] >= 0.9 * run["requests"], f"{name}: only {run['ok']} of {run['requests']} succeeded"
        for key in ("p50_latency", "p99_latency", "p99_ttft", "upstream_429_rate", "client_429_rate"):
            assert _finite(run[key]), f"{name}.{key} = {run[key]!r}"
        assert 0 < run["p50_latency"] <= run["p99_latency"] < 60
        assert run["upstream_attempts"] >= run["ok"]
        assert abs(sum(c["inflight_share"] for c in run["per_chute"]) - 1) < 1e-6
        assert f"| {name} |" in report
    assert "| shuffle | p99_latency |" in report  # the target rows are printed (PASS or MISS)
    assert (tmp_path / "latency_cdf.png").stat().st_size > 0 and (tmp_path / "load_share.png").stat().st_size > 0
    assert "== headroom" in proc.stderr  # progress went to stderr


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_overhead_smoke(tmp_path: Path) -> None:
    _run("overhead.py", tmp_path)
    report = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    median = results["side_by_side"]["median"]
    assert set(median) == {"direct", "stock-error", "ours"}
    for path, m in median.items():
        assert m["rps"] > 0 and m["requests"] > 0, path
        assert _finite(m["p50_ms"]) and _finite(m["p99_ms"]) and _finite(m["cpu_ms"]), path
        assert m["non_2xx"] == 0, path
        assert f"| {path} |" in report
    assert median["direct"]["rps"] > median["ours"]["rps"]  # a proxy costs something: the numbers are not swapped
    assert median["direct"]["cpu_ms"] < median["ours"]["cpu_ms"]
    warm = results["side_by_side"]["warm_up"]
    assert set(warm) == set(median) and warm["ours"]["info_workers"] == 1  # every worker served before measuring
    cost = next(c for c in results["comparisons"] if c["kind"] == "cost")
    assert cost["interval"]["lo"] <= cost["interval"]["point"] <= cost["interval"]["hi"]
    assert results["verdict"] in ("PASS", "MISS") and "ours / stock-error, CPU per request" in report


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_api_cost_smoke(tmp_path: Path) -> None:
    _run("api_cost.py", tmp_path)
    report = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["rounds"]) == 4 * 2 * 2  # chat, messages, responses, chat-parts x short, long x plain, stream
    for cell, rounds in results["rounds"].items():
        (r,) = rounds
        assert r["requests"] > 0 and r["non_2xx"] == 0 and r["failed"] == 0, cell
        assert _finite(r["cpu_ms"]) and r["cpu_ms"] > 0, cell
    assert {(row["size"], row["mode"]) for row in results["rows"]} == {(s, m) for s in ("short", "long") for m in ("plain", "stream")}
    for row in results["rows"]:
        for api in ("messages", "responses"):
            iv = row[api]["interval"]
            assert _finite(iv["point"]) and iv["lo"] <= iv["point"] <= iv["hi"], (row["size"], row["mode"], api)
            assert row[api]["verdict"] in ("PASS", "MISS")
    assert results["verdict"] in ("PASS", "MISS") and "messages / chat [95% CI]" in report


def test_overload_smoke(tmp_path: Path) -> None:
    proc = _run("overload.py", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["runs"]) == {"before", "after"}
    for name, by_load in results["runs"].items():
        run = by_load["1.0"]
        assert by_load["capacity_per_second"] > 0, by_load
        assert run["sent"] > 5, name
        assert run["ok"] + run["client_429"] + run["other_errors"] == run["sent"], run
        assert run["other_errors"] == 0, run  # at 1.0x nothing but a 200 or a 429 (no timeout, no 5xx)
        if run["client_429"]:
            assert run["non_200_with_retry_after"] == 1.0, run  # every 429 says when to come back
    assert "| after | 1.0x |" in (tmp_path / "report.md").read_text()
    assert "== before, load 1.0x" in proc.stderr
