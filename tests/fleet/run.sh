#!/usr/bin/env bash
# Fleet tests of Wharf: two cells (each its own PostgreSQL, Garage and two
# `wharf serve` nodes) behind one routing HAProxy, all on loopback
# (scripts/fleet.sh), with tenants homed on different cells, driven by
# skopeo and curl through the router: every request must reach its tenant's
# cell and no other, and a route flip must move new traffic without a
# router restart and without a failed pull. Then the fleet service (`wharf
# fleet serve`, scripts/fleet.sh start-service) takes over the routes the
# script set, places a new tenant, reads every cell's use from its nodes,
# and is killed: the data path, and a router restarted meanwhile, must not
# need it, and it comes back to the same routes. Placement has the cell
# create the tenant. Last, a second small fleet (case `growth`): a cell
# filled through the router past its threshold, the service moving tenants
# out by itself until every cell is under it, no pull failing meanwhile,
# and the shipped alert rules evaluated by a real Prometheus on the
# service's figures.
#
#   WHARF_BIN=target/release/wharf bash tests/fleet/run.sh
#
# Environment:
#   WHARF_BIN               the wharf binary [target/release/wharf]
#   WHARF_FLEET_KEEP=1      keep the temp dir (logs, fleet state) after the run
#   WHARF_FLEET_BUDGET      seconds the whole run may take [900]: a guard
#                           against a hang, three times a quiet run (~300 s;
#                           616 s was seen on a machine at load 11 to 14)
#   WHARF_CASES             run only these cases, comma-separated (names as
#                           printed; fixtures, fleet-start and fleet-stop
#                           always run, service-start with any service-*
#                           case, and a case may need an earlier one) [all]
# The fleet's ports are free ones picked here (WHARF_FLEET_* from the
# environment are overridden), so the run can go beside scripts/fleet.sh's
# and scripts/cluster.sh's defaults.
#
# Build first: cargo build --release -p wharf
#
# Each check prints `PASS name` or `FAIL name (reason)`; the run ends with
# exactly one line `fleet: N passed, M failed` and exits non-zero if M > 0.
# Every wait and every client call is bounded by a timeout.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
FLEET_SH=$ROOT/scripts/fleet.sh
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wharf-fleet.XXXXXX")
# As root, PostgreSQL runs as `postgres` and must traverse the temp dir.
chmod 711 "$TMP"
LOGS=$TMP/logs
FDIR=$TMP/fleet
mkdir -p "$LOGS"

# (PASSED, FAILED_NAMES, DOCKERD_PID and SUITE are the harness's.)
# shellcheck disable=SC2034
PASSED=0
FAILED=0
FAILED_NAMES=()
DOCKERD_PID=
WATCHDOG_PID=
FLEET_STARTED=0
DONE=0

# shellcheck disable=SC2034
SUITE=fleet
# shellcheck source=../harness.sh
source "$HERE/../harness.sh"

cleanup() {
  [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null
  declare -F stop_growth >/dev/null && stop_growth
  if [ "$FLEET_STARTED" = 1 ]; then
    timeout 120 bash "$FLEET_SH" stop "$FDIR" >>"$LOGS/fleet-cleanup.log" 2>&1 ||
      echo "fleet stop failed; see $LOGS/fleet-cleanup.log"
    FLEET_STARTED=0
  fi
  if [ "$FAILED" -gt 0 ] || [ "${WHARF_FLEET_KEEP:-0}" = 1 ]; then
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

BUDGET=${WHARF_FLEET_BUDGET:-900}
(
  exec >/dev/null 2>&1 3>&- 4>&-
  for ((w = 0; w < BUDGET; w++)); do sleep 1; done
  echo "over ${BUDGET}s, stopped by the watchdog" >"$LOGS/watchdog"
  kill -TERM $$
) &
WATCHDOG_PID=$!

# ---------------------------------------------------------------- helpers

POLICY=$TMP/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
export REGISTRY_AUTH_FILE=$TMP/auth.json # skopeo: no stored logins
echo '{}' >"$REGISTRY_AUTH_FILE"

sk() { timeout 120 skopeo --policy "$POLICY" "$@"; }
c() { curl -sS --noproxy '*' --connect-timeout 5 --max-time 30 "$@"; }

need() {
  local x
  for x in "$@"; do
    command -v "$x" >/dev/null 2>&1 || [ -x "/usr/sbin/$x" ] ||
      die "$x is not installed (run scripts/install-deps.sh)" || return 1
  done
}

# header FILE NAME: the value of header NAME in a curl -D dump.
header() {
  tr -d '\r' <"$1" | awk -v h="$(tr '[:upper:]' '[:lower:]' <<<"$2")" \
    'index(tolower($0), h ": ") == 1 { v = substr($0, length(h) + 3) } END { print v }'
}

# req NAME [curl args...]: one request; NAME.h (headers) and NAME.b (body)
# under $TMP/r, the status code on stdout.
req() {
  local n=$1
  shift
  mkdir -p "$TMP/r"
  c -D "$TMP/r/$n.h" -o "$TMP/r/$n.b" -w '%{http_code}' "$@"
}
route_of() { header "$TMP/r/$1.h" X-Wharf-Route; }

# expect_route NAME CODE BACKEND [curl args...]: the request answers CODE
# and X-Wharf-Route names BACKEND (a backend, or backend/server prefix).
expect_route() {
  local n=$1 want=$2 be=$3 code r
  shift 3
  code=$(req "$n" "$@")
  r=$(route_of "$n")
  echo "$n: $code via $r"
  [ "$code" = "$want" ] || die "$n: status $code, want $want ($(head -c 300 "$TMP/r/$n.b"))" || return 1
  [[ $r == "$be"/* ]] || die "$n: answered by '$r', want $be"
}

# A free port p on 127.0.0.1 with p .. p+SPAN-1 all bindable, below the
# ephemeral range (nothing listening on port 0 takes it meanwhile).
free_port() {
  timeout 10 python3 -c '
import random, socket, sys
span = int(sys.argv[1])
top = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]) - span - 1
for _ in range(300):
    base = random.randrange(20000, top)
    held = []
    try:
        for p in range(base, base + span):
            s = socket.socket(); s.bind(("127.0.0.1", p)); held.append(s)
    except OSError:
        continue
    finally:
        for s in held: s.close()
    print(base); break
else:
    sys.exit("no free port range")' "${1:-1}"
}

# make_image LAYOUT TAG SEED: one image with one gzip layer of 96 KiB
# pseudo-random bytes from SEED, tagged TAG in the OCI layout LAYOUT.
make_image() {
  timeout 60 python3 - "$@" <<'EOF'
import gzip, hashlib, io, json, os, random, sys, tarfile
layout, tag, seed = sys.argv[1:4]
blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, d), "wb").write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
tar = io.BytesIO()
with tarfile.open(fileobj=tar, mode="w") as t:
    payload = random.Random(seed).randbytes(96 * 1024)
    ti = tarfile.TarInfo(f"fleet/{tag}.bin"); ti.size = len(payload); ti.mtime = 1700000000
    t.addfile(ti, io.BytesIO(payload))
layer = put(gzip.compress(tar.getvalue(), mtime=0))
layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
config = put(json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()]},
    "config": {"Labels": {"fleet.test": tag}}}, sort_keys=True).encode())
config["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": config, "layers": [layer]}, sort_keys=True).encode()
m = put(manifest)
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
ipath = os.path.join(layout, "index.json")
index = json.load(open(ipath)) if os.path.exists(ipath) else {"schemaVersion": 2, "manifests": []}
index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **m,
    "annotations": {"org.opencontainers.image.ref.name": tag}})
json.dump(index, open(ipath, "w"))
open(os.path.join(layout, tag + ".digest"), "w").write(m["digest"])
open(os.path.join(layout, tag + ".layer"), "w").write(layer["digest"])
EOF
}

IMAGES=$TMP/images
digest_of() { cat "$IMAGES/$1.digest"; }
layer_of() { cat "$IMAGES/$1.layer"; }

fleet() { # fleet COMMAND [ARGS...]: scripts/fleet.sh COMMAND DIR ..., bounded; reloads fleet.env
  local cmd=$1 rc
  shift
  timeout 240 bash "$FLEET_SH" "$cmd" "$FDIR" "$@"
  rc=$?
  load_env
  return $rc
}

load_env() {
  # shellcheck disable=SC1091
  [ -f "$FDIR/fleet.env" ] && source "$FDIR/fleet.env"
  PW=$(cat "${FLEET_PASSWORD_FILE:-/nonexistent}" 2>/dev/null)
}

# cell_admins N: cell N's node admin addresses (host:port), one a line.
cell_admins() { local v=FLEET_CELL_${1}_ADMINS; tr ' ' '\n' <<<"${!v}" | sed 's|^http://||'; }
cell_addrs() { local v=FLEET_CELL_${1}_NODES; tr ' ' '\n' <<<"${!v}"; }

admin() { # admin CELL-ADMIN-ADDR ARGS...: wharf admin against one node
  local a=$1
  shift
  timeout 30 "$WHARF_BIN" admin --url "http://$a" --token-file "$FLEET_ADMIN_TOKEN_FILE" "$@"
}

# token SCOPE [curl args...]: a token for the operator through the router.
token() {
  local s=$1
  shift
  c -u "$FLEET_USER:$PW" "$@" "http://$FLEET_ROUTER/auth/token?service=wharf&scope=$s" | jq -r .token
}

ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'

# manifest_code ADDR REPO TAG TOKEN: the status of GET manifest on ADDR.
manifest_code() {
  c -o /dev/null -w '%{http_code}' -H "$ACCEPT" -H "Authorization: Bearer $4" "http://$1/v2/$2/manifests/$3"
}

# on_cell_only CELL OTHER REPO TAG: every node of CELL serves the manifest
# (200), no node of OTHER has it (404).
on_cell_only() {
  local cell=$1 other=$2 repo=$3 tag=$4 tok a code
  tok=$(token "repository:$repo:pull") && [ -n "$tok" ] && [ "$tok" != null ] || die "no token for $repo" || return 1
  for a in $(cell_addrs "$cell"); do
    code=$(manifest_code "$a" "$repo" "$tag" "$tok")
    [ "$code" = 200 ] || die "$repo:$tag on cell $cell node $a: $code, want 200" || return 1
  done
  for a in $(cell_addrs "$other"); do
    code=$(manifest_code "$a" "$repo" "$tag" "$tok")
    [ "$code" = 404 ] || die "$repo:$tag on cell $other node $a: $code, want 404 (it must not be there)" || return 1
  done
  echo "$repo:$tag is on cell $cell's nodes and not on cell $other's"
}

# usage_bytes ADMIN TENANT: the bytes the tenant holds on that cell ("none"
# when the cell does not know the tenant).
usage_bytes() {
  local out
  out=$(admin "$1" usage "$2" 2>/dev/null) || {
    echo none
    return 0
  }
  jq -r .bytes <<<"$out"
}

# fsvc COMMAND ARGS...: `wharf fleet COMMAND` against the fleet service.
fsvc() {
  local sub=$1
  shift
  timeout 30 "$WHARF_BIN" fleet "$sub" --url "$FLEET_SERVICE_URL" --token-file "$FLEET_SERVICE_TOKEN_FILE" "$@"
}

# map_lines FILE: FILE's entries (no comments, no blank lines), sorted.
map_lines() { grep -v '^[[:space:]]*\(#\|$\)' "$1" | awk '{ print $1, $2 }' | sort; }
# live_map FILE: the router's entries of the map loaded from FILE, sorted.
live_map() {
  echo "show map $1" | timeout 5 socat stdio "unix-connect:$FLEET_ROUTER_SOCK" | awk 'NF >= 3 { print $2, $3 }' | sort
}
# routes_now: both map files, as the tests compare them.
routes_now() {
  echo "== hosts.map"
  map_lines "$FDIR/hosts.map"
  echo "== tenants.map"
  map_lines "$FDIR/tenants.map"
}

# pull_digest REF: the digest of REF pulled through the router (operator's login).
pull_digest() {
  local out=$TMP/pulled-$RANDOM
  sk copy --src-tls-verify=false --src-creds "$FLEET_USER:$PW" "docker://$FLEET_ROUTER/$1" "oci:$out:x" >/dev/null &&
    jq -r '.manifests[0].digest' "$out/index.json"
  rm -rf "$out"
}

# metric_value TEXT NAME: the value of the first sample of NAME (no labels
# or any) in a Prometheus text exposition.
metric_value() { awk -v n="$2" '$1 == n || index($1, n "{") == 1 { print $2; exit }' <<<"$1"; }

# ---------------------------------------------------------------- cases

case_fixtures() {
  need python3 skopeo jq curl socat haproxy perl flock || return 1
  [ -x "$WHARF_BIN" ] || die "no $WHARF_BIN (cargo build --release -p wharf)" || return 1
  make_image "$IMAGES" t1-app-1 one || return 1
  make_image "$IMAGES" t2-app-1 two || return 1
  make_image "$IMAGES" t1-app-2 three || return 1
  make_image "$IMAGES" t5-app-1 five || return 1
  make_image "$IMAGES" down-1 six || return 1
  sk inspect --raw "oci:$IMAGES:t1-app-1" >/dev/null || die "skopeo cannot read the generated layout"
}

case_fleet_start() {
  export WHARF_FLEET_PORT WHARF_FLEET_PG_PORT WHARF_FLEET_CELL_PG_PORT WHARF_FLEET_GARAGE_PORT WHARF_FLEET_SERVICE_PORT
  WHARF_FLEET_PORT=$(free_port) && WHARF_FLEET_SERVICE_PORT=$(free_port) &&
    WHARF_FLEET_PG_PORT=$(free_port) && WHARF_FLEET_CELL_PG_PORT=$(free_port 2) &&
    WHARF_FLEET_GARAGE_PORT=$(free_port 14) || die "no free ports" || return 1
  export WHARF_FLEET_CELLS=2 WHARF_FLEET_NODES=2 WHARF_FLEET_GRACE=3 WHARF_FLEET_SERVICE=0
  FLEET_STARTED=1
  fleet start || die "scripts/fleet.sh start failed" || return 1
  fleet status || die "fleet status: not everything is up" || return 1
  local c n a st
  # Every piece: router servers, nodes' readiness, the fleet database.
  st=$(echo "show stat" | timeout 5 socat stdio "unix-connect:$FLEET_ROUTER_SOCK" |
    awk -F, '$2 != "BACKEND" && $2 != "FRONTEND" && NR > 1 && NF > 2 { print $1 "/" $2, $18 }')
  echo "$st"
  for c in 1 2; do
    for n in 1 2; do
      grep -qx "cell_$c/c${c}n$n UP" <<<"$st" || die "router: cell_$c/c${c}n$n is not UP" || return 1
    done
    for a in $(cell_admins $c); do
      [ "$(c -o /dev/null -w '%{http_code}' "http://$a/readyz")" = 200 ] || die "cell $c node admin $a: /readyz not 200" || return 1
    done
  done
  [ "$(grep -c ' UP$' <<<"$st")" = 8 ] || die "want 8 router servers UP (4 per cell backend, 4 in fleet_default)" || return 1
  pg_isready -q -h 127.0.0.1 -p "${FLEET_DB_URL##*:}" -t 5 2>/dev/null ||
    timeout 10 bash -c "echo > /dev/tcp/127.0.0.1/$(sed 's|.*:\([0-9]*\)/.*|\1|' <<<"$FLEET_DB_URL")" ||
    die "fleet database $FLEET_DB_URL does not answer" || return 1
  [ -s "$FLEET_SIGNING_KEY" ] && [ -s "$FLEET_ADMIN_TOKEN_FILE" ] && [ -s "$FLEET_HTPASSWD" ] && [ -n "$PW" ] ||
    die "fleet.env lacks the key, the admin token or the operator's password" || return 1
  # The registry answers through the router with the fleet's realm.
  expect_route v2 401 fleet_default "http://$FLEET_ROUTER/v2/" || return 1
  grep -qi "^www-authenticate: Bearer realm=\"$FLEET_REALM\"" "$TMP/r/v2.h" ||
    die "the challenge does not name the realm $FLEET_REALM: $(header "$TMP/r/v2.h" WWW-Authenticate)" || return 1
  # Each node's admin API wants the token.
  a=$(cell_admins 1 | head -n 1)
  [ "$(c -o /dev/null -w '%{http_code}' "http://$a/admin/v1/tenants")" = 401 ] || die "admin API open without the token" || return 1
  admin "$a" tenant list >/dev/null || die "wharf admin tenant list with the fleet's token failed"
}

case_tenants_routed() {
  local a b
  a=$(cell_admins 1 | head -n 1)
  b=$(cell_admins 2 | tail -n 1)
  admin "$a" tenant create t1 --hostname t1.fleet.test || die "tenant t1 on cell 1 failed" || return 1
  admin "$b" tenant create t2 --hostname t2.fleet.test || die "tenant t2 on cell 2 failed" || return 1
  fleet route t1 1 t1.fleet.test || die "route t1 1 failed" || return 1
  fleet route t2 cell_2 T2.Fleet.Test || die "route t2 cell_2 failed" || return 1
  fleet routes | tee "$TMP/routes.out" || die "routes: the router disagrees with the files" || return 1
  grep -qx 't1 cell_1' "$FDIR/tenants.map" && grep -qx 't2 cell_2' "$FDIR/tenants.map" &&
    grep -qx 't1.fleet.test cell_1' "$FDIR/hosts.map" && grep -qx 't2.fleet.test cell_2' "$FDIR/hosts.map" ||
    die "map files lack the routes" || return 1
  ! fleet route t3 9 2>/dev/null || die "route to an unknown cell 9 was accepted" || return 1
  ! fleet route t3 z 2>/dev/null || die "route to an unknown cell z was accepted" || return 1
  ! fleet route 'Bad/Name' 1 2>/dev/null || die "route of a bad tenant name was accepted"
}

case_push_pull_routed() {
  local t cell other back d
  for t in t1 t2; do
    sk copy --dest-tls-verify=false --dest-creds "$FLEET_USER:$PW" \
      "oci:$IMAGES:$t-app-1" "docker://$FLEET_ROUTER/$t/app:1" || die "push of $t/app:1 through the router failed" || return 1
    back=$TMP/back-$t
    sk copy --src-tls-verify=false --src-creds "$FLEET_USER:$PW" "docker://$FLEET_ROUTER/$t/app:1" "oci:$back:x" ||
      die "pull of $t/app:1 through the router failed" || return 1
    d=$(jq -r '.manifests[0].digest' "$back/index.json")
    [ "$d" = "$(digest_of "$t-app-1")" ] || die "$t/app:1 pulled back as $d, pushed $(digest_of "$t-app-1")" || return 1
  done
  for t in t1 t2; do
    if [ $t = t1 ]; then cell=1 other=2; else cell=2 other=1; fi
    on_cell_only $cell $other "$t/app" 1 || return 1
    local home away
    home=$(usage_bytes "$(cell_admins $cell | head -n 1)" $t)
    away=$(usage_bytes "$(cell_admins $other | head -n 1)" $t)
    echo "usage of $t: cell $cell $home bytes, cell $other $away"
    [ "$home" != none ] && [ "$home" -gt 0 ] || die "cell $cell holds no bytes of $t" || return 1
    [ "$away" = none ] || [ "$away" = 0 ] || die "cell $other holds $away bytes of $t" || return 1
  done
}

case_route_by_host() {
  local tok
  tok=$(token "repository:t2/app:pull") || return 1
  expect_route host-t2 200 cell_2 -H "Host: t2.fleet.test" -H "$ACCEPT" -H "Authorization: Bearer $tok" \
    "http://$FLEET_ROUTER/v2/t2/app/manifests/1" || return 1
  expect_route host-t2-case 200 cell_2 -H "Host: T2.FLEET.test:443" -H "$ACCEPT" -H "Authorization: Bearer $tok" \
    "http://$FLEET_ROUTER/v2/t2/app/manifests/1" || return 1
  # The Host decides even where the path names no tenant.
  expect_route host-t2-base 401 cell_2 -H "Host: t2.fleet.test" "http://$FLEET_ROUTER/v2/" || return 1
  expect_route host-t1-base 401 cell_1 -H "Host: t1.fleet.test" "http://$FLEET_ROUTER/v2/" || return 1
  expect_route host-unknown 401 fleet_default -H "Host: nobody.fleet.test" "http://$FLEET_ROUTER/v2/"
}

case_route_by_path() {
  local tok1 tok2 tokn
  tok1=$(token "repository:t1/app:pull") && tok2=$(token "repository:t2/app:pull") &&
    tokn=$(token "repository:nobody/app:pull") || die "no tokens" || return 1
  expect_route path-t1 200 cell_1 -H "$ACCEPT" -H "Authorization: Bearer $tok1" "http://$FLEET_ROUTER/v2/t1/app/manifests/1" || return 1
  expect_route path-t2 200 cell_2 -H "$ACCEPT" -H "Authorization: Bearer $tok2" "http://$FLEET_ROUTER/v2/t2/app/manifests/1" || return 1
  expect_route path-t2-blob 200 cell_2 -H "Authorization: Bearer $tok2" \
    "http://$FLEET_ROUTER/v2/t2/app/blobs/$(layer_of t2-app-1)" || return 1
  expect_route path-t2-tags 200 cell_2 -H "Authorization: Bearer $tok2" "http://$FLEET_ROUTER/v2/t2/app/tags/list" || return 1
  # A tenant no map knows: the default cell answers for itself.
  expect_route path-unknown 404 fleet_default -H "Authorization: Bearer $tokn" \
    "http://$FLEET_ROUTER/v2/nobody/app/tags/list" || return 1
  jq -e '.errors[0].code == "NAME_UNKNOWN"' "$TMP/r/path-unknown.b" >/dev/null ||
    die "unknown tenant: body $(head -c 200 "$TMP/r/path-unknown.b"), want NAME_UNKNOWN" || return 1
  expect_route path-unknown-anon 401 fleet_default "http://$FLEET_ROUTER/v2/nobody/app/tags/list"
}

case_token_by_scope() {
  local u="$FLEET_USER:$PW" base="http://$FLEET_ROUTER/auth/token?service=wharf" tok a
  expect_route tok-t2 200 cell_2 -u "$u" "$base&scope=repository:t2/app:pull,push" || return 1
  expect_route tok-t2-enc 200 cell_2 -u "$u" "$base&scope=repository%3At2%2Fapp%3Apull%2Cpush" || return 1
  expect_route tok-t1 200 cell_1 -u "$u" "$base&scope=repository:t1/app:pull" || return 1
  expect_route tok-first-t2 200 cell_2 -u "$u" "$base&scope=repository:t2/app:pull&scope=repository:t1/app:pull" || return 1
  expect_route tok-first-t1 200 cell_1 -u "$u" "$base&scope=repository:t1/app:pull&scope=repository:t2/app:pull" || return 1
  expect_route tok-post-t2 200 cell_2 -d "grant_type=password&service=wharf&client_id=fleet-test&username=$FLEET_USER&password=$PW&scope=repository%3At2%2Fapp%3Apull" \
    "http://$FLEET_ROUTER/auth/token" || return 1
  expect_route tok-noscope 200 fleet_default -u "$u" "$base&account=$FLEET_USER" || return 1
  # A token cell 2 issued is good on cell 1: one signing key for the fleet.
  tok=$(jq -r .token "$TMP/r/tok-t2.b")
  for a in $(cell_addrs 1); do
    [ "$(c -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" "http://$a/v2/")" = 200 ] ||
      die "cell 1 node $a refuses a token cell 2 issued" || return 1
  done
  # A tenant user lives in its cell's directory: its login without a scope
  # needs the users map.
  printf 'alice-pw-123\n' | admin "$(cell_admins 2 | head -n 1)" user set t2 alice --role push --password-stdin ||
    die "user alice in t2 on cell 2 failed" || return 1
  expect_route login-alice-unrouted 401 fleet_default -u alice:alice-pw-123 "$base&account=alice" || return 1
  # (A letter names a cell too: b is cell 2.)
  fleet route-user alice b || die "route-user alice b failed" || return 1
  grep -qx 'alice cell_2' "$FDIR/users.map" || die "users.map lacks alice cell_2" || return 1
  expect_route login-alice 200 cell_2 -u alice:alice-pw-123 "$base&account=alice"
}

case_route_flip() {
  local b pid0 tok i code r n200=0 nbad=0 seen_1=0 seen_2=0
  b=$(cell_admins 2 | head -n 1)
  pid0=$FLEET_ROUTER_PID
  # What the fleet service does before it flips: the tenant and its data on
  # the new cell (here a skopeo copy from cell 1's node to cell 2's).
  admin "$b" tenant create t1 --hostname t1.fleet.test || die "tenant t1 on cell 2 failed" || return 1
  sk copy --src-tls-verify=false --dest-tls-verify=false \
    --src-creds "$FLEET_USER:$PW" --dest-creds "$FLEET_USER:$PW" \
    "docker://$(cell_addrs 1 | head -n 1)/t1/app:1" "docker://$(cell_addrs 2 | head -n 1)/t1/app:1" ||
    die "copy of t1/app:1 from cell 1 to cell 2 failed" || return 1
  # A client's token from before the flip (cell 1 issued it).
  expect_route flip-token 200 cell_1 -u "$FLEET_USER:$PW" \
    "http://$FLEET_ROUTER/auth/token?service=wharf&scope=repository:t1/app:pull" || return 1
  tok=$(jq -r .token "$TMP/r/flip-token.b")
  # Pulls go on, with that token, across the flip: until 20 have been
  # made after it (at most 300 in all).
  rm -f "$TMP/flip.done"
  (
    after=0
    for ((i = 0; i < 300 && after < 20; i++)); do
      [ -f "$TMP/flip.done" ] && after=$((after + 1))
      code=$(c -D "$TMP/flip.h" -o /dev/null -w '%{http_code}' -H "$ACCEPT" -H "Authorization: Bearer $tok" \
        "http://$FLEET_ROUTER/v2/t1/app/manifests/1")
      echo "$code $(header "$TMP/flip.h" X-Wharf-Route)"
      sleep 0.05
    done
  ) >"$TMP/flip-pulls.out" &
  local loop=$!
  sleep 1
  fleet route t1 2
  local routed=$?
  touch "$TMP/flip.done"
  wait "$loop"
  [ "$routed" = 0 ] || die "route t1 2 failed" || return 1
  while read -r code r; do
    if [ "$code" = 200 ]; then n200=$((n200 + 1)); else nbad=$((nbad + 1)); fi
    [[ $r == cell_1/* ]] && seen_1=$((seen_1 + 1))
    [[ $r == cell_2/* ]] && seen_2=$((seen_2 + 1))
  done <"$TMP/flip-pulls.out"
  echo "pulls across the flip: $n200 x 200, $nbad failed; $seen_1 from cell 1, $seen_2 from cell 2"
  [ "$nbad" = 0 ] || die "$nbad pulls failed across the flip: $(grep -v '^200 ' "$TMP/flip-pulls.out" | sort | uniq -c | head -n 3)" || return 1
  [ "$seen_1" -gt 0 ] && [ "$seen_2" -gt 0 ] || die "pulls did not move from cell 1 to cell 2" || return 1
  tail -n 1 "$TMP/flip-pulls.out" | grep -q ' cell_2/' || die "the last pull was not answered by cell 2" || return 1
  load_env
  [ "$FLEET_ROUTER_PID" = "$pid0" ] || die "the router was restarted ($pid0 -> $FLEET_ROUTER_PID)" || return 1
  grep -qx 't1 cell_2' "$FDIR/tenants.map" && grep -qx 't1.fleet.test cell_2' "$FDIR/hosts.map" ||
    die "the map files do not hold t1 -> cell_2 with its hostname" || return 1
  # New traffic lands on cell 2: a push through the router.
  sk copy --dest-tls-verify=false --dest-creds "$FLEET_USER:$PW" \
    "oci:$IMAGES:t1-app-2" "docker://$FLEET_ROUTER/t1/app:2" || die "push of t1/app:2 after the flip failed" || return 1
  on_cell_only 2 1 t1/app 2 || return 1
  expect_route flip-host 401 cell_2 -H "Host: t1.fleet.test" "http://$FLEET_ROUTER/v2/"
}

case_router_restart() {
  local pid0=$FLEET_ROUTER_PID tok
  fleet restart-router || die "restart-router failed" || return 1
  [ -n "$FLEET_ROUTER_PID" ] && [ "$FLEET_ROUTER_PID" != "$pid0" ] || die "router pid $pid0 -> '$FLEET_ROUTER_PID': not restarted" || return 1
  tok=$(token "repository:t1/app:pull") || return 1
  expect_route restarted-t1 200 cell_2 -H "$ACCEPT" -H "Authorization: Bearer $tok" \
    "http://$FLEET_ROUTER/v2/t1/app/manifests/2" || return 1
  expect_route restarted-host 401 cell_2 -H "Host: t1.fleet.test" "http://$FLEET_ROUTER/v2/" || return 1
  expect_route restarted-login 200 cell_2 -u alice:alice-pw-123 "http://$FLEET_ROUTER/auth/token?service=wharf&account=alice" || return 1
  fleet routes || die "routes: the restarted router disagrees with the files"
}

case_node_restart() {
  local pid0=$FLEET_CELL_2_NODE1_PID st tok
  fleet restart-node 2 1 || die "restart-node 2 1 failed" || return 1
  [ -n "$FLEET_CELL_2_NODE1_PID" ] && [ "$FLEET_CELL_2_NODE1_PID" != "$pid0" ] ||
    die "cell 2 node1 pid $pid0 -> '$FLEET_CELL_2_NODE1_PID': not restarted" || return 1
  # It came back with the fleet's flags: token auth with the fleet's realm
  # and key, the admin token.
  req restarted-node -H "$ACCEPT" "http://$FLEET_CELL_2_NODE1_ADDR/v2/" >/dev/null
  grep -qi "^www-authenticate: Bearer realm=\"$FLEET_REALM\"" "$TMP/r/restarted-node.h" ||
    die "restarted node's challenge: $(header "$TMP/r/restarted-node.h" WWW-Authenticate)" || return 1
  tok=$(token "repository:t2/app:pull") || return 1
  [ "$(manifest_code "$FLEET_CELL_2_NODE1_ADDR" t2/app 1 "$tok")" = 200 ] || die "restarted node refuses the fleet's token" || return 1
  [ "$(c -o /dev/null -w '%{http_code}' "http://$FLEET_CELL_2_NODE1_ADMIN/admin/v1/tenants")" = 401 ] ||
    die "restarted node's admin API is open" || return 1
  st=$(echo "show stat" | timeout 5 socat stdio "unix-connect:$FLEET_ROUTER_SOCK" | awk -F, '$1 == "cell_2" && $2 == "c2n1" { print $18 }')
  [ "$st" = UP ] || die "router shows cell_2/c2n1 '$st' after the restart"
}

case_cell_down() {
  local tok code i
  tok=$(token "repository:t2/app:pull") || return 1
  fleet stop-cell cell_2 || die "stop-cell cell_2 failed" || return 1
  # The router's own 503 (no server of cell 2 is up), in OCI form.
  for ((i = 0; i < 50; i++)); do
    code=$(req down-t2 -H "$ACCEPT" -H "Authorization: Bearer $tok" "http://$FLEET_ROUTER/v2/t2/app/manifests/1")
    [ "$code" = 503 ] && break
    sleep 0.2
  done
  [ "$code" = 503 ] || die "t2 with cell 2 down: $code, want the router's 503" || return 1
  [ "$(header "$TMP/r/down-t2.h" Retry-After)" = 1 ] || die "the router's 503 has no Retry-After" || return 1
  jq -e '.errors[0].code == "UNAVAILABLE"' "$TMP/r/down-t2.b" >/dev/null || die "the router's 503 body: $(cat "$TMP/r/down-t2.b")" || return 1
  # The rest of the fleet answers.
  expect_route down-t1-base 401 fleet_default "http://$FLEET_ROUTER/v2/" || return 1
  fleet start-cell 2 || die "start-cell 2 failed" || return 1
  expect_route back-t2 200 cell_2 -H "$ACCEPT" -H "Authorization: Bearer $tok" "http://$FLEET_ROUTER/v2/t2/app/manifests/1"
}

# The fleet service (`wharf fleet serve`) started on a fleet whose routes
# the script set: the cells get registered, those routes adopted, nothing
# dropped from the router.
case_service_start() {
  local before ids
  before=$(routes_now)
  fleet start-service || die "start-service failed (log: $FDIR/fleet/service.log)" || return 1
  [ -n "$FLEET_SERVICE_PID" ] && kill -0 "$FLEET_SERVICE_PID" 2>/dev/null || die "no running FLEET_SERVICE_PID in fleet.env" || return 1
  [ -s "$FLEET_SERVICE_TOKEN_FILE" ] || die "no FLEET_SERVICE_TOKEN_FILE" || return 1
  [ "$(c -o /dev/null -w '%{http_code}' "$FLEET_SERVICE_URL/healthz")" = 200 ] || die "$FLEET_SERVICE_URL/healthz not 200" || return 1
  [ "$(c -o /dev/null -w '%{http_code}' "$FLEET_SERVICE_URL/fleet/v1/cells")" = 401 ] || die "the fleet API answers without its token" || return 1
  fsvc cells list --json >"$TMP/cells.json" || die "wharf fleet cells list failed" || return 1
  ids=$(jq -r '[.cells[] | "\(.id)=\(.backend)=\(.nodes | length)"] | join(" ")' "$TMP/cells.json")
  echo "cells: $ids"
  [ "$ids" = "1=cell_1=2 2=cell_2=2" ] || die "cells registered: '$ids', want 1=cell_1=2 2=cell_2=2" || return 1
  # Every tenant and hostname the maps routed (t1 and t2 on cell 2, after
  # the earlier cases) is the service's now, on the same cell.
  fsvc tenants list --json >"$TMP/tenants.json" || die "wharf fleet tenants list failed" || return 1
  jq -r '.tenants[] | "\(.tenant) \(.cell) \(.hostname)"' "$TMP/tenants.json"
  local want got
  want=$(echo "$before" | awk '/^== / { f = $2; next } f == "tenants.map" { sub(/^cell_/, "", $2); print $1, $2 }' | sort)
  got=$(jq -r '.tenants[] | "\(.tenant) \(.cell)"' "$TMP/tenants.json" | sort)
  [ "$got" = "$want" ] || die "the service's tenants '${got//$'\n'/, }', want the routed ones '${want//$'\n'/, }'" || return 1
  want=$(echo "$before" | awk '/^== / { f = $2; next } f == "hosts.map" { sub(/^cell_/, "", $2); print $1, $2 }' | sort)
  got=$(jq -r '.tenants[] | select(.hostname != null) | "\(.hostname) \(.cell)"' "$TMP/tenants.json" | sort)
  [ "$got" = "$want" ] || die "the service's hostnames '${got//$'\n'/, }', want the routed ones '${want//$'\n'/, }'" || return 1
  # Nothing dropped: the service rewrote the maps with the same routes.
  [ "$(routes_now)" = "$before" ] || die "routes changed at the service's start: $(diff <(echo "$before") <(routes_now) | tr '\n' ' ')" || return 1
  head -n 1 "$FDIR/tenants.map" | grep -q 'wharf fleet serve' || die "tenants.map was not written by the service" || return 1
  fleet routes >/dev/null || die "the router's live maps differ from the files" || return 1
  # The service owns the maps now: the script's route is refused.
  ! fleet route t9 1 2>/dev/null || die "route was accepted while the service runs" || return 1
  # A second start-service is a no-op.
  local pid0=$FLEET_SERVICE_PID
  fleet start-service || die "a second start-service failed" || return 1
  [ "$FLEET_SERVICE_PID" = "$pid0" ] || die "a second start-service restarted the service" || return 1
}

T5_CELL=
case_service_places() {
  local out cell other a code i tok d
  out=$(fsvc tenants place t5 --hostname t5.fleet.test --json) || die "wharf fleet tenants place t5 failed: $out" || return 1
  echo "$out"
  cell=$(jq -r .cell <<<"$out")
  case "$cell" in 1 | 2) ;; *) die "t5 placed on '$cell'" || return 1 ;; esac
  other=$((3 - cell))
  [ "$(jq -r .backend <<<"$out")" = "cell_$cell" ] || die "backend $(jq -r .backend <<<"$out"), want cell_$cell" || return 1
  T5_CELL=$cell
  # The service created the tenant itself on that cell (a node's admin
  # API), with its hostname, and on no other.
  [ "$(jq -r .created_on_cell <<<"$out")" = created ] || die "t5 not created on cell $cell by the service: $out" || return 1
  tenant_on_cell "$cell" t5 t5.fleet.test || return 1
  a=$(cell_admins "$other" | head -n 1)
  code=$(req t5-other -H "Authorization: Bearer $(head -n 1 "$FLEET_ADMIN_TOKEN_FILE")" "http://$a/admin/v1/tenants/t5")
  [ "$code" = 404 ] || die "cell $other answers $code for tenant t5, want 404" || return 1
  # A name its cell holds with other settings: the cell's refusal comes
  # back, nothing is placed or routed.
  admin "$(cell_admins 1 | head -n 1)" tenant create t5x --hostname taken.fleet.test >/dev/null &&
    admin "$(cell_admins 2 | head -n 1)" tenant create t5x --hostname taken.fleet.test >/dev/null ||
    die "tenant t5x on the cells failed" || return 1
  ! out=$(fsvc tenants place t5x --hostname t5x.fleet.test 2>&1) || die "t5x was placed over the cell's own t5x: $out" || return 1
  echo "$out"
  grep -q 'refused tenant t5x: tenant t5x exists' <<<"$out" && grep -q CELL_REFUSED <<<"$out" ||
    die "the refusal does not carry the cell's message: $out" || return 1
  ! fsvc tenants where t5x >/dev/null 2>&1 || die "the service keeps the refused t5x" || return 1
  # Routed by the service: the files and the live router (bounded wait;
  # place returns once it has pushed them).
  for ((i = 0; i < 20; i++)); do
    map_lines "$FDIR/tenants.map" | grep -qx "t5 cell_$cell" && live_map "$FDIR/tenants.map" | grep -qx "t5 cell_$cell" &&
      map_lines "$FDIR/hosts.map" | grep -qx "t5.fleet.test cell_$cell" && live_map "$FDIR/hosts.map" | grep -qx "t5.fleet.test cell_$cell" && break
    sleep 0.5
  done
  echo "tenants.map file: $(map_lines "$FDIR/tenants.map" | tr '\n' ',')  live: $(live_map "$FDIR/tenants.map" | tr '\n' ',')"
  map_lines "$FDIR/tenants.map" | grep -qx "t5 cell_$cell" || die "tenants.map has no t5 cell_$cell" || return 1
  ! map_lines "$FDIR/tenants.map" | grep -q '^t5x ' || die "tenants.map routes the refused t5x" || return 1
  live_map "$FDIR/tenants.map" | grep -qx "t5 cell_$cell" || die "the router's live tenants.map has no t5 cell_$cell" || return 1
  map_lines "$FDIR/hosts.map" | grep -qx "t5.fleet.test cell_$cell" || die "hosts.map has no t5.fleet.test cell_$cell" || return 1
  live_map "$FDIR/hosts.map" | grep -qx "t5.fleet.test cell_$cell" || die "the router's live hosts.map has no t5.fleet.test" || return 1
  fleet routes >/dev/null || die "the router's live maps differ from the files" || return 1
  # A push through the router lands on that cell, and only there.
  sk copy --dest-tls-verify=false --dest-creds "$FLEET_USER:$PW" \
    "oci:$IMAGES:t5-app-1" "docker://$FLEET_ROUTER/t5/app:1" || die "push of t5/app:1 through the router failed" || return 1
  d=$(pull_digest t5/app:1)
  [ "$d" = "$(digest_of t5-app-1)" ] || die "t5/app:1 pulled back as '$d', pushed $(digest_of t5-app-1)" || return 1
  tok=$(token "repository:t5/app:pull") || return 1
  expect_route t5-path 200 "cell_$cell" -H "$ACCEPT" -H "Authorization: Bearer $tok" "http://$FLEET_ROUTER/v2/t5/app/manifests/1" || return 1
  expect_route t5-host 401 "cell_$cell" -H "Host: t5.fleet.test" "http://$FLEET_ROUTER/v2/" || return 1
  on_cell_only "$cell" "$other" t5/app 1 || return 1
  [ "$(usage_bytes "$(cell_admins "$other" | head -n 1)" t5)" = none ] || die "cell $other knows tenant t5" || return 1
  fsvc tenants where t5 || die "wharf fleet tenants where t5 failed"
}

# The service's scrapes: each cell's use read from its nodes.
case_service_scrapes() {
  local i bad out
  for ((i = 0; i < 40; i++)); do
    out=$(fsvc cells list --json) && bad=$(jq -r '[.cells[] | select(.usage != "fresh" or .last_error != null
        or .read_age_seconds == null or .read_age_seconds > 10 or (.used.connections // 0) <= 0) | .id] | join(",")' <<<"$out") &&
      [ -z "$bad" ] && [ "$(jq '.cells | length' <<<"$out")" = 2 ] && break
    bad=${bad:-?}
    sleep 0.5
  done
  jq -c '.cells[] | {id, usage, read_age_seconds, last_error, scrape_failures, tenants, used}' <<<"$out"
  [ -z "$bad" ] || die "cells not read from their nodes within 20 s: $bad" || return 1
  fsvc cells list || die "wharf fleet cells list (summary) failed" || return 1
  # The service's metrics say the same.
  out=$(c "$FLEET_SERVICE_URL/metrics") || die "no $FLEET_SERVICE_URL/metrics" || return 1
  grep '^wharf_fleet_scrape_age_seconds' <<<"$out"
  [ "$(grep -c '^wharf_fleet_scrape_age_seconds{' <<<"$out")" = 2 ] || die "want wharf_fleet_scrape_age_seconds for 2 cells" || return 1
}

# The service down: the data path does not need it.
case_service_down() {
  local pid=$FLEET_SERVICE_PID before t cell d tok i out
  [ -n "$T5_CELL" ] || die "needs service-places (t5's cell)" || return 1
  before=$(routes_now)
  fleet kill-service || die "kill-service failed" || return 1
  ! kill -0 "$pid" 2>/dev/null || die "the fleet service (pid $pid) survived SIGKILL" || return 1
  [ -z "$FLEET_SERVICE_PID" ] || die "fleet.env still names the service's pid" || return 1
  [ "$(c -o /dev/null -w '%{http_code}' "$FLEET_SERVICE_URL/healthz" 2>/dev/null)" = 000 ] || die "the service still answers" || return 1
  # Pushes and pulls through the router, for every tenant.
  for t in t1 t2 t5; do
    sk copy --dest-tls-verify=false --dest-creds "$FLEET_USER:$PW" \
      "oci:$IMAGES:down-1" "docker://$FLEET_ROUTER/$t/down:1" || die "push of $t/down:1 with the service down failed" || return 1
    d=$(pull_digest "$t/down:1")
    [ "$d" = "$(digest_of down-1)" ] || die "$t/down:1 pulled back as '$d'" || return 1
  done
  # The router restarted meanwhile loads the last routes the service wrote.
  fleet restart-router || die "restart-router with the service down failed" || return 1
  [ "$(routes_now)" = "$before" ] || die "the map files changed" || return 1
  fleet routes >/dev/null || die "the restarted router's maps differ from the files" || return 1
  for t in t1 t2 t5; do
    if [ $t = t5 ]; then cell=$T5_CELL; else cell=2; fi
    tok=$(token "repository:$t/down:pull") || return 1
    expect_route "svc-down-$t" 200 "cell_$cell" -H "$ACCEPT" -H "Authorization: Bearer $tok" \
      "http://$FLEET_ROUTER/v2/$t/down/manifests/1" || return 1
    d=$(pull_digest "$t/app:1")
    [ -n "$d" ] && [ "$d" != null ] || die "pull of $t/app:1 after the router restart failed" || return 1
  done
  # The service comes back and re-syncs: nothing to change.
  fleet start-service || die "start-service after the kill failed" || return 1
  [ -n "$FLEET_SERVICE_PID" ] && [ "$FLEET_SERVICE_PID" != "$pid" ] || die "no new service pid" || return 1
  [ "$(c -o /dev/null -w '%{http_code}' "$FLEET_SERVICE_URL/healthz")" = 200 ] || die "healthz not 200 after the restart" || return 1
  # Two scrape rounds (2 s each): the loop has pushed its routes again.
  for ((i = 0; i < 20; i++)); do
    out=$(c "$FLEET_SERVICE_URL/metrics") && [ "$(metric_value "$out" wharf_fleet_store_up)" = 1 ] &&
      [ -n "$(metric_value "$out" wharf_fleet_scrape_age_seconds)" ] && break
    sleep 0.5
  done
  sleep 4
  out=$(c "$FLEET_SERVICE_URL/metrics") || die "no metrics after the restart" || return 1
  echo "store_up $(metric_value "$out" wharf_fleet_store_up), router_errors $(metric_value "$out" wharf_fleet_router_errors_total)"
  [ "$(metric_value "$out" wharf_fleet_store_up)" = 1 ] || die "wharf_fleet_store_up is not 1" || return 1
  [ "$(metric_value "$out" wharf_fleet_router_errors_total)" = 0 ] || die "the restarted service counts router errors" || return 1
  [ "$(routes_now)" = "$before" ] || die "the restarted service changed the routes: $(diff <(echo "$before") <(routes_now) | tr '\n' ' ')" || return 1
  fleet routes >/dev/null || die "after the service's restart the router's maps differ from the files" || return 1
  fsvc tenants where t5 | grep -q "cell $T5_CELL" || die "the restarted service does not know t5 on cell $T5_CELL" || return 1
  tok=$(token "repository:t5/app:pull") || return 1
  expect_route svc-back-t5 200 "cell_$T5_CELL" -H "$ACCEPT" -H "Authorization: Bearer $tok" "http://$FLEET_ROUTER/v2/t5/app/manifests/1"
}

# tenant_on_cell CELL NAME [HOSTNAME]: the cell holds tenant NAME (with
# that hostname), read from a node's admin API: `wharf fleet tenants
# place` has the cell create it.
tenant_on_cell() {
  local a code
  a=$(cell_admins "$1" | head -n 1)
  code=$(req "on-cell-$2" -H "Authorization: Bearer $(head -n 1 "$FLEET_ADMIN_TOKEN_FILE")" "http://$a/admin/v1/tenants/$2")
  [ "$code" = 200 ] || die "GET /admin/v1/tenants/$2 on cell $1: $code $(head -c 300 "$TMP/r/on-cell-$2.b")" || return 1
  [ -z "${3:-}" ] || [ "$(jq -r .hostname "$TMP/r/on-cell-$2.b")" = "$3" ] ||
    die "tenant $2 on cell $1 has hostname $(jq -r .hostname "$TMP/r/on-cell-$2.b"), want $3"
}
# (Placement creates the tenant now; the old helper only checks it.)
create_tenant() { tenant_on_cell "$@"; }

# A tenant of 50 images (shared and own layers, an index, a referrer) moved
# by the fleet service from its cell to the other while clients pull it in a
# loop and push new tags, and pull another tenant of the same cell
# (tests/fleet/move_load.py): no pull fails, pushes refused during the fence
# got 503 with Retry-After and went through on retry, the fence lasted at
# most 5 s, every acknowledged push is on the new cell byte for byte, and
# after the grace period the old cell holds nothing of the tenant.
case_tenant_move() {
  local out from to id i state load_pid a fence_ms ml=$HERE/move_load.py auth
  auth="$FLEET_USER:$FLEET_PASSWORD_FILE"
  out=$(fsvc tenants place t6 --json) || die "place t6 failed: $out" || return 1
  from=$(jq -r .cell <<<"$out")
  to=$((3 - from))
  tenant_on_cell "$from" t6 || return 1
  fsvc tenants place t7 --pin "$from" --json >/dev/null || die "place t7 on cell $from failed" || return 1
  tenant_on_cell "$from" t7 || return 1
  timeout 300 python3 "$ml" seed --router "http://$FLEET_ROUTER" --tenant t6 --auth "$auth" --images 50 \
    --out "$TMP/t6-seed.json" || die "seeding t6 failed" || return 1
  timeout 60 python3 "$ml" seed --router "http://$FLEET_ROUTER" --tenant t7 --auth "$auth" --images 3 \
    --out "$TMP/t7-seed.json" || die "seeding t7 failed" || return 1
  rm -f "$TMP/move-stop"
  timeout 400 python3 "$ml" run --router "http://$FLEET_ROUTER" --tenant t6 --other t7 --auth "$auth" \
    --seed "$TMP/t6-seed.json" --other-seed "$TMP/t7-seed.json" --stop "$TMP/move-stop" --max-secs 300 \
    --out "$TMP/move-report.json" >"$LOGS/move-load.log" 2>&1 &
  load_pid=$!
  sleep 3
  out=$(fsvc tenants move t6 --to "$to" --json) || die "move t6 to cell $to failed: $out" || return 1
  id=$(jq -r '.move.id // .id' <<<"$out")
  echo "move $id: t6 from cell $from to cell $to"
  for ((i = 0; i < 240; i++)); do
    out=$(fsvc moves show "$id" --json 2>/dev/null) && state=$(jq -r '.state // .move.state' <<<"$out")
    case "$state" in done | failed | cancelled) break ;; esac
    sleep 1
  done
  sleep 2
  touch "$TMP/move-stop"
  wait "$load_pid"
  echo "$out" | jq -c '.move // .'
  cat "$LOGS/move-load.log"
  [ "$state" = done ] || die "move $id ended '$state': $(jq -c . <<<"$out")" || return 1
  fence_ms=$(jq -r '(.move // .).counters.fence_ms' <<<"$out")
  echo "fence: ${fence_ms} ms (raised on cell $from to the route flip)"
  [ "$fence_ms" != null ] && [ "$fence_ms" -le 5000 ] || die "the fence lasted ${fence_ms} ms, want at most 5000" || return 1
  jq -e '.pulls_failed == 0 and .other_pulls_failed == 0 and .pushes_failed == 0
    and .pushes_503_without_retry_after == 0 and .pulls_ok > 0 and .other_pulls_ok > 0 and .pushes_acked > 0
    and (.pushes_503_with_retry_after == 0 or .pushes_acked_after_503 > 0)' "$TMP/move-report.json" >/dev/null ||
    die "the clients saw failures: $(jq -c 'del(.acked)' "$TMP/move-report.json")" || return 1
  # Everything acknowledged is on the new cell, byte for byte (read there
  # directly, not through the router).
  a=$(cell_addrs "$to" | head -n 1)
  timeout 300 python3 "$ml" verify --registry "http://$a" --tenant t6 --auth "$auth" --seed "$TMP/t6-seed.json" \
    --report "$TMP/move-report.json" --out "$TMP/move-verify.json" || die "cell $to does not hold t6 exactly" || return 1
  # Routed there, and nothing of t6 left on the old cell.
  map_lines "$FDIR/tenants.map" | grep -qx "t6 cell_$to" || die "tenants.map does not send t6 to cell_$to" || return 1
  live_map "$FDIR/tenants.map" | grep -qx "t6 cell_$to" || die "the router does not send t6 to cell_$to" || return 1
  on_cell_only "$to" "$from" t6/app0 v0 || return 1
  [ "$(usage_bytes "$(cell_admins "$from" | head -n 1)" t6)" = none ] || die "cell $from still knows tenant t6" || return 1
}

# The fleet service killed (SIGKILL) in the middle of a move's pre-copy
# (paced at 20 blobs a second so that it lasts seconds): restarted, it
# resumes the move, which completes with the same guarantees.
case_move_crash() {
  local out from to id i state step load_pid ml=$HERE/move_load.py auth fence_ms
  auth="$FLEET_USER:$FLEET_PASSWORD_FILE"
  WHARF_FLEET_SERVICE_ARGS="--move-max-blobs-per-sec 20" fleet stop-service || die "stop-service failed" || return 1
  WHARF_FLEET_SERVICE_ARGS="--move-max-blobs-per-sec 20" fleet start-service || die "start-service failed" || return 1
  out=$(fsvc tenants place t8 --json) || die "place t8 failed: $out" || return 1
  from=$(jq -r .cell <<<"$out")
  to=$((3 - from))
  tenant_on_cell "$from" t8 || return 1
  timeout 300 python3 "$ml" seed --router "http://$FLEET_ROUTER" --tenant t8 --auth "$auth" --images 50 \
    --out "$TMP/t8-seed.json" || die "seeding t8 failed" || return 1
  rm -f "$TMP/crash-stop"
  timeout 400 python3 "$ml" run --router "http://$FLEET_ROUTER" --tenant t8 --other t8 --auth "$auth" \
    --seed "$TMP/t8-seed.json" --other-seed "$TMP/t8-seed.json" --stop "$TMP/crash-stop" --max-secs 300 \
    --out "$TMP/crash-report.json" >"$LOGS/crash-load.log" 2>&1 &
  load_pid=$!
  out=$(fsvc tenants move t8 --to "$to" --json) || die "move t8 to cell $to failed: $out" || return 1
  id=$(jq -r '.move.id // .id' <<<"$out")
  # In the pre-copy: running, its first pass (about 100 blobs at 20/s) not done.
  for ((i = 0; i < 50; i++)); do
    out=$(fsvc moves show "$id" --json 2>/dev/null) && state=$(jq -r .state <<<"$out") && step=$(jq -r .step <<<"$out")
    [ "$state" = running ] && break
    sleep 0.1
  done
  sleep 1.5
  out=$(fsvc moves show "$id" --json) && step=$(jq -r .step <<<"$out")
  echo "killing the fleet service at step '$step' ($(jq -c .counters <<<"$out"))"
  case "$step" in started | resumed | pre-copy) ;; *) die "move $id is at '$step', not in its pre-copy" || return 1 ;; esac
  fleet kill-service || die "kill-service failed" || return 1
  sleep 2
  WHARF_FLEET_SERVICE_ARGS="--move-max-blobs-per-sec 20" fleet start-service || die "start-service after the kill failed" || return 1
  for ((i = 0; i < 240; i++)); do
    out=$(fsvc moves show "$id" --json 2>/dev/null) && state=$(jq -r .state <<<"$out")
    case "$state" in done | failed | cancelled) break ;; esac
    sleep 1
  done
  sleep 2
  touch "$TMP/crash-stop"
  wait "$load_pid"
  echo "$out" | jq -c .
  cat "$LOGS/crash-load.log"
  grep -c 'resuming a move' "$FDIR/fleet/service.log" | sed 's/^/resumed after restart (log lines): /'
  [ "$state" = done ] || die "move $id ended '$state' after the restart: $(jq -c . <<<"$out")" || return 1
  grep -q 'resuming a move' "$FDIR/fleet/service.log" || die "the restarted service did not resume the move" || return 1
  fence_ms=$(jq -r .counters.fence_ms <<<"$out")
  echo "fence: ${fence_ms} ms"
  [ "$fence_ms" != null ] && [ "$fence_ms" -le 5000 ] || die "the fence lasted ${fence_ms} ms, want at most 5000" || return 1
  jq -e '.pulls_failed == 0 and .pushes_failed == 0 and .pushes_503_without_retry_after == 0
    and .pulls_ok > 0 and .pushes_acked > 0' "$TMP/crash-report.json" >/dev/null ||
    die "the clients saw failures: $(jq -c 'del(.acked)' "$TMP/crash-report.json")" || return 1
  timeout 300 python3 "$ml" verify --registry "http://$(cell_addrs "$to" | head -n 1)" --tenant t8 --auth "$auth" \
    --seed "$TMP/t8-seed.json" --report "$TMP/crash-report.json" --out "$TMP/crash-verify.json" ||
    die "cell $to does not hold t8 exactly" || return 1
  on_cell_only "$to" "$from" t8/app0 v0 || return 1
  [ "$(usage_bytes "$(cell_admins "$from" | head -n 1)" t8)" = none ] || die "cell $from still knows tenant t8"
}

# ---- crash during the fence, cancel and roll back, a tenant user's tokens

# comma_admins N: cell N's node admin URLs, comma-separated.
comma_admins() { local v=FLEET_CELL_${1}_ADMINS; echo "${!v// /,}"; }

# create_user CELL TENANT USER ROLE: a tenant user with a password of its
# own (in $TMP/USER.password), created through a node admin API of CELL.
create_user() {
  local a code pw
  a=$(cell_admins "$1" | head -n 1)
  pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  echo "$pw" >"$TMP/$3.password"
  code=$(req "user-$3" -X PUT -H "Authorization: Bearer $(head -n 1 "$FLEET_ADMIN_TOKEN_FILE")" \
    -H 'Content-Type: application/json' -d "{\"password\":\"$pw\",\"roles\":[{\"role\":\"$4\"}]}" \
    "http://$a/admin/v1/tenants/$2/users/$3")
  case "$code" in 200 | 201) ;; *) die "PUT user $3 of $2 on cell $1: $code $(head -c 300 "$TMP/r/user-$3.b")" ;; esac
}

# fence_states CELL TENANT: "fenced" of the tenant on each node of CELL
# (a node's admin GET .../fence; 404 when the cell does not know it).
fence_states() {
  local a code out=
  for a in $(cell_admins "$1"); do
    code=$(req fence-state -H "Authorization: Bearer $(head -n 1 "$FLEET_ADMIN_TOKEN_FILE")" "http://$a/admin/v1/tenants/$2/fence")
    if [ "$code" = 200 ]; then out+="$(jq -r .fenced "$TMP/r/fence-state.b") "; else out+="$code "; fi
  done
  echo "${out% }"
}

# wait_move ID STATE... : until the move is in one of the states (and, for
# cancelled, rolled back), bounded; prints its JSON.
wait_move() {
  local id=$1 i out st step
  shift
  for ((i = 0; i < 240; i++)); do
    out=$(fsvc moves show "$id" --json 2>/dev/null) && st=$(jq -r .state <<<"$out") && step=$(jq -r .step <<<"$out")
    if [[ " $* " == *" $st "* ]] && { [ "$st" != cancelled ] || [ "$step" = rolled-back ]; }; then
      echo "$out"
      return 0
    fi
    sleep 0.5
  done
  echo "$out"
  return 1
}

# in_pre_copy ID: once the move runs, a second into its first pass (paced:
# it lasts seconds), bounded.
in_pre_copy() {
  local i
  for ((i = 0; i < 100; i++)); do
    [ "$(fsvc moves show "$1" --json 2>/dev/null | jq -r .state)" = running ] && break
    sleep 0.1
  done
  sleep 1
}

# rolled_back TENANT FROM TO ID: after a cancel, everything as before the
# move: the move cancelled and rolled back, no fence on FROM's nodes, the
# route and the service still on FROM, nothing of the tenant on TO (tenant
# unknown there, manifests 404 on its nodes, no hold of the move left),
# FROM still serving it.
# gone_on_cell CELL TENANT SECS: whether no node of CELL knows TENANT,
# polled for up to SECS seconds.
gone_on_cell() {
  local cell=$1 t=$2 secs=$3 i a known
  for ((i = 0; i < secs * 5; i++)); do
    known=
    for a in $(cell_admins "$cell"); do
      [ "$(usage_bytes "$a" "$t")" = none ] || known=$a
    done
    [ -z "$known" ] && return 0
    sleep 0.2
  done
  echo "tenant $t still known on $known"
  return 1
}

rolled_back() {
  local t=$1 from=$2 to=$3 id=$4 out f code
  out=$(wait_move "$id" cancelled) || die "move $id did not end cancelled and rolled back: $(jq -c '{state,step,error}' <<<"$out")" || return 1
  echo "move $id: $(jq -c '{state,step,error}' <<<"$out")"
  f=$(fence_states "$from" "$t")
  echo "fence on cell $from's nodes: $f"
  [ -z "$(tr ' ' '\n' <<<"$f" | grep -vx false)" ] || die "the fence is not down on every node of cell $from: $f" || return 1
  fsvc tenants where "$t" --json | jq -e --argjson c "$from" '.cell == $c and .move == null' >/dev/null ||
    die "the service does not have $t at home on cell $from with no move: $(fsvc tenants where "$t" --json | jq -c .)" || return 1
  map_lines "$FDIR/tenants.map" | grep -qx "$t cell_$from" || die "tenants.map does not send $t to cell_$from" || return 1
  live_map "$FDIR/tenants.map" | grep -qx "$t cell_$from" || die "the router does not send $t to cell_$from" || return 1
  # Every node of TO forgets the tenant within its directory refresh (1 s;
  # the rollback's delete went to whichever node answered first).
  gone_on_cell "$to" "$t" 5 || die "cell $to still knows tenant $t 5 s after the rollback" || return 1
  code=$(req holds-left -X DELETE -H "Authorization: Bearer $(head -n 1 "$FLEET_ADMIN_TOKEN_FILE")" \
    "http://$(cell_admins "$to" | head -n 1)/admin/v1/holds/fleet-move-$id")
  [ "$code" = 200 ] && [ "$(jq -r .released "$TMP/r/holds-left.b")" = 0 ] ||
    die "holds of move $id left on cell $to: $code $(cat "$TMP/r/holds-left.b")" || return 1
  on_cell_only "$from" "$to" "$t/app0" v0
}

# The fleet service killed (SIGKILL) while a move is fenced: `move_load.py
# watch` polls the move's record and the source nodes' fence every 20 ms
# and kills the service the moment the step is `fenced` (the final pass,
# the check and the flip take about half a second to a second; nothing is
# slowed down for the test). Nobody renews the fence's lease (3 s) then:
# it lapses on every source node by itself within 5 s of the kill, and the
# tenant's pushes go through at home while the service is still down.
# Restarted, the service resumes the move: a delta pass, a new fence, the
# final pass, check and flip. The guarantees of an undisturbed move hold:
# no 503 window the tenant saw lasted more than 5 s, nor did the new fence
# (raised to flip). A tenant user logged in
# on the old cell before the move keeps pulling with that access token
# across the flip, and its refresh token is honoured by the new cell. A
# cancel after the flip is refused.
case_move_fence_crash() {
  local out from to id i st step load_pid watch_pid pid ml=$HERE/move_load.py auth tl rep cancel_out= f lapsed killed_at restarted_at fence_ms
  [ -s "$TMP/t7-seed.json" ] || die "needs case tenant-move (its tenant t7 is the other tenant pulled)" || return 1
  auth="$FLEET_USER:$FLEET_PASSWORD_FILE"
  out=$(fsvc tenants place t10 --json) || die "place t10 failed: $out" || return 1
  from=$(jq -r .cell <<<"$out")
  to=$((3 - from))
  create_tenant "$from" t10 || return 1
  create_user "$from" t10 t10dev pull || return 1
  timeout 300 python3 "$ml" seed --router "http://$FLEET_ROUTER" --tenant t10 --auth "$auth" --images 50 \
    --out "$TMP/t10-seed.json" || die "seeding t10 failed" || return 1
  timeout 30 python3 "$ml" login --router "http://$FLEET_ROUTER" --user t10dev --password-file "$TMP/t10dev.password" \
    --scope "repository:t10/app0:pull" --out "$TMP/t10dev-tokens.json" || die "t10dev cannot log in" || return 1
  [[ $(jq -r .route "$TMP/t10dev-tokens.json") == "cell_$from/"* ]] || die "t10dev's login was answered by $(jq -r .route "$TMP/t10dev-tokens.json"), want cell_$from" || return 1
  rm -f "$TMP/fc-stop"
  timeout 400 python3 "$ml" run --router "http://$FLEET_ROUTER" --tenant t10 --other t7 --auth "$auth" \
    --seed "$TMP/t10-seed.json" --other-seed "$TMP/t7-seed.json" --stop "$TMP/fc-stop" --max-secs 300 \
    --user-token "$TMP/t10dev-tokens.json" --out "$TMP/fc-report.json" >"$LOGS/fc-load.log" 2>&1 &
  load_pid=$!
  sleep 2
  load_env
  pid=$FLEET_SERVICE_PID
  out=$(fsvc tenants move t10 --to "$to" --json) || die "move t10 to cell $to failed: $out" || return 1
  id=$(jq -r '.move.id // .id' <<<"$out")
  echo "move $id: t10 from cell $from to cell $to; the watcher kills the service (pid $pid) once it is fenced"
  timeout 300 python3 "$ml" watch --router "http://$FLEET_ROUTER" --tenant t10 --service "$FLEET_SERVICE_URL" \
    --service-token "$FLEET_SERVICE_TOKEN_FILE" --move "$id" --nodes "$(comma_admins "$from")" \
    --node-token "$FLEET_ADMIN_TOKEN_FILE" --stop "$TMP/fc-stop" --max-secs 240 --kill-pid "$pid" \
    --out "$TMP/fc-timeline.json" >"$LOGS/fc-watch.log" 2>&1 &
  watch_pid=$!
  for ((i = 0; i < 1200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    touch "$TMP/fc-stop"
    wait "$load_pid" "$watch_pid"
    die "the move was never seen fenced within 120 s: $(fsvc moves show "$id" --json | jq -c '{state,step}')" || return 1
  fi
  killed_at=$(date +%s.%N)
  # The fence is leased: with nobody renewing it, it lapses on every node
  # by itself and the tenant pushes at home again, the service still down.
  for ((i = 0; i < 100; i++)); do
    f=$(fence_states "$from" t10)
    [ -z "$(tr ' ' '\n' <<<"$f" | grep -vx false)" ] && break
    sleep 0.1
  done
  lapsed=$(awk -v a="$killed_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  [ -z "$(tr ' ' '\n' <<<"$f" | grep -vx false)" ] ||
    die "the fence still stands on cell $from ($f) ${lapsed} s after the service died" || return 1
  echo "fleet service killed while move $id was fenced; the fence lapsed on every node of cell $from ${lapsed} s later (lease 3 s)"
  awk -v l="$lapsed" 'BEGIN { exit !(l <= 5) }' || die "the fence outlived the dead service by ${lapsed} s, want at most 5" || return 1
  sleep 2
  restarted_at=$(date +%s.%N)
  fleet start-service || die "start-service after the kill failed" || return 1
  for ((i = 0; i < 480; i++)); do
    out=$(fsvc moves show "$id" --json 2>/dev/null) && st=$(jq -r .state <<<"$out") && step=$(jq -r .step <<<"$out")
    if [ -z "$cancel_out" ] && [ "$st" = running ] && { [ "$step" = flipped ] || [ "$step" = grace ]; }; then
      cancel_out=$(fsvc moves cancel "$id" 2>&1) && cancel_out="ACCEPTED: $cancel_out"
      echo "cancel at step $step: $cancel_out"
    fi
    case "$st" in done | failed | cancelled) break ;; esac
    sleep 0.25
  done
  # The refresh token the old cell issued, used through the router now that
  # the tenant is on the new cell.
  out=$(c -D "$TMP/r/t10dev-refresh.h" -X POST --data-urlencode grant_type=refresh_token \
    --data-urlencode "refresh_token=$(jq -r .refresh_token "$TMP/t10dev-tokens.json")" \
    --data-urlencode service=wharf --data-urlencode client_id=move-test --data-urlencode "scope=repository:t10/app0:pull" \
    "http://$FLEET_ROUTER/auth/token")
  sleep 2
  touch "$TMP/fc-stop"
  wait "$load_pid"
  wait "$watch_pid"
  cat "$LOGS/fc-load.log" "$LOGS/fc-watch.log"
  tl=$TMP/fc-timeline.json
  rep=$TMP/fc-report.json
  echo "move $id: $(fsvc moves show "$id" --json | jq -c '{state,step,counters,error}')"
  [ "$st" = done ] || die "move $id ended '$st' after the restart: $(jq -c . <<<"$out")" || return 1
  jq -e '.action.step == "fenced" and (.action.what | startswith("SIGKILL"))' "$tl" >/dev/null ||
    die "the service was not killed in the fenced step: $(jq -c .action "$tl")" || return 1
  [[ $(jq -r .action.route "$tl") == "cell_$from" ]] || die "the route had flipped already when the service was killed: $(jq -c .action "$tl")" || return 1
  grep -q 'resumed after its fence' "$FDIR/fleet/service.log" ||
    die "the restarted service did not resume the move from its fenced step" || return 1
  echo "fence as the tenant saw it: first 503 to first 201 after it: $(jq -r .fence_seen_secs "$rep") s" \
    "(503s with Retry-After: $(jq -r .pushes_503_with_retry_after "$rep"))"
  echo "fence on the nodes: up to the route flip $(jq -r .fence_up_to_flip_secs "$tl") s," \
    "up to down (after the grace, with the tenant removed) $(jq -r .fence_up_to_down_secs "$tl") s;" \
    "service killed $(jq -r '(.action.at - .fence_up_at) * 1000 | floor' "$tl") ms after the fence went up"
  [ "$(jq -r .fence_up_to_flip_secs "$tl")" != null ] || die "the watcher saw no fence or no route flip: $(jq -c . "$tl")" || return 1
  echo "the tenant's 503 windows (first to last 503, s): $(jq -c '[.fence_windows[].refused_secs]' "$rep")"
  jq -e '.fence_windows | length > 0 and all(.refused_secs <= 5)' "$rep" >/dev/null ||
    die "a fence window lasted more than 5 s: $(jq -c .fence_windows "$rep")" || return 1
  jq -e --argjson k "$killed_at" --argjson r "$restarted_at" \
    'any(.fence_windows[]; .first_503 < $k and .first_201_after != null and .first_201_after < $r)' "$rep" >/dev/null ||
    die "no push went through between the lapse and the restart: $(jq -c .fence_windows "$rep")" || return 1
  fence_ms=$(jq -r '.counters.fence_ms' <<<"$(fsvc moves show "$id" --json)")
  echo "the restarted service's fence: ${fence_ms} ms (raised on cell $from to the route flip)"
  [ "$fence_ms" != null ] && [ "$fence_ms" -le 5000 ] || die "the new fence lasted ${fence_ms} ms, want at most 5000" || return 1
  jq -e '.pulls_failed == 0 and .other_pulls_failed == 0 and .user_pulls_failed == 0 and .pushes_failed == 0
    and .pushes_503_without_retry_after == 0 and .pulls_ok > 0 and .user_pulls_ok > 0 and .pushes_acked > 0
    and (.pushes_503_with_retry_after == 0 or .pushes_acked_after_503 > 0)' "$rep" >/dev/null ||
    die "the clients saw failures: $(jq -c 'del(.acked)' "$rep")" || return 1
  echo "t10dev pulled $(jq -r .user_pulls_ok "$rep") times with the token cell $from issued, none failed"
  jq -e '.access_token | length > 0' <<<"$out" >/dev/null || die "the old cell's refresh token was refused after the move: $out" || return 1
  [[ $(header "$TMP/r/t10dev-refresh.h" X-Wharf-Route) == "cell_$to/"* ]] || die "the refresh was answered by $(header "$TMP/r/t10dev-refresh.h" X-Wharf-Route), want cell_$to" || return 1
  [ "$(manifest_code "$(cell_addrs "$to" | head -n 1)" t10/app0 v0 "$(jq -r .access_token <<<"$out")")" = 200 ] ||
    die "the token the new cell issued on refresh does not pull there" || return 1
  echo "t10dev's refresh token from cell $from: honoured by cell $to"
  [ -n "$cancel_out" ] || die "the move was never seen between its flip and its end, so no cancel was tried" || return 1
  [[ $cancel_out != ACCEPTED* ]] && grep -q 'flipped its route already' <<<"$cancel_out" ||
    die "a cancel after the flip was not refused clearly: $cancel_out" || return 1
  timeout 300 python3 "$ml" verify --registry "http://$(cell_addrs "$to" | head -n 1)" --tenant t10 --auth "$auth" \
    --seed "$TMP/t10-seed.json" --report "$rep" --out "$TMP/fc-verify.json" || die "cell $to does not hold t10 exactly" || return 1
  on_cell_only "$to" "$from" t10/app0 v0 || return 1
  [ "$(usage_bytes "$(cell_admins "$from" | head -n 1)" t10)" = none ] || die "cell $from still knows tenant t10"
}

# `wharf fleet moves cancel` rolls a move back: cancelled during its
# pre-copy (paced at 20 blobs a second so that it lasts seconds), cancelled
# while fenced (the watcher cancels the moment the step is `fenced`), and
# cancelled with the service killed (SIGKILL) right after the cancel
# request, so that the restarted service rolls it back. Each time the move
# ends cancelled and rolled back with the tenant still at home, unfenced,
# and nothing of it on the other cell; its clients pushed and pulled
# throughout without a failure, and the source still holds every image.
case_move_cancel() {
  local out from to id i step load_pid ml=$HERE/move_load.py auth rep args="--move-max-blobs-per-sec 20"
  [ -s "$TMP/t7-seed.json" ] || die "needs case tenant-move (its tenant t7 is the other tenant pulled)" || return 1
  auth="$FLEET_USER:$FLEET_PASSWORD_FILE"
  WHARF_FLEET_SERVICE_ARGS="$args" fleet stop-service || die "stop-service failed" || return 1
  WHARF_FLEET_SERVICE_ARGS="$args" fleet start-service || die "start-service failed" || return 1
  out=$(fsvc tenants place t11 --json) || die "place t11 failed: $out" || return 1
  from=$(jq -r .cell <<<"$out")
  to=$((3 - from))
  create_tenant "$from" t11 || return 1
  timeout 300 python3 "$ml" seed --router "http://$FLEET_ROUTER" --tenant t11 --auth "$auth" --images 40 \
    --out "$TMP/t11-seed.json" || die "seeding t11 failed" || return 1
  rm -f "$TMP/mc-stop"
  timeout 400 python3 "$ml" run --router "http://$FLEET_ROUTER" --tenant t11 --other t7 --auth "$auth" \
    --seed "$TMP/t11-seed.json" --other-seed "$TMP/t7-seed.json" --stop "$TMP/mc-stop" --max-secs 300 \
    --out "$TMP/mc-report.json" >"$LOGS/mc-load.log" 2>&1 &
  load_pid=$!
  sleep 2

  # 1. Cancelled in the pre-copy.
  out=$(fsvc tenants move t11 --to "$to" --json) || die "move t11 failed: $out" || return 1
  id=$(jq -r '.move.id // .id' <<<"$out")
  in_pre_copy "$id"
  step=$(fsvc moves show "$id" --json | jq -r .step)
  out=$(fsvc moves cancel "$id" --json) || die "cancel of move $id at step '$step' refused: $out" || return 1
  echo "move $id cancelled at step '$step'"
  case "$step" in started | pre-copy) ;; *) die "move $id was at '$step', not in its pre-copy" || return 1 ;; esac
  rolled_back t11 "$from" "$to" "$id" || return 1

  # 2. Cancelled while fenced.
  out=$(fsvc tenants move t11 --to "$to" --json) || die "second move of t11 failed: $out" || return 1
  id=$(jq -r '.move.id // .id' <<<"$out")
  rm -f "$TMP/mc-watch-stop"
  timeout 200 python3 "$ml" watch --router "http://$FLEET_ROUTER" --tenant t11 --service "$FLEET_SERVICE_URL" \
    --service-token "$FLEET_SERVICE_TOKEN_FILE" --move "$id" --nodes "$(comma_admins "$from")" \
    --node-token "$FLEET_ADMIN_TOKEN_FILE" --stop "$TMP/mc-watch-stop" --max-secs 150 --cancel \
    --out "$TMP/mc-timeline.json" >"$LOGS/mc-watch.log" 2>&1 ||
    die "the watcher failed: $(tail -n 5 "$LOGS/mc-watch.log")" || return 1
  cat "$LOGS/mc-watch.log"
  jq -e '.action.step == "fenced" and (.action.what | startswith("cancel -> 200"))' "$TMP/mc-timeline.json" >/dev/null ||
    die "the move was not cancelled in its fenced step: $(jq -c .action "$TMP/mc-timeline.json")" || return 1
  echo "move $id cancelled while fenced; fence up to down on the nodes: $(jq -r .fence_up_to_down_secs "$TMP/mc-timeline.json") s"
  rolled_back t11 "$from" "$to" "$id" || return 1

  # 3. The service killed right after the cancel: the restarted one rolls back.
  out=$(fsvc tenants move t11 --to "$to" --json) || die "third move of t11 failed: $out" || return 1
  id=$(jq -r '.move.id // .id' <<<"$out")
  in_pre_copy "$id"
  step=$(fsvc moves show "$id" --json | jq -r .step)
  fsvc moves cancel "$id" >/dev/null && fleet kill-service || die "cancel then kill of move $id failed" || return 1
  out=$(c -s "http://$(cell_admins "$to" | head -n 1)/admin/v1/tenants/t11/usage" \
    -H "Authorization: Bearer $(head -n 1 "$FLEET_ADMIN_TOKEN_FILE")" | jq -c '{bytes,repositories}' 2>/dev/null)
  echo "move $id cancelled at step '$step' and the service killed; cell $to holds of t11: ${out:-nothing}"
  WHARF_FLEET_SERVICE_ARGS="$args" fleet start-service || die "start-service after the kill failed" || return 1
  rolled_back t11 "$from" "$to" "$id" || return 1
  grep -q 'cancelled move rolled back' "$FDIR/fleet/service.log" || die "the restarted service did not roll the move back" || return 1

  sleep 1
  touch "$TMP/mc-stop"
  wait "$load_pid"
  cat "$LOGS/mc-load.log"
  rep=$TMP/mc-report.json
  jq -e '.pulls_failed == 0 and .other_pulls_failed == 0 and .pushes_failed == 0
    and .pushes_503_without_retry_after == 0 and .pulls_ok > 0 and .pushes_acked > 0
    and (.pushes_503_with_retry_after == 0 or .pushes_acked_after_503 > 0)' "$rep" >/dev/null ||
    die "the clients saw failures: $(jq -c 'del(.acked)' "$rep")" || return 1
  timeout 300 python3 "$ml" verify --registry "http://$(cell_addrs "$from" | head -n 1)" --tenant t11 --auth "$auth" \
    --seed "$TMP/t11-seed.json" --report "$rep" --out "$TMP/mc-verify.json" || die "cell $from lost some of t11" || return 1
}

# ---------------------------------------------------------------- growth

# The growth case runs a small fleet of its own (its cells registered with
# a storage capacity of GROWTH_CAP bytes, so that a few megabytes of pushes
# cross the thresholds) beside the main one, and a real Prometheus that
# scrapes the fleet service with the shipped alert rules loaded.
GROWTH_DIR=$TMP/growth
GROWTH_CAP=4000000
GROWTH_LAYER=100000

# prom_series URL EXPR START END: the series EXPR had between START and
# END (unix seconds, 1 s steps), as JSON lines {labels, samples, first,
# last, max} from Prometheus's HTTP API (query_range).
prom_series() {
  timeout 30 python3 - "$@" <<'PY'
import json, sys, urllib.parse, urllib.request
url, expr, start, end = sys.argv[1:5]
q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
with urllib.request.urlopen(f"{url}/api/v1/query_range?{q}", timeout=20) as r:
    body = json.load(r)
if body.get("status") != "success":
    sys.exit(f"query failed: {body}")
for s in body["data"]["result"]:
    vals = [(float(t), float(v)) for t, v in s["values"]]
    print(json.dumps({"labels": s["metric"], "samples": len(vals), "first": vals[0][0], "last": vals[-1][0],
                      "min": round(min(v for _, v in vals), 4), "max": round(max(v for _, v in vals), 4)}))
PY
}

# prom_diag URL SINCE: what Prometheus holds of the service since SINCE,
# for a failure's message: its scrapes (up, duration) and the raw storage
# utilisation and warning levels, summarised per series.
prom_diag() {
  local e
  for e in 'up{job="wharf-fleet"}' 'scrape_duration_seconds{job="wharf-fleet"}' \
    'wharf_fleet_cell_utilisation{dimension="storage_bytes"}' \
    'wharf_fleet_cell_threshold{dimension="storage_bytes"}'; do
    echo "$e:"
    prom_series "$1" "$e" "$2" "$(date +%s)" 2>&1 | sed 's/^/  /'
  done
  [ -n "$LOGS" ] && [ -s "$LOGS/growth-prometheus.log" ] && tail -n 5 "$LOGS/growth-prometheus.log"
  return 0
}

# prom_now URL EXPR: the series EXPR has now (instant query), JSON lines.
prom_now() {
  timeout 30 python3 - "$@" <<'PY'
import json, sys, urllib.parse, urllib.request
url, expr = sys.argv[1:3]
with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=20) as r:
    body = json.load(r)
if body.get("status") != "success":
    sys.exit(f"query failed: {body}")
for s in body["data"]["result"]:
    print(json.dumps({"labels": s["metric"], "value": s["value"][1]}))
PY
}

# rule_expr NAME: the expression of alert NAME in the shipped fleet rules
# (their `for:` is left out: the case lasts seconds, not minutes).
rule_expr() {
  timeout 10 python3 - "$ROOT/deploy/prometheus/wharf-fleet-alerts.yml" "$1" <<'PY'
import sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
expr = [r["expr"] for r in rules if r.get("alert") == sys.argv[2]]
if len(expr) != 1:
    sys.exit(f"no alert {sys.argv[2]} in {sys.argv[1]}")
print(" ".join(expr[0].split()))
PY
}

# storage_of CELLS_JSON CELL: the cell's used storage bytes and utilisation
# as the service sees them ("bytes ratio usage").
storage_of() {
  jq -r --argjson c "$2" '.cells[] | select(.id == $c) | "\(.used.storage_bytes) \(.utilisation.storage_bytes) \(.usage)"' <<<"$1"
}

# wait_storage CELL OP RATIO SECS: until the service reads cell CELL's
# storage utilisation OP (ge, lt) RATIO from fresh figures (bounded).
wait_storage() {
  local cell=$1 op=$2 want=$3 secs=$4 i out b u f
  for ((i = 0; i < secs * 2; i++)); do
    out=$(fsvc cells list --json 2>/dev/null) && read -r b u f <<<"$(storage_of "$out" "$cell")"
    if [ "$f" = fresh ] && python3 -c "import sys; u, w = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if (u >= w if sys.argv[3] == 'ge' else u < w) else 1)" "$u" "$want" "$op" 2>/dev/null; then
      echo "cell $cell: $b bytes stored, ${u} of its storage capacity"
      return 0
    fi
    sleep 0.5
  done
  die "cell $cell's storage did not get $op $want within ${secs}s (last: $b bytes, $u, $f)"
}

stop_growth() {
  [ -f "$TMP/growth.prom.pid" ] && stop_pid "$(cat "$TMP/growth.prom.pid")" 10
  rm -f "$TMP/growth.prom.pid"
  if [ -f "$TMP/growth.started" ]; then
    timeout 120 bash "$FLEET_SH" stop "$GROWTH_DIR" >>"$LOGS/growth-stop.log" 2>&1 || echo "growth fleet stop failed; see $LOGS/growth-stop.log"
    rm -f "$TMP/growth.started"
  fi
}

# Growth: tenants placed on a fleet of two cells of GROWTH_CAP bytes of
# storage each, pushes through the router into the tenants of one cell
# until it crosses the warning level (60%) and then the threshold (70%);
# the fleet service, by its threshold trigger alone (its schedule is an
# hour, and nothing here applies a plan), plans and executes moves until
# every cell is under the threshold. Meanwhile a bounded puller fetches
# the hot cell's tenants' images through the router: none may fail. At
# the end every image is byte-identical where its tenant now lives, the
# decisions say why, and the shipped rules' expressions, evaluated by a
# real Prometheus on the service's scraped figures, were true on the way
# and are false at the end.
case_growth() {
  local rc
  (growth_run)
  rc=$?
  stop_growth
  return $rc
}

growth_run() {
  local ml=$HERE/move_load.py auth out t cell i hot cold a b u f t0 t_cross t_settled
  local -a tenants=(g1 g2 g3 g4) hot_tenants=() cold_tenants=()
  local -A home=()
  need prometheus || return 1
  FDIR=$GROWTH_DIR
  export WHARF_FLEET_PORT WHARF_FLEET_PG_PORT WHARF_FLEET_CELL_PG_PORT WHARF_FLEET_GARAGE_PORT WHARF_FLEET_SERVICE_PORT
  WHARF_FLEET_PORT=$(free_port) && WHARF_FLEET_SERVICE_PORT=$(free_port) &&
    WHARF_FLEET_PG_PORT=$(free_port) && WHARF_FLEET_CELL_PG_PORT=$(free_port 2) &&
    WHARF_FLEET_GARAGE_PORT=$(free_port 14) || die "no free ports" || return 1
  export WHARF_FLEET_CELLS=2 WHARF_FLEET_NODES=2 WHARF_FLEET_GRACE=3 WHARF_FLEET_SERVICE=1
  export WHARF_FLEET_CAP_STORAGE=$GROWTH_CAP WHARF_FLEET_MOVE_GRACE=2
  export WHARF_FLEET_SERVICE_ARGS="--rebalance-interval 3600"
  t0=$SECONDS
  touch "$TMP/growth.started"
  fleet start || die "scripts/fleet.sh start $GROWTH_DIR failed" || return 1
  echo "growth fleet up in $((SECONDS - t0))s: router $FLEET_ROUTER, service $FLEET_SERVICE_URL"
  auth="$FLEET_USER:$FLEET_PASSWORD_FILE"

  # Prometheus scrapes the fleet service every second, with the shipped
  # rules loaded and evaluated every second.
  local pdir=$GROWTH_DIR/prometheus pport prom
  pport=$(free_port) || die "no free port for Prometheus" || return 1
  prom=http://127.0.0.1:$pport
  mkdir -p "$pdir"
  cat >"$pdir/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/wharf-fleet-alerts.yml
scrape_configs:
  - job_name: wharf-fleet
    static_configs:
      - targets: ['${FLEET_SERVICE_URL#http://}']
YML
  prometheus --config.file="$pdir/prometheus.yml" --storage.tsdb.path="$pdir/data" \
    --web.listen-address="127.0.0.1:$pport" --log.level=warn >"$LOGS/growth-prometheus.log" 2>&1 &
  echo $! >"$TMP/growth.prom.pid"

  # Tenants placed by the service (each reserving 50 kB, so that they
  # spread), and created on their cells by it.
  for t in "${tenants[@]}"; do
    out=$(fsvc tenants place "$t" --storage-bytes 50000 --json) || die "place $t failed: $out" || return 1
    [ "$(jq -r .created_on_cell <<<"$out")" = created ] || die "$t not created on its cell: $out" || return 1
    home[$t]=$(jq -r .cell <<<"$out")
    echo "$t -> cell ${home[$t]}"
  done
  hot=${home[g1]}
  cold=$((3 - hot))
  for t in "${tenants[@]}"; do
    if [ "${home[$t]}" = "$hot" ]; then hot_tenants+=("$t"); else cold_tenants+=("$t"); fi
  done
  [ "${#hot_tenants[@]}" -ge 2 ] || die "want two tenants on cell $hot to grow, got ${hot_tenants[*]}" || return 1
  a=${hot_tenants[0]} b=${hot_tenants[1]}
  for t in "${tenants[@]}"; do
    timeout 120 python3 "$ml" seed --router "http://$FLEET_ROUTER" --tenant "$t" --auth "$auth" --images 6 \
      --out "$TMP/growth-$t.json" >/dev/null || die "seeding $t failed" || return 1
  done
  for ((i = 0; i < 60; i++)); do
    [ "$(c -o /dev/null -w '%{http_code}' "$prom/-/ready" 2>/dev/null)" = 200 ] && break
    sleep 0.5
  done
  c "$prom/api/v1/rules" | jq -e '[.data.groups[].rules[].name] | index("WharfFleetCellOverThreshold")' >/dev/null ||
    die "Prometheus ($prom) has not loaded the fleet rules; see $LOGS/growth-prometheus.log" || return 1
  out=$(fsvc cells list --json) || return 1
  local before_hot before_cold
  before_hot=$(storage_of "$out" "$hot") before_cold=$(storage_of "$out" "$cold")
  echo "before: cell $hot (${hot_tenants[*]}) ${before_hot% *}, cell $cold (${cold_tenants[*]}) ${before_cold% *} (bytes, ratio)"

  # Round 1: into the warning band (13 images of 100 kB into each of two
  # tenants: about 66% of 4 MB). The nodes report stored bytes every ~15 s.
  local t_warn t_round2
  t_warn=$(date +%s)
  for t in "$a" "$b"; do
    timeout 120 python3 "$ml" grow --router "http://$FLEET_ROUTER" --tenant "$t" --auth "$auth" \
      --images 13 --layer-bytes "$GROWTH_LAYER" --seed "$TMP/growth-$t.json" || die "growing $t failed" || return 1
  done
  wait_storage "$hot" ge 0.6 40 || return 1
  # Prometheus has scraped it too before the next round (bounded).
  local near over
  over=$(rule_expr WharfFleetCellOverThreshold) && near=$(rule_expr WharfFleetCellNearThreshold) || return 1
  # Round 2 starts only once Prometheus has seen the warning band: on a
  # loaded machine a scrape of the service can miss its 1 s timeout, and
  # a missed scrape marks the series stale until the next one.
  local seen_near=
  for ((i = 0; i < 120; i++)); do
    seen_near=$(prom_now "$prom" "$near" 2>/dev/null)
    [ -n "$seen_near" ] && break
    sleep 0.5
  done
  [ -n "$seen_near" ] || die "Prometheus did not see cell $hot in its warning band within 60 s of the service
$(prom_diag "$prom" "$t_warn")" || return 1
  # Two more scrapes in the band: the check below reads the band back at
  # whole-second steps up to t_round2, and a sighting less than a second
  # before round 2 could fall between two steps (seen once in CI).
  sleep 2
  out=$(fsvc moves list --json) || return 1
  [ "$(jq '.moves | length' <<<"$out")" = 0 ] || die "moves below the threshold: $(jq -c . <<<"$out")" || return 1

  # The puller, from here to the end of the moves: the hot cell's two
  # grown tenants (one of them is what the service will move), and a
  # pusher of small tags into the first.
  rm -f "$TMP/growth-stop"
  timeout 200 python3 "$ml" run --router "http://$FLEET_ROUTER" --tenant "$a" --other "$b" --auth "$auth" \
    --seed "$TMP/growth-$a.json" --other-seed "$TMP/growth-$b.json" --stop "$TMP/growth-stop" --max-secs 150 \
    --out "$TMP/growth-load.json" >"$LOGS/growth-load.log" 2>&1 &
  local load_pid=$!

  # Round 2: over the threshold (3 more each: about 81%).
  t_round2=$(date +%s)
  for t in "$a" "$b"; do
    timeout 120 python3 "$ml" grow --router "http://$FLEET_ROUTER" --tenant "$t" --auth "$auth" \
      --images 3 --layer-bytes "$GROWTH_LAYER" --seed "$TMP/growth-$t.json" || die "growing $t failed" || return 1
  done
  # The service's own: a move recorded by its threshold trigger.
  local n moves state
  t_cross=
  for ((i = 0; i < 120; i++)); do
    out=$(fsvc cells list --json 2>/dev/null) && read -r _ u _ <<<"$(storage_of "$out" "$hot")"
    [ -z "$t_cross" ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.7 else 1)" "$u" 2>/dev/null &&
      t_cross=$SECONDS && echo "cell $hot read at $u of its storage: over the threshold"
    moves=$(fsvc moves list --json 2>/dev/null) && n=$(jq '.moves | length' <<<"$moves")
    [ "${n:-0}" -gt 0 ] && break
    sleep 0.5
  done
  [ "${n:-0}" -gt 0 ] || die "the service recorded no move within 60 s of the growth (cell $hot at $u)" || return 1
  t_cross=${t_cross:-$SECONDS}
  echo "first move recorded $((SECONDS - t_cross))s after the service read the crossing"
  # Until every move ended and every cell is under the threshold.
  local all_under
  for ((i = 0; i < 240; i++)); do
    moves=$(fsvc moves list --json 2>/dev/null) || { sleep 0.5; continue; }
    state=$(jq -r '[.moves[] | select(.state == "planned" or .state == "running")] | length' <<<"$moves")
    out=$(fsvc cells list --json 2>/dev/null) || { sleep 0.5; continue; }
    all_under=$(jq -r '[.cells[] | select(.usage != "fresh" or .utilisation.storage_bytes >= .threshold.storage_bytes)] | length' <<<"$out")
    [ "$state" = 0 ] && [ "$all_under" = 0 ] && break
    sleep 0.5
  done
  t_settled=$SECONDS
  # A few more scrapes for Prometheus and the service, then the puller stops.
  sleep 4
  touch "$TMP/growth-stop"
  wait "$load_pid"
  cat "$LOGS/growth-load.log"
  out=$(fsvc cells list --json) || return 1
  moves=$(fsvc moves list --json) || return 1
  local after_hot after_cold
  after_hot=$(storage_of "$out" "$hot") after_cold=$(storage_of "$out" "$cold")

  # The figures.
  echo "after:  cell $hot ${after_hot% *}, cell $cold ${after_cold% *} (bytes, ratio)"
  echo "moves:"
  jq -r '.moves[] | "  move \(.id): \(.tenant) cell \(.from) -> cell \(.to), \(.state); fence \(.counters.fence_ms) ms; \(.reason)"' <<<"$moves"
  echo "settled $((t_settled - t_cross))s after the service read the crossing"
  jq -c 'del(.acked, .samples)' "$TMP/growth-load.json"
  echo "decisions:"
  fsvc decisions --limit 30 | grep -v ' place \| create ' | sed 's/^/  /'

  # Every cell ends under its threshold, read fresh.
  [ "$state" = 0 ] && [ "$all_under" = 0 ] ||
    die "not settled within 120 s: $state move(s) in flight, $all_under cell(s) not under the threshold" || return 1
  # The moves: the service's own, out of the hot cell, of the grown
  # tenants, done, each with its reason; and the decision that made them.
  jq -e --argjson h "$hot" --arg a "$a" --arg b "$b" '(.moves | length) > 0 and all(.moves[];
      .state == "done" and .from == $h and (.tenant == $a or .tenant == $b)
      and (.reason | test("relieves cell \($h): storage")))' <<<"$moves" >/dev/null ||
    die "unexpected moves: $(jq -c '[.moves[] | {id, tenant, from, to, state, reason}]' <<<"$moves")" || return 1
  out=$(fsvc decisions --json --limit 200) || return 1
  jq -e '[.decisions[] | select(.kind == "rebalance" and (.reason | test("^threshold crossed: [1-9]")))] | length > 0' <<<"$out" >/dev/null ||
    die "no decision says the threshold trigger recorded the moves" || return 1
  ! jq -e '[.decisions[] | select(.reason | test("^scheduled rebalance"))] | length > 0' <<<"$out" >/dev/null ||
    die "a scheduled rebalance ran: the threshold trigger alone was to act" || return 1
  # No failed pull of the moved tenants' images (nor a failed push).
  jq -e '.pulls_failed == 0 and .other_pulls_failed == 0 and .pulls_ok > 0 and .other_pulls_ok > 0
    and .pushes_failed == 0 and .pushes_503_without_retry_after == 0' "$TMP/growth-load.json" >/dev/null ||
    die "the clients saw failures: $(jq -c 'del(.acked)' "$TMP/growth-load.json")" || return 1
  # Every image byte-identical where its tenant lives now (a node of that
  # cell, directly), and nothing of a moved tenant left behind.
  echo '{"acked": []}' >"$TMP/growth-none.json"
  for t in "${tenants[@]}"; do
    cell=$(fsvc tenants where "$t" --json | jq -r .cell)
    local report=$TMP/growth-none.json
    [ "$t" = "$a" ] && report=$TMP/growth-load.json
    timeout 120 python3 "$ml" verify --registry "http://$(cell_addrs "$cell" | head -n 1)" --tenant "$t" --auth "$auth" \
      --seed "$TMP/growth-$t.json" --report "$report" --out "$TMP/growth-verify-$t.json" >/dev/null ||
      die "cell $cell does not hold $t exactly: $(head -c 500 "$TMP/growth-verify-$t.json")" || return 1
    echo "$t on cell $cell: $(jq -r '"\(.identical)/\(.images) images identical"' "$TMP/growth-verify-$t.json")"
    if [ "$cell" != "${home[$t]}" ]; then
      [ "$(usage_bytes "$(cell_admins "${home[$t]}" | head -n 1)" "$t")" = none ] ||
        die "cell ${home[$t]} still holds moved tenant $t" || return 1
    fi
  done

  # The alerts: the shipped rules' expressions, evaluated by Prometheus on
  # the service's scraped figures (without their `for:`).
  local now_over now_near now
  now=$(date +%s)
  local s_near s_over s_pending
  s_near=$(prom_series "$prom" "$near" "$t_warn" "$t_round2") || die "Prometheus query failed" || return 1
  s_over=$(prom_series "$prom" "$over" "$t_round2" "$now") || die "Prometheus query failed" || return 1
  s_pending=$(prom_series "$prom" 'ALERTS{alertname="WharfFleetCellOverThreshold",alertstate="pending"}' "$t_round2" "$now")
  echo "near-threshold expression during round 1: ${s_near:-none}"
  echo "over-threshold expression during round 2 and the moves: ${s_over:-none}"
  echo "WharfFleetCellOverThreshold pending (its for: 5m not reached): ${s_pending:-none}"
  grep -q "\"cell\": \"$hot\", \"dimension\": \"storage_bytes\"" <<<"$s_near" ||
    die "the near-threshold expression was never true for cell $hot's storage
$(prom_diag "$prom" "$t_warn")" || return 1
  grep -q "\"cell\": \"$hot\", \"dimension\": \"storage_bytes\"" <<<"$s_over" ||
    die "the over-threshold expression was never true for cell $hot's storage
$(prom_diag "$prom" "$t_warn")" || return 1
  grep -q "\"cell\": \"$hot\"" <<<"$s_pending" || die "Prometheus never had the alert pending" || return 1
  now_over=$(prom_now "$prom" "$over") && now_near=$(prom_now "$prom" "$near") || die "Prometheus query failed" || return 1
  echo "at the end: over ${now_over:-none}; near ${now_near:-none}"
  [ -z "$now_over" ] || die "the over-threshold expression is still true at the end: $now_over" || return 1
  [ -z "$now_near" ] || die "the near-threshold expression is still true at the end: $now_near"
}

case_fleet_stop() {
  local pids p
  load_env
  # shellcheck disable=SC2153 # fleet.env's
  pids="${FLEET_SERVICE_PID:-} $FLEET_ROUTER_PID $FLEET_CELL_1_NODE1_PID $FLEET_CELL_1_NODE2_PID $FLEET_CELL_2_NODE1_PID $FLEET_CELL_2_NODE2_PID"
  fleet stop || die "scripts/fleet.sh stop failed" || return 1
  FLEET_STARTED=0
  for p in $pids; do
    ! kill -0 "$p" 2>/dev/null || die "pid $p still runs after stop" || return 1
  done
  ! fleet status >"$TMP/status-after-stop" 2>&1 || die "status says all is up after stop" || return 1
  cat "$TMP/status-after-stop"
  grep -q '^router     down' "$TMP/status-after-stop" && grep -q '^fleet-db   down' "$TMP/status-after-stop" ||
    die "status after stop does not show the router and the fleet database down" || return 1
  [ "$(grep -c 'node[0-9]      down' "$TMP/status-after-stop")" = 4 ] || die "not all four nodes are down" || return 1
  [ "$(c -o /dev/null -w '%{http_code}' "http://$FLEET_ROUTER/v2/" 2>/dev/null)" = 000 ] || die "the router's port still answers"
}

# ---------------------------------------------------------------- main

selected() { [ -z "${WHARF_CASES:-}" ] || [[ ",${WHARF_CASES// /}," == *",$1,"* ]]; }
maybe() { # maybe NAME FUNCTION: run_case when selected
  selected "$1" || return 0
  run_case "$@"
}

echo "fleet run: temp dir $TMP"
if ! run_case fixtures case_fixtures; then
  fail_case fleet-remaining "no test images; see $LOGS/fixtures.log"
  DONE=1
  summary
  exit 1
fi
if run_case fleet-start case_fleet_start; then
  if maybe tenants-routed case_tenants_routed; then
    if maybe push-pull-routed case_push_pull_routed; then
      maybe route-by-host case_route_by_host
      maybe route-by-path case_route_by_path
      maybe token-by-scope case_token_by_scope
      maybe route-flip case_route_flip
      maybe router-restart case_router_restart
      maybe node-restart case_node_restart
      maybe cell-down case_cell_down
      if selected service-start || selected service-places || selected service-scrapes || selected service-down ||
        selected tenant-move || selected move-crash || selected move-fence-crash || selected move-cancel; then
        if run_case service-start case_service_start; then
          maybe service-places case_service_places
          maybe service-scrapes case_service_scrapes
          maybe service-down case_service_down
          maybe tenant-move case_tenant_move
          maybe move-crash case_move_crash
          maybe move-fence-crash case_move_fence_crash
          maybe move-cancel case_move_cancel
        fi
      fi
    fi
  fi
else
  fail_case fleet-remaining "the fleet did not start; see $LOGS/fleet-start.log and $FDIR"
fi
maybe growth case_growth
run_case fleet-stop case_fleet_stop

DONE=1
summary
[ "$FAILED" -eq 0 ]
