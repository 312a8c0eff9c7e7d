# End-to-end cases for TLS, sourced by tests/e2e/run.sh (which provides sk,
# c, pm, dk, die, need, header, http_code, start/stop helpers and $TMP).
#
# A Wharf serves TLS (`--tls-cert`, `--tls-key`) with a certificate for
# 127.0.0.1 signed by a CA made here with openssl. Real clients trust that
# CA the way their users configure it: curl `--cacert`, skopeo and podman a
# certificate directory (`--cert-dir`, `ca.crt` in it), docker
# `/etc/docker/certs.d/HOST:PORT/ca.crt`. Each pushes and pulls, checked
# byte for byte against the source layout. Then the certificate is renewed
# under the running node (SIGHUP) and a bad pair is refused while the
# renewed one keeps serving.

TREG=      # host:port of the TLS registry
TWHARF_PID=
TLS_DIR=   # the CA, the served pair, the clients' certificate directory
DOCKER_CERTS_D=

stop_tls_wharf() {
  stop_pid "$TWHARF_PID" 10
  TWHARF_PID=
  [ -n "$DOCKER_CERTS_D" ] && rm -rf "$DOCKER_CERTS_D"
  DOCKER_CERTS_D=
}

# tls_issue NAME: a key and a certificate for 127.0.0.1 signed by the CA,
# as $TLS_DIR/NAME.key and $TLS_DIR/NAME.crt.
tls_issue() {
  local n=$1
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TLS_DIR/$n.key" \
    -subj "/CN=wharf e2e $n" -out "$TLS_DIR/$n.csr" 2>/dev/null || return 1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$TLS_DIR/$n.ext"
  openssl x509 -req -in "$TLS_DIR/$n.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$TLS_DIR/$n.ext" -out "$TLS_DIR/$n.crt" 2>/dev/null
}

# served_fingerprint: the SHA-256 fingerprint of the certificate the TLS
# registry presents to a new connection.
served_fingerprint() {
  timeout 10 openssl s_client -connect "$TREG" -CAfile "$TLS_DIR/ca.crt" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2
}

fingerprint_of() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }

case_tls_start() {
  need openssl curl || return 1
  TLS_DIR=$TMP/tls
  mkdir -p "$TLS_DIR/certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TLS_DIR/ca.key" \
    -subj "/CN=wharf e2e CA" -days 2 -addext basicConstraints=critical,CA:TRUE \
    -out "$TLS_DIR/ca.crt" 2>/dev/null || die "openssl could not make the CA" || return 1
  tls_issue server || die "openssl could not issue the server certificate" || return 1
  cp "$TLS_DIR/server.crt" "$TLS_DIR/served.crt" && cp "$TLS_DIR/server.key" "$TLS_DIR/served.key"
  cp "$TLS_DIR/ca.crt" "$TLS_DIR/certs/ca.crt"
  local addr=$TMP/tls.addr i
  rm -f "$addr"
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$TMP/tls-data" \
    --addr-file "$addr" --tls-cert "$TLS_DIR/served.crt" --tls-key "$TLS_DIR/served.key" \
    --log info >>"$LOGS/tls-wharf.out" 2>&1 3>&- 4>&- &
  TWHARF_PID=$!
  for ((i = 0; i < 150; i++)); do
    [ -s "$addr" ] && break
    kill -0 "$TWHARF_PID" 2>/dev/null || { tail -n 20 "$LOGS/tls-wharf.out"; die "the TLS wharf exited"; return 1; }
    sleep 0.1
  done
  TREG=$(tr -d '[:space:]' <"$addr")
  [ -n "$TREG" ] || die "no address from the TLS wharf" || return 1
  for ((i = 0; i < 50; i++)); do
    [ "$(c --cacert "$TLS_DIR/ca.crt" -o /dev/null -w '%{http_code}' "https://$TREG/v2/")" = 200 ] && break
    sleep 0.1
  done
  [ "$(c --cacert "$TLS_DIR/ca.crt" -o /dev/null -w '%{http_code}' "https://$TREG/v2/")" = 200 ] ||
    die "https://$TREG/v2/ did not answer 200" || return 1
  grep -q 'serving TLS' "$LOGS/tls-wharf.out" || die "no 'serving TLS' line in the log" || return 1
  echo "TLS wharf pid $TWHARF_PID on https://$TREG"
}

# curl speaks HTTP/2 (ALPN) and HTTP/1.1 to it, and plain HTTP is not served.
case_tls_curl() {
  local v
  v=$(c --cacert "$TLS_DIR/ca.crt" --http2 -o /dev/null -w '%{http_version}' "https://$TREG/v2/") || die "curl --http2 failed" || return 1
  [ "$v" = 2 ] || die "HTTP version '$v' with --http2, want 2" || return 1
  v=$(c --cacert "$TLS_DIR/ca.crt" --http1.1 -o /dev/null -w '%{http_version}' "https://$TREG/v2/") || die "curl --http1.1 failed" || return 1
  [ "$v" = 1.1 ] || die "HTTP version '$v' with --http1.1" || return 1
  ! c --max-time 5 -o /dev/null "https://$TREG/v2/" 2>/dev/null || die "a client without the CA was served" || return 1
  [ "$(c --max-time 5 -o /dev/null -w '%{http_code}' "http://$TREG/v2/" 2>/dev/null)" != 200 ] ||
    die "plain HTTP was served on the TLS port" || return 1
}

case_tls_skopeo() {
  need skopeo || return 1
  sk copy --dest-cert-dir "$TLS_DIR/certs" "oci:$TMP/layout:1" "docker://$TREG/e2e/tls:1" ||
    die "skopeo push over TLS failed" || return 1
  sk copy --all --dest-cert-dir "$TLS_DIR/certs" "oci:$TMP/layout:multi" "docker://$TREG/e2e/tls-multi:1" ||
    die "skopeo push of the index over TLS failed" || return 1
  local raw=$TMP/tls-raw.json want back=$TMP/tls-back m d
  sk inspect --cert-dir "$TLS_DIR/certs" --raw "docker://$TREG/e2e/tls:1" >"$raw" || die "skopeo inspect over TLS failed" || return 1
  want=$(jq -r .amd64.manifest "$REFS")
  [ "$(sha256_of "$raw")" = "$want" ] || die "manifest over TLS $(sha256_of "$raw"), pushed $want" || return 1
  rm -rf "$back"
  sk copy --src-cert-dir "$TLS_DIR/certs" "docker://$TREG/e2e/tls:1" "oci:$back:1" || die "skopeo pull over TLS failed" || return 1
  m=$(jq -r '.manifests[0].digest' "$back/index.json")
  [ "$m" = "$want" ] || die "pulled back $m, pushed $want" || return 1
  for d in $(jq -r '.config.digest, .layers[].digest' "$back/blobs/sha256/${m#sha256:}"); do
    cmp -s "$back/blobs/sha256/${d#sha256:}" "$TMP/layout/blobs/sha256/${d#sha256:}" ||
      die "blob $d pulled over TLS differs from the pushed one" || return 1
  done
  # Without the CA, skopeo refuses the registry (it verifies by default).
  ! sk inspect --raw "docker://$TREG/e2e/tls:1" >/dev/null 2>&1 || die "skopeo trusted the registry without the CA"
}

case_tls_podman() {
  need podman || return 1
  mkdir -p "$TMP/podman-tmp"
  pm pull --cert-dir "$TLS_DIR/certs" "$TREG/e2e/tls:1" || die "podman pull over TLS failed" || return 1
  local d
  d=$(pm image inspect --format '{{.Digest}}' "$TREG/e2e/tls:1") || die "podman image inspect failed" || return 1
  [ "$d" = "$(jq -r .amd64.manifest "$REFS")" ] || die "podman pulled '$d' over TLS" || return 1
  pm tag "$TREG/e2e/tls:1" "$TREG/e2e/tls-podman:1" || die "podman tag failed" || return 1
  pm push --cert-dir "$TLS_DIR/certs" "$TREG/e2e/tls-podman:1" || die "podman push over TLS failed" || return 1
  local cfg=$TMP/tls-podman-config.json
  sk inspect --cert-dir "$TLS_DIR/certs" --config "docker://$TREG/e2e/tls-podman:1" >"$cfg" || die "inspect of podman's push failed" || return 1
  [ "$(jq -c .rootfs.diff_ids "$cfg")" = "$(jq -c .amd64.diff_ids "$REFS")" ] ||
    die "podman's push over TLS has diff_ids $(jq -c .rootfs.diff_ids "$cfg")"
}

# docker trusts a registry's CA from /etc/docker/certs.d/HOST:PORT/ca.crt,
# read at each pull and push; the directory is removed at the end.
case_tls_docker() {
  DOCKER_CERTS_D=/etc/docker/certs.d/$TREG
  mkdir -p "$DOCKER_CERTS_D" && cp "$TLS_DIR/ca.crt" "$DOCKER_CERTS_D/ca.crt" ||
    die "cannot write $DOCKER_CERTS_D" || return 1
  case_docker_daemon || return 1
  dk pull "$TREG/e2e/tls:1" || die "docker pull over TLS failed" || return 1
  local rd
  rd=$(dk image inspect --format '{{join .RepoDigests " "}}' "$TREG/e2e/tls:1") || die "docker image inspect failed" || return 1
  [[ " $rd " == *"@$(jq -r .amd64.manifest "$REFS") "* ]] || die "RepoDigests '$rd' lack the pushed digest" || return 1
  dk tag "$TREG/e2e/tls:1" "$TREG/e2e/tls-docker:1" || die "docker tag failed" || return 1
  dk push "$TREG/e2e/tls-docker:1" | tee "$TMP/tls-docker-push.out" || die "docker push over TLS failed" || return 1
  local d
  d=$(grep -o 'digest: sha256:[0-9a-f]*' "$TMP/tls-docker-push.out" | head -n 1 | cut -d' ' -f2)
  [ -n "$d" ] || die "docker push printed no digest" || return 1
  c --cacert "$TLS_DIR/ca.crt" -o "$TMP/tls-docker.json" \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' \
    "https://$TREG/v2/e2e/tls-docker/manifests/1" || die "GET of docker's manifest failed" || return 1
  [ "$(sha256_of "$TMP/tls-docker.json")" = "$d" ] || die "docker's manifest over TLS does not hash to $d"
}

# A renewed pair is served after SIGHUP without a restart; a key that does
# not match its certificate is refused (logged) and the renewed pair keeps
# serving; pulls work throughout.
case_tls_reload() {
  local before after pid=$TWHARF_PID i
  before=$(served_fingerprint)
  [ "$before" = "$(fingerprint_of "$TLS_DIR/server.crt")" ] || die "served '$before' is not the configured certificate" || return 1
  tls_issue renewed || die "openssl could not issue the renewed certificate" || return 1
  cp "$TLS_DIR/renewed.key" "$TLS_DIR/served.key" && cp "$TLS_DIR/renewed.crt" "$TLS_DIR/served.crt"
  kill -HUP "$TWHARF_PID"
  for ((i = 0; i < 50; i++)); do
    after=$(served_fingerprint)
    [ "$after" = "$(fingerprint_of "$TLS_DIR/renewed.crt")" ] && break
    sleep 0.2
  done
  [ "$after" = "$(fingerprint_of "$TLS_DIR/renewed.crt")" ] || die "still serving '$after' after SIGHUP" || return 1
  kill -0 "$pid" 2>/dev/null || die "the node exited on SIGHUP" || return 1
  # A key of another pair: refused, the renewed one stays.
  tls_issue stray || return 1
  cp "$TLS_DIR/stray.key" "$TLS_DIR/served.key"
  kill -HUP "$TWHARF_PID"
  for ((i = 0; i < 50; i++)); do
    grep -q 'TLS certificate not reloaded' "$LOGS/tls-wharf.out" && break
    sleep 0.2
  done
  grep 'TLS certificate not reloaded' "$LOGS/tls-wharf.out" | tail -n 1
  grep -q 'TLS certificate not reloaded' "$LOGS/tls-wharf.out" || die "the bad pair was not refused in the log" || return 1
  [ "$(served_fingerprint)" = "$(fingerprint_of "$TLS_DIR/renewed.crt")" ] || die "the bad pair replaced the renewed one" || return 1
  sk inspect --cert-dir "$TLS_DIR/certs" --raw "docker://$TREG/e2e/tls:1" >/dev/null || die "pull after the refused reload failed"
}

tls_cases() {
  if [ -z "$REFS" ] || [ ! -s "$REFS" ]; then
    run_case fixture-layout case_fixture_layout || return
  fi
  if run_case tls-start case_tls_start; then
    run_case tls-curl case_tls_curl
    if run_case tls-skopeo case_tls_skopeo; then
      run_case tls-podman case_tls_podman
      if [ "${WHARF_E2E_SKIP_DOCKER:-0}" = 1 ]; then
        skip_note tls-docker "WHARF_E2E_SKIP_DOCKER=1"
      else
        run_case tls-docker case_tls_docker
        stop_dockerd
      fi
    fi
    run_case tls-reload case_tls_reload
  fi
  stop_tls_wharf
}
