"""The soak in short (benchmarks/soak.py --smoke, about a minute of load): zero lost requests,
zero failed requests (the fleet is healthy and the load fits it), and memory growth after the
warm-up within a bound. The full soak (minutes) is benchmarks/soak.py; its figures are in
benchmarks/README-soak.md."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

# One minute is short: a LiteLLM worker still fills caches after 20 s. The full soak holds 10 %.
SMOKE_MAX_GROWTH_PCT = 15.0


def test_soak_smoke(tmp_path: Path) -> None:
    out = tmp_path / "soak-smoke.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--smoke", "--concurrency", "6",
                           "--max-growth", str(SMOKE_MAX_GROWTH_PCT), "--out", str(out)],
                          capture_output=True, text=True, timeout=360, cwd=ROOT)
    assert out.exists(), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    print(json.dumps({k: result[k] for k in ("requests", "processes")}, indent=1))
    req = result["requests"]
    assert req["sent"] >= 60, req
    assert req["lost"] == 0, (req, result["errors"])
    assert req["failed_clear"] == req["failed_unclear"] == 0, (req, result["errors"])
    assert sum(name.startswith("proxy child") and "worker" in name for name in result["processes"]) == 2, result["processes"].keys()
    for name, p in result["processes"].items():
        assert p["growth_pct"] is not None and p["growth_pct"] <= SMOKE_MAX_GROWTH_PCT, (name, p)
    assert proc.returncode == 0, proc.stderr[-3000:]
