#!/usr/bin/env bash
# Garbage-collection benchmark, run by hand (not by CI), loopback only,
# every step bounded in time.
#
#   bash scripts/bench/gc.sh                 # full size, both backends
#   QUICK=1 bash scripts/bench/gc.sh         # smoke run (~2 min): a tiny store
#   BACKENDS=embedded bash scripts/bench/gc.sh
#
# For each metadata backend (embedded redb; PostgreSQL through
# scripts/postgres.sh), with blobs on the filesystem (S3 is not measured):
#
#   1. fills a fresh node, started with GC off and a review delay of 0, with
#      scripts/bench/gcfill.py: MANIFESTS image manifests of LAYERS layers
#      (one base layer shared per repository, the others unique) and a config
#      each, in REPOS repositories; then deletes every tenth manifest, which
#      leaves a tenth of the blobs and of the manifests referenced by nothing;
#   2. measures pull latency without a pass: wrk loads over the kept
#      manifests (by tag) and over kept blobs, both at once, in CHUNK_SECS
#      chunks, BASE_CHUNKS of them before the pass and as many after it
#      (the p99 reported is the median of all of them);
#   3. runs one full pass (POST /admin/v1/gc/run?verdicts=false) and, while it
#      runs, the same loads in the same chunks; only chunks that ended before
#      the pass did count as "during" (if the pass is shorter than a chunk,
#      the first chunk is reported with the share of it the pass covered).
#      The node's resident memory is sampled every 0.2 s and its high-water
#      mark (VmHWM, reset just before the pass) read at the end;
#      With ALTERNATE=1, step 3 is instead a run of short passes, each
#      limited to about 1.5 chunks' worth of reviews (from the rate of the
#      one before it), with a chunk taken while each runs and a chunk
#      taken after it ended, pass and no pass alternating until the queue
#      is empty: on a shared machine whose other load drifts over minutes,
#      each chunk with a pass has one without it seconds away. Only chunks
#      the pass lasted through count as "with";
#   4. checks the pass deleted exactly the unreferenced contents and bytes
#      (the filler knows them), that deleted content answers 404, that the
#      loads saw no error, and that `wharf check --storage` is clean.
#
# Knobs (environment):
#   QUICK=1              tiny store and short chunks (smoke run)
#   BACKENDS="embedded postgres"
#   REPOS=100 MANIFESTS=10000 LAYERS=10 BLOB_BYTES=1024 FILL_THREADS=16
#   CHUNK_SECS=5 BASE_CHUNKS=4  load chunks; MAX_CHUNKS=200 bounds a pass's
#   CONNS=8 THINK_MS=1   connections per load (manifests, blobs) and the pause
#                        before each request: an offered load below saturation
#                        (THINK_MS=0: closed loop, as fast as the node answers)
#   GC_ARGS=""           extra `wharf serve` flags (e.g. a GC throttle)
#   ALTERNATE=0          1: short passes alternating with chunks without one
#   ALT_FIRST=2000       reviews in the first short pass
#   FILL_TIMEOUT=5400 PASS_TIMEOUT=3600   upper bounds, seconds
#   WHARF_BIN=target/release/wharf   built if missing
#   KEEP=1               keep the temp dir (data, logs) after the run
#
# Prints a Markdown table and writes bench-out/gc-<date>.md plus raw data in
# bench-out/gc-<date>/ (results.tsv, chunks.tsv, rss, pass reports, logs).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/scripts/bench
CMDLINE=""
for v in QUICK BACKENDS REPOS MANIFESTS LAYERS BLOB_BYTES FILL_THREADS CHUNK_SECS BASE_CHUNKS \
         CONNS THINK_MS GC_ARGS ALTERNATE ALT_FIRST; do
  [ -n "${!v+x}" ] && CMDLINE+="$v=\"${!v}\" "
done
CMDLINE+="bash scripts/bench/gc.sh"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  REPOS=${REPOS:-4}; MANIFESTS=${MANIFESTS:-200}; CHUNK_SECS=${CHUNK_SECS:-2}
  BASE_CHUNKS=${BASE_CHUNKS:-2}
else
  REPOS=${REPOS:-100}; MANIFESTS=${MANIFESTS:-10000}; CHUNK_SECS=${CHUNK_SECS:-5}
  BASE_CHUNKS=${BASE_CHUNKS:-4}
fi
LAYERS=${LAYERS:-10}
BLOB_BYTES=${BLOB_BYTES:-1024}
FILL_THREADS=${FILL_THREADS:-16}
MAX_CHUNKS=${MAX_CHUNKS:-200}
CONNS=${CONNS:-8}
THINK_MS=${THINK_MS:-1}
GC_ARGS=${GC_ARGS:-}
ALTERNATE=${ALTERNATE:-0}
ALT_FIRST=${ALT_FIRST:-2000}
BACKENDS=${BACKENDS:-"embedded postgres"}
FILL_TIMEOUT=${FILL_TIMEOUT:-5400}
PASS_TIMEOUT=${PASS_TIMEOUT:-3600}
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
OCI_MT=application/vnd.oci.image.manifest.v1+json

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out
RUN=$OUT/gc-$STAMP
mkdir -p "$RUN/logs"
RESULTS=$RUN/results.tsv   # backend metric value
CHUNKS=$RUN/chunks.tsv     # backend phase chunk kind p99_us requests errors end_s
FAILS=$RUN/failures.txt
: >"$RESULTS"; : >"$CHUNKS"; : >"$FAILS"
# log, now, fail, free_port, wait_http
source "$BENCH/lib.sh"
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

for c in wrk curl jq python3; do
  command -v "$c" >/dev/null || { echo "gc.sh needs $c (apt-get install $c)" >&2; exit 1; }
done
if [ ! -x "$WHARF_BIN" ]; then
  log "building wharf (cargo build --release -p wharf)"
  cargo build --release -p wharf >"$RUN/logs/cargo-build.log" 2>&1
fi

W=$(mktemp -d /tmp/wharf-gcbench.XXXXXX)
chmod 755 "$W"              # the postgres user must reach its cluster dir
PIDS=()
PG_DIRS=()
trap bench_cleanup EXIT # lib.sh
trap 'exit 130' INT TERM
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

metrics_of() { curl -s -m 5 "http://$1/metrics" || true; }
metric() { # name text: a collector counter from a /metrics scrape (0 if absent)
  local pat
  case $1 in
    passes) pat='^wharf_gc_passes_total ' ;;
    pass_failures) pat='^wharf_gc_pass_failures_total ' ;;
    reviewed) pat='^wharf_gc_reviews_total[{ ]' ;;
    unlinked) pat='^wharf_gc_reviews_total[{].*verdict="unlinked"' ;;
    deleted) pat='^wharf_gc_blobs_deleted_total ' ;;
    bytes_reclaimed) pat='^wharf_gc_bytes_reclaimed_total ' ;;
    failures) pat='^wharf_gc_delete_failures_total ' ;;
  esac
  awk -v p="$pat" '$0 ~ p {s += $NF} END {printf "%d", s}' <<<"$2"
}
kib() { awk -v k="$2" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# Prints "time<TAB>VmRSS" of pid every 0.2 s until it exits or file $2
# appears.
sample_rss() { # pid stop-file
  while kill -0 "$1" 2>/dev/null && [ ! -e "$2" ]; do
    printf '%s\t%s\n' "$(now)" "$(kib "$1" VmRSS:)"; sleep 0.2
  done
}

# The watching the pass needs (VmRSS every 0.2 s, /metrics every 0.5 s)
# costs the machine CPU of its own: about 4% of the two cores in a profile
# (curl, awk, date and the node rendering its metrics). The same watching
# runs, its results thrown away, while the chunks without a pass are taken,
# so that the phases differ by the pass alone. Stops when file $2 appears.
shadow_watch() { # pid stop-file admin
  local pid=$1 stop=$2 admin=$3
  sample_rss "$pid" "$stop" >/dev/null &
  PIDS+=("$!")
  ( while [ ! -e "$stop" ]; do
      m=$(metrics_of "$admin"); metric passes "$m" >/dev/null; metric pass_failures "$m" >/dev/null
      sleep 0.5
    done ) &
  PIDS+=("$!")
}

# One chunk: the manifest load and the blob load at once, CHUNK_SECS long.
# Appends a line per load to CHUNKS; returns when both are done.
chunk() { # backend phase n data-dir
  local b=$1 ph=$2 n=$3 d=$4 kind pids=() line
  for kind in manifest blob; do
    local accept=""; [ $kind = manifest ] && accept=$OCI_MT
    WRK_PATHS=$d/$kind-paths WRK_ACCEPT=$accept WRK_THINK_MS=$THINK_MS \
      timeout $((CHUNK_SECS + 30)) wrk -t1 -c"$CONNS" -d"${CHUNK_SECS}s" --timeout 5s \
      -s "$BENCH/wrk-paths.lua" "http://$NODE" >"$RUN/logs/wrk-$b-$ph-$n-$kind.txt" 2>&1 &
    pids+=("$!")
  done
  local w; for w in "${pids[@]}"; do wait "$w" || true; done
  local end; end=$(now)
  for kind in manifest blob; do
    line=$(grep '^WRKRESULT' "$RUN/logs/wrk-$b-$ph-$n-$kind.txt" || true)
    if [ -z "$line" ]; then
      fail "$b: wrk $kind $ph chunk $n gave no result (logs/wrk-$b-$ph-$n-$kind.txt)"; continue
    fi
    local -A v=(); local kv
    for kv in ${line#WRKRESULT }; do v[${kv%%=*}]=${kv#*=}; done
    local errs=$(( v[status_errors] + v[connect_errors] + v[read_errors] + v[write_errors] + v[timeouts] ))
    [ "$errs" = 0 ] || fail "$b: wrk $kind $ph chunk $n: $errs errors of ${v[requests]} (logs/wrk-$b-$ph-$n-$kind.txt)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$b" "$ph" "$n" "$kind" "${v[p99_us]}" \
      "${v[requests]}" "$errs" "$end" >>"$CHUNKS"
  done
}

bench_backend() {
  local b=$1 d=$W/$b meta=() pgdir url
  mkdir -p "$d"
  log "== $b"
  if [ "$b" = postgres ]; then
    pgdir=$d/pg; PG_DIRS+=("$pgdir")
    url=$(timeout 120 bash "$ROOT/scripts/postgres.sh" start "$pgdir" "$(free_port)" 2>"$RUN/logs/pg-start.log") \
      || { fail "postgres: did not start (logs/pg-start.log)"; return 0; }
    printf '%s\n' "$url" >"$d/url"
    meta=(--metadata-url "$url")
    "$WHARF_BIN" migrate "${meta[@]}" >>"$RUN/logs/pg-start.log" 2>&1 \
      || { fail "postgres: wharf migrate failed (logs/pg-start.log)"; return 0; }
  fi
  local flags=(--listen 127.0.0.1:0 --addr-file "$d/addr" --admin-listen 127.0.0.1:0
    --admin-addr-file "$d/admin" --data-dir "$d/data" --log error
    --gc-enabled false --gc-review-delay-secs 0 "${meta[@]}")
  # shellcheck disable=SC2206
  local extra=($GC_ARGS)
  "$WHARF_BIN" serve "${flags[@]}" "${extra[@]}" >"$RUN/logs/wharf-$b.log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  local i; for i in $(seq 1 100); do [ -s "$d/addr" ] && [ -s "$d/admin" ] && break; sleep 0.1; done
  NODE=$(cat "$d/addr" 2>/dev/null || true); local admin; admin=$(cat "$d/admin" 2>/dev/null || true)
  if [ -z "$NODE" ] || ! wait_http "http://$NODE/v2/"; then
    fail "$b: the node did not start (logs/wharf-$b.log)"; return 0
  fi
  log "$b: node $NODE (pid $pid), admin $admin"

  # 1. fill
  local t0 t1
  t0=$(now)
  if ! timeout "$FILL_TIMEOUT" python3 "$BENCH/gcfill.py" --addr "$NODE" --out "$d" \
      --repos "$REPOS" --manifests "$MANIFESTS" --layers "$LAYERS" --blob-bytes "$BLOB_BYTES" \
      --threads "$FILL_THREADS" >"$RUN/logs/fill-$b.json" 2>"$RUN/logs/fill-$b.err"; then
    fail "$b: the fill failed or ran out of time (logs/fill-$b.*)"
    [ -s "$d/fill.json" ] || return 0
  fi
  t1=$(now)
  cp "$d/fill.json" "$RUN/fill-$b.json"
  local f=$d/fill.json
  record "$b" fill_s "$(calc "$t1 - $t0")"
  for k in blobs manifests manifests_deleted blobs_unreferenced expected_deleted expected_bytes \
           blob_uploads errors push_seconds delete_seconds; do
    record "$b" "$k" "$(jq -r ".$k" "$f")"
  done
  log "$b: filled in $(calc "$t1 - $t0") s: $(jq -c '{blobs, manifests, manifests_deleted, expected_deleted, errors}' "$f")"
  curl -s -m 60 "http://$admin/admin/v1/gc" >"$RUN/status-before-$b.json" || true
  record "$b" queued_before "$(jq -r '.queued // empty' "$RUN/status-before-$b.json")"
  record "$b" stored_kib_before "$(du -sk "$d/data" | cut -f1)"
  [ "$b" = postgres ] && record "$b" pg_kib "$(du -sk "$pgdir" | cut -f1)"

  # 2. without a pass: a warm-up chunk (not recorded), then BASE_CHUNKS
  chunk "$b" warmup 0 "$d"; sed -i "/^$b\twarmup\t/d" "$CHUNKS"
  record "$b" rss_before_kib "$(kib "$pid" VmRSS:)"
  shadow_watch "$pid" "$d/base-done" "$admin"
  for i in $(seq 1 "$BASE_CHUNKS"); do chunk "$b" base "$i" "$d"; done
  touch "$d/base-done"

  if [ "$ALTERNATE" = 1 ]; then
    alternate "$b" "$d" "$admin" "$pid"
  else
    full_pass "$b" "$d" "$admin" "$pid"
  fi
  local p=$RUN/pass-$b.json

  # the same loads again after the pass: "without" is the chunks before and
  # after it, so a drift in the machine's other load does not pass for the
  # collector's doing
  shadow_watch "$pid" "$d/after-done" "$admin"
  for i in $(seq 1 "$BASE_CHUNKS"); do chunk "$b" after "$i" "$d"; done
  touch "$d/after-done"
  verify "$b" "$d" "$admin" "$pid" "$f" "$p"
}

# 3, with ALTERNATE=1: short passes, each with a chunk taken while it runs
# ("alt-with", counted only if the pass outlasted it) and one after it
# ("alt-without"), until a pass finds the queue empty. The passes' figures
# are summed into pass-<backend>.json for the checks.
alternate() { # backend data-dir admin pid
  local b=$1 d=$2 admin=$3 pid=$4 lim=$ALT_FIRST k=0 r secs covered=0
  local sum='{"reviewed":0,"unlinked":0,"deleted":0,"bytes_reclaimed":0,"failures":0,"seconds":0}'
  echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
  record "$b" rss_pass_start_kib "$(kib "$pid" VmRSS:)"
  : >"$d/alt-covered"
  while [ $k -lt "$MAX_CHUNKS" ]; do
    k=$((k + 1))
    curl -s -m "$PASS_TIMEOUT" -X POST -o "$d/alt-$k.json" \
      "http://$admin/admin/v1/gc/run?verdicts=false&limit=$lim" &
    local cp=$!
    chunk "$b" alt-with "$k" "$d"
    wait "$cp" || { fail "$b: short pass $k gave no answer"; break; }
    r=$(jq -r '.reviewed // empty' "$d/alt-$k.json")
    [ -n "$r" ] || { fail "$b: short pass $k: $(head -c 300 "$d/alt-$k.json")"; break; }
    secs=$(jq -r .seconds "$d/alt-$k.json")
    sum=$(jq -c --slurpfile a "$d/alt-$k.json" \
      'reduce ("reviewed","unlinked","deleted","bytes_reclaimed","failures","seconds") as $f (.; .[$f] += $a[0][$f])' <<<"$sum")
    # the chunk counts as "with" if the pass outlasted it
    if awk -v s="$secs" -v c="$CHUNK_SECS" 'BEGIN {exit !(s >= c)}'; then
      echo "$k" >>"$d/alt-covered"; covered=$((covered + 1))
    fi
    chunk "$b" alt-without "$k" "$d"
    [ "$r" -lt "$lim" ] && break   # the queue ran dry
    lim=$(awk -v r="$r" -v s="$secs" -v c="$CHUNK_SECS" 'BEGIN {n = r / (s > 0.1 ? s : 0.1) * c * 1.5; printf "%d", (n < 100 ? 100 : n)}')
  done
  printf '%s\n' "$sum" >"$RUN/pass-$b.json"
  record "$b" pass_source "alternating short passes ($k)"
  record "$b" alt_passes "$k"
  record "$b" alt_covered "$covered"
  paste -sd, "$d/alt-covered" | sed 's/^/alt_covered_list\t/; s/^/'"$b"'\t/' >>"$RUN/results.tsv"
  record "$b" pass_chunks_inside 0
  local k2; for k2 in reviewed unlinked deleted bytes_reclaimed failures seconds; do
    record "$b" "pass_$k2" "$(jq -r ".$k2" "$RUN/pass-$b.json")"
  done
  record "$b" rss_peak_kib "$(kib "$pid" VmHWM:)"
  record "$b" hwm_pass_kib "$(kib "$pid" VmHWM:)"
  log "$b: $k short passes, $covered outlasting their chunk: $(jq -c . "$RUN/pass-$b.json")"
}

# 3. a full pass, with the same loads while it runs
full_pass() { # backend data-dir admin pid
  local b=$1 d=$2 admin=$3 pid=$4
  echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || fail "$b: cannot reset VmHWM; the high-water mark includes the fill"
  record "$b" rss_pass_start_kib "$(kib "$pid" VmRSS:)"
  sample_rss "$pid" "$d/pass-done" >"$RUN/rss-$b.tsv" &
  local sampler=$!; PIDS+=("$sampler")
  # The admin port drops a request that moves no byte for twice its idle
  # timeout (2 x 60 s), and a pass answers only at its end: a pass longer
  # than 2 minutes loses its HTTP answer while it goes on in the node. So
  # the end of the pass is read from /metrics (wharf_gc_passes_total going
  # up) and, without an answer, its figures are the metrics' increments.
  local m0; m0=$(metrics_of "$admin")
  local pstart; pstart=$(now)
  ( curl -s -m "$PASS_TIMEOUT" -X POST -o "$RUN/pass-$b.json" -w '%{http_code} %{time_total}\n' \
      "http://$admin/admin/v1/gc/run?verdicts=false" >"$d/pass-curl" 2>&1 || true ) &
  local passer=$!; PIDS+=("$passer")
  ( passes0=$(metric passes "$m0")
    for _ in $(seq 1 $((PASS_TIMEOUT * 2))); do
      m=$(metrics_of "$admin")
      if [ "$(metric passes "$m")" -gt "$passes0" ] || [ "$(metric pass_failures "$m")" -gt "$(metric pass_failures "$m0")" ]; then
        now >"$d/pass-end"; printf '%s\n' "$m" >"$RUN/metrics-after-pass-$b.txt"; break
      fi
      sleep 0.5
    done
    touch "$d/pass-done" ) &
  local watcher=$!; PIDS+=("$watcher")
  local n=0
  while [ ! -e "$d/pass-done" ] && [ $n -lt "$MAX_CHUNKS" ]; do
    n=$((n + 1)); chunk "$b" pass "$n" "$d"
  done
  wait "$watcher" || true
  wait "$sampler" 2>/dev/null || true
  [ -s "$d/pass-end" ] || { fail "$b: the pass did not end within ${PASS_TIMEOUT} s"; return 0; }
  local m1 secs; m1=$(cat "$RUN/metrics-after-pass-$b.txt")
  secs=$(calc "$(cat "$d/pass-end") - $pstart")
  if [ "$(metric pass_failures "$m1")" -gt "$(metric pass_failures "$m0")" ]; then
    fail "$b: the pass failed (logs/wharf-$b.log)"; return 0
  fi
  sleep 1   # the answer, if it comes, follows the metrics by microseconds
  local code csecs; read -r code csecs <"$d/pass-curl" 2>/dev/null || true
  if [ "$code" = 200 ]; then
    record "$b" pass_source answer
  else
    record "$b" pass_source "metrics (the admin request ended ${code:-?} after ${csecs:-?} s)"
    local k; printf '{' >"$RUN/pass-$b.json"
    for k in reviewed unlinked deleted bytes_reclaimed failures; do
      printf '"%s":%s,' "$k" $(( $(metric "$k" "$m1") - $(metric "$k" "$m0") )) >>"$RUN/pass-$b.json"
    done
    printf '"seconds":%s}\n' "$secs" >>"$RUN/pass-$b.json"
  fi
  secs=$(jq -r .seconds "$RUN/pass-$b.json")
  local pend; pend=$(calc "$pstart + $secs")
  # the "during" chunks: those that ended before the pass did
  awk -F'\t' -v b="$b" -v e="$pend" '$1 == b && $2 == "pass" && $8 <= e {print $3}' "$CHUNKS" | sort -u >"$d/during"
  record "$b" pass_chunks_inside "$(wc -l <"$d/during")"
  record "$b" pass_chunks_total "$n"
  record "$b" pass_cover "$(calc "($secs < $CHUNK_SECS) ? $secs / $CHUNK_SECS : 1")"
  local p=$RUN/pass-$b.json
  for k in reviewed unlinked deleted bytes_reclaimed failures seconds; do record "$b" "pass_$k" "$(jq -r ".$k" "$p")"; done
  record "$b" rss_peak_kib "$(cut -f2 "$RUN/rss-$b.tsv" | sort -n | tail -1)"
  record "$b" hwm_pass_kib "$(kib "$pid" VmHWM:)"
  log "$b: pass $(jq -c '{reviewed, unlinked, deleted, bytes_reclaimed, failures, seconds}' "$p"), $n load chunks"
}

verify() { # backend data-dir admin pid fill-json pass-json
  local b=$1 d=$2 admin=$3 pid=$4 f=$5 p=$6 meta=()
  [ "$b" = postgres ] && meta=(--metadata-url "$(cat "$d/url")")
  # 4. verification: a second pass finds what a link review queued late
  curl -s -m "$PASS_TIMEOUT" -X POST -o "$RUN/pass2-$b.json" "http://$admin/admin/v1/gc/run?verdicts=false" || true
  local del bytes
  del=$(jq -s '.[0].deleted + (.[1].deleted // 0)' "$p" "$RUN/pass2-$b.json")
  bytes=$(jq -s '.[0].bytes_reclaimed + (.[1].bytes_reclaimed // 0)' "$p" "$RUN/pass2-$b.json")
  record "$b" pass2_deleted "$(jq -r '.deleted // "?"' "$RUN/pass2-$b.json")"
  record "$b" pass2_reviewed "$(jq -r '.reviewed // "?"' "$RUN/pass2-$b.json")"
  curl -s -m 60 "http://$admin/admin/v1/gc" >"$RUN/status-after-$b.json" || true
  record "$b" holds_before "$(jq -r '.holds // empty' "$RUN/status-before-$b.json")"
  record "$b" holds_after "$(jq -r '.holds // empty' "$RUN/status-after-$b.json")"
  record "$b" queued_after "$(jq -r '.queued // empty' "$RUN/status-after-$b.json")"
  local want_del want_bytes
  want_del=$(jq -r .expected_deleted "$f"); want_bytes=$(jq -r .expected_bytes "$f")
  if [ "$del" = "$want_del" ] && [ "$bytes" = "$want_bytes" ]; then
    record "$b" exact yes
  else
    record "$b" exact no
    fail "$b: reclaimed $del contents / $bytes bytes; the deleted images held $want_del / $want_bytes"
  fi
  local gone_bad=0 path code2
  while read -r path; do
    code2=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Accept: $OCI_MT" "http://$NODE$path" || true)
    [ "$code2" = 404 ] || gone_bad=$((gone_bad + 1))
  done <"$d/gone-blob-paths"
  [ "$gone_bad" = 0 ] || fail "$b: $gone_bad deleted contents did not answer 404 after the pass"
  record "$b" stored_kib_after "$(du -sk "$d/data" | cut -f1)"
  if timeout 900 "$WHARF_BIN" check --storage --data-dir "$d/data" --admin-listen "$admin" "${meta[@]}" \
      >"$RUN/check-$b.json" 2>"$RUN/logs/check-$b.err"; then
    record "$b" check clean
  else
    record "$b" check "not clean"
    fail "$b: wharf check --storage is not clean (check-$b.json, logs/check-$b.err)"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$b" = postgres ]; then bash "$ROOT/scripts/postgres.sh" stop "$pgdir" >/dev/null 2>&1 || true; fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$d/data"
}

for b in $BACKENDS; do bench_backend "$b"; done

{
  echo "nproc=$(nproc)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wharf=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty')"
  echo "wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "chunk_secs=$CHUNK_SECS"
  echo "conns=$CONNS"
  echo "think_ms=$THINK_MS"
  echo "command=$CMDLINE"
} >"$RUN/machine.txt"
python3 "$BENCH/gcsummary.py" "$RUN" >"$OUT/gc-$STAMP.md"
cat "$OUT/gc-$STAMP.md"
log "written: bench-out/gc-$STAMP.md (raw data in bench-out/gc-$STAMP/)"
[ ! -s "$FAILS" ] || exit 1
