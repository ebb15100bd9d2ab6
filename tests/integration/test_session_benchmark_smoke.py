"""The real-stack session benchmark still runs: ``benchmarks/session_quality.py --smoke``.

Starts the real processes (simulator with prefix caches, Redis, poller, one LiteLLM proxy per
strategy) and replays a few seconds of Chutes-shaped sessions whose turns resend the real
answers; ~60-120 s on a busy 2-core machine (LiteLLM's start-up dominates).
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_session_quality_smoke(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "session_quality.py"), "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exited {proc.returncode}\n--- stderr ---\n{proc.stderr[-4000:]}"
    results = json.loads((tmp_path / "results.json").read_text())
    runs = results["runs"]["0.5"]
    assert set(runs) == {"affinity", "no-affinity"}
    for name, (run,) in runs.items():
        assert run["turns"] > 20 and run["follow_turns"] > 5, name
        assert run["ok"] >= 0.9 * run["turns"], f"{name}: {run['ok']} of {run['turns']} turns served"
        for key in ("ttft_first_p50", "ttft_follow_p50", "ttft_follow_p99", "latency_p99", "computed_share", "max_over_mean_load"):
            assert isinstance(run[key], float) and math.isfinite(run[key]), f"{name}.{key} = {run[key]!r}"
        assert 0 < run["computed_tokens"] <= run["prompt_tokens"], name  # usage reached the client
        assert 0 < run["ttft_follow_p50"] <= run["ttft_follow_p99"] < 60
    # the proxies counted their session decisions; without affinity they make none
    assert runs["affinity"][0]["affinity_outcomes"].get("hit", 0) > 0
    assert not runs["no-affinity"][0]["affinity_outcomes"]
    with open(tmp_path / "turns.csv") as f:
        turns = list(csv.DictReader(f))
    # a follow-up resends the conversation: its prompt is longer than the session's first turn
    first = {(t["run"], t["session"]): int(t["prompt_tokens"]) for t in turns if t["turn"] == "0" and t["status"] == "200"}
    later = [(t["run"], t["session"], int(t["prompt_tokens"])) for t in turns if t["turn"] != "0" and t["status"] == "200"]
    assert later and all(p > first[(r, s)] for r, s, p in later if (r, s) in first)
    report = (tmp_path / "report.md").read_text()
    assert "| affinity |" in report and "follow-up TTFT p50" in report
    assert (tmp_path / "ttft_cdf.png").stat().st_size > 0 and (tmp_path / "load_share.png").stat().st_size > 0
    assert "== affinity" in proc.stderr  # progress went to stderr
