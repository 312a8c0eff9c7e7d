#!/usr/bin/env bash
# Issue 12's race test, run by hand for as long as asked (the test command
# runs a minute of it: tests/cluster/run.sh, case gc-race-cluster).
#
#   DURATION=1800 bash scripts/bench/gc-race.sh     # the 30-minute run
#   DURATION=60 bash scripts/bench/gc-race.sh       # a smoke run
#
# Loopback only, bounded. Starts the three-node cluster (scripts/cluster.sh:
# PostgreSQL, Garage, HAProxy) with every node's collector at full speed
# (review delay 0, a pass every second, all three at once), races PUSHERS
# pushers through HAProxy for DURATION seconds (wharf-load gc-race: shared
# layers, moved and deleted tags, deleted manifests, pulls, re-pushes of
# deleted images), then scans for orphans, runs final passes until one
# reviews nothing, checks storage against metadata (`wharf gc check`)
# and, after restarting every node (cold caches), pulls every held tag again. The collectors' metrics are sampled every
# SAMPLE seconds meanwhile.
#
# Writes bench-out/gc-race-STAMP/: race.json (the wharf-load report),
# verify.json, passes/*.json, check.json, metrics.tsv (time, per node: queue
# depth, reviews, blobs deleted), summary.txt (the figures for
# docs/benchmarks.md). Exits non-zero when any check fails.
#
# Environment: DURATION [1800], PUSHERS [8], SAMPLE [10], SEED [clock],
# GC_INTERVAL (each node's --gc-interval-secs) [1],
# WHARF_BIN, WHARF_LOAD_BIN (built when missing), WHARF_CLUSTER_PORT,
# WHARF_CLUSTER_PG_PORT, WHARF_CLUSTER_GARAGE_PORT (fixed defaults below),
# KEEP=1 keeps the cluster's directory (logs) after the run.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DURATION=${DURATION:-1800}
PUSHERS=${PUSHERS:-8}
SAMPLE=${SAMPLE:-10}
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
WHARF_LOAD_BIN=${WHARF_LOAD_BIN:-$ROOT/target/release/wharf-load}
export WHARF_BIN
[ -x "$WHARF_BIN" ] && [ -x "$WHARF_LOAD_BIN" ] || cargo build --release -p wharf -p wharf-load || exit 1
"$WHARF_BIN" serve --help | grep -q -- --gc-review-delay-secs || {
  echo "$WHARF_BIN has no collector (--gc-review-delay-secs)" >&2
  exit 1
}

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out/gc-race-$STAMP
mkdir -p "$OUT/passes"
TMP=$(mktemp -d /tmp/wharf-gc-race.XXXXXX)
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

export WHARF_CLUSTER_PORT=${WHARF_CLUSTER_PORT:-18280}
export WHARF_CLUSTER_PG_PORT=${WHARF_CLUSTER_PG_PORT:-15680}
export WHARF_CLUSTER_GARAGE_PORT=${WHARF_CLUSTER_GARAGE_PORT:-14180}
export WHARF_CLUSTER_NODE_ARGS="--gc-review-delay-secs 0 --gc-interval-secs ${GC_INTERVAL:-1} --gc-orphan-age-secs 0 --gc-max-reviews-per-sec 0"
log "starting the cluster (collector: $WHARF_CLUSTER_NODE_ARGS)"
timeout 180 bash scripts/cluster.sh start "$TMP/cluster" >"$OUT/cluster-start.log" 2>&1 || {
  tail -n 20 "$OUT/cluster-start.log" >&2
  fail "the cluster did not start"
  exit 1
}
# shellcheck source=/dev/null
source "$TMP/cluster/cluster.env"
LB=$CLUSTER_LB
ADMINS=("$CLUSTER_NODE1_ADMIN" "$CLUSTER_NODE2_ADMIN" "$CLUSTER_NODE3_ADMIN")
export WHARF_ADMIN_URL="http://${ADMINS[0]}"

metric() { # metric ADMIN NAME: the sum of NAME's samples
  curl -s --noproxy '*' -m 5 "http://$1/metrics" |
    awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d", s }'
}

(
  printf 'secs'
  for n in 1 2 3; do printf '\tnode%s_queue\tnode%s_reviews\tnode%s_deleted' "$n" "$n" "$n"; done
  echo
  t0=$SECONDS
  while true; do
    printf '%s' $((SECONDS - t0))
    for a in "${ADMINS[@]}"; do
      printf '\t%s\t%s\t%s' "$(metric "$a" wharf_gc_queue_depth)" "$(metric "$a" wharf_gc_reviews_total)" \
        "$(metric "$a" wharf_gc_blobs_deleted_total)"
    done
    echo
    sleep "$SAMPLE"
  done
) >"$OUT/metrics.tsv" 2>/dev/null &
SAMPLER_PID=$!

log "racing $PUSHERS pushers through $LB for $DURATION s"
timeout $((DURATION + 600)) "$WHARF_LOAD_BIN" gc-race --url "http://$LB" --pushers "$PUSHERS" \
  --duration "$DURATION" ${SEED:+--seed "$SEED"} --state-out "$OUT/held.json" --label "bench-$STAMP" \
  >"$OUT/race.json" 2>"$OUT/race.txt"
RACE_RC=$?
cat "$OUT/race.txt" >&2
[ "$RACE_RC" = 0 ] || fail "wharf-load gc-race exited $RACE_RC"
kill "$SAMPLER_PID" 2>/dev/null
SAMPLER_PID=

DURING=()
for a in "${ADMINS[@]}"; do DURING+=("$(metric "$a" wharf_gc_blobs_deleted_total)"); done

log "final collection"
timeout 300 "$WHARF_BIN" gc scan-orphans >"$OUT/passes/scan-orphans.json" 2>&1 || fail "wharf gc scan-orphans failed"
FINAL_DELETED=0 FINAL_BYTES=0 SETTLED=0
for i in 1 2 3 4 5 6; do
  f=$OUT/passes/run-$i.json
  timeout 600 "$WHARF_BIN" gc run >"$f" 2>&1 || {
    fail "wharf gc run (pass $i) failed: $(head -c 300 "$f")"
    break
  }
  FINAL_DELETED=$((FINAL_DELETED + $(jq '.deleted // 0' "$f")))
  FINAL_BYTES=$((FINAL_BYTES + $(jq '.bytes_reclaimed // 0' "$f")))
  [ "$(jq '.reviewed // 0' "$f")" = 0 ] && {
    SETTLED=1
    break
  }
done
[ "$SETTLED" = 1 ] || fail "the final passes did not settle"
timeout 600 "$WHARF_BIN" gc check >"$OUT/check.json" 2>"$OUT/check.err" || fail "wharf gc check: not clean"
# Restarted, no node has anything in memory that could hide lost bytes.
for n in 1 2 3; do
  timeout 120 bash scripts/cluster.sh restart-node "$TMP/cluster" "$n" >>"$OUT/cluster-start.log" 2>&1 ||
    fail "restarting node$n after the race failed"
done
timeout 600 "$WHARF_LOAD_BIN" gc-verify --url "http://$LB" --state "$OUT/held.json" >"$OUT/verify.json" 2>>"$OUT/race.txt" ||
  fail "held tags do not all pull after the final collection"

{
  echo "gc-race, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, 3 nodes on PostgreSQL + Garage behind HAProxy"
  echo "collector: review delay 0 s, a pass every ${GC_INTERVAL:-1} s on each node; $PUSHERS pushers for $DURATION s"
  jq -r '"pushes attempted \(.pushes.attempted), acknowledged \(.pushes.acknowledged) (\(.pushes.tags_moved) moved a tag, \(.pushes.repushes) re-pushed a deleted image)",
    "refused MANIFEST_BLOB_UNKNOWN \(.pushes.refused_manifest_blob_unknown) times; pushes then acknowledged: \(.pushes.manifest_blob_unknown_then_ok)",
    "refused 503 \(.refused_503) times, 429 \(.refused_429) times; pushes then acknowledged: \(.pushes.busy_then_ok); gave up \(.pushes.gave_up); starved by the collector (MANIFEST_BLOB_UNKNOWN at half of its tries or more) \(.pushes.starved_by_collector // 0)",
    "anything else: \(.other)",
    "tags deleted \(.tags_deleted), manifests deleted \(.manifests_deleted), pulls of held images during the race \(.pulls_ok)",
    "blobs: \(.blobs.present) found by HEAD, \(.blobs.uploaded) uploaded, \(.blobs.mounted) mounted",
    "held tags at the end: \(.verify.tags), pulled byte-identical: \(.verify.ok), failed: \(.verify.failed)"' "$OUT/race.json"
  echo "blobs deleted by the collectors during the race: node1 ${DURING[0]}, node2 ${DURING[1]}, node3 ${DURING[2]}"
  echo "final passes: $FINAL_DELETED blobs, $FINAL_BYTES bytes; wharf gc check: $(jq -c '{clean, stored, held, missing_count, overdue_count, unreviewed_count}' "$OUT/check.json" 2>/dev/null || echo see check.json)"
  echo "after the final collection: $(jq -r '"\(.verify.ok) of \(.verify.tags) held tags pull byte-identical"' "$OUT/verify.json" 2>/dev/null)"
  if [ -s "$FAILS" ]; then
    echo "FAILED:"
    sed 's/^/  /' "$FAILS"
  else
    echo "all checks passed"
  fi
} | tee "$OUT/summary.txt"
log "results in $OUT"
[ ! -s "$FAILS" ]
