# End-to-end cases for Wharf's own container image, sourced by
# tests/e2e/run.sh (group `image`; it provides sk, c, pm, die, need,
# sha256_of, http_code, run_case, start_node and $TMP).
#
# scripts/image.sh builds the image from $WHARF_BIN without a container
# engine (umoci); its contents and configuration are checked (non-root
# user, entrypoint, ports, volume, labels, no shell, what the Kubernetes
# Deployment expects), then the script builds it again and pushes it into a
# running Wharf with skopeo: the registry holds the first build's digest
# (the build is reproducible, the push byte-identical). skopeo pulls it back
# byte for byte, and podman pulls and runs it (vfs storage, host network,
# loopback ports, read-only root filesystem): the container's wharf answers
# /v2/ on its port, runs as uid 65532 with its data on the image's volume,
# takes a push, stops on SIGTERM with status 0, and without flags refuses
# to serve unauthenticated on 0.0.0.0:5000/5001 (the image's defaults
# file, Wharf's own start checks).
#
# `podman run` needs, on some machines, options the defaults lack (e.g. no
# CAP_SYS_RESOURCE to raise rlimits, cgroups in hybrid mode that crun
# refuses): the options are tried in order and the ones that worked are
# printed as a NOTE line; if none works, the case fails with each error.

IMG_PID= # the Wharf the image is pushed into
IMG_REG=
IMG_DIR=
IMG_TAG=
IMG_DIGEST= # the first build's manifest digest
IMG_CTR=    # the running container's name
IMG_PORT=${WHARF_E2E_IMAGE_PORT:-16530}
IMG_GLOBAL=() # podman options `podman run` needed here
IMG_RUN=()

stop_image_group() {
  if [ -n "$IMG_CTR" ]; then
    pm "${IMG_GLOBAL[@]}" rm -f -t 5 "$IMG_CTR" >/dev/null 2>&1 3>&- 4>&-
    IMG_CTR=
  fi
  stop_pid "$IMG_PID" 10
  IMG_PID=
}

img_blob() { echo "$IMG_DIR/oci/blobs/sha256/${1#sha256:}"; }

case_image_build() {
  need umoci skopeo jq || return 1
  IMG_DIR=$TMP/image
  mkdir -p "$IMG_DIR"
  timeout 300 bash "$ROOT/scripts/image.sh" --bin "$WHARF_BIN" --out "$IMG_DIR/oci" | tee "$IMG_DIR/build.out" ||
    die "scripts/image.sh failed" || return 1
  IMG_TAG=$(sed -n 's/^image: oci:.*:\([^:]*\)$/\1/p' "$IMG_DIR/build.out")
  IMG_DIGEST=$(sed -n 's/^manifest: //p' "$IMG_DIR/build.out")
  [ -n "$IMG_TAG" ] && [ -n "$IMG_DIGEST" ] || die "image.sh printed no image or manifest line" || return 1
  [ "$(jq -r --arg t "$IMG_TAG" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
    "$IMG_DIR/oci/index.json")" = "$IMG_DIGEST" ] || die "index.json does not tag $IMG_DIGEST as $IMG_TAG" || return 1
  local mf cfg layer
  mf=$(img_blob "$IMG_DIGEST")
  cfg=$(img_blob "$(jq -r .config.digest "$mf")")
  jq . "$cfg"
  [ "$(jq '.layers | length' "$mf")" = 1 ] || die "want one layer" || return 1
  layer=$(img_blob "$(jq -r '.layers[0].digest' "$mf")")

  # The configuration.
  jq -e '.config.User == "65532:65532"' "$cfg" >/dev/null || die "user is $(jq -c .config.User "$cfg"), not 65532:65532" || return 1
  jq -e '.config.Entrypoint == ["/usr/local/bin/wharf", "serve"] and (.config.Cmd // []) == []' "$cfg" >/dev/null ||
    die "entrypoint $(jq -c .config.Entrypoint "$cfg") cmd $(jq -c .config.Cmd "$cfg")" || return 1
  jq -e '.config.ExposedPorts | keys == ["5000/tcp", "5001/tcp"]' "$cfg" >/dev/null ||
    die "exposed ports $(jq -c .config.ExposedPorts "$cfg")" || return 1
  jq -e '.config.Volumes | keys == ["/var/lib/wharf"]' "$cfg" >/dev/null || die "volumes $(jq -c .config.Volumes "$cfg")" || return 1
  jq -e '.config.Env | index("WHARF_CONFIG=/etc/wharf/wharf.toml")' "$cfg" >/dev/null || die "no WHARF_CONFIG in the environment" || return 1
  local version revision
  version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
  revision=$(git -C "$ROOT" rev-parse HEAD)
  jq -e --arg v "$version" '.config.Labels["org.opencontainers.image.version"] == $v' "$cfg" >/dev/null ||
    die "version label is not $version" || return 1
  jq -e --arg r "$revision" '.config.Labels["org.opencontainers.image.revision"] | startswith($r)' "$cfg" >/dev/null ||
    die "revision label $(jq -r '.config.Labels["org.opencontainers.image.revision"]' "$cfg") is not HEAD $revision" || return 1
  jq -e --arg r "$revision" '.annotations["org.opencontainers.image.revision"] | startswith($r)' "$mf" >/dev/null ||
    die "the manifest lacks the revision annotation" || return 1

  # The contents: exactly these files, no shell, the data dir for 65532.
  tar -tvzf "$layer" >"$IMG_DIR/layer.txt" || die "the layer is not a gzip tar" || return 1
  cat "$IMG_DIR/layer.txt"
  local files want
  files=$(tar -tzf "$layer" | grep -v -e '/$' -e '^\.$' | sed 's#^\./##' | sort | tr '\n' ' ')
  want="etc/group etc/nsswitch.conf etc/passwd etc/ssl/certs/ca-certificates.crt etc/wharf/wharf.toml "
  want+="lib/x86_64-linux-gnu/libc.so.6 lib/x86_64-linux-gnu/libgcc_s.so.1 lib/x86_64-linux-gnu/libm.so.6 "
  want+="lib64/ld-linux-x86-64.so.2 usr/local/bin/wharf "
  [ "$(uname -m)" = x86_64 ] || want=$files # the library paths are the x86_64 ones
  [ "$files" = "$want" ] || die "the layer holds: $files" || return 1
  grep -qE '(^| )(\./)?(bin|usr/bin)/(sh|bash|busybox)$' "$IMG_DIR/layer.txt" && { die "the image has a shell"; return 1; }
  grep -qE '^drwx------ 65532/65532 .* (\./)?var/lib/wharf/?$' "$IMG_DIR/layer.txt" ||
    die "var/lib/wharf is not 0700 owned by 65532" || return 1
  grep -qE '^-rwxr-xr-x 0/0 .* (\./)?usr/local/bin/wharf$' "$IMG_DIR/layer.txt" || die "the binary is not root-owned 0755" || return 1

  # The binary in it is $WHARF_BIN (stripped of debug info only).
  mkdir -p "$IMG_DIR/x"
  tar -xzf "$layer" -C "$IMG_DIR/x" usr/local/bin/wharf || die "cannot extract the binary" || return 1
  [ "$("$IMG_DIR/x/usr/local/bin/wharf" --version)" = "$("$WHARF_BIN" --version)" ] ||
    die "the image's wharf --version differs from WHARF_BIN's" || return 1

  local size
  size=$(jq '[.config.size] + [.layers[].size] | add' "$mf")
  echo "compressed size: $size bytes"
  [ "$size" -lt $((25 * 1024 * 1024)) ] || die "the image is $size bytes compressed, over 25 MiB"
}

# The Deployment runs what the image holds, as the image's user.
case_image_matches_deployment() {
  local d=$ROOT/deploy/kubernetes/deployment.yaml k=$ROOT/deploy/kubernetes/kustomization.yaml
  [ "$(grep -c 'command: \["/usr/local/bin/wharf"\]' "$d")" = 2 ] ||
    die "deployment.yaml does not run /usr/local/bin/wharf in both containers" || return 1
  grep -q '^usr/local/bin/wharf$' <(tar -tzf "$(img_blob "$(jq -r '.layers[0].digest' "$(img_blob "$IMG_DIGEST")")")") ||
    die "the image has no usr/local/bin/wharf" || return 1
  grep -qE '^ +runAsUser: 65532$' "$d" && grep -qE '^ +runAsGroup: 65532$' "$d" ||
    die "deployment.yaml does not run as 65532:65532, the image's user" || return 1
  grep -qE '^ +containerPort: 5000$' "$d" && grep -qE '^ +containerPort: 5001$' "$d" ||
    die "deployment.yaml's ports are not the image's 5000 and 5001" || return 1
  grep -qE '^ +mountPath: /var/lib/wharf$' "$d" || die "deployment.yaml mounts nothing on the image's volume /var/lib/wharf" || return 1
  grep -qE '^ +- name: wharf$' "$k" || die "kustomization.yaml does not set the image named wharf" || return 1
}

# Built again and pushed by the script: the registry holds the first
# build's exact manifest.
case_image_push() {
  local rc=0
  start_node image || rc=1
  IMG_PID=$NODE_PID
  IMG_REG=$NODE_REG
  [ "$rc" = 0 ] || return 1
  timeout 300 bash "$ROOT/scripts/image.sh" --bin "$WHARF_BIN" --out "$IMG_DIR/oci2" \
    --push "docker://$IMG_REG/wharf/wharf:$IMG_TAG" -- --dest-tls-verify=false | tee "$IMG_DIR/push.out" ||
    die "scripts/image.sh --push failed" || return 1
  grep -q "^manifest: $IMG_DIGEST$" "$IMG_DIR/push.out" ||
    die "the second build is $(sed -n 's/^manifest: //p' "$IMG_DIR/push.out"), the first $IMG_DIGEST: not reproducible" || return 1
  local h=$IMG_DIR/pushed.h
  c -D "$h" -o "$IMG_DIR/pushed.json" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$IMG_REG/v2/wharf/wharf/manifests/$IMG_TAG" || die "GET the pushed manifest failed" || return 1
  [ "$(sha256_of "$IMG_DIR/pushed.json")" = "$IMG_DIGEST" ] ||
    die "the registry holds $(sha256_of "$IMG_DIR/pushed.json") under $IMG_TAG, built $IMG_DIGEST" || return 1
  [ "$(header "$h" Docker-Content-Digest)" = "$IMG_DIGEST" ] || die "Docker-Content-Digest $(header "$h" Docker-Content-Digest)"
}

case_image_pull() {
  local back=$IMG_DIR/back d m
  rm -rf "$back"
  sk copy --src-tls-verify=false "docker://$IMG_REG/wharf/wharf:$IMG_TAG" "oci:$back:$IMG_TAG" ||
    die "skopeo pull of the image failed" || return 1
  m=$(jq -r '.manifests[0].digest' "$back/index.json")
  [ "$m" = "$IMG_DIGEST" ] || die "pulled back $m, pushed $IMG_DIGEST" || return 1
  for d in $(jq -r '.config.digest, .layers[].digest' "$(img_blob "$IMG_DIGEST")"); do
    cmp -s "$back/blobs/sha256/${d#sha256:}" "$(img_blob "$d")" || die "blob $d pulled back differs" || return 1
  done
  sk inspect --tls-verify=false "docker://$IMG_REG/wharf/wharf:$IMG_TAG" | tee "$IMG_DIR/inspect.json" |
    jq -e --arg d "$IMG_DIGEST" '.Digest == $d and .Os == "linux"' >/dev/null || die "skopeo inspect disagrees"
}

# podman_run_probe IMAGE: finds podman options under which `podman run`
# works here, trying the defaults first; sets IMG_GLOBAL and IMG_RUN.
podman_run_probe() {
  local img=$1 nofile nproc i out
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  # The container's RLIMIT_NPROC may not exceed what the runtime got (no
  # CAP_SYS_RESOURCE to raise it); podman gives it at most pid_max.
  if [ -r /proc/sys/kernel/pid_max ] && { [ "$nproc" = unlimited ] || [ "$nproc" -gt "$(cat /proc/sys/kernel/pid_max)" ]; }; then
    nproc=$(cat /proc/sys/kernel/pid_max)
  fi
  local ul=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  local -a globals=("" "" "--runtime runc" "--runtime crun")
  local -a runs=("" "${ul[*]}" "${ul[*]}" "--cgroups=disabled ${ul[*]}")
  for ((i = 0; i < ${#globals[@]}; i++)); do
    # shellcheck disable=SC2206
    IMG_GLOBAL=(${globals[i]})
    # shellcheck disable=SC2206
    IMG_RUN=(${runs[i]})
    echo "--- podman ${IMG_GLOBAL[*]} run --rm --network host ${IMG_RUN[*]} IMAGE --version"
    if out=$(pm "${IMG_GLOBAL[@]}" run --rm --network host "${IMG_RUN[@]}" "$img" --version 2>&1 3>&- 4>&-); then
      echo "$out"
      [ "$i" = 0 ] || echo "NOTE: podman run needs: ${IMG_GLOBAL[*]} run ${IMG_RUN[*]}"
      return 0
    fi
    echo "$out" | tail -n 3
  done
  IMG_GLOBAL=()
  IMG_RUN=()
  die "podman run does not work on this machine with any of the options tried (errors above)"
}

case_image_podman_run() {
  need podman || return 1
  mkdir -p "$TMP/podman-tmp"
  local img="$IMG_REG/wharf/wharf:$IMG_TAG" d port=$IMG_PORT admin=$((IMG_PORT + 1)) i
  pm pull --tls-verify=false "$img" || die "podman pull of the image failed" || return 1
  d=$(pm image inspect --format '{{.Digest}}' "$img") || die "podman image inspect failed" || return 1
  [ "$d" = "$IMG_DIGEST" ] || die "podman pulled $d, pushed $IMG_DIGEST" || return 1
  podman_run_probe "$img" || return 1
  for i in $port $admin; do
    c --max-time 2 -o /dev/null "http://127.0.0.1:$i/" 2>/dev/null &&
      { die "port $i is in use (set WHARF_E2E_IMAGE_PORT)"; return 1; }
  done
  IMG_CTR=wharf-e2e-image-$$
  # --read-only: it writes only to its volume and /tmp (a tmpfs here, an
  # emptyDir in deploy/kubernetes).
  pm "${IMG_GLOBAL[@]}" run -d --name "$IMG_CTR" --network host --read-only "${IMG_RUN[@]}" "$img" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" 3>&- 4>&- || die "podman run -d failed" || return 1
  for ((i = 0; i < 150; i++)); do
    [ "$(http_code GET "http://127.0.0.1:$port/v2/" 2>/dev/null)" = 200 ] && break
    sleep 0.2
  done
  pm "${IMG_GLOBAL[@]}" logs "$IMG_CTR" 2>&1 | tail -n 5
  [ "$(http_code GET "http://127.0.0.1:$port/v2/")" = 200 ] ||
    die "the container's wharf did not answer GET /v2/ on 127.0.0.1:$port within 30s" || return 1
  [ "$(http_code GET "http://127.0.0.1:$admin/healthz")" = 200 ] || die "the container's admin port: no /healthz" || return 1
  echo "GET http://127.0.0.1:$port/v2/ -> 200 from the container"
  # Not root: the process runs as 65532 (no user namespace here: host uid).
  pm "${IMG_GLOBAL[@]}" top "$IMG_CTR" user huser args | tee "$IMG_DIR/top.txt"
  [ "$(awk 'NR > 1 && /wharf/ { print $2 }' "$IMG_DIR/top.txt")" = 65532 ] ||
    die "the container's wharf does not run as uid 65532" || return 1
  # It takes a push; the data lands on the image's volume, owned by 65532.
  sk copy --dest-tls-verify=false "oci:$TMP/layout:1" "docker://127.0.0.1:$port/e2e/in-container:1" ||
    die "skopeo push into the container's wharf failed" || return 1
  [ "$(sk inspect --tls-verify=false --raw "docker://127.0.0.1:$port/e2e/in-container:1" | sha256sum | cut -d' ' -f1)" = \
    "$(jq -r .amd64.manifest "$REFS" | cut -d: -f2)" ] || die "the container's wharf serves another manifest" || return 1
  local vol
  vol=$(pm "${IMG_GLOBAL[@]}" inspect --format '{{range .Mounts}}{{if eq .Destination "/var/lib/wharf"}}{{.Source}}{{end}}{{end}}' "$IMG_CTR")
  [ -n "$vol" ] && [ -d "$vol" ] || die "no volume on /var/lib/wharf" || return 1
  ls -lan "$vol"
  [ "$(stat -c %u "$vol")" = 65532 ] || die "the volume $vol is owned by $(stat -c %u "$vol")" || return 1
  [ -n "$(find "$vol" -mindepth 1 -user 65532 -print -quit)" ] || die "wharf wrote nothing to its volume" || return 1
  # SIGTERM (podman stop): a drained exit with status 0 well within the timeout.
  local t0=$SECONDS code
  pm "${IMG_GLOBAL[@]}" stop -t 40 "$IMG_CTR" >/dev/null || die "podman stop failed" || return 1
  code=$(pm "${IMG_GLOBAL[@]}" inspect --format '{{.State.ExitCode}}' "$IMG_CTR")
  echo "stopped in $((SECONDS - t0))s, exit code $code"
  [ "$code" = 0 ] || die "the container exited with $code on SIGTERM" || return 1
  [ $((SECONDS - t0)) -lt 40 ] || die "SIGTERM did not stop it; podman killed it after 40s"
}

# Without flags the image's defaults apply (listen on 0.0.0.0:5000 and
# 0.0.0.0:5001, no authentication, no admin token): Wharf refuses to start,
# naming the admin port; with --admin-insecure, naming the registry port.
# No network, so nothing is exposed whatever happens.
case_image_secure_default() {
  local img="$IMG_REG/wharf/wharf:$IMG_TAG" out=$IMG_DIR/default.out
  if pm "${IMG_GLOBAL[@]}" run --rm --network none "${IMG_RUN[@]}" "$img" >"$out" 2>&1 3>&- 4>&-; then
    cat "$out"
    die "the image served with its defaults: an open admin API on 0.0.0.0"
    return 1
  fi
  cat "$out"
  grep -q -- '--admin-listen 0.0.0.0:5001 is not a loopback address' "$out" ||
    die "the image's refusal does not name its default admin address 0.0.0.0:5001" || return 1
  if pm "${IMG_GLOBAL[@]}" run --rm --network none "${IMG_RUN[@]}" "$img" --admin-insecure >"$out" 2>&1 3>&- 4>&-; then
    cat "$out"
    die "the image served with its defaults: no authentication on 0.0.0.0"
    return 1
  fi
  cat "$out"
  grep -q -- '--listen 0.0.0.0:5000 is not a loopback address' "$out" ||
    die "the image's refusal does not name its default address 0.0.0.0:5000"
}

image_cases() {
  if [ -z "$REFS" ] || [ ! -s "$REFS" ]; then
    run_case fixture-layout case_fixture_layout || return
  fi
  if run_case image-build case_image_build; then
    echo "NOTE image $(grep '^size:' "$IMG_DIR/build.out")"
    run_case image-matches-deployment case_image_matches_deployment
    if run_case image-push case_image_push; then
      run_case image-pull case_image_pull
      if run_case image-podman-run case_image_podman_run; then
        grep -h '^NOTE' "$LOGS/image-podman-run.log"
        run_case image-secure-default case_image_secure_default
      fi
    fi
  fi
  stop_image_group
}
