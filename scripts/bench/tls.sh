#!/usr/bin/env bash
# TLS benchmark, run by hand (not in CI): Wharf serving TLS itself beside
# nginx serving the same bytes over TLS with the same certificate, in ONE
# run, on loopback only, rounds interleaved.
#
#   bash scripts/bench/tls.sh            # full run (~6 min on 2 cores)
#   QUICK=1 bash scripts/bench/tls.sh    # smoke run (~1 min)
#
# Knobs: ROUNDS=5, SECS=10 (each load), WHARF_BIN=target/release/wharf,
# ACCESS_LOG=on (each server writes its access log to a file, as both do by
# default: nginx's `combined` format unbuffered, Wharf's own) or off (both
# off), MANIFESTS_ONLY=1 (skip the blob loads).
#
# Measures, for each server, HTTP/1.1 (wrk) and HTTP/2 (h2load):
#   - manifest GET requests/s and p99 at 64 connections (HTTP/2: 16
#     connections x 4 streams);
#   - 64 MiB blob GET throughput (MB/s) at 1 and 8 connections.
# Both servers use an ECDSA P-256 certificate made here with openssl, TLS 1.3.
# Prints a Markdown table of medians and Wharf/nginx ratios, and writes it to
# bench-out/tls-<date>.md with raw data in bench-out/tls-<date>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/scripts/bench
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then ROUNDS=${ROUNDS:-1}; SECS=${SECS:-2}; else ROUNDS=${ROUNDS:-5}; SECS=${SECS:-10}; fi
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
ACCESS_LOG=${ACCESS_LOG:-on}
MANIFESTS_ONLY=${MANIFESTS_ONLY:-0}
case $ACCESS_LOG in on | off) ;; *) echo "ACCESS_LOG is on or off" >&2; exit 2 ;; esac
OCI_MT=application/vnd.oci.image.manifest.v1+json
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out
RUN=$OUT/tls-$STAMP
mkdir -p "$RUN/logs"
RESULTS=$RUN/results.tsv
FAILS=$RUN/failures.txt
: >"$RESULTS"; : >"$FAILS"
source "$BENCH/lib.sh" # log, now, fail, free_port
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

need=()
for pair in nginx:nginx-light wrk:wrk h2load:nghttp2-client skopeo:skopeo openssl:openssl jq:jq; do
  cmd=${pair%%:*}
  [ -x /usr/sbin/$cmd ] || command -v "$cmd" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
  "${SUDO[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$WHARF_BIN" ] || cargo build --release -p wharf

W=$(mktemp -d /tmp/wharf-tls-bench.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # The logs' last lines (with the access logs on they run to gigabytes).
  tail -n 200 "$W/wharf.log" >"$RUN/logs/wharf.log" 2>/dev/null || true
  tail -n 200 "$W/nginx/access.log" >"$RUN/logs/nginx-access.log" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# The pair both servers serve.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$W/tls.key" -out "$W/tls.crt" 2>/dev/null
chmod 644 "$W/tls.key"
mkdir -p "$W/certs" && cp "$W/tls.crt" "$W/certs/ca.crt"

declare -A ADDR
WPORT=$(free_port)
"$WHARF_BIN" serve --listen "127.0.0.1:$WPORT" --admin-listen 127.0.0.1:0 --data-dir "$W/wharf-data" \
  --tls-cert "$W/tls.crt" --tls-key "$W/tls.key" --access-log "$ACCESS_LOG" \
  --log "$([ "$ACCESS_LOG" = on ] && echo error,wharf::access=info || echo error)" \
  >"$W/wharf.log" 2>&1 &
PIDS+=("$!")
WHARF_PID=$!
ADDR[wharf]=127.0.0.1:$WPORT
NPORT=$(free_port)
mkdir -p "$W/nginx-root/v2" "$W/nginx/tmp"
cat >"$W/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $(nproc);
pid $W/nginx/nginx.pid;
error_log $RUN/logs/nginx-error.log error;
events { worker_connections 4096; }
http {
  access_log $([ "$ACCESS_LOG" = on ] && echo "$W/nginx/access.log combined" || echo off);
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
    listen 127.0.0.1:$NPORT ssl http2;
    ssl_certificate $W/tls.crt;
    ssl_certificate_key $W/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    http2_max_concurrent_streams 128;
    root $W/nginx-root;
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
"$NGINX" -e "$RUN/logs/nginx-error.log" -p "$W/nginx" -c "$W/nginx/nginx.conf" >"$RUN/logs/nginx.log" 2>&1 &
PIDS+=("$!")
NGINX_PID=$!
ADDR[nginx]=127.0.0.1:$NPORT
for i in $(seq 1 100); do
  curl -sf --cacert "$W/tls.crt" -o /dev/null "https://${ADDR[wharf]}/v2/" && break
  sleep 0.1
done

# One image with a 64 MiB layer, pushed to Wharf over TLS and laid out as
# files for nginx.
python3 "$BENCH/mklayout.py" make "$W/img" --tag 1 --layers 1 --size $((64 << 20)) >"$W/img.json"
timeout 300 skopeo --insecure-policy copy --dest-cert-dir "$W/certs" "oci:$W/img:1" \
  "docker://${ADDR[wharf]}/bench/tls:1" >"$RUN/logs/push.log" 2>&1 || { log "push to wharf failed"; exit 1; }
# nginx gets the bytes Wharf holds (skopeo may recompress a layer on push):
# the image pulled back from Wharf, laid out as files.
timeout 300 skopeo --insecure-policy copy --src-cert-dir "$W/certs" "docker://${ADDR[wharf]}/bench/tls:1" \
  "oci:$W/pulled:1" >>"$RUN/logs/push.log" 2>&1 || { log "pull back from wharf failed"; exit 1; }
python3 "$BENCH/mklayout.py" publish "$W/pulled" --tag 1 --root "$W/nginx-root" --repo bench/tls >/dev/null
# The layer as the registry holds it (its digest, from the manifest).
MANIFEST=$(curl -sf --cacert "$W/tls.crt" -H "Accept: $OCI_MT" "https://${ADDR[wharf]}/v2/bench/tls/manifests/1")
BLOB=$(jq -r '.layers[0].digest' <<<"$MANIFEST")
BLOB_SIZE=$(jq -r '.layers[0].size' <<<"$MANIFEST")
for s in wharf nginx; do
  got=$(curl -sf --cacert "$W/tls.crt" -H "Accept: $OCI_MT" "https://${ADDR[$s]}/v2/bench/tls/manifests/1" | sha256sum | cut -c1-16)
  log "$s manifest sha256 prefix $got"
  size=$(curl -sf --cacert "$W/tls.crt" -o /dev/null -w '%{size_download}' "https://${ADDR[$s]}/v2/bench/tls/blobs/$BLOB")
  [ "$size" = "$BLOB_SIZE" ] || { log "$s serves the blob with $size bytes, not $BLOB_SIZE"; exit 1; }
done

wrk_run() { # metric server round url conns
  local m=$1 s=$2 r=$3 url=$4 c=$5 f line
  f=$RUN/logs/wrk-$m-$s-r$r.txt
  WRK_METHOD=GET WRK_ACCEPT=$OCI_MT timeout $((SECS + 30)) wrk -t"$((c < 2 ? c : 2))" -c"$c" -d"${SECS}s" --timeout 5s \
    --latency -s "$BENCH/wrk.lua" "$url" >"$f" 2>&1 || true
  line=$(grep '^WRKRESULT' "$f" || true)
  [ -n "$line" ] || { fail "$s: wrk $m round $r: no result"; return; }
  local -A v; local kv
  for kv in ${line#WRKRESULT }; do v[${kv%%=*}]=${kv#*=}; done
  local errs=$(( v[status_errors] + v[connect_errors] + v[read_errors] + v[write_errors] + v[timeouts] ))
  [ "$errs" = 0 ] || fail "$s: wrk $m round $r: $errs errors of ${v[requests]}"
  record "${m}_rps" "$s" "$r" "$(calc "${v[requests]} * 1000000 / ${v[duration_us]}")"
  record "${m}_p99_ms" "$s" "$r" "$(calc "${v[p99_us]} / 1000")"
  record "${m}_MBps" "$s" "$r" "$(calc "${v[bytes]} / ${v[duration_us]}")"
}

h2_run() { # metric server round url conns streams bytes-per-response
  local m=$1 s=$2 r=$3 url=$4 c=$5 streams=$6 bytes=$7 f rps mbps fails
  f=$RUN/logs/h2load-$m-$s-r$r.txt
  timeout $((SECS + 30)) h2load -c"$c" -m"$streams" -t"$((c < 2 ? c : 2))" -D"$SECS" --warm-up-time=1 \
    -H "Accept: $OCI_MT" "$url" >"$f" 2>&1 || true
  rps=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i+1) == "req/s,") print $i }' "$f")
  # Throughput from the rate and the size of what each request got.
  mbps=$(awk -v r="$rps" -v b="$bytes" 'BEGIN { printf "%.3f", r * b / 1000000 }')
  fails=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed,/) print $i }' "$f")
  [ -n "$rps" ] || { fail "$s: h2load $m round $r: no result"; return; }
  [ "${fails:-0}" = 0 ] || fail "$s: h2load $m round $r: $fails failed"
  grep -q 'Application protocol: h2' "$f" || fail "$s: h2load $m round $r did not negotiate h2"
  record "${m}_rps" "$s" "$r" "$rps"
  record "${m}_MBps" "$s" "$r" "$mbps"
}

for r in $(seq 1 "$ROUNDS"); do
  order="wharf nginx"; [ $((r % 2)) = 0 ] && order="nginx wharf"
  for s in $order; do
    man="https://${ADDR[$s]}/v2/bench/tls/manifests/1"
    blob="https://${ADDR[$s]}/v2/bench/tls/blobs/$BLOB"
    log "round $r: $s"
    wrk_run h1_manifest "$s" "$r" "$man" 64
    h2_run h2_manifest "$s" "$r" "$man" 16 4 "$(printf %s "$MANIFEST" | wc -c)"
    [ "$MANIFESTS_ONLY" = 1 ] && continue
    wrk_run h1_blob_c1 "$s" "$r" "$blob" 1
    wrk_run h1_blob_c8 "$s" "$r" "$blob" 8
    h2_run h2_blob_c1 "$s" "$r" "$blob" 1 1 "$BLOB_SIZE"
    h2_run h2_blob_c8 "$s" "$r" "$blob" 8 1 "$BLOB_SIZE"
  done
done

# Resident memory after the loads: Wharf's process, nginx's master and
# workers together (MiB).
rss_mib() { awk '/^VmRSS:/ { s += $2 } END { printf "%.0f", s / 1024 }' "$@" 2>/dev/null; }
RSS_WHARF=$(rss_mib /proc/"$WHARF_PID"/status)
RSS_NGINX=$(rss_mib /proc/"$NGINX_PID"/status $(pgrep -P "$NGINX_PID" | sed 's|.*|/proc/&/status|'))
REPORT=$OUT/tls-$STAMP.md
{
  echo "## TLS: Wharf beside nginx ($(date -u +%F), \`$([ "$QUICK" = 1 ] && echo "QUICK=1 ")bash scripts/bench/tls.sh\`)"
  echo
  echo "Load average at start: $LOAD_START; rounds: $ROUNDS x ${SECS}s; access logs $ACCESS_LOG; medians."
  echo
  echo "| measure | wharf | nginx | wharf/nginx |"
  echo "|---|---:|---:|---:|"
  python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m, s, r, x = line.split("\t")
    v[(m, s)].append(float(x))
rows = [
    ("manifest GET, HTTP/1.1, 64 conns, req/s", "h1_manifest_rps"),
    ("manifest GET, HTTP/1.1, p99 ms", "h1_manifest_p99_ms"),
    ("manifest GET, HTTP/2, 16x4 streams, req/s", "h2_manifest_rps"),
    ("64 MiB blob GET, HTTP/1.1, 1 conn, MB/s", "h1_blob_c1_MBps"),
    ("64 MiB blob GET, HTTP/1.1, 8 conns, MB/s", "h1_blob_c8_MBps"),
    ("64 MiB blob GET, HTTP/2, 1 conn, MB/s", "h2_blob_c1_MBps"),
    ("64 MiB blob GET, HTTP/2, 8 conns, MB/s", "h2_blob_c8_MBps"),
]
for label, m in rows:
    w, n = v.get((m, "wharf")), v.get((m, "nginx"))
    if not w or not n:
        print(f"| {label} | {'-' if not w else round(statistics.median(w), 1)} | {'-' if not n else round(statistics.median(n), 1)} | - |")
        continue
    mw, mn = statistics.median(w), statistics.median(n)
    print(f"| {label} | {mw:.1f} | {mn:.1f} | {mw / mn:.2f} |")
PY
  echo
  echo "Resident memory after the loads: wharf ${RSS_WHARF} MiB, nginx ${RSS_NGINX} MiB (master and workers)."
  echo
  if [ -s "$FAILS" ]; then echo "Failures:"; sed 's/^/- /' "$FAILS"; else echo "No failures."; fi
} | tee "$REPORT"
log "report: $REPORT; raw: $RUN"
