"""The seed's scripts, run for real: run-proxy.sh (--demo, real mode, status, stop, restart,
--free-ports) and test-proxy.sh. Each test has a private CHUTES_LB_RUN_DIR and free ports, and
stops everything it started, also when it fails."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from chutes_lb.localstack import free_port, port_open

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "scripts/run-proxy.sh"
COMPONENTS = ("redis", "simulator", "poller", "proxy")
# what a developer's shell or .env may set that would change what these tests start
SCRUB = ("LITELLM_MASTER_KEY", "CHUTES_API_KEY", "REDIS_URL", "LITELLM_PORT", "LITELLM_CONFIG_PATH", "LITELLM_HOST",
         "DEMO_MODE", "CHUTES_API_BASE", "CHUTES_INFERENCE_BASE", "SIM_FLEET_PATH", "PROMETHEUS_MULTIPROC_DIR")


def run(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def make_env(tmp_path: Path, name: str = "run") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env.update(CHUTES_LB_RUN_DIR=str(tmp_path / name), CHUTES_LB_PROXY_LOG=str(tmp_path / f"{name}-proxy.log"),
               SIM_PORT=str(free_port()), POLLER_PORT=str(free_port()), CHUTES_LB_REDIS_PORT=str(free_port()))
    return env


@pytest.fixture
def script_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = make_env(tmp_path)
    yield env
    stop_all(env)


def stop_all(env: dict[str, str]) -> None:
    """Teardown on every exit path: the script's stop, then SIGKILL to any group it left."""
    run_dir = Path(env["CHUTES_LB_RUN_DIR"])
    if not run_dir.exists():
        return
    run([SCRIPT, "stop"], env, timeout=90)
    container = run_dir / "redis.container"
    if container.exists():  # the script's stop failed to remove it
        subprocess.run(["docker", "rm", "-f", container.read_text().strip()], capture_output=True, timeout=60)
    for pid_file in run_dir.glob("*.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    alive = []
    for pid in map(int, out):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes():
                alive.append(pid)
        except OSError:
            pass
    return alive


def assert_nothing_runs(env: dict[str, str], *ports: int) -> None:
    run_dir = Path(env["CHUTES_LB_RUN_DIR"])
    for name in COMPONENTS:
        pid_file = run_dir / f"{name}.pid"
        assert not pid_file.exists() or not group_members(int(pid_file.read_text())), f"{name} left running"
    for port in (*ports, int(env["SIM_PORT"]), int(env["POLLER_PORT"]), int(env["CHUTES_LB_REDIS_PORT"])):
        assert not port_open(port), f"port {port} is still served after a failed start"
    status = run([SCRIPT, "status"], env, timeout=60).stdout
    assert ": running" not in status and "ORPHANED" not in status, status


def http(url: str, key: str | None = None, body: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method="POST" if body else "GET")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def chat(port: int, key: str) -> int:
    return http(f"http://127.0.0.1:{port}/v1/chat/completions", key,
                {"model": "chutes-models", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})[0]


def demo_key(env: dict[str, str]) -> str:
    text = (Path(env["CHUTES_LB_RUN_DIR"]) / "demo.env").read_text()
    return text.split("LITELLM_MASTER_KEY=")[1].split()[0]


def recorded(env: dict[str, str]) -> dict[str, str]:
    lines = (Path(env["CHUTES_LB_RUN_DIR"]) / "run.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


# ---------------------------------------------------------------- usage and fast refusals
@pytest.mark.parametrize("script", ["run-proxy.sh", "test-proxy.sh"])
def test_usage_on_h(script: str) -> None:
    r = run([f"scripts/{script}", "-h"], dict(os.environ), timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("usage:")
    bad = run([f"scripts/{script}", "--bogus"], dict(os.environ), timeout=30)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_help_prints_the_real_run_dir(tmp_path: Path) -> None:
    env = make_env(tmp_path, "elsewhere")
    r = run([SCRIPT, "--help"], env, timeout=30)
    assert r.returncode == 0
    assert f"source {tmp_path}/elsewhere/demo.env" in r.stdout and "/tmp/chutes-lb/demo.env" not in r.stdout
    assert "--free-ports" in r.stdout
    assert not (tmp_path / "elsewhere").exists(), "--help must not create the run dir"


def test_real_mode_without_key_fails_fast(script_env: dict[str, str]) -> None:
    r = run([SCRIPT, str(free_port())], script_env, timeout=60)
    assert r.returncode == 1 and "CHUTES_API_KEY is not set" in r.stderr


def test_taken_port_is_a_clear_error(script_env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run([SCRIPT, "--demo", str(port)], script_env, timeout=60)
    assert r.returncode == 1 and f"port {port} is already in use" in r.stderr
    assert f"run-proxy.sh --demo {port + 1}" in r.stderr  # a command that works (not "demo PORT")


# ---------------------------------------------------------------- bug 6: a failed start starts nothing
def test_sample_master_key_starts_nothing_and_says_why(script_env: dict[str, str]) -> None:
    port = free_port()
    r = run([SCRIPT, "--demo", str(port)], {**script_env, "LITELLM_MASTER_KEY": "sk-1234"}, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "LITELLM_MASTER_KEY: the sample value sk-1234 is refused; choose a secret" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "starting" not in r.stdout  # checked before any process started
    assert_nothing_runs(script_env, port)


def test_broken_config_starts_nothing_and_says_why(script_env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_list:\n  - model_name: chutes-models\n    litellm_params: {model: openai/x/y}\n")
    port = free_port()
    r = run([SCRIPT, "--demo", str(port)], {**script_env, "LITELLM_CONFIG_PATH": str(broken)}, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if "configuration error:" in line]
    assert errors and all(str(broken) in line for line in errors), r.stderr
    assert any("model_info.id (the chute UUID) is required" in line for line in errors), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert_nothing_runs(script_env, port)
    # the next start is not blocked by leftovers ("port ... (local Redis) is in use")
    again = run([SCRIPT, "--demo", str(port)], {**script_env, "LITELLM_CONFIG_PATH": str(tmp_path / "missing.yaml")}, timeout=120)
    assert "is in use" not in again.stderr and "file not found" in again.stderr, again.stderr


def test_component_dying_at_start_stops_everything_started(script_env: dict[str, str]) -> None:
    """The checks pass, Redis, simulator and poller start, then the proxy cannot bind its address
    (TEST-NET-1, on no interface here): all of it is stopped, and the proxy's error is shown."""
    port = free_port()
    r = run([SCRIPT, "--demo", str(port)], {**script_env, "LITELLM_HOST": "192.0.2.1"}, timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "starting utilization-poller" in r.stdout  # the failure came after the others had started
    shown = [line for line in r.stderr.splitlines() if "proxy exited during start-up" in line]
    assert shown and "Cannot assign requested address" in shown[0], r.stderr
    assert "Traceback" not in r.stderr
    assert "stopping what it started" in r.stderr
    assert_nothing_runs(script_env, port)


# ---------------------------------------------------------------- the demo, end to end
def slow_setsid_path(tmp_path: Path) -> str:
    """PATH whose ``setsid`` waits 0.3 s before it detaches, as a loaded machine may: a component
    is then briefly in the script's own process group after it was spawned."""
    shim = tmp_path / "slow-setsid"
    shim.mkdir()
    real = shutil.which("setsid")
    assert real, "setsid (util-linux) is needed"
    (shim / "setsid").write_text(f"#!/bin/sh\nsleep 0.3\nexec {real} \"$@\"\n")
    (shim / "setsid").chmod(0o755)
    return f"{shim}{os.pathsep}{os.environ['PATH']}"


def test_demo_start_check_stop(script_env: dict[str, str], tmp_path: Path) -> None:
    """(With a setsid that detaches late: a component not yet in its own group is not reported dead;
    the clean-clone CI saw "redis exited during start-up" with an empty log from that race.)"""
    port = free_port()
    r = run([SCRIPT, "--demo", str(port)], {**script_env, "PATH": slow_setsid_path(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DEMO MODE" in r.stdout and "ready" in r.stdout
    assert "first utilization poll ok" in r.stdout
    demo_env = (tmp_path / "run" / "demo.env").read_text()
    assert "LITELLM_MASTER_KEY=sk-demo-" in demo_env
    assert (tmp_path / "run" / "demo.env").stat().st_mode & 0o077 == 0
    key = demo_key(script_env)
    # status reads the recorded port (no LITELLM_PORT in this environment)
    status = run([SCRIPT, "status"], script_env, timeout=30)
    assert "proxy: running" in status.stdout and f"proxy answers: ready (port {port})" in status.stdout
    check = run(["scripts/test-proxy.sh", "--stream"], {**script_env, "LITELLM_PORT": str(port)}, timeout=180)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "all checks passed" in check.stdout and "ended with [DONE]" in check.stdout
    log = (tmp_path / "run-proxy.log").read_text()
    assert "routing" in log and key not in log
    assert (tmp_path / "run" / "proxy-metrics").is_dir()  # PROMETHEUS_MULTIPROC_DIR under the run dir
    stop = run([SCRIPT, "stop"], script_env, timeout=90)
    assert stop.returncode == 0 and "stopped proxy" in stop.stdout and "stopped redis" in stop.stdout
    assert not (tmp_path / "run" / "proxy-metrics").exists()
    assert not Path(tempfile.gettempdir(), f"chutes-lb-metrics-{port}").exists()
    after = run(["scripts/test-proxy.sh", "--health"], {**script_env, "LITELLM_PORT": str(port)}, timeout=30)
    assert after.returncode == 1


def custom_config(directory: Path) -> Path:
    """A config outside proxy/ with one chute of the demo fleet and one the fleet file never heard of."""
    directory.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((ROOT / "proxy" / "litellm-config.yaml").read_text())
    template = config["model_list"][0]
    config["model_list"] = [
        next(m for m in config["model_list"] if "DeepSeek" in m["litellm_params"]["model"]),
        {"model_name": template["model_name"], "litellm_params": {**template["litellm_params"], "model": "openai/acme/Brand-New-1"},
         "model_info": {"id": "0c2b7a57-3c1e-4f5a-9d3e-1a2b3c4d5e6f", "concurrency": 4}},
    ]
    path = directory / "custom.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    if (ROOT / "proxy" / "chutes_routing.py").exists():  # older trees: LiteLLM imports the hook from the config's directory
        shutil.copy(ROOT / "proxy" / "chutes_routing.py", directory)
    return path


def served_models(sim_port: str) -> set[str]:
    status, body = http(f"http://127.0.0.1:{sim_port}/v1/models")
    assert status == 200
    return {m["id"] for m in json.loads(body)["data"]}


def redis_container_possible() -> bool:
    """A Docker engine answers and has the Redis image (no registry to pull from on CI)."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "image", "inspect", "redis:7.4-alpine"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def path_without(tmp_path: Path, program: str) -> str:
    """PATH with every directory's programs but ``program`` (symlinks in one directory)."""
    hidden = tmp_path / f"path-without-{program}"
    hidden.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.listdir(directory):
            target = os.path.join(directory, entry)
            if entry != program and not (hidden / entry).exists() and os.access(target, os.X_OK):
                (hidden / entry).symlink_to(target)
    return str(hidden)


def test_two_demos_side_by_side_and_restart_keeps_key_and_config(tmp_path: Path) -> None:
    """--free-ports moves the simulator, the poller and Redis, so a second demo runs beside the
    first with the same environment; restart reuses the recorded config, ports and demo key.
    Where Docker has the Redis image, the second demo finds no redis-server on its PATH and runs
    Redis in a container, which stop removes."""
    env_a = {**make_env(tmp_path, "a"), "LITELLM_WORKERS": "1"}
    env_b = {**env_a, "CHUTES_LB_RUN_DIR": str(tmp_path / "b"), "CHUTES_LB_PROXY_LOG": str(tmp_path / "b-proxy.log")}
    container = redis_container_possible()
    if container:
        env_b["PATH"] = path_without(tmp_path, "redis-server")
    port_a, port_b = free_port(), free_port()
    config = custom_config(tmp_path / "cfg")
    try:
        a = run([SCRIPT, "--demo", str(port_a), "--free-ports"], {**env_a, "LITELLM_CONFIG_PATH": str(config)})
        assert a.returncode == 0, a.stdout + a.stderr
        b = run([SCRIPT, "--demo", str(port_b), "--free-ports"], env_b)
        assert b.returncode == 0, b.stdout + b.stderr
        rec_a, rec_b = recorded(env_a), recorded(env_b)
        assert {rec_a["REC_SIM_PORT"], rec_a["REC_POLLER_PORT"], rec_a["REC_REDIS_PORT"]}.isdisjoint(
            {rec_b["REC_SIM_PORT"], rec_b["REC_POLLER_PORT"], rec_b["REC_REDIS_PORT"]})
        assert env_a["SIM_PORT"] not in (rec_a["REC_SIM_PORT"], rec_b["REC_SIM_PORT"])
        assert rec_b["REC_REDIS_KIND"] == ("container" if container else "local")
        redis_container = (tmp_path / "b" / "redis.container").read_text().strip() if container else ""
        key_a, key_b = demo_key(env_a), demo_key(env_b)
        assert chat(port_a, key_a) == 200 and chat(port_b, key_b) == 200
        # the simulator serves the configured chutes: A's config, including a chute no fleet file names
        assert served_models(rec_a["REC_SIM_PORT"]) == {"deepseek-ai/DeepSeek-V3-0324", "acme/Brand-New-1"}
        assert "acme/Brand-New-1" not in served_models(rec_b["REC_SIM_PORT"])

        # restart from a shell that has neither the custom config nor the port
        again = run([SCRIPT, "restart"], env_a)
        assert again.returncode == 0, again.stdout + again.stderr
        assert recorded(env_a)["REC_CONFIG"] == str(config) and demo_key(env_a) == key_a
        assert chat(port_a, key_a) == 200  # a client holding the old key still gets in
        assert served_models(recorded(env_a)["REC_SIM_PORT"]) == {"deepseek-ai/DeepSeek-V3-0324", "acme/Brand-New-1"}
        assert chat(port_b, key_b) == 200  # the other demo was not touched
        assert "proxy answers: ready" in run([SCRIPT, "status"], env_b, timeout=30).stdout
    finally:
        stop_all(env_a)
        stop_all(env_b)
    for port in (port_a, port_b):
        assert not port_open(port)
    if container:
        names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=30).stdout.split()
        assert redis_container not in names, "stop left the Redis container"


# ---------------------------------------------------------------- real mode offline; bug 7: orphans
def test_orphaned_workers_after_parent_kill_9_and_offline_real_mode(script_env: dict[str, str]) -> None:
    """The proxy's parent is killed with SIGKILL: its workers are orphans. They are frozen first
    (SIGSTOP), so they cannot act on a parent-death signal: only the script's process-group
    handling can end them, which is what status and stop must do. The start is real mode with a
    bogus key and no route to Chutes: it starts, but must say that the first poll failed."""
    port, dead = free_port(), free_port()
    env = {**script_env, "CHUTES_API_KEY": "cpk_bogus", "LITELLM_MASTER_KEY": "sk-test-" + os.urandom(8).hex(),
           "CHUTES_API_BASE": f"http://127.0.0.1:{dead}", "CHUTES_INFERENCE_BASE": f"http://127.0.0.1:{dead}/v1",
           "POLL_TIMEOUT_SECONDS": "2", "LITELLM_WORKERS": "2"}
    r = run([SCRIPT, str(port)], env)
    assert r.returncode == 0, r.stdout + r.stderr

    leader = int((Path(env["CHUTES_LB_RUN_DIR"]) / "proxy.pid").read_text())
    workers = [pid for pid in group_members(leader) if pid != leader]
    assert workers, "the proxy runs no worker processes"
    for pid in workers:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    os.kill(leader, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while leader in group_members(leader) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = group_members(leader)
    assert orphans and leader not in orphans, orphans
    assert port_open(port), "the orphaned workers should still hold the port"

    status = run([SCRIPT, "status"], env, timeout=30).stdout
    assert "proxy: ORPHANED" in status and all(str(pid) in status for pid in orphans), (orphans, status)
    blocked = run([SCRIPT, str(port)], env, timeout=60)
    assert blocked.returncode == 1 and "already running" in blocked.stderr and "is already in use" not in blocked.stderr, blocked.stderr

    stop = run([SCRIPT, "stop"], env, timeout=90)
    assert stop.returncode == 0 and "orphaned" in stop.stdout, stop.stdout + stop.stderr
    assert not group_members(leader), (group_members(leader), stop.stdout)
    assert not port_open(port), stop.stdout

    warning = r.stderr[r.stderr.find("WARNING"):]
    assert "WARNING" in r.stderr and "no successful poll yet" in warning and "connect" in warning, r.stderr


# ---------------------------------------------------------------- scripts/demo.sh without an engine
FAKE_DOCKER = """#!/bin/sh
# a stand-in docker: records its arguments; "info" fails when FAKE_DOCKER_DOWN is set
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
  info) [ -z "$FAKE_DOCKER_DOWN" ] || { echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" >&2; exit 1; } ;;
esac
exit 0
"""


def fake_docker_env(tmp_path: Path, down: bool = False) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in SCRUB and not k.startswith(("GRAFANA_", "COMPOSE_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_DOCKER_LOG=str(tmp_path / "docker.log"), FAKE_DOCKER_DOWN="1" if down else "")
    return env


def test_demo_sh_without_docker_points_to_the_native_demo(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    r = run(["scripts/demo.sh", "--env-file", str(env_file)], fake_docker_env(tmp_path, down=True), timeout=60)
    assert r.returncode == 1 and "the Docker engine does not answer" in r.stderr and "./scripts/run-proxy.sh --demo" in r.stderr
    assert not env_file.exists()


def test_demo_sh_env_file_is_created_never_overwritten(tmp_path: Path) -> None:
    env = fake_docker_env(tmp_path)
    env_file = tmp_path / ".env"
    first = run(["scripts/demo.sh", "--env-file", str(env_file)], env, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    created = env_file.read_text()
    assert env_file.stat().st_mode & 0o077 == 0 and "LITELLM_MASTER_KEY=sk-" in created and "GRAFANA_ADMIN_PASSWORD=" in created
    calls = (tmp_path / "docker.log").read_text()
    assert f"compose --env-file {env_file} -f compose.yaml -f compose.demo.yaml up -d --build --wait --wait-timeout" in calls
    assert run(["scripts/demo.sh", "--env-file", str(env_file)], env, timeout=60).returncode == 0
    assert env_file.read_text() == created

    mine = tmp_path / "mine.env"
    mine.write_text("LITELLM_MASTER_KEY=sk-my-own-key\nCHUTES_API_KEY=cpk_x")  # no final newline
    r = run(["scripts/demo.sh", "--env-file", str(mine)], env, timeout=60)
    assert r.returncode == 0 and "added a generated GRAFANA_ADMIN_PASSWORD" in r.stdout
    assert mine.read_text().startswith("LITELLM_MASTER_KEY=sk-my-own-key\nCHUTES_API_KEY=cpk_x\nGRAFANA_ADMIN_PASSWORD=")

    sample = tmp_path / "sample.env"
    sample.write_text("LITELLM_MASTER_KEY=sk-1234\nGRAFANA_ADMIN_PASSWORD=x\n")
    r = run(["scripts/demo.sh", "--env-file", str(sample)], env, timeout=60)
    assert r.returncode == 1 and "sample value sk-1234" in r.stderr
    assert sample.read_text() == "LITELLM_MASTER_KEY=sk-1234\nGRAFANA_ADMIN_PASSWORD=x\n"
