# End-to-end cases for more real clients, sourced by tests/e2e/run.sh
# (group `clients`; it provides sk, c, die, need, header, sha256_of,
# run_case, start_node, case_tls_start and $TMP).
#
# - containerd: a private daemon of the run's own (Debian's containerd; own
#   root, state and socket under $TMP, the CRI plugin off, content not
#   shared between namespaces, so every pull downloads). `ctr` imports the
#   test layout and pushes an image and a multi-architecture index, pulls
#   by tag, by digest, the whole index (--all-platforms) and one platform,
#   and unpacks into a snapshotter (overlayfs where it works, else native).
#   Every blob containerd holds is compared with the layout's bytes.
# - buildah (Debian, vfs storage): builds an image from scratch and one on
#   top of a pulled image, pushes both, pulls back and reads the file.
# - ORAS: the ORAS Python SDK (PyPI `oras`, pinned, in the virtual
#   environment scripts/install-deps.sh makes) pushes two artifacts whose
#   `subject` is an image manifest, one with the SDK's push() and one with
#   its lower-level upload calls and an explicit artifactType; they are
#   listed through the referrers API, with and without the artifactType
#   filter, and pulled back byte-identical (tests/e2e/oras_client.py).
# - Each of them again over TLS against a node serving a certificate of
#   the run's own CA: ctr with a hosts.toml (--hosts-dir) naming the CA or,
#   with --tlscacert, only the https server, buildah with --cert-dir, ORAS
#   with the CA file. Each must also refuse the registry without the CA.

CL_PID=    # the plain-HTTP node of this group
CL_REG=
CTRD_PID=  # the private containerd
CTRD_DIR=
CTRD_SOCK=
CTR_SNAP=overlayfs
ORAS_PY=${WHARF_TOOLS_DIR:-$HOME/.local/share/wharf-tools}/oras/bin/python
SEED_DIGEST= # the layout's amd64 manifest, pushed by skopeo as clients/seed:1
BH_DIGEST=   # what buildah pushed

stop_clients_group() {
  stop_pid "$CTRD_PID" 15
  CTRD_PID=
  stop_pid "$CL_PID" 10
  CL_PID=
}

ct() { timeout 120 ctr --address "$CTRD_SOCK" "$@"; }

BUILDAH_OPTS=(--storage-driver vfs --root "$TMP/buildah-root" --runroot "$TMP/buildah-run")
bh() {
  mkdir -p "$TMP/buildah-tmp"
  TMPDIR=$TMP/buildah-tmp BUILDAH_ISOLATION=chroot timeout 180 buildah "${BUILDAH_OPTS[@]}" "$@"
}

oras_py() { timeout 120 "$ORAS_PY" "$HERE/oras_client.py" "$@"; }

# layout_blob DIGEST: the layout's file for DIGEST.
layout_blob() { echo "$TMP/layout/blobs/sha256/${1#sha256:}"; }

# served_same SCHEME REG REPO DIGEST KIND [curl args]: the registry serves
# the layout's exact bytes for DIGEST (KIND: blobs or manifests).
served_same() {
  local scheme=$1 reg=$2 repo=$3 d=$4 kind=$5 out=$TMP/served.bin
  shift 5
  c "$@" -o "$out" -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' \
    "$scheme://$reg/v2/$repo/$kind/$d" || die "GET $repo/$kind/$d failed" || return 1
  cmp -s "$out" "$(layout_blob "$d")" || die "$repo/$kind/$d: served bytes differ from the layout's"
}

# ctr_same NS DIGEST: containerd's copy of DIGEST in namespace NS is the
# layout's blob, byte for byte.
ctr_same() {
  local ns=$1 d=$2
  ct -n "$ns" content get "$d" >"$TMP/ctr-blob" || die "containerd ($ns) has no $d" || return 1
  cmp -s "$TMP/ctr-blob" "$(layout_blob "$d")" || die "containerd's $d ($ns) differs from the layout's blob"
}

# ctr_image_digest NS REF: the digest containerd's image REF points at.
ctr_image_digest() {
  ct -n "$1" images ls "name==$2" | awk 'NR == 2 { print $3 }'
}

# chain_id DIFF_ID...: the snapshot key of the unpacked layers (image-spec
# ChainID: H(chain(n-1) + " " + diff_id(n))).
chain_id() {
  local id=$1 d
  shift
  for d in "$@"; do id="sha256:$(printf '%s %s' "$id" "$d" | sha256sum | cut -d' ' -f1)"; done
  echo "$id"
}

# ctr_image_whole NS ARCH: the layout's ARCH image is in NS: manifest,
# config and layers byte-identical, unpacked into the snapshotter.
ctr_image_whole() {
  local ns=$1 arch=$2 d
  for d in $(jq -r --arg a "$arch" '.[$a].manifest, .[$a].config, .[$a].layers[]' "$REFS"); do
    ctr_same "$ns" "$d" || return 1
  done
  local chain
  # shellcheck disable=SC2046
  chain=$(chain_id $(jq -r --arg a "$arch" '.[$a].diff_ids[]' "$REFS"))
  ct -n "$ns" snapshots --snapshotter "$CTR_SNAP" ls >"$TMP/ctr-snapshots" || die "ctr snapshots ls failed" || return 1
  cat "$TMP/ctr-snapshots"
  grep -q "^$chain " "$TMP/ctr-snapshots" || die "no unpacked snapshot $chain for $arch in $ns ($CTR_SNAP)"
}

# ---------------------------------------------------------------- setup

case_clients_wharf_start() {
  local rc=0
  start_node clients || rc=1
  CL_PID=$NODE_PID
  CL_REG=$NODE_REG
  return $rc
}

# What the other clients pull: the layout's image and index, pushed by
# skopeo (already shown byte-identical by the core group).
case_clients_seed() {
  need skopeo || return 1
  sk copy --dest-tls-verify=false "oci:$TMP/layout:1" "docker://$CL_REG/clients/seed:1" || die "skopeo push failed" || return 1
  sk copy --all --dest-tls-verify=false "oci:$TMP/layout:multi" "docker://$CL_REG/clients/seed-multi:1" ||
    die "skopeo push of the index failed" || return 1
  SEED_DIGEST=$(jq -r .amd64.manifest "$REFS")
  served_same http "$CL_REG" clients/seed "$SEED_DIGEST" manifests
}

# ---------------------------------------------------------------- containerd

case_containerd_start() {
  need containerd ctr || return 1
  CTRD_DIR=$TMP/containerd
  CTRD_SOCK=$CTRD_DIR/containerd.sock
  mkdir -p "$CTRD_DIR"
  cat >"$CTRD_DIR/config.toml" <<EOF
# A containerd of the e2e run's own: nothing under /var/lib, /run or /opt.
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
# Each namespace downloads its own copy: a pull proves the registry served it.
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
EOF
  containerd --config "$CTRD_DIR/config.toml" >>"$LOGS/containerd.out" 2>&1 3>&- 4>&- &
  CTRD_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    if [ -S "$CTRD_SOCK" ] && ct version >/dev/null 2>&1; then
      break
    fi
    kill -0 "$CTRD_PID" 2>/dev/null || {
      CTRD_PID=
      tail -n 20 "$LOGS/containerd.out"
      die "containerd exited: $(grep -iE 'level=(fatal|error)' "$LOGS/containerd.out" | tail -n 1 | cut -c1-200)"
      return 1
    }
    sleep 0.1
  done
  ct version || die "containerd did not answer on $CTRD_SOCK within 30s" || return 1
  ct plugins ls | grep snapshotter
  # overlayfs is what nodes use; the plugin reports whether this kernel
  # and filesystem can do it. Otherwise the native (copying) snapshotter.
  if [ -n "$(ct plugins ls | awk '$2 == "overlayfs" && $NF == "ok"')" ]; then
    CTR_SNAP=overlayfs
  else
    CTR_SNAP=native
    echo "NOTE: the overlayfs snapshotter is not available here; unpacking with native"
  fi
  echo "containerd pid $CTRD_PID on $CTRD_SOCK, snapshotter $CTR_SNAP"
}

# The layout goes into containerd as an OCI archive (ctr import), with the
# index and both platforms, and is pushed from there: an image by tag and
# the multi-architecture index, each byte-identical on the registry.
case_ctr_push() {
  tar -C "$TMP/layout" -cf "$TMP/layout.tar" oci-layout index.json blobs || die "tar of the layout failed" || return 1
  ct -n push images import --all-platforms --no-unpack --base-name clients/imported "$TMP/layout.tar" ||
    die "ctr images import failed" || return 1
  ct -n push images ls
  ct -n push images push --plain-http "$CL_REG/clients/ctr:1" clients/imported:1 || die "ctr push of the image failed" || return 1
  ct -n push images push --plain-http "$CL_REG/clients/ctr-multi:1" clients/imported:multi ||
    die "ctr push of the index failed" || return 1
  local d arch
  c -o "$TMP/ctr-pushed.json" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$CL_REG/v2/clients/ctr/manifests/1" || die "GET clients/ctr:1 failed" || return 1
  [ "$(sha256_of "$TMP/ctr-pushed.json")" = "$SEED_DIGEST" ] ||
    die "ctr pushed manifest $(sha256_of "$TMP/ctr-pushed.json"), the layout's is $SEED_DIGEST" || return 1
  for d in $(jq -r '.amd64.manifest' "$REFS"); do served_same http "$CL_REG" clients/ctr "$d" manifests || return 1; done
  for d in $(jq -r '.amd64.config, .amd64.layers[]' "$REFS"); do served_same http "$CL_REG" clients/ctr "$d" blobs || return 1; done
  c -o "$TMP/ctr-pushed-index.json" -H 'Accept: application/vnd.oci.image.index.v1+json' \
    "http://$CL_REG/v2/clients/ctr-multi/manifests/1" || die "GET clients/ctr-multi:1 failed" || return 1
  [ "$(sha256_of "$TMP/ctr-pushed-index.json")" = "$(jq -r .index "$REFS")" ] ||
    die "ctr pushed index $(sha256_of "$TMP/ctr-pushed-index.json"), the layout's is $(jq -r .index "$REFS")" || return 1
  for arch in amd64 arm64; do
    for d in $(jq -r --arg a $arch '.[$a].manifest' "$REFS"); do
      served_same http "$CL_REG" clients/ctr-multi "$d" manifests || return 1
    done
    for d in $(jq -r --arg a $arch '.[$a].config, .[$a].layers[]' "$REFS"); do
      served_same http "$CL_REG" clients/ctr-multi "$d" blobs || return 1
    done
  done
  # A second client reads containerd's push.
  [ "$(sk inspect --tls-verify=false "docker://$CL_REG/clients/ctr:1" | jq -r .Digest)" = "$SEED_DIGEST" ] ||
    die "skopeo does not read containerd's push as $SEED_DIGEST"
}

# Pull by tag what skopeo pushed: downloaded into a namespace of its own,
# byte-identical, unpacked.
case_ctr_pull_tag() {
  ct -n pull-tag images pull --plain-http --snapshotter "$CTR_SNAP" "$CL_REG/clients/seed:1" ||
    die "ctr pull by tag failed" || return 1
  local got
  got=$(ctr_image_digest pull-tag "$CL_REG/clients/seed:1")
  [ "$got" = "$SEED_DIGEST" ] || die "ctr pulled $got by tag, want $SEED_DIGEST" || return 1
  ctr_image_whole pull-tag amd64
}

case_ctr_pull_digest() {
  local ref="$CL_REG/clients/seed@$SEED_DIGEST" got
  ct -n pull-digest images pull --plain-http --snapshotter "$CTR_SNAP" "$ref" || die "ctr pull by digest failed" || return 1
  got=$(ctr_image_digest pull-digest "$ref")
  [ "$got" = "$SEED_DIGEST" ] || die "ctr pulled $got by digest, want $SEED_DIGEST" || return 1
  ctr_image_whole pull-digest amd64
}

# The whole index: both platforms' manifests, configs and layers.
case_ctr_pull_index() {
  local ref="$CL_REG/clients/seed-multi:1" want got arch d
  want=$(jq -r .index "$REFS")
  ct -n pull-index images pull --plain-http --all-platforms --snapshotter "$CTR_SNAP" "$ref" ||
    die "ctr pull --all-platforms failed" || return 1
  got=$(ctr_image_digest pull-index "$ref")
  [ "$got" = "$want" ] || die "ctr pulled $got for the index, want $want" || return 1
  ctr_same pull-index "$want" || return 1
  for arch in amd64 arm64; do
    for d in $(jq -r --arg a "$arch" '.[$a].manifest, .[$a].config, .[$a].layers[]' "$REFS"); do
      ctr_same pull-index "$d" || return 1
    done
  done
}

# One platform of the index, by the index's digest: that platform's
# content and none of the other's.
case_ctr_pull_platform() {
  local idx ref d
  idx=$(jq -r .index "$REFS")
  ref="$CL_REG/clients/seed-multi@$idx"
  ct -n pull-arm64 images pull --plain-http --platform linux/arm64 --snapshotter "$CTR_SNAP" "$ref" ||
    die "ctr pull --platform linux/arm64 failed" || return 1
  ctr_image_whole pull-arm64 arm64 || return 1
  for d in $(jq -r '.amd64.layers[]' "$REFS"); do
    if ct -n pull-arm64 content get "$d" >/dev/null 2>&1; then
      die "an amd64 layer ($d) was fetched for --platform linux/arm64"
      return 1
    fi
  done
}

# ---------------------------------------------------------------- containerd over TLS

# containerd 1.6 speaks plain HTTP to a loopback registry unless a
# hosts.toml says `server = "https://..."` (a node's registry is not on
# loopback, and https is its default there). So over TLS ctr always gets a
# --hosts-dir, and trusts the test CA two ways: the CA named in hosts.toml
# (`ca = ...`, the form containerd's own configuration, config_path, uses on
# a node), and a hosts.toml that only names the https server, with the CA
# from --tlscacert on the command line.
write_ctr_hosts() {
  mkdir -p "$TMP/ctr-hosts-ca/$TREG" "$TMP/ctr-hosts-https/$TREG"
  cat >"$TMP/ctr-hosts-ca/$TREG/hosts.toml" <<EOF
server = "https://$TREG"

[host."https://$TREG"]
  capabilities = ["pull", "resolve", "push"]
  ca = "$TLS_DIR/ca.crt"
EOF
  # (containerd 1.6 refuses a hosts.toml without a [host] table.)
  printf 'server = "https://%s"\n\n[host."https://%s"]\n  capabilities = ["pull", "resolve", "push"]\n' \
    "$TREG" "$TREG" >"$TMP/ctr-hosts-https/$TREG/hosts.toml"
}

case_ctr_tls_push() {
  write_ctr_hosts
  ct -n push images push --hosts-dir "$TMP/ctr-hosts-https" --tlscacert "$TLS_DIR/ca.crt" \
    "$TREG/clients/ctr-tls:1" clients/imported:1 || die "ctr push over TLS (--tlscacert) failed" || return 1
  ct -n push images push --hosts-dir "$TMP/ctr-hosts-ca" "$TREG/clients/ctr-tls-multi:1" clients/imported:multi ||
    die "ctr push of the index over TLS (hosts.toml ca) failed" || return 1
  local d arch
  served_same https "$TREG" clients/ctr-tls "$SEED_DIGEST" manifests --cacert "$TLS_DIR/ca.crt" || return 1
  for d in $(jq -r '.amd64.config, .amd64.layers[]' "$REFS"); do
    served_same https "$TREG" clients/ctr-tls "$d" blobs --cacert "$TLS_DIR/ca.crt" || return 1
  done
  served_same https "$TREG" clients/ctr-tls-multi "$(jq -r .index "$REFS")" manifests --cacert "$TLS_DIR/ca.crt" || return 1
  for arch in amd64 arm64; do
    for d in $(jq -r --arg a $arch '.[$a].config, .[$a].layers[]' "$REFS"); do
      served_same https "$TREG" clients/ctr-tls-multi "$d" blobs --cacert "$TLS_DIR/ca.crt" || return 1
    done
  done
  c --cacert "$TLS_DIR/ca.crt" -o "$TMP/ctr-tls-tag.json" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "https://$TREG/v2/clients/ctr-tls/manifests/1" || die "GET clients/ctr-tls:1 failed" || return 1
  [ "$(sha256_of "$TMP/ctr-tls-tag.json")" = "$SEED_DIGEST" ] || die "the tag ctr pushed over TLS is $(sha256_of "$TMP/ctr-tls-tag.json")"
}

case_ctr_tls_pull() {
  local got ref idx
  write_ctr_hosts
  # Without the CA, containerd refuses the registry.
  if ct -n tls-none images pull --hosts-dir "$TMP/ctr-hosts-https" --snapshotter "$CTR_SNAP" \
    "$TREG/clients/ctr-tls:1" >"$TMP/ctr-tls-noca.out" 2>&1; then
    die "ctr pulled over TLS without the CA"
    return 1
  fi
  cat "$TMP/ctr-tls-noca.out"
  grep -qiE 'x509|certificate' "$TMP/ctr-tls-noca.out" || die "ctr failed without the CA, but not on the certificate" || return 1
  ct -n tls-tag images pull --hosts-dir "$TMP/ctr-hosts-https" --tlscacert "$TLS_DIR/ca.crt" \
    --snapshotter "$CTR_SNAP" "$TREG/clients/ctr-tls:1" || die "ctr pull by tag over TLS (--tlscacert) failed" || return 1
  got=$(ctr_image_digest tls-tag "$TREG/clients/ctr-tls:1")
  [ "$got" = "$SEED_DIGEST" ] || die "ctr pulled $got by tag over TLS" || return 1
  ctr_image_whole tls-tag amd64 || return 1
  ref="$TREG/clients/ctr-tls@$SEED_DIGEST"
  ct -n tls-digest images pull --hosts-dir "$TMP/ctr-hosts-ca" --snapshotter "$CTR_SNAP" "$ref" ||
    die "ctr pull by digest over TLS (hosts.toml ca) failed" || return 1
  got=$(ctr_image_digest tls-digest "$ref")
  [ "$got" = "$SEED_DIGEST" ] || die "ctr pulled $got by digest over TLS" || return 1
  ctr_image_whole tls-digest amd64 || return 1
  idx=$(jq -r .index "$REFS")
  ct -n tls-index images pull --hosts-dir "$TMP/ctr-hosts-ca" --all-platforms --snapshotter "$CTR_SNAP" \
    "$TREG/clients/ctr-tls-multi:1" || die "ctr pull --all-platforms over TLS failed" || return 1
  got=$(ctr_image_digest tls-index "$TREG/clients/ctr-tls-multi:1")
  [ "$got" = "$idx" ] || die "ctr pulled $got for the index over TLS, want $idx" || return 1
  local arch d
  for arch in amd64 arm64; do
    for d in $(jq -r --arg a "$arch" '.[$a].manifest, .[$a].config, .[$a].layers[]' "$REFS"); do
      ctr_same tls-index "$d" || return 1
    done
  done
}

# ---------------------------------------------------------------- buildah

# From scratch: a file of text and 256 KiB of random bytes, a label and an
# entrypoint, committed as an OCI image in buildah's own (vfs) storage.
case_buildah_build() {
  need buildah || return 1
  mkdir -p "$TMP/buildah-src"
  echo "hello from buildah, wharf e2e $$" >"$TMP/buildah-src/hello.txt"
  head -c 262144 /dev/urandom >"$TMP/buildah-src/random.bin"
  local ctr
  ctr=$(bh from --signature-policy "$POLICY" scratch) || die "buildah from scratch failed" || return 1
  bh copy "$ctr" "$TMP/buildah-src/hello.txt" "$TMP/buildah-src/random.bin" /data/ || die "buildah copy failed" || return 1
  bh config --label org.wharf.e2e=buildah --entrypoint '["/data/hello.txt"]' --os linux --arch amd64 "$ctr" ||
    die "buildah config failed" || return 1
  bh commit --signature-policy "$POLICY" --format oci --rm "$ctr" localhost/clients/buildah:1 ||
    die "buildah commit failed" || return 1
  bh images
}

# buildah_check_pushed SCHEME REG REPO DIGEST [curl args]: the manifest
# served hashes to DIGEST, every blob to its own digest, and the layer
# holds the files built in.
buildah_check_pushed() {
  local scheme=$1 reg=$2 repo=$3 d=$4 m=$TMP/bh-manifest.json b
  shift 4
  c "$@" -o "$m" -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$scheme://$reg/v2/$repo/manifests/1" ||
    die "GET $repo:1 failed" || return 1
  [ "$(sha256_of "$m")" = "$d" ] || die "$repo:1 is $(sha256_of "$m"), buildah pushed $d" || return 1
  for b in $(jq -r '.config.digest, .layers[].digest' "$m"); do
    c "$@" -o "$TMP/bh-blob" "$scheme://$reg/v2/$repo/blobs/$b" || die "GET blob $b failed" || return 1
    [ "$(sha256_of "$TMP/bh-blob")" = "$b" ] || die "blob $b served with other bytes" || return 1
  done
  c "$@" -o "$TMP/bh-layer" "$scheme://$reg/v2/$repo/blobs/$(jq -r '.layers[-1].digest' "$m")" || return 1
  tar -xzOf "$TMP/bh-layer" data/hello.txt | cmp -s - "$TMP/buildah-src/hello.txt" ||
    die "the pushed layer's data/hello.txt differs" || return 1
  tar -xzOf "$TMP/bh-layer" data/random.bin | cmp -s - "$TMP/buildah-src/random.bin" ||
    die "the pushed layer's data/random.bin differs"
}

case_buildah_push() {
  bh push --signature-policy "$POLICY" --tls-verify=false --digestfile "$TMP/bh.digest" \
    localhost/clients/buildah:1 "docker://$CL_REG/clients/buildah:1" || die "buildah push failed" || return 1
  BH_DIGEST=$(cat "$TMP/bh.digest")
  echo "buildah pushed $BH_DIGEST"
  buildah_check_pushed http "$CL_REG" clients/buildah "$BH_DIGEST"
}

# Drop the local image, pull it back, read the file from its root
# filesystem.
case_buildah_pull() {
  bh rmi -f localhost/clients/buildah:1 || die "buildah rmi failed" || return 1
  bh pull --signature-policy "$POLICY" --tls-verify=false "$CL_REG/clients/buildah:1" || die "buildah pull failed" || return 1
  local d ctr mnt
  d=$(bh images --format '{{.Digest}}' "$CL_REG/clients/buildah:1") || die "buildah images failed" || return 1
  [ "$d" = "$BH_DIGEST" ] || die "buildah pulled $d, pushed $BH_DIGEST" || return 1
  ctr=$(bh from --signature-policy "$POLICY" --pull=never "$CL_REG/clients/buildah:1") || die "buildah from the pulled image failed" || return 1
  mnt=$(bh mount "$ctr") || die "buildah mount failed" || return 1
  cmp -s "$mnt/data/hello.txt" "$TMP/buildah-src/hello.txt" || die "the pulled image's /data/hello.txt differs" || return 1
  cmp -s "$mnt/data/random.bin" "$TMP/buildah-src/random.bin" || die "the pulled image's /data/random.bin differs" || return 1
  bh umount "$ctr" >/dev/null
  bh rm "$ctr" >/dev/null
}

# On top of an image pulled from Wharf (skopeo's push): the base layers
# reach the registry again unchanged, the new one after them.
case_buildah_from_pulled() {
  local ctr m=$TMP/bh-derived.json cfg=$TMP/bh-derived-config.json d
  ctr=$(bh from --signature-policy "$POLICY" --tls-verify=false "$CL_REG/clients/seed:1") ||
    die "buildah from $CL_REG/clients/seed:1 failed" || return 1
  bh copy "$ctr" "$TMP/buildah-src/hello.txt" /data/ || die "buildah copy failed" || return 1
  bh commit --signature-policy "$POLICY" --format oci --rm "$ctr" localhost/clients/buildah-derived:1 ||
    die "buildah commit failed" || return 1
  bh push --signature-policy "$POLICY" --tls-verify=false --digestfile "$TMP/bh-derived.digest" \
    localhost/clients/buildah-derived:1 "docker://$CL_REG/clients/buildah-derived:1" || die "buildah push failed" || return 1
  c -o "$m" -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$CL_REG/v2/clients/buildah-derived/manifests/1" ||
    die "GET the derived manifest failed" || return 1
  cat "$m"
  [ "$(sha256_of "$m")" = "$(cat "$TMP/bh-derived.digest")" ] || die "the derived manifest's digest differs from buildah's" || return 1
  c -o "$cfg" "http://$CL_REG/v2/clients/buildah-derived/blobs/$(jq -r .config.digest "$m")" || return 1
  [ "$(jq -c '.rootfs.diff_ids[:2]' "$cfg")" = "$(jq -c .amd64.diff_ids "$REFS")" ] ||
    die "the derived image's base diff_ids are $(jq -c '.rootfs.diff_ids[:2]' "$cfg")" || return 1
  [ "$(jq '.layers | length' "$m")" = 3 ] || die "want 3 layers in the derived image" || return 1
  for d in $(jq -r '.layers[].digest' "$m"); do
    c -o "$TMP/bh-blob" "http://$CL_REG/v2/clients/buildah-derived/blobs/$d" || die "GET $d failed" || return 1
    [ "$(sha256_of "$TMP/bh-blob")" = "$d" ] || die "blob $d served with other bytes" || return 1
  done
}

case_buildah_tls() {
  # localhost/clients/buildah:1 was pulled back as $CL_REG/clients/buildah:1.
  if bh push --signature-policy "$POLICY" "$CL_REG/clients/buildah:1" "docker://$TREG/clients/buildah-tls:1" \
    >"$TMP/bh-tls-noca.out" 2>&1; then
    die "buildah pushed over TLS without the CA"
    return 1
  fi
  cat "$TMP/bh-tls-noca.out"
  grep -qiE 'x509|certificate' "$TMP/bh-tls-noca.out" || die "buildah failed without the CA, but not on the certificate" || return 1
  bh push --signature-policy "$POLICY" --cert-dir "$TLS_DIR/certs" --digestfile "$TMP/bh-tls.digest" \
    "$CL_REG/clients/buildah:1" "docker://$TREG/clients/buildah-tls:1" || die "buildah push over TLS failed" || return 1
  local d got
  d=$(cat "$TMP/bh-tls.digest")
  buildah_check_pushed https "$TREG" clients/buildah-tls "$d" --cacert "$TLS_DIR/ca.crt" || return 1
  bh rmi -f "$CL_REG/clients/buildah:1" >/dev/null 2>&1
  bh pull --signature-policy "$POLICY" --cert-dir "$TLS_DIR/certs" "$TREG/clients/buildah-tls:1" ||
    die "buildah pull over TLS failed" || return 1
  got=$(bh images --format '{{.Digest}}' "$TREG/clients/buildah-tls:1")
  [ "$got" = "$d" ] || die "buildah pulled $got over TLS, pushed $d"
}

# ---------------------------------------------------------------- ORAS

SBOM_AT=application/vnd.wharf.e2e.sbom.v1+json
SIG_AT=application/vnd.wharf.e2e.signature.v1

# oras_push_both HOW... : the two artifacts on clients/seed, subject
# clients/seed:1; their digests in $TMP/oras-{sbom,sig}.json.
oras_push_both() {
  local out
  mkdir -p "$TMP/oras-src"
  printf '{"sbom":"wharf e2e","packages":[]}\n' >"$TMP/oras-src/sbom.json"
  printf 'signed by the wharf e2e run %s\n' "$$" >"$TMP/oras-src/signature.txt"
  for out in sbom sig; do rm -f "$TMP/oras-$out.json"; done
  oras_py "$@" push --repo clients/seed --tag sbom --subject 1 --file "$TMP/oras-src/sbom.json" \
    --media-type application/json --artifact-type "$SBOM_AT" --mode sdk >"$TMP/oras-sbom.json" ||
    die "ORAS push() of the sbom failed" || return 1
  oras_py "$@" push --repo clients/seed --tag sig --subject 1 --file "$TMP/oras-src/signature.txt" \
    --media-type text/plain --artifact-type "$SIG_AT" --mode manifest >"$TMP/oras-sig.json" ||
    die "ORAS upload_manifest() of the signature failed" || return 1
  cat "$TMP/oras-sbom.json" "$TMP/oras-sig.json"
  for out in sbom sig; do
    jq -e --arg s "$SEED_DIGEST" '.status == 201 and .oci_subject == $s and .subject.digest == $s' \
      "$TMP/oras-$out.json" >/dev/null || die "$out: not 201 with OCI-Subject $SEED_DIGEST" || return 1
  done
  jq -e '.digest == .sent_digest' "$TMP/oras-sig.json" >/dev/null ||
    die "the registry's digest of the signature manifest is not that of the bytes sent"
}

# oras_check_listed HOW...: both artifacts in the referrers index, with
# their type, size and annotations; the filter leaves exactly one.
oras_check_listed() {
  local all=$TMP/oras-referrers.json one=$TMP/oras-referrers-f.json
  oras_py "$@" referrers --repo clients/seed --digest "$SEED_DIGEST" >"$all" || die "referrers failed" || return 1
  cat "$all"
  jq -e '.status == 200 and .content_type == "application/vnd.oci.image.index.v1+json"
    and .index.mediaType == "application/vnd.oci.image.index.v1+json" and (.index.manifests | length) == 2' \
    "$all" >/dev/null || die "the referrers index does not list exactly the 2 artifacts" || return 1
  jq -e --arg d "$(jq -r .digest "$TMP/oras-sbom.json")" --arg at "$SBOM_AT" \
    '.index.manifests[] | select(.digest == $d and .artifactType == $at
      and .mediaType == "application/vnd.oci.image.manifest.v1+json"
      and .annotations["org.opencontainers.image.created"] == "2024-01-01T00:00:00Z")' "$all" >/dev/null ||
    die "no descriptor of the sbom (artifactType from its config) in the referrers index" || return 1
  jq -e --arg d "$(jq -r .digest "$TMP/oras-sig.json")" --argjson s "$(jq .sent_size "$TMP/oras-sig.json")" \
    --arg at "$SIG_AT" '.index.manifests[] | select(.digest == $d and .size == $s and .artifactType == $at)' \
    "$all" >/dev/null || die "no descriptor of the signature (explicit artifactType) in the referrers index" || return 1
  oras_py "$@" referrers --repo clients/seed --digest "$SEED_DIGEST" --artifact-type "$SIG_AT" >"$one" ||
    die "referrers with the filter failed" || return 1
  cat "$one"
  jq -e --arg d "$(jq -r .digest "$TMP/oras-sig.json")" \
    '.filters_applied == "artifactType" and (.index.manifests | length) == 1 and .index.manifests[0].digest == $d' \
    "$one" >/dev/null || die "the artifactType filter did not leave exactly the signature"
}

# oras_check_pulled HOW...: both artifacts pulled back by digest, the same
# bytes as pushed.
oras_check_pulled() {
  local what f
  rm -rf "$TMP/oras-pulled"
  for what in sbom:sbom.json sig:signature.txt; do
    f=${what#*:}
    oras_py "$@" pull --repo clients/seed --digest "$(jq -r .digest "$TMP/oras-${what%%:*}.json")" \
      --out "$TMP/oras-pulled/${what%%:*}" || die "ORAS pull of the ${what%%:*} failed" || return 1
    cmp -s "$TMP/oras-pulled/${what%%:*}/$f" "$TMP/oras-src/$f" || die "the pulled $f differs from the pushed one" || return 1
  done
}

case_oras_push() {
  [ -x "$ORAS_PY" ] || die "no ORAS SDK at $ORAS_PY (run scripts/install-deps.sh)" || return 1
  "$ORAS_PY" -c 'import importlib.metadata as m; print("oras", m.version("oras"))' || die "the oras package does not load" || return 1
  oras_push_both --plain-http --registry "$CL_REG"
}
case_oras_referrers() { oras_check_listed --plain-http --registry "$CL_REG"; }
case_oras_pull() { oras_check_pulled --plain-http --registry "$CL_REG"; }

case_oras_tls() {
  [ -x "$ORAS_PY" ] || die "no ORAS SDK at $ORAS_PY (run scripts/install-deps.sh)" || return 1
  # Verification on, no CA: refused.
  if timeout 60 "$ORAS_PY" - "$TREG" >"$TMP/oras-tls-noca.out" 2>&1 <<'EOF'; then
import sys, oras.provider
r = oras.provider.Registry(hostname=sys.argv[1], tls_verify=True)
r.session.trust_env = False
r.do_request(f"https://{sys.argv[1]}/v2/", "GET")
EOF
    die "ORAS reached the TLS registry without the CA"
    return 1
  fi
  tail -n 2 "$TMP/oras-tls-noca.out"
  grep -qiE 'certificate|SSL' "$TMP/oras-tls-noca.out" || die "ORAS failed without the CA, but not on the certificate" || return 1
  oras_push_both --ca "$TLS_DIR/ca.crt" --registry "$TREG" || return 1
  oras_check_listed --ca "$TLS_DIR/ca.crt" --registry "$TREG" || return 1
  oras_check_pulled --ca "$TLS_DIR/ca.crt" --registry "$TREG"
}

# ---------------------------------------------------------------- TLS seed

case_clients_tls_seed() {
  sk copy --dest-cert-dir "$TLS_DIR/certs" "oci:$TMP/layout:1" "docker://$TREG/clients/seed:1" ||
    die "skopeo push over TLS failed" || return 1
  served_same https "$TREG" clients/seed "$SEED_DIGEST" manifests --cacert "$TLS_DIR/ca.crt"
}

# ---------------------------------------------------------------- group

clients_cases() {
  if [ -z "$REFS" ] || [ ! -s "$REFS" ]; then
    run_case fixture-layout case_fixture_layout || return
  fi
  SEED_DIGEST=$(jq -r .amd64.manifest "$REFS")
  if ! run_case clients-wharf-start case_clients_wharf_start || ! run_case clients-seed case_clients_seed; then
    fail_case clients-remaining "no node or no seed image; see $LOGS/clients-wharf-start.log"
    stop_clients_group
    return
  fi

  local ctrd=0 bh_ok=0 oras_ok=0
  if run_case containerd-start case_containerd_start; then
    ctrd=1
    run_case ctr-push case_ctr_push
    run_case ctr-pull-tag case_ctr_pull_tag
    run_case ctr-pull-digest case_ctr_pull_digest
    run_case ctr-pull-index case_ctr_pull_index
    run_case ctr-pull-platform case_ctr_pull_platform
  fi

  if run_case buildah-build case_buildah_build && run_case buildah-push case_buildah_push; then
    run_case buildah-pull case_buildah_pull && bh_ok=1
  fi
  run_case buildah-from-pulled case_buildah_from_pulled

  if run_case oras-push case_oras_push; then
    oras_ok=1
    run_case oras-referrers case_oras_referrers
    run_case oras-pull case_oras_pull
  fi

  # The same clients over TLS.
  if run_case clients-tls-start case_tls_start && run_case clients-tls-seed case_clients_tls_seed; then
    if [ "$ctrd" = 1 ]; then
      run_case ctr-tls-push case_ctr_tls_push
      run_case ctr-tls-pull case_ctr_tls_pull
    fi
    [ "$bh_ok" = 1 ] && run_case buildah-tls case_buildah_tls
    [ "$oras_ok" = 1 ] && run_case oras-tls case_oras_tls
  fi
  stop_tls_wharf
  stop_clients_group
}
