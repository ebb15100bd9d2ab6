"""Helpers for the real Compose stack (demo mode: simulator instead of Chutes); the session
fixture ``stack`` (tests/e2e/conftest.py) uses ``open_stack``.

Builds the images, brings every service but Grafana up healthy under a unique project name on
free host ports, and always tears it down with ``down -v``. Skips (with the reason) when no
Docker engine or Compose plugin answers, when a base image is missing (no registry here: CI
builds the stand-ins first), or when the images cannot be built."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from chutes_lb.localstack import free_port

ROOT = Path(__file__).resolve().parents[2]
FILES = ["-f", "compose.yaml", "-f", "compose.demo.yaml", "-f", "compose.test.yaml"]
# Everything but grafana (no Grafana image on CI; its provisioning is checked statically).
SERVICES = ["redis", "simulator", "utilization-poller", "proxy", "lb", "prometheus"]
BASE_IMAGES = ["python:3.11-slim", "redis:7.4-alpine", "prom/prometheus:v3.1.0", "haproxy:3.0-alpine"]
# A developer's .env must not leak into the test stack (a real CHUTES_API_KEY, slow poll intervals).
HERMETIC = ["--env-file", os.devnull]
BUILD_TIMEOUT = int(os.environ.get("E2E_BUILD_TIMEOUT", "900"))
UP_TIMEOUT = int(os.environ.get("E2E_UP_TIMEOUT", "300"))


CAPTURE_MANAGER: Any = None  # set by the conftest fixture: lets progress through pytest's capture


def say(msg: str) -> None:
    """Progress on the terminal even while pytest captures output."""
    if CAPTURE_MANAGER is not None:
        with CAPTURE_MANAGER.global_and_fixture_disabled():
            print(f"[e2e] {msg}", file=sys.stderr, flush=True)
    else:
        print(f"[e2e] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def docker_unavailable_reason() -> str | None:
    if not shutil.which("docker"):
        return "no docker CLI on PATH"
    try:
        if _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=15).returncode != 0:
            return "no Docker engine answers (CI starts one with ../shared/container-kit/docker-up.sh)"
        if _run(["docker", "compose", "version"], timeout=15).returncode != 0:
            return "the Docker Compose v2 plugin is missing"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker does not answer: {exc}"
    missing = [img for img in BASE_IMAGES if _run(["docker", "image", "inspect", img], timeout=15).returncode != 0]
    if missing:
        return f"base images missing and no registry to pull from: {', '.join(missing)} (../shared/container-kit/standin.sh)"
    return None


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    api_port: int
    prometheus_port: int
    master_key: str
    torn_down: bool = False
    log: list[str] = field(default_factory=list)

    # ------------------------------------------------------------ compose
    def compose(self, *args: str, timeout: float = 120, check: bool = True, files: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = ["docker", "compose", *HERMETIC, "-p", self.project, *(FILES if files is None else files), *args]
        proc = _run(cmd, timeout=timeout, cwd=ROOT, env=self.env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        out = self.compose("ps", "--all", "--format", "json", *([service] if service else [])).stdout.strip()
        if not out:
            return []
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, timeout=60).stdout

    def down(self) -> None:
        if not self.torn_down:
            say(f"down -v ({self.project})")
            self.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=180, check=False)
            self.torn_down = True

    def sim_admin(self, method: str, path: str, body: Any = None) -> Any:
        """The simulator's admin API, from inside its container (it is not published)."""
        code = ("import json, sys, urllib.request; req = urllib.request.Request('http://127.0.0.1:8080' + sys.argv[1], "
                "method=sys.argv[2], data=None if sys.argv[3] == 'null' else sys.argv[3].encode(), "
                "headers={'Content-Type': 'application/json'}); print(urllib.request.urlopen(req, timeout=20).read().decode())")
        out = self.compose("exec", "-T", "simulator", "python", "-c", code, path, method, json.dumps(body), timeout=60)
        return json.loads(out.stdout)

    # ------------------------------------------------------------ HTTP
    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def prom(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.prometheus_port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=15) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.prom("/api/v1/query", query=expr)["result"]


def _build(env: dict[str, str]) -> str | None:
    """Build the three images; returns a reason string on failure. Progress goes to the terminal."""
    cmd = ["docker", "compose", *HERMETIC, "-p", "chutes-lb-e2e-build", *FILES, "build", "--progress", "plain"]
    say("building images: " + " ".join(cmd[6:]) + f" (up to {BUILD_TIMEOUT}s)")
    start = time.monotonic()
    tail: list[str] = []
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-40:]
            if re.match(r"#\d+ \[[\w-]+ +\d+/\d+\]", line) or "Built" in line or "ERROR" in line:
                say("  " + line.rstrip())  # one line per build step, plus the result
            if time.monotonic() - start > BUILD_TIMEOUT:
                proc.kill()
                return f"image build exceeded {BUILD_TIMEOUT}s"
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if rc != 0:
        return "image build failed:\n" + "\n".join(tail)
    say(f"images built in {time.monotonic() - start:.0f}s")
    return None


# a build can only fail for want of a base image (no registry here, no container kit): anything
# else is a broken Dockerfile or build context, and must fail the tests rather than skip them
_NO_BASE_IMAGE = ("failed to resolve source metadata", "pull access denied", "manifest unknown", "failed to do request",
                  "no such host", "i/o timeout", "repository does not exist")


def build_or_skip(env: Mapping[str, str], what: str = "e2e") -> None:
    """Build the images; skip when a base image cannot be had, fail on any other build error."""
    failure = _build(dict(env))
    if not failure:
        return
    if any(marker in failure.lower() for marker in _NO_BASE_IMAGE) and os.environ.get("CI", "").lower() != "true":
        say(f"SKIP {what}: {failure}")
        pytest.skip(failure)
    pytest.fail(f"{what}: the images do not build (a broken Dockerfile or build context, not a missing base image):\n{failure}")


def open_stack() -> Iterator[Stack]:
    reason = docker_unavailable_reason()
    if reason:
        say(f"SKIP e2e: {reason}")
        pytest.skip(reason)
    project = f"chutes-lb-e2e-{secrets.token_hex(4)}"
    master_key = "sk-e2e-" + secrets.token_urlsafe(16)
    api_port, prom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "LITELLM_", "PROXY_", "SIM_", "GRAFANA_", "POLL"))}
    env.update(
        COMPOSE_BAKE="false",
        COMPOSE_PROJECT_NAME=project,
        LITELLM_MASTER_KEY=master_key,
        GRAFANA_ADMIN_PASSWORD=secrets.token_urlsafe(12),
        LITELLM_PORT=str(api_port),
        PROMETHEUS_TEST_PORT=str(prom_port),
        PROXY_REPLICAS="2",
        LITELLM_WORKERS="1",  # 2 replicas x 1 worker: fits a 2-core CI machine
        SIM_TIME_SCALE="0.2",
        SIM_FILLER_ENTRIES="50",
        UTILIZATION_REFRESH_SECONDS="5",
        POLL_INTERVAL_SECONDS="5",
    )
    build_or_skip(env)
    st = Stack(project, env, api_port, prom_port, master_key)
    try:
        say(f"up -d --wait {' '.join(SERVICES)} (project {project}, api :{api_port}, prometheus :{prom_port})")
        start = time.monotonic()
        proc = st.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT), *SERVICES, timeout=UP_TIMEOUT + 60, check=False)
        if proc.returncode != 0:
            ps = st.compose("ps", "--all", check=False).stdout
            logs = st.compose("logs", "--no-color", "--tail", "40", check=False).stdout
            pytest.fail(f"stack did not become healthy:\n{proc.stderr[-3000:]}\n{ps}\n{logs[-6000:]}")
        say(f"stack healthy in {time.monotonic() - start:.0f}s")
        yield st
    finally:
        st.down()


def wait_for(predicate: Any, timeout: float, interval: float = 2.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError, AssertionError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
