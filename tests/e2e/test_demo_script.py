"""The first command, for real: scripts/demo.sh against the Docker engine creates the env file,
brings the demo stack up healthy (here without Grafana: no Grafana image on CI) under a project
name of its own, answers a chat with the generated key, leaves the env file alone on a second
run, and is torn down with ``scripts/demo.sh down`` on every exit path."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from chutes_lb.localstack import free_port
from tests.e2e import compose_stack
from tests.e2e.compose_stack import ROOT, build_or_skip, docker_unavailable_reason, say

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]
FILES = ["-f", "compose.yaml", "-f", "compose.demo.yaml"]


def run_demo(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run scripts/demo.sh, relaying its own lines and the health progress to the terminal."""
    proc = subprocess.Popen(["scripts/demo.sh", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("demo:") or re.search(r"Healthy|Built|ERROR|[Ee]rror", line):
                say("  " + line.rstrip())
            if time.monotonic() > deadline:
                proc.kill()
                break
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return subprocess.CompletedProcess(proc.args, rc, "".join(lines), "")


def chat(port: int, key: str | None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", method="POST", data=json.dumps(
        {"model": "chutes-models", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 10}).encode())
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def demo_env(tmp_path: Path, pytestconfig: pytest.Config) -> Iterator[dict[str, str]]:
    compose_stack.CAPTURE_MANAGER = pytestconfig.pluginmanager.getplugin("capturemanager")
    reason = docker_unavailable_reason()
    if reason:
        say(f"SKIP demo.sh e2e: {reason}")
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTES_", "LITELLM_", "PROXY_", "SIM_", "GRAFANA_", "POLL", "COMPOSE_"))}
    env.update(COMPOSE_BAKE="false", COMPOSE_PROJECT_NAME=f"chutes-lb-demosh-{secrets.token_hex(4)}",
               LITELLM_PORT=str(free_port()), GRAFANA_PORT=str(free_port()),
               LITELLM_WORKERS="1")  # 2 replicas x 1 worker: fits a 2-core machine
    # the images, as the session stack builds them (cached when it ran; skip when they cannot be
    # built, fail on a broken build). The keys here only satisfy interpolation: demo.sh's run gets them from its env file.
    build_or_skip({**env, "PROMETHEUS_TEST_PORT": str(free_port()), "LITELLM_MASTER_KEY": "sk-build-only",
                   "GRAFANA_ADMIN_PASSWORD": "build-only"}, "demo.sh e2e")
    env_file = tmp_path / "demo.env"
    env["DEMO_TEST_ENV_FILE"] = str(env_file)
    try:
        yield env
    finally:
        say(f"tearing down {env['COMPOSE_PROJECT_NAME']}")
        down = run_demo(["down", "--env-file", str(env_file)], env, timeout=180)
        if down.returncode != 0:  # the script failed: remove the project directly
            subprocess.run(["docker", "compose", "--env-file", os.devnull, "-p", env["COMPOSE_PROJECT_NAME"], *FILES,
                            "down", "-v", "--remove-orphans", "--timeout", "10"], cwd=ROOT, env=env, capture_output=True, timeout=180)
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}"],
                              capture_output=True, text=True, timeout=60).stdout.split()
        assert not left, f"containers left behind: {left}"


def test_demo_script_first_run_and_rerun(demo_env: dict[str, str]) -> None:
    env_file = Path(demo_env["DEMO_TEST_ENV_FILE"])
    port = int(demo_env["LITELLM_PORT"])
    start = time.monotonic()
    first = run_demo(["--no-grafana", "--env-file", str(env_file)], demo_env, timeout=1200)
    assert first.returncode == 0, first.stdout[-6000:]
    say(f"demo.sh brought the stack up in {time.monotonic() - start:.0f}s")

    text = env_file.read_text()
    assert env_file.stat().st_mode & 0o077 == 0
    key = re.search(r"^LITELLM_MASTER_KEY=(sk-[0-9a-f]{32})$", text, re.M).group(1)  # type: ignore[union-attr]
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=[0-9a-f]{24}$", text, re.M)
    assert f"LITELLM_MASTER_KEY in {env_file}" in first.stdout and key not in first.stdout
    assert f"http://localhost:{port}" in first.stdout

    assert chat(port, key) == 200
    assert chat(port, None) == 401
    services = subprocess.run(["docker", "compose", "--env-file", str(env_file), *FILES, "ps", "--services"],
                              cwd=ROOT, env=demo_env, capture_output=True, text=True, timeout=60).stdout.split()
    assert "grafana" not in services and {"lb", "proxy", "simulator", "redis", "utilization-poller"} <= set(services)

    again = run_demo(["--no-grafana", "--env-file", str(env_file)], demo_env, timeout=600)
    assert again.returncode == 0, again.stdout[-4000:]
    assert "not overwritten" in again.stdout and env_file.read_text() == text
    assert chat(port, key) == 200
