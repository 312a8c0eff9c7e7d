# End-to-end cases for online garbage collection (issue 12), sourced by
# tests/e2e/run.sh (which provides sk, c, pm, dk, die, need, http_code,
# sha256_of, stop_pid, $TMP and $LOGS).
#
# Each case starts a Wharf of its own (its own data dir, its own flags) and
# stops it at the end:
#
#   gc-race-single-node  8 pushers (wharf-load gc-race) race the collector,
#                        review delay 0, a pass every second; then final
#                        passes, `wharf check --storage` clean, and every
#                        held tag still pulls byte-identical, also after a
#                        restart (nothing in the node's memory to hide lost
#                        bytes).
#   gc-crash-mid-pass    a few hundred images pushed with the collector off,
#                        most deleted; restarted with it on, SIGKILLed while
#                        a pass runs; restarted: kept tags pull, a pass
#                        completes, the check is clean, the queue empty.
#   gc-real-clients      skopeo pushes four images sharing a layer; untagging
#                        reclaims nothing; two deleted by digest; the dry run
#                        names exactly their own blobs; the pass frees exactly
#                        their bytes on disk; docker and podman still pull
#                        the two kept images.

# shellcheck source=../gc-lib.sh
source "$HERE/../gc-lib.sh"

GC_PID=   # the case's wharf
GC_REG=   # its registry address
GC_DATA=  # its data dir

# gc_start NAME ARGS...: starts a wharf with data in $TMP/NAME-data (kept
# across restarts of the same NAME) and `wharf serve` ARGS; waits until
# /v2/ answers.
gc_start() {
  local name=$1 i
  shift
  local addr=$TMP/$name.addr admin=$TMP/$name.admin
  [ -x "$WHARF_BIN" ] || die "WHARF_BIN=$WHARF_BIN is not an executable" || return 1
  rm -f "$addr" "$admin"
  GC_DATA=$TMP/$name-data
  echo "starting $name: wharf serve $*" >>"$LOGS/$name.out"
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$GC_DATA" \
    --addr-file "$addr" --admin-addr-file "$admin" --log "${WHARF_E2E_LOG:-info}" "$@" \
    >>"$LOGS/$name.out" 2>&1 3>&- 4>&- &
  GC_PID=$!
  GC_REG= GC_ADMIN=
  for ((i = 0; i < 150; i++)); do
    [ -s "$addr" ] && [ -s "$admin" ] && break
    kill -0 "$GC_PID" 2>/dev/null || {
      tail -n 20 "$LOGS/$name.out"
      GC_PID=
      die "$name: wharf exited during start-up"
      return 1
    }
    sleep 0.1
  done
  GC_REG=$(tr -d '[:space:]' <"$addr" 2>/dev/null)
  GC_ADMIN=$(tr -d '[:space:]' <"$admin" 2>/dev/null)
  [ -n "$GC_REG" ] && [ -n "$GC_ADMIN" ] || die "$name: no addresses after 15s" || return 1
  for ((i = 0; i < 50; i++)); do
    [ "$(http_code GET "http://$GC_REG/v2/")" = 200 ] && {
      echo "$name: wharf pid $GC_PID on $GC_REG, admin $GC_ADMIN ($*)"
      return 0
    }
    sleep 0.1
  done
  die "$name: GET /v2/ did not answer 200 within 5s"
}

gc_stop() {
  stop_pid "$GC_PID" 15
  GC_PID=
}

# ---------------------------------------------------------------- race

# The race and crash cases run the collector unpaced
# (`--gc-max-reviews-per-sec 0`): they are about the collector racing
# pushes as hard as it can, and a backlog of tens of thousands of reviews
# at the default 200 a second would outlast `wharf gc run`'s 120 s here.
case_gc_race_single_node() {
  need_gc_tools || return 1
  gc_start gc-race --gc-review-delay-secs 0 --gc-interval-secs 1 --gc-orphan-age-secs 0 --gc-max-reviews-per-sec 0 || return 1
  local out=$TMP/gc-race.json rc secs=${WHARF_E2E_GC_RACE_SECS:-45}
  timeout $((secs + 90)) "$WHARF_LOAD_BIN" gc-race --url "http://$GC_REG" --pushers 8 --duration "$secs" \
    --state-out "$TMP/gc-race.state" --label e2e-single-node >"$out" 2>"$TMP/gc-race.err"
  rc=$?
  cat "$TMP/gc-race.err"
  race_report "$out" "$rc" || return 1
  # The collector must have collected during the race, or this proved nothing.
  local deleted reviews
  deleted=$(gc_metric wharf_gc_blobs_deleted_total)
  reviews=$(gc_metric wharf_gc_reviews_total)
  echo "during the race: $reviews reviews, $deleted blobs deleted by the collector"
  [ "$deleted" -gt 0 ] || die "the collector deleted nothing during the race ($reviews reviews)" || return 1
  timeout 60 "$WHARF_BIN" gc scan-orphans --help >/dev/null 2>&1 && { wg scan-orphans || die "wharf gc scan-orphans failed" || return 1; }
  gc_settle "$TMP/gc-race-final" || return 1
  echo "final passes: $GC_SETTLED_DELETED blobs, $GC_SETTLED_BYTES bytes reclaimed"
  gc_check "$TMP/gc-race-check.json" || return 1
  gc_status_empty --due-only || return 1
  # And everything held still pulls after the final passes, from storage:
  # restarted, the node has nothing in memory that could hide lost bytes.
  gc_stop
  gc_start gc-race --gc-review-delay-secs 0 --gc-interval-secs 1 --gc-orphan-age-secs 0 --gc-max-reviews-per-sec 0 || return 1
  timeout 120 "$WHARF_LOAD_BIN" gc-verify --url "http://$GC_REG" --state "$TMP/gc-race.state" \
    --label after-final-gc >"$TMP/gc-race-verify.json"
  rc=$?
  jq -c .verify "$TMP/gc-race-verify.json"
  [ "$rc" = 0 ] || die "after the final passes, held tags do not all pull: $(jq -c '.verify.failures[:3]' "$TMP/gc-race-verify.json")" || return 1
  echo "figures: $(jq -c '{attempted: .pushes.attempted, acknowledged: .pushes.acknowledged,
    refused_manifest_blob_unknown: .pushes.refused_manifest_blob_unknown,
    blob_unknown_then_ok: .pushes.manifest_blob_unknown_then_ok, refused_503, refused_429,
    other, tags_verified: .verify.ok}' "$out") collector_deleted_during_race=$deleted final_deleted=$GC_SETTLED_DELETED"
  gc_stop
}

# ---------------------------------------------------------------- crash

case_gc_crash_mid_pass() {
  need_gc_tools || return 1
  # Set-up with the collector off: nothing is reviewed while it is built.
  gc_start gc-crash --gc-review-delay-secs 0 --gc-enabled false || return 1
  local out=$TMP/gc-crash-setup.json rc
  timeout 180 "$WHARF_LOAD_BIN" gc-race --url "http://$GC_REG" --pushers 4 --duration 90 \
    --max-pushes "${WHARF_E2E_GC_CRASH_IMAGES:-400}" --tags-per-pusher 1000 \
    --p-delete-tag 0 --p-delete-manifest 0 --p-pull 0 --p-repush 0 \
    --final-delete-fraction 0.8 --settle-ms 0 \
    --state-out "$TMP/gc-crash.state" --label crash-setup >"$out" 2>"$TMP/gc-crash-setup.err"
  rc=$?
  cat "$TMP/gc-crash-setup.err"
  race_report "$out" "$rc" || return 1
  jq -e '.pushes.acknowledged >= 200 and .final_deleted >= 100' "$out" >/dev/null ||
    die "set-up too small: $(jq -c '{acknowledged: .pushes.acknowledged, final_deleted}' "$out")" || return 1
  echo "set-up: $(gc_blob_bytes "$GC_DATA") blob files/bytes, $(jq .final_deleted "$out") images deleted, $(jq .verify.tags "$out") kept"
  gc_stop
  # Collector on, a pass a second; SIGKILL as soon as a pass has begun.
  # The tombstones the dead collector leaves are claimed again after its
  # lease: a short one, so that the test sees the work complete.
  gc_start gc-crash --gc-review-delay-secs 0 --gc-interval-secs 1 --gc-lease-secs 35 --gc-max-reviews-per-sec 0 || return 1
  local i reviews=0 passes=0 deleted=0 m
  for ((i = 0; i < 1500; i++)); do # 30 s at most
    m=$(c --max-time 2 "http://$GC_ADMIN/metrics" 2>/dev/null)
    reviews=$(awk '$1 ~ /^wharf_gc_reviews_total/ { s += $NF } END { printf "%d", s }' <<<"$m")
    if [ "$reviews" -gt 0 ]; then
      kill -KILL "$GC_PID"
      passes=$(awk '$1 == "wharf_gc_passes_total" { printf "%d", $NF }' <<<"$m")
      deleted=$(awk '$1 == "wharf_gc_blobs_deleted_total" { printf "%d", $NF }' <<<"$m")
      break
    fi
    sleep 0.02
  done
  [ "$reviews" -gt 0 ] || {
    gc_stop
    die "no review started within 30s of the restart"
    return 1
  }
  wait "$GC_PID" 2>/dev/null
  GC_PID=
  echo "SIGKILL after $reviews reviews ($deleted blobs deleted), ${passes:-0} passes completed"
  # The first pass takes the whole backlog: none completed means mid-pass.
  [ "${passes:-0}" = 0 ] || die "a pass had completed before the kill: not mid-pass" || return 1
  # Back up: nothing kept is lost, and the work completes.
  gc_start gc-crash --gc-review-delay-secs 0 --gc-interval-secs 1 --gc-orphan-age-secs 0 --gc-lease-secs 35 --gc-max-reviews-per-sec 0 || return 1
  timeout 120 "$WHARF_LOAD_BIN" gc-verify --url "http://$GC_REG" --state "$TMP/gc-crash.state" \
    --label after-crash >"$TMP/gc-crash-verify.json"
  rc=$?
  jq -c .verify "$TMP/gc-crash-verify.json"
  [ "$rc" = 0 ] || die "after the crash, kept tags do not all pull: $(jq -c '.verify.failures[:3]' "$TMP/gc-crash-verify.json")" || return 1
  timeout 60 "$WHARF_BIN" gc scan-orphans --help >/dev/null 2>&1 && { wg scan-orphans || die "wharf gc scan-orphans failed" || return 1; }
  gc_settle "$TMP/gc-crash-final" || return 1
  gc_check "$TMP/gc-crash-check.json" || return 1
  gc_status_empty || return 1
  echo "figures: images $(jq .pushes.acknowledged "$out"), deleted $(jq .final_deleted "$out"), kept $(jq .verify.ok "$TMP/gc-crash-verify.json"); killed after $reviews reviews, $deleted deletions, mid-pass; after restart the store holds $(gc_blob_bytes "$GC_DATA") blob files/bytes"
  gc_stop
}

# ---------------------------------------------------------------- real clients

# gc_digests REFS TAG...: every digest (manifest, config, layers) of the
# images TAG..., one per line, sorted and unique.
gc_digests() {
  local refs=$1
  shift
  local t
  for t in "$@"; do
    jq -r --arg t "$t" '.[$t] | .manifest, .config.digest, .layers[].digest' "$refs"
  done | sort -u
}

# gc_size REFS DIGEST: the size the refs give DIGEST.
gc_size() {
  jq -r --arg d "$2" '[.[] | (select(.manifest == $d) | .manifest_size),
    (.config | select(.digest == $d) | .size), (.layers[] | select(.digest == $d) | .size)] | first' "$1"
}

case_gc_real_clients() {
  need_gc_tools || return 1
  need skopeo python3 || return 1
  local layout=$TMP/gc-layout refs repo=e2e-gc/app t
  timeout 60 python3 "$HERE/make_gc_images.py" "$layout" || die "make_gc_images.py failed" || return 1
  refs=$layout/gc-refs.json
  # The collector only runs when asked: every pass below is one the test ran.
  gc_start gc-clients --gc-review-delay-secs 0 --gc-enabled false --gc-orphan-age-secs 0 || return 1
  for t in a b c d; do
    sk copy --dest-tls-verify=false "oci:$layout:$t" "docker://$GC_REG/$repo:$t" || die "skopeo push of $t failed" || return 1
    [ "$(sk inspect --tls-verify=false "docker://$GC_REG/$repo:$t" | jq -r .Digest)" = "$(jq -r .$t.manifest "$refs")" ] ||
      die "$repo:$t does not have the pushed digest" || return 1
  done
  gc_settle "$TMP/gc-clients-pushed" || return 1
  local before after
  before=$(gc_blob_bytes "$GC_DATA")
  echo "after the pushes: $before blob files/bytes"

  # Untagging alone reclaims nothing: the manifests stay, and hold their blobs.
  for t in b d; do
    [ "$(http_code DELETE "http://$GC_REG/v2/$repo/manifests/$t")" = 202 ] || die "DELETE tag $t was not 202" || return 1
  done
  gc_settle "$TMP/gc-clients-untagged" || return 1
  after=$(gc_blob_bytes "$GC_DATA")
  echo "after untagging b and d and a pass: $after blob files/bytes, $GC_SETTLED_DELETED deleted"
  [ "$GC_SETTLED_DELETED" = 0 ] && [ "$GC_SETTLED_BYTES" = 0 ] && [ "$after" = "$before" ] ||
    die "untagging reclaimed something: $GC_SETTLED_DELETED blobs, $GC_SETTLED_BYTES bytes, store $before -> $after" || return 1

  # Two images deleted by digest: b (untagged) and c (still tagged).
  for t in b c; do
    [ "$(http_code DELETE "http://$GC_REG/v2/$repo/manifests/$(jq -r .$t.manifest "$refs")")" = 202 ] ||
      die "DELETE manifest $t by digest was not 202" || return 1
  done
  # What only b and c hold: their manifests, configs and own layers.
  local expected want_bytes=0 d
  expected=$(comm -23 <(gc_digests "$refs" b c) <(gc_digests "$refs" a d))
  for d in $expected; do want_bytes=$((want_bytes + $(gc_size "$refs" "$d"))); done
  echo "expected to be reclaimed: $(wc -l <<<"$expected") digests, $want_bytes bytes"

  gc_pass "$TMP/gc-clients-dry.json" --dry-run || return 1
  local listed
  listed=$(jq -r '.verdicts[] | select(.verdict == "unlinked" or .verdict == "doomed") | .digest' \
    "$TMP/gc-clients-dry.json" | sort -u)
  jq -c '.verdicts[]' "$TMP/gc-clients-dry.json"
  [ "$listed" = "$expected" ] || {
    diff <(echo "$expected") <(echo "$listed")
    die "the dry run lists other digests than b's and c's own ($(wc -l <<<"$listed") vs $(wc -l <<<"$expected"))"
    return 1
  }
  [ "$(jq .bytes_reclaimed "$TMP/gc-clients-dry.json")" = "$want_bytes" ] ||
    die "the dry run foresees $(jq .bytes_reclaimed "$TMP/gc-clients-dry.json") bytes, expected $want_bytes" || return 1
  [ "$(gc_blob_bytes "$GC_DATA")" = "$before" ] || die "the dry run changed the store" || return 1

  gc_settle "$TMP/gc-clients-run" || return 1
  after=$(gc_blob_bytes "$GC_DATA")
  local shrank=$((${before#* } - ${after#* })) files=$((${before% *} - ${after% *}))
  echo "figures: reclaimed $GC_SETTLED_DELETED blobs, $GC_SETTLED_BYTES bytes reported; store $before -> $after: $files files, $shrank bytes fewer; expected $(wc -l <<<"$expected") and $want_bytes"
  [ "$GC_SETTLED_BYTES" = "$want_bytes" ] || die "wharf gc run reported $GC_SETTLED_BYTES bytes, expected $want_bytes" || return 1
  [ "$shrank" = "$want_bytes" ] || die "the store shrank by $shrank bytes, expected $want_bytes" || return 1
  [ "$files" = "$(wc -l <<<"$expected")" ] || die "$files blob files went, expected $(wc -l <<<"$expected")" || return 1
  for d in $expected; do
    [ ! -e "$GC_DATA/blobs/sha256/${d:7:2}/${d#sha256:}" ] || die "$d is still on disk" || return 1
  done
  gc_check "$TMP/gc-clients-check.json" || return 1

  # The kept images pull with real clients: a by tag, d (untagged) by digest.
  local a_ref="$GC_REG/$repo:a" d_ref="$GC_REG/$repo@$(jq -r .d.manifest "$refs")"
  need podman || return 1
  mkdir -p "$TMP/podman-tmp"
  pm pull --tls-verify=false "$a_ref" || die "podman pull $a_ref failed" || return 1
  pm pull --tls-verify=false "$d_ref" || die "podman pull $d_ref failed" || return 1
  [ "$(pm image inspect --format '{{.Digest}}' "$a_ref")" = "$(jq -r .a.manifest "$refs")" ] ||
    die "podman pulled another digest for a" || return 1
  if [ "${WHARF_E2E_SKIP_DOCKER:-0}" = 1 ]; then
    echo "docker skipped (WHARF_E2E_SKIP_DOCKER=1)"
  else
    [ -n "$DOCKERD_PID" ] || case_docker_daemon || return 1
    dk pull "$a_ref" || die "docker pull $a_ref failed" || return 1
    dk pull "$d_ref" || die "docker pull $d_ref failed" || return 1
    stop_dockerd
  fi
  # The deleted ones do not.
  [ "$(http_code GET "http://$GC_REG/v2/$repo/manifests/$(jq -r .c.manifest "$refs")")" = 404 ] ||
    die "deleted image c still resolves" || return 1
  gc_check "$TMP/gc-clients-check2.json" || return 1
  gc_stop
}
