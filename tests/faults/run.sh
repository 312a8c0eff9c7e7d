#!/usr/bin/env bash
# Network faults between real hosts (issue 15): a three-node Wharf cell in
# which every piece runs in a network namespace of its own, joined by veth
# links to a bridge (tests/faults/net.sh), and faults made on those links
# and processes under a bounded mixed load of pushes and pulls through
# HAProxy (tests/faults/load.py).
#
#   WHARF_BIN=target/release/wharf bash tests/faults/run.sh     # as root
#
# Pieces: PostgreSQL (10.77.0.2:5432), Garage (its S3 port on 127.0.0.1
# inside its namespace, reached by the nodes at 10.77.0.3:3900 through
# linkproxy.py, which can hold replies), HAProxy (10.77.0.4:5000,
# scripts/cluster.sh's settings, plus, by default, L7 retries of pulls on
# another node: WHARF_FAULTS_LB_RETRY), nodes 1-3 (10.77.0.11-13, registry
# :5000, admin :5001), the test's clients (10.77.0.100). Node 1 reaches
# PostgreSQL through a linkproxy.py of its own (127.0.0.1:5432 in its
# namespace), so that link can be slowed; nodes 2 and 3 directly.
#
# Cases (each: 5 s of load, the fault for WHARF_FAULTS_SECS, healed, then
# until full service and 4 s more; this namespace test's own repository per
# case):
#   partition-node-pg  node2 and PostgreSQL cut from each other (iptables
#                      DROP on both ends); node2 still reachable from HAProxy
#   pg-stall           every PostgreSQL process SIGSTOPped, then SIGCONT
#   garage-slow        200 ms added to every Garage round trip
#   node-kill          node3 SIGKILLed under load, started again 10 s later
#   pg-restart         PostgreSQL restarted (pg_ctl restart -m fast) under load
#   latency-node-pg    200 ms added to node1's PostgreSQL round trips
#   loss-node          5% of the packets into and out of node1 lost
# and last, acked-after-restart: every node restarted (nothing in memory),
# then every push acknowledged in any case read back byte for byte.
#
# Each fault case asserts: every acknowledged push is present and
# byte-identical afterwards (through HAProxy); pulls of content acknowledged
# before the fault, sent from the fault on, succeed (share >=
# WHARF_FAULTS_PULL_TARGET; of content every node had served, all of
# them); no request reaches the client's deadline, and no node takes
# longer than its dependency deadline (10 s) and a second to answer one
# (from the nodes' access logs); the cell is back to full service (every
# node ready, UP in HAProxy, and pushing and pulling through each node, for
# 3 s running, and no request of the load failing after that) within
# WHARF_FAULTS_RECOVER_MAX seconds of the heal. Each prints one `figures:`
# line; the table of all is in $TMP/figures.md and printed at the end.
#
# Environment:
#   WHARF_BIN                  the wharf binary [target/release/wharf]
#   WHARF_CASES                only these cases, comma-separated [all]
#   WHARF_FAULTS_SECS          how long each fault lasts [15]
#   WHARF_FAULTS_DEADLINE      each client request's deadline, seconds [30: with
#                              L7 retries a pull may meet two nodes' 10 s deadlines]
#   WHARF_FAULTS_PUSHERS       concurrent pushers [3]
#   WHARF_FAULTS_PULLERS       concurrent pullers [3]
#   WHARF_FAULTS_PULL_TARGET   least share (%) of pre-fault pulls that must succeed [99]
#   WHARF_FAULTS_RECOVER_MAX   seconds after the heal by which full service must be back [30]
#   WHARF_FAULTS_LB_RETRY      HAProxy's retry-on: `conn` (scripts/cluster.sh's:
#                              conn-failure only) or `pull` (also 502/503/504,
#                              empty and timed-out answers, for GET and HEAD only) [pull]
#   WHARF_FAULTS_BUDGET        seconds the whole run may take [600]
#   WHARF_FAULTS_KEEP=1        keep the temp dir after a passing run
#
# Needs root (network namespaces), iproute2, iptables, PostgreSQL's server
# binaries, Garage, HAProxy, python3, curl (scripts/install-deps.sh,
# scripts/install-garage.sh). Ends with `faults: N passed, M failed`; exits
# non-zero if M > 0 or if the namespaces cannot be made. Every wait and
# every load is bounded; on exit, whatever happened, every process it
# started is stopped and every namespace, link and bridge removed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wharf-faults.XXXXXX")
chmod 711 "$TMP" # PostgreSQL runs as `postgres` and must reach $TMP/pg
LOGS=$TMP/logs
mkdir -p "$LOGS" "$TMP/figures"

FAULT_SECS=${WHARF_FAULTS_SECS:-15}
DEADLINE=${WHARF_FAULTS_DEADLINE:-30}
# The nodes' --dependency-deadline-ms (their default); no node may take
# longer than this and a second to answer any request of this load.
DEP_DEADLINE_MS=10000
PUSHERS=${WHARF_FAULTS_PUSHERS:-3}
PULLERS=${WHARF_FAULTS_PULLERS:-3}
PULL_TARGET=${WHARF_FAULTS_PULL_TARGET:-99}
RECOVER_MAX=${WHARF_FAULTS_RECOVER_MAX:-30}
LB_RETRY=${WHARF_FAULTS_LB_RETRY:-pull}
BUDGET=${WHARF_FAULTS_BUDGET:-600}
PRE_SECS=5
POST_SECS=4

PASSED=0
FAILED=0
FAILED_NAMES=()
DOCKERD_PID= # harness.sh's; no docker here
WATCHDOG_PID=
DONE=0
STARTED_PIDS=()
NODE_PID=()
PG_STARTED=0
GARAGE_STARTED=0

NET_RUN=$$
SUITE=faults
# shellcheck source=../harness.sh
source "$HERE/../harness.sh"
# shellcheck source=net.sh
source "$HERE/net.sh"

LB=http://$(net_ip lb):5000
NODE_URLS=""
ADMIN_URLS=""
for n in 1 2 3; do
  NODE_URLS+="${NODE_URLS:+,}http://$(net_ip n$n):5000"
  ADMIN_URLS+="${ADMIN_URLS:+,}http://$(net_ip n$n):5001"
done
PG_URL_DIRECT=postgres://wharf@$(net_ip pg):5432/wharf
PG_DIR=$TMP/pg
GARAGE_DIR=$TMP/garage

need() {
  local x
  for x in "$@"; do
    command -v "$x" >/dev/null 2>&1 || [ -x "/usr/sbin/$x" ] ||
      die "$x is not installed (run scripts/install-deps.sh)" || return 1
  done
}

cleanup() {
  [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null
  {
    local pid
    # PostgreSQL may be stopped (pg-stall): continue it before anything.
    for pid in $(net_pids_in pg); do kill -CONT "$pid" 2>/dev/null; done
    local live=()
    for pid in "${STARTED_PIDS[@]}"; do ours "$pid" && live+=("$pid"); done
    for pid in "${live[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${live[@]}"; do stop_pid "$pid" 5; done
    [ "$GARAGE_STARTED" = 1 ] && timeout 40 bash "$ROOT/scripts/garage.sh" stop "$GARAGE_DIR"
    [ "$PG_STARTED" = 1 ] && pg_ctl_in stop -m immediate -w -t 20
    net_down
  } >>"$LOGS/cleanup.log" 2>&1
  if [ -n "$(net_left)" ]; then
    echo "faults: namespaces left behind: $(net_left | tr '\n' ' ')"
  fi
  if [ "$FAILED" -gt 0 ] || [ "${WHARF_FAULTS_KEEP:-0}" = 1 ]; then
    return
  fi
  rm -rf "$TMP" 2>/dev/null || true
}

on_exit() {
  local rc=$?
  exec 1>&3 2>&4
  if [ "$DONE" != 1 ]; then
    local why="run.sh stopped early (status $rc)"
    [ -s "$LOGS/watchdog" ] && why=$(cat "$LOGS/watchdog")
    fail_case run-interrupted "$why"
    DONE=1
    summary
    cleanup
    exit 1
  fi
  cleanup
}
exec 3>&1 4>&2
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# It ends with the run, too: were the run SIGKILLed, no trap would stop it.
(
  exec >/dev/null 2>&1 3>&- 4>&-
  for ((w = 0; w < BUDGET; w++)); do
    sleep 1
    kill -0 $$ 2>/dev/null || exit 0
  done
  echo "over ${BUDGET}s, stopped by the watchdog" >"$LOGS/watchdog"
  kill -TERM $$
) &
WATCHDOG_PID=$!

# ---------------------------------------------------------------- helpers

epoch() { date +%s.%N; }

# c ARGS: curl from the clients' namespace, bounded.
c() { nx cl curl -sS --noproxy '*' --connect-timeout 3 --max-time 10 "$@"; }

pg_bin() {
  find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
}

# pg_ctl_in ARGS: pg_ctl on $PG_DIR/data, as postgres, inside pg's namespace.
pg_ctl_in() {
  nx pg runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" "$@"
}

# started PID: remember a process this run started (stopped on exit).
# Background processes are started with `ip netns exec` itself, never
# through the nx function (which would fork a subshell and give its pid):
# ip, env, nohup and timeout exec or signal on, so the pid is the process's.
started() { STARTED_PIDS+=("$1"); }

# ours PID: PID is alive and is one of this run's (its command line names
# this run's temp dir or this directory), so a recycled pid is never signalled.
ours() {
  local cmd
  kill -0 "$1" 2>/dev/null || return 1
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$TMP"* || $cmd == *"$HERE"* ]]
}

# wait_http URL CODE SECONDS: until URL (from the clients) answers CODE.
wait_http() {
  local url=$1 want=$2 secs=$3 i code=
  for ((i = 0; i < secs * 5; i++)); do
    code=$(c -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)
    [ "$code" = "$want" ] && return 0
    sleep 0.2
  done
  die "$url answered '$code', not $want, within ${secs}s"
}

lb_state() {
  echo "show stat" | timeout 5 socat stdio "unix-connect:$TMP/haproxy.sock" 2>/dev/null | awk -F, '
    NR == 1 { for (i = 1; i <= NF; i++) { h = $i; sub(/^# /, "", h); col[h] = i }; next }
    $1 == "wharf" && $2 != "BACKEND" && $2 != "FRONTEND" { print $2, $col["status"] }'
}

load_py() { nx cl timeout "${LOAD_TIMEOUT:-120}" python3 "$HERE/load.py" "$@"; }

# ---------------------------------------------------------------- pieces

start_postgres() {
  local bin
  bin=$(pg_bin)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || die "no PostgreSQL server under /usr/lib/postgresql" || return 1
  mkdir -p "$PG_DIR"
  chown postgres:postgres "$PG_DIR"
  runuser -u postgres -- "$bin/initdb" -D "$PG_DIR/data" -U wharf --auth=trust --encoding=UTF8 \
    --no-locale --no-instructions >"$PG_DIR/initdb.log" 2>&1 || {
    cat "$PG_DIR/initdb.log"
    die "initdb failed"
    return 1
  }
  runuser -u postgres -- tee "$PG_DIR/data/pg_hba.conf" >/dev/null <<EOF
local all all               trust
host  all all 10.77.0.0/24  trust
EOF
  runuser -u postgres -- tee -a "$PG_DIR/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '$(net_ip pg)'
port = 5432
unix_socket_directories = '$PG_DIR'
max_connections = 100
EOF
  PG_STARTED=1
  pg_ctl_in -w -t 30 start >/dev/null || {
    tail -n 20 "$PG_DIR/postgres.log"
    die "PostgreSQL did not start"
    return 1
  }
  runuser -u postgres -- "$bin/createdb" -h "$PG_DIR" -p 5432 -U wharf wharf || die "createdb failed" || return 1
  # The schema, once, as docs/operations.md's upgrade procedure does.
  nx n2 env -u WHARF_CLUSTER_NODES "$WHARF_BIN" migrate --metadata-url "$PG_URL_DIRECT" ||
    die "wharf migrate failed" || return 1
  echo "PostgreSQL up at $PG_URL_DIRECT"
}

start_proxy() { # start_proxy ROLE NAME LISTEN UPSTREAM: a linkproxy.py in ROLE's namespace
  local role=$1 name=$2 listen=$3 up=$4
  echo 0 >"$TMP/$name.delay"
  ip netns exec "$(net_ns "$role")" nohup python3 "$HERE/linkproxy.py" --listen "$listen" --upstream "$up" \
    --control "$TMP/$name.delay" --max-secs "$BUDGET" </dev/null >>"$LOGS/$name.log" 2>&1 &
  started $!
  local i
  for ((i = 0; i < 50; i++)); do
    grep -q '^linkproxy' "$LOGS/$name.log" 2>/dev/null && return 0
    sleep 0.1
  done
  die "linkproxy $name did not start: $(tail -n 3 "$LOGS/$name.log")"
}

start_garage() {
  GARAGE_STARTED=1
  nx s3 timeout 90 bash "$ROOT/scripts/garage.sh" start "$GARAGE_DIR" 3900 || die "Garage did not start" || return 1
  start_proxy s3 s3 "$(net_ip s3):3900" 127.0.0.1:3900 || return 1
  echo "Garage up, reached at http://$(net_ip s3):3900 through linkproxy.py"
}

# start_node N: node N in its namespace; waits for /readyz 200.
start_node() {
  local n=$1 url=$PG_URL_DIRECT ip
  ip=$(net_ip "n$n")
  [ "$n" = 1 ] && url=postgres://wharf@127.0.0.1:5432/wharf
  mkdir -p "$TMP/node$n/data"
  # shellcheck disable=SC1091
  source "$GARAGE_DIR/env"
  ip netns exec "$(net_ns "n$n")" env WHARF_S3_ACCESS_KEY_ID="$WHARF_TEST_S3_ACCESS_KEY_ID" \
    WHARF_S3_SECRET_ACCESS_KEY="$WHARF_TEST_S3_SECRET_ACCESS_KEY" \
    nohup "$WHARF_BIN" serve --listen "$ip:5000" --admin-listen "$ip:5001" \
    --allow-unauthenticated --admin-insecure \
    --data-dir "$TMP/node$n/data" --log info \
    --metadata-url "$url" --cluster-nodes 3 \
    --s3-endpoint "http://$(net_ip s3):3900" --s3-bucket "$WHARF_TEST_S3_BUCKET" \
    --s3-region "$WHARF_TEST_S3_REGION" --shutdown-grace-secs 5 \
    </dev/null >>"$LOGS/node$n.log" 2>&1 &
  NODE_PID[n]=$!
  started "${NODE_PID[n]}"
  wait_http "http://$ip:5001/readyz" 200 30 || {
    tail -n 15 "$LOGS/node$n.log"
    return 1
  }
  echo "node$n up: pid ${NODE_PID[n]}, http://$ip:5000"
}

write_haproxy_cfg() {
  local code text body retry
  for code in 502 503 504; do
    case $code in
      502) text="Bad Gateway" ;; 503) text="Service Unavailable" ;; 504) text="Gateway Timeout" ;;
    esac
    body="{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"load balancer: $code $text, retry\",\"detail\":null}]}"
    printf 'HTTP/1.1 %s %s\r\nContent-Type: application/json\r\nRetry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: %s\r\n\r\n%s' \
      "$code" "$text" "${#body}" "$body" >"$TMP/haproxy-$code.http"
  done
  local only_pulls=
  case $LB_RETRY in
    conn) retry="    retry-on conn-failure" ;;
    pull)
      retry="    retry-on conn-failure empty-response response-timeout 502 503 504"
      only_pulls="    # Only pulls are asked again once they reached a node: never a push.
    http-request disable-l7-retry unless METH_GET || METH_HEAD"
      ;;
    *) die "WHARF_FAULTS_LB_RETRY must be conn or pull, not '$LB_RETRY'" || return 1 ;;
  esac
  # The settings of scripts/cluster.sh's HAProxy, on this topology.
  cat >"$TMP/haproxy.cfg" <<EOF
global
    log stdout format raw local0 info
    stats socket $TMP/haproxy.sock mode 600 level admin
    stats timeout 10s
    maxconn 4096

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout check 2s
    retries 3
$retry
    option redispatch 1
    errorfile 502 $TMP/haproxy-502.http
    errorfile 503 $TMP/haproxy-503.http
    errorfile 504 $TMP/haproxy-504.http

frontend registry
    bind $(net_ip lb):5000
    default_backend wharf

backend wharf
    balance roundrobin
$only_pulls
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check inter 1s fastinter 500ms downinter 1s fall 2 rise 2 maxconn 1000
    server node1 $(net_ip n1):5000 port 5001
    server node2 $(net_ip n2):5000 port 5001
    server node3 $(net_ip n3):5000 port 5001
EOF
}

start_haproxy() {
  local i st
  write_haproxy_cfg || return 1
  nx lb haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy.cfg does not validate" || return 1
  ip netns exec "$(net_ns lb)" nohup haproxy -db -f "$TMP/haproxy.cfg" </dev/null >>"$LOGS/haproxy.log" 2>&1 &
  started $!
  for ((i = 0; i < 150; i++)); do
    st=$(lb_state)
    [ -n "$st" ] && ! grep -qv ' UP$' <<<"$st" && {
      echo "HAProxy up at $LB: $(echo $st)"
      return 0
    }
    sleep 0.2
  done
  die "HAProxy's servers not all UP within 30s: $(echo $st)"
}

# ---------------------------------------------------------------- setup cases

case_namespaces() {
  [ "$(id -u)" = 0 ] || die "network namespaces need root (this runs as uid $(id -u))" || return 1
  need ip iptables python3 curl socat haproxy runuser || return 1
  [ -x "$WHARF_BIN" ] || die "WHARF_BIN=$WHARF_BIN is not an executable (cargo build --release -p wharf)" || return 1
  net_sweep_stale
  net_up || die "could not create the network namespaces and veth links (ip netns/ip link failed; see above)" || return 1
  echo "namespaces: $(net_left | tr '\n' ' ')"
  # The switch forwards: the clients reach every piece's address (ARP
  # over the bridge), shown by a TCP connect that is refused (nothing
  # listens on port 9 yet), never one that times out.
  local r
  for r in pg s3 lb n1 n2 n3; do
    nx cl timeout 3 bash -c "exec 5<>/dev/tcp/$(net_ip "$r")/9" 2>/dev/null
    [ $? = 1 ] || die "no route from the clients' namespace to $r ($(net_ip "$r"))" || return 1
  done
}

case_cell_start() {
  start_postgres || return 1
  start_garage || return 1
  start_proxy n1 n1-pg 127.0.0.1:5432 "$(net_ip pg):5432" || return 1
  local n
  for n in 1 2 3; do start_node $n || return 1; done
  start_haproxy || return 1
  wait_http "$LB/v2/" 200 10
}

SEED=$TMP/seed.json
case_seed() {
  LOAD_TIMEOUT=120 load_py seed --lb "$LB" --nodes "$NODE_URLS" --images 8 --out "$SEED"
}

# ---------------------------------------------------------------- fault cases

# The fault of each case: inject_CASE makes it, heal_CASE ends it.
inject_partition_node_pg() { cut_link n2 pg && fault_rules; }
heal_partition_node_pg() { heal_all; }

inject_pg_stall() {
  local pids
  pids=$(net_pids_in pg)
  echo "SIGSTOP to PostgreSQL's processes: $(echo $pids)"
  kill -STOP $pids
}
heal_pg_stall() { kill -CONT $(net_pids_in pg); }

inject_garage_slow() { echo 200 >"$TMP/s3.delay"; }
heal_garage_slow() { echo 0 >"$TMP/s3.delay"; }

KILL_HOLD=10
inject_node_kill() {
  ours "${NODE_PID[3]}" || die "node3 (pid ${NODE_PID[3]}) is not running" || return 1
  echo "SIGKILL to node3 (pid ${NODE_PID[3]})"
  kill -KILL "${NODE_PID[3]}"
}
heal_node_kill() { start_node 3; }

inject_pg_restart() { pg_ctl_in -m fast -w -t 30 restart >/dev/null; }
heal_pg_restart() { :; }

inject_latency_node_pg() { echo 200 >"$TMP/n1-pg.delay"; }
heal_latency_node_pg() { echo 0 >"$TMP/n1-pg.delay"; }

inject_loss_node() { lossy n1 5 && fault_rules; }
heal_loss_node() { heal_all; }

# fault_case NAME HOLD: load starts; PRE_SECS later the fault; HOLD s later
# the heal; then until full service, POST_SECS more, and the checks.
fault_case() {
  local name=$1 hold=$2 fn=${1//-/_} d=$TMP/case-$1 load_pid rc i heal_t
  mkdir -p "$d"
  rm -f "$d/stop"
  ip netns exec "$(net_ns cl)" timeout $((PRE_SECS + hold + RECOVER_MAX + POST_SECS + 60)) python3 "$HERE/load.py" run \
    --lb "$LB" --seed "$SEED" --case "$name" --pushers "$PUSHERS" --pullers "$PULLERS" \
    --deadline "$DEADLINE" --stop "$d/stop" --max-secs $((PRE_SECS + hold + RECOVER_MAX + POST_SECS + 30)) \
    --max-requests 200000 --events "$d/events.jsonl" --acked "$d/acked.jsonl" >"$d/load.out" 2>&1 &
  load_pid=$!
  started "$load_pid"
  sleep "$PRE_SECS"
  echo "fault $(epoch)" >"$d/marks"
  echo "$(date -u +%T) fault: $name"
  "inject_$fn" || echo "note: inject_$fn returned non-zero"
  sleep "$hold"
  heal_t=$(epoch)
  echo "$(date -u +%T) heal"
  "heal_$fn" || echo "note: heal_$fn returned non-zero"
  echo "heal $heal_t" >>"$d/marks"
  LOAD_TIMEOUT=$((RECOVER_MAX + 25)) load_py recover --nodes "$NODE_URLS" --admins "$ADMIN_URLS" \
    --haproxy-sock "$TMP/haproxy.sock" --seed "$SEED" --since "$heal_t" --max-secs "$RECOVER_MAX" \
    --out "$d/recover.json"
  sleep "$POST_SECS"
  touch "$d/stop"
  for ((i = 0; i < 300; i++)); do kill -0 "$load_pid" 2>/dev/null || break; sleep 0.1; done
  wait "$load_pid"
  rc=$?
  cat "$d/load.out"
  [ "$rc" = 0 ] || die "the load generator failed (status $rc)" || return 1
  LOAD_TIMEOUT=120 load_py verify --lb "$LB" --acked "$d/acked.jsonl" --deadline "$DEADLINE" --out "$d/verify.json"
  load_py report --case "$name" --events "$d/events.jsonl" --acked "$d/acked.jsonl" --marks "$d/marks" \
    --verify "$d/verify.json" --recover "$d/recover.json" --deadline "$DEADLINE" \
    --node-logs "$LOGS/node1.log,$LOGS/node2.log,$LOGS/node3.log" \
    --out "$TMP/figures/$name.json" >/dev/null || die "load.py report failed" || return 1
  check_figures "$TMP/figures/$name.json"
}

# check_figures FILE: prints the case's figures and fails on any miss.
check_figures() {
  python3 - "$1" "$PULL_TARGET" "$RECOVER_MAX" "$DEP_DEADLINE_MS" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1]))
target, rmax, node_max = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]) / 1000 + 1
print(f"figures: {f['case']}: pushes acknowledged {f['pushes_acknowledged']} "
      f"({f['pushes_acknowledged_during_fault']} during the fault), verified identical "
      f"{f['verified_identical']}/{f['verified_of']}; pre-fault pulls {f['prefault_pull_ok']}/"
      f"{f['prefault_pull_requests']} = {f['prefault_pull_share']}% "
      f"(first tries {f['prefault_first_try_share']}%; of content every node had served "
      f"{f['seen_pull_ok']}/{f['seen_pull_requests']} = {f['seen_pull_share']}%); "
      f"max latency {f['max_latency_s']} s (p99 {f['p99_latency_s']} s) vs deadline "
      f"{f['deadline_s']} s, {f['over_deadline']} over; slowest node answer "
      f"{f['node_max_answer_s']} s ({f['node_slowest']}); full service {f['recovery_s']} s after "
      f"the heal (probes {f['recovery_probe_s']} s); requests {f['requests']} "
      f"({f['requests_during_fault']} during the fault: {f['statuses_during_fault']}); "
      f"{f['failed_after_heal']} failed after the heal")
for x in f["prefault_failures"]:
    print("  pre-fault pull failure:", x)
for x in f["failures_after_heal"]:
    print("  failure after the heal:", x)
why = []
if f["verified_of"] is None or f["verified_identical"] != f["verified_of"]:
    why.append(f"acknowledged pushes not all present and identical ({f['verified_identical']}/{f['verified_of']})")
if f["pushes_acknowledged"] == 0:
    why.append("no push was acknowledged at all")
if f["prefault_pull_requests"] == 0:
    why.append("no pull of pre-fault content was made during the fault")
elif f["prefault_pull_share"] < target:
    why.append(f"pre-fault pulls {f['prefault_pull_share']}% < {target}%")
if f["seen_pull_requests"] and f["seen_pull_share"] < 100:
    why.append(f"pulls of content every node had served {f['seen_pull_share']}% < 100%")
if f["prefault_corrupt"]:
    why.append(f"{f['prefault_corrupt']} pulls got wrong bytes")
if f["over_deadline"]:
    why.append(f"{f['over_deadline']} requests reached the {f['deadline_s']} s deadline")
if f["node_max_answer_s"] > node_max:
    why.append(f"a node took {f['node_max_answer_s']} s to answer ({f['node_slowest']}), "
               f"past its {node_max - 1:g} s dependency deadline and a second")
if not f["recovered"] or f["recovery_s"] > rmax:
    why.append(f"not back to full service within {rmax:g} s of the heal (last: {f['recovery_last_failure']})")
if why:
    print("; ".join(why))
    sys.exit(1)
EOF
}

case_acked_after_restart() {
  local n files
  for n in 1 2 3; do
    ours "${NODE_PID[n]}" && stop_pid "${NODE_PID[n]}" 10
    start_node $n || return 1
  done
  local i st
  for ((i = 0; i < 50; i++)); do
    st=$(lb_state)
    ! grep -qv ' UP$' <<<"$st" && break
    sleep 0.2
  done
  files=$(ls "$TMP"/case-*/acked.jsonl 2>/dev/null | paste -sd, -)
  [ -n "$files" ] || die "no case acknowledged anything" || return 1
  LOAD_TIMEOUT=180 load_py verify --lb "$LB" --acked "$files" --deadline "$DEADLINE" --out "$TMP/verify-all.json"
}

# A table of every case's figures (markdown), for docs/reliability.md.
figures_table() {
  python3 - "$TMP/figures" <<'EOF'
import json, os, sys
d = sys.argv[1]
rows = []
for name in sorted(os.listdir(d), key=lambda n: os.path.getmtime(os.path.join(d, n))):
    f = json.load(open(os.path.join(d, name)))
    rows.append(f"| {f['case']} | {f['fault_secs']:g} | {f['pushes_acknowledged']} ({f['pushes_acknowledged_during_fault']}) "
                f"| {f['verified_identical']}/{f['verified_of']} | {f['prefault_pull_ok']}/{f['prefault_pull_requests']} "
                f"= {f['prefault_pull_share']}% | {f['seen_pull_share']}% | {f['max_latency_s']} / {f['p99_latency_s']} "
                f"| {f['node_max_answer_s']} "
                f"| {f['over_deadline']} | {f['recovery_s']} ({f['recovery_probe_s']}) | {f['failed_after_heal']} |")
print("| case | fault s | pushes acked (during fault) | verified identical | pre-fault pulls ok "
      "| of which seen by every node | max / p99 latency s | slowest node answer s | over deadline "
      "| full service after heal s (probes) | failed after heal |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
EOF
}

# ---------------------------------------------------------------- main

selected() { [ -z "${WHARF_CASES:-}" ] || [[ ",${WHARF_CASES// /}," == *",$1,"* ]]; }

echo "faults run: temp dir $TMP, namespaces $NET_PREFIX-$NET_RUN-*, HAProxy retry-on: $LB_RETRY"
for setup in namespaces cell-start seed; do
  if ! run_case "$setup" "case_${setup//-/_}"; then
    fail_case faults-remaining "no cell to fault; see $LOGS/$setup.log"
    DONE=1
    summary
    exit 1
  fi
done

# node-kill: node3 is down 10 s; pg-restart: the fault is the restart
# itself (pg_ctl returns once PostgreSQL is back), healed at once.
declare -A HOLD=([node-kill]=$KILL_HOLD [pg-restart]=0)
for name in partition-node-pg pg-stall garage-slow node-kill pg-restart latency-node-pg loss-node; do
  selected "$name" || continue
  run_case "$name" fault_case "$name" "${HOLD[$name]:-$FAULT_SECS}"
  grep '^figures:' "$LOGS/$name.log"
  # A case that left the cell broken would fail the ones after it for
  # nothing: heal everything again and make sure node3 runs.
  heal_all >/dev/null 2>&1
  kill -CONT $(net_pids_in pg) 2>/dev/null
  echo 0 >"$TMP/s3.delay"
  echo 0 >"$TMP/n1-pg.delay"
  kill -0 "${NODE_PID[3]}" 2>/dev/null || run_case restart-node3 start_node 3
done
run_case acked-after-restart case_acked_after_restart && tail -n 1 "$LOGS/acked-after-restart.log"

echo
figures_table | tee "$TMP/figures.md"
DONE=1
summary
[ "$FAILED" -eq 0 ]
