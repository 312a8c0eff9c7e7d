#!/usr/bin/env bash
# The soak (issue 15), run by hand, loopback only, every step bounded:
#
#   bash scripts/bench/soak.sh                  # 30 minutes
#   DURATION=120 bash scripts/bench/soak.sh     # a smoke run
#
# Starts the three-node cluster (scripts/cluster.sh: PostgreSQL, Garage,
# HAProxy) with HTTP Basic auth (`--auth htpasswd`, users from the tenant
# directory) and every node's collector on (a short review delay, a pass
# every GC_INTERVAL seconds), creates TENANTS tenants with a user each, and
# runs one `wharf-load gc-race` per tenant through HAProxy for DURATION
# seconds: pushes of images that share layers, pulls checked byte for byte,
# tag moves, tag and manifest deletes, re-pushes of deleted images, mounts.
# Meanwhile every SAMPLE seconds it records, per node: resident memory
# (VmRSS), open file descriptors, threads and established TCP connections.
#
# At the end: an orphan scan and final passes, `wharf gc check` (storage and
# metadata agree), every tenant's held tags pulled byte-identical again, a
# plot of the samples (PNG, matplotlib, installed with pip if missing) and a
# growth verdict: after WARMUP seconds, the median of each series over the
# last third of the run is compared with its median over the first third;
# growth beyond 10% plus a small allowance (16 MiB, 16 descriptors, 16
# connections, 4 threads) is a failure, as is any error the load tools
# count outside `503`/`429` refusals that then succeeded.
#
# Environment: DURATION [1800], TENANTS [3], PUSHERS [3] (per tenant),
# SAMPLE [5], WARMUP [300], REVIEW_DELAY [30], GC_INTERVAL [10], SEED,
# NODE_ARGS (more `wharf serve` flags for every node: small cache bounds,
# e.g. "--manifest-cache-mib 1 --small-blob-cache-mib 1
# --last-known-entries 2000", let the caches reach them within the run),
# WHARF_BIN, WHARF_LOAD_BIN, WHARF_CLUSTER_PORT/PG_PORT/GARAGE_PORT,
# KEEP=1 (keep the cluster directory).
#
# Writes bench-out/soak-STAMP/: samples.tsv, race-<tenant>.json,
# verify-<tenant>.json, passes/, check.json, soak.png, growth.txt,
# summary.txt. Exits non-zero when a check fails.
#
# Must never: reach anything but loopback, or leave a process running.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DURATION=${DURATION:-1800}
TENANTS=${TENANTS:-3}
PUSHERS=${PUSHERS:-3}
SAMPLE=${SAMPLE:-5}
WARMUP=${WARMUP:-300}
REVIEW_DELAY=${REVIEW_DELAY:-30}
GC_INTERVAL=${GC_INTERVAL:-10}
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
WHARF_LOAD_BIN=${WHARF_LOAD_BIN:-$ROOT/target/release/wharf-load}
export WHARF_BIN
[ -x "$WHARF_BIN" ] && [ -x "$WHARF_LOAD_BIN" ] || cargo build --release -p wharf -p wharf-load || exit 1
"$WHARF_LOAD_BIN" gc-race --help | grep -q -- --password-file || {
  echo "$WHARF_LOAD_BIN cannot send credentials (--password-file): rebuild it" >&2
  exit 1
}
[ "$WARMUP" -lt "$DURATION" ] || {
  echo "WARMUP ($WARMUP) must be shorter than DURATION ($DURATION)" >&2
  exit 1
}

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out/soak-$STAMP
mkdir -p "$OUT/passes"
TMP=$(mktemp -d /tmp/wharf-soak.XXXXXX)
chmod 755 "$TMP" # the postgres user must reach the cluster dir
SAMPLER_PID=
FAILS=$OUT/failures
: >"$FAILS"
# shellcheck source=lib.sh
source "$ROOT/scripts/bench/lib.sh"

cleanup() {
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null
  timeout 120 bash scripts/cluster.sh stop "$TMP/cluster" >>"$OUT/cluster-stop.log" 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then
    log "cluster directory kept: $TMP/cluster"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export WHARF_CLUSTER_PORT=${WHARF_CLUSTER_PORT:-18380}
export WHARF_CLUSTER_PG_PORT=${WHARF_CLUSTER_PG_PORT:-15780}
export WHARF_CLUSTER_GARAGE_PORT=${WHARF_CLUSTER_GARAGE_PORT:-14280}
export WHARF_CLUSTER_NODE_ARGS="--auth htpasswd --gc-review-delay-secs $REVIEW_DELAY --gc-interval-secs $GC_INTERVAL ${NODE_ARGS:-}"
log "starting the cluster ($WHARF_CLUSTER_NODE_ARGS)"
timeout 180 bash scripts/cluster.sh start "$TMP/cluster" >"$OUT/cluster-start.log" 2>&1 || {
  tail -n 20 "$OUT/cluster-start.log" >&2
  fail "the cluster did not start"
  exit 1
}
# shellcheck source=/dev/null
source "$TMP/cluster/cluster.env"
LB=$CLUSTER_LB
NODES=$CLUSTER_NODES
export WHARF_ADMIN_URL="http://$CLUSTER_NODE1_ADMIN"

# The tenants and their users (role admin: push, pull and delete).
TENANT_NAMES=()
for ((t = 1; t <= TENANTS; t++)); do
  name=soak$t
  TENANT_NAMES+=("$name")
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$TMP/$name.password"
  timeout 30 "$WHARF_BIN" admin tenant create "$name" >>"$OUT/admin.log" 2>&1 &&
    timeout 30 "$WHARF_BIN" admin user set "$name" "u$name" --role admin --password-stdin \
      <"$TMP/$name.password" >>"$OUT/admin.log" 2>&1 || {
    fail "creating tenant $name failed: $(tail -n 3 "$OUT/admin.log")"
    exit 1
  }
done
# Every node has loaded the directory (it asks once a second).
sleep 3

# sample PID ADMIN: "rss_kib fds threads conns cache_kib lastknown" of one
# node: its process, and from its metrics what its caches hold (the
# manifest and small-blob caches' bytes, the last-known maps' entries).
sample() {
  local pid=$1 admin=$2 rss threads fds conns caches
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
  threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
  fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  conns=$(ss -Htanp state established 2>/dev/null | grep -c "pid=$pid,")
  caches=$(curl -sf --max-time 2 "http://$admin/metrics" 2>/dev/null | awk '
    /^wharf_cache_bytes\{/ { b += $2 }
    /^wharf_cache_entries\{cache="(links|tags|manifests_seen|touched|pulled)"\}/ { e += $2 }
    END { printf "%d\t%d", b / 1024, e }')
  printf '%s\t%s\t%s\t%s\t%s' "${rss:-0}" "$fds" "${threads:-0}" "$conns" "${caches:-$'0\t0'}"
}
(
  printf 'secs'
  for ((n = 1; n <= NODES; n++)); do
    printf '\tnode%s_rss_kib\tnode%s_fds\tnode%s_threads\tnode%s_conns' "$n" "$n" "$n" "$n"
    printf '\tnode%s_cache_kib\tnode%s_lastknown' "$n" "$n"
  done
  echo
  t0=$SECONDS
  while true; do
    printf '%s' $((SECONDS - t0))
    for ((n = 1; n <= NODES; n++)); do
      v=CLUSTER_NODE${n}_PID
      a=CLUSTER_NODE${n}_ADMIN
      printf '\t%s' "$(sample "${!v}" "${!a}")"
    done
    echo
    sleep "$SAMPLE"
  done
) >"$OUT/samples.tsv" 2>/dev/null &
SAMPLER_PID=$!

log "soaking: $TENANTS tenants x $PUSHERS pushers through $LB for $DURATION s"
RACE_PIDS=()
for name in "${TENANT_NAMES[@]}"; do
  timeout $((DURATION + 600)) "$WHARF_LOAD_BIN" gc-race --url "http://$LB" \
    --user "u$name" --password-file "$TMP/$name.password" --prefix "$name/soak" \
    --pushers "$PUSHERS" --duration "$DURATION" --p-pull 0.3 ${SEED:+--seed "$SEED"} \
    --state-out "$OUT/held-$name.json" --label "soak-$STAMP-$name" \
    >"$OUT/race-$name.json" 2>"$OUT/race-$name.txt" &
  RACE_PIDS+=($!)
done
for i in "${!RACE_PIDS[@]}"; do
  wait "${RACE_PIDS[$i]}" || fail "wharf-load gc-race for ${TENANT_NAMES[$i]} exited $?"
done
kill "$SAMPLER_PID" 2>/dev/null
SAMPLER_PID=

log "final collection"
timeout 300 "$WHARF_BIN" gc scan-orphans >"$OUT/passes/scan-orphans.json" 2>&1 || fail "wharf gc scan-orphans failed"
# What the last review delay still holds back becomes due.
sleep "$REVIEW_DELAY"
SETTLED=0
for i in 1 2 3 4 5 6; do
  f=$OUT/passes/run-$i.json
  timeout 600 "$WHARF_BIN" gc run >"$f" 2>&1 || {
    fail "wharf gc run (pass $i) failed: $(head -c 300 "$f")"
    break
  }
  [ "$(jq '.reviewed // 0' "$f")" = 0 ] && {
    SETTLED=1
    break
  }
done
[ "$SETTLED" = 1 ] || fail "the final passes did not settle"
timeout 600 "$WHARF_BIN" gc check >"$OUT/check.json" 2>"$OUT/check.err" || fail "wharf gc check: not clean"
for name in "${TENANT_NAMES[@]}"; do
  timeout 600 "$WHARF_LOAD_BIN" gc-verify --url "http://$LB" --user "u$name" --password-file "$TMP/$name.password" \
    --state "$OUT/held-$name.json" >"$OUT/verify-$name.json" 2>>"$OUT/race-$name.txt" ||
    fail "$name: held tags do not all pull after the final collection"
done

# The plot and the growth verdict.
python3 -c 'import matplotlib' 2>/dev/null || pip install --quiet matplotlib >"$OUT/pip.log" 2>&1 ||
  fail "matplotlib could not be installed (see pip.log)"
python3 "$ROOT/scripts/bench/soakplot.py" "$OUT/samples.tsv" "$OUT/soak.png" "$WARMUP" \
  "soak $STAMP: $NODES nodes, $TENANTS tenants x $PUSHERS pushers, ${DURATION}s" >"$OUT/growth.txt" ||
  fail "resources grew after the warm-up (see growth.txt)"

{
  echo "soak, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $NODES nodes on PostgreSQL + Garage behind HAProxy, --auth htpasswd"
  echo "$TENANTS tenants x $PUSHERS pushers for $DURATION s; collector: review delay $REVIEW_DELAY s, a pass every $GC_INTERVAL s on each node"
  for name in "${TENANT_NAMES[@]}"; do
    jq -r --arg t "$name" '"\($t): pushes \(.pushes.attempted) attempted, \(.pushes.acknowledged) acknowledged (\(.pushes.tags_moved) moved a tag); pulls \(.pulls_ok); tags deleted \(.tags_deleted), manifests deleted \(.manifests_deleted); refused 503 \(.refused_503), 429 \(.refused_429), MANIFEST_BLOB_UNKNOWN \(.pushes.refused_manifest_blob_unknown); gave up \(.pushes.gave_up); anything else \(.other); held \(.verify.tags), identical \(.verify.ok)"' \
      "$OUT/race-$name.json" 2>/dev/null || echo "$name: no report"
    jq -r --arg t "$name" '"\($t) after the final collection: \(.verify.ok) of \(.verify.tags) held tags identical"' \
      "$OUT/verify-$name.json" 2>/dev/null
  done
  echo "wharf gc check: $(jq -c '{clean, stored, held, missing_count, overdue_count, unreviewed_count}' "$OUT/check.json" 2>/dev/null || echo see check.json)"
  cat "$OUT/growth.txt"
  if [ -s "$FAILS" ]; then
    echo "FAILED:"
    sed 's/^/  /' "$FAILS"
  else
    echo "all checks passed"
  fi
} | tee "$OUT/summary.txt"
log "results in $OUT"
[ ! -s "$FAILS" ]
