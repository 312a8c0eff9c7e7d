# Shared by the garbage-collection cases of tests/e2e/run.sh (tests/e2e/gc.sh)
# and tests/cluster/run.sh: driving `wharf gc` and `wharf check --storage`
# on one node's admin API ($GC_ADMIN), reading its metrics, and judging a
# `wharf-load gc-race` report. The runner provides c, die, need and jq.

WHARF_LOAD_BIN=${WHARF_LOAD_BIN:-$ROOT/target/release/wharf-load}
GC_ADMIN= # the admin address (host:port) the helpers talk to

# wg ARGS...: `wharf gc ARGS` against the case's node (its admin API).
wg() { WHARF_ADMIN_URL="http://$GC_ADMIN" timeout 120 "$WHARF_BIN" gc "$@"; }

# gc_metric NAME [ADMIN]: the sum of NAME's samples on /metrics of the
# node at ADMIN [$GC_ADMIN] (0 when absent).
gc_metric() {
  c --max-time 5 "http://${2:-$GC_ADMIN}/metrics" 2>/dev/null |
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

# gc_blob_bytes DIR: "FILES BYTES" of the blob store under a data dir.
gc_blob_bytes() {
  find "$1/blobs" -type f -printf '%s\n' 2>/dev/null | awk '{ n++; s += $1 } END { printf "%d %d\n", n, s }'
}

# gc_pass OUT [ARGS...]: one `wharf gc run ARGS`, its JSON in OUT; prints
# its figures. Fails when the command fails or prints no JSON.
gc_pass() {
  local out=$1
  shift
  wg run "$@" >"$out" 2>"$out.err" || {
    cat "$out" "$out.err"
    die "wharf gc run $* failed"
    return 1
  }
  jq -e . "$out" >/dev/null 2>&1 || {
    cat "$out" "$out.err"
    die "wharf gc run $* printed no JSON"
    return 1
  }
  echo "wharf gc run $*: $(jq -c '{reviewed, unlinked, deleted, bytes_reclaimed, failures}' "$out")"
}

# gc_settle PREFIX: `wharf gc run` until a pass reviews nothing and the
# queue has nothing due and no tombstone standing (a link review queues
# content reviews for the next pass, and background passes may hold items
# of their own, and a dead collector's tombstones wait for their lease);
# at most 12 passes and 90 s. The sums of `deleted` and
# `bytes_reclaimed` of these passes in GC_SETTLED_DELETED and _BYTES.
GC_SETTLED_DELETED=0
GC_SETTLED_BYTES=0
gc_settle() {
  local prefix=$1 i f s t0=$SECONDS
  GC_SETTLED_DELETED=0 GC_SETTLED_BYTES=0
  for ((i = 1; i <= 12; i++)); do
    f=$prefix.$i.json
    gc_pass "$f" || return 1
    [ "$(jq '.failures | if type == "array" then length else . end' "$f")" = 0 ] ||
      die "pass $i had failures: $(jq -c .failures "$f")" || return 1
    GC_SETTLED_DELETED=$((GC_SETTLED_DELETED + $(jq '.deleted // 0' "$f")))
    GC_SETTLED_BYTES=$((GC_SETTLED_BYTES + $(jq '.bytes_reclaimed // 0' "$f")))
    if [ "$(jq '.reviewed // 0' "$f")" = 0 ]; then
      s=$(c "http://$GC_ADMIN/admin/v1/gc") || die "GET /admin/v1/gc failed" || return 1
      jq -e '.due == 0 and .tombstones == 0' <<<"$s" >/dev/null && return 0
      echo "pass $i reviewed nothing, but: $s"
      [ $((SECONDS - t0)) -lt 90 ] || break
      sleep 5
    fi
  done
  die "the collector has not settled after $i passes and $((SECONDS - t0))s: $(c "http://$GC_ADMIN/admin/v1/gc")"
}

# gc_check OUT: storage and metadata must agree: `wharf check --storage`
# (with GC_DATA set: on that embedded node's data dir, which asks the
# running node holding it) or `wharf gc check` (the node's admin API) must
# exit 0, and its report say clean.
gc_check() {
  local out=$1 rc
  if [ -n "${GC_DATA:-}" ]; then
    timeout 120 "$WHARF_BIN" check --storage --data-dir "$GC_DATA" --admin-listen "$GC_ADMIN" >"$out" 2>"$out.err"
  else
    wg check >"$out" 2>"$out.err"
  fi
  rc=$?
  jq -c '{clean, stored, held, missing_count, overdue_count, unreviewed_count, awaiting_review}' "$out" 2>/dev/null ||
    cat "$out"
  cat "$out.err"
  [ "$rc" = 0 ] || die "the storage check exited $rc: $(jq -c '{missing, overdue, unreviewed}' "$out" 2>/dev/null | head -c 600)" || return 1
  jq -e '.clean == true and .missing_count == 0 and .overdue_count == 0 and .unreviewed_count == 0' "$out" >/dev/null ||
    die "the storage check exited 0 but says $(jq -c . "$out" | head -c 600)"
}

# gc_status_empty [--due-only]: nothing queued (with --due-only: nothing
# due), no tombstone standing. After a race, --due-only: a content review
# that met a hold was postponed to the hold's end (an hour), and ending the
# hold early does not bring it forward, so such reviews stay queued, not
# due; the storage check tells whether they hold back any bytes.
gc_status_empty() {
  local s want='.queued == 0 and .due == 0 and .tombstones == 0'
  [ "${1:-}" = --due-only ] && want='.due == 0 and .tombstones == 0'
  s=$(c "http://$GC_ADMIN/admin/v1/gc") || die "GET /admin/v1/gc failed" || return 1
  echo "gc status: $s"
  jq -e "$want" <<<"$s" >/dev/null || die "the queue is not done after the final passes: $s" || return 1
  [ "${1:-}" = --due-only ] || [ "$(gc_metric wharf_gc_queue_depth)" = 0 ] ||
    die "wharf_gc_queue_depth is $(gc_metric wharf_gc_queue_depth), want 0"
}

# race_report FILE RC: prints a gc-race/gc-verify report's figures; fails
# unless it exited 0, says ok, counted nothing else and checked some tags.
race_report() {
  local f=$1 rc=$2
  jq -e . "$f" >/dev/null 2>&1 || die "wharf-load printed no JSON report (exit $rc)" || return 1
  jq -c '{mode, pushes, refused_503, refused_429, blobs, tags_deleted, manifests_deleted,
    final_deleted, pulls_ok, other, other_samples, verify}' "$f"
  [ "$rc" = 0 ] || die "wharf-load exited $rc: $(jq -c '[.other_samples[]?, .verify.failures[]?][:3]' "$f")" || return 1
  jq -e '.ok == true and (.other // 0) == 0 and (.pushes.gave_up // 0) == 0 and .verify.failed == 0' "$f" >/dev/null ||
    die "the report is not clean" || return 1
  jq -e '.verify.tags > 0 and .verify.ok == .verify.tags' "$f" >/dev/null ||
    die "no held tag was verified" || return 1
}

need_gc_tools() {
  need jq || return 1
  [ -x "$WHARF_LOAD_BIN" ] ||
    die "WHARF_LOAD_BIN=$WHARF_LOAD_BIN is not an executable (cargo build --release -p wharf-load)" || return 1
  "$WHARF_BIN" serve --help 2>/dev/null | grep -q -- '--gc-review-delay-secs' ||
    die "$WHARF_BIN has no --gc-review-delay-secs (no collector in this build)"
}
