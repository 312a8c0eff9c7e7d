#!/usr/bin/env bash
# Wharf benchmark, run by hand (not in CI): Wharf, the reference registry
# (CNCF distribution 2.8, Debian `docker-registry`) and nginx serving the same
# bytes from files, measured side by side in ONE run, on loopback only.
#
#   bash scripts/bench/run.sh            # full run (~15 min on 2 cores)
#   QUICK=1 bash scripts/bench/run.sh    # smoke run (~1 min): 1 round, short loads
#
# Knobs (environment):
#   ROUNDS=5         rounds per measurement; the three servers are interleaved
#                    and their order rotates each round; medians are reported
#   WRK_SECS=10      duration of each wrk load
#   HUGE_MIB=2048    size of the single-layer image for the memory test
#   SERVERS="wharf reference nginx"   subset to run (e.g. to test without wharf)
#   WHARF_BIN=target/release/wharf    built with `cargo build --release -p wharf`
#                    if missing
#   KEEP=1           keep the temp dir (data, logs) after the run
#
# Measures: push/pull of 4 x 64 MiB layers (skopeo), 8 parallel pushes/pulls
# of small images, manifest GET/HEAD req/s and p99 at 64 connections (GET:
# wrk; HEAD: ab and wharf-load, as wrk cannot read HEAD answers),
# 64 MiB blob GET MB/s at 1 and 8 connections (wrk), resident memory (VmRSS
# sampled every 0.5 s, VmHWM) idle, under load, and during a 2 GiB layer push
# and pull. nginx only takes part in reads.
#
# Prints a Markdown table and writes bench-out/results-<date>.md plus raw data
# (results.tsv, rss.tsv, failures, logs) in bench-out/run-<date>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/scripts/bench
# The command as given (the knobs set in the environment), for the report.
CMDLINE=""
for v in QUICK ROUNDS WRK_SECS HUGE_MIB SERVERS; do
  [ -n "${!v+x}" ] && CMDLINE+="$v=${!v} "
done
CMDLINE+="bash scripts/bench/run.sh"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  ROUNDS=${ROUNDS:-1}; WRK_SECS=${WRK_SECS:-2}; HUGE_MIB=${HUGE_MIB:-256}
else
  ROUNDS=${ROUNDS:-5}; WRK_SECS=${WRK_SECS:-10}; HUGE_MIB=${HUGE_MIB:-2048}
fi
BIG_LAYERS=4
BIG_MIB=64
SMALL_IMAGES=8
SMALL_LAYERS=3
SMALL_KIB=256
SERVERS=${SERVERS:-"wharf reference nginx"}
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
LOAD_BIN=${LOAD_BIN:-$ROOT/target/release/wharf-load}
OCI_MT=application/vnd.oci.image.manifest.v1+json
# Upper bounds so nothing can run forever.
SKOPEO_TIMEOUT=900
WRK_TIMEOUT=$((WRK_SECS + 30))

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out
RUN=$OUT/run-$STAMP
mkdir -p "$RUN/logs"
RESULTS=$RUN/results.tsv        # metric server round value
FAILS=$RUN/failures.txt
: >"$RESULTS"; : >"$FAILS"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# log, now, fail, free_port, wait_http, start_reference, start_servers
source "$BENCH/lib.sh"
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
has() { case " $SERVERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# ---------------------------------------------------------------- tools
need=()
for pair in docker-registry:docker-registry nginx:nginx-light wrk:wrk skopeo:skopeo \
            jq:jq curl:curl python3:python3 ab:apache2-utils; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  [ -x /usr/sbin/$cmd ] || [ -x /usr/bin/$cmd ] || command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
  "${SUDO[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
    docker-registry nginx-light wrk skopeo jq curl python3 apache2-utils
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
REGISTRY=$(command -v docker-registry || echo /usr/bin/docker-registry)

if [ ! -x "$LOAD_BIN" ]; then
  log "building wharf-load (cargo build --release -p wharf-load)"
  cargo build --release -p wharf-load >"$RUN/logs/cargo-build-load.log" 2>&1 \
    || fail "wharf-load: release build failed (logs/cargo-build-load.log); HEAD is measured with ab only"
fi
if has wharf && [ ! -x "$WHARF_BIN" ]; then
  log "building wharf (cargo build --release -p wharf)"
  if ! cargo build --release -p wharf >"$RUN/logs/cargo-build.log" 2>&1; then
    fail "wharf: release build failed (see logs/cargo-build.log); running without wharf"
    SERVERS=${SERVERS//wharf/}
  fi
fi

# ---------------------------------------------------------------- workspace
W=$(mktemp -d /tmp/wharf-bench.XXXXXX)
chmod 755 "$W"                   # nginx workers (nobody) read files under it
PIDS=()
cleanup() {
  touch "$W/stop-sampler" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

avail_mib=$(df -Pm "$W" | awk 'NR==2 {print $4}')
need_mib=$(( HUGE_MIB * 4 + ROUNDS * BIG_LAYERS * BIG_MIB * 3 + 2048 ))
log "workdir $W, ${avail_mib} MiB free, ~${need_mib} MiB needed"
if [ "$avail_mib" -lt "$need_mib" ]; then
  fail "disk: only ${avail_mib} MiB free under $W; the ${HUGE_MIB} MiB layer test is skipped"
  HUGE_MIB=0
fi

cat >"$W/policy.json" <<'EOF'
{"default": [{"type": "insecureAcceptAnything"}]}
EOF
SKOPEO=(timeout "$SKOPEO_TIMEOUT" skopeo --policy "$W/policy.json" copy --quiet)



declare -A ADDR PID ADMIN
# ---------------------------------------------------------------- servers
start_wharf() {
  mkdir -p "$W/wharf-data"
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --addr-file "$W/wharf.addr" \
    --data-dir "$W/wharf-data" --log error >"$RUN/logs/wharf.log" 2>&1 &
  PID[wharf]=$!; PIDS+=("$!")
  local i; for i in $(seq 1 100); do [ -s "$W/wharf.addr" ] && break; sleep 0.1; done
  ADDR[wharf]=$(cat "$W/wharf.addr" 2>/dev/null || true)
}


start_nginx() {
  local port; port=$(free_port)
  mkdir -p "$W/nginx-root/v2" "$W/nginx/tmp"
  cat >"$W/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $(nproc);
pid $W/nginx/nginx.pid;
error_log $RUN/logs/nginx-error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 10000000;
  client_body_temp_path $W/nginx/tmp/body;
  proxy_temp_path $W/nginx/tmp/proxy;
  fastcgi_temp_path $W/nginx/tmp/fastcgi;
  uwsgi_temp_path $W/nginx/tmp/uwsgi;
  scgi_temp_path $W/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:$port;
    root $W/nginx-root;
    location = /v2/ {
      default_type application/json;
      add_header Docker-Distribution-API-Version registry/2.0;
      return 200 '{}';
    }
    location ~ "^/v2/.+/manifests/[^/]+\$" {
      types { }
      default_type $OCI_MT;
    }
    location ~ "^/v2/.+/blobs/sha256:[0-9a-f]{64}\$" {
      types { }
      default_type application/octet-stream;
    }
  }
}
EOF
  "$NGINX" -e "$RUN/logs/nginx-error.log" -p "$W/nginx" -c "$W/nginx/nginx.conf" \
    >"$RUN/logs/nginx.log" 2>&1 &
  PID[nginx]=$!; PIDS+=("$!")
  ADDR[nginx]=127.0.0.1:$port
}

start_servers
REGISTRIES=""; for s in $SERVERS; do [ "$s" = nginx ] || REGISTRIES+=" $s"; done

# ---------------------------------------------------------------- memory
rss_kib() { awk -v k="${2:-VmRSS:}" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || true; }
echo idle >"$W/phase"
RSS=$RUN/rss.tsv                 # time server phase rss_kib
: >"$RSS"
sampler() { # server pid: every 0.5 s, at most 8 hours, stops with the run
  local s=$1 p=$2 i=0
  while [ $i -lt 57600 ] && [ ! -e "$W/stop-sampler" ] && kill -0 "$p" 2>/dev/null; do
    printf '%s\t%s\t%s\t%s\n' "$(date +%s.%N)" "$s" "$(cat "$W/phase")" "$(rss_kib "$p")" >>"$RSS"
    sleep 0.5; i=$((i + 1))
  done
}
for s in $REGISTRIES; do sampler "$s" "${PID[$s]}" & PIDS+=("$!"); done
phase() { echo "$1" >"$W/phase"; log "== $1"; }

sleep 3                          # idle, a few samples after start
for s in $REGISTRIES; do record rss_idle_kib "$s" 1 "$(rss_kib "${PID[$s]}")"; done

# rotate: round r's server order, so no server always goes first
order() { # round list...
  local r=$1; shift; local a=("$@") n=$#; local i
  for ((i = 0; i < n; i++)); do printf '%s ' "${a[$(((i + r) % n))]}"; done
}

# ---------------------------------------------------------------- images
mk() { python3 "$BENCH/mklayout.py" make "$@"; }
publish() { python3 "$BENCH/mklayout.py" publish "$1" --root "$W/nginx-root" --repo "$2"; }

push() { # server layout repo -> seconds on stdout; nonzero on failure
  local s=$1 lay=$2 repo=$3 t0 t1
  t0=$(now)
  "${SKOPEO[@]}" --preserve-digests --dest-tls-verify=false "oci:$lay:1" "docker://${ADDR[$s]}/$repo:1" \
    >>"$RUN/logs/skopeo-$s.log" 2>&1 || return 1
  t1=$(now); calc "$t1 - $t0"
}
pull() { # server repo dest -> seconds on stdout
  local s=$1 repo=$2 dst=$3 t0 t1
  rm -rf "$dst"; t0=$(now)
  "${SKOPEO[@]}" --preserve-digests --dest-oci-accept-uncompressed-layers \
    --src-tls-verify=false "docker://${ADDR[$s]}/$repo:1" "oci:$dst:1" \
    >>"$RUN/logs/skopeo-$s.log" 2>&1 || return 1
  t1=$(now); rm -rf "$dst"; calc "$t1 - $t0"
}

# 1. big image: 4 x 64 MiB, a fresh image each round (so no blob is already
#    present or mountable), pushed to both registries, pulled from all three.
phase big-push
BIG_BYTES=0
for r in $(seq 1 "$ROUNDS"); do
  lay=$W/big-r$r
  BIG_BYTES=$(mk "$lay" --layers $BIG_LAYERS --size $((BIG_MIB << 20)) | jq .layer_bytes)
  has nginx && publish "$lay" "bench/big-r$r"
  for s in $(order "$r" $REGISTRIES); do
    sync; sleep 1
    if t=$(push "$s" "$lay" "bench/big-r$r"); then
      record big_push_s "$s" "$r" "$t"
      record big_push_MBps "$s" "$r" "$(calc "$BIG_BYTES / $t / 1000000")"
    else
      fail "$s: big push round $r failed (logs/skopeo-$s.log)"
    fi
  done
done
phase big-pull
for r in $(seq 1 "$ROUNDS"); do
  for s in $(order "$r" $SERVERS); do
    if t=$(pull "$s" "bench/big-r$r" "$W/pull-out"); then
      record big_pull_s "$s" "$r" "$t"
      record big_pull_MBps "$s" "$r" "$(calc "$BIG_BYTES / $t / 1000000")"
    else
      fail "$s: big pull round $r failed (logs/skopeo-$s.log)"
    fi
  done
done

# 2. eight small images (3 x 256 KiB) pushed at once, then pulled at once.
phase small-parallel
for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 1 $SMALL_IMAGES); do
    mk "$W/small-r$r-$i" --layers $SMALL_LAYERS --size $((SMALL_KIB << 10)) >/dev/null
    has nginx && publish "$W/small-r$r-$i" "bench/small-r$r-$i"
  done
  for s in $(order "$r" $REGISTRIES); do
    t0=$(now); jobs=()
    for i in $(seq 1 $SMALL_IMAGES); do
      push "$s" "$W/small-r$r-$i" "bench/small-r$r-$i" >/dev/null & jobs+=("$!")
    done
    ok=1; for j in "${jobs[@]}"; do wait "$j" || ok=0; done
    t1=$(now)
    if [ $ok = 1 ]; then record small_push8_s "$s" "$r" "$(calc "$t1 - $t0")"
    else fail "$s: a parallel small push in round $r failed (logs/skopeo-$s.log)"; fi
  done
  for s in $(order "$r" $SERVERS); do
    t0=$(now); jobs=()
    for i in $(seq 1 $SMALL_IMAGES); do
      pull "$s" "bench/small-r$r-$i" "$W/pull-small-$i" >/dev/null & jobs+=("$!")
    done
    ok=1; for j in "${jobs[@]}"; do wait "$j" || ok=0; done
    t1=$(now)
    if [ $ok = 1 ]; then record small_pull8_s "$s" "$r" "$(calc "$t1 - $t0")"
    else fail "$s: a parallel small pull in round $r failed (logs/skopeo-$s.log)"; fi
  done
done

# 3./4. wrk loads against the same bytes on every server.
wrk_run() { # name server round method accept url conns threads
  local name=$1 s=$2 r=$3 method=$4 accept=$5 url=$6 c=$7 t=$8 outf line
  outf=$RUN/logs/wrk-$name-$s-r$r.txt
  WRK_METHOD=$method WRK_ACCEPT=$accept timeout "$WRK_TIMEOUT" \
    wrk -t"$t" -c"$c" -d"${WRK_SECS}s" --timeout 5s --latency -s "$BENCH/wrk.lua" "$url" \
    >"$outf" 2>&1 || true
  line=$(grep '^WRKRESULT' "$outf" || true)
  if [ -z "$line" ]; then fail "$s: wrk $name round $r produced no result (logs/${outf##*/})"; return; fi
  local -A v; local kv
  for kv in ${line#WRKRESULT }; do v[${kv%%=*}]=${kv#*=}; done
  local errs=$(( v[status_errors] + v[connect_errors] + v[read_errors] + v[write_errors] + v[timeouts] ))
  if [ "${v[requests]}" = 0 ]; then fail "$s: wrk $name round $r: zero requests (logs/${outf##*/})"; return; fi
  if [ "$errs" -gt 0 ]; then
    fail "$s: wrk $name round $r: ${v[status_errors]} non-2xx/3xx, ${v[connect_errors]}/${v[read_errors]}/${v[write_errors]}/${v[timeouts]} connect/read/write/timeout errors of ${v[requests]} (logs/${outf##*/})"
    # error answers are not the measured work: such a round is not recorded
    [ "${v[status_errors]}" = 0 ] || return 0
  fi
  record "${name}_rps" "$s" "$r" "$(calc "${v[requests]} * 1000000 / ${v[duration_us]}")"
  record "${name}_p99_ms" "$s" "$r" "$(calc "${v[p99_us]} / 1000")"
  record "${name}_MBps" "$s" "$r" "$(calc "${v[bytes]} / ${v[duration_us]}")"
}

# HEAD with ab: wrk 4.1.0 cannot parse a HEAD response that carries a
# Content-Length (it waits for a body that never comes; wg/wrk#198), so HEAD is
# measured with ApacheBench, keep-alive, 64 connections. The same ab GET is
# measured too, to show what the client itself allows.
ab_run() { # name server round head(0|1) url
  local name=$1 s=$2 r=$3 head=$4 url=$5 outf csv rps done failed non2xx p99
  outf=$RUN/logs/ab-$name-$s-r$r.txt; csv=$W/ab-pct.csv
  local flags=(-q -r -k -c 64 -t "$WRK_SECS" -n 100000000 -e "$csv" -H "Accept: $OCI_MT")
  [ "$head" = 1 ] && flags+=(-i)
  rm -f "$csv"
  timeout "$WRK_TIMEOUT" ab "${flags[@]}" "$url" >"$outf" 2>&1 || true
  rps=$(awk '/^Requests per second:/ {print $4}' "$outf")
  done=$(awk '/^Complete requests:/ {print $3}' "$outf")
  failed=$(awk '/^Failed requests:/ {print $3}' "$outf")
  non2xx=$(awk '/^Non-2xx responses:/ {print $3}' "$outf")
  p99=$(awk -F, '$1 == 99 {print $2}' "$csv" 2>/dev/null)
  if [ -z "$rps" ] || [ -z "$done" ] || [ "$done" = 0 ] || [ -z "$p99" ]; then
    fail "$s: ab $name round $r produced no result (logs/${outf##*/})"; return 0
  fi
  if [ "${failed:-0}" != 0 ] || [ -n "$non2xx" ]; then
    fail "$s: ab $name round $r: ${non2xx:-0} non-2xx, ${failed:-0} failed of $done (logs/${outf##*/})"
    [ -z "$non2xx" ] || return 0
  fi
  record "${name}_rps" "$s" "$r" "$rps"
  record "${name}_p99_ms" "$s" "$r" "$p99"
}

# HEAD with wharf-load too (crates/wharf-load: tokio + hyper's client, which
# knows a HEAD response has no body): ab is one thread and, near 100k req/s,
# the limit of both servers, so a second generator shows the servers apart.
wl_run() { # name server round method url
  local name=$1 s=$2 r=$3 method=$4 url=$5 outf rps p99 bad
  [ -x "$LOAD_BIN" ] || return 0
  outf=$RUN/logs/wl-$name-$s-r$r.json
  timeout "$WRK_TIMEOUT" "$LOAD_BIN" load --url "$method $url|Accept: $OCI_MT" --clients 64 \
    --duration "$WRK_SECS" >"$outf" 2>"$RUN/logs/wl-$name-$s-r$r.txt" || true
  rps=$(jq -r '.stages[0].goodput_rps // empty' "$outf" 2>/dev/null)
  p99=$(jq -r '.stages[0].outcomes.ok_2xx.p99_ms // empty' "$outf" 2>/dev/null)
  bad=$(jq -r '[.stages[0].outcomes | to_entries[] | select(.key != "ok_2xx") | .value.count] | add // 0' "$outf" 2>/dev/null)
  if [ -z "$rps" ] || [ -z "$p99" ]; then
    fail "$s: wharf-load $name round $r produced no result (logs/${outf##*/})"; return 0
  fi
  if [ "${bad:-0}" != 0 ]; then
    fail "$s: wharf-load $name round $r: $bad answers not 2xx (logs/${outf##*/})"; return 0
  fi
  record "${name}_rps" "$s" "$r" "$rps"
  record "${name}_p99_ms" "$s" "$r" "$p99"
}

# Same small image on every server: the round-1 small image 1.
MREPO=bench/small-r1-1
BREPO=bench/big-r1
BLOB=$(jq -r '.manifests[0].digest' "$W/big-r1/index.json" | cut -d: -f2)
BLOB=$(jq -r '.layers[0].digest' "$W/big-r1/blobs/sha256/$BLOB")   # sha256:<hex>
for s in $SERVERS; do            # check status and content type once, as evidence
  {
    echo "== $s GET manifest"
    curl -s -o /dev/null -D - -H "Accept: $OCI_MT" "http://${ADDR[$s]}/v2/$MREPO/manifests/1"
    echo "== $s HEAD manifest"
    curl -s -I -H "Accept: $OCI_MT" "http://${ADDR[$s]}/v2/$MREPO/manifests/1"
    echo "== $s GET blob"
    curl -s -o /dev/null -D - "http://${ADDR[$s]}/v2/$BREPO/blobs/$BLOB"
  } >"$RUN/logs/headers-$s.txt" 2>&1 || true
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $OCI_MT" "http://${ADDR[$s]}/v2/$MREPO/manifests/1" || true)
  [ "$code" = 200 ] || fail "$s: manifest GET answered $code, not 200 (logs/headers-$s.txt)"
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://${ADDR[$s]}/v2/$BREPO/blobs/$BLOB" || true)
  [ "$code" = 200 ] || fail "$s: blob GET answered $code, not 200 (logs/headers-$s.txt)"
  got=$(curl -s "http://${ADDR[$s]}/v2/$BREPO/blobs/$BLOB" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$BLOB" ] || fail "$s: blob GET body hashes to sha256:$got, not $BLOB"
  # warm-up, not recorded
  WRK_METHOD=GET WRK_ACCEPT=$OCI_MT timeout 10 wrk -t2 -c64 -d1s -s "$BENCH/wrk.lua" \
    "http://${ADDR[$s]}/v2/$MREPO/manifests/1" >/dev/null 2>&1 || true
done

phase manifest-wrk
for r in $(seq 1 "$ROUNDS"); do
  for s in $(order "$r" $SERVERS); do
    u=http://${ADDR[$s]}/v2/$MREPO/manifests/1
    wrk_run mget "$s" "$r" GET "$OCI_MT" "$u" 64 2
    ab_run mhead "$s" "$r" 1 "$u"
    wl_run mhead_wl "$s" "$r" HEAD "$u"
    ab_run mget_ab "$s" "$r" 0 "$u"
  done
done
phase blob-wrk
for r in $(seq 1 "$ROUNDS"); do
  for s in $(order "$r" $SERVERS); do
    u=http://${ADDR[$s]}/v2/$BREPO/blobs/$BLOB
    wrk_run blob1 "$s" "$r" GET "" "$u" 1 1
    wrk_run blob8 "$s" "$r" GET "" "$u" 8 2
  done
done

# 5. one huge layer through the registries, RSS sampled throughout.
rm -rf "$W"/big-r* "$W"/small-r* "$W/nginx-root/v2/bench"
if [ "$HUGE_MIB" -gt 0 ]; then
  phase huge-generate
  HUGE_BYTES=$(mk "$W/huge" --layers 1 --size $((HUGE_MIB << 20)) | jq .layer_bytes)
  for s in $REGISTRIES; do
    sync; sleep 2
    record rss_before_huge_kib "$s" 1 "$(rss_kib "${PID[$s]}")"
    phase "huge-push-$s"
    if t=$(push "$s" "$W/huge" bench/huge); then
      record huge_push_s "$s" 1 "$t"
      record huge_push_MBps "$s" 1 "$(calc "$HUGE_BYTES / $t / 1000000")"
    else
      fail "$s: ${HUGE_MIB} MiB layer push failed (logs/skopeo-$s.log)"
    fi
    phase "huge-pull-$s"
    if t=$(pull "$s" bench/huge "$W/pull-out"); then
      record huge_pull_s "$s" 1 "$t"
      record huge_pull_MBps "$s" 1 "$(calc "$HUGE_BYTES / $t / 1000000")"
    else
      fail "$s: ${HUGE_MIB} MiB layer pull failed (logs/skopeo-$s.log)"
    fi
    phase "huge-done-$s"
    sleep 1
  done
  rm -rf "$W/huge"
fi
phase end
for s in $REGISTRIES; do
  record rss_end_kib "$s" 1 "$(rss_kib "${PID[$s]}")"
  record hwm_kib "$s" 1 "$(rss_kib "${PID[$s]}" VmHWM:)"
done
touch "$W/stop-sampler"

# ---------------------------------------------------------------- report
{
  echo "nproc=$(nproc)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "wharf=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')"
  echo "reference=$("$REGISTRY" --version 2>&1 | head -1)"
  echo "nginx=$("$NGINX" -v 2>&1 | head -1)"
  echo "wrk=$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "skopeo=$(skopeo --version)"
  echo "rounds=$ROUNDS"
  echo "wrk_secs=$WRK_SECS"
  echo "huge_mib=$HUGE_MIB"
  echo "servers=$(echo $SERVERS)"
  echo "command=$CMDLINE"
} >"$RUN/machine.txt"
python3 "$BENCH/summarize.py" "$RUN" >"$OUT/results-$STAMP.md"
cat "$OUT/results-$STAMP.md"
log "written: bench-out/results-$STAMP.md (raw data in bench-out/run-$STAMP/)"
