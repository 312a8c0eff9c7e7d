#!/usr/bin/env bash
# The embedded store's page cache against memory and latency, on a store
# kept by a scale run (KEEP=1 bash scripts/bench/scale.sh): by hand, loopback
# only, every step bounded.
#
#   bash scripts/bench/scale-cache.sh /tmp/wharf-scale.XXXX 1000000
#   CACHES="64 256 1024" ROUNDS=3 WRK_SECS=10 bash scripts/bench/scale-cache.sh DIR N
#   ARENAS=0 EXTRA="--manifest-cache-mib 1" CACHES=64 bash scripts/bench/scale-cache.sh DIR N
#
# DIR is the kept temp dir of the run (with embedded/data and paths-N); N the
# size whose path files to use. For each --metadata-cache-mib in CACHES (and
# once more with MALLOC_ARENA_MAX=2 at the first size, to see what glibc's
# per-thread arenas add), starts `wharf serve` on the kept data, runs the
# uniform loads of scale.sh (manifest GET by tag, then by digest: ROUNDS
# rounds of WRK_SECS, 4 connections) and prints one line: cache, RSS after
# start, RSS after the loads, and the median p50/p99/req/s of each load.
# EXTRA: more `wharf serve` flags; ARENAS=0 skips the MALLOC_ARENA_MAX run.
#
# Owns: the node it starts (on free loopback ports) and nothing else; the
# store is read and served, and gets the pull times the loads record. Must
# never: delete or move the kept data, or start anything beyond loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/scripts/bench
DIR=${1:?usage: scale-cache.sh KEPT_DIR SIZE}
N=${2:?usage: scale-cache.sh KEPT_DIR SIZE}
CACHES=${CACHES:-"256 1024 64"}
ROUNDS=${ROUNDS:-3}
WRK_SECS=${WRK_SECS:-10}
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
EXTRA=${EXTRA:-}
ARENAS=${ARENAS:-1}
OCI_MT=application/vnd.oci.image.manifest.v1+json
FAILS=/dev/null
source "$BENCH/lib.sh"   # log, now, free_port
DATA=$DIR/embedded/data
[ -s "$DATA/meta.redb" ] && [ -s "$DIR/paths-$N/tag-paths" ] || {
  echo "scale-cache.sh: no kept embedded store or paths-$N under $DIR" >&2; exit 1; }
PID=""
trap '[ -z "$PID" ] || kill "$PID" 2>/dev/null || true' EXIT

run() { # cache_mib env...
  local mib=$1; shift
  local addr=127.0.0.1:$(free_port)
  env "$@" "$WHARF_BIN" serve --listen "$addr" --admin-listen 127.0.0.1:0 --data-dir "$DATA" \
    --log warn --metadata-cache-mib "$mib" $EXTRA >>"$DIR/scale-cache.log" 2>&1 &
  PID=$!
  python3 "$BENCH/scalefill.py" ready --addr "$addr" --timeout 600 >/dev/null
  sleep 2
  local rss0; rss0=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
  local kind r out=""
  for kind in tag digest; do
    local p50s=() p99s=() rpss=()
    for r in $(seq 1 "$ROUNDS"); do
      local line
      line=$(WRK_PATHS=$DIR/paths-$N/$kind-paths WRK_ACCEPT=$OCI_MT WRK_THINK_MS=0 \
        timeout $((WRK_SECS + 60)) wrk -t1 -c4 -d"${WRK_SECS}s" --timeout 10s \
        -s "$BENCH/wrk-paths.lua" "http://$addr" 2>&1 | grep '^WRKRESULT' || true)
      local -A v=(); local kv
      for kv in ${line#WRKRESULT }; do v[${kv%%=*}]=${kv#*=}; done
      p50s+=("${v[p50_us]:-0}"); p99s+=("${v[p99_us]:-0}")
      rpss+=("$(( ${v[requests]:-0} * 1000000 / ${v[duration_us]:-1} ))")
    done
    med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    out+=" $kind p50 $(med "${p50s[@]}") us p99 $(med "${p99s[@]}") us $(med "${rpss[@]}") req/s;"
  done
  local rss1; rss1=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  printf 'cache %s MiB%s%s: RSS after start %d MiB, after the loads %d MiB;%s\n' \
    "$mib" "${EXTRA:+ $EXTRA}" "${*:+ ($*)}" $((rss0 / 1024)) $((rss1 / 1024)) "$out"
}

first=""
for mib in $CACHES; do
  run "$mib"
  [ -n "$first" ] || first=$mib
done
[ "$ARENAS" = 0 ] || run "$first" MALLOC_ARENA_MAX=2
