#!/usr/bin/env bash
# End-to-end tests of Wharf with real clients (skopeo, umoci, curl, podman,
# docker, containerd, buildah, ORAS) against a real `wharf serve` process on
# loopback.
#
#   WHARF_BIN=target/release/wharf bash tests/e2e/run.sh
#
# Environment:
#   WHARF_BIN               the wharf binary [target/release/wharf]
#   WHARF_E2E_SKIP_DOCKER=1 skip the docker cases (otherwise a dockerd that
#                           cannot start is a FAIL, not a silent skip)
#   WHARF_E2E_KEEP=1        keep the temp dir (logs, layouts) after the run
#   WHARF_LOAD_BIN          wharf-load, for the garbage-collection cases
#                           [target/release/wharf-load]
#   WHARF_CASES             run only these groups, comma-separated: `core`
#                           (every case but the ones below), `tls` (real clients
#                           over TLS), `gc-race-single-node`, `gc-crash-mid-pass`,
#                           `gc-real-clients`, `nginx` (deploy/nginx/wharf.conf in a
#                           real nginx in front of a token-mode node, skopeo through it),
#                           `clients` (containerd's ctr, buildah and the ORAS SDK,
#                           plain HTTP and TLS: tests/e2e/clients.sh), `image`
#                           (Wharf's own image from scripts/image.sh, pushed,
#                           pulled back and run by podman: tests/e2e/image.sh) [all]
#   WHARF_E2E_IMAGE_PORT    the image group's container registry port; the admin
#                           port is the next one [16530]
#   WHARF_E2E_NGINX_PORT    the nginx group's TLS port [16520]
#
# Build first: cargo build --release -p wharf -p wharf-load
#
# Each check prints `PASS name` or `FAIL name (reason)`; the run ends with
# exactly one line `e2e: N passed, M failed` and exits non-zero if M > 0.
# Every wait and every client call is bounded by a timeout.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WHARF_BIN=${WHARF_BIN:-$ROOT/target/release/wharf}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wharf-e2e.XXXXXX")
LOGS=$TMP/logs
mkdir -p "$LOGS"

PASSED=0
FAILED=0
FAILED_NAMES=()
WHARF_PID=
GC_PID=
DOCKERD_PID=
WATCHDOG_PID=
REG=
REFS= # the layout's refs.json, once case_fixture_layout made it
DONE=0

SUITE=e2e
# shellcheck source=../harness.sh
source "$HERE/../harness.sh"

cleanup() {
  [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null
  stop_dockerd
  stop_secure_wharf
  stop_tls_wharf
  stop_nginx_group
  stop_clients_group
  stop_image_group
  stop_pid "$WHARF_PID" 10
  WHARF_PID=
  stop_pid "$GC_PID" 10
  GC_PID=
  if [ "$FAILED" -gt 0 ] || [ "${WHARF_E2E_KEEP:-0}" = 1 ]; then
    return
  fi
  # podman/docker vfs layers may hold read-only dirs; make them removable.
  chmod -R u+w "$TMP" 2>/dev/null
  rm -rf "$TMP" 2>/dev/null || true
}

on_exit() {
  local rc=$?
  # A signal can land while a case's output goes to its log: report on the
  # run's own stdout/stderr (saved as fds 3 and 4 below).
  exec 1>&3 2>&4
  if [ "$DONE" != 1 ]; then
    # Interrupted (signal, watchdog, unexpected exit): still one summary line.
    local why="run.sh stopped early (status $rc)"
    [ -s "$LOGS/watchdog" ] && why=$(cat "$LOGS/watchdog")
    fail_case run-interrupted "$why"
    DONE=1
    summary
    cleanup
    exit 1
  fi
  cleanup
}
exec 3>&1 4>&2
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The whole run is bounded too: past this, the watchdog TERMs the script
# (each client call has its own shorter timeout, so the trap runs promptly).
E2E_BUDGET=${WHARF_E2E_BUDGET:-720}
# It sleeps in 1s steps with no inherited stdout/stderr, so stopping it
# leaves no stray sleep holding the caller's pipe open.
(
  exec >/dev/null 2>&1 3>&- 4>&-
  for ((w = 0; w < E2E_BUDGET; w++)); do sleep 1; done
  echo "over ${E2E_BUDGET}s, stopped by the watchdog" >"$LOGS/watchdog"
  kill -TERM $$
) &
WATCHDOG_PID=$!

# ---------------------------------------------------------------- helpers

POLICY=$TMP/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
export DOCKER_CONFIG=$TMP/docker-config
mkdir -p "$DOCKER_CONFIG"
export REGISTRY_AUTH_FILE=$TMP/auth.json # podman/skopeo: no stored logins
echo '{}' >"$REGISTRY_AUTH_FILE"

sk() { timeout 120 skopeo --policy "$POLICY" "$@"; }

# curl with bounded time; no proxy for loopback.
c() { curl -sS --noproxy '*' --connect-timeout 5 --max-time 60 "$@"; }

sha256_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

# http_code METHOD URL [curl args...]: prints the status code only.
http_code() {
  local m=$1 u=$2
  shift 2
  c -o /dev/null -w '%{http_code}' -X "$m" "$@" "$u"
}

# header FILE NAME: value of header NAME in a curl -D dump (case-insensitive).
header() {
  tr -d '\r' <"$1" | awk -v h="$(echo "$2" | tr '[:upper:]' '[:lower:]')" -F': ' \
    'tolower($1) == h { sub(/^[^:]*: /, ""); v = $0 } END { print v }'
}

need() { # need CMD...: fail the case if a client is missing
  local x
  for x in "$@"; do
    command -v "$x" >/dev/null 2>&1 || die "$x is not installed (run scripts/install-deps.sh)" || return 1
  done
}

# ---------------------------------------------------------------- wharf

start_wharf() {
  [ -x "$WHARF_BIN" ] || die "WHARF_BIN=$WHARF_BIN is not an executable" || return 1
  local addr_file=$TMP/wharf.addr i
  rm -f "$addr_file"
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$TMP/wharf-data" \
    --addr-file "$addr_file" --log "${WHARF_E2E_LOG:-info}" >>"$LOGS/wharf.out" 2>&1 3>&- 4>&- &
  WHARF_PID=$!
  for ((i = 0; i < 150; i++)); do
    if [ -s "$addr_file" ]; then
      REG=$(tr -d '[:space:]' <"$addr_file")
      break
    fi
    kill -0 "$WHARF_PID" 2>/dev/null || {
      tail -n 20 "$LOGS/wharf.out"
      WHARF_PID=
      die "wharf exited during start-up"
      return 1
    }
    sleep 0.1
  done
  [ -n "$REG" ] || die "no address in --addr-file after 15s" || return 1
  # Listening: /v2/ must answer 200.
  for ((i = 0; i < 50; i++)); do
    [ "$(http_code GET "http://$REG/v2/")" = 200 ] && {
      echo "wharf pid $WHARF_PID listening on $REG"
      return 0
    }
    sleep 0.1
  done
  die "GET http://$REG/v2/ did not answer 200 within 5s"
}

# start_node NAME [FLAGS...]: another plain-HTTP wharf on loopback, with its
# data in $TMP/NAME-data and its log in $LOGS/NAME-wharf.out; sets NODE_PID
# and NODE_REG (the caller keeps them and stops the node).
start_node() {
  local name=$1 addr_file=$TMP/$1.addr i
  shift
  NODE_PID=
  NODE_REG=
  [ -x "$WHARF_BIN" ] || die "WHARF_BIN=$WHARF_BIN is not an executable" || return 1
  rm -f "$addr_file"
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$TMP/$name-data" \
    --addr-file "$addr_file" --log "${WHARF_E2E_LOG:-info}" "$@" >>"$LOGS/$name-wharf.out" 2>&1 3>&- 4>&- &
  NODE_PID=$!
  for ((i = 0; i < 150; i++)); do
    [ -s "$addr_file" ] && break
    kill -0 "$NODE_PID" 2>/dev/null || {
      tail -n 20 "$LOGS/$name-wharf.out"
      NODE_PID=
      die "wharf ($name) exited during start-up"
      return 1
    }
    sleep 0.1
  done
  NODE_REG=$(tr -d '[:space:]' <"$addr_file" 2>/dev/null)
  [ -n "$NODE_REG" ] || die "no address from wharf ($name) after 15s" || return 1
  for ((i = 0; i < 50; i++)); do
    [ "$(http_code GET "http://$NODE_REG/v2/")" = 200 ] && {
      echo "wharf ($name) pid $NODE_PID listening on $NODE_REG"
      return 0
    }
    sleep 0.1
  done
  die "GET http://$NODE_REG/v2/ ($name) did not answer 200 within 5s"
}

case_api_base() {
  local h=$TMP/base.h code
  code=$(c -D "$h" -o /dev/null -w '%{http_code}' "http://$REG/v2/")
  [ "$code" = 200 ] || die "GET /v2/ -> $code" || return 1
  [ "$(header "$h" Docker-Distribution-API-Version)" = registry/2.0 ] ||
    die "GET /v2/ lacks 'Docker-Distribution-API-Version: registry/2.0'"
}

# ---------------------------------------------------------------- fixtures

case_fixture_layout() {
  need python3 || return 1
  timeout 60 python3 "$HERE/make_layout.py" "$TMP/layout" || die "make_layout.py failed" || return 1
  REFS=$TMP/layout/refs.json
  sk inspect --raw "oci:$TMP/layout:1" >/dev/null || die "skopeo cannot read the generated layout"
}

# ---------------------------------------------------------------- skopeo

case_skopeo_push() {
  need skopeo || return 1
  sk copy --dest-tls-verify=false "oci:$TMP/layout:1" "docker://$REG/e2e/alpine:1"
}

case_skopeo_inspect() {
  local out=$TMP/inspect.json
  sk inspect --tls-verify=false "docker://$REG/e2e/alpine:1" >"$out" || die "skopeo inspect failed" || return 1
  cat "$out"
  local want_digest
  want_digest=$(jq -r .amd64.manifest "$REFS")
  [ "$(jq -r .Digest "$out")" = "$want_digest" ] ||
    die "Digest $(jq -r .Digest "$out") != pushed manifest $want_digest" || return 1
  [ "$(jq -r .Architecture "$out")" = amd64 ] || die "Architecture is not amd64" || return 1
  [ "$(jq -r .Os "$out")" = linux ] || die "Os is not linux" || return 1
  [ "$(jq -c .Layers "$out")" = "$(jq -c .amd64.layers "$REFS")" ] ||
    die "Layers $(jq -c .Layers "$out") != $(jq -c .amd64.layers "$REFS")" || return 1
  [ "$(jq -r '.Labels["org.wharf.e2e"]' "$out")" = amd64 ] || die "config label not read back"
}

case_skopeo_inspect_raw() {
  local raw=$TMP/raw.json want
  sk inspect --tls-verify=false --raw "docker://$REG/e2e/alpine:1" >"$raw" || die "inspect --raw failed" || return 1
  want=$(jq -r .amd64.manifest "$REFS")
  # The registry must return the manifest bytes exactly as pushed.
  [ "$(sha256_of "$raw")" = "$want" ] || die "raw manifest digest $(sha256_of "$raw") != $want" || return 1
  cmp -s "$raw" "$TMP/layout/blobs/sha256/${want#sha256:}" || die "raw manifest bytes differ" || return 1
  jq -e '.mediaType == "application/vnd.oci.image.manifest.v1+json"' "$raw" >/dev/null ||
    die "mediaType is not OCI manifest" || return 1
  # And by digest, with the digest echoed in Docker-Content-Digest.
  local h=$TMP/raw.h code
  code=$(c -D "$h" -o "$TMP/raw-bydigest.json" -w '%{http_code}' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REG/v2/e2e/alpine/manifests/$want")
  [ "$code" = 200 ] || die "GET manifest by digest -> $code" || return 1
  [ "$(header "$h" Docker-Content-Digest)" = "$want" ] ||
    die "Docker-Content-Digest '$(header "$h" Docker-Content-Digest)' != $want" || return 1
  [ "$(header "$h" Content-Type)" = application/vnd.oci.image.manifest.v1+json ] ||
    die "Content-Type '$(header "$h" Content-Type)'" || return 1
  cmp -s "$raw" "$TMP/raw-bydigest.json" || die "manifest by digest differs from by tag"
}

case_skopeo_roundtrip() {
  local back=$TMP/back d
  rm -rf "$back"
  sk copy --src-tls-verify=false "docker://$REG/e2e/alpine:1" "oci:$back:1" || die "copy back failed" || return 1
  local m
  m=$(jq -r '.manifests[0].digest' "$back/index.json")
  [ "$m" = "$(jq -r .amd64.manifest "$REFS")" ] || die "copied-back manifest $m differs" || return 1
  local mf=$back/blobs/sha256/${m#sha256:}
  [ "$(jq -c '[.layers[].digest]' "$mf")" = "$(jq -c .amd64.layers "$REFS")" ] ||
    die "layer digests differ: $(jq -c '[.layers[].digest]' "$mf")" || return 1
  [ "$(jq -r .config.digest "$mf")" = "$(jq -r .amd64.config "$REFS")" ] || die "config digest differs" || return 1
  # Every blob's bytes hash to its name (the registry served the right bytes).
  for d in $(jq -r '.config.digest, .layers[].digest' "$mf"); do
    [ "$(sha256_of "$back/blobs/sha256/${d#sha256:}")" = "$d" ] || die "blob $d corrupted" || return 1
    cmp -s "$back/blobs/sha256/${d#sha256:}" "$TMP/layout/blobs/sha256/${d#sha256:}" ||
      die "blob $d differs from the pushed one" || return 1
  done
}

case_skopeo_multiarch_push() {
  sk copy --all --dest-tls-verify=false "oci:$TMP/layout:multi" "docker://$REG/e2e/multi:1"
}

case_skopeo_multiarch_index() {
  local raw=$TMP/index.json want arch
  sk inspect --tls-verify=false --raw "docker://$REG/e2e/multi:1" >"$raw" || die "inspect --raw failed" || return 1
  cat "$raw"
  want=$(jq -r .index "$REFS")
  [ "$(sha256_of "$raw")" = "$want" ] || die "index digest $(sha256_of "$raw") != $want" || return 1
  jq -e '.mediaType == "application/vnd.oci.image.index.v1+json"' "$raw" >/dev/null ||
    die "not an OCI image index" || return 1
  jq -e '.manifests | length == 2' "$raw" >/dev/null || die "index does not list 2 manifests" || return 1
  for arch in amd64 arm64; do
    local d
    d=$(jq -r --arg a $arch '.manifests[] | select(.platform.architecture == $a) | .digest' "$raw")
    [ "$d" = "$(jq -r .$arch.manifest "$REFS")" ] || die "$arch manifest in index is '$d'" || return 1
    # Each child manifest resolves by digest in the same repository.
    sk inspect --tls-verify=false --raw "docker://$REG/e2e/multi@$d" >"$TMP/child-$arch.json" ||
      die "child $arch manifest $d not fetchable" || return 1
    [ "$(sha256_of "$TMP/child-$arch.json")" = "$d" ] || die "child $arch bytes differ" || return 1
    # And platform selection through the index yields that image's config.
    local got
    got=$(sk inspect --tls-verify=false --override-os linux --override-arch $arch \
      "docker://$REG/e2e/multi:1" | jq -r .Architecture) || die "inspect --override-arch $arch failed" || return 1
    [ "$got" = $arch ] || die "override-arch $arch gave '$got'" || return 1
  done
}

case_skopeo_registry_copy() {
  # Registry-to-registry copy: the destination already has the blobs in
  # another repository only, so this exercises HEAD checks / cross-repo mount.
  sk copy --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG/e2e/alpine:1" "docker://$REG/e2e/alpine:2" || die "copy alpine:1 -> alpine:2 failed" || return 1
  sk copy --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG/e2e/alpine:1" "docker://$REG/e2e/copied:latest" || die "copy to e2e/copied failed" || return 1
  local d
  d=$(sk inspect --tls-verify=false "docker://$REG/e2e/copied:latest" | jq -r .Digest)
  [ "$d" = "$(jq -r .amd64.manifest "$REFS")" ] || die "copied digest '$d'"
}

case_skopeo_list_tags() {
  local out=$TMP/tags.json
  sk list-tags --tls-verify=false "docker://$REG/e2e/alpine" >"$out" || die "list-tags failed" || return 1
  cat "$out"
  [ "$(jq -c '.Tags | sort' "$out")" = '["1","2"]' ] || die "tags are $(jq -c .Tags "$out"), want [1,2]" || return 1
  # Plain API too, with pagination (n=1 then follow Link).
  local h=$TMP/tags.h code
  code=$(c -D "$h" -o "$TMP/tags-page.json" -w '%{http_code}' "http://$REG/v2/e2e/alpine/tags/list?n=1")
  [ "$code" = 200 ] || die "GET tags/list?n=1 -> $code" || return 1
  [ "$(jq -c .tags "$TMP/tags-page.json")" = '["1"]' ] || die "first page $(jq -c .tags "$TMP/tags-page.json")" || return 1
  local link
  link=$(header "$h" Link)
  [ -n "$link" ] || die "no Link header on a partial tag page" || return 1
  echo "Link: $link"
}

case_skopeo_delete() {
  local ref="docker://$REG/e2e/todelete:1" d
  sk copy --src-tls-verify=false --dest-tls-verify=false "docker://$REG/e2e/alpine:1" "$ref" ||
    die "copy to e2e/todelete failed" || return 1
  d=$(sk inspect --tls-verify=false --raw "$ref" | sha256sum | cut -d' ' -f1)
  sk delete --tls-verify=false "$ref" || die "skopeo delete failed" || return 1
  if sk inspect --tls-verify=false "$ref" >"$TMP/deleted.out" 2>&1; then
    die "inspect still succeeds after delete"
    return 1
  fi
  cat "$TMP/deleted.out"
  grep -qiE 'manifest unknown|not found' "$TMP/deleted.out" || die "inspect failed, but not with manifest unknown" || return 1
  local code
  code=$(http_code GET "http://$REG/v2/e2e/todelete/manifests/sha256:$d")
  [ "$code" = 404 ] || die "GET deleted manifest by digest -> $code, want 404" || return 1
  # Other repositories holding the same manifest are untouched.
  sk inspect --tls-verify=false "docker://$REG/e2e/alpine:1" >/dev/null || die "e2e/alpine:1 gone after deleting e2e/todelete:1"
}

case_api_catalog() {
  local out=$TMP/catalog.json code r
  code=$(c -o "$out" -w '%{http_code}' "http://$REG/v2/_catalog")
  [ "$code" = 200 ] || die "GET /v2/_catalog -> $code" || return 1
  cat "$out"
  for r in e2e/alpine e2e/multi e2e/copied; do
    jq -e --arg r $r '.repositories | index($r)' "$out" >/dev/null || die "catalog lacks $r" || return 1
  done
}

# ---------------------------------------------------------------- umoci

case_umoci_image() {
  need umoci || return 1
  local u=$TMP/umoci
  rm -rf "$u"
  timeout 30 umoci init --layout "$u" || die "umoci init failed" || return 1
  timeout 30 umoci new --image "$u:v1" || die "umoci new failed" || return 1
  mkdir -p "$TMP/umoci-src/etc"
  echo "made by umoci" >"$TMP/umoci-src/etc/umoci-e2e"
  timeout 60 umoci insert --rootless --image "$u:v1" "$TMP/umoci-src/etc/umoci-e2e" /etc/umoci-e2e ||
    die "umoci insert failed" || return 1
  timeout 30 umoci config --image "$u:v1" --config.cmd /bin/true --config.label org.wharf.e2e=umoci \
    --architecture amd64 --os linux || die "umoci config failed" || return 1
  sk copy --dest-tls-verify=false "oci:$u:v1" "docker://$REG/e2e/umoci:v1" || die "push of umoci image failed" || return 1
  local label
  label=$(sk inspect --tls-verify=false "docker://$REG/e2e/umoci:v1" | jq -r '.Labels["org.wharf.e2e"]')
  [ "$label" = umoci ] || die "label read back '$label'"
}

# ---------------------------------------------------------------- referrers

# upload_blob REPO FILE: monolithic upload (POST ?digest=) -> prints digest.
upload_blob() {
  local repo=$1 f=$2 d code
  d=$(sha256_of "$f")
  code=$(c -o "$TMP/upload.out" -D "$TMP/upload.h" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/octet-stream' --data-binary "@$f" \
    "http://$REG/v2/$repo/blobs/uploads/?digest=$d")
  if [ "$code" != 201 ]; then
    cat "$TMP/upload.h" "$TMP/upload.out" >&2
    echo "monolithic POST upload of $d -> $code, want 201" >&2
    return 1
  fi
  echo "$d"
}

# make_artifact ARTIFACT_TYPE PAYLOAD OUTFILE: writes an artifact manifest
# whose subject is e2e/alpine:1, after uploading its blobs.
make_artifact() {
  local at=$1 payload=$2 out=$3 empty layer subject
  printf '{}' >"$TMP/empty.json"
  printf '%s' "$payload" >"$TMP/payload.$$"
  empty=$(upload_blob e2e/alpine "$TMP/empty.json") || return 1
  layer=$(upload_blob e2e/alpine "$TMP/payload.$$") || return 1
  subject=$(jq -r .amd64.manifest "$REFS")
  jq -n --arg at "$at" --arg e "$empty" --arg l "$layer" --argjson ls "$(stat -c %s "$TMP/payload.$$")" \
    --arg s "$subject" --argjson ss "$(stat -c %s "$TMP/layout/blobs/sha256/${subject#sha256:}")" '{
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      artifactType: $at,
      config: {mediaType: "application/vnd.oci.empty.v1+json", digest: $e, size: 2, data: "e30="},
      layers: [{mediaType: "text/plain", digest: $l, size: $ls}],
      subject: {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $s, size: $ss},
      annotations: {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    }' >"$out"
}

# put_manifest REPO FILE: PUT by digest; prints the response headers file.
put_manifest() {
  local repo=$1 f=$2 d code
  d=$(sha256_of "$f")
  code=$(c -o "$TMP/put.out" -D "$TMP/put.h" -w '%{http_code}' -X PUT \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$f" \
    "http://$REG/v2/$repo/manifests/$d")
  cat "$TMP/put.h" "$TMP/put.out"
  [ "$code" = 201 ] || die "PUT manifest $d -> $code, want 201"
}

case_referrers_push() {
  local subject
  subject=$(jq -r .amd64.manifest "$REFS")
  make_artifact application/vnd.wharf.e2e.sbom.v1+json '{"sbom":"e2e"}' "$TMP/sbom.json" || return 1
  put_manifest e2e/alpine "$TMP/sbom.json" || return 1
  [ "$(header "$TMP/put.h" OCI-Subject)" = "$subject" ] ||
    die "OCI-Subject '$(header "$TMP/put.h" OCI-Subject)' != $subject" || return 1
  [ "$(header "$TMP/put.h" Docker-Content-Digest)" = "$(sha256_of "$TMP/sbom.json")" ] ||
    die "Docker-Content-Digest '$(header "$TMP/put.h" Docker-Content-Digest)'" || return 1
  make_artifact application/vnd.wharf.e2e.signature.v1 'signed-by-e2e' "$TMP/sig.json" || return 1
  put_manifest e2e/alpine "$TMP/sig.json" || return 1
  [ "$(header "$TMP/put.h" OCI-Subject)" = "$subject" ] || die "OCI-Subject missing on second artifact"
}

case_referrers_list() {
  local subject out=$TMP/referrers.json h=$TMP/referrers.h code
  subject=$(jq -r .amd64.manifest "$REFS")
  code=$(c -D "$h" -o "$out" -w '%{http_code}' "http://$REG/v2/e2e/alpine/referrers/$subject")
  cat "$h" "$out"
  [ "$code" = 200 ] || die "GET referrers -> $code" || return 1
  [ "$(header "$h" Content-Type)" = application/vnd.oci.image.index.v1+json ] ||
    die "Content-Type '$(header "$h" Content-Type)'" || return 1
  jq -e '.schemaVersion == 2 and .mediaType == "application/vnd.oci.image.index.v1+json"' "$out" >/dev/null ||
    die "response is not an image index" || return 1
  jq -e '.manifests | length == 2' "$out" >/dev/null || die "want 2 referrers, got $(jq '.manifests|length' "$out")" || return 1
  local f
  for f in sbom sig; do
    jq -e --arg d "$(sha256_of "$TMP/$f.json")" --argjson s "$(stat -c %s "$TMP/$f.json")" \
      --arg at "$(jq -r .artifactType "$TMP/$f.json")" \
      '.manifests[] | select(.digest == $d and .size == $s and .artifactType == $at
        and .mediaType == "application/vnd.oci.image.manifest.v1+json")' "$out" >/dev/null ||
      die "referrers index lacks a correct descriptor for $f" || return 1
  done
  jq -e '.manifests[] | select(.annotations["org.opencontainers.image.created"] == "2024-01-01T00:00:00Z")' \
    "$out" >/dev/null || die "referrer descriptors do not carry the manifest annotations"
}

case_referrers_filter() {
  local subject out=$TMP/referrers-f.json h=$TMP/referrers-f.h code
  subject=$(jq -r .amd64.manifest "$REFS")
  code=$(c -D "$h" -o "$out" -w '%{http_code}' \
    "http://$REG/v2/e2e/alpine/referrers/$subject?artifactType=application/vnd.wharf.e2e.sbom.v1%2Bjson")
  cat "$h" "$out"
  [ "$code" = 200 ] || die "GET referrers?artifactType -> $code" || return 1
  [ "$(header "$h" OCI-Filters-Applied)" = artifactType ] ||
    die "OCI-Filters-Applied '$(header "$h" OCI-Filters-Applied)'" || return 1
  jq -e --arg d "$(sha256_of "$TMP/sbom.json")" '.manifests | length == 1 and .[0].digest == $d' "$out" >/dev/null ||
    die "filtered list is not exactly the sbom: $(jq -c '[.manifests[].artifactType]' "$out")"
}

case_referrers_unknown_subject() {
  local out=$TMP/referrers-none.json code
  code=$(c -o "$out" -w '%{http_code}' "http://$REG/v2/e2e/alpine/referrers/sha256:$(printf '%064d' 0)")
  cat "$out"
  [ "$code" = 200 ] || die "GET referrers of an unknown digest -> $code, want 200 with an empty index" || return 1
  jq -e '.manifests == []' "$out" >/dev/null || die "want an empty manifests list"
}

# ---------------------------------------------------------------- podman

PODMAN_OPTS=(--storage-driver vfs --root "$TMP/podman-root" --runroot "$TMP/podman-run"
  --tmpdir "$TMP/podman-tmp" --cgroup-manager cgroupfs --events-backend file)
pm() { timeout 180 podman "${PODMAN_OPTS[@]}" "$@"; }

case_podman_pull() {
  need podman || return 1
  mkdir -p "$TMP/podman-tmp"
  pm pull --tls-verify=false "$REG/e2e/alpine:1" || die "podman pull failed" || return 1
  local d
  d=$(pm image inspect --format '{{.Digest}}' "$REG/e2e/alpine:1") || die "podman image inspect failed" || return 1
  [ "$d" = "$(jq -r .amd64.manifest "$REFS")" ] || die "pulled digest '$d'"
}

case_podman_push() {
  pm tag "$REG/e2e/alpine:1" "$REG/e2e/podman-pushed:1" || die "podman tag failed" || return 1
  pm push --tls-verify=false "$REG/e2e/podman-pushed:1" || die "podman push failed"
}

case_podman_pushed_inspect() {
  local out=$TMP/podman-pushed.json cfg=$TMP/podman-pushed-config.json
  sk inspect --tls-verify=false "docker://$REG/e2e/podman-pushed:1" >"$out" || die "skopeo inspect of podman push failed" || return 1
  cat "$out"
  [ "$(jq -r .Architecture "$out")" = amd64 ] || die "architecture '$(jq -r .Architecture "$out")'" || return 1
  [ "$(jq '.Layers | length' "$out")" = 2 ] || die "want 2 layers" || return 1
  # The layer contents are the same, whatever compression podman chose.
  sk inspect --tls-verify=false --config "docker://$REG/e2e/podman-pushed:1" >"$cfg" || die "inspect --config failed" || return 1
  [ "$(jq -c .rootfs.diff_ids "$cfg")" = "$(jq -c .amd64.diff_ids "$REFS")" ] ||
    die "diff_ids $(jq -c .rootfs.diff_ids "$cfg") != $(jq -c .amd64.diff_ids "$REFS")"
}

case_podman_pull_arm64() {
  # Platform selection through the pushed index, by a second client.
  pm pull --tls-verify=false --arch arm64 --os linux "$REG/e2e/multi:1" || die "podman pull --arch arm64 failed" || return 1
  local a
  a=$(pm image inspect --format '{{.Architecture}}' "$REG/e2e/multi:1") || die "image inspect failed" || return 1
  [ "$a" = arm64 ] || die "pulled architecture '$a'"
}

# ---------------------------------------------------------------- docker

# dk, stop_dockerd and case_docker_daemon come from tests/harness.sh.

case_docker_pull() {
  dk pull "$REG/e2e/alpine:1" || die "docker pull failed" || return 1
  local rd
  rd=$(dk image inspect --format '{{join .RepoDigests " "}}' "$REG/e2e/alpine:1") || die "docker image inspect failed" || return 1
  echo "RepoDigests: $rd"
  [[ " $rd " == *"@$(jq -r .amd64.manifest "$REFS") "* ]] || die "RepoDigests '$rd' lack the pushed digest"
}

case_docker_push() {
  dk tag "$REG/e2e/alpine:1" "$REG/e2e/docker-pushed:1" || die "docker tag failed" || return 1
  dk push "$REG/e2e/docker-pushed:1" | tee "$TMP/docker-push.out" || die "docker push failed" || return 1
  grep -q 'digest: sha256:' "$TMP/docker-push.out" || die "docker push printed no digest"
}

case_docker_pushed_verify() {
  local d h=$TMP/dpush.h code out=$TMP/dpush.json
  d=$(grep -o 'digest: sha256:[0-9a-f]*' "$TMP/docker-push.out" | head -n 1 | cut -d' ' -f2)
  [ -n "$d" ] || die "no digest from docker push" || return 1
  code=$(c -D "$h" -o "$out" -w '%{http_code}' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' \
    "http://$REG/v2/e2e/docker-pushed/manifests/1")
  cat "$h" "$out"
  [ "$code" = 200 ] || die "GET pushed manifest -> $code" || return 1
  [ "$(header "$h" Docker-Content-Digest)" = "$d" ] ||
    die "Docker-Content-Digest '$(header "$h" Docker-Content-Digest)' != docker's $d" || return 1
  [ "$(sha256_of "$out")" = "$d" ] || die "manifest bytes do not hash to $d" || return 1
  [ "$(header "$h" Content-Type)" = "$(jq -r .mediaType "$out")" ] ||
    die "Content-Type '$(header "$h" Content-Type)' != mediaType $(jq -r .mediaType "$out")" || return 1
  local cfg=$TMP/dpush-config.json
  sk inspect --tls-verify=false --config "docker://$REG/e2e/docker-pushed:1" >"$cfg" || die "skopeo inspect --config failed" || return 1
  [ "$(jq -c .rootfs.diff_ids "$cfg")" = "$(jq -c .amd64.diff_ids "$REFS")" ] ||
    die "diff_ids $(jq -c .rootfs.diff_ids "$cfg") differ from the source image"
}

case_docker_push_upload() {
  # Docker mounts blobs it knows the registry has (docker-push above says
  # "Mounted from"). Under the name localhost:PORT it has no such history,
  # so this push goes through docker's own POST/PATCH/PUT blob upload.
  local port=${REG##*:} img
  img=localhost:$port/e2e/docker-upload:1
  dk tag "$REG/e2e/alpine:1" "$img" || die "docker tag failed" || return 1
  dk push "$img" | tee "$TMP/docker-upload.out" || die "docker push via localhost:$port failed" || return 1
  grep -q 'Mounted from' "$TMP/docker-upload.out" && { die "docker mounted instead of uploading"; return 1; }
  grep -q 'Pushed' "$TMP/docker-upload.out" || die "docker uploaded no layer" || return 1
  local cfg=$TMP/dupload-config.json
  sk inspect --tls-verify=false --config "docker://$REG/e2e/docker-upload:1" >"$cfg" || die "skopeo inspect --config failed" || return 1
  [ "$(jq -c .rootfs.diff_ids "$cfg")" = "$(jq -c .amd64.diff_ids "$REFS")" ] ||
    die "diff_ids $(jq -c .rootfs.diff_ids "$cfg") differ from the source image"
}

case_docker_pull_back() {
  # Drop the local copies, then pull what docker pushed, by digest.
  local d
  d=$(grep -o 'digest: sha256:[0-9a-f]*' "$TMP/docker-push.out" | head -n 1 | cut -d' ' -f2)
  dk rmi -f "$REG/e2e/docker-pushed:1" "$REG/e2e/alpine:1" >/dev/null || die "docker rmi failed" || return 1
  dk rmi -f "localhost:${REG##*:}/e2e/docker-upload:1" >/dev/null 2>&1
  dk pull "$REG/e2e/docker-pushed@$d" || die "docker pull by digest failed"
}

# ---------------------------------------------------------------- restart

case_wharf_restart() {
  stop_pid "$WHARF_PID" 15
  WHARF_PID=
  REG=
  start_wharf || return 1
  local d
  d=$(sk inspect --tls-verify=false "docker://$REG/e2e/alpine:1" | jq -r .Digest)
  [ "$d" = "$(jq -r .amd64.manifest "$REFS")" ] || die "after restart e2e/alpine:1 is '$d'" || return 1
  sk inspect --tls-verify=false --raw "docker://$REG/e2e/multi:1" | jq -e '.manifests | length == 2' >/dev/null ||
    die "after restart the index is gone" || return 1
  local n
  n=$(c "http://$REG/v2/e2e/alpine/referrers/$(jq -r .amd64.manifest "$REFS")" | jq '.manifests | length')
  [ "$n" = 2 ] || die "after restart referrers count is '$n'" || return 1
  local code
  code=$(http_code GET "http://$REG/v2/e2e/todelete/manifests/1")
  [ "$code" = 404 ] || die "deleted manifest is back after restart ($code)"
}

# ---------------------------------------------------------------- auth

# shellcheck source=auth.sh
source "$HERE/auth.sh"

# ---------------------------------------------------------------- gc

# shellcheck source=gc.sh
source "$HERE/gc.sh"
# shellcheck source=tls.sh
source "$HERE/tls.sh"
# shellcheck source=nginx.sh
source "$HERE/nginx.sh"
# shellcheck source=clients.sh
source "$HERE/clients.sh"
# shellcheck source=image.sh
source "$HERE/image.sh"

# ---------------------------------------------------------------- main

# selected GROUP: WHARF_CASES is unset or names GROUP.
selected() { [ -z "${WHARF_CASES:-}" ] || [[ ",${WHARF_CASES// /}," == *",$1,"* ]]; }

core_cases() {
  REFS=
  run_case fixture-layout case_fixture_layout
  if ! run_case wharf-start start_wharf; then
    # Nothing else can run; say so per group rather than as one silent skip.
    fail_case e2e-remaining "wharf did not start; see $LOGS/wharf.out"
    DONE=1
    summary
    exit 1
  fi
  run_case api-base case_api_base

  if [ -n "$REFS" ] && [ -s "$REFS" ]; then
    if run_case skopeo-push case_skopeo_push; then
      run_case skopeo-inspect case_skopeo_inspect
      run_case skopeo-inspect-raw case_skopeo_inspect_raw
      run_case skopeo-roundtrip case_skopeo_roundtrip
      run_case skopeo-registry-copy case_skopeo_registry_copy
      run_case skopeo-list-tags case_skopeo_list_tags
      run_case skopeo-delete case_skopeo_delete
      run_case referrers-push case_referrers_push &&
        run_case referrers-list case_referrers_list &&
        run_case referrers-filter case_referrers_filter
      run_case referrers-unknown-subject case_referrers_unknown_subject
    else
      fail_case skopeo-dependents "skipped: the image could not be pushed"
    fi
    run_case skopeo-multiarch-push case_skopeo_multiarch_push &&
      run_case skopeo-multiarch-index case_skopeo_multiarch_index
    run_case umoci-image case_umoci_image
    run_case api-catalog case_api_catalog

    if run_case podman-pull case_podman_pull; then
      run_case podman-push case_podman_push &&
        run_case podman-pushed-inspect case_podman_pushed_inspect
      run_case podman-pull-arm64 case_podman_pull_arm64
    fi

    AUTH_UP=0
    if run_case auth-start case_auth_start && run_case auth-admin case_auth_admin; then
      AUTH_UP=1
      run_case auth-skopeo-creds case_auth_skopeo_creds
      run_case auth-podman-login case_auth_podman_login
    fi

    if [ "${WHARF_E2E_SKIP_DOCKER:-0}" = 1 ]; then
      skip_note docker "WHARF_E2E_SKIP_DOCKER=1"
    elif run_case docker-daemon case_docker_daemon; then
      if run_case docker-pull case_docker_pull; then
        run_case docker-push case_docker_push &&
          run_case docker-pushed-verify case_docker_pushed_verify
        run_case docker-push-upload case_docker_push_upload
        [ "$AUTH_UP" = 1 ] && run_case auth-docker-login case_auth_docker_login
        [ "$AUTH_UP" = 1 ] && run_case auth-docker-login-under-attack case_auth_docker_login_under_attack
        [ -s "$TMP/docker-push.out" ] && run_case docker-pull-back case_docker_pull_back
      fi
      stop_dockerd
    fi

    if [ "$AUTH_UP" = 1 ]; then
      run_case auth-robot case_auth_robot
      run_case auth-robot-revoked case_auth_robot_revoked
      run_case auth-robot-expired case_auth_robot_expired
      run_case auth-quota case_auth_quota
      run_case auth-no-secrets-logged case_auth_no_secrets_logged
    fi
    stop_secure_wharf

    run_case wharf-restart case_wharf_restart
  else
    fail_case e2e-remaining "no test images; see $LOGS/fixture-layout.log"
  fi
  stop_pid "$WHARF_PID" 10
  WHARF_PID=
}

echo "e2e run: temp dir $TMP"
selected core && core_cases
selected tls && tls_cases
for gc_case in gc-race-single-node gc-crash-mid-pass gc-real-clients; do
  selected $gc_case && run_case $gc_case "case_${gc_case//-/_}"
  stop_pid "$GC_PID" 10
  GC_PID=
done
selected nginx && nginx_cases
selected clients && clients_cases
selected image && image_cases

DONE=1
summary
[ "$FAILED" -eq 0 ]
