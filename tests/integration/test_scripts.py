"""The seed's scripts, run for real: run-proxy.sh --demo / status / stop and test-proxy.sh."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from chutes_lb.localstack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def script_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LITELLM_MASTER_KEY", "CHUTES_API_KEY", "REDIS_URL", "LITELLM_PORT")}
    env.update(CHUTES_LB_RUN_DIR=str(tmp_path / "run"), CHUTES_LB_PROXY_LOG=str(tmp_path / "proxy.log"),
               SIM_PORT=str(free_port()), POLLER_PORT=str(free_port()), CHUTES_LB_REDIS_PORT=str(free_port()))
    return env


@pytest.mark.parametrize("script", ["run-proxy.sh", "test-proxy.sh"])
def test_usage_on_h(script: str) -> None:
    r = run([f"scripts/{script}", "-h"], dict(os.environ), timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("usage:")
    bad = run([f"scripts/{script}", "--bogus"], dict(os.environ), timeout=30)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_real_mode_without_key_fails_fast(script_env: dict[str, str]) -> None:
    r = run(["scripts/run-proxy.sh", str(free_port())], script_env, timeout=60)
    assert r.returncode == 1 and "CHUTES_API_KEY is not set" in r.stderr


def test_taken_port_is_a_clear_error(script_env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run(["scripts/run-proxy.sh", "--demo", str(port)], script_env, timeout=60)
    assert r.returncode == 1 and f"port {port} is already in use" in r.stderr


def test_demo_start_check_stop(script_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    try:
        r = run(["scripts/run-proxy.sh", "--demo", str(port)], script_env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "DEMO MODE" in r.stdout and "ready" in r.stdout
        demo_env = (tmp_path / "run" / "demo.env").read_text()
        assert "LITELLM_MASTER_KEY=sk-demo-" in demo_env
        assert (tmp_path / "run" / "demo.env").stat().st_mode & 0o077 == 0
        key = demo_env.split("LITELLM_MASTER_KEY=")[1].split()[0]
        status = run(["scripts/run-proxy.sh", "status"], {**script_env, "LITELLM_PORT": str(port)}, timeout=30)
        assert "proxy: running" in status.stdout and "proxy answers: ready" in status.stdout
        check = run(["scripts/test-proxy.sh", "--stream"], {**script_env, "LITELLM_PORT": str(port)}, timeout=180)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "all checks passed" in check.stdout and "ended with [DONE]" in check.stdout
        log = (tmp_path / "proxy.log").read_text()
        assert "routing" in log and key not in log
    finally:
        stop = run(["scripts/run-proxy.sh", "stop"], script_env, timeout=60)
    assert stop.returncode == 0 and "stopped proxy" in stop.stdout and "stopped redis" in stop.stdout
    after = run(["scripts/test-proxy.sh", "--health"], {**script_env, "LITELLM_PORT": str(port)}, timeout=30)
    assert after.returncode == 1
