# Shared by the shell test runners (tests/e2e/run.sh, tests/cluster/run.sh):
# per-case reporting into $LOGS, the one closing line `$SUITE: N passed, M
# failed`, bounded process stopping, and a dockerd of the run's own. The
# runner sets SUITE, LOGS, TMP, PASSED, FAILED, FAILED_NAMES and DOCKERD_PID
# before sourcing this file, and defines `need`.

# ---------------------------------------------------------------- reporting

# run_case NAME FUNCTION [ARGS...]: runs FUNCTION with its output in
# $LOGS/NAME.log; PASS if it returns 0, else FAIL with the last line it
# printed as the reason (and the log's tail, indented, for context).
run_case() {
  local name=$1
  shift
  local log=$LOGS/$name.log t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "$name $((SECONDS - t0))s pass" >>"$LOGS/timings"
    echo "PASS $name"
    return 0
  fi
  FAILED=$((FAILED + 1))
  FAILED_NAMES+=("$name")
  echo "$name $((SECONDS - t0))s fail" >>"$LOGS/timings"
  local reason
  reason=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | cut -c1-300)
  echo "FAIL $name (${reason:-no output})"
  tail -n 15 "$log" | sed 's/^/    | /'
  return 1
}

# fail_case NAME REASON: a case that could not run at all.
fail_case() {
  FAILED=$((FAILED + 1))
  FAILED_NAMES+=("$1")
  echo "FAIL $1 ($2)"
}

skip_note() { echo "SKIP $1 ($2)"; }

# die MESSAGE: the reason a case fails (its last line of output).
die() {
  echo "$*"
  return 1
}

summary() {
  echo
  if [ "$FAILED" -gt 0 ]; then
    echo "failed: ${FAILED_NAMES[*]}"
    echo "logs kept in $TMP"
  fi
  echo "took ${SECONDS}s (per case: $LOGS/timings)"
  echo "$SUITE: $PASSED passed, $FAILED failed"
}

# ---------------------------------------------------------------- cleanup

stop_pid() { # stop_pid PID SECONDS: TERM, bounded wait, then KILL
  local pid=$1 secs=$2 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- docker

# A dockerd of the run's own (Debian's docker.io): vfs storage, no
# networking of its own, data and socket under $TMP. `dk` is its client.
DOCKER_SOCK=$TMP/docker.sock
DOCKER_CLI=
dk() { timeout 180 "$DOCKER_CLI" -H "unix://$DOCKER_SOCK" "$@"; }

stop_dockerd() {
  [ -n "$DOCKERD_PID" ] || return 0
  stop_pid "$DOCKERD_PID" 20
  DOCKERD_PID=
}

case_docker_daemon() {
  need dockerd || return 1
  # Prefer the client shipped with this dockerd (same API version).
  local dd
  dd=$(command -v dockerd)
  if [ -x "$(dirname "$dd")/docker" ]; then DOCKER_CLI=$(dirname "$dd")/docker; fi
  [ -x "/usr/bin/docker" ] && [ -z "$DOCKER_CLI" ] && DOCKER_CLI=/usr/bin/docker
  [ -n "$DOCKER_CLI" ] || DOCKER_CLI=$(command -v docker) || die "no docker client" || return 1
  echo '{}' >"$TMP/daemon.json"
  mkdir -p "$TMP/docker-data" "$TMP/docker-exec"
  dockerd --config-file "$TMP/daemon.json" --storage-driver vfs --iptables=false --ip6tables=false \
    --ip-masq=false --ip-forward=false --bridge=none --userland-proxy=false \
    --data-root "$TMP/docker-data" --exec-root "$TMP/docker-exec" --pidfile "$TMP/docker.pid" \
    -H "unix://$DOCKER_SOCK" >"$LOGS/dockerd.out" 2>&1 3>&- 4>&- &
  DOCKERD_PID=$!
  local i
  for ((i = 0; i < 600; i++)); do # 60s
    if [ -S "$DOCKER_SOCK" ] && timeout 5 "$DOCKER_CLI" -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1; then
      dk version
      return 0
    fi
    if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
      DOCKERD_PID=
      tail -n 20 "$LOGS/dockerd.out"
      die "dockerd exited: $(grep -iE 'level=(fatal|error)|failed' "$LOGS/dockerd.out" | tail -n 1 | cut -c1-200)"
      return 1
    fi
    sleep 0.1
  done
  tail -n 20 "$LOGS/dockerd.out"
  die "dockerd did not answer on $DOCKER_SOCK within 60s"
}
