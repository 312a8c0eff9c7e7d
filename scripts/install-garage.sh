#!/usr/bin/env bash
# Installs Garage (the S3-compatible object store the S3 blob backend is
# tested against), built from crates.io with cargo: no prebuilt binary is
# downloaded. Idempotent: when a working `garage` is already on PATH or in
# cargo's bin directory, it does nothing. Prints what it did.
#
#   bash scripts/install-garage.sh
#
# A fresh build takes a while (Garage is a large program); the result lands
# in $CARGO_HOME/bin (default ~/.cargo/bin), which later runs find. The
# build's intermediate files go to ~/.cache/garage-build (GARAGE_BUILD_DIR),
# are kept when the build fails (a rerun resumes) and removed once it works.
set -euo pipefail

GARAGE_VERSION=2.5.0
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"

for candidate in "$(command -v garage 2>/dev/null || true)" "$cargo_bin/garage" /root/.cargo/bin/garage; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && version=$("$candidate" --version 2>/dev/null); then
    echo "install-garage: present: $candidate ($version)"
    exit 0
  fi
done

echo "install-garage: building garage $GARAGE_VERSION with cargo install (this takes a while)"
# Its own target directory, kept apart from the workspace's.
build_dir="${GARAGE_BUILD_DIR:-$HOME/.cache/garage-build}"
CARGO_TARGET_DIR="$build_dir" \
  cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
  --features bundled-libs,sqlite,lmdb
# The installed binary is all that is needed: the build's gigabytes would
# only crowd the disk the test suite builds on.
rm -rf "$build_dir"
echo "install-garage: installed $("$cargo_bin/garage" --version 2>/dev/null || echo "garage in $cargo_bin")"
