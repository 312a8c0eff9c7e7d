# Shared by the benchmark scripts (run.sh, overload.sh); sourced, not run.
# Expects: FAILS (the failures file), and for start_reference: W (the work
# dir), RUN (the run dir, with logs/), REGISTRY (the docker-registry
# binary), and the arrays PID, ADDR, ADMIN (associative) and PIDS; for
# start_servers, SERVERS and a start_<server> function for each.

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
fail() { log "FAIL: $*"; printf '%s\n' "$*" >>"$FAILS"; }

# bench_cleanup: the EXIT trap of a run that started processes (PIDS) and
# PostgreSQL clusters (PG_DIRS) under the work dir W: stops them all and
# removes W, unless KEEP=1. Needs ROOT.
bench_cleanup() {
  local p d
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${PG_DIRS[@]}"; do bash "$ROOT/scripts/postgres.sh" stop "$d" >/dev/null 2>&1 || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url: bounded wait (10 s, 1 s per try) for a 200
  local i
  for i in $(seq 1 100); do
    [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# The reference registry (CNCF distribution 2.8, Debian `docker-registry`):
# filesystem storage in the work dir, the in-memory blob-descriptor cache,
# deletes on, logs and the access log off, on a free loopback port.
start_reference() {
  local port; port=$(free_port)
  mkdir -p "$W/reference-data"
  cat >"$W/registry.yml" <<EOC
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/reference-data
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOC
  "$REGISTRY" serve "$W/registry.yml" >"$RUN/logs/reference.log" 2>&1 &
  PID[reference]=$!; PIDS+=("$!")
  ADDR[reference]=127.0.0.1:$port
}

# Starts every server in SERVERS, waits (bounded) for each to answer /v2/,
# and drops from SERVERS the ones that do not.
start_servers() {
  local s
  for s in $SERVERS; do "start_$s"; done
  for s in $SERVERS; do
    if [ -z "${ADDR[$s]:-}" ] || ! wait_http "http://${ADDR[$s]}/v2/"; then
      fail "$s: did not answer 200 on /v2/ within 10 s (logs/$s.log); dropped"
      SERVERS=${SERVERS//$s/}
    else
      log "$s listening on ${ADDR[$s]} (pid ${PID[$s]})${ADMIN[$s]:+, admin ${ADMIN[$s]}}"
    fi
  done
}
