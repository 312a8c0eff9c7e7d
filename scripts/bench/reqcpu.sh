#!/usr/bin/env bash
# CPU a running node spends per request, by hand (not by CI): one wrk load
# over a path file, the node's utime + stime from /proc before and after,
# divided by the requests answered. Latency on 2 shared cores moves with
# other users' load; CPU per request much less, so this is what tells two
# builds' request paths apart.
#
#   bash scripts/bench/reqcpu.sh PID ADDR PATHS [SECS] [ACCEPT]
#
#   PID    the node's process id        ADDR   host:port it serves on
#   PATHS  a path file, one request path a line (scalefill.py paths writes
#          tag-paths, digest-paths, hot-paths, taglist-paths, catalog-paths)
#   SECS   load length (default 8)      ACCEPT Accept header (default: the
#          OCI manifest and index types)
#
# Prints one line: requests, p50 and p99 (µs), and node CPU µs per request.
# Owns nothing; only ever talks to ADDR (which must be loopback) and reads
# /proc/PID/stat.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,17p "$0"; exit 2; }
pid=$1 addr=$2 paths=$3 secs=${4:-8}
accept=${5:-"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"}
case $addr in 127.* | localhost:* | "[::1]":*) ;; *) echo "reqcpu: $addr is not loopback" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks)
line=$(WRK_PATHS=$paths WRK_ACCEPT=$accept WRK_THINK_MS=0 \
  timeout $((secs + 30)) wrk -t1 -c4 -d"${secs}s" --timeout 10s -s "$here/wrk-paths.lua" "http://$addr" 2>&1 |
  grep '^WRKRESULT' || true)
after=$(ticks)
[ -n "$line" ] || { echo "reqcpu: wrk gave no result" >&2; exit 1; }
field() { grep -o " $1=[0-9]*" <<<"$line" | cut -d= -f2; }
n=$(field requests)
[ "$n" -gt 0 ] || { echo "reqcpu: no request answered" >&2; exit 1; }
echo "$(basename "$paths"): $n requests, p50 $(field p50_us) us, p99 $(field p99_us) us," \
  "node CPU $(((after - before) * 1000000 / hz / n)) us/request"
