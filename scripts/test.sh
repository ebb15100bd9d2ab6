#!/usr/bin/env bash
# The one test command (README, CI). Creates .venv from the lock, then runs every test group
# this machine can run and says which groups it skips and why. Extra arguments go to pytest,
# e.g. ./scripts/test.sh tests/unit -k settings
set -euo pipefail
usage() {
  cat <<USAGE
usage: $0 [PYTEST_ARGS...]
  Sets up .venv from requirements-dev.lock (scripts/setup-env.sh), reports which test groups
  can run here (unit always; integration needs redis-server, a Docker engine or REDIS_URL;
  e2e needs a Docker engine with the images; the coding-agent tests need agents/node_modules,
  from npm ci --prefix agents), then runs pytest over tests/.
USAGE
}
[[ "${1:-}" =~ ^(-h|--help)$ ]] && { usage; exit 0; }
cd "$(dirname "$0")/.."
./scripts/setup-env.sh
PY=.venv/bin/python

echo "== test groups on this machine"
echo "   unit:        runs"
if [[ -n "${REDIS_URL:-}" ]]; then redis_src="REDIS_URL"
elif docker info >/dev/null 2>&1; then redis_src="testcontainers (Docker engine)"
elif command -v redis-server >/dev/null; then redis_src="local redis-server"
else redis_src=""; fi
if [[ -n "$redis_src" ]]; then echo "   integration: runs (Redis from $redis_src)"
else echo "   integration: tests needing Redis SKIP: no REDIS_URL, Docker engine or redis-server (apt-get install redis-server)"; fi
if docker info >/dev/null 2>&1; then echo "   e2e:         runs (Docker engine answers)"
else echo "   e2e:         SKIP: no Docker engine answers (CI starts one with ../shared/container-kit)"; fi
agents=$("$PY" - <<'PYEOF'
import json, os
nm = "agents/node_modules"
bins = {"claude": f"{nm}/.bin/claude", "codex": f"{nm}/.bin/codex", "opencode": f"{nm}/opencode-linux-x64/bin/opencode"}
pkgs = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "opencode": "opencode-linux-x64"}
if not os.path.isdir(nm):
    print("SKIP: agents/node_modules is missing (npm ci --prefix agents; .ci/run does it when npm is installed)")
else:
    missing = [a for a, b in bins.items() if not os.access(b, os.X_OK)]
    if missing:
        print(f"SKIP: {', '.join(missing)} not installed in agents/node_modules (npm ci --prefix agents)")
    else:
        versions = ", ".join(f"{a} {json.load(open(f'{nm}/{p}/package.json'))['version']}" for a, p in pkgs.items())
        print(f"runs ({versions}; through Compose with e2e)")
PYEOF
)
echo "   agents:      $agents"
command -v promtool >/dev/null || echo "   promtool checks SKIP: promtool not installed (apt-get install prometheus)"
command -v kubectl >/dev/null || echo "   deploy/k8s checks SKIP: kubectl not installed (it renders the Kustomize overlays)"

exec "$PY" -m pytest "$@"
