#!/usr/bin/env bash
# Start, stop or inspect the load balancer natively (no Compose): Redis, the Chutes simulator
# (demo), the utilization poller and the proxy, each in its own process group (setsid), so stop
# and status find every process of a component, even workers whose parent died.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REDIS_IMAGE=redis:7.4-alpine

dotenv_get() {  # dotenv_get VAR: its last assignment in .env (for the few variables read before Python)
  [[ -f "$ROOT/.env" ]] || return 0
  sed -nE "s/^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=[[:space:]]*//p" "$ROOT/.env" | tail -n1 \
    | sed -E "s/[[:space:]]+#.*\$//; s/^'(.*)'\$/\\1/; s/^\"(.*)\"\$/\\1/"
}
setting() {  # setting VAR DEFAULT: the environment, then .env, then the default
  local v=${!1:-}
  [[ -n "$v" ]] || v=$(dotenv_get "$1")
  echo "${v:-$2}"
}
RUN=$(setting CHUTES_LB_RUN_DIR /tmp/chutes-lb)
PROXY_LOG=$(setting CHUTES_LB_PROXY_LOG /tmp/litellm-proxy.log)

usage() {
  cat <<USAGE
usage: scripts/run-proxy.sh [PORT] [--free-ports]          start: Redis (unless REDIS_URL is set), poller, proxy
       scripts/run-proxy.sh --demo [PORT] [--free-ports]   same, plus the Chutes simulator (no Chutes key needed)
       scripts/run-proxy.sh stop                           stop everything this script started
       scripts/run-proxy.sh restart [PORT]                 stop, then start again as recorded (mode, ports, config, demo key)
       scripts/run-proxy.sh status                         what runs (orphaned workers too) and whether it answers
       scripts/run-proxy.sh -h | --help

PORT is the proxy's: LITELLM_PORT or 4000. The simulator, the poller and the local Redis listen on
SIM_PORT (8080), POLLER_PORT (9101) and CHUTES_LB_REDIS_PORT (6389). --free-ports picks free
loopback ports for these three instead, so a second instance runs beside the first:
  CHUTES_LB_RUN_DIR=/tmp/chutes-lb-2 scripts/run-proxy.sh --demo 4001 --free-ports
Reads .env (the environment wins). Nothing starts before the keys and the config pass the
services' own checks (python -m chutes_lb.proxy --check, ... poller, ... simulator); a start that
fails stops what it had started and prints the failing component's error.
Real mode needs CHUTES_API_KEY and LITELLM_MASTER_KEY. Demo mode generates a master key when
none is set, keeps it across restarts, and writes it to $RUN/demo.env (mode 600):
  source $RUN/demo.env
Redis: redis-server when installed, else a $REDIS_IMAGE container (loopback port) when Docker answers.
Run dir (CHUTES_LB_RUN_DIR): $RUN (pid files, logs, the recorded run).
Logs: proxy $PROXY_LOG (CHUTES_LB_PROXY_LOG); others $RUN/*.log. Every wait is bounded.
USAGE
}

die() { echo "run-proxy: $*" >&2; exit 1; }
say() { echo "run-proxy: $*"; }
warn() { echo "run-proxy: WARNING: $*" >&2; }
bad_usage() { echo "run-proxy: $*" >&2; usage >&2; exit 2; }

# ------------------------------------------------------------------ arguments
MODE=real
ACTION=start
PORT_ARG=""
FREE_PORTS=0
for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    --demo) MODE=demo ;;
    --free-ports) FREE_PORTS=1 ;;
    stop|status|restart)
      [[ $ACTION == start ]] || bad_usage "one command at a time: $arg"
      ACTION=$arg ;;
    *)
      [[ $arg =~ ^[0-9]+$ && -z $PORT_ARG ]] || bad_usage "unknown argument: $arg"
      PORT_ARG=$arg ;;
  esac
done
case $ACTION in
  stop|status) [[ $MODE == real && $FREE_PORTS == 0 && -z $PORT_ARG ]] || bad_usage "$ACTION takes no options" ;;
  restart) [[ $MODE == real && $FREE_PORTS == 0 ]] || bad_usage "restart reuses the recorded mode and ports; it takes only PORT" ;;
esac

mkdir -p "$RUN"
chmod 700 "$RUN"
CALLER_PWD=$PWD
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

# ------------------------------------------------------------------ helpers
logfile() { [[ $1 == proxy ]] && echo "$PROXY_LOG" || echo "$RUN/$1.log"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

redis_pong() {  # redis_pong PORT: a Redis answers PING on 127.0.0.1:PORT
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'PING\r\n' >&3
    read -r -t 2 reply <&3 || exit 1
    [[ $reply == +PONG* ]]
  ) 2>/dev/null
}

# The processes of a component: its process group (the recorded pid is the group id, setsid),
# which outlives its leader. Only processes that are ours (by command line) count.
marker() { [[ $1 == redis ]] && echo "redis-server" || echo "$PY"; }
group_pids() {  # group_pids NAME: pids of the component's group that are still running
  local pgid pid cmd want
  want=$(marker "$1")
  [[ -f "$RUN/$1.pid" ]] || return 0
  pgid=$(cat "$RUN/$1.pid")
  [[ $pgid =~ ^[0-9]+$ ]] || return 0
  for pid in $(pgrep -g "$pgid" 2>/dev/null || true); do
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue  # gone, or a zombie (empty)
    [[ $cmd != *"$want"* ]] || echo "$pid"
  done
}
container_running() {  # container_running: the Redis container this run started is up
  [[ -f "$RUN/redis.container" ]] && command -v docker >/dev/null \
    && [[ $(timeout 20 docker inspect -f '{{.State.Running}}' "$(cat "$RUN/redis.container")" 2>/dev/null) == true ]]
}
leader_alive() {  # the recorded process of NAME (its group leader) runs
  if [[ $1 == redis ]] && [[ -f "$RUN/redis.container" ]]; then container_running; return; fi
  [[ -f "$RUN/$1.pid" ]] && grep -qx "$(cat "$RUN/$1.pid")" <<<"$(group_pids "$1")"
}
component_alive() {  # anything of NAME still runs
  if [[ $1 == redis ]] && [[ -f "$RUN/redis.container" ]]; then container_running; return; fi
  [[ -n "$(group_pids "$1")" ]]
}

# The component's own error line from its log: the last "configuration error" line, else the
# last line that says error (never the traceback around it), ANSI colours removed.
error_line() {
  local file=$1 line
  [[ -f "$file" ]] || return 0
  line=$(sed 's/\x1b\[[0-9;]*m//g' "$file" | grep -a 'configuration error' | tail -n1 || true)
  if [[ -z $line ]]; then
    line=$(sed 's/\x1b\[[0-9;]*m//g' "$file" | grep -a -i 'error' | grep -av -e '^Traceback' -e '^[[:space:]]*File "' | tail -n1 || true)
  fi
  line=$(sed -E 's/[[:space:]]+/ /g; s/ $//' <<<"$line")
  echo "${line:0:500}"
}

http_probe() {  # http_probe URL: prints the HTTP status (000 = no answer) and the body
  "$PY" - "$1" <<'PYEOF' 2>/dev/null || echo "000"
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as resp:
        print(resp.status, resp.read(2000).decode(errors="replace"))
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read(2000).decode(errors="replace"))
except Exception:
    print("000")
PYEOF
}

http_code() {  # http_code URL (http://HOST:PORT/PATH): the status code, 000 when nothing answers within 3 s
  local rest=${1#http://} hostport
  hostport=${rest%%/*}
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3 \
    && read -r _ code _ <&3 && echo "$code"' _ "${hostport%:*}" "${hostport##*:}" "${rest#*/}" 2>/dev/null || echo 000
}

wait_url() {  # wait_url NAME URL SECONDS: until URL answers 200; fails early if NAME dies
  local name=$1 url=$2 secs=$3 start=$SECONDS next=5
  while (( SECONDS - start < secs )); do
    [[ $(http_code "$url") == 200 ]] && return 0
    if ! leader_alive "$name"; then
      echo "run-proxy: $name exited during start-up: $(error_line "$(logfile "$name")")" >&2
      die "$name's full log: $(logfile "$name")"
    fi
    if (( SECONDS - start >= next )); then echo "  ... waiting for $name ($(( SECONDS - start ))s of ${secs}s)"; next=$((next + 5)); fi
    sleep 0.5
  done
  echo "run-proxy: $name did not answer $url within ${secs}s: $(error_line "$(logfile "$name")")" >&2
  die "$name's full log: $(logfile "$name")"
}

spawn() {  # spawn NAME CMD...: in a new session (its pid is the process group id), output to its log
  local name=$1; shift
  local pid i
  nohup setsid "$@" >"$(logfile "$name")" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$RUN/$name.pid"
  STARTED+=("$name")
  # The child calls setsid a moment after the fork; until then it is in this shell's process group,
  # group_pids finds nothing and a liveness check would call it dead (seen on a loaded CI machine:
  # "exited during start-up" with an empty log). Wait, bounded, until it leads its own group.
  for ((i = 0; i < 100; i++)); do
    [[ $(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') == "$pid" ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 0  # gone already: the caller's check reports it
    sleep 0.05
  done
}

stop_one() {  # stop_one NAME: SIGTERM the whole group, SIGKILL what is left after a bounded wait
  local name=$1 pgid pids n secs i
  if [[ $name == redis && -f "$RUN/redis.container" ]]; then
    local cname; cname=$(cat "$RUN/redis.container")
    timeout 60 docker rm -f "$cname" >/dev/null 2>&1 || warn "could not remove the Redis container $cname (docker rm -f $cname)"
    rm -f "$RUN/redis.container" "$RUN/redis.pid"
    say "stopped redis (container $cname)"
    return 0
  fi
  [[ -f "$RUN/$name.pid" ]] || return 0
  pgid=$(cat "$RUN/$name.pid")
  pids=$(group_pids "$name")
  if [[ -z $pids ]]; then rm -f "$RUN/$name.pid"; return 0; fi
  n=$(wc -w <<<"$pids")
  if ! leader_alive "$name"; then
    say "$name: its parent (pid $pgid) is gone; ending its $n orphaned process(es): $(echo $pids)"
  fi
  kill -TERM -- "-$pgid" 2>/dev/null || true
  kill -CONT -- "-$pgid" 2>/dev/null || true  # a stopped process acts on SIGTERM only once continued
  secs=10; [[ $name == proxy ]] && secs=30      # the proxy lets streams finish (20 s grace)
  for ((i = 0; i < secs * 5; i++)); do
    [[ -z $(group_pids "$name") ]] && break
    (( i % 25 == 24 )) && echo "  ... waiting for $name to stop ($(( (i + 1) / 5 ))s of ${secs}s)"
    sleep 0.2
  done
  if [[ -n $(group_pids "$name") ]]; then
    say "$name did not stop in ${secs}s; killing its process group"
    kill -KILL -- "-$pgid" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do [[ -z $(group_pids "$name") ]] && break; sleep 0.2; done
  fi
  rm -f "$RUN/$name.pid"
  say "stopped $name ($n process(es))"
}

pick_free_ports() {  # three distinct free loopback ports
  "$PY" -c 'import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'
}

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

abspath() {  # abspath PATH BASE: PATH made absolute against BASE (the file need not exist)
  case $1 in /*) echo "$1" ;; *) echo "$2/$1" ;; esac
}

# ------------------------------------------------------------------ the recorded run
# $RUN/run.env (mode 600) records what restart and status need: mode, ports, Redis, config paths.
record_run() {
  (
    umask 077
    {
      printf 'REC_MODE=%q\nREC_PORT=%q\nREC_PROBE_HOST=%q\nREC_POLLER_PORT=%q\nREC_SIM_PORT=%q\n' \
        "$MODE" "$PORT" "$PROBE_HOST" "$POLLER_PORT" "${SIM_PORT_USED:-}"
      printf 'REC_REDIS_KIND=%q\nREC_REDIS_PORT=%q\nREC_REDIS_URL=%q\n' "$REDIS_KIND" "${RPORT:-}" "${EXTERNAL_REDIS_URL:-}"
      printf 'REC_CONFIG=%q\nREC_FLEET=%q\n' "$LITELLM_CONFIG_PATH" "${SIM_FLEET_PATH:-}"
    } >"$RUN/run.env"
  )
}
read_run() {  # sets REC_* from $RUN/run.env; false when nothing is recorded
  [[ -f "$RUN/run.env" ]] || return 1
  # shellcheck disable=SC1091
  source "$RUN/run.env"
}

# ------------------------------------------------------------------ stop / status
cmd_stop() {
  local any=0 name
  for name in proxy poller simulator redis; do
    if [[ -f "$RUN/$name.pid" || ( $name == redis && -f "$RUN/redis.container" ) ]]; then any=1; stop_one "$name"; fi
  done
  rm -rf "$RUN/proxy-metrics"
  rm -f "$RUN/run.env" "$RUN/mode" "$RUN/port"
  ((any)) || say "nothing was running"
}

cmd_status() {
  local name pids port probe
  if read_run; then
    echo "mode: $REC_MODE, run dir $RUN, proxy port $REC_PORT (poller ${REC_POLLER_PORT}${REC_SIM_PORT:+, simulator $REC_SIM_PORT}$(
      case $REC_REDIS_KIND in local) echo ", redis-server $REC_REDIS_PORT" ;; container) echo ", Redis container $REC_REDIS_PORT" ;; *) echo ", REDIS_URL" ;; esac))"
    port=$REC_PORT probe=$REC_PROBE_HOST
  else
    port=$(setting LITELLM_PORT 4000) probe=127.0.0.1
    echo "mode: not started by this script (run dir $RUN), proxy port $port"
  fi
  for name in redis simulator poller proxy; do
    [[ $name != simulator || ${REC_MODE:-demo} == demo || -f "$RUN/simulator.pid" ]] || continue
    if [[ $name == redis && -f "$RUN/redis.container" ]]; then
      if container_running; then echo "  redis: running (container $(cat "$RUN/redis.container"))"
      else echo "  redis: not running (container $(cat "$RUN/redis.container") is gone)"; fi
      continue
    fi
    pids=$(group_pids "$name")
    if [[ -z $pids ]]; then
      echo "  $name: not running"
    elif leader_alive "$name"; then
      echo "  $name: running (pid $(cat "$RUN/$name.pid"), $(wc -w <<<"$pids") process(es), log $(logfile "$name"))"
    else
      echo "  $name: ORPHANED: its parent (pid $(cat "$RUN/$name.pid")) is gone but $(wc -w <<<"$pids") process(es) of its group still run (pids $(echo $pids)); scripts/run-proxy.sh stop ends them"
    fi
  done
  if [[ $(http_code "http://$probe:$port/readyz") == 200 ]]; then echo "  proxy answers: ready (port $port)"; else echo "  proxy answers: no (port $port)"; fi
  if [[ -n ${REC_POLLER_PORT:-} ]]; then
    local health; health=$(http_probe "http://127.0.0.1:$REC_POLLER_PORT/healthz")
    case $health in
      200*) echo "  poller answers: healthy" ;;
      000*) echo "  poller answers: no" ;;
      *) echo "  poller answers: unhealthy: ${health#* }" ;;
    esac
  fi
}

# ------------------------------------------------------------------ start
run_checks() {  # run_checks COMPONENT...: each service's own --check; every failure is printed
  local failed=0 comp out err rc line seen=""
  for comp in "$@"; do
    out="$RUN/check-$comp.out" err="$RUN/check-$comp.err"
    rc=0
    timeout 120 "$PY" -m "chutes_lb.$comp" --check >"$out" 2>"$err" </dev/null || rc=$?
    if ((rc == 0)); then
      say "checked $(grep -a ' ok: ' "$out" | tail -n1 || echo "$comp: ok")"
      continue
    fi
    failed=1
    if ((rc == 124)); then
      echo "run-proxy: the $comp check did not finish in 120s (its output: $err)" >&2
      continue
    fi
    # the service's own line "chutes-lb <component>: configuration error: ..." (not the log copy of it)
    # with the lines a multi-line message continues on (a YAML error's position), at most 4
    line=$(awk '/^chutes-[a-z -]+: configuration error:/ {n = NR} {l[NR] = $0}
                END {if (n) {print l[n]; for (i = n + 1; i <= NR && i <= n + 4 && l[i] !~ /^(chutes-|[0-9]{4}-)/; i++) print "    " l[i]}}' "$err")
    [[ -n $line ]] || line=$(error_line "$err")
    [[ -n $line ]] || line="$comp --check failed with status $rc (output: $err)"
    if [[ -n $seen && ${line#*configuration error: } == "$seen" ]]; then
      echo "${line%%: configuration error: *}: the same configuration error" >&2   # one config, read by each service
    else
      echo "${line:0:800}" >&2
      [[ $line != *"configuration error: "* ]] || seen=${line#*configuration error: }
    fi
  done
  ((failed == 0)) || die "nothing was started: fix the configuration above, then start again"
  rm -f "$RUN"/check-*.out "$RUN"/check-*.err
}

start_redis() {
  if [[ -n ${REDIS_URL:-} && ${OWN_REDIS:-0} == 0 ]]; then
    REDIS_KIND=external EXTERNAL_REDIS_URL=$REDIS_URL
    return 0
  fi
  if command -v redis-server >/dev/null; then
    REDIS_KIND=local
  elif command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
    REDIS_KIND=container
  else
    die "no Redis: install redis-server (apt-get install redis-server), or Docker (then $REDIS_IMAGE runs in a container), or set REDIS_URL"
  fi
  export REDIS_URL="redis://127.0.0.1:$RPORT/0"
}

spawn_redis() {
  local start=$SECONDS secs
  case $REDIS_KIND in
    external) return 0 ;;
    local)
      say "starting redis-server on 127.0.0.1:$RPORT"
      spawn redis redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --protected-mode yes --dir "$RUN"
      secs=15 ;;
    container)
      local cname="chutes-lb-redis-$RPORT-$RANDOM"
      say "no redis-server here: starting Redis in a container ($REDIS_IMAGE, 127.0.0.1:$RPORT, name $cname)"
      echo "$cname" >"$RUN/redis.container"
      STARTED+=(redis)
      timeout 300 docker run -d --rm --name "$cname" --label "chutes-lb.run-dir=$RUN" -p "127.0.0.1:$RPORT:6379" \
        --user redis --read-only --tmpfs /data --cap-drop ALL --security-opt no-new-privileges \
        "$REDIS_IMAGE" redis-server --save "" --appendonly no --protected-mode no >"$RUN/redis.log" 2>&1 \
        || die "the Redis container did not start: $(tail -n1 "$RUN/redis.log") (install redis-server, or set REDIS_URL)"
      secs=30 ;;
  esac
  until redis_pong "$RPORT"; do
    leader_alive redis || die "redis exited during start-up: $(error_line "$RUN/redis.log") (log: $RUN/redis.log)"
    (( SECONDS - start < secs )) || die "Redis did not answer PING on 127.0.0.1:$RPORT within ${secs}s (log: $RUN/redis.log)"
    sleep 0.2
  done
}

report_first_poll() {
  # A poller that cannot reach the utilization API still lets the proxy start (it routes on live
  # signals), but the terminal must say so: wait a bounded time for the first poll's outcome.
  local verdict
  verdict=$("$PY" - "http://127.0.0.1:$POLLER_PORT/healthz" "${POLL_TIMEOUT_SECONDS:-10}" <<'PYEOF' 2>/dev/null || echo "unknown"
import json, sys, time, urllib.error, urllib.request
url = sys.argv[1]
try:
    wait = min(60.0, max(10.0, float(sys.argv[2]) + 5))  # one poll's timeout and a margin, bounded
except ValueError:
    wait = 15.0
deadline = time.monotonic() + wait
body = {}
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=3):
            print("ok")
            sys.exit(0)
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        if body.get("last_error"):
            break
    except OSError:
        pass
    time.sleep(0.5)
print("failed\t%s\t%s" % (body.get("reason", "no successful poll yet"), body.get("last_error", "no result yet")))
PYEOF
)
  case $verdict in
    ok) say "poller: first utilization poll ok" ;;
    failed*)
      IFS=$'\t' read -r _ reason last <<<"$verdict"
      warn "the poller has no snapshot: $reason (last error: $last)."
      local detail; detail=$(sed 's/\x1b\[[0-9;]*m//g' "$RUN/poller.log" | grep -a 'polling failing: ' | tail -n1 || true)
      [[ -z $detail ]] || echo "run-proxy:   poller: polling failing: $(cut -c1-400 <<<"${detail#*polling failing: }")" >&2
      echo "run-proxy:   The proxy runs anyway and routes on live signals alone until a poll succeeds." >&2
      echo "run-proxy:   Check CHUTES_API_KEY, CHUTES_API_BASE ($CHUTES_API_BASE_SHOWN) and the network; log: $RUN/poller.log" >&2 ;;
    *) warn "could not read the poller's /healthz on port $POLLER_PORT (log: $RUN/poller.log)" ;;
  esac
}

cmd_start() {
  local sport
  PORT=$1
  [[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "not a port: $PORT"
  local name
  for name in proxy poller simulator redis; do
    if component_alive "$name"; then
      echo "run-proxy: already running: this run dir ($RUN) has a $name running (scripts/run-proxy.sh status; stop first)." >&2
      die "A second instance needs its own run dir and ports: CHUTES_LB_RUN_DIR=$RUN-2 scripts/run-proxy.sh --demo $((PORT + 1)) --free-ports"
    fi
  done
  rm -f "$RUN"/*.pid "$RUN/redis.container"   # leftovers of a run that died
  local again="scripts/run-proxy.sh"; [[ $MODE == demo ]] && again+=" --demo"
  port_busy "$PORT" && die "port $PORT is already in use (lsof -i :$PORT); choose another: $again $((PORT + 1))"

  # every setting the services will read, decided before anything starts
  if ((FREE_PORTS)); then
    read -r SIM_PORT POLLER_PORT CHUTES_LB_REDIS_PORT <<<"$(pick_free_ports)"
    say "--free-ports: simulator $SIM_PORT, poller $POLLER_PORT, Redis $CHUTES_LB_REDIS_PORT"
  fi
  export POLLER_PORT=${POLLER_PORT:-9101} POLLER_HOST=${POLLER_HOST:-127.0.0.1}
  RPORT=${CHUTES_LB_REDIS_PORT:-6389}
  export LITELLM_PORT=$PORT
  export LITELLM_CONFIG_PATH=${LITELLM_CONFIG_PATH:-$ROOT/proxy/litellm-config.yaml}
  LITELLM_CONFIG_PATH=$(abspath "$LITELLM_CONFIG_PATH" "$ROOT")
  case ${LITELLM_HOST:-0.0.0.0} in 0.0.0.0|::|"") PROBE_HOST=127.0.0.1 ;; *) PROBE_HOST=$LITELLM_HOST ;; esac
  start_redis
  local components=(poller proxy)
  if [[ $MODE == demo ]]; then
    export DEMO_MODE=true
    sport=${SIM_PORT:-8080}
    SIM_PORT_USED=$sport
    export SIM_PORT=$sport SIM_HOST=127.0.0.1
    export SIM_FLEET_PATH=${SIM_FLEET_PATH:-$ROOT/simulator/fleet-demo.yaml}
    SIM_FLEET_PATH=$(abspath "$SIM_FLEET_PATH" "$ROOT")
    export UTILIZATION_REFRESH_SECONDS=${UTILIZATION_REFRESH_SECONDS:-30}
    export CHUTES_API_BASE="http://127.0.0.1:$sport" CHUTES_INFERENCE_BASE="http://127.0.0.1:$sport/v1"
    if [[ -z "${LITELLM_MASTER_KEY:-}" ]]; then
      local saved=""
      [[ -f "$RUN/demo.env" ]] && saved=$(sed -nE 's/^export LITELLM_MASTER_KEY=(sk-demo-[0-9a-f]+)$/\1/p' "$RUN/demo.env")
      if [[ -n $saved ]]; then
        LITELLM_MASTER_KEY=$saved
        say "demo master key: the one in $RUN/demo.env (kept across restarts)"
      else
        LITELLM_MASTER_KEY="sk-demo-$("$PY" -c 'import secrets; print(secrets.token_hex(12))')"
        say "generated a demo master key: source $RUN/demo.env"
      fi
      export LITELLM_MASTER_KEY
      (umask 077; printf 'export LITELLM_MASTER_KEY=%s\nexport LITELLM_PORT=%s\n' "$LITELLM_MASTER_KEY" "$PORT" >"$RUN/demo.env")
    else
      (umask 077; printf 'export LITELLM_PORT=%s\n' "$PORT" >"$RUN/demo.env")   # the key is yours (environment or .env)
    fi
    components=(simulator poller proxy)
  else
    export DEMO_MODE=false
    [[ -n "${CHUTES_API_KEY:-}" ]] || die "CHUTES_API_KEY is not set (put it in .env), or try the demo: scripts/run-proxy.sh --demo"
    [[ -n "${LITELLM_MASTER_KEY:-}" ]] || die "LITELLM_MASTER_KEY is not set (put it in .env)"
  fi
  CHUTES_API_BASE_SHOWN=${CHUTES_API_BASE:-https://api.chutes.ai}

  if [[ $MODE == demo ]]; then port_busy "$sport" && die "port $sport (simulator) is in use; set SIM_PORT, or use --free-ports"; fi
  port_busy "$POLLER_PORT" && die "port $POLLER_PORT (poller metrics) is in use; set POLLER_PORT, or use --free-ports"
  if [[ $REDIS_KIND != external ]]; then
    port_busy "$RPORT" && die "port $RPORT (local Redis) is in use; set CHUTES_LB_REDIS_PORT or REDIS_URL, or use --free-ports"
  fi
  say "checking the configuration ($LITELLM_CONFIG_PATH) and the keys"
  run_checks "${components[@]}"

  # test-proxy.sh reads demo.env first: in real mode a stale demo key would shadow yours
  [[ $MODE == demo ]] || rm -f "$RUN/demo.env"
  # from here on, a failure on any exit path stops what this start started (trap on_exit)
  record_run
  spawn_redis
  if [[ $MODE == demo ]]; then
    say "DEMO MODE: starting the Chutes simulator on 127.0.0.1:$sport (chutes of $LITELLM_CONFIG_PATH)"
    spawn simulator "$PY" -m chutes_lb.simulator
    wait_url simulator "http://127.0.0.1:$sport/healthz" 30
  fi
  say "starting utilization-poller (metrics on $POLLER_HOST:$POLLER_PORT)"
  spawn poller "$PY" -m chutes_lb.poller
  wait_url poller "http://127.0.0.1:$POLLER_PORT/metrics" 30
  say "starting proxy on port $PORT (first start imports LiteLLM: ~10-60 s)"
  # the proxy's prometheus multiprocess directory lives in the run dir; stop removes it
  spawn proxy env PROMETHEUS_MULTIPROC_DIR="$RUN/proxy-metrics" "$PY" -m chutes_lb.proxy
  wait_url proxy "http://$PROBE_HOST:$PORT/readyz" 180
  report_first_poll
  START_OK=1
  say "ready: http://localhost:$PORT  (try: scripts/test-proxy.sh; stop: scripts/run-proxy.sh stop)"
  [[ $MODE != demo ]] || say "the master key: source $RUN/demo.env (or your LITELLM_MASTER_KEY)"
}

# A start that fails (die, an error, Ctrl-C, SIGTERM) stops every component it started.
STARTED=()
START_OK=0
on_exit() {
  local rc=$? i
  if ((${#STARTED[@]} > 0 && START_OK == 0)); then
    set +e
    echo "run-proxy: start failed; stopping what it started: ${STARTED[*]}" >&2
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_one "${STARTED[i]}" >&2; done
    rm -rf "$RUN/proxy-metrics"
    rm -f "$RUN/run.env"
  fi
  exit "$rc"
}

# ------------------------------------------------------------------ main
case $ACTION in
  stop) cmd_stop; exit 0 ;;
  status) [[ -x $PY ]] || PY=python3; cmd_status; exit 0 ;;
esac

trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [[ ! -x "$PY" ]]; then
  say "first run: creating the Python environment from the lock (one-time, ~1 min)"
  "$ROOT/scripts/setup-env.sh" --runtime
fi
if [[ ${ACTION} == restart ]]; then
  if read_run; then
    MODE=$REC_MODE
    PORT_ARG=${PORT_ARG:-$REC_PORT}
    # the recorded run wins over the environment and .env: restart means "the same again"
    export LITELLM_CONFIG_PATH=$REC_CONFIG POLLER_PORT=$REC_POLLER_PORT
    [[ -z $REC_SIM_PORT ]] || export SIM_PORT=$REC_SIM_PORT
    [[ -z $REC_FLEET ]] || export SIM_FLEET_PATH=$REC_FLEET
    case $REC_REDIS_KIND in
      external) export REDIS_URL=$REC_REDIS_URL ;;
      *) export CHUTES_LB_REDIS_PORT=$REC_REDIS_PORT; OWN_REDIS=1 ;;
    esac
    say "restart: $MODE mode on port $PORT_ARG, config $REC_CONFIG"
  else
    say "restart: no recorded run in $RUN; starting in real mode"
  fi
  cmd_stop
fi
# a config path from the environment is relative to where you ran this; one from .env, to the repo
[[ -z ${LITELLM_CONFIG_PATH:-} ]] || export LITELLM_CONFIG_PATH=$(abspath "$LITELLM_CONFIG_PATH" "$CALLER_PWD")
load_env
cmd_start "${PORT_ARG:-${LITELLM_PORT:-4000}}"
