"""promtool accepts prometheus/prometheus.yml and the alert rules (the CI promtool is 2.42, the
oldest Prometheus the stack must run on; the pinned image is 3.x), and every alert is proven to
fire by ``promtool test rules`` (tests/prometheus/alerts_test.yml)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ALERT_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
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


@needs_promtool
def test_promtool_alert_unit_tests() -> None:
    """Every alert fires on its series, after its ``for:``, with its labels and rendered annotations."""
    out = promtool("test", "rules", str(ALERT_TESTS.relative_to(ROOT)))
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    """A new alert without a case in alerts_test.yml that expects it to fire fails here."""
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load(ALERT_TESTS.read_text())
    assert cases["rule_files"] == ["../../prometheus/alerts.yml"]
    fired = {c["alertname"] for t in cases["tests"] for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    quiet = {c["alertname"] for t in cases["tests"] for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
    assert alerts - fired == set(), "alerts never expected to fire in tests/prometheus/alerts_test.yml"
    assert alerts - quiet == set(), "alerts without a case where they must stay quiet (before for:, or a healthy neighbour)"
    assert fired <= alerts, "alert tests for alerts that no longer exist"


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
            "AllChutesSaturated", "ProxyReplicaDown", "NoProxyReplicas", "ClientRateLimitedHigh",
            "AllChutesFullInProxy", "ProxyReplicasSaturated"} <= names
    for g in rules["groups"]:
        for r in g["rules"]:
            assert r.get("for") and r["labels"].get("severity") and r["annotations"].get("summary"), r["alert"]
