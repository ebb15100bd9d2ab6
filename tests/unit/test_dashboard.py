"""Static checks of the Grafana provisioning and dashboard, and of the alert rules' metric names.

The PromQL itself is executed against a real Prometheus in tests/e2e/test_stack.py; here we only
check what can go wrong without one: uids that do not match, a mount path that does not match the
provider, and metric names that no service exports (the contract lists them)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "chutes-lb.json"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources"
PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards"

# Every metric the services promise to export (service contracts); histograms by base name.
PROXY_METRICS = {
    "chutes_lb_routing_decisions_total",
    "chutes_lb_routing_fallbacks_total",
    "chutes_lb_snapshot_age_seconds",
    "chutes_lb_inflight_requests",
    "chutes_lb_upstream_latency_seconds",
    "chutes_lb_time_to_first_token_seconds",
    "chutes_lb_upstream_requests_total",
    "chutes_lb_failovers_total",
    "chutes_lb_chute_headroom_slots",
    "chutes_lb_chute_slowness_ratio",
    "chutes_lb_requests_total",
    "chutes_lb_request_duration_seconds",
    "chutes_lb_affinity_decisions_total",
    "chutes_lb_prompt_tokens_total",
    "chutes_lb_retries_total",
    "chutes_lb_retry_budget_exhausted_total",
    "chutes_lb_slot_waiting_requests",
    "chutes_lb_slot_wait_seconds",
    "chutes_lb_admission_rejected_total",
    "chutes_lb_admission_queue_length",
}
POLLER_METRICS = {
    "chutes_lb_poller_poll_duration_seconds",
    "chutes_lb_poller_poll_errors_total",
    "chutes_lb_poller_last_success_timestamp_seconds",
    "chutes_lb_poller_entries_parsed_total",
    "chutes_lb_poller_entries_skipped_total",
    "chutes_lb_poller_snapshot_age_seconds",
    "chutes_lb_poller_snapshot_version",
    "chutes_lb_chute_utilization_ratio",
    "chutes_lb_chute_rate_limit_ratio",
    "chutes_lb_chute_active_instances",
    "chutes_lb_chute_in_snapshot",
}
HISTOGRAMS = {
    "chutes_lb_request_duration_seconds",
    "chutes_lb_upstream_latency_seconds",
    "chutes_lb_time_to_first_token_seconds",
    "chutes_lb_poller_poll_duration_seconds",
    "chutes_lb_slot_wait_seconds",
}
# Exported by Prometheus itself and by HAProxy's built-in exporter (2.6 and 3.x).
OTHER_METRICS = {
    "up",
    "haproxy_backend_active_servers",
    "haproxy_backend_http_responses_total",
    "haproxy_backend_retry_warnings_total",
    "haproxy_backend_redispatch_warnings_total",
    "haproxy_backend_current_queue",
}
KNOWN = PROXY_METRICS | POLLER_METRICS | OTHER_METRICS

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, labels, keywords or variables)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range selectors
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    s = re.sub(r"\$\w+", "", s)  # Grafana variables
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        word, rest = m.group(0), s[m.end():]
        if word.lower() in _KEYWORDS or re.match(r"\s*\(", rest):
            continue
        names.add(word)
    return names


def base_name(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    out = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p.get("targets", [])]


def datasource_uid() -> str:
    (ds_file,) = sorted(DATASOURCES.glob("*.y*ml"))
    (ds,) = yaml.safe_load(ds_file.read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    return ds["uid"]


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.9, sum by (chute, le) (rate(x_bucket{a="b"}[$__rate_interval])))') == {"x_bucket"}
    assert metric_names("time() - max(y) or vector(0)") == {"y"}
    assert metric_names('sum(up{job="proxy"}) == 0 and on (job) z') == {"up", "z"}


def test_dashboard_has_fixed_uid_and_unique_panel_ids() -> None:
    d = dashboard()
    assert d["uid"] == "chutes-lb"
    assert d["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))


def test_datasource_uid_is_fixed_and_used_by_every_panel_and_target() -> None:
    uid = datasource_uid()
    assert uid == "chutes-lb-prometheus"
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid, p["title"]
            assert t["expr"].strip(), p["title"]


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    (prov_file,) = sorted(PROVIDERS.glob("*.y*ml"))
    (provider,) = yaml.safe_load(prov_file.read_text())["providers"]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert all(v.endswith(":ro") for v in grafana["volumes"] if v.startswith("./"))


def test_every_expression_uses_only_contract_metrics() -> None:
    unknown = {(title, name) for title, e in exprs() for name in map(base_name, metric_names(e)) if name not in KNOWN}
    assert not unknown, f"metrics no service exports: {sorted(unknown)}"


def test_dashboard_covers_the_required_views() -> None:
    used = {base_name(n) for _, e in exprs() for n in metric_names(e)}
    for required in (
        "chutes_lb_upstream_requests_total",  # request rate, errors, 429s
        "chutes_lb_routing_decisions_total",
        "chutes_lb_chute_utilization_ratio",
        "chutes_lb_inflight_requests",
        "chutes_lb_upstream_latency_seconds",
        "chutes_lb_time_to_first_token_seconds",
        "chutes_lb_failovers_total",
        "chutes_lb_snapshot_age_seconds",
        "chutes_lb_poller_snapshot_age_seconds",
        "chutes_lb_poller_last_success_timestamp_seconds",
    ):
        assert required in used, required
    all_exprs = " ".join(e for _, e in exprs())
    for metric in ("chutes_lb_upstream_latency_seconds_bucket", "chutes_lb_time_to_first_token_seconds_bucket"):
        for q in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({q}, sum by (chute, le) (rate({metric}" in all_exprs, (metric, q)
    assert 'outcome="rate_limited"' in all_exprs and 'outcome=~"error|timeout"' in all_exprs


def test_chute_panels_group_by_bounded_labels_only() -> None:
    for title, e in exprs():
        for group in re.findall(r"\bby\s*\(([^)]*)\)", e):
            labels = {g.strip() for g in group.split(",")}
            assert labels <= {"chute", "reason", "le", "instance", "kind", "code", "outcome", "window", "api"}, (title, labels)


def test_alert_rules_use_only_contract_metrics() -> None:
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    unknown = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown |= {n for n in map(base_name, metric_names(rule["expr"])) if n not in KNOWN}
    assert not unknown
