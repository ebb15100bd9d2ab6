#!/usr/bin/env bash
# Start, stop or inspect the load balancer natively (no Docker).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/run-proxy.sh [PORT]            start: Redis (unless REDIS_URL is set), poller, proxy
       scripts/run-proxy.sh --demo [PORT]     same, plus the Chutes simulator (no Chutes key needed)
       scripts/run-proxy.sh stop              stop everything this script started
       scripts/run-proxy.sh restart [PORT]    stop, then start again in the same mode
       scripts/run-proxy.sh status            what runs, and whether it answers
       scripts/run-proxy.sh -h | --help

Reads .env (then the environment wins). PORT defaults to LITELLM_PORT or 4000.
Real mode needs CHUTES_API_KEY and LITELLM_MASTER_KEY. Demo mode generates a master key when
none is set and writes it to /tmp/chutes-lb/demo.env (mode 600): `source /tmp/chutes-lb/demo.env`.
Logs: proxy /tmp/litellm-proxy.log; others /tmp/chutes-lb/*.log. Every wait is bounded.
USAGE
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${CHUTES_LB_RUN_DIR:-/tmp/chutes-lb}
PROXY_LOG=${CHUTES_LB_PROXY_LOG:-/tmp/litellm-proxy.log}
mkdir -p "$RUN"
chmod 700 "$RUN"

die() { echo "run-proxy: $*" >&2; exit 1; }
say() { echo "run-proxy: $*"; }

load_env() {
  # the environment wins over .env (same precedence as the Python settings)
  [[ -f "$ROOT/.env" ]] || return 0
  eval "$("$PY" - "$ROOT/.env" <<'PYEOF'
import os, shlex, sys
from dotenv import dotenv_values
for key, value in dotenv_values(sys.argv[1]).items():
    if value is not None and key not in os.environ and key.isidentifier():
        print(f"export {key}={shlex.quote(value)}")
PYEOF
)"
}

pid_alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_url() {  # wait_url NAME URL SECONDS
  local name=$1 url=$2 secs=$3 i
  for ((i = 0; i < secs * 2; i++)); do
    if "$PY" - "$url" <<'PYEOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PYEOF
    pid_alive "$name" || die "$name exited during start-up; see its log: $(logfile "$name")"
    if (( i % 10 == 9 )); then echo "  ... waiting for $name ($(( (i + 1) / 2 ))s of ${secs}s)"; fi
    sleep 0.5
  done
  die "$name did not answer $url within ${secs}s; see $(logfile "$name")"
}

logfile() { [[ $1 == proxy ]] && echo "$PROXY_LOG" || echo "$RUN/$1.log"; }

spawn() {  # spawn NAME CMD...
  local name=$1; shift
  nohup setsid "$@" >"$(logfile "$name")" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

stop_one() {
  local name=$1 pid i
  pid_alive "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  pid=$(cat "$RUN/$name.pid")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop in 10s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
  say "stopped $name"
}

cmd_stop() {
  local any=0 name
  for name in proxy poller simulator redis; do
    if [[ -f "$RUN/$name.pid" ]]; then any=1; stop_one "$name"; fi
  done
  rm -f "$RUN/mode" "$RUN/port"
  ((any)) || say "nothing was running"
}

cmd_status() {
  local name port
  port=$(cat "$RUN/port" 2>/dev/null || echo "${LITELLM_PORT:-4000}")
  echo "mode: $(cat "$RUN/mode" 2>/dev/null || echo 'not started by this script'), proxy port: $port"
  for name in redis simulator poller proxy; do
    if pid_alive "$name"; then echo "  $name: running (pid $(cat "$RUN/$name.pid"), log $(logfile "$name"))"
    else echo "  $name: not running"; fi
  done
  if "$PY" - "http://127.0.0.1:$port/readyz" <<'PYEOF' 2>/dev/null; then echo "  proxy answers: ready"; else echo "  proxy answers: no"; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PYEOF
}

cmd_start() {
  local mode=$1 port=$2
  [[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "not a port: $port"
  if pid_alive proxy; then die "already running (scripts/run-proxy.sh status; stop first)"; fi
  port_busy "$port" && die "port $port is already in use (lsof -i :$port); choose another: scripts/run-proxy.sh ${mode/real/} $((port + 1))"

  if [[ $mode == demo ]]; then
    export DEMO_MODE=true
    if [[ -z "${LITELLM_MASTER_KEY:-}" ]]; then
      LITELLM_MASTER_KEY="sk-demo-$("$PY" -c 'import secrets; print(secrets.token_hex(12))')"
      export LITELLM_MASTER_KEY
      umask 077
      printf 'export LITELLM_MASTER_KEY=%s\nexport LITELLM_PORT=%s\n' "$LITELLM_MASTER_KEY" "$port" >"$RUN/demo.env"
      say "generated a demo master key: source $RUN/demo.env"
    fi
  else
    export DEMO_MODE=false
    [[ -n "${CHUTES_API_KEY:-}" ]] || die "CHUTES_API_KEY is not set (put it in .env), or try the demo: scripts/run-proxy.sh --demo"
    [[ -n "${LITELLM_MASTER_KEY:-}" ]] || die "LITELLM_MASTER_KEY is not set (put it in .env)"
  fi
  export LITELLM_PORT=$port
  echo "$mode" >"$RUN/mode"
  echo "$port" >"$RUN/port"

  if [[ -z "${REDIS_URL:-}" ]]; then
    command -v redis-server >/dev/null || die "redis-server not found: apt-get install redis-server, or set REDIS_URL"
    local rport=${CHUTES_LB_REDIS_PORT:-6389}
    port_busy "$rport" && die "port $rport (local Redis) is in use; set CHUTES_LB_REDIS_PORT or REDIS_URL"
    say "starting redis-server on 127.0.0.1:$rport"
    spawn redis redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --protected-mode yes
    export REDIS_URL="redis://127.0.0.1:$rport/0"
  fi

  if [[ $mode == demo ]]; then
    local sport=${SIM_PORT:-8090}
    port_busy "$sport" && die "port $sport (simulator) is in use; set SIM_PORT"
    export SIM_PORT=$sport SIM_HOST=127.0.0.1 SIM_FLEET_PATH=${SIM_FLEET_PATH:-$ROOT/simulator/fleet-demo.yaml}
    export UTILIZATION_REFRESH_SECONDS=${UTILIZATION_REFRESH_SECONDS:-30}
    export CHUTES_API_BASE="http://127.0.0.1:$sport" CHUTES_INFERENCE_BASE="http://127.0.0.1:$sport/v1"
    say "DEMO MODE: starting the Chutes simulator on 127.0.0.1:$sport"
    spawn simulator "$PY" -m chutes_lb.simulator
    wait_url simulator "http://127.0.0.1:$sport/healthz" 30
  fi

  export POLLER_PORT=${POLLER_PORT:-9101} POLLER_HOST=${POLLER_HOST:-127.0.0.1}
  port_busy "$POLLER_PORT" && die "port $POLLER_PORT (poller metrics) is in use; set POLLER_PORT"
  export LITELLM_CONFIG_PATH=${LITELLM_CONFIG_PATH:-$ROOT/proxy/litellm-config.yaml}
  say "starting utilization-poller (metrics on $POLLER_HOST:$POLLER_PORT)"
  spawn poller "$PY" -m chutes_lb.poller
  wait_url poller "http://127.0.0.1:$POLLER_PORT/metrics" 30

  say "starting proxy on port $port (first start imports LiteLLM: ~10-40 s)"
  spawn proxy "$PY" -m chutes_lb.proxy
  wait_url proxy "http://127.0.0.1:$port/readyz" 180
  say "ready: http://localhost:$port  (try: scripts/test-proxy.sh)"
}

MODE=real
ACTION=start
PORT_ARG=""
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  stop|status) ACTION=$1 ;;
  restart) ACTION=restart; PORT_ARG=${2:-} ;;
  --demo) MODE=demo; PORT_ARG=${2:-} ;;
  "") ;;
  *) [[ "$1" =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }; PORT_ARG=$1 ;;
esac

cd "$ROOT"
if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
  say "first run: creating the Python environment from the lock (one-time, ~1 min)"
  "$ROOT/scripts/setup-env.sh" --runtime
fi
PY="$ROOT/.venv/bin/python"
load_env

case $ACTION in
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart)
    prev=$(cat "$RUN/mode" 2>/dev/null || echo real)
    port=${PORT_ARG:-$(cat "$RUN/port" 2>/dev/null || echo "${LITELLM_PORT:-4000}")}
    cmd_stop
    cmd_start "$prev" "$port" ;;
  start) cmd_start "$MODE" "${PORT_ARG:-${LITELLM_PORT:-4000}}" ;;
esac
