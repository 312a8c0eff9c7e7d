#!/usr/bin/env bash
# What the access log costs: manifest GET requests per second (and p99) at
# 64 connections against one release-built Wharf node each with the access
# log off, on in text and on in JSON (each writing its log to a file, as a
# node under systemd or in a pod does), measured interleaved in one run on
# loopback. Run by hand (not in CI); docs/benchmarks.md, "Access log".
#
#   bash scripts/bench/access-log.sh
#
# Knobs (environment):
#   ROUNDS=5        rounds; each round loads every mode once, the order
#                   rotating; medians are reported
#   WRK_SECS=10     duration of each wrk load
#   WHARF_BIN=target/release/wharf   (`cargo build --release -p wharf`)
#   BASELINE_BIN=PATH  another wharf binary (e.g. one built from an earlier
#                   commit) run in modes text-base and json-base beside the
#                   others, for a before/after in the same run
#   KEEP=1          keep the work dir (data, logs)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/scripts/bench
ROUNDS=${ROUNDS:-5}
WRK_SECS=${WRK_SECS:-10}
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
OCI_MT=application/vnd.oci.image.manifest.v1+json
MODES="off text json"
[ -n "${BASELINE_BIN:-}" ] && MODES="$MODES text-base json-base"

W=$(mktemp -d /tmp/wharf-access-bench.XXXXXX)
RUN=$W
FAILS=$W/failures.txt
: >"$FAILS"
source "$BENCH/lib.sh"
command -v wrk >/dev/null || { log "wrk is not installed"; exit 1; }
[ -x "$WHARF_BIN" ] || { log "no $WHARF_BIN: cargo build --release -p wharf"; exit 1; }

declare -A PID ADDR
cleanup() {
  local m
  for m in $MODES; do
    [ -n "${PID[$m]:-}" ] && kill "${PID[$m]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

start() { # mode
  local m=$1 args=() bin=$WHARF_BIN
  case $m in
    off) args=(--access-log off) ;;
    text) args=() ;;
    json) args=(--log-format json) ;;
    text-base) bin=$BASELINE_BIN args=() ;;
    json-base) bin=$BASELINE_BIN args=(--log-format json) ;;
  esac
  mkdir -p "$W/$m"
  "$bin" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --addr-file "$W/$m/addr" --admin-addr-file "$W/$m/admin-addr" --data-dir "$W/$m/data" --log info "${args[@]}" \
    2>"$W/$m/log" >/dev/null &
  PID[$m]=$!
  local i
  for i in $(seq 1 100); do
    [ -s "$W/$m/addr" ] && break
    sleep 0.1
  done
  ADDR[$m]=$(cat "$W/$m/addr")
  wait_http "http://${ADDR[$m]}/v2/" || { log "$m: not answering"; exit 1; }
}

push_manifest() { # addr: a config blob and a manifest naming it, tagged 1
  local a=$1 config='{"bench":"access-log"}' d m
  d=sha256:$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
  curl -sf -o /dev/null -X POST --data-binary "$config" "http://$a/v2/bench/app/blobs/uploads/?digest=$d"
  m=$(printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
    "$OCI_MT" "$d" "${#config}" "$d" "${#config}")
  curl -sf -o /dev/null -X PUT -H "Content-Type: $OCI_MT" --data-binary "$m" "http://$a/v2/bench/app/manifests/1"
}

for m in $MODES; do start "$m"; push_manifest "${ADDR[$m]}"; done
log "nodes: $(for m in $MODES; do printf '%s %s  ' "$m" "${ADDR[$m]}"; done)"

# One warm-up second each, then the rounds.
for m in $MODES; do
  WRK_METHOD=GET WRK_ACCEPT=$OCI_MT timeout 10 wrk -t2 -c64 -d1s -s "$BENCH/wrk.lua" \
    "http://${ADDR[$m]}/v2/bench/app/manifests/1" >/dev/null 2>&1 || true
done
: >"$W/results.tsv"
order=($MODES)
for r in $(seq 1 "$ROUNDS"); do
  for ((i = 0; i < ${#order[@]}; i++)); do
    m=${order[$(((i + r) % ${#order[@]}))]}
    before=$(stat -c %s "$W/$m/log")
    line=$(WRK_METHOD=GET WRK_ACCEPT=$OCI_MT timeout $((WRK_SECS + 30)) wrk -t2 -c64 -d"${WRK_SECS}s" \
      --timeout 5s --latency -s "$BENCH/wrk.lua" "http://${ADDR[$m]}/v2/bench/app/manifests/1" | grep WRKRESULT)
    after=$(stat -c %s "$W/$m/log")
    declare -A v=()
    for kv in ${line#WRKRESULT }; do v[${kv%%=*}]=${kv#*=}; done
    if [ "${v[status_errors]}" != 0 ] || [ "${v[requests]}" = 0 ]; then
      fail "$m round $r: $line"
    fi
    rps=$(awk -v n="${v[requests]}" -v us="${v[duration_us]}" 'BEGIN { printf "%.0f", n / (us / 1e6) }')
    bpr=$(awk -v b=$((after - before)) -v n="${v[requests]}" 'BEGIN { printf "%.0f", b / n }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$m" "$r" "$rps" "${v[p99_us]}" "$bpr" >>"$W/results.tsv"
    log "$m round $r: $rps req/s, p99 ${v[p99_us]} us, $bpr log bytes/request"
  done
done

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
off=$(awk -F'\t' '$1 == "off" { print $3 }' "$W/results.tsv" | median)
echo
echo "| access log | manifest GET req/s (median of $ROUNDS) | vs off | p99 (ms) | log bytes per request |"
echo "|---|---|---|---|---|"
for m in $MODES; do
  rps=$(awk -F'\t' -v m="$m" '$1 == m { print $3 }' "$W/results.tsv" | median)
  p99=$(awk -F'\t' -v m="$m" '$1 == m { print $4 }' "$W/results.tsv" | median)
  bpr=$(awk -F'\t' -v m="$m" '$1 == m { print $5 }' "$W/results.tsv" | median)
  rel=$(awk -v a="$rps" -v b="$off" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }')
  p99ms=$(awk -v u="$p99" 'BEGIN { printf "%.2f", u / 1000 }')
  echo "| $m | $rps | $rel | $p99ms | $bpr |"
done
echo
for m in $MODES; do
  dropped=$(curl -sf "http://$(cat "$W/$m/admin-addr")/metrics" | awk '$1 == "wharf_log_lines_dropped_total" { print $2 }')
  echo "$m: access-log lines dropped (wharf_log_lines_dropped_total): ${dropped:--}"
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at the end; $(nproc) cores; wrk -t2 -c64 -d${WRK_SECS}s"
[ -s "$FAILS" ] && { log "failures: $(cat "$FAILS")"; exit 1; }
exit 0
