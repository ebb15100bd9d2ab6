"""Static checks of the cluster deployments, on every run (no cluster, no network):

- ``kubectl kustomize`` renders every overlay (demo, real, and real with every optional component);
- the output passes ``kubernetes-validate --strict`` against a pinned Kubernetes version (schemas
  ship in the wheel); the ServiceMonitors (a CRD) are checked against the Services they select;
- ``haproxy -c`` and ``promtool check config`` pass on the configuration *as mounted in
  Kubernetes* (taken from the rendered ConfigMaps, with the lb Deployment's environment);
- ``docker stack config`` parses compose.swarm.yaml (+ the demo file);
- the Kubernetes haproxy.cfg and prometheus.yml differ from the Compose ones only where they must,
  and the Grafana/alert files in the ConfigMaps are byte for byte the Compose files;
- the production properties the issue asks for (probes with explicit timeouts, drain, read-only
  root with an emptyDir where the code writes, non-root, no capabilities, resources, PDB, HPA
  within the HAProxy server-template, no secret value anywhere).

The consistency between Compose, Swarm and Kubernetes (images, ports, probes, variables,
settings) is tests/integration/test_deploy_consistency.py. Tools missing here are skipped with
the reason (CI installs haproxy and promtool; kubectl ships with these machines)."""
from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chutes_lb.settings import variables

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("demo", "real")
# The Kubernetes release the manifests are validated against (kubernetes-validate's bundled
# schemas). 1.32: autoscaling/v2, policy/v1 and every field used here are GA.
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "chutes-lb"

KUBECTL = shutil.which("kubectl")
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
DOCKER = shutil.which("docker")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (it ships with these machines; kubectl kustomize renders the overlays)")


def kustomize(path: Path) -> list[dict[str, Any]]:
    assert KUBECTL
    proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def with_every_component(tmp: Path) -> Path:
    """A throwaway kustomization: the real overlay plus every optional component (with the
    overlay's namespace and labels, as when they are listed in real/kustomization.yaml)."""
    rel = lambda p: os.path.relpath(p, tmp)  # noqa: E731  (kustomize wants relative paths)
    components = sorted(p for p in (K8S / "components").iterdir() if (p / "kustomization.yaml").exists())
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": NAMESPACE, "resources": [rel(K8S / "real")],
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "chutes-lb"}, "includeSelectors": False}],
        "components": [rel(c) for c in components if c.name != "persistent-storage"],  # real has it
    }))
    return tmp


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed (it ships with these machines; kubectl kustomize renders the overlays)")
    out = {name: kustomize(K8S / name) for name in OVERLAYS}
    out["real+components"] = kustomize(with_every_component(tmp_path_factory.mktemp("kustomize")))
    return out


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def configmap(docs: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    """The data of the generated ConfigMap whose name starts with prefix (a hash follows)."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and re.fullmatch(re.escape(prefix) + r"-[a-z0-9]{10}", d["metadata"]["name"])]
    assert len(found) == 1, [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    return found[0]["data"]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ---------------------------------------------------------------- rendering and schemas
@needs_kubectl
@pytest.mark.parametrize("overlay", [*OVERLAYS, "real+components"])
def test_overlay_renders_into_the_namespace(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds, kinds
    for d in docs:
        assert d["metadata"].get("namespace") == NAMESPACE, (d["kind"], d["metadata"]["name"])
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "chutes-lb", d["metadata"]["name"]
    deployments = set(by_kind(docs, "Deployment"))
    expected = {"redis", "utilization-poller", "proxy", "lb", "prometheus", "grafana"}
    assert deployments == (expected | {"simulator"} if overlay == "demo" else expected), deployments
    # No Secret is rendered: the user creates it (README), so no value can be committed here.
    assert "Secret" not in kinds


@needs_kubectl
@pytest.mark.parametrize("overlay", [*OVERLAYS, "real+components"])
def test_manifests_pass_strict_schema_validation(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    import kubernetes_validate

    checked = 0
    for d in rendered[overlay]:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in the wheel; test_servicemonitors_select_real_ports checks it
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{d['kind']}/{d['metadata']['name']} ({overlay}): {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 15


@needs_kubectl
def test_servicemonitors_select_real_ports(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["real+components"]
    services = by_kind(docs, "Service")
    monitors = by_kind(docs, "ServiceMonitor")
    assert set(monitors) == {"proxy", "utilization-poller", "lb"}
    for name, sm in monitors.items():
        spec = sm["spec"]
        assert set(spec) <= {"jobLabel", "selector", "endpoints", "namespaceSelector"}, spec
        selected = [s for s in services.values() if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(selected) == 1, (name, [s["metadata"]["name"] for s in selected])  # each pod scraped once
        svc = selected[0]
        # the job label the alert rules use (job="proxy", "utilization-poller", "lb")
        assert svc["metadata"]["labels"][spec["jobLabel"]] == name
        assert svc["spec"].get("publishNotReadyAddresses") is True, name
        ports = {p["name"] for p in svc["spec"]["ports"]}
        for ep in spec["endpoints"]:
            assert ep["port"] in ports and ep["path"] == "/metrics", (name, ep)


# ---------------------------------------------------------------- configs as mounted
@needs_kubectl
@pytest.mark.skipif(HAPROXY is None, reason="haproxy not installed (apt-get install haproxy)")
def test_haproxy_accepts_the_config_as_mounted(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    assert HAPROXY
    docs = rendered["real"]
    lb = by_kind(docs, "Deployment")["lb"]
    container = pod_spec(lb)["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in pod_spec(lb)["volumes"] if v["name"] == "config")
    data = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"])["data"]
    assert mount["mountPath"] == "/usr/local/etc/haproxy" and set(data) == {"haproxy.cfg"}
    (tmp_path / "haproxy.cfg").write_text(data["haproxy.cfg"])
    # The container's environment, $(VAR) references expanded as the kubelet does.
    env = {"POD_NAMESPACE": NAMESPACE}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
    assert env["PROXY_SERVICE_FQDN"] == f"proxy-ready.{NAMESPACE}.svc.cluster.local"
    proc = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_kubectl
@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_config_as_mounted(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    assert PROMTOOL
    docs = rendered["real"]
    prom = by_kind(docs, "Deployment")["prometheus"]
    spec = pod_spec(prom)
    container = spec["containers"][0]
    assert "--config.file=/etc/prometheus/prometheus.yml" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/prometheus"
    volume = next(v for v in spec["volumes"] if v["name"] == "config")
    files: dict[str, str] = {}
    for source in volume["projected"]["sources"]:
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["configMap"]["name"])
        assert not set(cm["data"]) & set(files), "two ConfigMaps project the same file"
        files.update(cm["data"])
    assert set(files) == {"prometheus.yml", "alerts.yml"}
    for name, text in files.items():  # the directory as the container sees it
        (tmp_path / name).write_text(text)
    proc = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout + proc.stderr


@pytest.mark.skipif(DOCKER is None, reason="no docker CLI (docker stack config parses the Swarm files)")
@pytest.mark.parametrize("files", [["compose.swarm.yaml"], ["compose.swarm.yaml", "compose.swarm.demo.yaml"]], ids=["real", "demo"])
def test_docker_stack_config_parses_the_swarm_files(files: list[str]) -> None:
    assert DOCKER
    help_ = subprocess.run([DOCKER, "stack", "config", "--help"], capture_output=True, text=True, timeout=30)
    if help_.returncode != 0:
        pytest.skip("this docker CLI has no `docker stack config` (Docker >= 23)")
    args = [a for f in files for a in ("-c", f)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "LITELLM_", "GRAFANA_"))}
    proc = subprocess.run([DOCKER, "stack", "config", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert {"redis", "utilization-poller", "proxy", "lb", "prometheus", "grafana"} <= set(cfg["services"])
    assert ("simulator" in cfg["services"]) == ("compose.swarm.demo.yaml" in files)
    # ... and compose.yaml itself is what Swarm refuses (why compose.swarm.yaml exists).
    refused = subprocess.run([DOCKER, "stack", "config", "-c", "compose.yaml"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                             env={**env, "LITELLM_MASTER_KEY": "x", "GRAFANA_ADMIN_PASSWORD": "x"})
    assert refused.returncode != 0


# ---------------------------------------------------------------- same files as Compose
def _config_lines(text: str) -> list[str]:
    """Directive lines, without comments and blank lines."""
    return [line.rstrip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_k8s_haproxy_cfg_differs_from_compose_only_in_dns_discovery() -> None:
    compose = _config_lines((ROOT / "haproxy" / "haproxy.cfg").read_text())
    k8s = _config_lines((K8S / "base" / "haproxy.cfg").read_text())
    expected = []
    for line in compose:
        if line == "resolvers docker":
            expected.append("resolvers cluster")
        elif line.strip().startswith("nameserver dns 127.0.0.11:53"):
            expected.append("    parse-resolv-conf")
        elif line.strip().startswith("server-template proxy "):
            expected.append(line.replace("proxy:4000", '"${PROXY_SERVICE_FQDN}":4000').replace("resolvers docker", "resolvers cluster"))
        else:
            expected.append(line)
    diff = "\n".join(difflib.unified_diff(expected, k8s, "haproxy/haproxy.cfg (+ the DNS changes)", "deploy/k8s/base/haproxy.cfg", lineterm=""))
    assert k8s == expected, "deploy/k8s/base/haproxy.cfg must follow haproxy/haproxy.cfg:\n" + diff


# haproxy.cfg's per-server maxconn = LITELLM_WORKERS x this (requests one worker holds at once:
# ~100 req/s at 70% of a core x ~5 s per request; docs/RUNNING-THE-STACK.md)
PER_WORKER_MAXCONN = 512


def haproxy_section(lines: list[str], header: str) -> list[str]:
    """The directive lines of one section (``backend proxies``, ``defaults``, ...), stripped."""
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith((" ", "\t"))), len(lines))
    return [line.strip() for line in lines[start + 1:end]]


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert m, value
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 0.001, "m": 60}[m.group(2)]


def test_front_door_bounds_each_replica_and_replays_only_unanswered_requests() -> None:
    """Per-server maxconn sized from the workers, a few seconds of queue, 503 with Retry-After, and
    replays only of requests that got no byte back (never on a slow answer, a started one, or 5xx)."""
    lines = _config_lines((ROOT / "haproxy" / "haproxy.cfg").read_text())  # Kubernetes: the same (test above)
    backend = haproxy_section(lines, "backend proxies")
    defaults = haproxy_section(lines, "defaults")
    default_server = next(line for line in backend if line.startswith("default-server "))
    maxconn = int(re.search(r"\bmaxconn (\d+)", default_server).group(1))
    workers = int(next(d for n, d, _ in variables() if n == "LITELLM_WORKERS"))
    assert maxconn == workers * PER_WORKER_MAXCONN
    global_maxconn = int(next(line for line in haproxy_section(lines, "global") if line.startswith("maxconn ")).split()[1])
    assert global_maxconn >= maxconn
    queue = _seconds(next(line for line in defaults if line.startswith("timeout queue ")).split()[-1])
    assert 2 <= queue <= 10, "a few seconds: long enough for a burst, short enough to tell the client at once"
    retry_on = next(line for line in backend if line.startswith("retry-on ")).split()[1:]
    assert set(retry_on) == {"conn-failure", "empty-response"}, retry_on
    assert "option http-buffer-request" in backend  # a replay needs the whole body buffered
    assert "option redispatch 1" in backend and int(next(line for line in backend if line.startswith("retries ")).split()[1]) <= 3
    unavailable = next(line for line in backend if line.startswith("http-error status 503 "))
    assert re.search(r"\bhdr Retry-After \d+\b", unavailable)


def test_k8s_prometheus_yml_differs_from_compose_only_in_the_lb_job() -> None:
    compose = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    k8s = yaml.safe_load((K8S / "base" / "prometheus.yml").read_text())
    jobs_c = {j["job_name"]: j for j in compose.pop("scrape_configs")}
    jobs_k = {j["job_name"]: j for j in k8s.pop("scrape_configs")}
    assert k8s == compose  # global, rule_files
    assert set(jobs_k) == set(jobs_c)  # the alert rules and dashboard select on these job names
    for name in jobs_c:
        if name != "lb":
            assert jobs_k[name] == jobs_c[name], name
    assert jobs_k["lb"]["dns_sd_configs"] == [{"names": ["lb-metrics"], "type": "A", "port": 8404, "refresh_interval": "10s"}]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grafana_and_alert_files_are_the_compose_files(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    same = {
        "grafana-datasources": {"prometheus.yaml": ROOT / "grafana/provisioning/datasources/prometheus.yaml"},
        "grafana-dashboard-providers": {"chutes-lb.yaml": ROOT / "grafana/provisioning/dashboards/chutes-lb.yaml"},
        "grafana-dashboards": {"chutes-lb.json": ROOT / "grafana/dashboards/chutes-lb.json"},
        "prometheus-rules": {"alerts.yml": ROOT / "prometheus/alerts.yml"},
        "haproxy-config": {"haproxy.cfg": K8S / "base/haproxy.cfg"},
        "prometheus-config": {"prometheus.yml": K8S / "base/prometheus.yml"},
    }
    for prefix, files in same.items():
        data = configmap(docs, prefix)
        assert set(data) == set(files), prefix
        for key, path in files.items():
            assert data[key] == path.read_text(), f"{prefix}/{key} is not {path.relative_to(ROOT)}"
    # The mount paths are the ones the provisioning files and Compose use.
    grafana = pod_spec(by_kind(docs, "Deployment")["grafana"])["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in grafana["volumeMounts"]}
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/chutes-lb.yaml").read_text())
    assert mounts["dashboards"] == provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    assert mounts["datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["dashboard-providers"] == "/etc/grafana/provisioning/dashboards"


# ---------------------------------------------------------------- production properties
@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for name, dep in by_kind(rendered[overlay], "Deployment").items():
        spec = pod_spec(dep)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0, name
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would inject e.g. REDIS_PORT=tcp://..., which LiteLLM reads.
        assert spec["enableServiceLinks"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert name == "grafana" or sc["readOnlyRootFilesystem"] is True, name  # Grafana as in Compose
            if sc["readOnlyRootFilesystem"]:
                mounted = {m["mountPath"] for m in c["volumeMounts"]}
                assert "/tmp" in mounted, f"{name}: read-only root needs a writable /tmp"
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"], name
            assert c["imagePullPolicy"] == "IfNotPresent", name
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in c:
                    assert c[probe].get("timeoutSeconds", 1) >= 3, f"{name} {probe}: the 1 s default restarts busy pods"
            assert "readinessProbe" in c and "livenessProbe" in c, name


@needs_kubectl
def test_proxy_deployment_drains_scales_and_survives_disruptions(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["real"]
    proxy = by_kind(docs, "Deployment")["proxy"]
    spec = pod_spec(proxy)
    c = spec["containers"][0]
    assert proxy["spec"]["replicas"] >= 2
    assert proxy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    startup = c["startupProbe"]
    # LiteLLM imports take 20-60 s: the startup budget must cover twice that.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # preStop (DNS and HAProxy let go of the pod) + the proxy's drain + uvicorn's graceful shutdown
    # must fit the grace period.
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    uvicorn_graceful = int(re.search(r"timeout_graceful_shutdown=(\d+)", (ROOT / "src/chutes_lb/proxy/__main__.py").read_text()).group(1))
    drain = float(env_of(c).get("PROXY_DRAIN_SECONDS", next(d for n, d, _ in variables() if n == "PROXY_DRAIN_SECONDS")))
    assert pre_stop >= 10 and spec["terminationGracePeriodSeconds"] >= pre_stop + drain + uvicorn_graceful + 10
    # PROMETHEUS_MULTIPROC_DIR is on the emptyDir mounted at /tmp (the code writes there).
    env = env_of(c)
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    tmp = next(v for v in spec["volumes"] if v["name"] == next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/tmp"))
    assert "emptyDir" in tmp
    # One core per worker at the limit.
    assert int(c["resources"]["limits"]["cpu"]) == int(env["LITELLM_WORKERS"])

    pdb = by_kind(docs, "PodDisruptionBudget")["proxy"]
    assert pdb["spec"]["selector"]["matchLabels"] == proxy["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < proxy["spec"]["replicas"], "a PDB equal to replicas blocks every drain"
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["proxy"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "proxy"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # HAProxy can only route to as many pods as its server-template has slots.
    template = re.search(r"server-template proxy 1-(\d+) ", (K8S / "base" / "haproxy.cfg").read_text())
    assert template and hpa["spec"]["maxReplicas"] <= int(template.group(1))


@needs_kubectl
def test_inflight_autoscaling_component(rendered: dict[str, list[dict[str, Any]]]) -> None:
    hpa = by_kind(rendered["real+components"], "HorizontalPodAutoscaler")["proxy"]
    kinds = [m["type"] for m in hpa["spec"]["metrics"]]
    assert kinds == ["Resource", "External"]
    external = hpa["spec"]["metrics"][1]["external"]
    assert external["metric"]["name"] == "chutes_lb_inflight_requests"
    assert external["target"]["type"] == "AverageValue"
    # The metric exists (the proxy exports it) and the documented PromQL names it.
    assert '"chutes_lb_inflight_requests"' in (ROOT / "src/chutes_lb/routing/metrics.py").read_text()
    doc = (K8S / "components" / "hpa-inflight" / "kustomization.yaml").read_text()
    assert 'sum(chutes_lb_inflight_requests{job="proxy"})' in doc


@needs_kubectl
def test_singletons_and_discovery_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["demo"]
    deps = by_kind(docs, "Deployment")
    for name in ("utilization-poller", "redis", "prometheus", "grafana", "simulator"):
        assert deps[name]["spec"]["replicas"] == 1 and deps[name]["spec"]["strategy"] == {"type": "Recreate"}, name
    poller = deps["utilization-poller"]["spec"]["template"]["spec"]["containers"][0]
    assert poller["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    services = by_kind(docs, "Service")
    # Prometheus: every proxy pod (ready or not); HAProxy: ready pods only. Both headless (one A record per pod).
    assert services["proxy"]["spec"]["clusterIP"] == "None" and services["proxy"]["spec"]["publishNotReadyAddresses"] is True
    assert services["proxy-ready"]["spec"]["clusterIP"] == "None" and not services["proxy-ready"]["spec"].get("publishNotReadyAddresses")
    assert services["lb-metrics"]["spec"]["clusterIP"] == "None"
    # The public Service carries the API only, never HAProxy's metrics/stats port.
    assert [p["port"] for p in services["lb"]["spec"]["ports"]] == [4000]
    # Every name the configs resolve is a Service of the stack.
    grafana_ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert grafana_ds["datasources"][0]["url"] == f"http://prometheus:{services['prometheus']['spec']['ports'][0]['port']}"
    for name in ("redis", "simulator", "utilization-poller"):
        assert name in services


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_only_by_reference(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    refs = set()
    for name, dep in by_kind(rendered[overlay], "Deployment").items():
        for c in pod_spec(dep)["containers"]:
            for e in c.get("env", []):
                if re.search(r"KEY|PASSWORD|TOKEN|SECRET", e["name"]):
                    assert "value" not in e, f"{name}: {e['name']} must come from the Secret"
                    ref = e["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == "chutes-lb", (name, ref)
                    assert ref["key"] == {"GF_SECURITY_ADMIN_PASSWORD": "GRAFANA_ADMIN_PASSWORD"}.get(e["name"], e["name"]), (name, ref)
                    refs.add((ref["key"], bool(ref.get("optional"))))
    keys = {k for k, _ in refs}
    assert keys == {"LITELLM_MASTER_KEY", "CHUTES_API_KEY", "GRAFANA_ADMIN_PASSWORD"}
    # Real mode requires the Chutes key; only the demo makes it optional.
    assert ("CHUTES_API_KEY", True) in refs if overlay == "demo" else ("CHUTES_API_KEY", False) in refs
    assert ("CHUTES_API_KEY", True) not in refs or overlay == "demo"


# ---------------------------------------------------------------- scripts/swarm-deploy.sh
SWARM_DEPLOY = ROOT / "scripts" / "swarm-deploy.sh"


def test_swarm_deploy_names_every_config_after_the_digest_of_its_own_file() -> None:
    script = SWARM_DEPLOY.read_text()
    exported = dict(re.findall(r'export (\w+_DIGEST)="\$\(digest ([^)]+)\)"', script))
    configs = yaml.safe_load((ROOT / "compose.swarm.yaml").read_text())["configs"]
    named = {}
    for cfg in configs.values():
        m = re.fullmatch(r"chutes-lb-[a-z-]+-\$\{(\w+_DIGEST):-v1\}", cfg["name"])
        assert m, cfg["name"]
        named[m.group(1)] = cfg["file"].removeprefix("./")
    assert exported == named  # an edited file becomes a new config, and only its service rolls


def test_swarm_deploy_usage_and_refusals(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    ok = subprocess.run([str(SWARM_DEPLOY), "-h"], capture_output=True, text=True, timeout=30, env=env)
    assert ok.returncode == 0 and "usage:" in ok.stdout
    bad = subprocess.run([str(SWARM_DEPLOY), "--bogus"], capture_output=True, text=True, timeout=30, env=env)
    assert bad.returncode == 2 and "usage:" in bad.stderr
    if DOCKER is None:
        return
    state = subprocess.run([DOCKER, "info", "--format", "{{.Swarm.LocalNodeState}}"], capture_output=True, text=True, timeout=30).stdout.strip()
    if state == "inactive":  # an engine in no swarm: the script says what to do and deploys nothing
        proc = subprocess.run([str(SWARM_DEPLOY), "--demo", "--env-file", os.devnull], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 1 and "docker swarm init" in proc.stderr
