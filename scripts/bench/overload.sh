#!/usr/bin/env bash
# Overload benchmark, run by hand (never in CI): Wharf with its limits set to
# a KNOWN capacity beside the reference registry (CNCF distribution 2.8,
# Debian `docker-registry`), measured in ONE run, on loopback only, with the
# loopback-only load generator `wharf-load` (crates/wharf-load).
#
#   bash scripts/bench/overload.sh            # full run (~5 min on 2 cores)
#   QUICK=1 bash scripts/bench/overload.sh    # smoke run (~3 min): short, fewer clients
#
# Phase by phase, the servers taking turns (each phase waits for the server to
# be idle again):
#   a. capacity: C = PULL_LIMIT closed-loop clients for CAP_SECS pull a mix of
#      manifests (with an OCI Accept header) and a small blob, spread over
#      TENANTS namespaces: goodput and latency at exactly capacity.
#   b. surge: C clients for PRE_SECS, SURGE_CLIENTS for SURGE_SECS, C again
#      for POST_SECS (one wharf-load run with three stages). Every request
#      must be answered (2xx/429/503) within DEADLINE_MS: no hang, no reset
#      without a response. Goodput in the surge ÷ goodput at capacity, and
#      the 2xx p99 of every second after the surge. Refused clients retry at
#      once (the harshest load); b' repeats it with clients that wait what
#      Retry-After asks, as well-behaved clients do.
#   c. slowloris: SLOW_CONNS connections trickling a request head a byte
#      every 2 s (reconnecting when closed) while C clients run, twice:
#      "held" (the clients were connected before the attack started) and
#      "new" (the clients connect while the attack is on). Goodput ÷ a.
#   d. during b, a push of PUSH_LAYERS x PUSH_MIB MiB (skopeo) starts 2 s into
#      the surge; afterwards it is pulled back and compared byte for byte.
#
# Knobs (environment): QUICK, SERVERS ("wharf reference"), CAP_SECS,
# PRE_SECS, SURGE_SECS, POST_SECS, SURGE_CLIENTS, SLOW_CONNS, SLOW_SECS,
# PULL_LIMIT (64), PUSH_LIMIT (16), ADMIN_LIMIT (16), MAX_CONNS (128: the
# connections served, twice the pull limit), MAX_WAITING (4096: the waiting
# room, above the surge's client count),
# MAX_WAIT_MS (50), WHARF_EXTRA_FLAGS (more `wharf serve` flags, e.g.
# "--header-timeout-secs 5"), TENANTS (8), BLOB_KIB (32), PUSH_LAYERS (3),
# PUSH_MIB (4), DEADLINE_MS (2000), REFUSAL_PAUSE_MS (0: refused clients
# retry at once), WHARF_BIN, LOAD_BIN, KEEP=1 (keep the temp dir).
# Wharf limit flags that `wharf serve --help` does not list are dropped and
# the report says so.
#
# Writes bench-out/overload-<date>.md and the raw data (every wharf-load JSON
# document, /metrics snapshots, logs) in bench-out/overload-<date>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/scripts/bench
CMDLINE=""
for v in QUICK SERVERS CAP_SECS PRE_SECS SURGE_SECS POST_SECS SURGE_CLIENTS SLOW_CONNS \
         SLOW_SECS PULL_LIMIT PUSH_LIMIT ADMIN_LIMIT MAX_CONNS MAX_WAITING MAX_WAIT_MS WHARF_EXTRA_FLAGS \
         TENANTS BLOB_KIB PUSH_LAYERS PUSH_MIB DEADLINE_MS REFUSAL_PAUSE_MS; do
  [ -n "${!v+x}" ] && CMDLINE+="$v=${!v@Q} "
done
CMDLINE+="bash scripts/bench/overload.sh"

# Thousands of sockets on each side of loopback: raise the open-file limit
# for this shell and everything it starts (servers and generator).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  CAP_SECS=${CAP_SECS:-3}; PRE_SECS=${PRE_SECS:-2}; SURGE_SECS=${SURGE_SECS:-8}
  POST_SECS=${POST_SECS:-4}; SURGE_CLIENTS=${SURGE_CLIENTS:-500}
  SLOW_CONNS=${SLOW_CONNS:-500}; SLOW_SECS=${SLOW_SECS:-6}
else
  CAP_SECS=${CAP_SECS:-10}; PRE_SECS=${PRE_SECS:-5}; SURGE_SECS=${SURGE_SECS:-30}
  POST_SECS=${POST_SECS:-10}; SURGE_CLIENTS=${SURGE_CLIENTS:-2000}
  SLOW_CONNS=${SLOW_CONNS:-2000}; SLOW_SECS=${SLOW_SECS:-15}
fi
SERVERS=${SERVERS:-"wharf reference"}
PULL_LIMIT=${PULL_LIMIT:-64}
PUSH_LIMIT=${PUSH_LIMIT:-16}
ADMIN_LIMIT=${ADMIN_LIMIT:-16}
MAX_CONNS=${MAX_CONNS:-128}
MAX_WAITING=${MAX_WAITING:-4096}
MAX_WAIT_MS=${MAX_WAIT_MS:-50}
WHARF_EXTRA_FLAGS=${WHARF_EXTRA_FLAGS:-}
TENANTS=${TENANTS:-8}
BLOB_KIB=${BLOB_KIB:-32}
PUSH_LAYERS=${PUSH_LAYERS:-3}
PUSH_MIB=${PUSH_MIB:-4}
DEADLINE_MS=${DEADLINE_MS:-2000}
REFUSAL_PAUSE_MS=${REFUSAL_PAUSE_MS:-0}
C=$PULL_LIMIT                      # clients at exactly capacity
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
LOAD_BIN=${LOAD_BIN:-$ROOT/target/release/wharf-load}
OCI_MT=application/vnd.oci.image.manifest.v1+json
SKOPEO_TIMEOUT=300
# A request budget per load run, far above what 2 cores can do (~70k req/s),
# so it bounds memory (16 bytes a sample) without cutting a run short.
RATE_BOUND=200000

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out
RUN=$OUT/overload-$STAMP
REPORT=$OUT/overload-$STAMP.md
mkdir -p "$RUN/logs"
FAILS=$RUN/failures.txt
: >"$FAILS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# log, now, fail, free_port, wait_http, start_reference, start_servers
source "$BENCH/lib.sh"

# ---------------------------------------------------------------- tools
need=()
for pair in docker-registry:docker-registry skopeo:skopeo jq:jq curl:curl python3:python3; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  [ -x /usr/sbin/$cmd ] || [ -x /usr/bin/$cmd ] || command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
  "${SUDO[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"
fi
REGISTRY=$(command -v docker-registry || echo /usr/bin/docker-registry)
if [ ! -x "$WHARF_BIN" ] || [ ! -x "$LOAD_BIN" ]; then
  log "building (cargo build --release -p wharf -p wharf-load)"
  cargo build --release -p wharf -p wharf-load >"$RUN/logs/cargo-build.log" 2>&1 \
    || { log "build failed: $RUN/logs/cargo-build.log"; exit 1; }
fi

# ---------------------------------------------------------------- workspace
W=$(mktemp -d /tmp/wharf-overload.XXXXXX)
PIDS=()
cleanup() {
  local p
  # Only what this script started: each recorded pid and its children (a
  # background subshell's `timeout`, which passes the signal on).
  for p in "${PIDS[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do pkill -KILL -P "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$W/policy.json" <<'EOF'
{"default": [{"type": "insecureAcceptAnything"}]}
EOF
SKOPEO=(timeout "$SKOPEO_TIMEOUT" skopeo --policy "$W/policy.json" copy --quiet)

declare -A ADDR PID ADMIN
# Wharf's limits: flag/value pairs, kept only if this build lists the flag.
WHARF_WANT=(--max-connections "$MAX_CONNS" --max-waiting-connections "$MAX_WAITING"
  --pull-limit "$PULL_LIMIT" --push-limit "$PUSH_LIMIT"
  --admin-limit "$ADMIN_LIMIT" --max-wait-ms "$MAX_WAIT_MS"
  --admin-listen 127.0.0.1:0 --admin-addr-file "$W/wharf-admin.addr")
read -r -a extra <<<"$WHARF_EXTRA_FLAGS"
WHARF_WANT+=("${extra[@]}")
WHARF_FLAGS=(); DROPPED=()
help=$("$WHARF_BIN" serve --help 2>&1 || true)
for ((i = 0; i < ${#WHARF_WANT[@]}; i += 2)); do
  f=${WHARF_WANT[$i]}; v=${WHARF_WANT[$((i + 1))]:-}
  if grep -q -- "$f " <<<"$help" || grep -q -- "$f=" <<<"$help" || grep -q -- "$f <" <<<"$help"; then
    WHARF_FLAGS+=("$f" "$v")
  else
    DROPPED+=("$f")
  fi
done
if [ ${#DROPPED[@]} -gt 0 ]; then
  fail "wharf: this build does not list ${DROPPED[*]} in \`wharf serve --help\`: run without them (defaults)"
fi

start_wharf() {
  mkdir -p "$W/wharf-data"
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --addr-file "$W/wharf.addr" \
    --data-dir "$W/wharf-data" --log error "${WHARF_FLAGS[@]}" >"$RUN/logs/wharf.log" 2>&1 &
  PID[wharf]=$!; PIDS+=("$!")
  local i; for i in $(seq 1 100); do [ -s "$W/wharf.addr" ] && break; sleep 0.1; done
  ADDR[wharf]=$(cat "$W/wharf.addr" 2>/dev/null || true)
  for i in $(seq 1 20); do [ -s "$W/wharf-admin.addr" ] && break; sleep 0.1; done
  ADMIN[wharf]=$(cat "$W/wharf-admin.addr" 2>/dev/null || true)
  echo "wharf serve --listen 127.0.0.1:0 --addr-file F --data-dir D --log error ${WHARF_FLAGS[*]}" \
    | sed "s|$W|<tmp>|g" >"$RUN/wharf-command.txt"
}

start_servers

# ---------------------------------------------------------------- images
mk() { python3 "$BENCH/mklayout.py" make "$@"; }
push() { # server layout repo: skopeo push, preserving digests
  "${SKOPEO[@]}" --preserve-digests --dest-tls-verify=false "oci:$2:1" "docker://${ADDR[$1]}/$3:1" \
    >>"$RUN/logs/skopeo-$1.log" 2>&1
}
pull() { # server repo dest
  rm -rf "$3"
  "${SKOPEO[@]}" --preserve-digests --dest-oci-accept-uncompressed-layers \
    --src-tls-verify=false "docker://${ADDR[$1]}/$2:1" "oci:$3:1" >>"$RUN/logs/skopeo-$1.log" 2>&1
}

# The pulled image: one small layer, in TENANTS namespaces (admission counts
# shares per namespace, and a registry serves many tenants at once).
SMALL=$(mk "$W/small" --layers 1 --size $((BLOB_KIB << 10)))
SMALL_MANIFEST=$(jq -r .manifest <<<"$SMALL")
SMALL_BLOB=$(jq -r '.layers[0]' <<<"$SMALL")
for s in $SERVERS; do
  for t in $(seq 1 "$TENANTS"); do
    push "$s" "$W/small" "t$t/app" || fail "$s: push of the small image to t$t/app failed (logs/skopeo-$s.log)"
  done
done

urls() { # server -> --url arguments: the manifest and the blob in every namespace
  local s=$1 t
  for t in $(seq 1 "$TENANTS"); do
    printf -- '--url\nhttp://%s/v2/t%s/app/manifests/1|Accept: %s\n' "${ADDR[$s]}" "$t" "$OCI_MT"
    printf -- '--url\nhttp://%s/v2/t%s/app/blobs/%s\n' "${ADDR[$s]}" "$t" "$SMALL_BLOB"
  done
}

for s in $SERVERS; do            # evidence: the two requests answer 200 with the right bytes
  {
    echo "== $s GET manifest"
    curl -s -o /dev/null -D - -H "Accept: $OCI_MT" "http://${ADDR[$s]}/v2/t1/app/manifests/1"
    echo "== $s GET blob"
    curl -s -o /dev/null -D - "http://${ADDR[$s]}/v2/t1/app/blobs/$SMALL_BLOB"
  } >"$RUN/logs/headers-$s.txt" 2>&1 || true
  got=$(curl -s -H "Accept: $OCI_MT" "http://${ADDR[$s]}/v2/t1/app/manifests/1" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$SMALL_MANIFEST" ] || fail "$s: manifest body hashes to sha256:$got, not $SMALL_MANIFEST"
  got=$(curl -s "http://${ADDR[$s]}/v2/t1/app/blobs/$SMALL_BLOB" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$SMALL_BLOB" ] || fail "$s: blob body hashes to sha256:$got, not $SMALL_BLOB"
done

# ---------------------------------------------------------------- loads
load_start() { # server name secs wharf-load-args... : one bounded load run in the
  # background -> $RUN/<name>-<server>.json; sets LOAD_PID (a `timeout` we started)
  local s=$1 name=$2 secs=$3; shift 3
  local u=(); mapfile -t u < <(urls "$s")
  local budget; budget=$(awk "BEGIN { printf \"%d\", ($secs + 5) * $RATE_BOUND }")
  timeout $((secs + 30)) "$LOAD_BIN" load "${u[@]}" --label "$name-$s" \
    --deadline-ms "$DEADLINE_MS" --refusal-pause-ms "$REFUSAL_PAUSE_MS" --max-requests "$budget" "$@" \
    >"$RUN/$name-$s.json" 2>"$RUN/logs/$name-$s.txt" &
  LOAD_PID=$!; PIDS+=("$LOAD_PID")
}
load_wait() { # server name
  local rc=0
  wait "$LOAD_PID" || rc=$?
  [ "$rc" = 0 ] || fail "$1: wharf-load $2 exited $rc (logs/$2-$1.txt)"
  sed 's/^/    /' "$RUN/logs/$2-$1.txt" >&2 || true
}
load() { load_start "$@"; load_wait "$1" "$2"; }
slowloris() { # server name secs : in the background; sets SLOW_PID
  local s=$1 name=$2 secs=$3
  timeout $((secs + 30)) "$LOAD_BIN" slowloris --addr "${ADDR[$s]}" --path "/v2/t1/app/manifests/1" \
    --connections "$SLOW_CONNS" --duration "$secs" --interval-ms 2000 --reconnect \
    --reconnect-pause-ms 200 --label "$name-$s" \
    >"$RUN/$name-$s.json" 2>"$RUN/logs/$name-$s.txt" &
  SLOW_PID=$!; PIDS+=("$SLOW_PID")
}
metrics() { # server tag: /metrics snapshot (Wharf's admin port), if there is one
  [ -n "${ADMIN[$1]:-}" ] || return 0
  curl -s -m 2 "http://${ADMIN[$1]}/metrics" >"$RUN/metrics-$1-$2.txt" 2>&1 || true
}
probe() { # server tag: the admin port's /readyz and /healthz status and time
  [ -n "${ADMIN[$1]:-}" ] || return 0
  local p
  for p in readyz healthz; do
    curl -s -m 2 -o /dev/null -w "$2 /$p %{http_code} %{time_total}s\n" "http://${ADMIN[$1]}/$p" \
      >>"$RUN/probes-$1.txt" 2>&1 || echo "$2 /$p no answer within 2 s" >>"$RUN/probes-$1.txt"
  done
}
rss_hwm() { awk '$1 == "VmHWM:" {print $2}' "/proc/$1/status" 2>/dev/null || true; }

cpu_s() { # pid -> CPU seconds (user + system) so far
  awk -v t="$TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}
TCK=$(getconf CLK_TCK)
snap() { # pid -> "server-cpu-s machine-busy-ticks machine-steal-ticks", for phase_cpu
  printf '%s %s\n' "$(cpu_s "$1")" \
    "$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat)"
}
phase_cpu() { # server phase snap-before snap-after secs -> cpu-<server>.tsv:
  # phase, server CPU s, secs, machine busy CPU s (all processes), steal CPU s
  local a b; read -r -a a <<<"$3"; read -r -a b <<<"$4"
  printf '%s\t%s\t%s\t%s\t%s\n' "$2" "$(awk "BEGIN { printf \"%.2f\", ${b[0]} - ${a[0]} }")" "$5" \
    "$(awk "BEGIN { printf \"%.2f\", (${b[1]} - ${a[1]}) / $TCK }")" \
    "$(awk "BEGIN { printf \"%.2f\", (${b[2]} - ${a[2]}) / $TCK }")" >>"$RUN/cpu-$1.tsv"
}

surge() { # server name extra-load-args... : b. the surge, with d. a push 2 s into it
  local s=$1 name=$2; shift 2
  local secs=$((PRE_SECS + SURGE_SECS + POST_SECS)) c0 pusher lay=$W/push-$s-$name back=$W/back-$s-$name
  log "$s: b. $name: $C clients $PRE_SECS s, $SURGE_CLIENTS clients $SURGE_SECS s, $C clients $POST_SECS s; d. a push 2 s into the surge"
  mk "$lay" --layers "$PUSH_LAYERS" --size $((PUSH_MIB << 20)) >"$RUN/push-image-$name-$s.json"
  (
    sleep $((PRE_SECS + 2))
    t0=$(now)
    if push "$s" "$lay" "$name/push"; then rc=0; else rc=$?; fi
    t1=$(now)
    echo "rc=$rc start_offset_s=$((PRE_SECS + 2)) wall_s=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")" >"$RUN/push-$name-$s.txt"
  ) &
  pusher=$!; PIDS+=("$pusher")
  ( sleep $((PRE_SECS + SURGE_SECS / 2)); probe "$s" "mid-$name" ) & PIDS+=("$!")
  c0=$(snap "${PID[$s]}")
  load "$s" "$name" "$secs" --stage "$C:$PRE_SECS" --stage "$SURGE_CLIENTS:$SURGE_SECS" --stage "$C:$POST_SECS" "$@"
  phase_cpu "$s" "$name" "$c0" "$(snap "${PID[$s]}")" "$secs"
  wait "$pusher" || true
  metrics "$s" "$name"
  # d. pull the pushed image back and compare every byte
  local ok=no
  if grep -q '^rc=0 ' "$RUN/push-$name-$s.txt" 2>/dev/null; then
    if pull "$s" "$name/push" "$back"; then
      if diff -r "$lay/blobs" "$back/blobs" >"$RUN/logs/push-diff-$name-$s.txt" 2>&1 \
         && [ "$(jq -r '.manifests[0].digest' "$lay/index.json")" = "$(jq -r '.manifests[0].digest' "$back/index.json")" ]; then
        ok=yes
      else
        fail "$s: the image pushed during the $name came back different (logs/push-diff-$name-$s.txt)"
      fi
    else
      fail "$s: pull-back of the image pushed during the $name failed (logs/skopeo-$s.log)"
    fi
  else
    fail "$s: push during the $name failed: $(cat "$RUN/push-$name-$s.txt" 2>/dev/null): $(grep -h 'level=fatal' "$RUN/logs/skopeo-$s.log" | tail -1 | sed 's/.*msg=//')"
  fi
  echo "identical=$ok" >>"$RUN/push-$name-$s.txt"
  rm -rf "$lay" "$back"
}

settle() { # server phase: wait (at most 30 s) until the server is idle (< 0.05 cores
  # over a second), so work it still does for an earlier load does not land
  # on the next one; records how long that took.
  local s=$1 phase=$2 i a b
  for i in $(seq 0 30); do
    a=$(cpu_s "${PID[$s]}"); sleep 1; b=$(cpu_s "${PID[$s]}")
    awk "BEGIN { exit !($b - $a < 0.05) }" && break
  done
  printf '%s\t%s\n' "$phase" "$i" >>"$RUN/settle-$s.tsv"
  [ "$i" -lt 30 ] || fail "$s: still busy 30 s after the $phase phase"
}

phase_capacity() {
  log "$1: a. $C clients for $CAP_SECS s (capacity)"
  local c0; c0=$(snap "${PID[$1]}")
  load "$1" capacity "$CAP_SECS" --clients "$C" --duration "$CAP_SECS"
  phase_cpu "$1" capacity "$c0" "$(snap "${PID[$1]}")" "$CAP_SECS"
  metrics "$1" 1-capacity
}
# b. + d. refused clients retry at once (the harshest surge) ...
phase_surge() { surge "$1" surge; }
# ... and refused clients wait what Retry-After asks (well-behaved clients)
phase_surge_polite() { surge "$1" surge-polite --honor-retry-after-max-ms 5000; }
phase_slow_held() { # c. slowloris, clients connected before the attack
  local s=$1 c0
  log "$s: c. $SLOW_CONNS slow-header connections for $SLOW_SECS s, $C clients already connected"
  c0=$(snap "${PID[$s]}")
  load_start "$s" slow-held $((4 + SLOW_SECS + 4)) --stage "$C:4" --stage "$C:$SLOW_SECS" --stage "$C:4"
  sleep 4
  slowloris "$s" slowloris-held "$SLOW_SECS"
  wait "$SLOW_PID" || true
  load_wait "$s" slow-held
  phase_cpu "$s" slow-held "$c0" "$(snap "${PID[$s]}")" $((4 + SLOW_SECS + 4))
  sed 's/^/    /' "$RUN/logs/slowloris-held-$s.txt" >&2 || true
  metrics "$s" slow-held
}
phase_slow_new() { # c. slowloris, clients connecting during the attack
  local s=$1 c0 sp
  log "$s: c. $SLOW_CONNS slow-header connections, then $C new clients for $CAP_SECS s"
  slowloris "$s" slowloris-new $((3 + CAP_SECS + 1))
  sp=$SLOW_PID
  sleep 3
  probe "$s" slowloris
  c0=$(snap "${PID[$s]}")
  load "$s" slow-new "$CAP_SECS" --clients "$C" --duration "$CAP_SECS"
  phase_cpu "$s" slow-new "$c0" "$(snap "${PID[$s]}")" "$CAP_SECS"
  wait "$sp" || true
  sed 's/^/    /' "$RUN/logs/slowloris-new-$s.txt" >&2 || true
  metrics "$s" slow-new
}

for s in $SERVERS; do
  : >"$RUN/cpu-$s.tsv"; : >"$RUN/settle-$s.tsv"
  probe "$s" idle
  # warm-up, not recorded
  mapfile -t u < <(urls "$s")
  timeout 30 "$LOAD_BIN" load "${u[@]}" --clients "$C" --duration 1 --max-requests 1000000 \
    >/dev/null 2>"$RUN/logs/warmup-$s.txt" || true
  metrics "$s" 0-start
done
# Phase by phase, the servers take turns, so a change in the shared
# machine's load falls on both rather than on whichever ran second.
for ph in capacity surge surge_polite slow_held slow_new; do
  for s in $SERVERS; do
    "phase_$ph" "$s"
    settle "$s" "${ph//_/-}"
  done
done
for s in $SERVERS; do rss_hwm "${PID[$s]}" >"$RUN/hwm-$s.txt"; done

# ---------------------------------------------------------------- report
{
  echo "nproc=$(nproc)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "wharf=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')"
  echo "wharf_bin_built=$(date -u -r "$WHARF_BIN" '+%Y-%m-%d %H:%M UTC')"
  echo "reference=$("$REGISTRY" --version 2>&1 | head -1)"
  echo "skopeo=$(skopeo --version)"
  echo "servers=$(echo $SERVERS)"
  echo "clients_at_capacity=$C"
  echo "surge_clients=$SURGE_CLIENTS"
  echo "slow_conns=$SLOW_CONNS"
  echo "cap_secs=$CAP_SECS"
  echo "pre_secs=$PRE_SECS"
  echo "surge_secs=$SURGE_SECS"
  echo "post_secs=$POST_SECS"
  echo "slow_secs=$SLOW_SECS"
  echo "deadline_ms=$DEADLINE_MS"
  echo "refusal_pause_ms=$REFUSAL_PAUSE_MS"
  echo "tenants=$TENANTS"
  echo "blob_kib=$BLOB_KIB"
  echo "push=${PUSH_LAYERS}x${PUSH_MIB} MiB"
  echo "ulimit_n=$(ulimit -n)"
  echo "wharf_flags=${WHARF_FLAGS[*]}" | sed "s|$W|<tmp>|g"
  echo "wharf_flags_dropped=${DROPPED[*]}"
  echo "command=$CMDLINE"
} >"$RUN/machine.txt"

python3 - "$RUN" >"$REPORT" <<'PY'
"""Turns one overload run directory into a Markdown report."""
import json
import os
import sys

run = sys.argv[1]
m = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(run, "machine.txt")) if "=" in l)
servers = m["servers"].split()
NAME = {"wharf": "Wharf", "reference": "reference"}
SURGES = [("surge", "refused clients retry at once"),
          ("surge-polite", "refused clients wait what Retry-After asks")]
SLOWS = [("held", "clients connected before the attack"),
         ("new", "clients connecting during the attack")]


def read(path):
    try:
        return open(os.path.join(run, path)).read()
    except OSError:
        return ""


def doc(name, s):
    try:
        return json.loads(read(f"{name}-{s}.json"))
    except ValueError:
        return None


def num(x, d=0):
    return "—" if x is None else f"{x:,.{d}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def stage(d, i):
    return d["stages"][i] if d and len(d["stages"]) > i else None


def cnt(st, o):
    return st["outcomes"][o]["count"] if st else None


def lat3(st, o):
    if not st:
        return "—"
    x = st["outcomes"][o]
    return " / ".join(num(x[q], 2) for q in ["p50_ms", "p99_ms", "max_ms"])


def kv(path):
    return dict(p.split("=", 1) for p in read(path).split() if "=" in p)


def gen_cpu(d):
    return d["generator_cpu_s"] / d["elapsed_s"] if d and d.get("generator_cpu_s") is not None else None


def cpu_row(s, phase, docs):
    """'server / generator(s) / everything else / steal' in cores over a
    phase; everything else = the machine's busy CPU minus the server's and
    the generators' (skopeo, other users of the shared machine)."""
    for line in read(f"cpu-{s}.tsv").splitlines():
        f = line.split("\t")
        if f[0] != phase or len(f) < 5 or float(f[2]) <= 0:
            continue
        secs = float(f[2])
        server, busy, steal = float(f[1]) / secs, float(f[3]) / secs, float(f[4]) / secs
        gens = [gen_cpu(d) for d in docs if d]
        gen = sum(g for g in gens if g is not None)
        return " / ".join([num(server, 2), num(gen, 2), num(max(busy - server - gen, 0.0), 2), num(steal, 2)])
    return "—"


D = {s: {k: doc(k, s) for k in ["capacity", "surge", "surge-polite", "slow-held", "slow-new",
                                 "slowloris-held", "slowloris-new"]} for s in servers}
capg = {s: D[s]["capacity"]["total"]["goodput_rps"] if D[s]["capacity"] else None for s in servers}
capp99 = {s: D[s]["capacity"]["total"]["outcomes"]["ok_2xx"]["p99_ms"] if D[s]["capacity"] else None
          for s in servers}


def recovery(s, name):
    """(seconds after the surge's end until the first 1-s bucket whose 2xx p99
    is within 2x the p99 at capacity, or None; the buckets from the surge's
    last second to the end). Bucket t holds the answers that ended in
    [t, t+1) s, so 0 means the very first second after the surge."""
    d, normal = D[s][name], capp99[s]
    if not d or normal is None:
        return None, []
    end = int(round(d["stages"][1]["end_s"]))
    total = int(round(d["stages"][2]["end_s"]))
    buckets = [b for b in d["series"] if end - 1 <= b["t"] < total]
    after = [b for b in buckets if b["t"] >= end]
    for b in after:
        if b["ok_p99_ms"] is not None and b["ok_p99_ms"] <= 2 * normal:
            return b["t"] - end, buckets
    return None, buckets


def later_spikes(s, name):
    """Buckets after the first normal one whose 2xx p99 is above 2x the p99 at
    capacity again: (how many, of how many)."""
    r, buckets = recovery(s, name)
    if r is None:
        return None
    end = int(round(D[s][name]["stages"][1]["end_s"]))
    later = [b for b in buckets if b["t"] > end + r]
    return sum(1 for b in later if b["ok_p99_ms"] is None or b["ok_p99_ms"] > 2 * capp99[s]), len(later)


def slow_stage(s, kind):
    d = D[s][f"slow-{kind}"]
    return stage(d, 1) if kind == "held" else stage(d, 0)


lines = []
w = lines.append
w(f"# Overload benchmark, {os.path.basename(run).removeprefix('overload-')}")
w("")
w(f"Command: `{m['command']}`")
w("")
w(f"Machine: {m['nproc']} vCPUs ({m['cpu']}), {m['mem']}, kernel {m['kernel']}, open-file limit "
  f"{m['ulimit_n']}. Load average {m['loadavg_start']} at the start, {m['loadavg_end']} at the end. "
  "The generator (wharf-load) runs on the same cores as the server it measures.")
w("")
w(f"Versions: Wharf {m['wharf']} (the tree when the report was written; the release binary was built "
  f"{m.get('wharf_bin_built', '?')}); {m['reference']}; {m['skopeo']}.")
w("")
if "wharf" in servers:
    w(f"Wharf: `{read('wharf-command.txt').strip()}`.")
    w("")
if m.get("wharf_flags_dropped"):
    w(f"**This Wharf build does not list {m['wharf_flags_dropped']} in `wharf serve --help`**: it ran "
      "with its built-in defaults for those.")
    w("")
w(f"Load: C = {m['clients_at_capacity']} closed-loop clients at capacity (the pull limit), each on its "
  "own keep-alive HTTP/1.1 connection, cycling through the manifest (OCI `Accept`) and a "
  f"{m['blob_kib']} KiB blob in each of {m['tenants']} namespaces. Surge: {m['surge_clients']} clients for "
  f"{m['surge_secs']} s between {m['pre_secs']} s and {m['post_secs']} s of C clients. Slowloris: "
  f"{m['slow_conns']} connections, one header byte every 2 s, reconnecting when closed. Deadline "
  f"{m['deadline_ms']} ms: a request not answered in full by then is a hang. Push during each surge: "
  f"{m['push']} layers, 2 s into it.")
w("")
fails = read("failures.txt").strip()
w("## Failures and warnings")
w("")
w("\n".join(f"- {l}" for l in fails.splitlines()) if fails else "None.")
w("")

w("## Side by side")
w("")
w("| Measurement | " + " | ".join(NAME.get(s, s) for s in servers) + " |")
w("|---|" + "---:|" * len(servers))


def row(label, f):
    w(f"| {label} | " + " | ".join(f(s) for s in servers) + " |")


cap = {s: D[s]["capacity"] and D[s]["capacity"]["total"] for s in servers}
row(f"a. capacity, {m['clients_at_capacity']} clients: goodput (2xx/s)", lambda s: num(capg[s]))
row("a. capacity: goodput (MB/s)", lambda s: num(cap[s] and cap[s]["goodput_bytes_per_s"] / 1e6, 1))
row("a. capacity: 2xx p50 / p99 / max (ms)", lambda s: lat3(cap[s], "ok_2xx"))
row("a. capacity: not answered 2xx/429/503", lambda s: num(cap[s] and cap[s]["not_answered"]))
row("a. capacity: CPU, server / generator / everything else / steal (cores)",
    lambda s: cpu_row(s, "capacity", [D[s]["capacity"]]))
for name, label in SURGES:
    tag = "b" if name == "surge" else "b′"
    row(f"**{tag}. surge, {label}**", lambda s: "")
    st = {s: stage(D[s][name], 1) for s in servers}
    row(f"{tag}. surge: requests", lambda s: num(st[s] and st[s]["requests"]))
    for o, ol in [("ok_2xx", "2xx"), ("s429", "429"), ("s503", "503"), ("other_status", "other status"),
                  ("refused", "connection refused"), ("reset", "reset/closed, no response"),
                  ("hang", f"hang (no answer in {m['deadline_ms']} ms)")]:
        row(f"{tag}. surge: {ol}", lambda s, o=o: num(cnt(st[s], o)))
    row(f"{tag}. of the resets: fresh connection closed before the request went out (whole run)",
        lambda s: num(sum(v for k, v in D[s][name]["errors"].items()
                          if k.startswith("closed before the request was sent"))) if D[s][name] else "—")
    row(f"{tag}. surge: 2xx p50 / p99 / max (ms)", lambda s: lat3(st[s], "ok_2xx"))
    row(f"{tag}. surge: 503 p50 / p99 / max (ms)", lambda s: lat3(st[s], "s503"))
    row(f"{tag}. surge: 429/503 without Retry-After", lambda s: num(st[s] and st[s]["refusals_without_retry_after"]))
    row(f"{tag}. surge: goodput (2xx/s)", lambda s: num(st[s] and st[s]["goodput_rps"]))
    row(f"{tag}. surge: goodput ÷ capacity goodput", lambda s: num(ratio(st[s] and st[s]["goodput_rps"], capg[s]), 2))
    row(f"{tag}. surge: goodput ÷ goodput of the C clients just before it",
        lambda s: num(ratio(st[s] and st[s]["goodput_rps"], stage(D[s][name], 0) and stage(D[s][name], 0)["goodput_rps"]), 2))
    for i, when in [(0, "before"), (2, "after")]:
        row(f"{tag}. {when} the surge (C clients): goodput (2xx/s); not answered",
            lambda s, i=i: (num(stage(D[s][name], i)["goodput_rps"]) + "; " +
                            num(stage(D[s][name], i)["not_answered"])) if D[s][name] else "—")
    row(f"{tag}. first 1-s bucket after the surge with 2xx p99 ≤ 2× capacity p99 (0 = the first second)",
        lambda s: ("never" if recovery(s, name)[0] is None else num(recovery(s, name)[0])) if D[s][name] else "—")
    row(f"{tag}. later buckets above that again",
        lambda s: (lambda x: "—" if x is None else f"{x[0]} of {x[1]}")(later_spikes(s, name)) if D[s][name] else "—")
    row(f"{tag}. 2xx p99 in the 1st / 2nd / 3rd second after the surge (ms)",
        lambda s: " / ".join(num(b["ok_p99_ms"], 2) for b in recovery(s, name)[1][1:4]) if D[s][name] else "—")
    row(f"{tag}. seconds the server stayed busy after the run (to < 0.05 cores)",
        lambda s: next((l.split("\t")[1] for l in read(f"settle-{s}.tsv").splitlines()
                        if l.split("\t")[0] == name), "—"))
    row(f"{tag}. CPU over the run, server / generator / everything else / steal (cores)",
        lambda s: cpu_row(s, name, [D[s][name]]))
    row(f"{tag}. push during the surge: exit status, wall time (s)",
        lambda s: (lambda p: f"{p.get('rc', '—')}, {p.get('wall_s', '—')}")(kv(f"push-{name}-{s}.txt")))
    row(f"{tag}. pulled-back copy byte-identical", lambda s: kv(f"push-{name}-{s}.txt").get("identical", "—"))
for kind, label in SLOWS:
    row(f"**c. slowloris, {label}**", lambda s: "")
    row("c. goodput (2xx/s); ÷ capacity goodput",
        lambda s, k=kind: (num(slow_stage(s, k)["goodput_rps"]) + "; " +
                           num(ratio(slow_stage(s, k)["goodput_rps"], capg[s]), 2)) if slow_stage(s, k) else "—")
    row("c. not answered; of which hangs",
        lambda s, k=kind: (num(slow_stage(s, k)["not_answered"]) + "; " + num(cnt(slow_stage(s, k), "hang")))
        if slow_stage(s, k) else "—")
    row("c. 2xx p50 / p99 / max (ms)", lambda s, k=kind: lat3(slow_stage(s, k), "ok_2xx"))
    if kind == "held":
        row("c. goodput ÷ goodput of the same clients in the 4 s before the attack",
            lambda s: num(ratio(slow_stage(s, "held")["goodput_rps"], stage(D[s]["slow-held"], 0)["goodput_rps"]), 2)
            if slow_stage(s, "held") else "—")
    row("c. CPU, server / generators / everything else / steal (cores)",
        lambda s, k=kind: cpu_row(s, f"slow-{k}", [D[s][f"slow-{k}"], D[s][f"slowloris-{k}"]]))
    row("c. slow connections made / closed by the server / open at the end",
        lambda s, k=kind: (lambda d: f"{num(d['connected'])} / {num(d['closed_by_server'])} / "
                                     f"{num(d['still_open_at_end'])}" if d else "—")(D[s][f"slowloris-{k}"]))
    row("c. server-closed slow connections: lifetime p50 / max (s)",
        lambda s, k=kind: (lambda d: " / ".join(num(d["server_closed_lifetime_s"][q], 1) for q in ["p50", "max"])
                           if d else "—")(D[s][f"slowloris-{k}"]))
    row("c. how the slow connections ended",
        lambda s, k=kind: (lambda d: ", ".join(f"{e} {n:,}" for e, n in d["endings"].items()) if d else "—")
        (D[s][f"slowloris-{k}"]))
SNAPS = ["0-start", "1-capacity", "surge", "surge-polite", "slow-held", "slow-new"]


def metrics(s, snap):
    out = {}
    for line in read(f"metrics-{s}-{snap}.txt").splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def delta(s, phase, key):
    """How much a Wharf counter grew during `phase` (snapshot after it minus
    the one before), or None without both snapshots."""
    i = SNAPS.index(phase)
    a, b = metrics(s, SNAPS[i - 1]), metrics(s, phase)
    if key not in b:
        return None
    return b[key] - a.get(key, 0.0)


row("VmHWM at the end (MiB)", lambda s: num(int(read(f"hwm-{s}.txt").strip()) / 1024, 1)
    if read(f"hwm-{s}.txt").strip() else "—")
w("")
PULL_BUSY = 'wharf_requests_shed_total{class="pull",reason="node_busy"}'
PULL_TENANT = 'wharf_requests_shed_total{class="pull",reason="tenant_share"}'
PUSH_SHED = ['wharf_requests_shed_total{class="push",reason="node_busy"}',
             'wharf_requests_shed_total{class="push",reason="tenant_share"}']
HEAD_503 = 'wharf_http_request_duration_seconds_count{route="blob",method="HEAD",status="503"}'
if "wharf" in servers and read("metrics-wharf-surge.txt"):
    w("Wharf's own counters (`/metrics` on the admin port), growth during each phase:")
    w("")
    w("| Phase | connections accepted | canned 503s at the connection cap | waiting connections served later | "
      "pull shed, node busy | pull shed, tenant share | push shed | blob HEAD answered 503 | closed idle |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ph in SNAPS[1:]:
        def d(k, ph=ph):
            return delta("wharf", ph, k)
        ps = [x for x in (d(k) for k in PUSH_SHED) if x is not None]
        w(f"| {ph} | {num(d('wharf_connections_accepted_total'))} | {num(d('wharf_connections_refused_total'))} | "
          f"{num(d('wharf_connections_promoted_total'))} | {num(d(PULL_BUSY))} | {num(d(PULL_TENANT))} | {num(sum(ps) if ps else None)} | "
          f"{num(d(HEAD_503) or 0)} | {num(d('wharf_connections_idle_closed_total'))} |")
    w("")

w("## Targets")
w("")
w("| Target | " + " | ".join(NAME.get(s, s) for s in servers) + " | Met by Wharf? |")
w("|---|" + "---|" * len(servers) + "---|")


def target(label, f):
    vals = {s: f(s) for s in servers}
    met = vals["wharf"][1] if "wharf" in vals and vals["wharf"] else None
    w(f"| {label} | " + " | ".join(vals[s][0] if vals[s] else "—" for s in servers) +
      f" | **{'—' if met is None else ('yes' if met else 'no')}** |")


for name, label in SURGES:
    def answered(s, name=name):
        sts = [stage(D[s][name], i) for i in range(3)]
        if not all(sts):
            return None
        req = sum(x["requests"] for x in sts)
        hang = sum(cnt(x, "hang") for x in sts)
        rr = sum(cnt(x, "reset") + cnt(x, "refused") for x in sts)
        oth = sum(cnt(x, "other_status") for x in sts)
        return (f"{num(req)} requests: {num(hang)} hangs, {num(rr)} refused/reset, {num(oth)} other status",
                hang + rr + oth == 0)

    def goodput(s, name=name):
        st = stage(D[s][name], 1)
        if not st:
            return None
        g = ratio(st["goodput_rps"], capg[s])
        pre = ratio(st["goodput_rps"], stage(D[s][name], 0)["goodput_rps"])
        return (f"{num(st['goodput_rps'])} ÷ {num(capg[s])} = {num(g, 2)} (÷ the {m['pre_secs']} s before it: "
                f"{num(pre, 2)})", g is not None and g >= 0.9)

    def recov(s, name=name):
        if not D[s][name]:
            return None
        r = recovery(s, name)[0]
        return (f"{'never' if r is None else str(r) + ' s'} (p99 at capacity {num(capp99[s], 2)} ms)",
                r is not None and r <= 1)

    target(f"Surge ({label}): every request answered 2xx/429/503 within {m['deadline_ms']} ms", answered)
    target(f"Surge ({label}): goodput ≥ 0.9 × goodput at capacity", goodput)
    target(f"Surge ({label}): 2xx latency back to normal within 1 s after it", recov)

    def pushed(s, name=name):
        p = kv(f"push-{name}-{s}.txt")
        if not p:
            return None
        return (f"exit {p.get('rc')}, {p.get('wall_s')} s, identical: {p.get('identical')}",
                p.get("rc") == "0" and p.get("identical") == "yes")

    target(f"Surge ({label}): a push during it completes, pulled-back copy byte-identical", pushed)
for kind, label in SLOWS:
    def slow(s, kind=kind):
        st = slow_stage(s, kind)
        if not st:
            return None
        g = ratio(st["goodput_rps"], capg[s])
        return f"{num(st['goodput_rps'])} ÷ {num(capg[s])} = {num(g, 2)}", g is not None and g >= 0.9

    target(f"{m['slow_conns']} slow-header connections, {label}: goodput ≥ 0.9 × unloaded", slow)
w("")

for name, label in SURGES:
    for s in servers:
        d = D[s][name]
        if not d:
            continue
        r, buckets = recovery(s, name)
        w(f"<details><summary>{NAME.get(s, s)}, surge ({label}): every 1-s bucket (answers by completion time)</summary>")
        w("")
        w("| t (s) | stage | 2xx | 2xx p50 (ms) | 2xx p99 (ms) | 429 | 503 | other | refused | reset | hang |")
        w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        bounds = [x["end_s"] for x in d["stages"]]
        for b in d["series"]:
            stg = next((f"{d['stages'][i]['clients']} clients" for i, e in enumerate(bounds) if b["t"] < e), "tail")
            w(f"| {b['t']} | {stg} | {num(b['ok_2xx'])} | {num(b['ok_p50_ms'], 2)} | {num(b['ok_p99_ms'], 2)} | "
              f"{num(b['s429'])} | {num(b['s503'])} | {num(b['other_status'])} | {num(b['refused'])} | "
              f"{num(b['reset'])} | {num(b['hang'])} |")
        w("")
        if d.get("errors"):
            w("Errors seen by the generator: " + ", ".join(f"`{k}` × {v:,}" for k, v in d["errors"].items()))
            w("")
        w("</details>")
        w("")
probes = "".join(read(f"probes-{s}.txt") for s in servers).strip()
if probes:
    w("Wharf's admin port during the run (`/readyz`, `/healthz`: status, time):")
    w("")
    w("```")
    w(probes)
    w("```")
print("\n".join(lines))
PY
cat "$REPORT"
log "written: bench-out/overload-$STAMP.md (raw data in bench-out/overload-$STAMP/)"
