#!/usr/bin/env bash
# A multi-node Wharf on loopback, for tests and for trying it by hand:
# one PostgreSQL (metadata), one Garage (S3 blob store), three `wharf serve`
# nodes sharing both, and HAProxy in front of them.
#
#   bash scripts/cluster.sh start DIR     # start what is not running yet, wait until all is up
#   bash scripts/cluster.sh stop DIR      # stop everything start started (bounded, then KILL)
#   bash scripts/cluster.sh status DIR    # what is up; exit status 0 only if everything is
#
# Single pieces, for tests that break them on purpose:
#
#   start-node DIR N | stop-node DIR N (SIGTERM, drain) | kill-node DIR N (SIGKILL)
#   restart-node DIR N                    # stop-node (if running), then start-node
#   stop-postgres DIR | start-postgres DIR | stop-garage DIR | start-garage DIR
#   lb-state DIR                          # "nodeN STATUS" per HAProxy server (stats socket)
#
# The script can also be sourced (`source scripts/cluster.sh`): it then only
# defines its functions, for a test that drives the pieces itself: set
# CLUSTER_DIR (absolute), call load_ports, then start_node N, stop_node N,
# kill_node N, restart_node N, lb_state, ...
#
# Environment (read by `start`; the ports are remembered in DIR/ports, so
# later commands on the same DIR use the same ones):
#   WHARF_BIN                  the wharf binary [target/release/wharf]
#   WHARF_CLUSTER_PORT         the load balancer's port on 127.0.0.1 [5080]
#   WHARF_CLUSTER_PG_PORT      PostgreSQL's port [15480]
#   WHARF_CLUSTER_GARAGE_PORT  Garage's port base: S3 on it, RPC on +1, admin on +3 [13980]
#   WHARF_CLUSTER_NODES        how many wharf nodes [3]
#   WHARF_CLUSTER_GRACE        each node's --shutdown-grace-secs [10]
#   WHARF_CLUSTER_NODE_ARGS    extra `wharf serve` arguments for every node (word-split)
#   WHARF_CLUSTER_CHECK_URI    what HAProxy's health check GETs on the admin port [/readyz]
#   WHARF_CLUSTER_NO_LB=1      start no HAProxy of the cell's own (something else,
#                              e.g. scripts/fleet.sh's router, fronts the nodes);
#                              remembered in DIR/ports like the ports [0]
#
# Layout of DIR:
#   cluster.env          shell assignments: the LB address, each node's
#                        address, admin address and pid, HAProxy's pid and
#                        stats socket, the metadata URL (rewritten on every change)
#   postgres/ garage/    the services' own directories (scripts/postgres.sh, scripts/garage.sh)
#   nodeN/               node N: data/, pid, addr, admin
#   nodeN.log            node N's log (--log info), appended across restarts
#   haproxy.cfg haproxy.log haproxy.pid haproxy.sock
#
# The nodes: `--listen 127.0.0.1:0 --addr-file`, the same for the admin port,
# `--metadata-url` (the PostgreSQL, its schema brought up to date by one
# `wharf migrate` when it starts), `--cluster-nodes N` (so each node checks
# that N pools fit the database), the S3 flags (the secret and key id through
# the environment, not the process list). A restarted node asks for the ports
# it had, so clients that talk to it directly find it again; if they are
# taken it takes new ones and HAProxy is told over its stats socket.
#
# HAProxy runs in the foreground (-db) under nohup, in the background of
# this script, its pid in DIR/haproxy.pid; never as a system service: `balance roundrobin`, an HTTP check of each node's admin
# /readyz every second (two failures drain a node, two successes bring it
# back), `retries` with `option redispatch` on connection failures only
# (nothing is replayed once a request reached a node), bounded timeouts, and
# its own 502/503/504 answered with `Retry-After` and an OCI error body.
#
# Every wait is bounded; stop signals only processes whose pid file this
# script wrote and whose command line names DIR.
set -uo pipefail

CLUSTER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_SCRIPTS=$CLUSTER_ROOT/scripts
WAIT_SECONDS=30

log() { echo "cluster.sh: $*" >&2; }
fail() {
  log "$*"
  return 1
}

haproxy_bin() {
  local c
  for c in "$(command -v haproxy 2>/dev/null || true)" /usr/sbin/haproxy /usr/local/sbin/haproxy; do
    [ -n "$c" ] && [ -x "$c" ] && {
      echo "$c"
      return 0
    }
  done
  fail "no haproxy (run scripts/install-deps.sh)"
}

wharf_bin() {
  local b=${WHARF_BIN:-$CLUSTER_ROOT/target/release/wharf}
  [ -x "$b" ] || fail "WHARF_BIN=$b is not an executable (cargo build --release -p wharf)" || return 1
  echo "$b"
}

# ---------------------------------------------------------------- state

# The ports: chosen by the first start, remembered in DIR/ports.
load_ports() {
  local d=$CLUSTER_DIR
  # A ports file written before NO_LB existed has none: the environment's.
  NO_LB=${WHARF_CLUSTER_NO_LB:-0}
  if [ -f "$d/ports" ]; then
    # shellcheck disable=SC1091
    source "$d/ports"
  else
    LB_PORT=${WHARF_CLUSTER_PORT:-5080}
    PG_PORT=${WHARF_CLUSTER_PG_PORT:-15480}
    GARAGE_PORT=${WHARF_CLUSTER_GARAGE_PORT:-13980}
    NODES=${WHARF_CLUSTER_NODES:-3}
  fi
  local v
  for v in "$LB_PORT" "$PG_PORT" "$GARAGE_PORT" "$NODES"; do
    case "$v" in '' | *[!0-9]*) fail "bad port/node count '$v' (DIR/ports or WHARF_CLUSTER_*)" || return 1 ;; esac
  done
  case "$NO_LB" in 0 | 1) ;; *) fail "bad WHARF_CLUSTER_NO_LB '$NO_LB' (0 or 1)" || return 1 ;; esac
}

save_ports() {
  printf 'LB_PORT=%s\nPG_PORT=%s\nGARAGE_PORT=%s\nNODES=%s\nNO_LB=%s\n' \
    "$LB_PORT" "$PG_PORT" "$GARAGE_PORT" "$NODES" "$NO_LB" >"$CLUSTER_DIR/ports"
}

# alive PIDFILE NEEDLE: prints the pid when it is alive and its command line
# contains NEEDLE (so a recycled pid is never signalled).
alive() {
  local f=$1 needle=$2 pid cmdline
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null)
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$needle"* ]] || return 1
  echo "$pid"
}

node_dir() { echo "$CLUSTER_DIR/node$1"; }
node_pid() { alive "$(node_dir "$1")/pid" "$(node_dir "$1")/data"; }
haproxy_pid() { alive "$CLUSTER_DIR/haproxy.pid" "$CLUSTER_DIR/haproxy.cfg"; }

# stop_pid PID SECONDS: TERM, bounded wait, then KILL (and a short wait for it).
stop_pid() {
  local pid=$1 secs=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "pid $pid still running after ${secs}s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
}

# cluster.env: everything a test or a person needs, as shell assignments.
write_env() {
  local f=$CLUSTER_DIR/cluster.env n pg_url=
  pg_url=$(bash "$CLUSTER_SCRIPTS/postgres.sh" url "$CLUSTER_DIR/postgres" 2>/dev/null) || pg_url=
  {
    echo "# Written by scripts/cluster.sh; rewritten whenever a piece (re)starts."
    echo "CLUSTER_DIR='$CLUSTER_DIR'"
    if [ "$NO_LB" = 1 ]; then
      echo "CLUSTER_LB="
    else
      echo "CLUSTER_LB=127.0.0.1:$LB_PORT"
    fi
    echo "CLUSTER_NODES=$NODES"
    echo "CLUSTER_PG_URL='$pg_url'"
    echo "CLUSTER_PG_PORT=$PG_PORT"
    echo "CLUSTER_GARAGE_PORT=$GARAGE_PORT"
    echo "CLUSTER_S3_ENDPOINT=http://127.0.0.1:$GARAGE_PORT"
    echo "CLUSTER_HAPROXY_PID=$(haproxy_pid || true)"
    echo "CLUSTER_HAPROXY_SOCK='$CLUSTER_DIR/haproxy.sock'"
    for ((n = 1; n <= NODES; n++)); do
      local d
      d=$(node_dir $n)
      echo "CLUSTER_NODE${n}_ADDR=$(cat "$d/addr" 2>/dev/null)"
      echo "CLUSTER_NODE${n}_ADMIN=$(cat "$d/admin" 2>/dev/null)"
      echo "CLUSTER_NODE${n}_PID=$(node_pid $n || true)"
      echo "CLUSTER_NODE${n}_LOG='$CLUSTER_DIR/node$n.log'"
    done
  } >"$f.tmp" && mv "$f.tmp" "$f"
}

http_status() { # http_status URL: the status code, 000 when no answer
  curl -s --noproxy '*' --connect-timeout 2 --max-time 3 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null
}

# ---------------------------------------------------------------- services

start_postgres() {
  local url
  url=$(bash "$CLUSTER_SCRIPTS/postgres.sh" start "$CLUSTER_DIR/postgres" "$PG_PORT") ||
    fail "PostgreSQL did not start (see $CLUSTER_DIR/postgres/postgres.log)" || return 1
  log "PostgreSQL up: $url"
  # Nodes never migrate on their own: the schema is brought up to date
  # once, here, as docs/operations.md's upgrade procedure does.
  # (WHARF_CLUSTER_NODES is this script's, but also the variable of
  # wharf's --cluster-nodes, which needs S3 settings this command has no
  # use for: not passed on.)
  env -u WHARF_CLUSTER_NODES "$(wharf_bin)" migrate --metadata-url "$url" >&2 ||
    fail "wharf migrate --metadata-url $url failed" || return 1
}

stop_postgres() {
  [ -f "$CLUSTER_DIR/postgres/data/postmaster.pid" ] || return 0
  bash "$CLUSTER_SCRIPTS/postgres.sh" stop "$CLUSTER_DIR/postgres" || fail "PostgreSQL did not stop" || return 1
  log "PostgreSQL stopped ($CLUSTER_DIR/postgres)"
}

start_garage() {
  bash "$CLUSTER_SCRIPTS/garage.sh" start "$CLUSTER_DIR/garage" "$GARAGE_PORT" >&2 ||
    fail "Garage did not start (see $CLUSTER_DIR/garage/garage.log)"
}

stop_garage() {
  [ -d "$CLUSTER_DIR/garage" ] || return 0
  bash "$CLUSTER_SCRIPTS/garage.sh" stop "$CLUSTER_DIR/garage" >&2 || fail "Garage did not stop"
}

# ---------------------------------------------------------------- nodes

# launch_node N LISTEN ADMIN: starts node N's process, waits for both
# address files; returns 1 (process gone) or 2 (timeout) on failure.
launch_node() {
  local n=$1 listen=$2 admin=$3 d bin url i pid
  d=$(node_dir "$n")
  bin=$(wharf_bin) || return 1
  url=$(bash "$CLUSTER_SCRIPTS/postgres.sh" url "$CLUSTER_DIR/postgres") || return 1
  [ -f "$CLUSTER_DIR/garage/env" ] || fail "no $CLUSTER_DIR/garage/env: Garage was never started" || return 1
  # shellcheck disable=SC1091
  source "$CLUSTER_DIR/garage/env"
  rm -f "$d/addr.new" "$d/admin.new"
  # shellcheck disable=SC2086
  WHARF_S3_ACCESS_KEY_ID=$WHARF_TEST_S3_ACCESS_KEY_ID \
    WHARF_S3_SECRET_ACCESS_KEY=$WHARF_TEST_S3_SECRET_ACCESS_KEY \
    nohup "$bin" serve \
    --listen "$listen" --addr-file "$d/addr.new" \
    --admin-listen "$admin" --admin-addr-file "$d/admin.new" \
    --data-dir "$d/data" --log info \
    --metadata-url "$url" --cluster-nodes "$NODES" \
    --s3-endpoint "$WHARF_TEST_S3_ENDPOINT" --s3-bucket "$WHARF_TEST_S3_BUCKET" \
    --s3-region "$WHARF_TEST_S3_REGION" \
    --shutdown-grace-secs "${WHARF_CLUSTER_GRACE:-10}" \
    ${WHARF_CLUSTER_NODE_ARGS:-} \
    </dev/null >>"$CLUSTER_DIR/node$n.log" 2>&1 &
  pid=$!
  echo "$pid" >"$d/pid"
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    [ -s "$d/addr.new" ] && [ -s "$d/admin.new" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 2
}

# start_node N: starts node N unless it runs; waits until its /readyz is 200.
start_node() {
  local n=$1 d pid rc listen=127.0.0.1:0 admin=127.0.0.1:0
  d=$(node_dir "$n")
  mkdir -p "$d/data"
  if pid=$(node_pid "$n"); then
    log "node$n already running (pid $pid, $(cat "$d/addr" 2>/dev/null))"
    return 0
  fi
  # Come back on the same ports when this node ran before.
  [ -s "$d/addr" ] && listen=$(cat "$d/addr")
  [ -s "$d/admin" ] && admin=$(cat "$d/admin")
  launch_node "$n" "$listen" "$admin"
  rc=$?
  if [ "$rc" = 1 ] && [ "$listen$admin" != 127.0.0.1:0127.0.0.1:0 ] &&
    tail -n 20 "$CLUSTER_DIR/node$n.log" | grep -qi 'in use'; then
    log "node$n: its previous ports are taken; taking new ones"
    launch_node "$n" 127.0.0.1:0 127.0.0.1:0
    rc=$?
  fi
  if [ "$rc" != 0 ]; then
    tail -n 20 "$CLUSTER_DIR/node$n.log" >&2
    [ "$rc" = 2 ] && { stop_pid "$(cat "$d/pid")" 5; }
    fail "node$n did not start (log: $CLUSTER_DIR/node$n.log)"
    return 1
  fi
  mv "$d/addr.new" "$d/addr"
  mv "$d/admin.new" "$d/admin"
  pid=$(cat "$d/pid")
  local i code=
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    code=$(http_status "http://$(cat "$d/admin")/readyz")
    [ "$code" = 200 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$code" != 200 ]; then
    tail -n 20 "$CLUSTER_DIR/node$n.log" >&2
    fail "node$n: /readyz answered '$code', not 200, within ${WAIT_SECONDS}s"
    return 1
  fi
  log "node$n up: pid $pid, registry $(cat "$d/addr"), admin $(cat "$d/admin")"
  write_env
  lb_set_server "$n" || return 1
}

# stop_node N [SECONDS]: SIGTERM (the node drains), bounded wait, then KILL.
stop_node() {
  local n=$1 secs=${2:-$((${WHARF_CLUSTER_GRACE:-10} + 5))} pid
  if pid=$(node_pid "$n"); then
    stop_pid "$pid" "$secs"
    log "node$n stopped (pid $pid)"
  fi
  write_env
}

# kill_node N: SIGKILL, no drain (a crash).
kill_node() {
  local n=$1 pid i
  pid=$(node_pid "$n") || {
    log "node$n is not running"
    return 0
  }
  kill -KILL "$pid"
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "node$n killed (pid $pid)"
  write_env
}

restart_node() {
  stop_node "$1" && start_node "$1"
}

# ---------------------------------------------------------------- haproxy

lb_cmd() { # lb_cmd COMMAND: one command on the stats socket
  [ -S "$CLUSTER_DIR/haproxy.sock" ] || return 1
  echo "$1" | timeout 5 socat stdio "unix-connect:$CLUSTER_DIR/haproxy.sock" 2>/dev/null
}

# lb_state: "nodeN STATUS" lines (UP, DOWN, "UP 1/2", MAINT, ...), from `show stat`.
lb_state() {
  lb_cmd "show stat" | awk -F, '
    NR == 1 { for (i = 1; i <= NF; i++) { h = $i; sub(/^# /, "", h); col[h] = i }; next }
    $1 == "wharf" && $2 != "BACKEND" && $2 != "FRONTEND" { print $2, $col["status"] }'
}

# lb_set_server N: points HAProxy's nodeN at node N's current ports (they
# change only when a restart found its old ones taken) and waits until
# HAProxy has it UP again. No-op when HAProxy is not running.
lb_set_server() {
  local n=$1 d addr admin i st=
  haproxy_pid >/dev/null || return 0
  d=$(node_dir "$n")
  addr=$(cat "$d/addr") admin=$(cat "$d/admin")
  lb_cmd "set server wharf/node$n addr ${addr%:*} port ${addr##*:}" >/dev/null || true
  lb_cmd "set server wharf/node$n check-port ${admin##*:}" >/dev/null || true
  for ((i = 0; i < 15 * 10; i++)); do
    st=$(lb_state | awk -v s="node$n" '$1 == s { $1 = ""; sub(/^ /, ""); print }')
    [ "$st" = UP ] && {
      log "node$n back in HAProxy's rotation"
      return 0
    }
    sleep 0.1
  done
  fail "node$n: HAProxy shows it '$st', not UP, 15s after it became ready"
}

write_haproxy_cfg() {
  local f=$CLUSTER_DIR/haproxy.cfg n d code
  for code in 502 503 504; do
    local text
    case $code in
      502) text="Bad Gateway" ;; 503) text="Service Unavailable" ;; 504) text="Gateway Timeout" ;;
    esac
    local body="{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"load balancer: $code $text, retry\",\"detail\":null}]}"
    printf 'HTTP/1.1 %s %s\r\nContent-Type: application/json\r\nRetry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: %s\r\n\r\n%s' \
      "$code" "$text" "${#body}" "$body" >"$CLUSTER_DIR/haproxy-$code.http"
  done
  {
    cat <<EOF
# Written by scripts/cluster.sh start; rewritten on every HAProxy start.
global
    log stdout format raw local0 info
    stats socket $CLUSTER_DIR/haproxy.sock mode 600 level admin
    stats timeout 10s
    maxconn 4096

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # Bounded everything: a dead or slow node never holds a client for long.
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout check 2s
    # Retry (on another node) only when no connection could be made: nothing
    # that reached a node is ever replayed.
    retries 3
    retry-on conn-failure
    option redispatch 1
    errorfile 502 $CLUSTER_DIR/haproxy-502.http
    errorfile 503 $CLUSTER_DIR/haproxy-503.http
    errorfile 504 $CLUSTER_DIR/haproxy-504.http

frontend registry
    bind 127.0.0.1:$LB_PORT
    default_backend wharf

backend wharf
    balance roundrobin
    # Ready means /readyz answers 200: a draining, saturated or dead node
    # leaves the rotation after 2 failed checks and returns after 2 good ones.
    option httpchk
    http-check send meth GET uri ${WHARF_CLUSTER_CHECK_URI:-/readyz}
    http-check expect status 200
    default-server check inter 1s fastinter 500ms downinter 1s fall 2 rise 2 maxconn 1000
EOF
    for ((n = 1; n <= NODES; n++)); do
      d=$(node_dir $n)
      echo "    server node$n $(cat "$d/addr") port $(cut -d: -f2 "$d/admin")"
    done
  } >"$f"
}

start_haproxy() {
  local bin pid i state
  bin=$(haproxy_bin) || return 1
  command -v socat >/dev/null 2>&1 || fail "no socat (run scripts/install-deps.sh)" || return 1
  if pid=$(haproxy_pid); then
    log "HAProxy already running (pid $pid, 127.0.0.1:$LB_PORT)"
  else
    write_haproxy_cfg || return 1
    "$bin" -c -q -f "$CLUSTER_DIR/haproxy.cfg" >&2 || fail "haproxy.cfg does not validate" || return 1
    rm -f "$CLUSTER_DIR/haproxy.sock"
    nohup "$bin" -db -f "$CLUSTER_DIR/haproxy.cfg" </dev/null >>"$CLUSTER_DIR/haproxy.log" 2>&1 &
    echo $! >"$CLUSTER_DIR/haproxy.pid"
  fi
  # Up when every server is UP in its stats.
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    pid=$(haproxy_pid) || {
      tail -n 20 "$CLUSTER_DIR/haproxy.log" >&2
      fail "HAProxy exited (log: $CLUSTER_DIR/haproxy.log)"
      return 1
    }
    state=$(lb_state)
    if [ -n "$state" ] && ! grep -qv ' UP$' <<<"$state"; then
      log "HAProxy up: pid $pid, 127.0.0.1:$LB_PORT, servers: $(echo $state)"
      write_env
      return 0
    fi
    sleep 0.1
  done
  fail "HAProxy servers not all UP within ${WAIT_SECONDS}s: $(echo $state)"
}

stop_haproxy() {
  local pid
  if pid=$(haproxy_pid); then
    stop_pid "$pid" 10
    log "HAProxy stopped (pid $pid)"
  fi
  rm -f "$CLUSTER_DIR/haproxy.sock"
}

# ---------------------------------------------------------------- commands

cluster_start() {
  local n
  mkdir -p "$CLUSTER_DIR"
  load_ports || return 1
  save_ports
  # PostgreSQL runs as the `postgres` user when we are root: it must be able
  # to reach DIR/postgres.
  if [ "$(id -u)" = 0 ]; then
    chmod o+x "$CLUSTER_DIR"
    runuser -u postgres -- test -x "$CLUSTER_DIR" 2>/dev/null ||
      fail "the postgres user cannot reach $CLUSTER_DIR: make its parent directories traversable (chmod o+x)" ||
      return 1
  fi
  wharf_bin >/dev/null || return 1
  "$(wharf_bin)" serve --help 2>/dev/null | grep -q -- '--s3-endpoint' ||
    fail "$(wharf_bin) has no --s3-endpoint: the nodes could not share a blob store" || return 1
  [ "$NO_LB" = 1 ] || haproxy_bin >/dev/null || return 1
  start_postgres || return 1
  start_garage || return 1
  for ((n = 1; n <= NODES; n++)); do
    start_node $n || return 1
  done
  if [ "$NO_LB" = 1 ]; then
    write_env
    log "cluster up without a load balancer of its own (state in $CLUSTER_DIR/cluster.env)"
    return 0
  fi
  start_haproxy || return 1
  write_env
  log "cluster up: http://127.0.0.1:$LB_PORT (state in $CLUSTER_DIR/cluster.env)"
}

cluster_stop() {
  local n
  [ -d "$CLUSTER_DIR" ] || return 0
  load_ports || return 1
  stop_haproxy
  # All nodes drain at once, then each gets its bounded wait.
  local pids=() pid
  for ((n = 1; n <= NODES; n++)); do
    pid=$(node_pid $n) || pid=
    pids[n]=$pid
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
  done
  for ((n = 1; n <= NODES; n++)); do
    [ -n "${pids[n]}" ] || continue
    stop_pid "${pids[n]}" $((${WHARF_CLUSTER_GRACE:-10} + 5))
    log "node$n stopped (pid ${pids[n]})"
  done
  stop_garage
  stop_postgres
  write_env
}

cluster_status() {
  local ok=0 n pid d
  load_ports || return 1
  if [ "$NO_LB" = 1 ]; then
    echo "haproxy    none  (WHARF_CLUSTER_NO_LB=1)"
  elif pid=$(haproxy_pid); then
    echo "haproxy    up    pid $pid  http://127.0.0.1:$LB_PORT"
    lb_state | sed 's/^/  lb /'
  else
    echo "haproxy    down"
    ok=1
  fi
  for ((n = 1; n <= NODES; n++)); do
    d=$(node_dir $n)
    if pid=$(node_pid $n); then
      echo "node$n      up    pid $pid  registry $(cat "$d/addr")  admin $(cat "$d/admin")  readyz $(http_status "http://$(cat "$d/admin")/readyz")"
    else
      echo "node$n      down"
      ok=1
    fi
  done
  if pid=$(alive "$CLUSTER_DIR/garage/pid" "$CLUSTER_DIR/garage/garage.toml"); then
    echo "garage     up    pid $pid  http://127.0.0.1:$GARAGE_PORT"
  else
    echo "garage     down"
    ok=1
  fi
  local bin
  bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  if [ -f "$CLUSTER_DIR/postgres/data/postmaster.pid" ] &&
    pid=$(head -n 1 "$CLUSTER_DIR/postgres/data/postmaster.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
    echo "postgres   up    pid $pid  $(bash "$CLUSTER_SCRIPTS/postgres.sh" url "$CLUSTER_DIR/postgres" 2>/dev/null)"
  else
    echo "postgres   down"
    ok=1
  fi
  return $ok
}

usage() {
  sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# set_dir DIR: CLUSTER_DIR as an absolute path.
set_dir() {
  [ -n "${1:-}" ] || usage
  mkdir -p "$1" || exit 1
  CLUSTER_DIR=$(cd "$1" && pwd)
}

node_arg() {
  case "${1:-}" in '' | *[!0-9]*) usage ;; esac
  [ "$1" -ge 1 ] && [ "$1" -le "$NODES" ] || fail "no node $1 (this cluster has $NODES)" || exit 2
}

# Sourced: functions only.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  return 0
fi

# Started processes must not inherit a caller's extra descriptors (a test's
# saved stdout would otherwise stay open as long as the daemons live).
exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-

cmd=${1:-}
[ $# -ge 2 ] || usage
set_dir "$2"
case "$cmd" in
  start) cluster_start ;;
  stop) cluster_stop ;;
  status) cluster_status ;;
  start-node | stop-node | kill-node | restart-node)
    [ $# -eq 3 ] || usage
    load_ports || exit 1
    node_arg "$3"
    case "$cmd" in
      start-node) start_node "$3" ;;
      stop-node) stop_node "$3" ;;
      kill-node) kill_node "$3" ;;
      restart-node) restart_node "$3" ;;
    esac
    ;;
  stop-postgres) load_ports && stop_postgres ;;
  start-postgres) load_ports && start_postgres ;;
  stop-garage) load_ports && stop_garage ;;
  start-garage) load_ports && start_garage ;;
  lb-state) load_ports && lb_state ;;
  *) usage ;;
esac
