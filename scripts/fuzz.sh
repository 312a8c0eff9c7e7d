#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of every parser that
# reads client input: the targets live in fuzz/ (its own Cargo workspace);
# docs/fuzzing.md says what each one checks and holds the figures of the
# long runs.
#
#   bash scripts/fuzz.sh list              # the targets
#   bash scripts/fuzz.sh build             # builds every target
#   bash scripts/fuzz.sh smoke [SECS]      # each target SECS (default 5) s on its committed corpus
#   bash scripts/fuzz.sh run TARGET SECS   # one long run; its corpus grows in fuzz/corpus-run/TARGET
#
# Needs cargo-fuzz (scripts/install-deps.sh installs it). libFuzzer needs
# unstable compiler flags: with no nightly toolchain the default one (stable)
# is used with RUSTC_BOOTSTRAP=1; WHARF_FUZZ_TOOLCHAIN=nightly picks one.
# Targets are built without a sanitizer (safe Rust: ASan would only halve
# the speed) and with debug assertions, so an overflow is a crash too.
# Everything runs under `nice -n 19`. Crashes land in fuzz/artifacts/TARGET/
# and fail the command.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

TARGETS=(v2_path manifest range authorization token scope htpasswd admin_json)

cargo_fuzz() {
  if [ -n "${WHARF_FUZZ_TOOLCHAIN:-}" ]; then
    nice -n 19 cargo "+$WHARF_FUZZ_TOOLCHAIN" fuzz "$@"
  else
    RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz "$@"
  fi
}

# -s none: no sanitizer; -a: debug assertions (overflow checks).
FLAGS=(-s none -a)

build() {
  cargo_fuzz build "${FLAGS[@]}"
}

# run TARGET SECS OUTDIR: new inputs go to OUTDIR, the committed seeds are
# read from corpus/TARGET and never written to.
run() {
  local target=$1 secs=$2 out=$3
  mkdir -p "$out" "artifacts/$target"
  local log
  log=$(mktemp)
  local rc=0
  cargo_fuzz run "${FLAGS[@]}" "$target" "$out" "corpus/$target" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  # The closing status line: executions, coverage, corpus size, speed.
  local done_line
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  if [ "$rc" != 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $target FAILED (exit $rc); crash input in fuzz/artifacts/$target/" >&2
    rm -f "$log"
    return "$rc"
  fi
  printf '%-14s %s\n' "$target" "${done_line:-(no DONE line)}"
  if [ -n "${WHARF_FUZZ_LOG:-}" ]; then cp "$log" "$WHARF_FUZZ_LOG"; fi
  rm -f "$log"
}

cmd=${1:-smoke}
case "$cmd" in
  list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
  build)
    build
    ;;
  smoke)
    secs=${2:-5}
    start=$(date +%s)
    build
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    passed=0 failed=0
    for t in "${TARGETS[@]}"; do
      if run "$t" "$secs" "$tmp/$t"; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1))
      fi
    done
    echo "fuzz smoke took $(($(date +%s) - start)) s"
    echo "fuzz: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    ;;
  run)
    [ $# -eq 3 ] || { echo "usage: $0 run TARGET SECS" >&2; exit 2; }
    build
    run "$2" "$3" "corpus-run/$2"
    ;;
  *)
    echo "usage: $0 list | build | smoke [SECS] | run TARGET SECS" >&2
    exit 2
    ;;
esac
