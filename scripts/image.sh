#!/usr/bin/env bash
# Builds Wharf's container image without a container engine: a minimal root
# filesystem around the release binary, packed by umoci into an OCI image
# layout, and optionally copied to a registry by skopeo.
#
#   bash scripts/image.sh [--bin FILE] [--out DIR] [--tag TAG]
#                         [--push DEST [-- SKOPEO-COPY-FLAGS...]]
#
#   --bin FILE   the binary to ship [target/release/wharf; build it with
#                `cargo build --release --workspace`]
#   --out DIR    the OCI image layout to write (replaced) [target/image/oci]
#   --tag TAG    the tag in the layout [the workspace version, e.g. 0.1.0]
#   --push DEST  then `skopeo copy oci:DIR:TAG DEST`, e.g.
#                docker://registry.example.com/wharf:0.1.0; flags after `--`
#                go to skopeo copy (--dest-tls-verify=false, --dest-cert-dir
#                DIR, --dest-creds USER:PASS, ...)
#
# What is in the image (one layer, no shell, no package manager):
#   /usr/local/bin/wharf          the binary, its debug info stripped
#                                 (symbols kept, for backtraces)
#   /lib*/...                     the shared libraries `ldd` lists (glibc,
#                                 libm, libgcc_s, the dynamic loader)
#   /etc/passwd, /etc/group       root and `wharf` (uid/gid 65532)
#   /etc/nsswitch.conf            files, then DNS
#   /etc/ssl/certs/ca-certificates.crt
#                                 this machine's CA bundle: the binary reads
#                                 the system roots for https (S3, PostgreSQL
#                                 TLS, token realms)
#   /etc/wharf/wharf.toml         the image's defaults: listen on 0.0.0.0
#                                 ports 5000 (registry) and 5001 (admin),
#                                 data in /var/lib/wharf. Mount your own over
#                                 /etc/wharf (deploy/kubernetes does)
#   /var/lib/wharf                the data volume, owned by 65532, mode 0700
#   /tmp                          mode 1777
# Config: entrypoint `/usr/local/bin/wharf serve`, no default arguments (so
# `podman run IMAGE --flag ...` passes serve flags), WHARF_CONFIG pointing at
# the defaults file, user 65532:65532, ports 5000/tcp and 5001/tcp, volume
# /var/lib/wharf, OCI labels (title, version, revision, created, licenses).
# Wharf's own start checks still apply: a non-loopback registry port without
# authentication, or admin port without a token, is refused unless you say
# --allow-unauthenticated / --admin-insecure.
#
# The build is reproducible: every timestamp is the commit time of HEAD
# (SOURCE_DATE_EPOCH if set), so the same binary gives the same digest.
# Needs umoci, jq, ldd, strip (binutils) and, for --push, skopeo; run as root
# (umoci records the files' owners as they are on disk).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BIN=$ROOT/target/release/wharf
OUT=$ROOT/target/image/oci
TAG=
PUSH=
SKOPEO_ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
  --bin) BIN=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  --tag) TAG=$2; shift 2 ;;
  --push) PUSH=$2; shift 2 ;;
  --) shift; SKOPEO_ARGS=("$@"); break ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "image.sh: $*" >&2; exit 1; }
for t in umoci jq ldd strip; do
  command -v "$t" >/dev/null 2>&1 || die "$t is not installed (run scripts/install-deps.sh)"
done
[ -n "$PUSH" ] && { command -v skopeo >/dev/null 2>&1 || die "skopeo is not installed (run scripts/install-deps.sh)"; }
[ "$(id -u)" = 0 ] || die "run as root: the image's files must be owned by root and uid 65532"
[ -x "$BIN" ] || die "no binary at $BIN: build it with 'cargo build --release --workspace' (or pass --bin)"
case $OUT in /* | ./* | ../*) ;; *) OUT=./$OUT ;; esac
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$VERSION" ] || die "no version in Cargo.toml's [workspace.package]"
TAG=${TAG:-$VERSION}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$REVISION" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  REVISION=$REVISION-dirty
fi
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
UID_WHARF=65532

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
BUNDLE=$WORK/bundle

# ------------------------------------------------------------ the layout
# Replaced only if it is an image layout (or empty): never some other dir.
if [ -e "$OUT" ] && [ ! -f "$OUT/oci-layout" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  die "$OUT exists and is not an OCI image layout; not replacing it"
fi
rm -rf "$OUT"
umoci init --layout "$OUT"
umoci new --image "$OUT:$TAG"
umoci unpack --image "$OUT:$TAG" "$BUNDLE" >/dev/null
RFS=$BUNDLE/rootfs

# ------------------------------------------------------------ the rootfs
install -d -m 0755 "$RFS/usr/local/bin" "$RFS/etc/ssl/certs" "$RFS/etc/wharf"
strip --strip-debug -o "$RFS/usr/local/bin/wharf" "$BIN"
chmod 0755 "$RFS/usr/local/bin/wharf"

# The libraries the binary needs, at the paths the loader looks them up
# by: `ldd` prints `name => /path (addr)` and the loader's own path.
libs=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$libs" ] || die "ldd listed no libraries for $BIN (a static binary needs none; this script expects glibc)"
for lib in $libs; do
  install -d -m 0755 "$RFS$(dirname "$lib")"
  cp -L "$lib" "$RFS$lib"
  chmod 0755 "$RFS$lib"
done

printf 'root:x:0:0:root:/root:/sbin/nologin\nwharf:x:%s:%s:wharf:/var/lib/wharf:/sbin/nologin\n' \
  "$UID_WHARF" "$UID_WHARF" >"$RFS/etc/passwd"
printf 'root:x:0:\nwharf:x:%s:\n' "$UID_WHARF" >"$RFS/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$RFS/etc/nsswitch.conf"
chmod 0644 "$RFS/etc/passwd" "$RFS/etc/group" "$RFS/etc/nsswitch.conf"
CA=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA" ] || die "no CA bundle at $CA (Debian's ca-certificates package)"
install -m 0644 "$CA" "$RFS$CA"
cat >"$RFS/etc/wharf/wharf.toml" <<'EOF'
# Defaults of Wharf's container image (scripts/image.sh). Mount your own
# file over /etc/wharf (deploy/kubernetes does), or override a key with its
# variable (WHARF_LISTEN, ...) or flag (`podman run IMAGE --listen ...`).
# docs/wharf.example.toml lists every key.
#
# Inside a container loopback is unreachable from outside: listen on every
# interface. Wharf refuses such a start without authentication (`auth`) or
# without an admin token (`admin_token_file`) unless told otherwise
# (--allow-unauthenticated, --admin-insecure).
listen = "0.0.0.0:5000"
admin_listen = "0.0.0.0:5001"
data_dir = "/var/lib/wharf"
EOF
chmod 0644 "$RFS/etc/wharf/wharf.toml"
install -d -m 0700 -o "$UID_WHARF" -g "$UID_WHARF" "$RFS/var/lib/wharf"
install -d -m 1777 "$RFS/tmp"
# Every directory the layer holds, root-owned 0755 unless set above.
find "$RFS" -type d ! -path "$RFS/var/lib/wharf" ! -path "$RFS/tmp" -exec chmod 0755 {} +
find "$RFS" -exec touch -h -d "@$EPOCH" {} +

umoci repack --image "$OUT:$TAG" --history.created "$CREATED" \
  --history.created_by "scripts/image.sh (wharf $VERSION, $REVISION)" "$BUNDLE" >/dev/null

# ------------------------------------------------------------ the config
labels=(
  "org.opencontainers.image.title=wharf"
  "org.opencontainers.image.description=Wharf, an OCI Distribution / Docker Registry v2 registry"
  "org.opencontainers.image.version=$VERSION"
  "org.opencontainers.image.revision=$REVISION"
  "org.opencontainers.image.created=$CREATED"
  "org.opencontainers.image.licenses=Apache-2.0"
)
cfg=(--clear=config.labels --clear=config.env --clear=config.entrypoint --clear=config.cmd
  --clear=config.exposedports --clear=config.volume
  --config.user "$UID_WHARF:$UID_WHARF"
  --config.entrypoint /usr/local/bin/wharf --config.entrypoint serve
  --config.env WHARF_CONFIG=/etc/wharf/wharf.toml
  --config.env PATH=/usr/local/bin
  --config.exposedports 5000/tcp --config.exposedports 5001/tcp
  --config.volume /var/lib/wharf
  --config.workingdir /var/lib/wharf
  --config.stopsignal SIGTERM
  --os linux --architecture "$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')"
  --created "$CREATED" --author "scripts/image.sh"
  --history.created "$CREATED" --history.created_by "scripts/image.sh: config")
for l in "${labels[@]}"; do
  cfg+=(--config.label "$l" --manifest.annotation "$l")
done
umoci config --image "$OUT:$TAG" "${cfg[@]}"
umoci gc --layout "$OUT"

# ------------------------------------------------------------ report
manifest=$(jq -r --arg t "$TAG" \
  '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$OUT/index.json")
mf=$OUT/blobs/sha256/${manifest#sha256:}
compressed=$(jq '[.config.size] + [.layers[].size] | add' "$mf")
rootfs_bytes=$(du -sb "$RFS" | cut -f1)
echo "image: oci:$OUT:$TAG"
echo "manifest: $manifest"
echo "size: $compressed bytes compressed ($((compressed / 1024 / 1024)) MiB), rootfs $rootfs_bytes bytes ($((rootfs_bytes / 1024 / 1024)) MiB) unpacked"
echo "version: $VERSION, revision: $REVISION, created: $CREATED"

if [ -n "$PUSH" ]; then
  timeout 600 skopeo copy --preserve-digests "${SKOPEO_ARGS[@]}" "oci:$OUT:$TAG" "$PUSH"
  echo "pushed: $PUSH"
fi
