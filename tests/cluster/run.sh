#!/usr/bin/env bash
# Multi-node tests of Wharf: three `wharf serve` nodes sharing one PostgreSQL
# (metadata) and one Garage (S3 blobs) behind HAProxy, all on loopback
# (scripts/cluster.sh), driven by real clients (skopeo, docker, curl), with
# nodes killed and dependencies stopped on purpose.
#
#   WHARF_BIN=target/release/wharf bash tests/cluster/run.sh
#
# Environment:
#   WHARF_BIN                   the wharf binary [target/release/wharf]
#   WHARF_CLUSTER_PORT          the load balancer's port [a free one]
#   WHARF_CLUSTER_PG_PORT       PostgreSQL's port [a free one]
#   WHARF_CLUSTER_GARAGE_PORT   Garage's port base (+1 and +3 are used too) [a free one]
#   WHARF_CLUSTER_SKIP_DOCKER=1 skip the docker cases (otherwise a dockerd
#                               that cannot start is a FAIL, not a silent skip)
#   WHARF_CLUSTER_KEEP=1        keep the temp dir (logs, layouts) after the run
#   WHARF_CLUSTER_BUDGET        seconds the whole run may take [720]
#   WHARF_LOAD_BIN              wharf-load, for gc-race-cluster [target/release/wharf-load]
#   WHARF_CLUSTER_GC_RACE_SECS  how long gc-race-cluster races [60]
#   WHARF_CLUSTER_GC_INTERVAL   each node's --gc-interval-secs in gc-race-cluster [1]
#   WHARF_CASES                 run only these groups, comma-separated: `core`
#                               (every case but the one below), `gc-race-cluster`
#                               [all]; the fixtures and the cluster always start
#
# Build first: cargo build --release -p wharf -p wharf-load
#
# Each check prints `PASS name` or `FAIL name (reason)`; the run ends with
# exactly one line `cluster: N passed, M failed` and exits non-zero if M > 0.
# Every wait and every client call is bounded by a timeout.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
CLUSTER_SH=$ROOT/scripts/cluster.sh
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wharf-cluster.XXXXXX")
# PostgreSQL runs as the `postgres` user when we are root and must reach
# $TMP/cluster/postgres: let it traverse (not list) the temp dir.
chmod 711 "$TMP"
LOGS=$TMP/logs
CDIR=$TMP/cluster
mkdir -p "$LOGS"

PASSED=0
FAILED=0
FAILED_NAMES=()
DOCKERD_PID=
WATCHDOG_PID=
CLUSTER_STARTED=0
DONE=0

SUITE=cluster
# shellcheck source=../harness.sh
source "$HERE/../harness.sh"

cleanup() {
  [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null
  stop_dockerd
  local stop_failed=0
  if [ "$CLUSTER_STARTED" = 1 ]; then
    timeout 120 bash "$CLUSTER_SH" stop "$CDIR" >>"$LOGS/cluster-stop.log" 2>&1 || {
      # The directory stays: its log says why, and what did not stop
      # still runs from it.
      echo "cluster stop failed; see $LOGS/cluster-stop.log (kept)"
      stop_failed=1
    }
    CLUSTER_STARTED=0
  fi
  if [ "$FAILED" -gt 0 ] || [ "$stop_failed" = 1 ] || [ "${WHARF_CLUSTER_KEEP:-0}" = 1 ]; then
    return
  fi
  # docker vfs layers may hold read-only dirs; make them removable.
  chmod -R u+w "$TMP" 2>/dev/null
  rm -rf "$TMP" 2>/dev/null || true
}

on_exit() {
  local rc=$?
  # A signal can land while a case's output goes to its log: report on the
  # run's own stdout/stderr (saved as fds 3 and 4 below).
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

# The whole run is bounded too: past this, the watchdog TERMs the script
# (each client call has its own shorter timeout, so the trap runs promptly).
BUDGET=${WHARF_CLUSTER_BUDGET:-720}
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
export DOCKER_CONFIG=$TMP/docker-config
mkdir -p "$DOCKER_CONFIG"
export REGISTRY_AUTH_FILE=$TMP/auth.json # skopeo: no stored logins
echo '{}' >"$REGISTRY_AUTH_FILE"

sk() { timeout 120 skopeo --policy "$POLICY" "$@"; }

# curl with bounded time; no proxy for loopback.
c() { curl -sS --noproxy '*' --connect-timeout 5 --max-time 60 "$@"; }

sha256_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

http_code() { # http_code METHOD URL [curl args...]: the status code only
  local m=$1 u=$2
  shift 2
  c -o /dev/null -w '%{http_code}' -X "$m" "$@" "$u"
}

# header FILE NAME: value of header NAME in a curl -D dump (case-insensitive).
header() {
  tr -d '\r' <"$1" | awk -v h="$(echo "$2" | tr '[:upper:]' '[:lower:]')" -F': ' \
    'tolower($1) == h { sub(/^[^:]*: /, ""); v = $0 } END { print v }'
}

need() { # need CMD...: fail the case if a tool is missing
  local x
  for x in "$@"; do
    command -v "$x" >/dev/null 2>&1 || [ -x "/usr/sbin/$x" ] ||
      die "$x is not installed (run scripts/install-deps.sh)" || return 1
  done
}

ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'

cluster() { # cluster COMMAND [N]: scripts/cluster.sh COMMAND DIR [N], bounded; reloads cluster.env
  local cmd=$1 rc
  shift
  timeout 90 bash "$CLUSTER_SH" "$cmd" "$CDIR" "$@"
  rc=$?
  load_env
  return $rc
}

load_env() {
  # shellcheck disable=SC1091
  [ -f "$CDIR/cluster.env" ] && source "$CDIR/cluster.env"
  LB=${CLUSTER_LB:-}
  NODE_ADDR=("" "${CLUSTER_NODE1_ADDR:-}" "${CLUSTER_NODE2_ADDR:-}" "${CLUSTER_NODE3_ADDR:-}")
  NODE_ADMIN=("" "${CLUSTER_NODE1_ADMIN:-}" "${CLUSTER_NODE2_ADMIN:-}" "${CLUSTER_NODE3_ADMIN:-}")
  NODE_PID=("" "${CLUSTER_NODE1_PID:-}" "${CLUSTER_NODE2_PID:-}" "${CLUSTER_NODE3_PID:-}")
}

# lb_status N: node N's status in HAProxy's stats (UP, DOWN, "UP 1/2", ...).
lb_status() {
  timeout 10 bash "$CLUSTER_SH" lb-state "$CDIR" | awk -v s="node$1" '$1 == s { $1 = ""; sub(/^ /, ""); print }'
}

# lb_socket COMMAND: one command on HAProxy's stats socket (fails on an error answer).
lb_socket() {
  local out
  out=$(echo "$1" | timeout 5 socat stdio "unix-connect:$CDIR/haproxy.sock") || return 1
  [ -n "$out" ] && echo "haproxy: $out"
  ! grep -qiE 'unknown|denied|not found|error' <<<"$out"
}

# lb_status_all: "nodeN STATUS /readyz-answer" for every node.
lb_status_all() {
  local n
  for n in 1 2 3; do
    echo "node$n $(lb_status $n | tr ' ' _) $(c --max-time 2 "http://${NODE_ADMIN[$n]}/readyz" 2>&1 | head -n 1)"
  done
}

# wait_lb N REGEX SECONDS: until node N's HAProxy status matches REGEX.
wait_lb() {
  local n=$1 want=$2 secs=$3 i st=
  for ((i = 0; i < secs * 5; i++)); do
    st=$(lb_status "$n")
    [[ $st =~ $want ]] && {
      echo "HAProxy: node$n $st after ~$((i / 5))s"
      return 0
    }
    sleep 0.2
  done
  die "HAProxy still shows node$n as '$st' after ${secs}s (wanted /$want/)"
}

# free_port [SPAN]: a port p on 127.0.0.1 with p, p+1 .. p+SPAN-1 all free,
# below the kernel's ephemeral range (so no port-0 listener or outgoing
# connection takes it between this check and its use).
free_port() {
  timeout 10 python3 - "${1:-1}" <<'EOF'
import random, socket, sys
span = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
for _ in range(200):
    p = random.randint(10000, max(10001, low - span - 1))
    socks = []
    try:
        for q in range(p, p + span):
            s = socket.socket()
            s.bind(("127.0.0.1", q))
            socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(p)
    sys.exit(0)
sys.exit("no free port")
EOF
}

# make_image LAYOUT TAG SEED SIZE_KIB...: adds to the OCI layout LAYOUT an
# image tagged TAG with one gzip tar layer per SIZE_KIB (a file of that
# many pseudo-random KiB, from SEED), writes LAYOUT/TAG.refs.json
# ({manifest, config, layers, sizes}). Deterministic.
make_image() {
  timeout 60 python3 - "$@" <<'EOF'
import gzip, hashlib, io, json, os, random, sys, tarfile
root, tag, seed = sys.argv[1], sys.argv[2], sys.argv[3]
sizes = [int(x) * 1024 for x in sys.argv[4:]]
rng = random.Random(f"{seed}/{tag}")
os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
def blob(data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", h), "wb") as f:
        f.write(data)
    return "sha256:" + h
layers, diff_ids = [], []
for i, n in enumerate(sizes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(f"data/{tag}-{i}.bin")
        info.size, info.mtime, info.mode = n, 1700000000, 0o644
        t.addfile(info, io.BytesIO(rng.randbytes(n)))
    diff_ids.append("sha256:" + hashlib.sha256(buf.getvalue()).hexdigest())
    # gzip: skopeo pushes gzip layers as they are (uncompressed ones it
    # would compress, and the pushed digests would differ from these).
    data = gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(data), "size": len(data)})
config = json.dumps({
    "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
    "config": {"Labels": {"org.wharf.cluster": tag}},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
}, separators=(",", ":"), sort_keys=True).encode()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": len(config)},
    "layers": layers,
}, separators=(",", ":"), sort_keys=True).encode()
md = blob(manifest)
with open(os.path.join(root, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
ip = os.path.join(root, "index.json")
index = json.load(open(ip)) if os.path.exists(ip) else {"schemaVersion": 2, "manifests": []}
index["manifests"] = [m for m in index["manifests"]
                      if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                           "size": len(manifest),
                           "annotations": {"org.opencontainers.image.ref.name": tag}})
with open(ip, "w") as f:
    json.dump(index, f)
with open(os.path.join(root, f"{tag}.refs.json"), "w") as f:
    json.dump({"manifest": md, "config": json.loads(manifest)["config"]["digest"],
               "layers": [l["digest"] for l in layers], "sizes": [l["size"] for l in layers]}, f)
EOF
}

# blobs_of REFS: the config and layer digests named by a refs.json.
blobs_of() { jq -r '.config, .layers[]' "$1"; }

# check_blob ADDR REPO DIGEST: GET the blob, its bytes must hash to DIGEST.
check_blob() {
  local addr=$1 repo=$2 d=$3 got code
  code=$(c -o "$TMP/blob.$$" -w '%{http_code}' "http://$addr/v2/$repo/blobs/$d")
  [ "$code" = 200 ] || die "GET $addr /v2/$repo/blobs/$d -> $code" || return 1
  got=$(sha256_of "$TMP/blob.$$")
  rm -f "$TMP/blob.$$"
  [ "$got" = "$d" ] || die "GET $addr /v2/$repo/blobs/$d: bytes hash to $got"
}

# check_image ADDR REPO TAG REFS: the manifest by tag has the expected digest
# (bytes and Docker-Content-Digest) and every blob is served intact.
check_image() {
  local addr=$1 repo=$2 tag=$3 refs=$4 want code d
  want=$(jq -r .manifest "$refs")
  code=$(c -D "$TMP/m.h" -o "$TMP/m.json" -w '%{http_code}' -H "$ACCEPT" "http://$addr/v2/$repo/manifests/$tag")
  [ "$code" = 200 ] || die "GET $addr /v2/$repo/manifests/$tag -> $code" || return 1
  [ "$(sha256_of "$TMP/m.json")" = "$want" ] ||
    die "$addr: $repo:$tag manifest bytes hash to $(sha256_of "$TMP/m.json"), want $want" || return 1
  [ "$(header "$TMP/m.h" Docker-Content-Digest)" = "$want" ] ||
    die "$addr: $repo:$tag Docker-Content-Digest '$(header "$TMP/m.h" Docker-Content-Digest)', want $want" || return 1
  for d in $(blobs_of "$refs"); do
    check_blob "$addr" "$repo" "$d" || return 1
  done
  echo "$addr serves $repo:$tag = $want with its $(blobs_of "$refs" | wc -l) blobs"
}

# copy_back_compare SRC_REF DEST_DIR LAYOUT_REFS LAYOUT: skopeo copies
# SRC_REF into an OCI layout and compares it byte for byte with LAYOUT.
copy_back_compare() {
  local src=$1 back=$2 refs=$3 layout=$4 m mf d
  rm -rf "$back"
  sk copy --src-tls-verify=false "$src" "oci:$back:x" || die "skopeo copy $src -> oci failed" || return 1
  m=$(jq -r '.manifests[0].digest' "$back/index.json")
  [ "$m" = "$(jq -r .manifest "$refs")" ] || die "copied-back manifest $m != $(jq -r .manifest "$refs")" || return 1
  mf=$back/blobs/sha256/${m#sha256:}
  cmp -s "$mf" "$layout/blobs/sha256/${m#sha256:}" || die "manifest bytes differ" || return 1
  [ "$(jq -c '[.layers[].digest]' "$mf")" = "$(jq -c .layers "$refs")" ] ||
    die "layer digests differ: $(jq -c '[.layers[].digest]' "$mf")" || return 1
  for d in $(jq -r '.config.digest, .layers[].digest' "$mf"); do
    cmp -s "$back/blobs/sha256/${d#sha256:}" "$layout/blobs/sha256/${d#sha256:}" ||
      die "blob $d differs from the pushed one" || return 1
  done
  echo "$src: manifest $m and $(jq '.layers | length' "$mf") layers byte-identical"
}

# ---------------------------------------------------------------- fixtures

LAYOUT=$TMP/layout  # from tests/e2e/make_layout.py: tag 1 (amd64), multi (index)
IMAGES=$TMP/images  # made here: conc, big, after-pg, ...

case_fixtures() {
  need python3 skopeo jq curl socat haproxy || return 1
  timeout 60 python3 "$ROOT/tests/e2e/make_layout.py" "$LAYOUT" || die "make_layout.py failed" || return 1
  # The e2e fixture's refs, in this script's refs.json shape.
  jq '.amd64 | {manifest, config, layers}' "$LAYOUT/refs.json" >"$LAYOUT/1.refs.json" || return 1
  make_image "$IMAGES" conc 1 4096 4096 1024 || die "make_image conc failed" || return 1
  make_image "$IMAGES" big 1 65536 64 || die "make_image big failed" || return 1
  make_image "$IMAGES" after-pg 1 512 || die "make_image after-pg failed" || return 1
  sk inspect --raw "oci:$IMAGES:big" >/dev/null || die "skopeo cannot read the generated layout"
}

# ---------------------------------------------------------------- cluster

case_cluster_start() {
  export WHARF_CLUSTER_PORT=${WHARF_CLUSTER_PORT:-$(free_port)}
  export WHARF_CLUSTER_PG_PORT=${WHARF_CLUSTER_PG_PORT:-$(free_port)}
  export WHARF_CLUSTER_GARAGE_PORT=${WHARF_CLUSTER_GARAGE_PORT:-$(free_port 4)}
  CLUSTER_STARTED=1
  timeout 180 bash "$CLUSTER_SH" start "$CDIR" || die "scripts/cluster.sh start failed" || return 1
  load_env
  timeout 10 bash "$CLUSTER_SH" status "$CDIR" || die "cluster status: not everything is up" || return 1
  [ "$(http_code GET "http://$LB/v2/")" = 200 ] || die "GET http://$LB/v2/ through HAProxy is not 200"
}

# ---------------------------------------------------------------- round trip

case_push_node1_pull_node2() {
  sk copy --dest-tls-verify=false "oci:$LAYOUT:1" "docker://${NODE_ADDR[1]}/cl/alpine:1" ||
    die "skopeo push to node1 failed" || return 1
  local raw=$TMP/raw-n2.json want
  want=$(jq -r .manifest "$LAYOUT/1.refs.json")
  sk inspect --tls-verify=false --raw "docker://${NODE_ADDR[2]}/cl/alpine:1" >"$raw" ||
    die "skopeo inspect --raw through node2 failed" || return 1
  cmp -s "$raw" "$LAYOUT/blobs/sha256/${want#sha256:}" || die "node2 serves other manifest bytes than were pushed to node1" || return 1
  copy_back_compare "docker://${NODE_ADDR[2]}/cl/alpine:1" "$TMP/back-n2" "$LAYOUT/1.refs.json" "$LAYOUT"
}

case_pull_through_lb() {
  copy_back_compare "docker://$LB/cl/alpine:1" "$TMP/back-lb" "$LAYOUT/1.refs.json" "$LAYOUT"
}

case_index_across_nodes() {
  sk copy --all --dest-tls-verify=false "oci:$LAYOUT:multi" "docker://${NODE_ADDR[2]}/cl/multi:1" ||
    die "skopeo push of the index to node2 failed" || return 1
  local want got a
  want=$(jq -r .index "$LAYOUT/refs.json")
  for a in "${NODE_ADDR[3]}" "$LB"; do
    sk inspect --tls-verify=false --raw "docker://$a/cl/multi:1" >"$TMP/index.json" || die "inspect through $a failed" || return 1
    got=$(sha256_of "$TMP/index.json")
    [ "$got" = "$want" ] || die "$a serves index $got, want $want" || return 1
    got=$(sk inspect --tls-verify=false --override-os linux --override-arch arm64 "docker://$a/cl/multi:1" | jq -r .Architecture)
    [ "$got" = arm64 ] || die "$a: platform selection through the index gave '$got'" || return 1
  done
}

# ---------------------------------------------------------------- docker

# dk, stop_dockerd and case_docker_daemon come from tests/harness.sh.

case_docker_pull_lb() {
  dk pull "$LB/cl/alpine:1" || die "docker pull through the LB failed" || return 1
  local rd
  rd=$(dk image inspect --format '{{join .RepoDigests " "}}' "$LB/cl/alpine:1") || die "docker image inspect failed" || return 1
  echo "RepoDigests: $rd"
  [[ " $rd " == *"@$(jq -r .manifest "$LAYOUT/1.refs.json") "* ]] || die "RepoDigests '$rd' lack the pushed digest"
}

case_docker_push_lb() {
  dk tag "$LB/cl/alpine:1" "$LB/cl/docker-pushed:1" || die "docker tag failed" || return 1
  dk push "$LB/cl/docker-pushed:1" | tee "$TMP/docker-push.out" || die "docker push through the LB failed" || return 1
  grep -q 'digest: sha256:' "$TMP/docker-push.out" || die "docker push printed no digest"
}

case_docker_pushed_via_node() {
  local d n=3 cfg=$TMP/dpush-config.json
  d=$(grep -o 'digest: sha256:[0-9a-f]*' "$TMP/docker-push.out" | head -n 1 | cut -d' ' -f2)
  [ -n "$d" ] || die "no digest from docker push" || return 1
  sk inspect --tls-verify=false --raw "docker://${NODE_ADDR[$n]}/cl/docker-pushed:1" >"$TMP/dpush.json" ||
    die "skopeo inspect through node$n failed" || return 1
  [ "$(sha256_of "$TMP/dpush.json")" = "$d" ] || die "node$n serves $(sha256_of "$TMP/dpush.json"), docker pushed $d" || return 1
  sk inspect --tls-verify=false --config "docker://${NODE_ADDR[$n]}/cl/docker-pushed:1" >"$cfg" ||
    die "skopeo inspect --config through node$n failed" || return 1
  [ "$(jq -c .rootfs.diff_ids "$cfg")" = "$(jq -c .amd64.diff_ids "$LAYOUT/refs.json")" ] ||
    die "diff_ids $(jq -c .rootfs.diff_ids "$cfg") differ from the source image" || return 1
  rm -rf "$TMP/dpush-back"
  sk copy --src-tls-verify=false "docker://${NODE_ADDR[$n]}/cl/docker-pushed:1" "oci:$TMP/dpush-back:x" ||
    die "skopeo copy of the docker-pushed image through node$n failed"
}

case_docker_upload_lb() {
  # Under the name localhost:PORT docker has no mount history, so this push
  # uploads every layer itself (POST, PATCH, PUT spread over the nodes).
  local img=localhost:${LB##*:}/cl/docker-upload:1
  dk tag "$LB/cl/alpine:1" "$img" || die "docker tag failed" || return 1
  dk push "$img" | tee "$TMP/docker-upload.out" || die "docker push via $img failed" || return 1
  grep -q 'Pushed' "$TMP/docker-upload.out" || die "docker uploaded no layer" || return 1
  local cfg=$TMP/dupload-config.json
  sk inspect --tls-verify=false --config "docker://${NODE_ADDR[1]}/cl/docker-upload:1" >"$cfg" ||
    die "skopeo inspect --config through node1 failed" || return 1
  [ "$(jq -c .rootfs.diff_ids "$cfg")" = "$(jq -c .amd64.diff_ids "$LAYOUT/refs.json")" ] ||
    die "diff_ids $(jq -c .rootfs.diff_ids "$cfg") differ from the source image"
}

# ---------------------------------------------------------------- concurrency

case_concurrent_push() {
  local n pids=() rc=0
  for n in 1 2 3; do
    sk copy --dest-tls-verify=false "oci:$IMAGES:conc" "docker://${NODE_ADDR[$n]}/cl/concurrent:1" \
      >"$TMP/conc-$n.out" 2>&1 &
    pids+=($!)
  done
  for n in 1 2 3; do
    if ! wait "${pids[$((n - 1))]}"; then
      cat "$TMP/conc-$n.out"
      echo "push through node$n failed"
      rc=1
    fi
  done
  [ "$rc" = 0 ] || die "the 3 concurrent pushes of the same image did not all succeed" || return 1
  for n in 1 2 3; do
    check_image "${NODE_ADDR[$n]}" cl/concurrent 1 "$IMAGES/conc.refs.json" || return 1
  done
  check_image "$LB" cl/concurrent 1 "$IMAGES/conc.refs.json"
}

# ---------------------------------------------------------------- node crash

BIG_LAYER=
case_kill_mid_push() {
  # A PUT of the 64 MiB layer straight to node1, throttled so that it is
  # certainly still streaming when node1 gets SIGKILL.
  BIG_LAYER=$(jq -r '.layers[0]' "$IMAGES/big.refs.json")
  local f=$IMAGES/blobs/sha256/${BIG_LAYER#sha256:} loc code put_pid i
  code=$(c -D "$TMP/big-post.h" -o /dev/null -w '%{http_code}' -X POST "http://${NODE_ADDR[1]}/v2/cl/big/blobs/uploads/")
  [ "$code" = 202 ] || die "POST upload to node1 -> $code" || return 1
  loc=$(header "$TMP/big-post.h" Location)
  [[ $loc == /* ]] && loc="http://${NODE_ADDR[1]}$loc"
  [[ $loc == *\?* ]] && loc="$loc&digest=$BIG_LAYER" || loc="$loc?digest=$BIG_LAYER"
  curl -sS --noproxy '*' --max-time 60 --limit-rate 8M -o "$TMP/big-put.out" -w '%{http_code}\n' \
    -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc" >"$TMP/big-put.code" 2>&1 &
  put_pid=$!
  sleep 2
  kill -0 "$put_pid" 2>/dev/null || die "the throttled PUT finished before the kill: $(cat "$TMP/big-put.code")" || return 1
  # HAProxy's checks would drain node1 within a second of its death; with
  # them paused, the requests it still sends there show that a connection
  # failure is retried on another node (retries + option redispatch).
  lb_socket "disable health wharf/node1" || die "cannot pause node1's health check over the stats socket" || return 1
  echo "killing node1 (pid ${NODE_PID[1]}) mid-PUT"
  cluster kill-node 1 || die "cluster.sh kill-node 1 failed" || return 1
  for ((i = 0; i < 100; i++)); do kill -0 "$put_pid" 2>/dev/null || break; sleep 0.1; done
  kill "$put_pid" 2>/dev/null
  wait "$put_pid" 2>/dev/null
  echo "the interrupted PUT: $(tr '\n' ' ' <"$TMP/big-put.code")"
  grep -q '^201' "$TMP/big-put.code" && { die "the PUT got 201 although node1 died mid-body"; return 1; }
  local ok=0 redispatched st
  st=$(lb_status 1)
  for ((i = 0; i < 9; i++)); do
    [ "$(http_code GET "http://$LB/v2/cl/alpine/manifests/1" -H "$ACCEPT")" = 200 ] && ok=$((ok + 1))
  done
  # httplog's ".../retries srv_queue/backend_queue": "+N" marks a redispatch.
  redispatched=$(grep -cE '/\+[0-9]+ [0-9]+/[0-9]+ "' "$CDIR/haproxy.log")
  lb_socket "enable health wharf/node1" || die "cannot resume node1's health check" || return 1
  echo "node1 dead, HAProxy still shows it '$st': $ok of 9 pulls through the LB answered 200, $redispatched redispatched"
  [ "$ok" = 9 ] || die "only $ok of 9 pulls through the LB answered 200 right after node1 died" || return 1
  [ "$redispatched" -ge 1 ] || die "no request was redispatched from the dead node1 (see $CDIR/haproxy.log)" || return 1
  # Nothing of the half-sent blob is visible through the others.
  for i in 2 3; do
    code=$(http_code HEAD "http://${NODE_ADDR[$i]}/v2/cl/big/blobs/$BIG_LAYER" -I)
    [ "$code" = 404 ] || die "HEAD of the half-uploaded blob through node$i -> $code, want 404" || return 1
  done
}

case_lb_drains_dead_node() {
  wait_lb 1 '^DOWN' 10
}

case_retry_through_lb() {
  # The same push again, through the load balancer; skopeo retries.
  sk copy --retry-times 3 --dest-tls-verify=false "oci:$IMAGES:big" "docker://$LB/cl/big:1" ||
    die "the retried push through the LB failed"
}

case_retry_roundtrip() {
  copy_back_compare "docker://$LB/cl/big:1" "$TMP/back-big" "$IMAGES/big.refs.json" "$IMAGES"
}

case_store_consistent() {
  local n
  for n in 2 3; do
    check_image "${NODE_ADDR[$n]}" cl/big 1 "$IMAGES/big.refs.json" || return 1
  done
}

case_restarted_node_serves() {
  lb_socket "enable health wharf/node1" >/dev/null # in case kill-mid-push stopped half-way
  cluster start-node 1 || die "restarting node1 failed" || return 1
  echo "node1 back: ${NODE_ADDR[1]} (pid ${NODE_PID[1]})"
  check_image "${NODE_ADDR[1]}" cl/big 1 "$IMAGES/big.refs.json" || return 1
  check_image "${NODE_ADDR[1]}" cl/alpine 1 "$LAYOUT/1.refs.json" || return 1
  wait_lb 1 '^UP$' 10
}

# ---------------------------------------------------------------- metadata down

# pulls_known REPO TAG REFS ROUNDS: through the LB, ROUNDS rounds of GET
# manifest by tag, by digest and every blob; each must be 200 (a push
# attempt, which must get 503, runs between rounds, as during a real outage).
PULL_OK=0
PULL_BAD=()
pulls_known() {
  local repo=$1 tag=$2 refs=$3 rounds=$4 r d code want
  want=$(jq -r .manifest "$refs")
  PULL_OK=0 PULL_BAD=()
  for ((r = 1; r <= rounds; r++)); do
    for u in "manifests/$tag" "manifests/$want" $(blobs_of "$refs" | sed 's,^,blobs/,'); do
      code=$(c -o /dev/null -w '%{http_code}' -H "$ACCEPT" "http://$LB/v2/$repo/$u")
      if [ "$code" = 200 ]; then PULL_OK=$((PULL_OK + 1)); else PULL_BAD+=("round $r GET $u -> $code"); fi
    done
    http_code POST "http://$LB/v2/cl/during-outage/blobs/uploads/" >/dev/null
    { echo "round $r"; lb_status_all; } >>"$TMP/pg-down-samples"
    sleep 0.1
  done
  echo "$PULL_OK pulls answered 200, ${#PULL_BAD[@]} not"
  [ "${#PULL_BAD[@]}" = 0 ] || {
    printf '%s\n' "${PULL_BAD[@]}" | head -n 10
    die "${#PULL_BAD[@]} of $((PULL_OK + ${#PULL_BAD[@]})) pulls of known content through the LB were not 200 (first: ${PULL_BAD[0]})"
  }
}

# refused_fast WHAT METHOD URL [curl args]: the answer is 503 with Retry-After, in under 6 s.
refused_fast() {
  local what=$1 m=$2 u=$3 code t
  shift 3
  read -r code t < <(c -D "$TMP/refused.h" -o "$TMP/refused.body" -w '%{http_code} %{time_total}\n' -X "$m" "$@" "$u")
  echo "$what: $code in ${t}s, Retry-After '$(header "$TMP/refused.h" Retry-After)', body $(head -c 300 "$TMP/refused.body")"
  [ "$code" = 503 ] || die "$what -> '$code', want 503" || return 1
  [ -n "$(header "$TMP/refused.h" Retry-After)" ] || die "$what: 503 without Retry-After" || return 1
  awk -v t="$t" 'BEGIN { exit !(t < 6) }' || die "$what took ${t}s, want < 6s"
}

case_pg_prime() {
  # Every node pulls the image once, so each has seen it.
  local n
  for n in 1 2 3; do
    check_image "${NODE_ADDR[$n]}" cl/alpine 1 "$LAYOUT/1.refs.json" || return 1
    c -o /dev/null -f -H "$ACCEPT" "http://${NODE_ADDR[$n]}/v2/cl/alpine/manifests/$(jq -r .manifest "$LAYOUT/1.refs.json")" ||
      die "node$n: manifest by digest not 200" || return 1
  done
}

# same_nodes: the nodes running now are the ones that ran at pg-prime
# (recovery must not need a restart).
NODES_BEFORE=
same_nodes() {
  local n
  load_env
  [ "${NODE_PID[*]}" = "$NODES_BEFORE" ] || die "node pids changed: '$NODES_BEFORE' -> '${NODE_PID[*]}'" || return 1
  for n in 1 2 3; do
    kill -0 "${NODE_PID[$n]}" 2>/dev/null || die "node$n (pid ${NODE_PID[$n]}) is not running" || return 1
  done
}

case_pg_down_push_refused() {
  NODES_BEFORE="${NODE_PID[*]}"
  cluster stop-postgres || die "stopping PostgreSQL failed" || return 1
  refused_fast "POST upload through the LB" POST "http://$LB/v2/cl/x/blobs/uploads/" || return 1
  local n
  for n in 1 2 3; do
    refused_fast "POST upload through node$n" POST "http://${NODE_ADDR[$n]}/v2/cl/x/blobs/uploads/" || return 1
  done
}

case_pg_down_nodes_serve() {
  # Straight to each node: the data plane answers without the database.
  local n d code want
  want=$(jq -r .manifest "$LAYOUT/1.refs.json")
  for n in 1 2 3; do
    for u in "manifests/1" "manifests/$want" $(blobs_of "$LAYOUT/1.refs.json" | sed 's,^,blobs/,'); do
      code=$(c -o /dev/null -w '%{http_code}' -H "$ACCEPT" "http://${NODE_ADDR[$n]}/v2/cl/alpine/$u")
      [ "$code" = 200 ] || die "PostgreSQL down: GET node$n /v2/cl/alpine/$u -> $code, want 200" || return 1
    done
  done
}

case_pg_down_pulls_lb() {
  pulls_known cl/alpine 1 "$LAYOUT/1.refs.json" 20
}

case_pg_down_nodes_stay_ready() {
  # The database is shared by every node: no node does better than another
  # without it, and draining all of them turns "pushes fail" into
  # "everything fails". So every node must stay in HAProxy's rotation
  # throughout the outage (sampled each round of pg-down-pulls-lb).
  [ -s "$TMP/pg-down-samples" ] || die "no samples from pg-down-pulls-lb" || return 1
  cat "$TMP/pg-down-samples"
  local verdict
  verdict=$(awk '
    /^round/ { rounds++; if (down == 3) alldown++; down = 0; next }
    { if ($2 == "DOWN") { down++; downs++ } else if ($2 != "UP") going++ }
    $3 == "not" && !why { why = $0; sub(/^[^ ]+ [^ ]+ /, "", why) }
    END {
      if (down == 3) alldown++
      if (downs + going == 0 && !why) exit
      printf "%d of %d rounds with every node DOWN in HAProxy, %d node samples DOWN, %d failing checks; /readyz said: %s\n",
        alldown, rounds, downs, going, why
    }' "$TMP/pg-down-samples")
  [ -z "$verdict" ] || die "PostgreSQL down: nodes left HAProxy's rotation: $verdict"
}

case_pg_back_push() {
  cluster start-postgres || die "starting PostgreSQL again failed" || return 1
  local i code t0=$SECONDS
  for ((i = 0; i < 40; i++)); do
    code=$(http_code POST "http://$LB/v2/cl/x/blobs/uploads/")
    [ "$code" = 202 ] && break
    sleep 0.5
  done
  echo "POST upload through the LB -> $code $((SECONDS - t0))s after PostgreSQL came back"
  [ "$code" = 202 ] || die "pushes still refused ($code) 20s after PostgreSQL came back" || return 1
  # The node that answered has recovered; each of the others does on its
  # own (its breaker's background probe), within a few seconds. Recovery
  # without a restart means every node, so wait (bounded) for each.
  local n
  for n in 1 2 3; do
    for ((i = 0; i < 40; i++)); do
      code=$(http_code POST "http://${NODE_ADDR[$n]}/v2/cl/x/blobs/uploads/")
      [ "$code" = 202 ] && break
      sleep 0.5
    done
    echo "POST upload through node$n -> $code $((SECONDS - t0))s after PostgreSQL came back"
    [ "$code" = 202 ] || die "node$n still refuses pushes ($code) 20s after PostgreSQL came back" || return 1
  done
  same_nodes || return 1
  sk copy --dest-tls-verify=false "oci:$IMAGES:after-pg" "docker://$LB/cl/after-pg:1" ||
    die "skopeo push through the LB after PostgreSQL came back failed" || return 1
  for i in 1 2 3; do
    check_image "${NODE_ADDR[$i]}" cl/after-pg 1 "$IMAGES/after-pg.refs.json" || return 1
  done
}

# ---------------------------------------------------------------- object store down

case_garage_down() {
  [ -n "$BIG_LAYER" ] || die "no 64 MiB layer in the store (kill-mid-push did not run)" || return 1
  cluster stop-garage || die "stopping Garage failed" || return 1
  local d n code
  # A layer too large for the nodes' small-blob memory needs the object
  # store: refused fast, on every node.
  for n in 1 2 3; do
    refused_fast "GET 64 MiB blob through node$n" GET "http://${NODE_ADDR[$n]}/v2/cl/big/blobs/$BIG_LAYER" || return 1
  done
  refused_fast "GET 64 MiB blob through the LB" GET "http://$LB/v2/cl/big/blobs/$BIG_LAYER" || return 1
  # A small layer every node served before (pg-prime) is still answered,
  # from memory, with the right bytes.
  d=$(jq -r '.layers[0]' "$LAYOUT/1.refs.json")
  for n in 1 2 3; do
    code=$(c -o "$TMP/small-layer.bin" -w '%{http_code}' "http://${NODE_ADDR[$n]}/v2/cl/alpine/blobs/$d")
    [ "$code" = 200 ] || die "node$n: small layer seen before -> $code with Garage down" || return 1
    [ "$(sha256_of "$TMP/small-layer.bin")" = "$d" ] || die "node$n: small layer bytes do not hash to $d" || return 1
  done
  printf 'garage-down-%s' "$$" >"$TMP/small.bin"
  refused_fast "monolithic blob push through the LB" POST \
    "http://$LB/v2/cl/x/blobs/uploads/?digest=$(sha256_of "$TMP/small.bin")" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$TMP/small.bin" || return 1
  if grep -q '127.0.0.1:[0-9]*/' "$TMP/refused.body" 2>/dev/null; then
    echo "note: the 503 body names the object store's internal URL: $(head -c 200 "$TMP/refused.body")"
  fi
}

case_garage_back() {
  cluster start-garage || die "starting Garage again failed" || return 1
  local i code t0=$SECONDS
  for ((i = 0; i < 40; i++)); do
    code=$(c -o /dev/null -w '%{http_code}' "http://$LB/v2/cl/big/blobs/$BIG_LAYER")
    [ "$code" = 200 ] && break
    sleep 0.5
  done
  echo "GET blob through the LB -> $code $((SECONDS - t0))s after Garage came back"
  [ "$code" = 200 ] || die "blob GETs still failing ($code) 20s after Garage came back" || return 1
  [ -z "$NODES_BEFORE" ] || same_nodes || return 1
  # And pushes work again too.
  sk copy --dest-tls-verify=false "oci:$IMAGES:after-pg" "docker://$LB/cl/after-garage:1" ||
    die "skopeo push through the LB after Garage came back failed" || return 1
  for i in 1 2 3; do
    check_image "${NODE_ADDR[$i]}" cl/alpine 1 "$LAYOUT/1.refs.json" || return 1
  done
}

# ---------------------------------------------------------------- readiness

case_drain_on_sigterm() {
  # A slow download from node3 keeps it draining (not yet exited) after
  # SIGTERM: its /readyz must turn 503, HAProxy must take it out, the LB
  # must keep answering, and the download in flight must complete.
  local dl_pid i code st pid=${NODE_PID[3]}
  [ -n "$pid" ] || die "no pid for node3" || return 1
  curl -sS --noproxy '*' --max-time 60 --limit-rate 8M -o "$TMP/drain.bin" -w '%{http_code}\n' \
    "http://${NODE_ADDR[3]}/v2/cl/big/blobs/$BIG_LAYER" >"$TMP/drain.code" 2>&1 &
  dl_pid=$!
  sleep 1
  kill -0 "$dl_pid" 2>/dev/null || die "the throttled download finished too soon: $(cat "$TMP/drain.code")" || return 1
  kill -TERM "$pid" || die "cannot signal node3 (pid $pid)" || return 1
  for ((i = 0; i < 20; i++)); do
    code=$(http_code GET "http://${NODE_ADMIN[3]}/readyz" --max-time 2)
    [ "$code" = 503 ] && break
    sleep 0.1
  done
  echo "node3 draining: /readyz -> $code"
  [ "$code" = 503 ] || die "node3's /readyz is '$code' during the drain, want 503" || return 1
  wait_lb 3 '^(DOWN|NOLB|MAINT)' 6 || return 1
  kill -0 "$pid" 2>/dev/null || die "node3 exited before its download in flight was done" || return 1
  local ok=0
  for ((i = 0; i < 20; i++)); do
    [ "$(http_code GET "http://$LB/v2/cl/alpine/manifests/1" -H "$ACCEPT")" = 200 ] && ok=$((ok + 1))
  done
  [ "$ok" = 20 ] || die "only $ok of 20 pulls through the LB answered 200 while node3 drained" || return 1
  wait "$dl_pid"
  echo "download in flight during the drain: $(cat "$TMP/drain.code")"
  grep -q '^200' "$TMP/drain.code" || die "the download in flight did not finish with 200" || return 1
  [ "$(sha256_of "$TMP/drain.bin")" = "$BIG_LAYER" ] || die "the download in flight was cut or corrupted" || return 1
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && die "node3 still running 10s after its last request ended" && return 1
  cluster start-node 3 || die "restarting node3 failed" || return 1
  wait_lb 3 '^UP$' 10
}

# ---------------------------------------------------------------- garbage collection

# shellcheck source=../gc-lib.sh
source "$HERE/../gc-lib.sh"

# Issue 12's race test: every node restarted with the collector at full
# speed (review delay 0, a pass a second, on all three at once), 8 pushers
# through HAProxy; then a final collection, a clean check and every held
# tag pulled again. Runs last: the nodes keep the collector's flags.
case_gc_race_cluster() {
  need jq || return 1
  [ -x "$WHARF_LOAD_BIN" ] ||
    die "WHARF_LOAD_BIN=$WHARF_LOAD_BIN is not an executable (cargo build --release -p wharf-load)" || return 1
  "$WHARF_BIN" serve --help 2>/dev/null | grep -q -- '--gc-review-delay-secs' ||
    die "$WHARF_BIN has no --gc-review-delay-secs (no collector in this build)" || return 1
  local n rc secs=${WHARF_CLUSTER_GC_RACE_SECS:-60} out=$TMP/gc-race-cluster.json
  export WHARF_CLUSTER_NODE_ARGS="--gc-review-delay-secs 0 --gc-interval-secs ${WHARF_CLUSTER_GC_INTERVAL:-1} --gc-orphan-age-secs 0 --gc-max-reviews-per-sec 0"
  for n in 1 2 3; do
    cluster restart-node $n || die "restarting node$n with the collector on failed" || return 1
  done
  GC_ADMIN=${NODE_ADMIN[1]}
  echo "nodes: ${NODE_ADDR[*]}, load balancer $LB"
  timeout $((secs + 120)) "$WHARF_LOAD_BIN" gc-race --url "http://$LB" --pushers 8 --duration "$secs" \
    --state-out "$TMP/gc-race-cluster.state" --label cluster >"$out" 2>"$TMP/gc-race-cluster.err"
  rc=$?
  cat "$TMP/gc-race-cluster.err"
  race_report "$out" "$rc" || return 1
  # Every node collected (they share one queue: each must have taken some).
  local per=() total=0 d
  for n in 1 2 3; do
    d=$(gc_metric wharf_gc_blobs_deleted_total "${NODE_ADMIN[$n]}")
    per+=("node$n=$d")
    total=$((total + d))
  done
  echo "blobs deleted by the collectors during the race: ${per[*]}"
  [ "$total" -gt 0 ] || die "no collector deleted anything during the race" || return 1
  wg scan-orphans || die "wharf gc scan-orphans failed" || return 1
  gc_settle "$TMP/gc-race-cluster-final" || return 1
  gc_check "$TMP/gc-race-cluster-check.json" || return 1
  gc_status_empty --due-only || return 1
  # Restarted, no node has anything in memory that could hide lost bytes.
  for n in 1 2 3; do
    cluster restart-node $n || die "restarting node$n after the race failed" || return 1
  done
  timeout 120 "$WHARF_LOAD_BIN" gc-verify --url "http://$LB" --state "$TMP/gc-race-cluster.state" \
    --label after-final-gc >"$TMP/gc-race-cluster-verify.json"
  rc=$?
  jq -c .verify "$TMP/gc-race-cluster-verify.json"
  [ "$rc" = 0 ] || die "after the final passes, held tags do not all pull" || return 1
  echo "figures: $(jq -c '{attempted: .pushes.attempted, acknowledged: .pushes.acknowledged,
    refused_manifest_blob_unknown: .pushes.refused_manifest_blob_unknown,
    blob_unknown_then_ok: .pushes.manifest_blob_unknown_then_ok, refused_503, refused_429,
    other, tags_verified: .verify.ok}' "$out") deleted_during_race=${per[*]} final_deleted=$GC_SETTLED_DELETED final_bytes=$GC_SETTLED_BYTES"
}

# ---------------------------------------------------------------- main

# selected GROUP: WHARF_CASES is unset or names GROUP.
selected() { [ -z "${WHARF_CASES:-}" ] || [[ ",${WHARF_CASES// /}," == *",$1,"* ]]; }

echo "cluster run: temp dir $TMP"
if ! run_case fixtures case_fixtures; then
  fail_case cluster-remaining "no test images; see $LOGS/fixtures.log"
  DONE=1
  summary
  exit 1
fi
if ! run_case cluster-start case_cluster_start; then
  fail_case cluster-remaining "the cluster did not start; see $LOGS/cluster-start.log and $CDIR"
  DONE=1
  summary
  exit 1
fi

core_cases() {
  if run_case push-node1-pull-node2 case_push_node1_pull_node2; then
    run_case pull-through-lb case_pull_through_lb
  else
    fail_case roundtrip-dependents "skipped: the image could not be pushed"
  fi
  run_case index-across-nodes case_index_across_nodes

  if [ "${WHARF_CLUSTER_SKIP_DOCKER:-0}" = 1 ]; then
    skip_note docker "WHARF_CLUSTER_SKIP_DOCKER=1"
  elif run_case docker-daemon case_docker_daemon; then
    if run_case docker-pull-lb case_docker_pull_lb; then
      run_case docker-push-lb case_docker_push_lb &&
        run_case docker-pushed-via-node case_docker_pushed_via_node
      run_case docker-upload-lb case_docker_upload_lb
    fi
    stop_dockerd
  fi

  run_case concurrent-push case_concurrent_push

  if run_case kill-mid-push case_kill_mid_push; then
    run_case lb-drains-dead-node case_lb_drains_dead_node
    if run_case retry-through-lb case_retry_through_lb; then
      run_case retry-roundtrip case_retry_roundtrip
      run_case store-consistent case_store_consistent
    fi
  fi
  run_case restarted-node-serves case_restarted_node_serves

  if run_case pg-prime case_pg_prime; then
    run_case pg-down-push-refused case_pg_down_push_refused
    run_case pg-down-nodes-serve case_pg_down_nodes_serve
    run_case pg-down-pulls-lb case_pg_down_pulls_lb
    run_case pg-down-nodes-stay-in-lb case_pg_down_nodes_stay_ready
    run_case pg-back-push case_pg_back_push
  fi

  run_case garage-down case_garage_down
  run_case garage-back case_garage_back

  if [ -n "$BIG_LAYER" ]; then
    run_case drain-on-sigterm case_drain_on_sigterm
  else
    fail_case drain-on-sigterm "skipped: no big image in the store"
  fi
}

selected core && core_cases
selected gc-race-cluster && run_case gc-race-cluster case_gc_race_cluster

DONE=1
summary
[ "$FAILED" -eq 0 ]
