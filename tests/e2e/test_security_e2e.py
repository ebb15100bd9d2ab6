"""Security through the real Compose stack (session fixture of tests/e2e/conftest.py):
- the auth matrix over every route at the front door (no key, wrong key, right key);
- the session's master key (a fresh random secret: a canary) never appears in any service's
  ``docker compose logs``, in any answer, nor in the built images (``docker history``, image
  config, and every file of the project's own layers from ``docker save``); no ``.env`` in any layer;
- every container runs as a non-root user with a read-only root filesystem (``docker inspect``);
- Redis, Prometheus (except the loopback port compose.test.yaml adds) and the proxies' metrics
  are not published on the host (``docker port``), and /metrics is denied at the front door.
"""
from __future__ import annotations

import io
import json
import subprocess
import tarfile

import httpx
import pytest

from tests.e2e.compose_stack import Stack, _run, say

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

CHAT = {"model": "chutes-models", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
PROTECTED = [
    ("POST", "/v1/chat/completions", CHAT), ("POST", "/chat/completions", CHAT),
    ("POST", "/v1/completions", {"model": "chutes-models", "prompt": "hi", "max_tokens": 8}),
    ("GET", "/v1/models", None), ("GET", "/models", None), ("GET", "/info", None), ("GET", "/model/info", None),
]
PUBLIC = ["/health/liveliness", "/livez", "/readyz"]
IMAGES = ["chutes-lb/proxy:dev", "chutes-lb/utilization-poller:dev", "chutes-lb/simulator:dev"]


def _secrets(stack: Stack) -> dict[str, str]:
    return {"LITELLM_MASTER_KEY": stack.master_key, "GRAFANA_ADMIN_PASSWORD": stack.env["GRAFANA_ADMIN_PASSWORD"]}


def _leaks(stack: Stack, text: str) -> list[str]:
    return [name for name, value in _secrets(stack).items() if value in text or value[-12:] in text]


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_front_door_auth_matrix(stack: Stack, method: str, path: str, body: dict | None) -> None:
    key = stack.master_key
    cases = [({}, 401), ({"Authorization": "Bearer wrong-key"}, 401), ({"Authorization": f"Bearer {key}x"}, 401),
             ({"x-api-key": key[:-1]}, 401), ({"Authorization": f"Basic {key}"}, 401),
             ({"Authorization": f"Bearer {key}"}, 200), ({"x-api-key": key}, 200)]
    for headers, expected in cases:
        r = httpx.request(method, stack.api_base + path, json=body, headers=headers, timeout=60)
        assert r.status_code == expected, (path, list(headers), r.status_code, r.text[:300])
        if expected == 401:
            err = r.json()["error"]
            assert err["type"] == "authentication_error" and err["message"], r.text
        assert not _leaks(stack, r.text + json.dumps(dict(r.headers))), (path, r.text[:300])


def test_front_door_public_routes_and_metrics_denied(stack: Stack) -> None:
    for path in PUBLIC:
        assert httpx.get(stack.api_base + path, timeout=10).status_code == 200, path
    for path in ("/metrics", "/metrics/", "/metrics?x=1"):
        r = httpx.get(stack.api_base + path, timeout=10, headers={"Authorization": f"Bearer {stack.master_key}"})
        assert r.status_code == 404, (path, r.status_code)


def test_master_key_never_in_compose_logs(stack: Stack) -> None:
    # errors of every kind first: wrong keys that embed the real one, bad input, unknown model
    key = stack.master_key
    with httpx.Client(base_url=stack.api_base, timeout=60) as c:
        for wrong in (key + "x", key[:-1], key.upper(), f"{key} {key}"):
            assert c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        for raw in (b"{not json", b"[]", b'{"model":"nope","messages":[{"role":"user","content":"x"}]}'):
            c.post("/v1/chat/completions", content=raw, headers={**auth, "content-type": "application/json"})
        assert c.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200
    logs = stack.compose("logs", "--no-color", "--timestamps", timeout=120).stdout
    assert "chutes_lb" in logs or "routing" in logs, "no logs collected: the scan would prove nothing"
    leaks = [line[:300] for line in logs.splitlines() if _leaks(stack, line)]
    assert not leaks, leaks[:5]


def _project_layers(image: str) -> tuple[dict, list[tuple[str, bytes]]]:
    """(image config, [(path, content)] of the files the project adds: the layers above the base image,
    without third-party site-packages)."""
    base_layers = set(json.loads(_run(["docker", "image", "inspect", "python:3.11-slim"]).stdout)[0]["RootFS"]["Layers"])
    proc = subprocess.run(["docker", "save", image], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outer = tarfile.open(fileobj=io.BytesIO(proc.stdout))
    manifest = json.load(outer.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
    config = json.load(outer.extractfile(manifest["Config"]))  # type: ignore[arg-type]
    diff_ids = config["rootfs"]["diff_ids"]
    files: list[tuple[str, bytes]] = []
    names: list[str] = []
    for layer_path, diff_id in zip(manifest["Layers"], diff_ids):
        layer = tarfile.open(fileobj=outer.extractfile(layer_path))  # type: ignore[arg-type]
        for member in layer:
            names.append(member.name)
            if diff_id in base_layers or not member.isfile():
                continue
            if member.name.startswith("opt/venv/lib/") and "chutes_lb" not in member.name:
                continue  # third-party packages installed from the hashed lock (names still checked)
            if member.size <= 2 * 1024 * 1024 and not member.name.endswith((".so", ".pyc", ".whl")):
                files.append((member.name, layer.extractfile(member).read()))  # type: ignore[union-attr]
    config["_all_names"] = names
    return config, files


@pytest.mark.parametrize("image", IMAGES)
def test_no_secret_baked_into_the_images(stack: Stack, image: str) -> None:
    history = _run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image]).stdout
    assert history, image
    assert not _leaks(stack, history)
    config, files = _project_layers(image)
    env = config.get("config", {}).get("Env", [])
    for entry in env:
        name, _, value = entry.partition("=")
        if any(word in name for word in ("KEY", "PASSWORD", "SECRET", "TOKEN")):
            assert not value, f"{image} bakes {name}"
    assert not [n for n in config["_all_names"] if n.rsplit("/", 1)[-1] in (".env", ".env.local")], image
    leaks = [path for path, content in files if _leaks(stack, content.decode("latin-1"))]
    assert not leaks, (image, leaks)
    say(f"{image}: {len(files)} project-layer files scanned, {len(env)} env entries, no secret")
    assert files, "no project-layer file scanned: the scan would prove nothing"


def test_containers_non_root_read_only(stack: Stack) -> None:
    for r in stack.containers():
        info = json.loads(_run(["docker", "inspect", r["ID"]]).stdout)[0]
        user = info["Config"].get("User") or ""
        uid = _run(["docker", "exec", r["ID"], "id", "-u"]).stdout.strip()
        assert uid and uid != "0", (r["Service"], user, uid)
        assert info["HostConfig"]["ReadonlyRootfs"] is True, r["Service"]
        assert info["HostConfig"].get("Privileged") is False, r["Service"]


def test_internal_services_not_published(stack: Stack) -> None:
    for r in stack.containers():
        ports = _run(["docker", "port", r["ID"]]).stdout.strip()
        if r["Service"] == "lb":
            assert ports and all(":" in line for line in ports.splitlines()), ports
            assert all(line.startswith("4000/tcp") for line in ports.splitlines()), ports  # not 8404 (stats, metrics)
        elif r["Service"] == "prometheus":  # compose.test.yaml publishes it on loopback for the tests only
            assert all("127.0.0.1:" in line for line in ports.splitlines()), ports
        else:  # redis, proxy (with its /metrics), poller, simulator
            assert ports == "", (r["Service"], ports)


def test_front_door_cuts_off_slow_loris_clients(stack: Stack) -> None:
    """The proxy itself (uvicorn) has no header-read timeout (test_fuzz_proxy.py); the front door
    does: HAProxy ``timeout http-request 30s`` answers 408 and closes a client that trickles its
    headers, while other clients are served."""
    import socket
    import threading
    import time

    results: list[tuple[float, bytes]] = []

    def loris() -> None:
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 100)
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", stack.api_port), timeout=5) as sock:
            sock.settimeout(0.2)
            for byte in request:
                try:
                    sock.sendall(bytes([byte]))
                    data = sock.recv(4096)
                    results.append((time.monotonic() - t0, data[:60]))
                    return
                except socket.timeout:
                    pass
                except OSError as exc:
                    results.append((time.monotonic() - t0, repr(exc).encode()))
                    return
                time.sleep(0.8)
        results.append((time.monotonic() - t0, b"never cut off"))

    threads = [threading.Thread(target=loris, daemon=True) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(2)
    with httpx.Client(base_url=stack.api_base, timeout=30, headers={"Authorization": f"Bearer {stack.master_key}"}) as c:
        for _ in range(5):
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    for t in threads:
        t.join(60)
    say(f"slow clients at the front door: {[(round(s, 1), d[:30]) for s, d in results]}")
    assert len(results) == 5
    assert all(seconds <= 40 and data != b"never cut off" for seconds, data in results), results
