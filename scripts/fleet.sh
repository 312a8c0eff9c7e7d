#!/usr/bin/env bash
# A Wharf fleet on loopback, for tests and for trying it by hand: several
# cells, each a full cluster of its own (PostgreSQL, Garage, N `wharf serve`
# nodes: scripts/cluster.sh without its HAProxy), one ROUTER HAProxy in front
# that sends each tenant's requests to its home cell, and a PostgreSQL for the
# fleet service (`wharf fleet serve`, started when asked for).
#
#   bash scripts/fleet.sh start DIR        # start what is not running yet, wait until all is up
#   bash scripts/fleet.sh stop DIR         # stop everything start started (bounded, then KILL)
#   bash scripts/fleet.sh status DIR       # what is up; exit status 0 only if everything is
#
#   route DIR TENANT CELL [HOSTNAME]       # TENANT's home is CELL (`1` or `cell_1`), and so is
#                                          # HOSTNAME's; also moves the hostnames routed with
#                                          # TENANT before. Map files and live router, confirmed.
#                                          # Refused while the fleet service runs (it owns the maps)
#   route-user DIR USER CELL               # logins of USER (token requests without a scope)
#   routes DIR                             # print the maps; says whether the router agrees
#   cell-env DIR CELL                      # print the path of CELL's cluster.env
#   stop-cell DIR CELL | start-cell DIR CELL
#   start-node|stop-node|kill-node|restart-node DIR CELL N   # cluster.sh's, with the fleet's node flags
#   restart-router DIR                     # stop and start the router (maps reloaded from files)
#   start-service DIR                      # start `wharf fleet serve`, register the cells, adopt the routes
#   stop-service DIR | kill-service DIR    # SIGTERM (bounded, then KILL) | SIGKILL
#
# Cells are numbered 1, 2, ...: cell N's router backend is `cell_N` (what the
# fleet service writes into the maps), its servers `cNn1`, `cNn2`, ...; a CELL
# argument is `N` or `cell_N` (the letters a, b, ... are accepted for 1, 2, ...).
#
# Environment (read by the first `start`; remembered in DIR/ports, so later
# commands on the same DIR use the same values). The defaults clash neither
# with scripts/cluster.sh's (5080, 15480, 13980..13983), the test command's
# (15432, 13900..13903), nor those of scripts/bench/ (scaleout: 15580,
# 14080.., 18180; gc-race: 15680, 14180.., 18280):
#   WHARF_BIN                    the wharf binary [target/release/wharf]
#   WHARF_FLEET_CELLS            how many cells, numbered 1, 2, 3, ... (1..26) [2]
#   WHARF_FLEET_NODES            wharf nodes per cell [2]
#   WHARF_FLEET_PORT             the router's port on 127.0.0.1 [5380]
#   WHARF_FLEET_PG_PORT          the fleet service's PostgreSQL [15780]
#   WHARF_FLEET_CELL_PG_PORT     cell 1's PostgreSQL; cell N's is this + N - 1 [15781]
#   WHARF_FLEET_GARAGE_PORT      cell N's Garage ports: this + 10 (N - 1), +1 and +3 too [14280: 1 14280, 2 14290]
#   WHARF_FLEET_SERVICE_PORT     the fleet service's --listen port [5381]
#   WHARF_FLEET_SERVICE=1        `start` starts `wharf fleet serve` too (start-service always does) [0]
#   WHARF_FLEET_MOVE_GRACE       the service's --move-grace-secs [10]
#   WHARF_FLEET_SERVICE_ARGS     extra `wharf fleet serve` arguments (word-split), read at
#                                every start-service, not remembered []
#   Each cell's capacity as registered with the fleet service (`cells add`), generous so
#   that a loopback fleet never crosses a threshold (and the service never moves a tenant):
#   WHARF_FLEET_CAP_CONNECTIONS  --connections [10000]
#   WHARF_FLEET_CAP_STORAGE      --storage-bytes [1000000000000]
#   WHARF_FLEET_CAP_PULL_RPS     --pull-rps [10000]
#   WHARF_FLEET_CAP_PUSH_RPS     --push-rps [10000]
#   WHARF_FLEET_CAP_BANDWIDTH    --bandwidth, bytes/s [10000000000]
#   WHARF_FLEET_DEFAULT_CELL     the cell behind requests that name no tenant (`1`, `cell_1` or `a`) [1]
#   WHARF_FLEET_GRACE            each node's --shutdown-grace-secs [10]
#   WHARF_FLEET_NODE_ARGS        extra `wharf serve` arguments for every node (word-split)
#   WHARF_FLEET_USER             the operator's htpasswd user, created at the first start [fleet]
#
# Authentication is the same on every node of every cell, so that a token
# one cell issued is good on every other (a tenant moved between cells keeps
# its clients' tokens): `--auth token`, one signing key (`wharf keygen`) for
# all, `--token-realm http://ROUTER/auth/token`, the same service and issuer,
# one htpasswd file (the operator's user, with every right: no grants file),
# and one admin token (nodes get its sha256 line, the fleet service the token
# as --node-token-file). The fleet service has its own admin token pair.
# Tenant users and robots live in their cell's directory (docs/auth.md).
#
# Layout of DIR (no whitespace in its path: the node arguments are word-split):
#   fleet.env        shell assignments (rewritten on every change): FLEET_DIR,
#                    FLEET_ROUTER (host:port), FLEET_ROUTER_URL, FLEET_REALM,
#                    FLEET_ROUTER_PID, FLEET_ROUTER_SOCK, FLEET_HOSTS_MAP,
#                    FLEET_TENANTS_MAP, FLEET_USERS_MAP, FLEET_CELLS ("1 2"),
#                    FLEET_DEFAULT_CELL, FLEET_NODES, FLEET_DB_URL,
#                    FLEET_ADMIN_TOKEN_FILE (the token), FLEET_ADMIN_TOKEN_SHA256,
#                    FLEET_SIGNING_KEY (the private PEM), FLEET_KEYS_DIR,
#                    FLEET_HTPASSWD, FLEET_USER, FLEET_PASSWORD_FILE,
#                    FLEET_SERVICE_URL (its fixed address, up or not),
#                    FLEET_SERVICE_TOKEN_FILE (the plain token its clients send),
#                    FLEET_SERVICE_PID (empty when it is down), FLEET_SERVICE_LOG,
#                    and per cell N (1, 2, ...):
#                    FLEET_CELL_N_DIR, FLEET_CELL_N_ENV, FLEET_CELL_N_BACKEND (cell_N),
#                    FLEET_CELL_N_PG_URL, FLEET_CELL_N_S3_ENDPOINT,
#                    FLEET_CELL_N_NODES ("host:port ..."), FLEET_CELL_N_ADMINS
#                    ("http://host:port ..."), FLEET_CELL_N_NODEn_ADDR/_ADMIN/_PID
#   hosts.map        `<hostname> <backend>`  (Host header without port, lowercase)
#   tenants.map      `<tenant> <backend>`    (/v2/<tenant>/..., or the scope of /auth/token)
#   users.map        `<user> <backend>`      (the account of a login without scope)
#   hostnames        `<hostname> <tenant>`: which tenant `route` routed a hostname for
#   cells/N/         cell N: a scripts/cluster.sh DIR (cluster.env, nodeN/, nodeN.log, ...)
#   auth/            keys/ (signing key), htpasswd, <user>.password, admin-token, admin-token.sha256
#                    (the nodes' admin token), service/admin-token{,.sha256} (the fleet service's)
#   router/          haproxy.cfg haproxy.log haproxy.pid haproxy.sock (level admin), error pages
#   fleet/           postgres/ (the fleet database), service.pid service.log service.addr
#
# The router (HAProxy, in the foreground under nohup, never a system service):
# backends `cell_N` list cell N's nodes, checked on each node's admin /readyz
# every second; `fleet_default` lists the default cell's nodes and, as
# backups, every other cell's. A request goes to the backend found by the
# first that matches of:
#   1. hosts.map[Host header, port cut, lowercase]
#   2. tenants.map[first path segment after /v2/]
#   3. for /auth/token: tenants.map[tenant of the first `scope` parameter,
#      `repository:<tenant>/<repo>:<actions>`] (POST: of the form body)
#   4. for /auth/token: users.map[account] (POST: username), or
#      tenants.map[T] for a robot account `T+name`
#   5. fleet_default: `/v2/` itself, /v2/_catalog, unknown tenants (the
#      default cell answers 404 NAME_UNKNOWN or 401 itself), logins of
#      users no map names. Every cell has the same signing key and realm, so
#      any cell answers /v2/ and its challenge alike; the default cell is one
#      fixed cell (not all cells in turn) so answers that depend on the cell
#      (a catalog, a directory user's login) do not change from request to
#      request, and the other cells stand behind it when all its nodes are down.
# Every response carries `X-Wharf-Route: <backend>/<server>`. HAProxy's own
# 502/503/504 carry Retry-After and an OCI error body. The maps are loaded
# from the files at every router start; `route` rewrites a file atomically
# (temp + rename, under a lock) and then sets the entry live over the stats
# socket (`set map` or `add map`), and checks it with `show map`.
#
# The fleet service (`start-service`, or `start` with WHARF_FLEET_SERVICE=1):
# `wharf fleet serve` on 127.0.0.1:WHARF_FLEET_SERVICE_PORT with the fleet
# database, `--haproxy-maps DIR` and the router's socket: while it runs it
# owns hosts.map and tenants.map (it rewrites them from its database on
# every change and at each scrape round), so `route` is refused then; place
# and move tenants with `wharf fleet tenants` (--url FLEET_SERVICE_URL
# --token-file FLEET_SERVICE_TOKEN_FILE). users.map stays the script's. At
# its start the cells are registered (`wharf fleet cells add`, skipped for a
# cell it knows), and routes the maps hold that it does not know are adopted
# first: the service is started without routing, each such tenant placed
# pinned to the cell its route names (`tenants place T --pin N
# [--hostname H]`: the cell holds the tenant already, and placement finds
# it there with that hostname), then it is restarted with routing, so that
# a route is never dropped from the router.
#
# Every wait is bounded; stop signals only processes whose pid file this
# script (or cluster.sh) wrote and whose command line names DIR.
set -uo pipefail

FLEET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_SH=$FLEET_ROOT/scripts/cluster.sh
POSTGRES_SH=$FLEET_ROOT/scripts/postgres.sh
# cluster.sh's helpers (alive, stop_pid, http_status, haproxy_bin, wharf_bin):
# sourced, it only defines functions.
# shellcheck source=cluster.sh
source "$CLUSTER_SH"
WAIT_SECONDS=30

log() { echo "fleet.sh: $*" >&2; }
fail() {
  log "$*"
  return 1
}

# ---------------------------------------------------------------- state

# The settings: chosen by the first start, remembered in DIR/ports.
fleet_load() {
  if [ -f "$FLEET_DIR/ports" ]; then
    # shellcheck disable=SC1091
    source "$FLEET_DIR/ports"
  else
    ROUTER_PORT=${WHARF_FLEET_PORT:-5380}
    FLEET_PG_PORT=${WHARF_FLEET_PG_PORT:-15780}
    CELL_PG_PORT=${WHARF_FLEET_CELL_PG_PORT:-15781}
    GARAGE_BASE=${WHARF_FLEET_GARAGE_PORT:-14280}
    SERVICE_PORT=${WHARF_FLEET_SERVICE_PORT:-5381}
    SERVICE=${WHARF_FLEET_SERVICE:-0}
    CELLS=${WHARF_FLEET_CELLS:-2}
    NODES=${WHARF_FLEET_NODES:-2}
    DEFAULT_CELL=${WHARF_FLEET_DEFAULT_CELL:-1}
    GRACE=${WHARF_FLEET_GRACE:-10}
    FLEET_USER=${WHARF_FLEET_USER:-fleet}
  fi
  # Settings a DIR/ports of an older fleet.sh lacks.
  MOVE_GRACE=${MOVE_GRACE:-${WHARF_FLEET_MOVE_GRACE:-10}}
  CAP_CONNECTIONS=${CAP_CONNECTIONS:-${WHARF_FLEET_CAP_CONNECTIONS:-10000}}
  CAP_STORAGE=${CAP_STORAGE:-${WHARF_FLEET_CAP_STORAGE:-1000000000000}}
  CAP_PULL_RPS=${CAP_PULL_RPS:-${WHARF_FLEET_CAP_PULL_RPS:-10000}}
  CAP_PUSH_RPS=${CAP_PUSH_RPS:-${WHARF_FLEET_CAP_PUSH_RPS:-10000}}
  CAP_BANDWIDTH=${CAP_BANDWIDTH:-${WHARF_FLEET_CAP_BANDWIDTH:-10000000000}}
  local v
  for v in "$ROUTER_PORT" "$FLEET_PG_PORT" "$CELL_PG_PORT" "$GARAGE_BASE" "$SERVICE_PORT" "$CELLS" "$NODES" "$GRACE" \
    "$MOVE_GRACE" "$CAP_CONNECTIONS" "$CAP_STORAGE" "$CAP_PULL_RPS" "$CAP_PUSH_RPS" "$CAP_BANDWIDTH"; do
    case "$v" in '' | *[!0-9]*) fail "bad port, count, grace or capacity '$v' (DIR/ports or WHARF_FLEET_*)" || return 1 ;; esac
  done
  [ "$CELLS" -ge 1 ] && [ "$CELLS" -le 26 ] || fail "WHARF_FLEET_CELLS=$CELLS: 1 to 26 cells" || return 1
  [ "$NODES" -ge 1 ] || fail "WHARF_FLEET_NODES=$NODES: at least one node per cell" || return 1
  case "$SERVICE" in 0 | 1) ;; *) fail "WHARF_FLEET_SERVICE=$SERVICE: 0 or 1" || return 1 ;; esac
  [[ $FLEET_USER =~ ^[a-z][a-z0-9_-]*$ ]] || fail "WHARF_FLEET_USER='$FLEET_USER': lowercase letters, digits, - and _" || return 1
  CELL_IDS=$(seq 1 "$CELLS" | tr '\n' ' ')
  CELL_IDS=${CELL_IDS% }
  local dc
  dc=$(cell_id "$DEFAULT_CELL") || fail "default cell '$DEFAULT_CELL' is not one of: $CELL_IDS" || return 1
  DEFAULT_CELL=$dc
  AUTH=$FLEET_DIR/auth
  ROUTER=$FLEET_DIR/router
  HOSTS_MAP=$FLEET_DIR/hosts.map
  TENANTS_MAP=$FLEET_DIR/tenants.map
  USERS_MAP=$FLEET_DIR/users.map
  HOSTNAMES=$FLEET_DIR/hostnames
}

fleet_save() {
  {
    echo "ROUTER_PORT=$ROUTER_PORT"
    echo "FLEET_PG_PORT=$FLEET_PG_PORT"
    echo "CELL_PG_PORT=$CELL_PG_PORT"
    echo "GARAGE_BASE=$GARAGE_BASE"
    echo "SERVICE_PORT=$SERVICE_PORT"
    echo "SERVICE=$SERVICE"
    echo "CELLS=$CELLS"
    echo "NODES=$NODES"
    echo "DEFAULT_CELL=$DEFAULT_CELL"
    echo "GRACE=$GRACE"
    echo "FLEET_USER=$FLEET_USER"
    echo "MOVE_GRACE=$MOVE_GRACE"
    echo "CAP_CONNECTIONS=$CAP_CONNECTIONS"
    echo "CAP_STORAGE=$CAP_STORAGE"
    echo "CAP_PULL_RPS=$CAP_PULL_RPS"
    echo "CAP_PUSH_RPS=$CAP_PUSH_RPS"
    echo "CAP_BANDWIDTH=$CAP_BANDWIDTH"
  } >"$FLEET_DIR/ports.tmp" && mv "$FLEET_DIR/ports.tmp" "$FLEET_DIR/ports"
}

is_cell() { [[ " $CELL_IDS " == *" $1 "* ]]; }
# cell_id NAME: the cell's number for `N`, `cell_N` or a letter alias (a is
# 1, b is 2, ...: the cell names of older versions of this script).
cell_id() {
  local c=${1#cell_} letters=abcdefghijklmnopqrstuvwxyz rest
  if [[ $c =~ ^[a-z]$ ]]; then
    rest=${letters%%"$c"*}
    c=$((${#rest} + 1))
  fi
  [[ $c =~ ^[1-9][0-9]*$ ]] && is_cell "$c" || return 1
  echo "$c"
}
cell_index() { echo $(($1 - 1)); } # cell_index N: 0 for cell 1, 1 for cell 2, ...
cell_dir() { echo "$FLEET_DIR/cells/$1"; }

# cell_arg NAME: `1`, `cell_1` or `a` -> 1 (exits on an unknown cell).
cell_arg() {
  cell_id "$1" || fail "no cell '$1' (cells: $CELL_IDS; \`N\`, \`cell_N\`, or a letter for N)" || exit 2
}

# cell_nodes C: "K ADDR ADMIN" per node K of cell C that has run (address files).
cell_nodes() {
  local d n
  d=$(cell_dir "$1")
  for ((n = 1; n <= NODES; n++)); do
    [ -s "$d/node$n/addr" ] && [ -s "$d/node$n/admin" ] || continue
    echo "$n $(cat "$d/node$n/addr") $(cat "$d/node$n/admin")"
  done
}

cell_node_pid() { # cell_node_pid C K: the pid of cell C's node K, when it runs
  local d
  d=$(cell_dir "$1")
  alive "$d/node$2/pid" "$d/node$2/data"
}

router_pid() { alive "$ROUTER/haproxy.pid" "$ROUTER/haproxy.cfg"; }
service_pid() { alive "$FLEET_DIR/fleet/service.pid" "$FLEET_DIR/fleet/service.addr"; }

# The arguments every node of every cell gets (docs/auth.md, docs/admin.md).
node_args() {
  echo "--auth token --token-keys $AUTH/keys --token-signing-key $AUTH/keys" \
    "--token-realm http://127.0.0.1:$ROUTER_PORT/auth/token --token-service wharf --token-issuer wharf" \
    "--htpasswd $AUTH/htpasswd --admin-token-file $AUTH/admin-token.sha256 ${WHARF_FLEET_NODE_ARGS:-}"
}

# cluster CELL COMMAND [ARGS...]: scripts/cluster.sh for cell CELL, with its
# ports, no HAProxy of its own, and the fleet's node arguments.
cluster() {
  local c=$1 cmd=$2 i
  shift 2
  i=$(cell_index "$c") || return 1
  WHARF_CLUSTER_PORT=0 \
    WHARF_CLUSTER_PG_PORT=$((CELL_PG_PORT + i)) \
    WHARF_CLUSTER_GARAGE_PORT=$((GARAGE_BASE + 10 * i)) \
    WHARF_CLUSTER_NODES=$NODES \
    WHARF_CLUSTER_NO_LB=1 \
    WHARF_CLUSTER_GRACE=$GRACE \
    WHARF_CLUSTER_NODE_ARGS=$(node_args) \
    bash "$CLUSTER_SH" "$cmd" "$(cell_dir "$c")" "$@"
}

fleet_db_url() { bash "$POSTGRES_SH" url "$FLEET_DIR/fleet/postgres" 2>/dev/null; }

# fleet.env: everything a test or a person needs, as shell assignments.
write_fleet_env() {
  local f=$FLEET_DIR/fleet.env c C d n key
  key=$(find "$AUTH/keys" -maxdepth 1 -name '*.private.pem' 2>/dev/null | sort | tail -n 1)
  {
    echo "# Written by scripts/fleet.sh; rewritten whenever a piece (re)starts."
    echo "FLEET_DIR='$FLEET_DIR'"
    echo "FLEET_ROUTER=127.0.0.1:$ROUTER_PORT"
    echo "FLEET_ROUTER_URL=http://127.0.0.1:$ROUTER_PORT"
    echo "FLEET_REALM=http://127.0.0.1:$ROUTER_PORT/auth/token"
    echo "FLEET_ROUTER_PID=$(router_pid || true)"
    echo "FLEET_ROUTER_SOCK='$ROUTER/haproxy.sock'"
    echo "FLEET_HOSTS_MAP='$HOSTS_MAP'"
    echo "FLEET_TENANTS_MAP='$TENANTS_MAP'"
    echo "FLEET_USERS_MAP='$USERS_MAP'"
    echo "FLEET_CELLS='$CELL_IDS'"
    echo "FLEET_DEFAULT_CELL=$DEFAULT_CELL"
    echo "FLEET_NODES=$NODES"
    echo "FLEET_DB_URL='$(fleet_db_url)'"
    echo "FLEET_ADMIN_TOKEN_FILE='$AUTH/admin-token'"
    echo "FLEET_ADMIN_TOKEN_SHA256='$AUTH/admin-token.sha256'"
    echo "FLEET_SIGNING_KEY='$key'"
    echo "FLEET_KEYS_DIR='$AUTH/keys'"
    echo "FLEET_HTPASSWD='$AUTH/htpasswd'"
    echo "FLEET_USER=$FLEET_USER"
    echo "FLEET_PASSWORD_FILE='$AUTH/$FLEET_USER.password'"
    echo "FLEET_SERVICE_URL=http://127.0.0.1:$SERVICE_PORT"
    echo "FLEET_SERVICE_TOKEN_FILE='$AUTH/service/admin-token'"
    echo "FLEET_SERVICE_PID=$(service_pid || true)"
    echo "FLEET_SERVICE_LOG='$FLEET_DIR/fleet/service.log'"
    for c in $CELL_IDS; do
      C=$c
      d=$(cell_dir "$c")
      local addrs="" admins="" pg_url="" s3=""
      pg_url=$(bash "$POSTGRES_SH" url "$d/postgres" 2>/dev/null) || pg_url=
      [ -f "$d/ports" ] && s3=http://127.0.0.1:$(sed -n 's/^GARAGE_PORT=//p' "$d/ports")
      echo "FLEET_CELL_${C}_DIR='$d'"
      echo "FLEET_CELL_${C}_ENV='$d/cluster.env'"
      echo "FLEET_CELL_${C}_BACKEND=cell_$c"
      echo "FLEET_CELL_${C}_PG_URL='$pg_url'"
      echo "FLEET_CELL_${C}_S3_ENDPOINT=$s3"
      for ((n = 1; n <= NODES; n++)); do
        local a m
        a=$(cat "$d/node$n/addr" 2>/dev/null) m=$(cat "$d/node$n/admin" 2>/dev/null)
        echo "FLEET_CELL_${C}_NODE${n}_ADDR=$a"
        echo "FLEET_CELL_${C}_NODE${n}_ADMIN=$m"
        echo "FLEET_CELL_${C}_NODE${n}_PID=$(cell_node_pid "$c" "$n" || true)"
        [ -n "$a" ] && addrs="$addrs $a"
        [ -n "$m" ] && admins="$admins http://$m"
      done
      echo "FLEET_CELL_${C}_NODES='${addrs# }'"
      echo "FLEET_CELL_${C}_ADMINS='${admins# }'"
    done
  } >"$f.tmp" && mv "$f.tmp" "$f"
}

# ---------------------------------------------------------------- auth

# bcrypt_hash PASSWORD: a bcrypt hash, from htpasswd when installed, else
# from the C library's crypt(3) through perl (glibc's libxcrypt has bcrypt).
bcrypt_hash() {
  local h
  if command -v htpasswd >/dev/null 2>&1; then
    h=$(htpasswd -nbB -C 10 x "$1" | head -n 1 | cut -d: -f2-)
  else
    h=$(FLEET_PW=$1 perl -e '
      open(my $r, "<", "/dev/urandom") or die; read($r, my $b, 16) == 16 or die;
      my @c = ("." , "/", "A".."Z", "a".."z", "0".."9");
      my $salt = join("", map { $c[ord($_) % 64] } split(//, $b)) . "......";
      print crypt($ENV{FLEET_PW}, "\$2b\$10\$" . substr($salt, 0, 22));' 2>/dev/null)
  fi
  [[ $h == \$2[aby]\$* ]] || fail "cannot make a bcrypt hash (install apache2-utils for htpasswd)" || return 1
  echo "$h"
}

# setup_auth: once per DIR: the signing key, the admin token, the operator's user.
setup_auth() {
  local bin pw
  bin=$(wharf_bin) || return 1
  mkdir -p "$AUTH"
  chmod 700 "$AUTH"
  if ! ls "$AUTH/keys/"*.private.pem >/dev/null 2>&1; then
    "$bin" keygen "$AUTH/keys" >&2 || fail "wharf keygen $AUTH/keys failed" || return 1
  fi
  if [ ! -s "$AUTH/admin-token.sha256" ]; then
    rm -f "$AUTH/admin-token"
    "$bin" admin token --out "$AUTH" >&2 || fail "wharf admin token --out $AUTH failed" || return 1
  fi
  if [ ! -s "$AUTH/htpasswd" ] || [ ! -s "$AUTH/$FLEET_USER.password" ]; then
    pw=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    (umask 077 && echo "$pw" >"$AUTH/$FLEET_USER.password")
    local h
    h=$(bcrypt_hash "$pw") || return 1
    echo "$FLEET_USER:$h" >"$AUTH/htpasswd.tmp" && mv "$AUTH/htpasswd.tmp" "$AUTH/htpasswd"
    log "operator user '$FLEET_USER' (password in $AUTH/$FLEET_USER.password)"
  fi
}

# ---------------------------------------------------------------- maps

init_maps() {
  local m
  for m in "$HOSTS_MAP" "$TENANTS_MAP" "$USERS_MAP" "$HOSTNAMES"; do
    [ -f "$m" ] || : >"$m"
  done
}

# map_get FILE KEY: the value of KEY in FILE (the last line naming it).
map_get() {
  awk -v k="$2" '$1 == k { v = $2 } END { if (v == "") exit 1; print v }' "$1" 2>/dev/null
}

# map_put FILE KEY VALUE: FILE with KEY's line replaced (or added): written
# to a temp file next to it, then renamed over it (readers never see half).
map_put() {
  local f=$1 k=$2 v=$3
  awk -v k="$k" '$1 != k' "$f" >"$f.tmp.$$" &&
    echo "$k $v" >>"$f.tmp.$$" &&
    mv "$f.tmp.$$" "$f" || {
    rm -f "$f.tmp.$$"
    fail "could not rewrite $f"
  }
}

router_cmd() { # router_cmd COMMAND: one command on the router's stats socket
  [ -S "$ROUTER/haproxy.sock" ] || return 1
  echo "$1" | timeout 5 socat stdio "unix-connect:$ROUTER/haproxy.sock" 2>/dev/null
}

# live_map FILE: the router's current entries of FILE, as "key value" lines.
live_map() {
  router_cmd "show map $1" | awk 'NF >= 3 { print $2, $3 }'
}

# live_put FILE KEY VALUE: the running router's map FILE gets KEY -> VALUE
# (`set map` when it has the key, else `add map`), checked with `show map`.
live_put() {
  local f=$1 k=$2 v=$3 out got
  router_pid >/dev/null || {
    log "router not running: $(basename "$f") $k -> $v in the file only (loaded at its start)"
    return 0
  }
  if live_map "$f" | awk -v k="$k" '$1 == k { found = 1 } END { exit !found }'; then
    out=$(router_cmd "set map $f $k $v")
  else
    out=$(router_cmd "add map $f $k $v")
  fi || fail "router: no answer on $ROUTER/haproxy.sock" || return 1
  [ -z "$(tr -d '[:space:]' <<<"$out")" ] || fail "router refused '$k $v' in $(basename "$f"): $out" || return 1
  got=$(live_map "$f" | awk -v k="$k" '$1 == k { print $2 }' | sort -u)
  [ "$got" = "$v" ] || fail "router's $(basename "$f") has '$k' -> '${got//$'\n'/ }', not $v" || return 1
  log "router: $(basename "$f") $k -> $v (live)"
}

# with_lock COMMAND...: COMMAND under DIR/maps.lock (at most 10 s of waiting).
with_lock() {
  (
    flock -w 10 9 || fail "$FLEET_DIR/maps.lock is held by another route command" || exit 1
    "$@"
  ) 9>"$FLEET_DIR/maps.lock"
}

valid_tenant() { [[ $1 =~ ^[a-z0-9]+([._-][a-z0-9]+)*$ ]] || fail "bad tenant name '$1'"; }
valid_hostname() { [[ $1 =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || fail "bad hostname '$1' (lowercase, no port)"; }
valid_user() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._+@-]*$ ]] || fail "bad user name '$1'"; }

# route TENANT CELL [HOSTNAME]: files first (so a router started meanwhile
# loads the new route), then the live router.
do_route() {
  local t=$1 c=$2 h=${3:-} be=cell_$2 hosts=() x
  init_maps
  map_put "$TENANTS_MAP" "$t" "$be" || return 1
  [ -n "$h" ] && { map_put "$HOSTNAMES" "$h" "$t" || return 1; }
  # Every hostname routed for this tenant follows it.
  mapfile -t hosts < <(awk -v t="$t" '$2 == t { print $1 }' "$HOSTNAMES")
  for x in "${hosts[@]}"; do
    map_put "$HOSTS_MAP" "$x" "$be" || return 1
  done
  log "$t -> $be${hosts[*]:+ (hostnames: ${hosts[*]})} in $FLEET_DIR"
  live_put "$TENANTS_MAP" "$t" "$be" || return 1
  for x in "${hosts[@]}"; do
    live_put "$HOSTS_MAP" "$x" "$be" || return 1
  done
}

do_route_user() {
  local u=$1 be=cell_$2
  init_maps
  map_put "$USERS_MAP" "$u" "$be" || return 1
  log "user $u -> $be in $FLEET_DIR"
  live_put "$USERS_MAP" "$u" "$be"
}

# routes: the map files; with the router up, whether its maps agree.
show_routes() {
  local m rc=0 live file
  for m in "$HOSTS_MAP" "$TENANTS_MAP" "$USERS_MAP"; do
    echo "== $(basename "$m")"
    grep -v '^[[:space:]]*\(#\|$\)' "$m" 2>/dev/null
    if router_pid >/dev/null; then
      live=$(live_map "$m" | sort)
      file=$(grep -v '^[[:space:]]*\(#\|$\)' "$m" 2>/dev/null | awk '{ print $1, $2 }' | sort)
      if [ "$live" != "$file" ]; then
        echo "!! the router's $(basename "$m") differs from the file:"
        diff <(echo "$file") <(echo "$live") | sed 's/^/!!   /'
        rc=1
      fi
    fi
  done
  router_pid >/dev/null && [ "$rc" = 0 ] && echo "(the router's live maps match the files)"
  router_pid >/dev/null || echo "(router not running)"
  return $rc
}

# ---------------------------------------------------------------- router

write_router_cfg() {
  local f=$ROUTER/haproxy.cfg c n addr admin code text body
  mkdir -p "$ROUTER"
  for code in 502 503 504; do
    case $code in
      502) text="Bad Gateway" ;; 503) text="Service Unavailable" ;; 504) text="Gateway Timeout" ;;
    esac
    body="{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"fleet router: $code $text, retry\",\"detail\":null}]}"
    printf 'HTTP/1.1 %s %s\r\nContent-Type: application/json\r\nRetry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: %s\r\n\r\n%s' \
      "$code" "$text" "${#body}" "$body" >"$ROUTER/$code.http"
  done
  {
    cat <<EOF
# Written by scripts/fleet.sh; rewritten on every router start.
global
    log stdout format raw local0 info
    stats socket $ROUTER/haproxy.sock mode 600 level admin
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
    # Another node only when no connection could be made: nothing that
    # reached a node is replayed.
    retries 3
    retry-on conn-failure
    option redispatch 1
    errorfile 502 $ROUTER/502.http
    errorfile 503 $ROUTER/503.http
    errorfile 504 $ROUTER/504.http

frontend router
    bind 127.0.0.1:$ROUTER_PORT
    # What names a tenant (or a user).
    http-request set-var(txn.host) req.hdr(host),field(1,:),lower
    http-request set-var(txn.tenant) path,field(3,/) if { path_beg /v2/ }
    http-request wait-for-body time 2s at-least 4k if { path /auth/token } { method POST }
    http-request set-var(txn.scope) url_param(scope),url_dec if { path /auth/token } { method GET HEAD }
    http-request set-var(txn.scope) req.body_param(scope),url_dec(1) if { path /auth/token } { method POST }
    http-request set-var(txn.account) url_param(account),url_dec if { path /auth/token } { method GET HEAD }
    http-request set-var(txn.account) req.body_param(username),url_dec(1) if { path /auth/token } { method POST }
    # The backend: each later rule that finds its key in a map wins over
    # the earlier ones (a lookup that misses leaves the variable alone), so
    # they run from the weakest (account) to the strongest (Host).
    http-request set-var(txn.cell) var(txn.account),field(1,+),map($TENANTS_MAP) if { var(txn.account) -m sub + }
    http-request set-var(txn.cell) var(txn.account),map($USERS_MAP) if { var(txn.account) -m found }
    http-request set-var(txn.cell) var(txn.scope),field(2,:),field(1,/),map($TENANTS_MAP) if { var(txn.scope) -m beg repository: }
    http-request set-var(txn.cell) var(txn.tenant),map($TENANTS_MAP) if { var(txn.tenant) -m found }
    http-request set-var(txn.cell) var(txn.host),map($HOSTS_MAP) if { var(txn.host) -m found }
    use_backend %[var(txn.cell)] if { var(txn.cell) -m found }
    default_backend fleet_default
    http-response set-header X-Wharf-Route %[be_name]/%[srv_name]

EOF
    for c in $CELL_IDS fleet_default; do
      if [ "$c" = fleet_default ]; then
        echo "# Requests that name no tenant: the default cell, the others as backups."
        echo "backend fleet_default"
      else
        echo "backend cell_$c"
      fi
      cat <<EOF
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check inter 1s fastinter 500ms downinter 1s fall 2 rise 2 maxconn 1000
EOF
      local cc list
      if [ "$c" = fleet_default ]; then list="$DEFAULT_CELL $(tr ' ' '\n' <<<"$CELL_IDS" | grep -vx "$DEFAULT_CELL" | tr '\n' ' ')"; else list=$c; fi
      for cc in $list; do
        while read -r n addr admin; do
          [ -n "$n" ] || continue
          echo "    server c${cc}n$n $addr port ${admin##*:}$([ "$c" = fleet_default ] && [ "$cc" != "$DEFAULT_CELL" ] && echo " backup")"
        done < <(cell_nodes "$cc")
      done
      echo
    done
  } >"$f"
}

# router_state: "BACKEND SERVER STATUS" per server, from `show stat`.
router_state() {
  router_cmd "show stat" | awk -F, '
    NR == 1 { for (i = 1; i <= NF; i++) { h = $i; sub(/^# /, "", h); col[h] = i }; next }
    $2 != "BACKEND" && $2 != "FRONTEND" && NF > 2 { print $1, $2, $col["status"] }'
}

# wait_router_up: until every server whose node runs is UP (bounded).
wait_router_up() {
  local i c n want st ok
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    router_pid >/dev/null || {
      tail -n 20 "$ROUTER/haproxy.log" >&2
      fail "the router exited (log: $ROUTER/haproxy.log)"
      return 1
    }
    st=$(router_state)
    ok=1
    for c in $CELL_IDS; do
      for ((n = 1; n <= NODES; n++)); do
        cell_node_pid "$c" "$n" >/dev/null || continue
        want="cell_$c c${c}n$n UP"
        grep -qx "$want" <<<"$st" || ok=0
      done
    done
    [ "$ok" = 1 ] && [ -n "$st" ] && return 0
    sleep 0.1
  done
  fail "router: servers of running nodes not all UP within ${WAIT_SECONDS}s: $(echo $st)"
}

start_router() {
  local bin pid
  bin=$(haproxy_bin) || return 1
  command -v socat >/dev/null 2>&1 || fail "no socat (run scripts/install-deps.sh)" || return 1
  init_maps
  if pid=$(router_pid); then
    log "router already running (pid $pid, 127.0.0.1:$ROUTER_PORT)"
    local c
    for c in $CELL_IDS; do
      router_sync_cell "$c" || return 1
    done
  else
    write_router_cfg || return 1
    "$bin" -c -q -f "$ROUTER/haproxy.cfg" >&2 || fail "$ROUTER/haproxy.cfg does not validate" || return 1
    rm -f "$ROUTER/haproxy.sock"
    nohup "$bin" -db -f "$ROUTER/haproxy.cfg" </dev/null >>"$ROUTER/haproxy.log" 2>&1 &
    echo $! >"$ROUTER/haproxy.pid"
  fi
  wait_router_up || return 1
  log "router up: pid $(router_pid), http://127.0.0.1:$ROUTER_PORT, servers: $(router_state | awk '{ printf "%s/%s %s  ", $1, $2, $3 }')"
  write_fleet_env
}

stop_router() {
  local pid
  if pid=$(router_pid); then
    stop_pid "$pid" 10
    log "router stopped (pid $pid)"
  fi
  rm -f "$ROUTER/haproxy.sock"
}

# router_sync_cell C: points the router's servers of cell C at its nodes'
# current ports (a node restarted on taken ports has new ones), then waits
# until they are UP. No-op when the router does not run.
router_sync_cell() {
  local c=$1 n addr admin be
  router_pid >/dev/null || return 0
  while read -r n addr admin; do
    [ -n "$n" ] || continue
    for be in "cell_$c" fleet_default; do
      router_cmd "set server $be/c${c}n$n addr ${addr%:*} port ${addr##*:}" >/dev/null
      router_cmd "set server $be/c${c}n$n check-port ${admin##*:}" >/dev/null
    done
  done < <(cell_nodes "$c")
  wait_router_up
}

# ---------------------------------------------------------------- fleet service
#
# `wharf fleet serve` (crates/wharf/src/fleet_cli/serve.rs, docs/fleet.md):
# the fleet database, the router's map directory (the path haproxy.cfg names)
# and stats socket, its own admin token, the nodes' admin token for their
# /metrics and admin APIs. Cells are registered through its API afterwards.

service_url() { echo "http://127.0.0.1:$SERVICE_PORT"; }
service_token() { echo "$AUTH/service/admin-token"; }

# fleet_cli COMMAND...: `wharf fleet COMMAND ... --url --token-file`, bounded.
fleet_cli() {
  local bin sub=$1
  shift
  bin=$(wharf_bin) || return 1
  timeout 30 "$bin" fleet "$sub" --url "$(service_url)" --token-file "$(service_token)" "$@"
}

# service_token_setup: the fleet service's own admin token pair (once per DIR).
service_token_setup() {
  local bin
  [ -s "$AUTH/service/admin-token.sha256" ] && [ -s "$AUTH/service/admin-token" ] && return 0
  bin=$(wharf_bin) || return 1
  mkdir -p "$AUTH/service"
  chmod 700 "$AUTH/service"
  rm -f "$AUTH/service/admin-token" "$AUTH/service/admin-token.sha256"
  "$bin" admin token --out "$AUTH/service" >&2 || fail "wharf admin token --out $AUTH/service failed" || return 1
}

# launch_service ROUTING: starts `wharf fleet serve` in the background (no
# wait); with ROUTING=0 without --haproxy-maps/--haproxy-socket and without
# moves or automatic plans (for adopting routes).
launch_service() {
  local routing=$1 bin db pid args=()
  bin=$(wharf_bin) || return 1
  db=$(fleet_db_url) || fail "no fleet database" || return 1
  if [ "$routing" = 1 ]; then
    args=(--haproxy-maps "$FLEET_DIR" --haproxy-socket "$ROUTER/haproxy.sock")
  else
    args=(--no-moves --no-auto-apply)
  fi
  mkdir -p "$FLEET_DIR/fleet"
  rm -f "$FLEET_DIR/fleet/service.addr"
  echo "--- $(date -u +%FT%TZ) fleet.sh: starting the fleet service (routing=$routing)" >>"$FLEET_DIR/fleet/service.log"
  # shellcheck disable=SC2086 # WHARF_FLEET_SERVICE_ARGS is word-split on purpose
  nohup "$bin" fleet serve \
    --migrate \
    --database-url "$db" \
    --listen "127.0.0.1:$SERVICE_PORT" \
    --addr-file "$FLEET_DIR/fleet/service.addr" \
    --admin-token-file "$AUTH/service/admin-token.sha256" \
    --node-token-file "$AUTH/admin-token" \
    --scrape-interval 2 \
    --move-grace-secs "$MOVE_GRACE" \
    "${args[@]}" \
    ${WHARF_FLEET_SERVICE_ARGS:-} \
    </dev/null >>"$FLEET_DIR/fleet/service.log" 2>&1 &
  pid=$!
  echo "$pid" >"$FLEET_DIR/fleet/service.pid"
  wait_service_up "$pid"
}

# wait_service_up PID: until GET /healthz answers 200 (bounded).
wait_service_up() {
  local pid=$1 i
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || {
      tail -n 20 "$FLEET_DIR/fleet/service.log" >&2
      fail "the fleet service exited (log: $FLEET_DIR/fleet/service.log)"
      return 1
    }
    [ "$(http_status "$(service_url)/healthz")" = 200 ] && return 0
    sleep 0.1
  done
  fail "the fleet service's /healthz did not answer 200 within ${WAIT_SECONDS}s (log: $FLEET_DIR/fleet/service.log)"
}

# register_cells: `cells add` for every cell the service does not know.
register_cells() {
  local known c nodes
  known=$(fleet_cli cells list --json | jq -r '.cells[].id') ||
    fail "wharf fleet cells list failed (log: $FLEET_DIR/fleet/service.log)" || return 1
  for c in $CELL_IDS; do
    if grep -qx "$c" <<<"$known"; then
      log "fleet service: cell $c known already"
      continue
    fi
    mapfile -t nodes < <(cell_nodes "$c" | awk '{ print "--node"; print "http://" $3 }')
    [ "${#nodes[@]}" -gt 0 ] || fail "cell $c has no node addresses (start it first)" || return 1
    fleet_cli cells add --id "$c" --zone "$c" "${nodes[@]}" \
      --connections "$CAP_CONNECTIONS" --storage-bytes "$CAP_STORAGE" \
      --pull-rps "$CAP_PULL_RPS" --push-rps "$CAP_PUSH_RPS" --bandwidth "$CAP_BANDWIDTH" >&2 ||
      fail "wharf fleet cells add --id $c failed" || return 1
    log "fleet service: cell $c registered (zone $c, nodes ${nodes[*]})"
  done
}

# wait_cells_fresh: until every cell's figures are fresh (bounded); a
# warning, not a failure, when they are not.
wait_cells_fresh() {
  local i st
  for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
    st=$(fleet_cli cells list --json 2>/dev/null | jq -r '[.cells[] | "\(.id)=\(.usage)"] | join(" ")')
    [ -n "$st" ] && ! grep -qv '=fresh$' <<<"$(tr ' ' '\n' <<<"$st")" && return 0
    sleep 0.5
  done
  log "warning: not every cell is fresh after ${WAIT_SECONDS}s ($st): placements wait for it"
  return 1
}

# adopt_routes: tenants the map files route that the service does not know
# are placed, pinned to the cell their route names, with their hostname
# (the service keeps one per tenant). Needs the service running.
adopt_routes() {
  local known t be c h n=0 out home
  known=$(fleet_cli tenants list --json | jq -r '.tenants[] | "\(.tenant) \(.cell)"') ||
    fail "wharf fleet tenants list failed" || return 1
  while read -r t be; do
    if [ -z "$t" ] || [[ $t == \#* ]]; then continue; fi
    c=${be#cell_}
    home=$(awk -v t="$t" '$1 == t { print $2 }' <<<"$known")
    if [ -n "$home" ]; then
      [ "$home" = "$c" ] ||
        log "warning: tenants.map sends $t to $be, the fleet service to cell $home: the service's route wins"
      continue
    fi
    is_cell "$c" || {
      log "warning: tenants.map names $be for $t, no such cell: not adopted (the service will drop the route)"
      continue
    }
    [ "$n" = 0 ] && { wait_cells_fresh || true; }
    n=$((n + 1))
    h=$(awk -v t="$t" '$2 == t { h = $1 } END { print h }' "$HOSTNAMES" 2>/dev/null)
    [ "$(awk -v t="$t" '$2 == t' "$HOSTNAMES" 2>/dev/null | wc -l)" -le 1 ] ||
      log "warning: $t has several hostnames; the fleet service keeps one: $h"
    local i
    for ((i = 0; i < 10; i++)); do
      out=$(fleet_cli tenants place "$t" --pin "$c" ${h:+--hostname "$h"} --json 2>&1) && break
      sleep 1
    done
    if [ "$(jq -r '.cell' <<<"$out" 2>/dev/null)" = "$c" ]; then
      log "fleet service: adopted $t on cell $c${h:+ (hostname $h)}"
    else
      log "warning: could not adopt $t on cell $c: $out"
    fi
  done < <(grep -v '^[[:space:]]*\(#\|$\)' "$TENANTS_MAP" 2>/dev/null)
}

start_fleet_service() {
  local pid bin
  bin=$(wharf_bin) || return 1
  timeout 10 "$bin" fleet serve --help >/dev/null 2>&1 ||
    fail "$bin has no \`wharf fleet serve\`" || return 1
  command -v jq >/dev/null 2>&1 || fail "no jq (run scripts/install-deps.sh)" || return 1
  service_token_setup || return 1
  fleet_db_up >/dev/null || start_fleet_db || return 1
  init_maps
  if pid=$(service_pid); then
    log "fleet service already running (pid $pid, $(service_url))"
    register_cells || return 1
    write_fleet_env
    return 0
  fi
  # Routes the maps hold are adopted before the service manages them:
  # started with routing at once, it would drop those it does not know.
  if grep -q '^[[:space:]]*[^#[:space:]]' "$TENANTS_MAP" 2>/dev/null; then
    launch_service 0 || return 1
    register_cells && adopt_routes
    local rc=$?
    stop_fleet_service
    [ "$rc" = 0 ] || return 1
  fi
  launch_service 1 || return 1
  register_cells || return 1
  wait_cells_fresh || true
  write_fleet_env
  log "fleet service up: pid $(service_pid), $(service_url) (log: $FLEET_DIR/fleet/service.log)"
}

# stop_fleet_service [KILL]: SIGTERM, bounded (15 s), then SIGKILL; with
# KILL, SIGKILL at once (a crash).
stop_fleet_service() {
  local pid
  pid=$(service_pid) || return 0
  if [ "${1:-}" = KILL ]; then
    kill -KILL "$pid" 2>/dev/null
    local i
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    log "fleet service killed (SIGKILL, pid $pid)"
  else
    stop_pid "$pid" 15
    log "fleet service stopped (pid $pid)"
  fi
}

# ---------------------------------------------------------------- fleet database

start_fleet_db() {
  local url
  url=$(bash "$POSTGRES_SH" start "$FLEET_DIR/fleet/postgres" "$FLEET_PG_PORT") ||
    fail "the fleet's PostgreSQL did not start (see $FLEET_DIR/fleet/postgres/postgres.log)" || return 1
  log "fleet database up: $url"
}

stop_fleet_db() {
  [ -f "$FLEET_DIR/fleet/postgres/data/postmaster.pid" ] || return 0
  bash "$POSTGRES_SH" stop "$FLEET_DIR/fleet/postgres" || fail "the fleet's PostgreSQL did not stop" || return 1
  log "fleet database stopped"
}

fleet_db_up() {
  local pid
  [ -f "$FLEET_DIR/fleet/postgres/data/postmaster.pid" ] &&
    pid=$(head -n 1 "$FLEET_DIR/fleet/postgres/data/postmaster.pid" 2>/dev/null) &&
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# ---------------------------------------------------------------- commands

start_cell() {
  local c=$1
  cluster "$c" start || fail "cell $c did not start (see $(cell_dir "$c"))" || return 1
  router_sync_cell "$c" || return 1
  write_fleet_env
  log "cell $c up"
}

stop_cell() {
  local c=$1
  [ -d "$(cell_dir "$c")" ] || return 0
  cluster "$c" stop
  write_fleet_env
}

fleet_start() {
  local c
  mkdir -p "$FLEET_DIR/cells" "$FLEET_DIR/fleet"
  fleet_load || return 1
  fleet_save
  # PostgreSQL runs as the `postgres` user when we are root: it must reach
  # DIR/fleet/postgres and DIR/cells/N/postgres.
  if [ "$(id -u)" = 0 ]; then
    chmod o+x "$FLEET_DIR" "$FLEET_DIR/cells" "$FLEET_DIR/fleet"
    runuser -u postgres -- test -x "$FLEET_DIR/cells" 2>/dev/null ||
      fail "the postgres user cannot reach $FLEET_DIR: make its parent directories traversable (chmod o+x)" ||
      return 1
  fi
  wharf_bin >/dev/null || return 1
  "$(wharf_bin)" serve --help 2>/dev/null | grep -q -- '--token-signing-key' ||
    fail "$(wharf_bin) has no --token-signing-key: the cells could not share tokens" || return 1
  haproxy_bin >/dev/null || return 1
  setup_auth || return 1
  init_maps
  start_fleet_db || return 1
  for c in $CELL_IDS; do
    cluster "$c" start || fail "cell $c did not start (see $(cell_dir "$c"))" || return 1
  done
  write_fleet_env
  start_router || return 1
  if [ "$SERVICE" = 1 ]; then
    start_fleet_service || return 1
  fi
  write_fleet_env
  log "fleet up: router http://127.0.0.1:$ROUTER_PORT, cells $CELL_IDS (state in $FLEET_DIR/fleet.env)"
}

fleet_stop() {
  local c pids=() rc=0
  [ -f "$FLEET_DIR/ports" ] || return 0
  fleet_load || return 1
  stop_fleet_service
  stop_router
  # The cells stop side by side; each stop is bounded (cluster.sh).
  for c in $CELL_IDS; do
    if [ -d "$(cell_dir "$c")" ]; then
      cluster "$c" stop &
      pids+=($!)
    fi
  done
  for c in "${pids[@]}"; do
    wait "$c" || rc=1
  done
  stop_fleet_db || rc=1
  write_fleet_env
  return $rc
}

fleet_status() {
  local ok=0 pid c
  fleet_load || return 1
  if pid=$(router_pid); then
    echo "router     up    pid $pid  http://127.0.0.1:$ROUTER_PORT"
    router_state | sed 's/^/  router /'
  else
    echo "router     down"
    ok=1
  fi
  if pid=$(fleet_db_up); then
    echo "fleet-db   up    pid $pid  $(fleet_db_url)"
  else
    echo "fleet-db   down"
    ok=1
  fi
  if pid=$(service_pid); then
    echo "fleet-svc  up    pid $pid  $(service_url)  healthz $(http_status "$(service_url)/healthz")"
  elif [ "$SERVICE" != 1 ]; then
    echo "fleet-svc  off   (start-service, or WHARF_FLEET_SERVICE=1 at the first start, starts it)"
  else
    echo "fleet-svc  down"
    ok=1
  fi
  for c in $CELL_IDS; do
    echo "cell $c:"
    cluster "$c" status 2>&1 | sed 's/^/  /'
    [ "${PIPESTATUS[0]}" = 0 ] || ok=1
  done
  return $ok
}

usage() {
  awk 'NR > 1 && /^# Environment/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

set_fleet_dir() {
  [ -n "${1:-}" ] || usage
  case "$1" in *[[:space:]]*) fail "DIR '$1' holds whitespace (node arguments are word-split)" || exit 2 ;; esac
  mkdir -p "$1" || exit 1
  FLEET_DIR=$(cd "$1" && pwd)
}

need_started() {
  [ -f "$FLEET_DIR/ports" ] || fail "no fleet in $FLEET_DIR (run start first)" || exit 1
  fleet_load || exit 1
}

# Sourced: functions only.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  return 0
fi

# Started processes must not inherit a caller's extra descriptors.
exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-

cmd=${1:-}
[ $# -ge 2 ] || usage
set_fleet_dir "$2"
case "$cmd" in
  start) [ $# -eq 2 ] || usage; fleet_start ;;
  stop) [ $# -eq 2 ] || usage; fleet_stop ;;
  status) [ $# -eq 2 ] || usage; fleet_status ;;
  route)
    [ $# -eq 4 ] || [ $# -eq 5 ] || usage
    need_started
    valid_tenant "$3" || exit 2
    c=$(cell_arg "$4") || exit 2
    h=${5:-}
    h=$(tr '[:upper:]' '[:lower:]' <<<"$h")
    [ -z "$h" ] || valid_hostname "$h" || exit 2
    if pid=$(service_pid); then
      fail "the fleet service runs (pid $pid) and owns tenants.map and hosts.map: place or move $3 with \`wharf fleet tenants\` (--url $(service_url)), or stop-service first" || exit 1
    fi
    with_lock do_route "$3" "$c" "$h"
    ;;
  route-user)
    [ $# -eq 4 ] || usage
    need_started
    valid_user "$3" || exit 2
    c=$(cell_arg "$4") || exit 2
    with_lock do_route_user "$3" "$c"
    ;;
  routes) [ $# -eq 2 ] || usage; need_started; show_routes ;;
  cell-env)
    [ $# -eq 3 ] || usage
    need_started
    c=$(cell_arg "$3") || exit 2
    [ -f "$(cell_dir "$c")/cluster.env" ] || fail "cell $c has no cluster.env yet (start it)" || exit 1
    echo "$(cell_dir "$c")/cluster.env"
    ;;
  stop-cell | start-cell)
    [ $# -eq 3 ] || usage
    need_started
    c=$(cell_arg "$3") || exit 2
    if [ "$cmd" = stop-cell ]; then stop_cell "$c"; else start_cell "$c"; fi
    ;;
  start-node | stop-node | kill-node | restart-node)
    [ $# -eq 4 ] || usage
    need_started
    c=$(cell_arg "$3") || exit 2
    case "$4" in '' | *[!0-9]*) usage ;; esac
    [ "$4" -ge 1 ] && [ "$4" -le "$NODES" ] || fail "no node $4 (cells have $NODES)" || exit 2
    # Through the fleet's wrapper: a node started here gets the fleet's
    # flags (cluster.sh alone would start it without them).
    cluster "$c" "$cmd" "$4" || exit 1
    case "$cmd" in start-node | restart-node) router_sync_cell "$c" || exit 1 ;; esac
    write_fleet_env
    ;;
  restart-router)
    [ $# -eq 2 ] || usage
    need_started
    stop_router
    start_router
    ;;
  start-service)
    [ $# -eq 2 ] || usage
    need_started
    start_fleet_service
    ;;
  stop-service | kill-service)
    [ $# -eq 2 ] || usage
    need_started
    if [ "$cmd" = kill-service ]; then stop_fleet_service KILL; else stop_fleet_service; fi
    write_fleet_env
    ;;
  *) usage ;;
esac
