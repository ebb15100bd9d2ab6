"""promtool accepts prometheus/prometheus.yml and the alert rules (the CI promtool is 2.42, the
oldest Prometheus the stack must run on; the pinned image is 3.x)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    proc = subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@needs_promtool
def test_promtool_check_config() -> None:
    out = promtool("check", "config", "prometheus/prometheus.yml")
    assert "SUCCESS" in out.stdout + out.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", "prometheus/alerts.yml")
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_service_is_scraped() -> None:
    cfg = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    proxy = jobs["proxy"]
    (sd,) = proxy["dns_sd_configs"]
    assert sd["names"] == ["proxy"] and sd["type"] == "A" and sd["port"] == 4000
    assert proxy.get("metrics_path", "/metrics") == "/metrics"
    assert jobs["utilization-poller"]["static_configs"][0]["targets"] == ["utilization-poller:9101"]
    assert jobs["lb"]["static_configs"][0]["targets"] == ["lb:8404"]
    assert cfg["rule_files"] == ["alerts.yml"]


def test_required_alerts_exist() -> None:
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"PollerDown", "PollerStale", "SnapshotOld", "ChuteErrorRateHigh", "ChuteRateLimitedHigh",
            "AllChutesSaturated", "ProxyReplicaDown"} <= names
    for g in rules["groups"]:
        for r in g["rules"]:
            assert r.get("for") and r["labels"].get("severity") and r["annotations"].get("summary"), r["alert"]
