"""chutes-lb on a real single-node Docker Swarm (compose.swarm.yaml + compose.swarm.demo.yaml,
deployed with scripts/swarm-deploy.sh as a user would): every service healthy, requests through
:4000 answered by both proxy replicas, `docker service scale` followed by HAProxy and Prometheus,
a start-first rolling update of the proxies under load without a failed request.

The module creates its own swarm (`docker swarm init`) on an engine that is in none, and always
leaves it (`docker swarm leave --force`): in the fixture's finaliser, on failure and timeouts
too, and at interpreter exit as a last resort. An engine already in a swarm is not touched (the
module skips). Grafana has no image on CI: the test override deploys it with 0 replicas.
Images are built with `docker compose build` under a tag of their own, removed at the end."""
from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from chutes_lb.localstack import free_port
from tests.e2e import compose_stack
from tests.e2e.compose_stack import ROOT, _run, build_or_skip, docker_unavailable_reason, say, wait_for
from tests.e2e.test_rolling_restart import Load
from tests.integration.reliability_matrix import Row

# The first test also pays for the fixture: image build (up to 900 s when cold) + deploy (up to 300 s).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

CHUTE_IDS = {m["model_info"]["id"] for m in yaml.safe_load((ROOT / "proxy" / "litellm-config.yaml").read_text())["model_list"]}
SERVICES = ["redis", "simulator", "utilization-poller", "proxy", "lb", "prometheus"]
DEPLOY_TIMEOUT = int(os.environ.get("E2E_SWARM_DEPLOY_TIMEOUT", "300"))
BODY = {"model": "chutes-models", "messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 16}


@dataclass
class Swarm:
    stack: str
    tag: str
    env: dict[str, str]
    api_port: int
    master_key: str
    created_gwbridge: bool = False
    left: bool = False
    log: list[str] = field(default_factory=list)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def service(self, name: str) -> str:
        return f"{self.stack}_{name}"

    def docker(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = _run(["docker", *args], timeout=timeout, env=self.env, cwd=ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def replicas(self) -> dict[str, tuple[int, int]]:
        """service -> (running, desired), from `docker service ls`."""
        out = self.docker("service", "ls", "--filter", f"label=com.docker.stack.namespace={self.stack}", "--format", "{{json .}}").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        result = {}
        for r in rows:
            running, _, desired = r["Replicas"].partition("/")
            result[r["Name"].removeprefix(self.stack + "_")] = (int(running), int(desired.split()[0]))
        return result

    def containers(self, service: str) -> list[dict[str, Any]]:
        """docker inspect of the running containers of one service."""
        ids = self.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.service(service)}").stdout.split()
        if not ids:
            return []
        return [c for c in json.loads(self.docker("inspect", *ids).stdout) if c["State"]["Running"]]

    def healthy(self, service: str) -> int:
        return sum(1 for c in self.containers(service) if (c["State"].get("Health") or {}).get("Status") == "healthy")

    def exec(self, service: str, *cmd: str, timeout: float = 30) -> str:
        cid = self.containers(service)[0]["Id"]
        return self.docker("exec", cid, *cmd, timeout=timeout).stdout

    def prom_query(self, expr: str) -> list[dict[str, Any]]:
        """Prometheus is not published: ask it from inside its own container."""
        url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(self.exec("prometheus", "wget", "-q", "-O", "-", url))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def lb_up_servers(self) -> int:
        """Proxy servers HAProxy has UP, from its own exporter."""
        for line in self.exec("lb", "wget", "-q", "-O", "-", "http://127.0.0.1:8404/metrics").splitlines():
            if line.startswith('haproxy_backend_active_servers{proxy="proxies"'):
                return int(float(line.split()[-1]))
        return -1

    def prom_proxy_targets_up(self) -> int:
        rows = self.prom_query('count(up{job="proxy"} == 1)')
        return int(float(rows[0]["value"][1])) if rows else 0

    def wait_converged(self, service: str, n: int, timeout: float) -> float:
        """Wait until `service` runs n healthy tasks and nothing else; returns the seconds it took."""
        t0 = time.monotonic()
        last_say = 0.0

        def done() -> bool:
            nonlocal last_say
            running, desired = self.replicas().get(service, (0, 0))
            healthy = self.healthy(service)
            if time.monotonic() - last_say > 15:
                last_say = time.monotonic()
                say(f"  {service}: {running}/{desired} running, {healthy} healthy ({time.monotonic() - t0:.0f}s)")
            return desired == n and running == n and healthy == n and len(self.containers(service)) == n

        wait_for(done, timeout, interval=2, what=f"{service} at {n} healthy tasks")
        return time.monotonic() - t0

    # ------------------------------------------------------------ teardown, every exit path
    def leave(self) -> None:
        if self.left:
            return
        self.left = True
        say(f"tearing down: docker stack rm {self.stack}; docker swarm leave --force")
        try:
            self.docker("stack", "rm", self.stack, timeout=60, check=False)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                left = self.docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={self.stack}", check=False).stdout.split()
                if not left:
                    break
                time.sleep(2)
        except (OSError, subprocess.TimeoutExpired) as exc:
            say(f"  stack rm: {exc!r} (leaving the swarm anyway)")
        finally:
            proc = self.docker("swarm", "leave", "--force", timeout=120, check=False)
            say(f"  swarm leave --force -> {proc.returncode} {proc.stdout.strip()} {proc.stderr.strip()}")
            stray = self.docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={self.stack}", check=False).stdout.split()
            if stray:
                self.docker("rm", "-f", *stray, timeout=120, check=False)
            for volume in ("prometheus-data", "grafana-data"):
                self.docker("volume", "rm", "-f", f"{self.stack}_{volume}", check=False)
            if self.created_gwbridge:
                self.docker("network", "rm", "docker_gwbridge", check=False)
            for image in ("proxy", "utilization-poller", "simulator"):
                self.docker("image", "rm", f"chutes-lb/{image}:{self.tag}", check=False)


def _swarm_state(env: dict[str, str]) -> str:
    return _run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"], timeout=30, env=env).stdout.strip()


def _hermetic_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "LITELLM_", "PROXY_", "SIM_", "GRAFANA_", "POLL", "UTILIZATION_", "ROUTING_"))}
    env.update(COMPOSE_BAKE="false")
    return env


@pytest.fixture(scope="module")
def swarm(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    compose_stack.CAPTURE_MANAGER = pytestconfig.pluginmanager.getplugin("capturemanager")
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(reason)
    env = _hermetic_env()
    if _run(["docker", "stack", "--help"], timeout=30, env=env).returncode != 0:
        pytest.skip("the docker CLI has no `stack` command")
    state = _swarm_state(env)
    if state != "inactive":
        services = _run(["docker", "service", "ls", "--format", "{{.Name}}"], timeout=30, env=env).stdout.split()
        hint = (" (its services are all chutes-lb-e2e-*: a killed run of this test left it; `docker swarm leave --force`)"
                if services and all(n.startswith("chutes-lb-e2e-") for n in services) else "")
        pytest.skip(f"this Docker engine is already in a swarm (state {state!r}): the test creates and leaves its own swarm, and does not touch yours{hint}")

    tag = "swarm-e2e-" + secrets.token_hex(4)
    master_key = "sk-e2e-" + secrets.token_urlsafe(16)
    api_port = free_port()
    env.update(
        CHUTES_LB_TAG=tag,
        LITELLM_MASTER_KEY=master_key,
        GRAFANA_ADMIN_PASSWORD=secrets.token_urlsafe(12),
        LITELLM_PORT=str(api_port),
        PROMETHEUS_TEST_PORT=str(free_port()),  # compose.test.yaml (build only) requires it
        PROXY_REPLICAS="2",
        LITELLM_WORKERS="1",  # 2 replicas x 1 worker (4 after the scale-up) on a 2-core machine
        SIM_TIME_SCALE="0.2",
        SIM_FILLER_ENTRIES="50",
        UTILIZATION_REFRESH_SECONDS="5",
        POLL_INTERVAL_SECONDS="5",
    )
    build_or_skip(env, "swarm e2e")  # docker compose build: the images Compose and Swarm share, under our tag
    stack = "chutes-lb-e2e-" + secrets.token_hex(3)
    gwbridge_before = _run(["docker", "network", "inspect", "docker_gwbridge"], timeout=30, env=env).returncode == 0
    sw = Swarm(stack, tag, env, api_port, master_key, created_gwbridge=not gwbridge_before)
    override = tmp_path_factory.mktemp("swarm") / "compose.swarm.test.yaml"
    override.write_text("# tests only: no Grafana image on CI\nservices:\n  grafana:\n    deploy:\n      replicas: 0\n")
    atexit.register(sw.leave)  # last resort if the finaliser below never runs

    def on_sigterm(signum: int, frame: Any) -> None:  # CI's timeout: leave the swarm, then die as asked
        sw.leave()
        signal.signal(signal.SIGTERM, previous_sigterm)
        os.kill(os.getpid(), signal.SIGTERM)

    previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        say("docker swarm init --advertise-addr 127.0.0.1")
        sw.docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
        t0 = time.monotonic()
        proc = _run([str(ROOT / "scripts" / "swarm-deploy.sh"), "--demo", "--env-file", os.devnull, "--local-images",
                     "-c", str(override), stack], timeout=180, env=env, cwd=ROOT)
        assert proc.returncode == 0, f"swarm-deploy.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert master_key not in proc.stdout + proc.stderr
        say(f"stack {stack} deployed (api :{api_port}); waiting for every service (up to {DEPLOY_TIMEOUT}s)")
        deadline = time.monotonic() + DEPLOY_TIMEOUT
        for service in SERVICES:
            want = 2 if service == "proxy" else 1
            sw.wait_converged(service, want, max(10.0, deadline - time.monotonic()))
        wait_for(lambda: sw.lb_up_servers() == 2, 60, interval=2, what="HAProxy sees both proxies UP")
        say(f"stack healthy in {time.monotonic() - t0:.0f}s")
        sw.log.append(f"deploy to healthy: {time.monotonic() - t0:.0f}s")
        yield sw
    except BaseException:
        for service in SERVICES:
            ps = sw.docker("service", "ps", "--no-trunc", sw.service(service), check=False, timeout=30)
            say(f"service ps {service}:\n{ps.stdout[-1500:]}{ps.stderr[-500:]}")
        raise
    finally:
        sw.leave()
        atexit.unregister(sw.leave)
        signal.signal(signal.SIGTERM, previous_sigterm)


# ---------------------------------------------------------------- the stack as deployed
def test_every_service_runs_with_dnsrr_and_host_ports(swarm: Swarm) -> None:
    replicas = swarm.replicas()
    assert replicas["proxy"] == (2, 2), replicas
    assert replicas["grafana"] == (0, 0), replicas
    for service in SERVICES:
        spec = json.loads(swarm.docker("service", "inspect", swarm.service(service)).stdout)[0]["Spec"]
        assert spec["EndpointSpec"]["Mode"] == "dnsrr", service
        ports = spec["EndpointSpec"].get("Ports") or []
        if service == "lb":
            assert [(p["TargetPort"], p["PublishMode"]) for p in ports] == [(4000, "host")], ports
        else:
            assert not ports, (service, ports)
    update = json.loads(swarm.docker("service", "inspect", swarm.service("proxy")).stdout)[0]["Spec"]["UpdateConfig"]
    assert update["Order"] == "start-first", update


def test_containers_read_only_non_root_and_tmpfs_writable(swarm: Swarm) -> None:
    for service in SERVICES:
        for c in swarm.containers(service):
            assert c["HostConfig"]["ReadonlyRootfs"] is True, service
            assert c["HostConfig"]["Init"] is True, service
            assert "ALL" in (c["HostConfig"].get("CapDrop") or []), service
            uid = swarm.docker("exec", c["Id"], "id", "-u").stdout.strip()
            assert uid != "0", (service, uid)
            tmpfs = [m["Destination"] for m in c["Mounts"] if m["Type"] == "tmpfs"]
            assert "/tmp" in tmpfs, (service, c["Mounts"])
            for path in tmpfs:  # the non-root user can write every tmpfs (Swarm's mode 1777)
                probe = f"{path}/.swarm-e2e-{secrets.token_hex(3)}"
                assert swarm.docker("exec", c["Id"], "sh", "-c", f"echo x > {probe} && rm {probe}", check=False).returncode == 0, (service, path)
            assert swarm.docker("exec", c["Id"], "sh", "-c", "echo x > /.swarm-e2e", check=False).returncode != 0, service


def test_secrets_stay_out_of_the_service_and_container_specs(swarm: Swarm) -> None:
    for service in SERVICES:
        spec = swarm.docker("service", "inspect", swarm.service(service)).stdout
        assert swarm.master_key not in spec, service
        for c in swarm.containers(service):
            assert swarm.master_key not in json.dumps(c), service
    # ...but the proxy process has it (the entrypoint exports /run/secrets/LITELLM_MASTER_KEY)
    r = httpx.get(swarm.api_base + "/v1/models", headers={"Authorization": f"Bearer {swarm.master_key}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert httpx.get(swarm.api_base + "/v1/models", headers={"Authorization": "Bearer sk-wrong"}, timeout=30).status_code == 401


def _workers_seen(swarm: Swarm, rounds: int = 12, concurrency: int = 6) -> tuple[set[str], set[str]]:
    """Concurrent chat requests and /info calls through :4000: (chutes that served, proxy
    hostnames that answered /info). leastconn sends concurrent requests to different replicas."""
    headers = {"Authorization": f"Bearer {swarm.master_key}"}
    chutes: set[str] = set()
    workers: set[str] = set()
    with httpx.Client(base_url=swarm.api_base, headers=headers, timeout=60) as client:
        def one(i: int) -> None:
            if i % 2:
                r = client.post("/v1/chat/completions", json=BODY)
                assert r.status_code == 200, r.text
                chutes.add(r.headers["x-litellm-model-id"])
            else:
                r = client.get("/info")
                assert r.status_code == 200, r.text
                workers.add(r.json()["worker"].split("-")[0])  # "<hostname>-<pid>-<random>"

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(rounds * concurrency)))
    return chutes, workers


def test_requests_through_4000_are_answered_by_both_replicas(swarm: Swarm) -> None:
    hostnames = {c["Config"]["Hostname"] for c in swarm.containers("proxy")}
    assert len(hostnames) == 2, hostnames
    seen: set[str] = set()
    chutes: set[str] = set()
    deadline = time.monotonic() + 60
    while seen != hostnames and time.monotonic() < deadline:
        got_chutes, got_workers = _workers_seen(swarm)
        seen |= got_workers
        chutes |= got_chutes
    assert seen == hostnames, f"/info answered by {seen}, proxy tasks are {hostnames}"
    assert chutes and chutes <= CHUTE_IDS, chutes


def test_scale_to_four_is_followed_by_haproxy_and_prometheus(swarm: Swarm) -> None:
    row = Row("Swarm: proxy scaled 2 -> 4 -> 2 under load", "tests/e2e/test_swarm.py::test_scale_to_four_is_followed_by_haproxy_and_prometheus")
    with Load(swarm, workers=3) as load:  # type: ignore[arg-type]  # duck-typed: api_base, master_key
        time.sleep(3)
        t0 = time.monotonic()
        say(f"docker service scale {swarm.service('proxy')}=4 ({len(load.results)} requests so far)")
        swarm.docker("service", "scale", "--detach", f"{swarm.service('proxy')}=4")
        healthy_s = swarm.wait_converged("proxy", 4, 300)
        wait_for(lambda: swarm.lb_up_servers() == 4, 60, interval=1, what="HAProxy sees 4 proxies UP")
        lb_s = time.monotonic() - t0
        wait_for(lambda: swarm.prom_proxy_targets_up() == 4, 90, interval=2, what="Prometheus scrapes 4 proxy targets")
        prom_s = time.monotonic() - t0
        say(f"scaled to 4: healthy after {healthy_s:.0f}s, HAProxy 4 UP after {lb_s:.0f}s, Prometheus 4 targets up after {prom_s:.0f}s")
        hostnames = {c["Config"]["Hostname"] for c in swarm.containers("proxy")}
        _, workers = _workers_seen(swarm, rounds=10, concurrency=8)
        say(f"  /info answered by {len(workers & hostnames)} of the 4 replicas in one burst")

        t1 = time.monotonic()
        swarm.docker("service", "scale", "--detach", f"{swarm.service('proxy')}=2")
        swarm.wait_converged("proxy", 2, 180)
        wait_for(lambda: swarm.lb_up_servers() == 2, 60, interval=1, what="HAProxy back to 2 proxies")
        down_s = time.monotonic() - t1
        time.sleep(3)
    row.add(load.results)
    row.note = (f"docker service scale proxy=4 with LITELLM_WORKERS=1 on 2 shared cores: 4 healthy after {healthy_s:.0f} s, "
                f"HAProxy had 4 UP after {lb_s:.0f} s, Prometheus scraped 4 targets after {prom_s:.0f} s; back to 2 in {down_s:.0f} s")
    figures = row.save()
    say(row.summary())
    assert figures["sent"] >= 20, figures
    assert figures["lost"] == 0 and figures["failed_unclear"] == 0 and figures["failed_clear"] == 0, row.summary()


def test_rolling_update_under_load_fails_no_request(swarm: Swarm) -> None:
    row = Row("Swarm: rolling update of the proxy (start-first) under load", "tests/e2e/test_swarm.py::test_rolling_update_under_load_fails_no_request")
    before = {c["Id"] for c in swarm.containers("proxy")}
    assert len(before) == 2
    with Load(swarm) as load:  # type: ignore[arg-type]
        time.sleep(5)
        t0 = time.monotonic()
        say(f"docker service update --force {swarm.service('proxy')} (start-first; {len(load.results)} requests so far)")
        swarm.docker("service", "update", "--force", "--detach", swarm.service("proxy"))

        last_say = 0.0

        def completed() -> bool:
            nonlocal last_say
            status = json.loads(swarm.docker("service", "inspect", swarm.service("proxy")).stdout)[0].get("UpdateStatus") or {}
            if time.monotonic() - last_say > 15:
                last_say = time.monotonic()
                say(f"  update {status.get('State')}: {status.get('Message', '')} ({time.monotonic() - t0:.0f}s, {len(load.results)} requests)")
            assert status.get("State") not in ("paused", "rollback_started", "rollback_completed"), status
            return status.get("State") == "completed"

        wait_for(completed, 420, interval=3, what="the rolling update to complete")
        swarm.wait_converged("proxy", 2, 120)
        wait_for(lambda: swarm.lb_up_servers() == 2, 60, interval=1, what="HAProxy sees both new proxies UP")
        update_s = time.monotonic() - t0
        time.sleep(5)
    after = {c["Id"] for c in swarm.containers("proxy")}
    assert not before & after, "every proxy task was replaced"
    row.add(load.results)
    row.note = (f"docker service update --force: 2 tasks replaced one at a time, each new one healthy before the old one "
                f"stopped (order start-first, delay 5 s); {update_s:.0f} s until done and both new tasks UP in HAProxy; "
                "4 closed-loop clients, every 4th request streamed")
    figures = row.save()
    say(row.summary())
    assert figures["sent"] >= 20, figures
    assert figures["lost"] == 0 and figures["failed_unclear"] == 0 and figures["failed_clear"] == 0, row.summary()
