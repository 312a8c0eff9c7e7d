#!/usr/bin/env bash
# Cost as the work grows (issue 15): a benchmark run by hand (not by CI),
# loopback only, every step bounded in time.
#
#   bash scripts/bench/scale.sh                          # 10^3..10^6, both backends, reference
#   SIZES="1000 10000 100000" bash scripts/bench/scale.sh
#   BACKENDS=embedded REFERENCE=0 bash scripts/bench/scale.sh
#   QUICK=1 bash scripts/bench/scale.sh                  # smoke run (~3 min): 200 and 1,000 tags
#
# For each backend (Wharf on the embedded store, Wharf on PostgreSQL from
# scripts/postgres.sh, and with REFERENCE=1 the reference registry, CNCF
# distribution 2.8 from Debian's `docker-registry`, on its filesystem store),
# one store is filled incrementally through the registry API by
# scripts/bench/scalefill.py (see there for the layout: tags spread over
# about N/100 repositories in 10 tenants, one ~1 KiB manifest per tag) and,
# at each size N of SIZES:
#
#   1. fill from the previous size up to N (timed: manifests/s);
#   2. restart the registry: startup time is from exec to the first 200 on
#      /v2/ (and, for Wharf, to /readyz 200 on the admin port); RSS 2 s later;
#   3. wrk loads, ROUNDS rounds of WRK_SECS each, CONNS connections, one
#      thread, closed loop: manifest GET by tag and by digest (SAMPLES paths
#      drawn uniformly over all N tags), by tag over a hot set (the same
#      1,000 tags at every size), a tag-list page of a big repository
#      (`?n=100`, half of them from a random `last=`), a catalog page
#      (`?n=100`, half with a random `last=`); medians over the rounds of the
#      p50, p99 and req/s;
#   4. RSS and VmHWM after the loads ("warm");
#   5. PUSHES pushes of a small image (3 x 4 KiB layers, a config, the
#      manifest), one after the other from one client: p50 and p99;
#   6. startup again after kill -9 right after the pushes (what a crash in
#      the middle of writes costs: redb's repair of its allocator state,
#      the reference's nothing), then after kill -9 that follows 3 pushes
#      and 2 s without writes (the embedded store saved that state);
#   7. sizes (taken while the node is down, before 2.): metadata (meta.redb; pg_database_size after VACUUM ANALYZE;
#      the reference's repositories/ tree, where its tags and links live)
#      and the whole store, per manifest.
#
# Knobs (environment):
#   SIZES="1000 10000 100000 1000000"   tag counts, increasing
#   BACKENDS="embedded postgres"        Wharf backends
#   REFERENCE=1   also the reference registry, at REF_SIZES (default: SIZES
#                 up to 100000; it stops early once a fill step would not end
#                 within FILL_TIMEOUT)
#   QUICK=1       smoke run: SIZES="200 1000", 1 round of 2 s, 10 pushes
#   ROUNDS=3 WRK_SECS=10 CONNS=4 SAMPLES=100000 PUSHES=50
#   FILL_PROCS=2 FILL_THREADS=16        generator processes x threads
#   FILL_TIMEOUT=14400                  upper bound of one fill step, seconds
#   WHARF_ARGS=""                       extra `wharf serve` flags
#   WHARF_BIN=target/release/wharf      built if missing
#   KEEP=1        keep the temp dir (stores, logs) after the run
#
# Writes bench-out/scale-<date>/ (results.tsv: backend size metric value;
# rounds.tsv; fill JSON; wrk and node logs; machine.txt) and prints the
# Markdown tables of scripts/bench/scaleplot.py (which also draws the
# PNGs when asked: see there).
#
# Owns: its temp dir under /tmp, the registries and PostgreSQL cluster it
# starts there (on free loopback ports), and bench-out/scale-*. Must never:
# listen beyond loopback, touch another cluster or data dir, or kill a
# process it did not start.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/scripts/bench
CMDLINE=""
for v in QUICK SIZES BACKENDS REFERENCE REF_SIZES ROUNDS WRK_SECS CONNS SAMPLES PUSHES \
         FILL_PROCS FILL_THREADS WHARF_ARGS; do
  [ -n "${!v+x}" ] && CMDLINE+="$v=\"${!v}\" "
done
CMDLINE+="bash scripts/bench/scale.sh"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  SIZES=${SIZES:-"200 1000"}; ROUNDS=${ROUNDS:-1}; WRK_SECS=${WRK_SECS:-2}; PUSHES=${PUSHES:-10}
else
  SIZES=${SIZES:-"1000 10000 100000 1000000"}; ROUNDS=${ROUNDS:-3}; WRK_SECS=${WRK_SECS:-10}
  PUSHES=${PUSHES:-50}
fi
BACKENDS=${BACKENDS:-"embedded postgres"}
REFERENCE=${REFERENCE:-1}
if [ -z "${REF_SIZES:-}" ]; then
  REF_SIZES=""; for n in $SIZES; do [ "$n" -le 100000 ] && REF_SIZES+="$n "; done
fi
CONNS=${CONNS:-4}
SAMPLES=${SAMPLES:-100000}
FILL_PROCS=${FILL_PROCS:-2}
FILL_THREADS=${FILL_THREADS:-16}
FILL_TIMEOUT=${FILL_TIMEOUT:-14400}
WHARF_ARGS=${WHARF_ARGS:-}
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
REGISTRY=${REGISTRY:-/usr/bin/docker-registry}
OCI_MT=application/vnd.oci.image.manifest.v1+json
PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out
RUN=$OUT/scale-$STAMP
mkdir -p "$RUN/logs"
RESULTS=$RUN/results.tsv   # backend size metric value
ROUNDS_TSV=$RUN/rounds.tsv # backend size kind round requests p50_us p99_us errors rps
FAILS=$RUN/failures.txt
: >"$RESULTS"; : >"$ROUNDS_TSV"; : >"$FAILS"
# log, now, fail, free_port, wait_http, start_reference
source "$BENCH/lib.sh"
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }
kib() { awk -v k="$2" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || true; }

for c in wrk curl jq python3; do
  command -v "$c" >/dev/null || { echo "scale.sh needs $c (apt-get install $c)" >&2; exit 1; }
done
if [ "$REFERENCE" = 1 ] && [ ! -x "$REGISTRY" ]; then
  echo "scale.sh: REFERENCE=1 needs $REGISTRY (apt-get install docker-registry)" >&2; exit 1
fi
if [ ! -x "$WHARF_BIN" ]; then
  log "building wharf (cargo build --release -p wharf)"
  cargo build --release -p wharf >"$RUN/logs/cargo-build.log" 2>&1
fi

W=$(mktemp -d /tmp/wharf-scale.XXXXXX)
chmod 755 "$W"              # the postgres user must reach its cluster dir
# The binary measured is a copy: a rebuild during the run does not change it.
WHARF_VERSION=$("$WHARF_BIN" --version)
cp "$WHARF_BIN" "$W/wharf"; WHARF_BIN=$W/wharf
PIDS=()
PG_DIRS=()
declare -A PID ADDR ADMIN
NODE_PID=""
trap bench_cleanup EXIT # lib.sh
trap 'exit 130' INT TERM
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# What else runs on the machine: the load average and the busiest
# processes every 30 s (at most 12 hours), for the report.
( for _ in $(seq 1 1440); do
    [ -d "$W" ] || exit 0
    printf '%s load %s\n' "$(date -u +%T)" "$(cut -d' ' -f1-3 /proc/loadavg)"
    ps -eo pcpu=,etime=,args= --sort=-pcpu 2>/dev/null | head -6 | cut -c1-160 | sed 's/^/    /'
    sleep 30
  done ) >"$RUN/load.txt" 2>/dev/null &
PIDS+=("$!")

# ---------------------------------------------------------------- a node
# start_node backend size: starts the registry on its fixed ports, records
# the startup times; sets NODE_PID and NODE (ip:port).
start_node() { # backend size [metric suffix]
  local b=$1 n=$2 sfx=${3:-} t0 t1 t2 ready
  t0=$(now)
  case $b in
    reference)
      start_reference                       # lib.sh: a free port, $W/registry.yml
      NODE_PID=${PID[reference]}; NODE=${ADDR[reference]}
      ;;
    *)
      # shellcheck disable=SC2206
      local extra=($WHARF_ARGS)
      "$WHARF_BIN" serve --listen "$NODE" --admin-listen "$NODE_ADMIN" --data-dir "$W/$b/data" \
        --log warn "${META[@]}" "${extra[@]}" >>"$RUN/logs/wharf-$b.log" 2>&1 &
      NODE_PID=$!; PIDS+=("$NODE_PID")
      ;;
  esac
  if ! ready=$(python3 "$BENCH/scalefill.py" ready --addr "$NODE" --timeout 600); then
    fail "$b at $n: the registry did not answer /v2/ within 600 s"; return 1
  fi
  t1=$ready
  record "$b" "$n" "startup${sfx}_s" "$(calc "$t1 - $t0")"
  if [ "$b" != reference ]; then
    if t2=$(python3 "$BENCH/scalefill.py" ready --addr "$NODE_ADMIN" --path /readyz --timeout 600); then
      record "$b" "$n" "readyz${sfx}_s" "$(calc "$t2 - $t0")"
    else
      fail "$b at $n: /readyz did not answer 200 within 600 s"
    fi
  fi
  sleep 2
  record "$b" "$n" "rss_start${sfx}_kib" "$(kib "$NODE_PID" VmRSS:)"
  log "$b at $n: up in $(calc "$t1 - $t0") s (pid $NODE_PID, $NODE), RSS $(kib "$NODE_PID" VmRSS:) KiB"
}

stop_node() {
  [ -n "$NODE_PID" ] || return 0
  kill "$NODE_PID" 2>/dev/null || true
  local i; for i in $(seq 1 600); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$NODE_PID" 2>/dev/null; then
    fail "node $NODE_PID did not stop within 60 s of SIGTERM; killed"; kill -9 "$NODE_PID" || true
  fi
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=""
}

# kill -9 of the node, as a crash would.
crash_node() {
  kill -9 "$NODE_PID" 2>/dev/null || true
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=""
}

# One wrk load over a path file: appends to ROUNDS_TSV.
load() { # backend size kind round
  local b=$1 n=$2 kind=$3 r=$4 accept="" line
  case $kind in tag | digest | hot) accept=$OCI_MT ;; esac
  local log=$RUN/logs/wrk-$b-$n-$kind-$r.txt
  WRK_PATHS=$W/paths-$n/$kind-paths WRK_ACCEPT=$accept WRK_THINK_MS=0 \
    timeout $((WRK_SECS + 60)) wrk -t1 -c"$CONNS" -d"${WRK_SECS}s" --timeout 10s \
    -s "$BENCH/wrk-paths.lua" "http://$NODE" >"$log" 2>&1 || true
  line=$(grep '^WRKRESULT' "$log" || true)
  if [ -z "$line" ]; then fail "$b at $n: wrk $kind round $r gave no result ($log)"; return 0; fi
  local -A v=(); local kv
  for kv in ${line#WRKRESULT }; do v[${kv%%=*}]=${kv#*=}; done
  local errs=$(( v[status_errors] + v[connect_errors] + v[read_errors] + v[write_errors] + v[timeouts] ))
  [ "$errs" = 0 ] || fail "$b at $n: wrk $kind round $r: $errs errors of ${v[requests]} ($log)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$b" "$n" "$kind" "$r" "${v[requests]}" \
    "${v[p50_us]}" "${v[p99_us]}" "$errs" "$(calc "${v[requests]} / (${v[duration_us]} / 1000000)")" \
    >>"$ROUNDS_TSV"
}

sizes_of() { # backend size
  local b=$1 n=$2 manifests=$((n + PUSHES * (NSIZE - 1))) meta_b all_kib
  case $b in
    embedded)
      meta_b=$(stat -c %s "$W/$b/data/meta.redb") ;;
    postgres)
      PGCONNECT_TIMEOUT=10 timeout 3600 "$PG_BIN/psql" -h "$PGDIR" -p "$PGPORT" -U wharf -d wharf -q \
        -c 'VACUUM ANALYZE' >>"$RUN/logs/pg-vacuum.log" 2>&1 || fail "postgres at $n: VACUUM ANALYZE failed"
      meta_b=$(PGCONNECT_TIMEOUT=10 timeout 60 "$PG_BIN/psql" -h "$PGDIR" -p "$PGPORT" -U wharf -d wharf \
        -Atc "SELECT pg_database_size('wharf')") ;;
    reference)
      meta_b=$(( $(du -sk "$W/reference-data/docker/registry/v2/repositories" | cut -f1) * 1024 )) ;;
  esac
  local data=$W/$b/data; [ "$b" = reference ] && data=$W/reference-data
  all_kib=$(du -sk "$data" | cut -f1)
  [ "$b" = postgres ] && all_kib=$((all_kib + meta_b / 1024))
  record "$b" "$n" manifests "$manifests"
  record "$b" "$n" meta_bytes "$meta_b"
  record "$b" "$n" meta_bytes_per_manifest "$(calc "$meta_b / $manifests")"
  record "$b" "$n" store_bytes_per_manifest "$(calc "$all_kib * 1024 / $manifests")"
  record "$b" "$n" files "$(find "$data" -type f | wc -l)"
}

pg_pss_kib() { # the PSS of the cluster's processes (postmaster and children)
  local pm; pm=$(head -1 "$PGDIR/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  local p sum=0 v
  for p in "$pm" $(ps -o pid= --ppid "$pm" 2>/dev/null); do
    v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

bench_backend() {
  local b=$1 sizes=$2 filled=0 n t0 t1
  NSIZE=0
  mkdir -p "$W/$b"
  log "== $b: sizes $sizes"
  META=()
  if [ "$b" = postgres ]; then
    PGDIR=$W/$b/pg; PGPORT=$(free_port); PG_DIRS+=("$PGDIR")
    local url
    url=$(timeout 120 bash "$ROOT/scripts/postgres.sh" start "$PGDIR" "$PGPORT" 2>"$RUN/logs/pg-start.log") \
      || { fail "postgres: did not start (logs/pg-start.log)"; return 0; }
    META=(--metadata-url "$url")
    "$WHARF_BIN" migrate "${META[@]}" >>"$RUN/logs/pg-start.log" 2>&1 \
      || { fail "postgres: wharf migrate failed (logs/pg-start.log)"; return 0; }
  fi
  NODE=127.0.0.1:$(free_port); NODE_ADMIN=127.0.0.1:$(free_port)
  start_node "$b" 0 || return 0
  for n in $sizes; do
    NSIZE=$((NSIZE + 1))
    # 1. fill
    t0=$(now)
    if ! timeout "$FILL_TIMEOUT" python3 "$BENCH/scalefill.py" fill --addr "$NODE" --from "$filled" --to "$n" \
        --procs "$FILL_PROCS" --threads "$FILL_THREADS" >"$RUN/fill-$b-$n.json" 2>"$RUN/logs/fill-$b-$n.err"; then
      fail "$b: the fill to $n failed or ran out of time ($FILL_TIMEOUT s; fill-$b-$n.json, logs/fill-$b-$n.err)"
      stop_node; return 0
    fi
    t1=$(now)
    record "$b" "$n" fill_s "$(calc "$t1 - $t0")"
    record "$b" "$n" fill_manifests_per_s "$(jq -r .manifests_per_sec "$RUN/fill-$b-$n.json")"
    log "$b: filled $filled -> $n in $(calc "$t1 - $t0") s ($(jq -c '{manifests_per_sec, repos_touched, errors}' "$RUN/fill-$b-$n.json"))"
    filled=$n
    # 2. restart (PostgreSQL: vacuumed and analysed while the node is down)
    stop_node
    sizes_of "$b" "$n"
    start_node "$b" "$n" || return 0
    [ "$b" = postgres ] && record "$b" "$n" pg_pss_start_kib "$(pg_pss_kib)"
    # 3. loads
    python3 "$BENCH/scalefill.py" paths --size "$n" --out "$W/paths-$n" --samples "$SAMPLES" \
      >"$RUN/logs/paths-$n.json"
    local r kind
    for r in $(seq 1 "$ROUNDS"); do
      for kind in tag digest hot taglist catalog; do load "$b" "$n" "$kind" "$r"; done
    done
    # 4. memory after the loads
    record "$b" "$n" rss_warm_kib "$(kib "$NODE_PID" VmRSS:)"
    record "$b" "$n" hwm_kib "$(kib "$NODE_PID" VmHWM:)"
    [ "$b" = postgres ] && record "$b" "$n" pg_pss_warm_kib "$(pg_pss_kib)"
    # 5. pushes of a small image
    if timeout 900 python3 "$BENCH/scalefill.py" push --addr "$NODE" --repo "t0$((NSIZE % 10))/probe" \
        --count "$PUSHES" --seed "$n" >"$RUN/push-$b-$n.json" 2>"$RUN/logs/push-$b-$n.err"; then
      record "$b" "$n" push_p50_ms "$(jq -r .p50_ms "$RUN/push-$b-$n.json")"
      record "$b" "$n" push_p99_ms "$(jq -r .p99_ms "$RUN/push-$b-$n.json")"
    else
      fail "$b at $n: the small-image pushes failed (push-$b-$n.json, logs/push-$b-$n.err)"
    fi
    log "$b at $n: measured; RSS warm $(kib "$NODE_PID" VmRSS:) KiB"
    # 6. startup after a crash: kill -9, then start again (the fill of
    #    the next size goes on with this node)
    crash_node
    start_node "$b" "$n" _crash || return 0
    # 7. and after a crash that follows a lull: a few pushes, 2 s without
    #    writes (the embedded store saves its allocator state after
    #    200 ms of none), kill -9, start again
    if [ "$b" != reference ]; then
      timeout 300 python3 "$BENCH/scalefill.py" push --addr "$NODE" --repo "t0$((NSIZE % 10))/probe" \
        --count 3 --seed "$((n + 1))" >/dev/null 2>>"$RUN/logs/push-$b-$n.err" \
        || fail "$b at $n: the pushes before the lull failed (logs/push-$b-$n.err)"
      sleep 2
      crash_node
      start_node "$b" "$n" _crash_lull || return 0
    fi
  done
  stop_node
  if [ "$b" = postgres ]; then bash "$ROOT/scripts/postgres.sh" stop "$PGDIR" >/dev/null 2>&1 || true; fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$W/$b" "$W/reference-data"
}

for b in $BACKENDS; do bench_backend "$b" "$SIZES"; done
[ "$REFERENCE" = 1 ] && [ -n "${REF_SIZES// /}" ] && bench_backend reference "$REF_SIZES"

{
  echo "nproc=$(nproc)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wharf=$WHARF_VERSION; worktree $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- crates 2>/dev/null || echo '+dirty')"
  echo "wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "rounds=$ROUNDS wrk_secs=$WRK_SECS conns=$CONNS samples=$SAMPLES pushes=$PUSHES"
  echo "fill=$FILL_PROCS procs x $FILL_THREADS threads"
  echo "command=$CMDLINE"
} >"$RUN/machine.txt"
python3 "$BENCH/scaleplot.py" "$RUN" >"$OUT/scale-$STAMP.md"
cat "$OUT/scale-$STAMP.md"
log "written: bench-out/scale-$STAMP.md (raw data in bench-out/scale-$STAMP/)"
[ ! -s "$FAILS" ] || exit 1
