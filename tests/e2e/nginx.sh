# End-to-end cases for the reverse-proxy example, sourced by
# tests/e2e/run.sh (group `nginx`; it provides sk, c, die, need, header,
# http_code, run_case and $TMP).
#
# deploy/nginx/wharf.conf, as shipped but for its addresses and
# certificate, runs in a real nginx with a self-signed certificate in front
# of a token-mode Wharf whose --token-realm is the proxy's https URL. skopeo
# (as a tenant's user) pushes and pulls through it with credentials (tokens fetched through the
# proxy too); the image comes back byte-identical; a 16 MiB blob goes up in
# one monolithic request (nginx's default body limit is 1 MiB).

NGINX_PORT=${WHARF_E2E_NGINX_PORT:-16520}
NGINX_PID=
NWHARF_PID=
NREG=
NGINX_DIR=
NGINX_PW=nginx-e2e-password

stop_nginx_group() {
  stop_pid "$NGINX_PID" 10
  NGINX_PID=
  stop_pid "$NWHARF_PID" 10
  NWHARF_PID=
}

case_nginx_start() {
  need nginx openssl python3 jq || return 1
  NGINX_DIR=$TMP/nginx
  mkdir -p "$NGINX_DIR/tmp" "$NGINX_DIR/keys" "$NGINX_DIR/admin"
  [ -s "$TMP/layout/refs.json" ] || timeout 60 python3 "$HERE/make_layout.py" "$TMP/layout" ||
    die "make_layout.py failed" || return 1
  "$WHARF_BIN" keygen "$NGINX_DIR/keys" >/dev/null || die "wharf keygen failed" || return 1
  "$WHARF_BIN" admin token --out "$NGINX_DIR/admin" >/dev/null || die "wharf admin token failed" || return 1
  local addr=$NGINX_DIR/wharf.addr admin=$NGINX_DIR/wharf.admin i
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$NGINX_DIR/data" \
    --addr-file "$addr" --admin-addr-file "$admin" --auth token \
    --token-signing-key "$NGINX_DIR/keys" --admin-token-file "$NGINX_DIR/admin/admin-token.sha256" \
    --token-realm "https://127.0.0.1:$NGINX_PORT/auth/token" \
    --log info >>"$LOGS/nginx-wharf.out" 2>&1 3>&- 4>&- &
  NWHARF_PID=$!
  for ((i = 0; i < 150; i++)); do
    [ -s "$addr" ] && [ -s "$admin" ] && break
    kill -0 "$NWHARF_PID" 2>/dev/null || { tail -n 20 "$LOGS/nginx-wharf.out"; die "wharf exited"; return 1; }
    sleep 0.1
  done
  NREG=$(tr -d '[:space:]' <"$addr")
  [ -n "$NREG" ] || die "no address from wharf" || return 1
  # A tenant and its admin, who pushes and pulls through the proxy.
  local wna=("$WHARF_BIN" admin --url "http://$(tr -d '[:space:]' <"$admin")" --token-file "$NGINX_DIR/admin/admin-token")
  timeout 30 "${wna[@]}" tenant create acme >/dev/null || die "tenant create failed" || return 1
  echo "$NGINX_PW" | timeout 30 "${wna[@]}" user set acme op --role admin --password-stdin >/dev/null ||
    die "user set failed" || return 1

  timeout 30 openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$NGINX_DIR/tls.key" -out "$NGINX_DIR/tls.crt" 2>/dev/null ||
    die "openssl could not make a certificate" || return 1
  # The example as shipped, with this run's addresses and certificate: each
  # substitution must find its line, so the example's shape is checked too.
  local conf=$NGINX_DIR/wharf.conf
  cp "$ROOT/deploy/nginx/wharf.conf" "$conf"
  local pair from to
  for pair in \
    "server 127.0.0.1:5000 |server $NREG " \
    "listen 443 ssl;|listen 127.0.0.1:$NGINX_PORT ssl;" \
    "listen \[::\]:443 ssl;|" \
    "/etc/nginx/tls/registry.example.com.crt|$NGINX_DIR/tls.crt" \
    "/etc/nginx/tls/registry.example.com.key|$NGINX_DIR/tls.key"; do
    from=${pair%%|*}
    to=${pair#*|}
    grep -q -- "$from" "$conf" || die "deploy/nginx/wharf.conf has no '$from'" || return 1
    sed -i "s#$from#$to#" "$conf"
  done
  cat >"$NGINX_DIR/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log info;
events { worker_connections 256; }
http {
  access_log $NGINX_DIR/access.log;
  client_body_temp_path $NGINX_DIR/tmp/body;
  proxy_temp_path $NGINX_DIR/tmp/proxy;
  fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
  uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
  scgi_temp_path $NGINX_DIR/tmp/scgi;
  include $conf;
}
CONF
  timeout 10 nginx -t -e "$NGINX_DIR/error.log" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" ||
    die "nginx -t refused the configuration" || return 1
  nginx -e "$NGINX_DIR/error.log" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" >>"$LOGS/nginx.out" 2>&1 3>&- 4>&- &
  NGINX_PID=$!
  for ((i = 0; i < 100; i++)); do
    [ "$(c -k -o /dev/null -w '%{http_code}' "https://127.0.0.1:$NGINX_PORT/v2/")" = 401 ] && {
      echo "nginx pid $NGINX_PID on 127.0.0.1:$NGINX_PORT in front of wharf $NREG"
      return 0
    }
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$NGINX_DIR/error.log"; die "nginx exited"; return 1; }
    sleep 0.1
  done
  die "https://127.0.0.1:$NGINX_PORT/v2/ did not answer 401 within 10s"
}

case_nginx_challenge() {
  # The challenge names the proxy's realm, and the token endpoint answers
  # through the proxy.
  local h=$TMP/nginx-base.h code
  code=$(c -k -D "$h" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$NGINX_PORT/v2/")
  [ "$code" = 401 ] || die "GET /v2/ through nginx -> $code" || return 1
  [[ "$(header "$h" WWW-Authenticate)" == Bearer\ realm=\"https://127.0.0.1:$NGINX_PORT/auth/token\"* ]] ||
    die "challenge '$(header "$h" WWW-Authenticate)'" || return 1
  code=$(c -k -o /dev/null -w '%{http_code}' -u "op:$NGINX_PW" \
    "https://127.0.0.1:$NGINX_PORT/auth/token?service=wharf&scope=repository:acme/app:pull")
  [ "$code" = 200 ] || die "token through nginx -> $code"
}

case_nginx_skopeo_roundtrip() {
  local p=127.0.0.1:$NGINX_PORT back=$NGINX_DIR/back refs=$TMP/layout/refs.json
  sk copy --dest-tls-verify=false --dest-creds "op:$NGINX_PW" "oci:$TMP/layout:1" "docker://$p/acme/app:1" ||
    die "skopeo push through nginx failed" || return 1
  sk copy --all --dest-tls-verify=false --dest-creds "op:$NGINX_PW" "oci:$TMP/layout:multi" "docker://$p/acme/multi:1" ||
    die "skopeo push of the index through nginx failed" || return 1
  rm -rf "$back"
  sk copy --src-tls-verify=false --src-creds "op:$NGINX_PW" "docker://$p/acme/app:1" "oci:$back:1" ||
    die "skopeo pull through nginx failed" || return 1
  local m want d
  m=$(jq -r '.manifests[0].digest' "$back/index.json")
  want=$(jq -r .amd64.manifest "$refs")
  [ "$m" = "$want" ] || die "pulled manifest $m != pushed $want" || return 1
  for d in $m $(jq -r '.config.digest, .layers[].digest' "$back/blobs/sha256/${m#sha256:}"); do
    cmp -s "$back/blobs/sha256/${d#sha256:}" "$TMP/layout/blobs/sha256/${d#sha256:}" ||
      die "blob $d differs from the pushed one" || return 1
  done
  local raw=$NGINX_DIR/index.json
  sk inspect --tls-verify=false --creds "op:$NGINX_PW" --raw "docker://$p/acme/multi:1" >"$raw" ||
    die "inspect of the index through nginx failed" || return 1
  [ "$(sha256_of "$raw")" = "$(jq -r .index "$refs")" ] || die "index digest $(sha256_of "$raw") differs"
}

case_nginx_large_monolithic_upload() {
  # One 16 MiB request body: refused by nginx's default limit, streamed
  # through by the example's.
  local p=127.0.0.1:$NGINX_PORT blob=$NGINX_DIR/big.bin token d code
  head -c $((16 * 1024 * 1024)) /dev/urandom >"$blob"
  d=$(sha256_of "$blob")
  token=$(c -k -u "op:$NGINX_PW" \
    "https://$p/auth/token?service=wharf&scope=repository:acme/big:pull,push" | jq -r .token)
  [ -n "$token" ] && [ "$token" != null ] || die "no token" || return 1
  code=$(c -k -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$blob" \
    "https://$p/v2/acme/big/blobs/uploads/?digest=$d")
  [ "$code" = 201 ] || die "monolithic 16 MiB upload through nginx -> $code" || return 1
  c -k -H "Authorization: Bearer $token" -o "$NGINX_DIR/big.back" "https://$p/v2/acme/big/blobs/$d" ||
    die "pulling it back failed" || return 1
  cmp -s "$blob" "$NGINX_DIR/big.back" || die "the blob came back different"
}

nginx_cases() {
  if run_case nginx-start case_nginx_start; then
    run_case nginx-challenge case_nginx_challenge
    run_case nginx-skopeo-roundtrip case_nginx_skopeo_roundtrip
    run_case nginx-large-monolithic-upload case_nginx_large_monolithic_upload
  fi
  stop_nginx_group
}
