"""Compose, Swarm and Kubernetes describe one stack: this test fails when they disagree on image
names, ports, probe paths, required variables, or the settings each service reads and their
values, in real mode and in the demo.

The settings are not listed here: they come from ``chutes_lb.settings.variables()``, so a setting
added later and passed to a service in one deployment but not the others fails this test, and
so does a name in a service's environment that is no setting at all (a typo). Compose files are
read with a small implementation of Compose's variable interpolation (defaults only), so no
Docker CLI is needed; the Kubernetes side is the rendered overlay (``kubectl kustomize``)."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from chutes_lb.settings import DEPLOYMENT_VARIABLES, Settings, variables

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
PYTHON_SERVICES = ("proxy", "utilization-poller", "simulator")
# Variables in a service's environment that are not chutes-lb settings, each for a reason.
NOT_SETTINGS = {
    "LITELLM_LOCAL_MODEL_COST_MAP",  # LiteLLM: no cost-map download at start-up
    "LITELLM_TELEMETRY_DISABLED",    # LiteLLM: no telemetry
    "PROMETHEUS_MULTIPROC_DIR",      # prometheus-client: the workers' shared metrics directory
}
SECRET = "<secret>"
SETTINGS = {name for name, _, _ in variables()}
SECRET_SETTINGS = {f.metadata["env"] for f in fields(Settings) if f.type in ("Secret", "'Secret'")}
# What the deployments keep secret: the services' secret settings that are set, and Grafana's password.
DEPLOYED_SECRETS = {"LITELLM_MASTER_KEY", "CHUTES_API_KEY", "GRAFANA_ADMIN_PASSWORD"}
# Set by scripts/swarm-deploy.sh only (config digests), not by users.
SWARM_SCRIPT_VARIABLES = {"HAPROXY_CFG_DIGEST", "PROMETHEUS_YML_DIGEST", "ALERTS_YML_DIGEST", "GRAFANA_DATASOURCE_DIGEST",
                          "GRAFANA_DASHBOARD_PROVIDER_DIGEST", "GRAFANA_DASHBOARD_DIGEST"}
# Health routes of each service, beyond the one its Compose healthcheck uses.
HEALTH_ROUTES = {
    "proxy": {"/livez", "/readyz", "/health/liveliness", "/health/readiness"},
    "utilization-poller": {"/healthz", "/metrics"},  # liveness on /metrics: a Chutes outage is no reason to restart
    "prometheus": {"/-/ready", "/-/healthy"},
    "lb": {"/healthz", "/stats"},
}
# Swarm replaces an unhealthy task: where Compose's healthcheck also reports on other services
# (HAProxy's /healthz fails while no proxy is up), Swarm's asks the same port for liveness only.
SWARM_LIVENESS_HEALTHCHECK = {"lb": ("/healthz", "/stats")}
_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


# ---------------------------------------------------------------- reading the three
def interpolate(value: Any, used: set[str], required: set[str]) -> Any:
    """Compose's interpolation with an empty environment: defaults apply, `:?` names are
    recorded as required (their value becomes a marker)."""
    if isinstance(value, dict):
        return {k: interpolate(v, used, required) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, used, required) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        used.add(name)
        op, arg = m.group(2), m.group(3) or ""
        if op in (":?", "?"):
            required.add(name)
            return f"<required:{name}>"
        return arg if op in (":-", "-") else ""

    return _VAR.sub(sub, value)


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of override files, as far as these files use it (mappings merge, the rest is replaced)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    return override


def compose_model(*files: str) -> tuple[dict[str, Any], set[str], set[str]]:
    used: set[str] = set()
    required: set[str] = set()
    model: dict[str, Any] = {}
    for f in files:
        model = merge(model, interpolate(yaml.safe_load((ROOT / f).read_text()), used, required))
    return model, used, required


def env_map(env: Any) -> dict[str, str]:
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in (env or {}).items()}


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = env_map(svc.get("environment"))
    return {k: SECRET if k in DEPLOYED_SECRETS else v for k, v in env.items()}


def swarm_env(svc: dict[str, Any]) -> dict[str, str]:
    env = env_map(svc.get("environment"))
    for s in svc.get("secrets") or []:
        env[s["target"]] = SECRET  # exported by the entrypoint (or read by Grafana's __FILE)
    if "GF_SECURITY_ADMIN_PASSWORD__FILE" in env:
        env["GF_SECURITY_ADMIN_PASSWORD"] = SECRET
        del env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    env.pop("GRAFANA_ADMIN_PASSWORD", None)
    return env


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for e in container.get("env", []):
        env[e["name"]] = SECRET if "secretKeyRef" in (e.get("valueFrom") or {}) else str(e.get("value", ""))
    return env


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, dict[str, Any]]]:
    """overlay -> Deployment name -> its first container (plus the rendered docs under '_docs')."""
    if KUBECTL is None:
        pytest.skip("kubectl not installed (it ships with these machines; kubectl kustomize renders the overlays)")
    out = {}
    for overlay in ("demo", "real"):
        proc = subprocess.run([KUBECTL, "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
        out[overlay] = {"_docs": docs, **{n: d["spec"]["template"]["spec"]["containers"][0] for n, d in deps.items()},
                        "_replicas": {n: d["spec"]["replicas"] for n, d in deps.items()}}  # type: ignore[dict-item]
    return out


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, Any]]:
    compose_real, _, _ = compose_model("compose.yaml")
    compose_demo, _, _ = compose_model("compose.yaml", "compose.demo.yaml")
    swarm_real, _, _ = compose_model("compose.swarm.yaml")
    swarm_demo, _, _ = compose_model("compose.swarm.yaml", "compose.swarm.demo.yaml")
    return {"compose:real": compose_real["services"], "compose:demo": compose_demo["services"],
            "swarm:real": swarm_real["services"], "swarm:demo": swarm_demo["services"]}


def repo(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


# ---------------------------------------------------------------- the tests
def test_the_same_services_everywhere(models: dict[str, dict[str, Any]], k8s: dict[str, Any]) -> None:
    for mode in ("real", "demo"):
        compose = set(models[f"compose:{mode}"])
        assert set(models[f"swarm:{mode}"]) == compose, mode
        assert {n for n in k8s[mode] if not n.startswith("_")} == compose, mode
        assert ("simulator" in compose) == (mode == "demo"), mode


@pytest.mark.parametrize("mode", ["real", "demo"])
def test_images_agree(models: dict[str, dict[str, Any]], k8s: dict[str, Any], mode: str) -> None:
    for name, svc in models[f"compose:{mode}"].items():
        image = svc["image"]
        assert models[f"swarm:{mode}"][name]["image"] == image, name  # same string, same ${CHUTES_LB_TAG:-dev}
        assert k8s[mode][name]["image"] == image, f"{name}: {k8s[mode][name]['image']} vs Compose {image}"
        if "build" in svc:
            assert repo(image).startswith("chutes-lb/") and image.endswith(":dev"), name


@pytest.mark.parametrize("mode", ["real", "demo"])
def test_ports_agree(models: dict[str, dict[str, Any]], k8s: dict[str, Any], mode: str) -> None:
    docs = k8s[mode]["_docs"]
    k8s_services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for name, svc in models[f"compose:{mode}"].items():
        compose_ports = {int(p) for p in svc.get("expose", [])} | {int(str(p).rsplit(":", 1)[-1]) for p in svc.get("ports", [])}
        k8s_ports = {p["containerPort"] for p in k8s[mode][name].get("ports", [])}
        assert k8s_ports == compose_ports, f"{name}: Kubernetes {k8s_ports}, Compose {compose_ports}"
        published = {int(str(p).rsplit(":", 1)[-1]) for p in svc.get("ports", [])}
        swarm_published = {p["target"] for p in models[f"swarm:{mode}"][name].get("ports", [])}
        assert swarm_published == published, name
        for p in models[f"swarm:{mode}"][name].get("ports", []):
            assert p["mode"] == "host", (name, p)  # no routing mesh (no IPVS)
        if name in k8s_services:  # the Service of the same name serves the same ports
            assert {p["port"] for p in k8s_services[name]["spec"]["ports"]} <= compose_ports, name


def _proxy_public_paths() -> set[str]:
    tree = ast.parse((ROOT / "src/chutes_lb/proxy/middleware.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PUBLIC_PATHS" for t in node.targets):
            return {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    raise AssertionError("PUBLIC_PATHS not found in src/chutes_lb/proxy/middleware.py")


def _healthcheck_route(svc: dict[str, Any]) -> tuple[int, str] | None:
    test = " ".join(svc.get("healthcheck", {}).get("test", []))
    m = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\" ]*)", test)
    return (int(m.group(1)), m.group(2)) if m else None


@pytest.mark.parametrize("mode", ["real", "demo"])
def test_probes_agree(models: dict[str, dict[str, Any]], k8s: dict[str, Any], mode: str) -> None:
    for name, svc in models[f"compose:{mode}"].items():
        swarm = models[f"swarm:{mode}"][name]
        if name in SWARM_LIVENESS_HEALTHCHECK:  # Swarm replaces unhealthy tasks: liveness, same port
            expect = dict(svc["healthcheck"], test=[a.replace(*SWARM_LIVENESS_HEALTHCHECK[name]) for a in svc["healthcheck"]["test"]])
            assert swarm.get("healthcheck") == expect, f"{name}: Swarm's healthcheck must be Compose's on {SWARM_LIVENESS_HEALTHCHECK[name][1]}"
        else:
            assert swarm.get("healthcheck") == svc.get("healthcheck"), f"{name}: Swarm's healthcheck differs from Compose's"
        container = k8s[mode][name]
        route = _healthcheck_route(svc)
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        allowed = HEALTH_ROUTES.get(name, set()) | ({route[1]} if route else set())
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if not probe or "httpGet" not in probe:
                continue
            port = probe["httpGet"]["port"]
            port = ports.get(port, port)
            assert route is not None and port == route[0], f"{name} {kind}: port {port}, Compose probes {route}"
            assert probe["httpGet"]["path"] in allowed, f"{name} {kind}: {probe['httpGet']['path']} is not a health route ({allowed})"
        if name != "proxy" and route and "httpGet" in container["readinessProbe"]:
            assert container["readinessProbe"]["httpGet"]["path"] == route[1], f"{name}: readiness is Compose's healthcheck"
    # the proxy's probe routes exist, without auth (read from the source: importing the app
    # module starts a proxy worker's set-up)
    assert HEALTH_ROUTES["proxy"] <= _proxy_public_paths()


def test_required_variables_and_secrets_agree(models: dict[str, dict[str, Any]], k8s: dict[str, Any]) -> None:
    _, _, compose_required = compose_model("compose.yaml", "compose.demo.yaml")
    # Compose requires what every mode needs; real mode also needs the Chutes key (checked by the services).
    assert compose_required | {"CHUTES_API_KEY"} == DEPLOYED_SECRETS
    assert SECRET_SETTINGS & DEPLOYED_SECRETS == {"LITELLM_MASTER_KEY", "CHUTES_API_KEY"}
    swarm_file = yaml.safe_load((ROOT / "compose.swarm.yaml").read_text())
    for mode in ("real", "demo"):
        for name, svc in models[f"compose:{mode}"].items():
            want = {k for k, v in compose_env(svc).items() if v == SECRET}
            if name == "grafana":
                want = {"GF_SECURITY_ADMIN_PASSWORD"}
            assert {k for k, v in swarm_env(models[f"swarm:{mode}"][name]).items() if v == SECRET} == want, (mode, name)
            assert {k for k, v in k8s_env(k8s[mode][name]).items() if v == SECRET} == want, (mode, name)
    # Swarm's secrets are external (created by the user or the script), except the demo's placeholder.
    assert all(s.get("external") for s in swarm_file["secrets"].values())
    assert {s["target"] for svc in swarm_file["services"].values() for s in svc.get("secrets", [])} == DEPLOYED_SECRETS


@pytest.mark.parametrize(("mode", "service"), [(m, s) for m in ("real", "demo") for s in PYTHON_SERVICES if (m, s) != ("real", "simulator")])
def test_each_service_reads_the_same_settings_with_the_same_values(models: dict[str, dict[str, Any]], k8s: dict[str, Any],
                                                                   mode: str, service: str) -> None:
    compose = compose_env(models[f"compose:{mode}"][service])
    swarm = swarm_env(models[f"swarm:{mode}"][service])
    kube = k8s_env(k8s[mode][service])
    for where, env in (("Compose", compose), ("Swarm", swarm), ("Kubernetes", kube)):
        unknown = set(env) - SETTINGS - NOT_SETTINGS
        assert not unknown, f"{where} {service}: {sorted(unknown)} are not settings (chutes_lb.settings) nor known extras"
    settings_read = {k for k in compose if k in SETTINGS}
    assert {k for k in swarm if k in SETTINGS} == settings_read, f"{service} ({mode}): Swarm sets other settings than Compose"
    assert {k for k in kube if k in SETTINGS} == settings_read, f"{service} ({mode}): Kubernetes sets other settings than Compose"
    for k in sorted(set(compose) | set(swarm) | set(kube)):
        assert compose.get(k) == swarm.get(k) == kube.get(k), f"{service} ({mode}) {k}: Compose {compose.get(k)!r}, Swarm {swarm.get(k)!r}, Kubernetes {kube.get(k)!r}"


def test_deployment_knobs_are_documented_and_shared(models: dict[str, dict[str, Any]], k8s: dict[str, Any]) -> None:
    _, compose_used, _ = compose_model("compose.yaml", "compose.demo.yaml")
    _, swarm_used, _ = compose_model("compose.swarm.yaml", "compose.swarm.demo.yaml")
    documented = SETTINGS | {name for name, _, _ in DEPLOYMENT_VARIABLES}
    assert compose_used <= documented, compose_used - documented
    assert swarm_used - SWARM_SCRIPT_VARIABLES <= documented, swarm_used - documented
    # Swarm reads every knob Compose reads, except the secrets (Docker secrets there).
    assert compose_used - DEPLOYED_SECRETS <= swarm_used, (compose_used - DEPLOYED_SECRETS) - swarm_used
    # The proxy runs 2 replicas by default everywhere.
    assert models["compose:real"]["proxy"]["deploy"]["replicas"] == models["swarm:real"]["proxy"]["deploy"]["replicas"] == "2"
    assert k8s["real"]["_replicas"]["proxy"] == 2
    # HAProxy's per-server maxconn (one haproxy.cfg for Compose and Swarm, its copy for Kubernetes)
    # is sized from the workers each replica runs: the same LITELLM_WORKERS everywhere.
    from tests.integration.test_deploy_static import PER_WORKER_MAXCONN

    for cfg in (ROOT / "haproxy" / "haproxy.cfg", K8S / "base" / "haproxy.cfg"):
        maxconn = int(re.search(r"^\s*default-server .*\bmaxconn (\d+)", cfg.read_text(), re.M).group(1))
        for where, env in (("Compose", compose_env(models["compose:real"]["proxy"])), ("Swarm", swarm_env(models["swarm:real"]["proxy"])),
                           ("Kubernetes", k8s_env(k8s["real"]["proxy"]))):
            assert maxconn == int(env["LITELLM_WORKERS"]) * PER_WORKER_MAXCONN, f"{cfg.name} maxconn {maxconn} vs {where} LITELLM_WORKERS"
    # Streams get the same drain time on Compose and Swarm.
    assert models["compose:real"]["proxy"]["stop_grace_period"] == models["swarm:real"]["proxy"]["stop_grace_period"]
