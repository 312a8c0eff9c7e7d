# Shared by the shell test runners (tests/e2e/run.sh, tests/cluster/run.sh):
# per-case reporting into $LOGS, the one closing line `$SUITE: N passed, M
# failed`, and bounded process stopping. The runner sets SUITE, LOGS, TMP,
# PASSED, FAILED and FAILED_NAMES before sourcing this file.

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
