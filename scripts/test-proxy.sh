#!/usr/bin/env bash
# Check a running proxy: health, models, a chat and a text completion, optionally streaming.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/test-proxy.sh [--health] [--stream] [-h]
  (no option)  health + /v1/models + chat completion + text completion
  --health     only the health checks (no upstream traffic)
  --stream     also a streamed chat completion
Uses LITELLM_PORT (default 4000) and LITELLM_MASTER_KEY from the environment, .env or
/tmp/chutes-lb/demo.env (written by scripts/run-proxy.sh --demo). Exits non-zero on any failure.
USAGE
}
HEALTH_ONLY=0
STREAM=0
for arg in "$@"; do
  case $arg in
    --health) HEALTH_ONLY=1 ;;
    --stream) STREAM=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY=python3
export TEST_HEALTH_ONLY=$HEALTH_ONLY TEST_STREAM=$STREAM TEST_ROOT=$ROOT
exec "$PY" - <<'PYEOF'
import json, os, sys, time, urllib.error, urllib.request
from pathlib import Path

root = Path(os.environ["TEST_ROOT"])
env = {}
for path in (Path(os.environ.get("CHUTES_LB_RUN_DIR", "/tmp/chutes-lb")) / "demo.env", root / ".env"):
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip().removeprefix("export ")
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env.setdefault(k.strip(), v.strip().strip("'\""))
key = os.environ.get("LITELLM_MASTER_KEY") or env.get("LITELLM_MASTER_KEY", "")
port = os.environ.get("LITELLM_PORT") or env.get("LITELLM_PORT", "4000")
base = f"http://localhost:{port}"
failures = 0


def call(method, path, body=None, auth=True, timeout=60):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def check(name, fn):
    global failures
    t0 = time.monotonic()
    try:
        detail = fn()
        print(f"  ok    {name} ({(time.monotonic() - t0) * 1000:.0f} ms){': ' + detail if detail else ''}")
    except Exception as exc:  # report and go on: every check runs
        failures += 1
        print(f"  FAIL  {name}: {exc}")


def expect(status, want, body):
    if status != want:
        raise AssertionError(f"HTTP {status}, expected {want}: {body[:300].decode(errors='replace')}")


def health():
    s, _, b = call("GET", "/health/liveliness", auth=False, timeout=5)
    expect(s, 200, b)


def ready():
    s, _, b = call("GET", "/readyz", auth=False, timeout=5)
    expect(s, 200, b)


def models():
    s, _, b = call("GET", "/v1/models")
    expect(s, 200, b)
    return ", ".join(m["id"] for m in json.loads(b)["data"])


def info():
    s, _, b = call("GET", "/info")
    expect(s, 200, b)
    d = json.loads(b)
    return f"strategy {d['strategy']}, snapshot {d['snapshot']['state']}, {len(d['deployments'])} chutes"


def chat():
    s, h, b = call("POST", "/v1/chat/completions", {"model": "chutes-models", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 50})
    expect(s, 200, b)
    text = json.loads(b)["choices"][0]["message"]["content"] or ""
    return f"served by chute {h.get('x-litellm-model-id', '?')}: {text[:50]!r}"


def completion():
    s, h, b = call("POST", "/v1/completions", {"model": "chutes-models", "prompt": "Say hello", "max_tokens": 20})
    expect(s, 200, b)
    return f"served by chute {h.get('x-litellm-model-id', '?')}"


def stream():
    req = urllib.request.Request(base + "/v1/chat/completions", method="POST", data=json.dumps(
        {"model": "chutes-models", "messages": [{"role": "user", "content": "Count to 5"}], "stream": True}).encode())
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {key}")
    chunks, done = 0, False
    with urllib.request.urlopen(req, timeout=120) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunks += 1
    if not done:
        raise AssertionError(f"stream ended without [DONE] after {chunks} chunks")
    return f"{chunks} chunks, ended with [DONE]"


def unauthorized():
    s, _, b = call("GET", "/v1/models", auth=False)
    expect(s, 401, b)


print(f"testing the proxy at {base}")
check("liveness /health/liveliness", health)
check("readiness /readyz", ready)
if os.environ["TEST_HEALTH_ONLY"] != "1":
    if not key:
        print("  FAIL  LITELLM_MASTER_KEY is not set (environment, .env or /tmp/chutes-lb/demo.env)")
        sys.exit(1)
    check("no key -> 401", unauthorized)
    check("GET /v1/models", models)
    check("GET /info", info)
    check("POST /v1/chat/completions", chat)
    check("POST /v1/completions", completion)
    if os.environ["TEST_STREAM"] == "1":
        check("POST /v1/chat/completions (stream)", stream)
print("all checks passed" if failures == 0 else f"{failures} check(s) failed")
sys.exit(1 if failures else 0)
PYEOF
