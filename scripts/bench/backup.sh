#!/usr/bin/env bash
# How long `wharf backup` and `wharf restore` take (docs/backup.md, "How
# long it takes"): one node over the embedded store with TENANTS tenants,
# IMAGES images each of one config and one layer of 1..9 MiB of random
# bytes (about 5 MiB on average, so 60 images are ~300 MB), backed up into
# a new directory, then restored into a fresh node; every image is pulled
# back from the restored node and compared by digest.
#
#   bash scripts/bench/backup.sh                 # 3 tenants x 20 images
#   IMAGES=40 bash scripts/bench/backup.sh
#
# Loopback only, bounded. Prints the figures and keeps nothing unless
# KEEP=1. Environment: TENANTS [3], IMAGES [20] (per tenant), PARALLEL [4],
# WHARF_BIN [target/release/wharf] for the CLI and both nodes.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHARF_BIN=${WHARF_BIN:-$PWD/target/release/wharf}
TENANTS=${TENANTS:-3}
IMAGES=${IMAGES:-20}
PARALLEL=${PARALLEL:-4}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/wharf-backup-bench.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] && echo "kept $DIR" || rm -rf "$DIR"
}
trap cleanup EXIT
c() { curl -sS --noproxy '*' --connect-timeout 5 --max-time 300 "$@"; }

# start NAME: a node over DIR/NAME; sets REG and ADMIN.
start() {
  local i
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$DIR/$1" \
    --addr-file "$DIR/$1.addr" --admin-addr-file "$DIR/$1.admin" --log warn >"$DIR/$1.log" 2>&1 &
  PIDS+=($!)
  for ((i = 0; i < 300; i++)); do
    [ -s "$DIR/$1.addr" ] && [ -s "$DIR/$1.admin" ] && break
    sleep 0.1
  done
  REG=$(cat "$DIR/$1.addr")
  ADMIN=$(cat "$DIR/$1.admin")
}

push_blob() { # push_blob REPO FILE: prints the digest
  local d
  d="sha256:$(sha256sum "$2" | cut -d' ' -f1)"
  c -o /dev/null -f -X POST --data-binary "@$2" -H 'Content-Type: application/octet-stream' \
    "http://$REG/v2/$1/blobs/uploads/?digest=$d"
  echo "$d"
}

start a
echo "source node $REG (admin $ADMIN), data in $DIR"
: >"$DIR/images"
for ((t = 0; t < TENANTS; t++)); do
  "$WHARF_BIN" admin --url "http://$ADMIN" tenant create "t$t" >/dev/null
  for ((i = 0; i < IMAGES; i++)); do
    size=$(((RANDOM % 9 + 1) * 1024 * 1024 + RANDOM))
    head -c "$size" /dev/urandom >"$DIR/layer"
    printf '{"t":%d,"i":%d}' "$t" "$i" >"$DIR/config"
    cd_=$(push_blob "t$t/app$((i % 4))" "$DIR/config")
    ld=$(push_blob "t$t/app$((i % 4))" "$DIR/layer")
    m=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
      "$cd_" "$(stat -c %s "$DIR/config")" "$ld" "$size")
    c -o /dev/null -f -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$m" \
      "http://$REG/v2/t$t/app$((i % 4))/manifests/v$i"
    echo "t$t/app$((i % 4)) v$i $(printf '%s' "$m" | sha256sum | cut -d' ' -f1)" >>"$DIR/images"
  done
done
rm -f "$DIR/layer" "$DIR/config"
bytes=$(du -sb "$DIR/a" | cut -f1)
echo "pushed $((TENANTS * IMAGES)) images; data directory $((bytes / 1000000)) MB"

t0=$(date +%s.%N)
"$WHARF_BIN" backup --url "http://$ADMIN" --to "$DIR/backup" --parallel "$PARALLEL" >"$DIR/backup.json"
t1=$(date +%s.%N)
start b
t2=$(date +%s.%N)
"$WHARF_BIN" restore --url "http://$ADMIN" --from "$DIR/backup" --parallel "$PARALLEL" >"$DIR/restore.json"
t3=$(date +%s.%N)

bad=0
while read -r repo tag want; do
  got=$(c -f -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/$repo/manifests/$tag" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "MISMATCH $repo:$tag"; bad=$((bad + 1)); }
done <"$DIR/images"
blob_bytes=$(jq .blob_bytes "$DIR/backup.json")
mb=$(echo "$blob_bytes / 1000000" | bc -l)
printf 'backup:  %.1f s for %.0f MB of blobs (%.0f MB/s), %s blobs\n' "$(echo "$t1 - $t0" | bc -l)" "$mb" \
  "$(echo "$mb / ($t1 - $t0)" | bc -l)" "$(jq .blobs "$DIR/backup.json")"
printf 'restore: %.1f s (%.0f MB/s)\n' "$(echo "$t3 - $t2" | bc -l)" "$(echo "$mb / ($t3 - $t2)" | bc -l)"
echo "images compared after restore: $((TENANTS * IMAGES)), mismatched: $bad"
[ "$bad" = 0 ]
