# End-to-end cases for tenants and authentication, sourced by tests/e2e/run.sh
# (which provides sk, c, pm, dk, die, need, header, http_code and $TMP).
#
# A second Wharf runs in token mode with a tenant directory managed through
# `wharf admin` (the admin API with an admin token). Real clients log in to
# it: `skopeo --creds`, `podman login`, `docker login`; a robot account's
# token pushes to its one repository and nowhere else; revoked and expired
# robots (and their still-unexpired tokens) are refused; a push that passes
# the tenant's quota is refused with DENIED and leaves nothing behind.

SREG=          # the token-mode registry (host:port)
SADMIN=        # its admin port
SWHARF_PID=
ALICE_PW=alice-e2e-password
ROBOT_SECRET=

wa() { timeout 30 "$WHARF_BIN" admin --url "http://$SADMIN" --token-file "$TMP/admin/admin-token" "$@"; }

stop_secure_wharf() {
  stop_pid "$SWHARF_PID" 10
  SWHARF_PID=
}

case_auth_start() {
  mkdir -p "$TMP/admin" "$TMP/keys"
  "$WHARF_BIN" admin token --out "$TMP/admin" || die "wharf admin token failed" || return 1
  [ "$(stat -c %a "$TMP/admin/admin-token")" = 600 ] || die "the admin token file is not 0600" || return 1
  "$WHARF_BIN" keygen "$TMP/keys" >/dev/null || die "wharf keygen failed" || return 1
  local addr=$TMP/secure.addr admin=$TMP/secure.admin i
  rm -f "$addr" "$admin"
  "$WHARF_BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$TMP/secure-data" \
    --addr-file "$addr" --admin-addr-file "$admin" --auth token \
    --token-signing-key "$TMP/keys" --admin-token-file "$TMP/admin/admin-token.sha256" \
    --log "${WHARF_E2E_AUTH_LOG:-debug}" >>"$LOGS/secure-wharf.out" 2>&1 3>&- 4>&- &
  SWHARF_PID=$!
  for ((i = 0; i < 150; i++)); do
    [ -s "$addr" ] && [ -s "$admin" ] && break
    kill -0 "$SWHARF_PID" 2>/dev/null || { tail -n 20 "$LOGS/secure-wharf.out"; die "secure wharf exited"; return 1; }
    sleep 0.1
  done
  SREG=$(tr -d '[:space:]' <"$addr")
  SADMIN=$(tr -d '[:space:]' <"$admin")
  [ -n "$SREG" ] && [ -n "$SADMIN" ] || die "no addresses from the secure wharf" || return 1
  echo "token-mode wharf pid $SWHARF_PID on $SREG, admin $SADMIN"
  # Without credentials: 401 and a Bearer challenge pointing at /auth/token.
  local h=$TMP/secure-base.h code
  code=$(c -D "$h" -o /dev/null -w '%{http_code}' "http://$SREG/v2/")
  [ "$code" = 401 ] || die "GET /v2/ without credentials -> $code" || return 1
  [[ "$(header "$h" WWW-Authenticate)" == Bearer\ realm=\"http://$SREG/auth/token\"* ]] ||
    die "challenge '$(header "$h" WWW-Authenticate)'"
}

case_auth_admin() {
  # The admin API refuses requests without the admin token.
  local code
  code=$(http_code GET "http://$SADMIN/admin/v1/tenants")
  [ "$code" = 401 ] || die "admin API without the token -> $code" || return 1
  wa tenant create acme || die "tenant create acme failed" || return 1
  wa tenant create globex || die "tenant create globex failed" || return 1
  wa tenant create tiny --quota-bytes 64KiB --quota-repos 1 || die "tenant create tiny failed" || return 1
  echo "$ALICE_PW" | wa user set acme alice --role push --password-stdin || die "user set alice failed" || return 1
  echo "$ALICE_PW" | wa user set tiny tina --role push --password-stdin || die "user set tina failed" || return 1
  ROBOT_SECRET=$(wa robot create acme ci --grant acme/robot:pull,push --expires-in 1h --secret-only) ||
    die "robot create failed" || return 1
  [[ "$ROBOT_SECRET" == wharf_robot_* ]] || die "robot secret '${ROBOT_SECRET:0:12}…' has no prefix" || return 1
  # Listings never show secrets or hashes.
  wa user list acme >"$TMP/users.json" && wa robot list acme >"$TMP/robots.json" || die "listing failed" || return 1
  cat "$TMP/users.json" "$TMP/robots.json"
  if grep -qE 'hash|\$2[aby]\$|wharf_robot_|'"$ALICE_PW" "$TMP/users.json" "$TMP/robots.json"; then
    die "a listing shows a secret or a hash"
    return 1
  fi
  jq -e '.users[0].name == "alice"' "$TMP/users.json" >/dev/null || die "alice not listed"
}

case_auth_skopeo_creds() {
  # No credentials: refused. Wrong password: refused. Right ones: push, pull.
  if sk copy --dest-tls-verify=false "oci:$TMP/layout:1" "docker://$SREG/acme/app:1" 2>"$TMP/anon.err"; then
    die "an anonymous push succeeded"
    return 1
  fi
  grep -qiE 'unauthorized|authentication required|denied' "$TMP/anon.err" || die "anonymous push: $(tail -n 1 "$TMP/anon.err")" || return 1
  if sk copy --dest-tls-verify=false --dest-creds "alice:wrong-password" \
    "oci:$TMP/layout:1" "docker://$SREG/acme/app:1" 2>"$TMP/wrong.err"; then
    die "a push with a wrong password succeeded"
    return 1
  fi
  sk copy --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" "oci:$TMP/layout:1" "docker://$SREG/acme/app:1" ||
    die "skopeo push with --dest-creds failed" || return 1
  local d
  d=$(sk inspect --tls-verify=false --creds "alice:$ALICE_PW" "docker://$SREG/acme/app:1" | jq -r .Digest)
  [ "$d" = "$(jq -r .amd64.manifest "$REFS")" ] || die "pulled digest '$d'" || return 1
  # alice belongs to acme: globex is out of reach.
  if sk copy --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" \
    "oci:$TMP/layout:1" "docker://$SREG/globex/app:1" 2>"$TMP/cross.err"; then
    die "alice pushed into tenant globex"
    return 1
  fi
  grep -qiE 'denied|unauthorized' "$TMP/cross.err" || die "cross-tenant push: $(tail -n 1 "$TMP/cross.err")"
}

case_auth_podman_login() {
  need podman || return 1
  echo "$ALICE_PW" | pm login --tls-verify=false -u alice --password-stdin "$SREG" || die "podman login failed" || return 1
  pm tag "$REG/e2e/alpine:1" "$SREG/acme/podman:1" || die "podman tag failed" || return 1
  pm push --tls-verify=false "$SREG/acme/podman:1" || die "podman push after login failed" || return 1
  pm rmi -f "$SREG/acme/podman:1" >/dev/null 2>&1
  pm pull --tls-verify=false "$SREG/acme/podman:1" || die "podman pull after login failed" || return 1
  pm logout "$SREG" || die "podman logout failed" || return 1
  if pm pull --tls-verify=false "$SREG/acme/podman:1" 2>"$TMP/podman-anon.err"; then
    die "podman pulled without credentials"
    return 1
  fi
}

case_auth_docker_login() {
  echo "$ALICE_PW" | dk login -u alice --password-stdin "$SREG" || die "docker login failed" || return 1
  dk tag "$REG/e2e/alpine:1" "$SREG/acme/docker:1" || die "docker tag failed" || return 1
  dk push "$SREG/acme/docker:1" | tee "$TMP/docker-auth-push.out" || die "docker push after login failed" || return 1
  grep -q 'digest: sha256:' "$TMP/docker-auth-push.out" || die "docker push printed no digest" || return 1
  dk rmi -f "$SREG/acme/docker:1" >/dev/null || die "docker rmi failed" || return 1
  dk pull "$SREG/acme/docker:1" || die "docker pull after login failed" || return 1
  dk logout "$SREG" || die "docker logout failed" || return 1
  if echo "wrong-password" | dk login -u alice --password-stdin "$SREG" 2>"$TMP/docker-bad.err"; then
    die "docker login with a wrong password succeeded"
    return 1
  fi
  grep -qiE 'unauthorized|denied|incorrect' "$TMP/docker-bad.err" || die "bad login: $(tail -n 1 "$TMP/docker-bad.err")"
}

# docker login, push and pull while a stranger on 127.0.0.2 guesses alice's
# password and 16 connections from 127.0.0.3 trickle token forms: neither
# locks alice out nor takes the slots logins need. Both loops are bounded
# (count and time) and stop by themselves.
case_auth_docker_login_under_attack() {
  local guesses="$TMP/guesses.codes" i
  : >"$guesses"
  (
    for i in $(seq 1 80); do
      curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 --interface 127.0.0.2 \
        -u "alice:guess-$i" "http://$SREG/auth/token?service=wharf&scope=repository:acme/docker:pull" >>"$guesses"
    done
  ) &
  local guesser=$!
  python3 - "$SREG" >"$TMP/trickle.out" 2>&1 <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
socks = []
for _ in range(16):
    s = socket.socket()
    s.bind(("127.0.0.3", 0))
    s.connect((host, int(port)))
    s.sendall(b"POST /auth/token HTTP/1.1\r\nHost: " + sys.argv[1].encode() +
              b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 400\r\n\r\n")
    socks.append(s)
deadline = time.time() + 30
while time.time() < deadline:
    for s in socks:
        try:
            s.sendall(b"a")
        except OSError:
            pass
    time.sleep(1)
PY
  local trickler=$!
  sleep 1
  local ok=1
  echo "$ALICE_PW" | dk login -u alice --password-stdin "$SREG" || { die "docker login under attack failed"; ok=0; }
  if [ "$ok" = 1 ]; then
    dk tag "$REG/e2e/alpine:1" "$SREG/acme/docker:attack" || { die "docker tag failed"; ok=0; }
    dk push "$SREG/acme/docker:attack" >"$TMP/docker-attack-push.out" || { die "docker push under attack failed"; ok=0; }
    dk rmi -f "$SREG/acme/docker:attack" >/dev/null
    dk pull "$SREG/acme/docker:attack" >/dev/null || { die "docker pull under attack failed"; ok=0; }
    dk logout "$SREG" >/dev/null
  fi
  wait "$guesser"
  kill "$trickler" 2>/dev/null
  wait "$trickler" 2>/dev/null
  [ "$ok" = 1 ] || return 1
  # The stranger was slowed: past its free failures it got 429s.
  grep -qx 429 "$guesses" || die "the guesser was never slowed: $(sort "$guesses" | uniq -c | tr '\n' ' ')" || return 1
  echo "guesser: $(sort "$guesses" | uniq -c | tr '\n' ' ')"
}

# A token from /auth/token for USER:PASSWORD and SCOPE.
token_for() {
  c -u "$1" "http://$SREG/auth/token?service=wharf&scope=$2" | jq -r '.token // empty'
}

case_auth_robot() {
  sk copy --dest-tls-verify=false --dest-creds "acme+ci:$ROBOT_SECRET" \
    "oci:$TMP/layout:1" "docker://$SREG/acme/robot:1" || die "robot push to its repository failed" || return 1
  if sk copy --dest-tls-verify=false --dest-creds "acme+ci:$ROBOT_SECRET" \
    "oci:$TMP/layout:1" "docker://$SREG/acme/app:robot" 2>"$TMP/robot-other.err"; then
    die "the robot pushed to a repository it was not granted"
    return 1
  fi
  grep -qiE 'denied|unauthorized' "$TMP/robot-other.err" || die "robot on acme/app: $(tail -n 1 "$TMP/robot-other.err")" || return 1
  # Its token carries only what was granted.
  local t code
  t=$(token_for "acme+ci:$ROBOT_SECRET" "repository:acme/app:pull,push") || return 1
  [ -n "$t" ] || die "no token for the robot" || return 1
  code=$(http_code GET "http://$SREG/v2/acme/app/tags/list" -H "Authorization: Bearer $t")
  [ "$code" = 401 ] || die "robot token on acme/app -> $code" || return 1
  t=$(token_for "acme+ci:$ROBOT_SECRET" "repository:acme/robot:pull")
  code=$(http_code GET "http://$SREG/v2/acme/robot/tags/list" -H "Authorization: Bearer $t")
  [ "$code" = 200 ] || die "robot token on acme/robot -> $code"
}

case_auth_robot_revoked() {
  local t code
  t=$(token_for "acme+ci:$ROBOT_SECRET" "repository:acme/robot:pull")
  [ -n "$t" ] || die "no token for the robot" || return 1
  wa robot revoke acme ci || die "robot revoke failed" || return 1
  # The token has not expired, but its robot is revoked: refused.
  code=$(http_code GET "http://$SREG/v2/acme/robot/tags/list" -H "Authorization: Bearer $t")
  [ "$code" = 401 ] || die "a revoked robot's token -> $code" || return 1
  code=$(c -o /dev/null -w '%{http_code}' -u "acme+ci:$ROBOT_SECRET" "http://$SREG/auth/token?service=wharf")
  [ "$code" = 401 ] || die "login of a revoked robot -> $code" || return 1
  if sk inspect --tls-verify=false --creds "acme+ci:$ROBOT_SECRET" "docker://$SREG/acme/robot:1" >/dev/null 2>&1; then
    die "skopeo still pulls with a revoked robot"
  fi
}

case_auth_robot_expired() {
  local secret t code
  secret=$(wa robot create acme short --grant acme/robot:pull --expires-in 3s --secret-only) ||
    die "robot create failed" || return 1
  t=$(token_for "acme+short:$secret" "repository:acme/robot:pull")
  code=$(http_code GET "http://$SREG/v2/acme/robot/tags/list" -H "Authorization: Bearer $t")
  [ "$code" = 200 ] || die "a fresh robot's token -> $code" || return 1
  sleep 4
  # The JWT itself lives for minutes; the robot behind it is over.
  code=$(http_code GET "http://$SREG/v2/acme/robot/tags/list" -H "Authorization: Bearer $t")
  [ "$code" = 401 ] || die "an expired robot's token -> $code" || return 1
  code=$(c -o /dev/null -w '%{http_code}' -u "acme+short:$secret" "http://$SREG/auth/token?service=wharf")
  [ "$code" = 401 ] || die "login of an expired robot -> $code"
}

case_auth_quota() {
  # tiny may hold 64 KiB: the fixture image's layers are larger, so the push
  # is refused with DENIED naming the quota, and nothing of it is kept.
  if sk copy --dest-tls-verify=false --dest-creds "tina:$ALICE_PW" \
    "oci:$TMP/layout:1" "docker://$SREG/tiny/app:1" 2>"$TMP/quota.err"; then
    die "a push over the quota succeeded"
    return 1
  fi
  cat "$TMP/quota.err"
  grep -q 'quota exceeded' "$TMP/quota.err" || die "no quota message: $(tail -n 1 "$TMP/quota.err")" || return 1
  wa usage tiny | tee "$TMP/tiny-usage.json"
  local bytes
  bytes=$(jq -r .bytes "$TMP/tiny-usage.json")
  [ "$bytes" -le 65536 ] || die "tiny holds $bytes bytes, over its quota" || return 1
  # No layer larger than the quota is readable, no manifest was stored, and
  # no upload session is left on disk.
  local t code d size big=0
  t=$(token_for "tina:$ALICE_PW" "repository:tiny/app:pull")
  for d in $(jq -r '.amd64.layers[]' "$REFS"); do
    size=$(stat -c %s "$TMP/layout/blobs/sha256/${d#sha256:}")
    [ "$size" -gt 65536 ] || continue
    big=$((big + 1))
    code=$(c -I -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $t" "http://$SREG/v2/tiny/app/blobs/$d")
    [ "$code" = 404 ] || die "refused layer $d ($size bytes) -> $code" || return 1
  done
  [ "$big" -gt 0 ] || die "the fixture has no layer over 64 KiB: the case tests nothing" || return 1
  code=$(http_code GET "http://$SREG/v2/tiny/app/manifests/1" -H "Authorization: Bearer $t")
  [ "$code" = 404 ] || die "the refused image's manifest -> $code" || return 1
  local left
  left=$(find "$TMP/secure-data" -path '*uploads/*' -type f | wc -l)
  [ "$left" = 0 ] || die "$left upload files left behind"
}

case_auth_no_secrets_logged() {
  # Passwords, robot secrets, the admin token and tokens never reach the log
  # (the token-mode server ran every case above at debug level).
  local log=$LOGS/secure-wharf.out admin_token
  admin_token=$(head -n 1 "$TMP/admin/admin-token")
  [ -s "$log" ] || die "no server log at $log" || return 1
  grep -q 'tenant created' "$log" || die "the log does not show the admin actions: wrong file?" || return 1
  local leaked=0 what
  for what in "$ALICE_PW" "$ROBOT_SECRET" "$admin_token" "wharf_robot_" "eyJ"; do
    if grep -qF -- "$what" "$log"; then
      echo "leaked into the log: ${what:0:12}…"
      leaked=1
    fi
  done
  [ "$leaked" = 0 ] || die "secrets in the server log"
}
