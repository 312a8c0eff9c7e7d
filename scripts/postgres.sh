#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for Wharf's tests, built from Debian's
# binaries (the `postgresql` package; scripts/install-deps.sh installs it).
#
#   bash scripts/postgres.sh start DIR PORT   # init if needed, start, print the URL
#   bash scripts/postgres.sh stop DIR         # fast shutdown (no error if not running)
#   bash scripts/postgres.sh url DIR          # print the URL of the cluster in DIR
#
# The cluster lives entirely in DIR (data, log, unix socket), listens on
# 127.0.0.1:PORT only, trusts every local connection (loopback and socket:
# it is for tests, never for data that matters) and has a superuser `wharf`
# and a database `wharf`. `start` is idempotent: a cluster already running
# in DIR is left alone. Every wait is bounded (30 s).
#
# initdb refuses to run as root, so as root the binaries run as the
# `postgres` system user (created by the Debian package) and DIR is handed
# to it; DIR's parents must then be traversable by that user (mktemp -d
# under /tmp is).
set -euo pipefail

usage() {
  echo "usage: $0 start DIR PORT | stop DIR | url DIR" >&2
  exit 2
}

# The newest installed PostgreSQL's bin directory.
pg_bin() {
  local bin
  bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
    sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "postgres.sh: no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)" >&2
    exit 1
  fi
  echo "$bin"
}

# Runs a PostgreSQL binary as a user it accepts.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

url_of() {
  local dir=$1
  if [ ! -f "$dir/port" ]; then
    echo "postgres.sh: no cluster in $dir (run start first)" >&2
    exit 1
  fi
  echo "postgres://wharf@127.0.0.1:$(cat "$dir/port")/wharf"
}

is_running() {
  local bin=$1 dir=$2
  [ -f "$dir/data/PG_VERSION" ] && as_pg "$bin/pg_ctl" status -D "$dir/data" >/dev/null 2>&1
}

start() {
  local dir=$1 port=$2 bin
  case "$port" in '' | *[!0-9]*) usage ;; esac
  bin=$(pg_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
  fi

  if is_running "$bin" "$dir"; then
    if [ "$(cat "$dir/port" 2>/dev/null)" != "$port" ]; then
      echo "postgres.sh: cluster in $dir already runs on port $(cat "$dir/port" 2>/dev/null)" >&2
      exit 1
    fi
    url_of "$dir"
    return
  fi

  if [ ! -f "$dir/data/PG_VERSION" ]; then
    rm -rf "$dir/data"
    as_pg "$bin/initdb" -D "$dir/data" -U wharf --auth=trust --encoding=UTF8 --no-locale \
      --no-instructions >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    # Trust, but only over the socket in DIR and loopback; except the role
    # `wharf_password_check`, which must give its password over TCP (the
    # tests of a wrong password at start create it).
    as_pg tee "$dir/data/pg_hba.conf" >/dev/null <<'EOF'
local all all                                   trust
host  all wharf_password_check 127.0.0.1/32     scram-sha-256
host  all all                  127.0.0.1/32     trust
EOF
    echo "include_if_exists = 'wharf.conf'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
  fi

  # Rewritten on every start, so the same DIR can come back on another port.
  as_pg tee "$dir/data/wharf.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 100
EOF
  echo "$port" | as_pg tee "$dir/port" >/dev/null

  if ! as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 start >/dev/null; then
    echo "postgres.sh: server did not start; its log:" >&2
    tail -n 30 "$dir/postgres.log" >&2 || true
    exit 1
  fi

  # The `wharf` database (the role is the bootstrap superuser from initdb).
  local exists
  exists=$(PGCONNECT_TIMEOUT=10 as_pg "$bin/psql" -h "$dir" -p "$port" -U wharf -d postgres \
    -Atc "SELECT 1 FROM pg_database WHERE datname = 'wharf'")
  if [ "$exists" != 1 ]; then
    PGCONNECT_TIMEOUT=10 as_pg "$bin/createdb" -h "$dir" -p "$port" -U wharf wharf
  fi
  url_of "$dir"
}

stop() {
  local dir=$1 bin
  bin=$(pg_bin)
  if is_running "$bin" "$dir"; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
  fi
}

case "${1:-}" in
  start)
    [ $# -eq 3 ] || usage
    start "$2" "$3"
    ;;
  stop)
    [ $# -eq 2 ] || usage
    stop "$2"
    ;;
  url)
    [ $# -eq 2 ] || usage
    url_of "$2"
    ;;
  *) usage ;;
esac
