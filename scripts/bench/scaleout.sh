#!/usr/bin/env bash
# Scale-out benchmark, run by hand (not by CI), loopback only, bounded.
#
#   bash scripts/bench/scaleout.sh              # 3 rounds of 10 s loads
#   ROUNDS=1 SECS=3 bash scripts/bench/scaleout.sh   # smoke run
#
# In one run, side by side:
#   - one node against three nodes behind HAProxy (scripts/cluster.sh: all
#     on PostgreSQL + Garage): manifest GET req/s and p99 at 64 connections,
#     blob GET (64 MiB) MB/s at 8 connections;
#   - blob pulls served from Garage (S3) against the same blob on a node
#     with the filesystem default: MB/s at 1 and 8 connections.
# Rounds interleave the targets; the report gives medians. On a 2-core
# machine three nodes, HAProxy, PostgreSQL, Garage and wrk share the same
# cores, so "three nodes" cannot add capacity here: what this shows is the
# cost of the extra hop and of S3, not the gain of more machines.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
[ -x "$WHARF_BIN" ] || cargo build --release -p wharf
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench-out/scaleout-$STAMP
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/wharf-scaleout.XXXXXX)
chmod 755 "$TMP" # the postgres user must reach the cluster dir
FS_PID=
cleanup() {
  [ -n "$FS_PID" ] && kill "$FS_PID" 2>/dev/null
  WHARF_BIN=$WHARF_BIN bash scripts/cluster.sh stop "$TMP/cluster" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

export WHARF_BIN
export WHARF_CLUSTER_PORT=${WHARF_CLUSTER_PORT:-18180}
export WHARF_CLUSTER_PG_PORT=${WHARF_CLUSTER_PG_PORT:-15580}
export WHARF_CLUSTER_GARAGE_PORT=${WHARF_CLUSTER_GARAGE_PORT:-14080}
timeout 180 bash scripts/cluster.sh start "$TMP/cluster" >"$OUT/cluster-start.log" 2>&1
# shellcheck source=/dev/null
source "$TMP/cluster/cluster.env"
LB="127.0.0.1:$WHARF_CLUSTER_PORT"
NODE1=$(cat "$TMP/cluster/node1/addr")

"$WHARF_BIN" serve --listen 127.0.0.1:0 --addr-file "$TMP/fs.addr" --admin-listen 127.0.0.1:0 \
  --data-dir "$TMP/fs-data" --log error >"$OUT/fs-node.log" 2>&1 &
FS_PID=$!
for _ in $(seq 100); do [ -s "$TMP/fs.addr" ] && break; sleep 0.1; done
FS=$(cat "$TMP/fs.addr")

# The content: a 64 MiB random layer, a config and a manifest.
head -c $((64 << 20)) /dev/urandom >"$TMP/layer"
printf '{"architecture":"amd64","os":"linux"}' >"$TMP/config"
L=sha256:$(sha256sum "$TMP/layer" | cut -d' ' -f1)
C=sha256:$(sha256sum "$TMP/config" | cut -d' ' -f1)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
  "$C" "$(stat -c %s "$TMP/config")" "$L" "$(stat -c %s "$TMP/layer")" >"$TMP/manifest"
push() { # push HOST
  local h=$1
  curl -sf --max-time 120 -X POST --data-binary @"$TMP/config" "http://$h/v2/bench/app/blobs/uploads/?digest=$C" -o /dev/null
  curl -sf --max-time 120 -X POST --data-binary @"$TMP/layer" "http://$h/v2/bench/app/blobs/uploads/?digest=$L" -o /dev/null
  curl -sf --max-time 60 -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$TMP/manifest" "http://$h/v2/bench/app/manifests/v1" -o /dev/null
}
push "$LB"
push "$FS"
# Every node has seen the content once (warm caches everywhere).
for n in 1 2 3; do
  a=$(cat "$TMP/cluster/node$n/addr")
  curl -sf --max-time 60 "http://$a/v2/bench/app/blobs/$L" -o /dev/null
  curl -sf --max-time 10 -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$a/v2/bench/app/manifests/v1" -o /dev/null
done

RESULTS=$OUT/results.tsv
: >"$RESULTS"
# measure NAME TARGET KIND CONNS: one wrk run; appends "name kind conns value p99".
measure() {
  local name=$1 target=$2 kind=$3 conns=$4 url out threads=2
  [ "$conns" = 1 ] && threads=1
  if [ "$kind" = manifest ]; then
    url="http://$target/v2/bench/app/manifests/v1"
    out=$(timeout $((SECS + 20)) wrk -t"$threads" -c"$conns" -d"${SECS}s" --latency \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url" 2>&1) || true
  else
    url="http://$target/v2/bench/app/blobs/$L"
    out=$(timeout $((SECS + 20)) wrk -t"$threads" -c"$conns" -d"${SECS}s" --latency "$url" 2>&1) || true
  fi
  echo "$out" >"$OUT/wrk-$name-$kind-$conns-$(date +%s%N).txt"
  local rps mbs p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  mbs=$(awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /MB/) {sub("MB","",v)} else if (v ~ /KB/) {sub("KB","",v); v/=1024}; print v}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /ms/) {sub("ms","",v)} else if (v ~ /us/) {sub("us","",v); v/=1000} else if (v ~ /s/) {sub("s","",v); v*=1000}; print v}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  if [ -n "$non2xx" ]; then echo "$name $kind $conns: $non2xx non-2xx responses" >>"$OUT/failures.txt"; fi
  if [ "$kind" = manifest ]; then
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$conns" "${rps:-0}" "${p99:-0}" >>"$RESULTS"
  else
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$conns" "${mbs:-0}" "${p99:-0}" >>"$RESULTS"
  fi
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
  echo "round $r/$ROUNDS" >&2
  for t in lb node1; do
    target=$LB
    [ $t = node1 ] && target=$NODE1
    measure "$t" "$target" manifest 64
    measure "$t" "$target" blob 8
  done
  for t in s3-node fs-node; do
    target=$NODE1
    [ $t = fs-node ] && target=$FS
    measure "$t" "$target" blob 1
    measure "$t" "$target" blob 8
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

REPORT=$ROOT/bench-out/scaleout-$STAMP.md
python3 - "$RESULTS" "$ROUNDS" "$SECS" "$LOAD_START" "$LOAD_END" "$(git rev-parse --short HEAD)" >"$REPORT" <<'EOF'
import statistics, sys
from collections import defaultdict
path, rounds, secs, l0, l1, rev = sys.argv[1:]
vals = defaultdict(list)
p99s = defaultdict(list)
for line in open(path):
    name, kind, conns, v, p = line.rstrip("\n").split("\t")
    vals[(name, kind, conns)].append(float(v))
    p99s[(name, kind, conns)].append(float(p))
med = lambda k: statistics.median(vals[k]) if vals.get(k) else float("nan")
pmed = lambda k: statistics.median(p99s[k]) if p99s.get(k) else float("nan")
print(f"# Scale-out benchmark ({rev})\n")
print(f"{rounds} rounds of {secs} s loads, medians; load average {l0} at the start, {l1} at the end.\n")
print("## One node against three nodes behind HAProxy (PostgreSQL + Garage)\n")
print("| Measurement | 3 nodes via HAProxy | 1 node direct | ratio |")
print("|---|---:|---:|---:|")
a, b = ("lb", "manifest", "64"), ("node1", "manifest", "64")
print(f"| manifest GET, 64 conns (req/s) | {med(a):,.0f} | {med(b):,.0f} | {med(a)/med(b):.2f} |")
print(f"| manifest GET p99 (ms) | {pmed(a):.2f} | {pmed(b):.2f} | {pmed(a)/pmed(b):.2f} |")
a, b = ("lb", "blob", "8"), ("node1", "blob", "8")
print(f"| blob GET 64 MiB, 8 conns (MB/s) | {med(a):,.0f} | {med(b):,.0f} | {med(a)/med(b):.2f} |")
print("\n## Blob pulls: S3-backed (Garage) against filesystem-backed\n")
print("| Measurement | S3 (Garage) | filesystem | ratio |")
print("|---|---:|---:|---:|")
for c in ("1", "8"):
    a, b = ("s3-node", "blob", c), ("fs-node", "blob", c)
    print(f"| blob GET 64 MiB, {c} conn(s) (MB/s) | {med(a):,.0f} | {med(b):,.0f} | {med(a)/med(b):.2f} |")
print("\n<details><summary>Every round</summary>\n")
print("| target | kind | conns | values | p99 (ms) |")
print("|---|---|---:|---|---|")
for k in sorted(vals):
    print(f"| {k[0]} | {k[1]} | {k[2]} | {', '.join(f'{v:,.1f}' for v in vals[k])} | {', '.join(f'{v:.2f}' for v in p99s[k])} |")
print("\n</details>")
EOF
cat "$REPORT"
[ -s "$OUT/failures.txt" ] && { echo; echo "failures:"; cat "$OUT/failures.txt"; }
echo "report: $REPORT"
