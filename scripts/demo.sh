#!/usr/bin/env bash
# The first command on a fresh machine with Docker: the whole demo stack (simulator, Redis,
# poller, proxies, HAProxy, Prometheus, Grafana), with .env created when it is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FILES=(-f compose.yaml -f compose.demo.yaml)
BUILD_AND_WAIT_TIMEOUT=${CHUTES_LB_DEMO_TIMEOUT:-1500}  # seconds for build + start, all of it
WAIT_TIMEOUT=300                                        # seconds for every service to turn healthy

usage() {
  cat <<USAGE
usage: scripts/demo.sh [up] [--no-grafana] [--env-file FILE]   build and start the demo stack, wait until healthy
       scripts/demo.sh down [--env-file FILE]                  stop it and remove its volumes
       scripts/demo.sh -h | --help

up (the default):
  1. creates FILE (default .env) with a generated LITELLM_MASTER_KEY and GRAFANA_ADMIN_PASSWORD
     when it is missing (mode 600); an existing file is never overwritten (a missing one of the
     two is appended);
  2. docker compose ${FILES[*]} up -d --build --wait (progress shown, at most
     ${WAIT_TIMEOUT}s for health, ${BUILD_AND_WAIT_TIMEOUT}s in all);
  3. prints how to call it. The clients' key is LITELLM_MASTER_KEY in FILE.
--no-grafana   every service but Grafana (no Grafana image, or no need for dashboards)
--env-file     another env file (Compose reads it instead of .env)
Without Docker, the same demo runs as local processes: scripts/run-proxy.sh --demo
COMPOSE_PROJECT_NAME, LITELLM_PORT and GRAFANA_PORT in the environment or FILE are honoured.
USAGE
}

say() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; exit 1; }
bad_usage() { echo "demo: $*" >&2; usage >&2; exit 2; }

ACTION=up
NO_GRAFANA=0
ENV_FILE="$ROOT/.env"
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    up|down) ACTION=$1 ;;
    --no-grafana) NO_GRAFANA=1 ;;
    --env-file)
      [[ $# -ge 2 && -n $2 ]] || bad_usage "--env-file needs a file"
      ENV_FILE=$2; shift ;;
    *) bad_usage "unknown argument: $1" ;;
  esac
  shift
done
[[ $ENV_FILE == /* ]] || ENV_FILE="$PWD/$ENV_FILE"
cd "$ROOT"

no_docker() {
  echo "demo: $1" >&2
  echo "demo: without Docker, the same demo runs as local processes (Python 3.11+, redis-server or Docker for Redis):" >&2
  echo "demo:   ./scripts/run-proxy.sh --demo" >&2
  exit 1
}
command -v docker >/dev/null || no_docker "Docker is not installed (no docker command): https://docs.docker.com/engine/install/"
if ! info=$(timeout 30 docker info --format '{{.ServerVersion}}' 2>&1); then
  no_docker "the Docker engine does not answer: $(tail -n1 <<<"$info") (start it, or check that you may use it: docker info)"
fi
timeout 30 docker compose version >/dev/null 2>&1 \
  || no_docker "the Docker Compose v2 plugin is missing (docker compose version): https://docs.docker.com/compose/install/"

compose() { docker compose --env-file "$ENV_FILE" "${FILES[@]}" "$@"; }

if [[ $ACTION == down ]]; then
  [[ -f $ENV_FILE ]] || ENV_FILE=/dev/null
  say "stopping the demo stack and removing its volumes (at most 120s)"
  timeout 120 docker compose --env-file "$ENV_FILE" "${FILES[@]}" down -v --remove-orphans --timeout 30
  exit 0
fi

# ------------------------------------------------------------------ the env file
env_value() {  # env_value VAR: its last assignment in the env file
  sed -nE "s/^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=[[:space:]]*//p" "$ENV_FILE" 2>/dev/null | tail -n1 \
    | sed -E "s/[[:space:]]+#.*\$//; s/^'(.*)'\$/\\1/; s/^\"(.*)\"\$/\\1/"
}
secret() {  # secret BYTES: hex from the OS's random source
  if command -v openssl >/dev/null; then openssl rand -hex "$1"; else od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; fi
}
if [[ ! -e $ENV_FILE ]]; then
  (umask 077; printf '# Created by scripts/demo.sh. Clients send LITELLM_MASTER_KEY as "Authorization: Bearer ...".\nLITELLM_MASTER_KEY=sk-%s\nGRAFANA_ADMIN_PASSWORD=%s\n' \
    "$(secret 16)" "$(secret 12)" >"$ENV_FILE")
  say "created $ENV_FILE with a generated LITELLM_MASTER_KEY and GRAFANA_ADMIN_PASSWORD (mode 600)"
else
  say "using $ENV_FILE (not overwritten)"
  for var in LITELLM_MASTER_KEY GRAFANA_ADMIN_PASSWORD; do
    if [[ -z ${!var:-} && -z $(env_value "$var") ]]; then
      if [[ $var == LITELLM_MASTER_KEY ]]; then value="sk-$(secret 16)"; else value=$(secret 12); fi
      [[ ! -s $ENV_FILE || $(tail -c1 "$ENV_FILE" | od -An -c | tr -d ' ') == '\n' ]] || echo >>"$ENV_FILE"
      printf '%s=%s\n' "$var" "$value" >>"$ENV_FILE"
      say "added a generated $var to $ENV_FILE (it had none)"
    fi
  done
fi
key=${LITELLM_MASTER_KEY:-$(env_value LITELLM_MASTER_KEY)}
[[ $key != sk-1234 ]] || die "LITELLM_MASTER_KEY in $ENV_FILE is the sample value sk-1234, which the proxy refuses; choose a secret (or delete the line and run this again)"
port=${LITELLM_PORT:-$(env_value LITELLM_PORT)}; port=${port:-4000}
gport=${GRAFANA_PORT:-$(env_value GRAFANA_PORT)}; gport=${gport:-3000}
say "the clients' key: LITELLM_MASTER_KEY in $ENV_FILE"

# ------------------------------------------------------------------ up
services=()
if ((NO_GRAFANA)); then
  mapfile -t services < <(compose config --services | grep -vx grafana)
  say "without Grafana: ${services[*]}"
fi
say "building the images and starting the demo (first run: a few minutes; then every service must turn healthy within ${WAIT_TIMEOUT}s)"
rc=0
timeout "$BUILD_AND_WAIT_TIMEOUT" docker compose --env-file "$ENV_FILE" "${FILES[@]}" up -d --build --wait --wait-timeout "$WAIT_TIMEOUT" \
  ${services[@]+"${services[@]}"} || rc=$?
if ((rc != 0)); then
  ((rc != 124)) || echo "demo: build and start did not finish within ${BUILD_AND_WAIT_TIMEOUT}s" >&2
  echo "demo: the demo did not come up healthy. Service states:" >&2
  timeout 60 docker compose --env-file "$ENV_FILE" "${FILES[@]}" ps -a >&2 || true
  for svc in $(timeout 60 docker compose --env-file "$ENV_FILE" "${FILES[@]}" ps -a --format '{{.Service}} {{.Health}} {{.State}}' 2>/dev/null \
                 | awk '$2 != "healthy" && $2 != "" || $3 != "running" {print $1}' | sort -u); do
    line=$(timeout 60 docker compose --env-file "$ENV_FILE" "${FILES[@]}" logs --no-color --no-log-prefix --tail 200 "$svc" 2>/dev/null \
             | grep -a -i 'error' | grep -av -e '^Traceback' -e '^[[:space:]]*File "' | tail -n1 || true)
    echo "demo: $svc: ${line:-no error line in its log}" >&2
  done
  echo "demo: logs: docker compose ${FILES[*]} logs SERVICE; stop: scripts/demo.sh down" >&2
  exit 1
fi

say "ready: the front door is http://localhost:$port (OpenAI-compatible, model \"chutes-models\")"
cat <<NEXT
  set -a; source ${ENV_FILE/#$ROOT\//}; set +a
  curl -s localhost:$port/v1/chat/completions -H "Authorization: Bearer \$LITELLM_MASTER_KEY" \\
    -H 'Content-Type: application/json' \\
    -d '{"model": "chutes-models", "messages": [{"role": "user", "content": "Hello!"}]}'
NEXT
((NO_GRAFANA)) || say "Grafana: http://localhost:$gport (user admin, GRAFANA_ADMIN_PASSWORD in $ENV_FILE), dashboard chutes-lb"
say "where requests go: docker compose logs proxy | grep -i routing;  stop: scripts/demo.sh down"
