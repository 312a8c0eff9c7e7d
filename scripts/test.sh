#!/usr/bin/env bash
# The one command that runs every Wharf test, on a fresh machine or a warm
# one: installs what the tests need (idempotent), checks formatting and
# lints, runs the Rust test suites, then the end-to-end tests with real
# clients (skopeo, podman, docker) against a release build, and the
# multi-node tests (three nodes on PostgreSQL and Garage behind HAProxy,
# tests/cluster/run.sh), the network fault tests (such a cell with each
# piece in a network namespace of its own, links cut, slowed and lossy under
# load, tests/faults/run.sh) and the fleet tests (two cells behind a router,
# with the fleet service, tests/fleet/run.sh).
#
#   bash scripts/test.sh            # everything
#   WHARF_SKIP_E2E=1 bash scripts/test.sh   # Rust suites only (quick loop)
#   WHARF_SKIP_FUZZ=1 ...                   # without the fuzz smoke stage
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# One build per run: incremental caches would only double the disk the
# suite needs (a CI machine has run out of space building it).
export CARGO_INCREMENTAL=0

step "installing test dependencies"
bash scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "alert rules (promtool)"
bash scripts/check-alerts.sh

step "Kubernetes manifests (kubernetes-validate, offline schemas)"
bash scripts/check-kubernetes.sh

# Services the suites run against for real, started here and stopped at
# exit whatever happens. Each start pushes its stop onto CLEANUP.
CLEANUP=()
# Their stop messages go to a log, so each stage's own closing line (e.g.
# `cluster: N passed, M failed`) stays the last thing the run prints.
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUP[i]}" >>target/test-services.log 2>&1 || true
  done
}
trap cleanup EXIT

# Fixed ports sit below the kernel's ephemeral range (32768-60999), so no
# client socket of a running test can hold them by chance.
step "PostgreSQL for the metadata suites"
PG_DIR=$(mktemp -d)
CLEANUP+=("bash scripts/postgres.sh stop '$PG_DIR'; rm -rf '$PG_DIR'")
WHARF_TEST_POSTGRES_URL=$(bash scripts/postgres.sh start "$PG_DIR" 15432)
export WHARF_TEST_POSTGRES_URL WHARF_REQUIRE_POSTGRES=1

step "Garage (S3) for the S3 blob-store suite"
bash scripts/install-garage.sh
GARAGE_DIR=$(mktemp -d)
CLEANUP+=("bash scripts/garage.sh stop '$GARAGE_DIR'; rm -rf '$GARAGE_DIR'")
bash scripts/garage.sh start "$GARAGE_DIR" 13900
# shellcheck source=/dev/null
source "$GARAGE_DIR/env"
export WHARF_REQUIRE_S3=1
# install-deps put docker, podman, skopeo and buildah here: the docs test
# checks their documented command lines and must not skip one.
export WHARF_REQUIRE_CLIENTS=1

step "cargo test"
# --no-fail-fast: a failing test binary does not hide the results of the
# ones after it.
rust_rc=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/cargo-test.log || rust_rc=$?
# Sum the per-binary result lines so the run ends with one honest total.
awk '/^test result:/ { p += $4; f += $6 } END { printf "rust: %d passed, %d failed\n", p, f }' target/cargo-test.log
[ "$rust_rc" = 0 ] || exit "$rust_rc"

# Every fuzz target (fuzz/, docs/fuzzing.md) a few seconds on its committed
# corpus: builds them (their own workspace, on stable with RUSTC_BOOTSTRAP=1
# where no nightly is installed) and fails the run on any crash.
if [ "${WHARF_SKIP_FUZZ:-0}" = 1 ]; then
  echo "WHARF_SKIP_FUZZ=1: fuzz smoke skipped"
else
  step "fuzz targets, briefly, on their committed corpora"
  bash scripts/fuzz.sh smoke
fi

if [ "${WHARF_SKIP_E2E:-0}" = 1 ]; then
  echo "WHARF_SKIP_E2E=1: end-to-end tests skipped"
  exit 0
fi

step "release build"
cargo build --release --locked -p wharf -p wharf-load

step "end-to-end tests with real clients"
WHARF_BIN="$PWD/target/release/wharf" bash tests/e2e/run.sh

step "multi-node cluster tests"
WHARF_BIN="$PWD/target/release/wharf" bash tests/cluster/run.sh

# The same cell with every piece in a network namespace of its own (root
# only): a link cut, PostgreSQL stalled and restarted, Garage slow, a node
# killed, latency and loss, each under a mixed load through HAProxy. Fails
# at once, saying so, when namespaces cannot be made; removes all it made.
step "network fault tests (namespaces, under load)"
WHARF_BIN="$PWD/target/release/wharf" bash tests/faults/run.sh

# Two cells behind a router HAProxy, and the fleet service. Its ports are
# free ones the runner picks (never the fixed ones above, which are bound
# meanwhile); it stops everything it started, whatever happens.
step "fleet tests (cells, router, fleet service)"
WHARF_BIN="$PWD/target/release/wharf" bash tests/fleet/run.sh
