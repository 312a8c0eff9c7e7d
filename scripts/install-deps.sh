#!/usr/bin/env bash
# Installs what Wharf's tests need, on a fresh Debian 12 machine or a warm one.
# Idempotent and fast when everything is present: each tool is checked with
# `command -v` first, and `apt-get update` runs once, only if something is
# missing. Prints what it installed.
#
#   bash scripts/install-deps.sh
#
# Needs root, or sudo when not root.
set -euo pipefail

SUDO=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-deps: not root and no sudo; cannot install packages" >&2
  fi
fi

# command -> Debian package. Order matters only for readability.
# docker.io gives dockerd (the docker client may already exist elsewhere).
declare -a WANT=(
  "skopeo:skopeo"
  "podman:podman"
  "dockerd:docker.io"
  "umoci:umoci"
  "jq:jq"
  "curl:curl"
  "wrk:wrk"
  "nginx:nginx-light"
  "docker-registry:docker-registry"
  "python3:python3"
  "promtool:prometheus"
  "pg_ctlcluster:postgresql"
  "haproxy:haproxy"
  "socat:socat"
  "openssl:openssl"
  "systemd-analyze:systemd"
  # tests/e2e/clients.sh: containerd (ctr) and buildah as real clients;
  # tests/e2e/image.sh: podman runs Wharf's image with runc where crun
  # cannot (podman pulls in only one of the two).
  "containerd:containerd"
  "buildah:buildah"
  "runc:runc"
  # scripts/image.sh strips the binary's debug info and ships the CA bundle.
  "strip:binutils"
  "update-ca-certificates:ca-certificates"
  # libfuzzer-sys (fuzz/, scripts/fuzz.sh) compiles libFuzzer's C++.
  "c++:g++"
  # tests/faults/run.sh: network namespaces, veth links, a bridge, and
  # faults made with iptables in them.
  "ip:iproute2"
  "iptables:iptables"
)
# Rootless podman needs subordinate id mapping and a FUSE overlay; as root
# (how CI runs) the tests use the vfs driver and need neither.
if [ "$(id -u)" != 0 ]; then
  WANT+=("newuidmap:uidmap" "fuse-overlayfs:fuse-overlayfs")
fi

missing_pkgs=()
for pair in "${WANT[@]}"; do
  cmd=${pair%%:*}
  pkg=${pair#*:}
  # docker-registry installs its binary under /usr/bin; nginx under /usr/sbin.
  if command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/usr/bin/$cmd" ]; then
    continue
  fi
  missing_pkgs+=("$pkg")
done

# The virtual environments below need venv and ensurepip, which Debian
# ships apart from python3.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing_pkgs+=(python3-venv)
fi

installed=()
if [ "${#missing_pkgs[@]}" -gt 0 ]; then
  echo "install-deps: missing: ${missing_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Services from these packages must not start at install time (there may be
  # no init system, and a started nginx/registry would hold ports).
  policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ] && [ "${#SUDO[@]}" -eq 0 ] && [ "$(id -u)" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_created=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  "${SUDO[@]}" apt-get update -qq
  # Install what exists in this release's archive; report what does not.
  avail=()
  for pkg in "${missing_pkgs[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      avail+=("$pkg")
    else
      echo "install-deps: package $pkg is not available here; skipping" >&2
    fi
  done
  if [ "${#avail[@]}" -gt 0 ]; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${avail[@]}"
    installed+=("${avail[@]}")
  fi
  if [ "$policy_created" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi

# Rust components used by scripts/test.sh.
if command -v rustup >/dev/null 2>&1; then
  comps=()
  cargo fmt --version >/dev/null 2>&1 || comps+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || comps+=(clippy)
  if [ "${#comps[@]}" -gt 0 ]; then
    rustup component add "${comps[@]}"
    installed+=("rustup:${comps[*]}")
  fi
fi

# cargo-fuzz (crates.io), for scripts/fuzz.sh: pinned, built from its
# locked dependencies; libFuzzer itself comes with the fuzz crate's
# libfuzzer-sys, which needs a C++ compiler (g++, in WANT above).
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install --locked --force cargo-fuzz --version "$CARGO_FUZZ_VERSION"
  installed+=("cargo-fuzz $CARGO_FUZZ_VERSION")
fi

# kubernetes-validate (PyPI), for scripts/check-kubernetes.sh: the
# Kubernetes API schemas ship inside the package, so checking needs no
# network. Its own virtual environment, pinned, so nothing else's Python
# packages change.
KV_VERSION=1.37.0
KV_DIR=${WHARF_TOOLS_DIR:-$HOME/.local/share/wharf-tools}/kubernetes-validate
if [ "$("$KV_DIR/bin/kubernetes-validate" --version 2>/dev/null)" != "$KV_VERSION" ]; then
  python3 -m venv --clear "$KV_DIR"
  "$KV_DIR/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
  installed+=("kubernetes-validate==$KV_VERSION")
fi

# The ORAS Python SDK (PyPI `oras`), the ORAS client of tests/e2e/clients.sh,
# likewise in a pinned virtual environment of its own.
ORAS_VERSION=0.2.43
ORAS_DIR=${WHARF_TOOLS_DIR:-$HOME/.local/share/wharf-tools}/oras
if [ "$("$ORAS_DIR/bin/python" -c 'import importlib.metadata as m; print(m.version("oras"))' 2>/dev/null)" != "$ORAS_VERSION" ]; then
  python3 -m venv --clear "$ORAS_DIR"
  "$ORAS_DIR/bin/pip" install --quiet --disable-pip-version-check "oras==$ORAS_VERSION"
  installed+=("oras==$ORAS_VERSION")
fi

if [ "${#installed[@]}" -gt 0 ]; then
  echo "install-deps: installed: ${installed[*]}"
else
  echo "install-deps: everything already present"
fi
