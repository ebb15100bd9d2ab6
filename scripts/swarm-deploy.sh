#!/usr/bin/env bash
# Deploy (or update) chutes-lb as a Docker Swarm stack: compose.swarm.yaml, plus
# compose.swarm.demo.yaml with --demo. What it adds to a bare `docker stack deploy`:
# - it loads .env into the environment (docker stack deploy does not read .env);
# - it names every Swarm config after a digest of its file, so an edited haproxy.cfg,
#   prometheus.yml, alert rule or dashboard becomes a new config and the service using it rolls
#   (Swarm configs are immutable: reusing a name with new content is refused);
# - it creates each missing Docker secret from the variable of the same name (from .env or the
#   shell), and stops naming the variable when neither the secret nor the variable exists.
set -euo pipefail
usage() {
  cat <<USAGE
usage: $0 [--demo] [--env-file FILE] [--local-images] [-c EXTRA.yaml]... [STACK]
  STACK            stack name (default chutes-lb; services are STACK_proxy, STACK_lb, ...)
  --demo           add compose.swarm.demo.yaml (the simulator; no Chutes key needed)
  --env-file FILE  variables to load first (default .env if it exists; /dev/null for none)
  --local-images   use the images on this node as they are (--resolve-image never): for a
                   one-node swarm with images built by 'docker compose build'. Without it,
                   every node pulls the images from their registry (CHUTES_LB_TAG picks the tag).
  -c FILE          one more compose file merged last (e.g. your own overrides)
Docker secrets: chutes-lb-litellm-master-key, chutes-lb-grafana-admin-password and, in real
mode, chutes-lb-chutes-api-key. A missing one is created from LITELLM_MASTER_KEY,
GRAFANA_ADMIN_PASSWORD or CHUTES_API_KEY (.env or the shell). Secrets are immutable: to
change one, remove the stack and the secret (docker stack rm; docker secret rm NAME), then deploy.
USAGE
}
cd "$(dirname "$0")/.."
stack=chutes-lb demo=false env_file=.env resolve=always
files=(-c compose.swarm.yaml)
extra=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --demo) demo=true ;;
    --env-file) env_file="${2:?--env-file needs a file}"; shift ;;
    --local-images) resolve=never ;;
    -c) extra+=(-c "${2:?-c needs a file}"); shift ;;
    -*) usage >&2; exit 2 ;;
    *) stack="$1" ;;
  esac
  shift
done
[[ "$demo" == true ]] && files+=(-c compose.swarm.demo.yaml)

if [[ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != active ]]; then
  echo "[swarm-deploy] this Docker engine is not in a swarm: docker swarm init (or join one) first" >&2
  exit 1
fi
if [[ -f "$env_file" || -p "$env_file" || "$env_file" == /dev/null ]]; then
  set -a
  # shellcheck disable=SC1090
  . "$env_file"
  set +a
elif [[ "$env_file" != .env ]]; then
  echo "[swarm-deploy] no such env file: $env_file" >&2
  exit 2
fi

digest() { sha256sum "$1" | cut -c1-12; }
export HAPROXY_CFG_DIGEST="$(digest haproxy/haproxy.cfg)"
export PROMETHEUS_YML_DIGEST="$(digest prometheus/prometheus.yml)"
export ALERTS_YML_DIGEST="$(digest prometheus/alerts.yml)"
export GRAFANA_DATASOURCE_DIGEST="$(digest grafana/provisioning/datasources/prometheus.yaml)"
export GRAFANA_DASHBOARD_PROVIDER_DIGEST="$(digest grafana/provisioning/dashboards/chutes-lb.yaml)"
export GRAFANA_DASHBOARD_DIGEST="$(digest grafana/dashboards/chutes-lb.json)"

needed=(chutes-lb-litellm-master-key chutes-lb-grafana-admin-password)
[[ "$demo" == true ]] || needed+=(chutes-lb-chutes-api-key)
missing=()
for s in "${needed[@]}"; do
  docker secret inspect "$s" >/dev/null 2>&1 && continue
  var=$(echo "${s#chutes-lb-}" | tr 'a-z-' 'A-Z_')
  if [[ -n "${!var:-}" ]]; then
    printf %s "${!var}" | docker secret create "$s" - >/dev/null
    echo "[swarm-deploy] created Docker secret $s from \$$var"
  else
    missing+=("$var")
  fi
done
if ((${#missing[@]})); then
  echo "[swarm-deploy] set ${missing[*]} (in $env_file or the shell): the Docker secrets they fill do not exist yet" >&2
  exit 1
fi
# docker CLI >= 26 waits for the services to converge unless told not to; older ones never wait.
detach=()
help=$(docker stack deploy --help 2>/dev/null || true)
[[ "$help" == *--detach* ]] && detach=(--detach=true)

echo "[swarm-deploy] docker stack deploy ${files[*]} ${extra[*]} --resolve-image $resolve $stack"
exec docker stack deploy --prune "${detach[@]}" --resolve-image "$resolve" "${files[@]}" "${extra[@]}" "$stack"
