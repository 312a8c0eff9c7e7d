#!/usr/bin/env bash
# A throwaway single-node Garage (S3-compatible object store) for Wharf's
# tests; scripts/install-garage.sh installs the binary.
#
#   bash scripts/garage.sh start DIR PORT_BASE   # configure if needed, start, set up
#   bash scripts/garage.sh stop DIR              # stop what start started (no error if not running)
#   bash scripts/garage.sh env DIR               # print the shell exports for the tests
#
# Everything lives in DIR: garage.toml (with a generated rpc_secret), the
# metadata (sqlite) and data directories, the log, the pid file and `env`.
# It listens on 127.0.0.1 only: the S3 API on PORT_BASE, RPC on
# PORT_BASE+1, the admin API on PORT_BASE+3. `start` assigns and applies a
# one-node layout (replication factor 1), creates the access key
# `wharf-test` and the bucket `wharf` (read, write and owner for the key)
# and writes DIR/env:
#
#   export WHARF_TEST_S3_ENDPOINT=http://127.0.0.1:PORT_BASE
#   export WHARF_TEST_S3_BUCKET=wharf
#   export WHARF_TEST_S3_REGION=garage
#   export WHARF_TEST_S3_ACCESS_KEY_ID=GK...
#   export WHARF_TEST_S3_SECRET_ACCESS_KEY=...
#
# `start` is idempotent (a node already running in DIR is only checked and
# set up), every wait is bounded (30 s), and `stop` signals only the process
# recorded in DIR/pid, after checking that it is this DIR's Garage.
#
# Both fsync settings are on: an acknowledged PUT is on disk, as the blob
# store's contract (design invariant 6) requires of a real deployment.
set -euo pipefail

WAIT_SECONDS=30

usage() {
  echo "usage: $0 start DIR PORT_BASE | stop DIR | env DIR" >&2
  exit 2
}

garage_bin() {
  local candidate
  for candidate in "$(command -v garage 2>/dev/null || true)" \
    "${CARGO_HOME:-$HOME/.cargo}/bin/garage" /root/.cargo/bin/garage; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return
    fi
  done
  echo "garage.sh: no garage binary (run scripts/install-garage.sh)" >&2
  exit 1
}

# The pid in DIR/pid, when that process is alive and is DIR's Garage.
running_pid() {
  local dir=$1 pid
  [ -f "$dir/pid" ] || return 1
  pid=$(cat "$dir/pid")
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$dir/garage.toml"* ]] || return 1
  echo "$pid"
}

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

write_config() {
  local dir=$1 port=$2
  local old_umask
  old_umask=$(umask)
  umask 077
  cat >"$dir/garage.toml" <<EOF
# Written by scripts/garage.sh: a one-node test cluster on 127.0.0.1.
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
metadata_fsync = true
data_fsync = true
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$((port + 1))"
rpc_public_addr = "127.0.0.1:$((port + 1))"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((port + 3))"
admin_token = "$(random_hex 32)"
metrics_token = "$(random_hex 32)"
EOF
  umask "$old_umask"
  echo "$port" >"$dir/port"
}

# Waits (bounded) until `what` succeeds; fails with the log's tail if not,
# or at once if the server died.
wait_for() {
  local dir=$1 label=$2
  shift 2
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if ! running_pid "$dir" >/dev/null; then
      echo "garage.sh: garage exited while waiting for $label; log tail:" >&2
      tail -n 30 "$dir/garage.log" >&2 || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "garage.sh: timed out after ${WAIT_SECONDS}s waiting for $label; log tail:" >&2
      tail -n 30 "$dir/garage.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

start() {
  local dir=$1 port=$2 bin
  case "$port" in '' | *[!0-9]*) usage ;; esac
  bin=$(garage_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local cfg="$dir/garage.toml"
  g() { "$bin" -c "$cfg" "$@"; }

  if [ -f "$cfg" ] && [ "$(cat "$dir/port" 2>/dev/null)" != "$port" ]; then
    echo "garage.sh: $dir is configured for port base $(cat "$dir/port" 2>/dev/null), not $port" >&2
    exit 1
  fi
  [ -f "$cfg" ] || write_config "$dir" "$port"
  mkdir -p "$dir/meta" "$dir/data"

  if running_pid "$dir" >/dev/null; then
    echo "garage.sh: already running in $dir (pid $(running_pid "$dir"))"
  else
    # nohup: it outlives this script; stop() ends it by its pid.
    nohup "$bin" -c "$cfg" server </dev/null >>"$dir/garage.log" 2>&1 &
    echo $! >"$dir/pid"
    echo "garage.sh: started $("$bin" --version 2>/dev/null | head -n 1) in $dir (pid $!)"
  fi
  wait_for "$dir" "the RPC port" g status

  # A one-node layout, once: version 0 means no layout was applied yet.
  local layout
  layout=$(g layout show 2>&1)
  if grep -Eq 'layout version: 0$|No nodes currently have a role' <<<"$layout"; then
    local node_id
    node_id=$(g node id -q | cut -d@ -f1)
    g layout assign -z dc1 -c 1G "$node_id" >/dev/null
    g layout apply --version 1 >/dev/null
  fi
  wait_for "$dir" "the admin health check" curl -fsS --max-time 2 "http://127.0.0.1:$((port + 3))/health"

  if ! g key info wharf-test --key-id >/dev/null 2>&1; then
    g key create wharf-test >/dev/null
  fi
  if ! g bucket info wharf >/dev/null 2>&1; then
    g bucket create wharf >/dev/null
  fi
  g bucket allow --read --write --owner wharf --key wharf-test >/dev/null

  local key_id secret
  key_id=$(g key info wharf-test --key-id)
  secret=$(g key info wharf-test --secret-key)
  (
    umask 077
    cat >"$dir/env" <<EOF
export WHARF_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export WHARF_TEST_S3_BUCKET=wharf
export WHARF_TEST_S3_REGION=garage
export WHARF_TEST_S3_ACCESS_KEY_ID=$key_id
export WHARF_TEST_S3_SECRET_ACCESS_KEY=$secret
EOF
  )
  # The S3 port answers (any HTTP status: an unsigned request is refused).
  wait_for "$dir" "the S3 port" curl -sS --max-time 2 -o /dev/null "http://127.0.0.1:$port/"
  echo "garage.sh: S3 API on http://127.0.0.1:$port, bucket wharf; credentials in $dir/env"
}

stop() {
  local dir=$1 pid
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  if ! pid=$(running_pid "$dir"); then
    rm -f "$dir/pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + WAIT_SECONDS))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "garage.sh: pid $pid still running after ${WAIT_SECONDS}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$dir/pid"
  echo "garage.sh: stopped pid $pid ($dir)"
}

env_of() {
  local dir=$1
  if [ ! -f "$dir/env" ]; then
    echo "garage.sh: no $dir/env (run start first)" >&2
    exit 1
  fi
  cat "$dir/env"
}

case "${1:-}" in
  start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  env) [ $# -eq 2 ] || usage; env_of "$2" ;;
  *) usage ;;
esac
