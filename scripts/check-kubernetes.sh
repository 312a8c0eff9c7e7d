#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/kubernetes, offline:
#
# - every manifest against the Kubernetes API schemas with
#   `kubernetes-validate --strict` (PyPI; its schemas ship inside the
#   package, so nothing is fetched): a misspelt or misplaced field fails;
# - the three kinds it has no schema for (Kustomization, and the
#   Prometheus Operator's ServiceMonitor and PrometheusRule) by what they
#   must hold: the Kustomization lists files that exist (and every manifest
#   but the example Secret); each PrometheusRule's groups pass
#   `promtool check rules`; the ServiceMonitor selects the Service's labels
#   and names one of its ports;
# - that the manifests give a protected registry: the ConfigMap's
#   wharf.toml sets `auth = "token"` and an `admin_token_file`, whose
#   directory (and the signing key's) is mounted from a Secret, and every
#   key it sets is one `wharf serve` accepts (docs/wharf.example.toml);
# - that the checker catches a typo: a copy of the Deployment with one
#   field misspelt must fail.
#
#   bash scripts/check-kubernetes.sh
#
# Needs kubernetes-validate (scripts/install-deps.sh installs it into
# $WHARF_TOOLS_DIR/kubernetes-validate, default ~/.local/share/wharf-tools)
# and promtool. Ends with `kubernetes: N passed, M failed`; exits non-zero
# on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

TOOLS=${WHARF_TOOLS_DIR:-$HOME/.local/share/wharf-tools}
KV=$TOOLS/kubernetes-validate/bin/kubernetes-validate
PY=$TOOLS/kubernetes-validate/bin/python
DIR=deploy/kubernetes
PASSED=0
FAILED=0

pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1 ($2)"; }

if [ ! -x "$KV" ] || ! command -v promtool >/dev/null 2>&1; then
  echo "check-kubernetes: kubernetes-validate ($KV) or promtool missing; run scripts/install-deps.sh" >&2
  echo "kubernetes: 0 passed, 1 failed"
  exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1. The API schemas.
for f in "$DIR"/*.yaml; do
  out=$(timeout 120 "$KV" --strict "$f" 2>&1)
  rc=$?
  # Only the kinds the schemas cannot know may lack a schema.
  unknown=$(grep "Couldn't find schema" <<<"$out" |
    grep -vE 'kind (Kustomization|ServiceMonitor|PrometheusRule) ' || true)
  if [ "$rc" -ne 0 ] || grep -qE '^ERROR|failed' <<<"$out" || [ -n "$unknown" ]; then
    fail "schema $f" "$(grep -vE '^INFO' <<<"$out" | head -n 3 | tr '\n' ' ')"
  else
    pass "schema $f"
  fi
done

# 2. A typo must be caught.
sed 's/^  replicas: 3$/  replica: 3/' "$DIR/deployment.yaml" >"$TMP/typo.yaml"
if cmp -s "$DIR/deployment.yaml" "$TMP/typo.yaml"; then
  fail "typo caught" "deployment.yaml has no '  replicas: 3' line to misspell"
elif timeout 120 "$KV" --strict "$TMP/typo.yaml" >"$TMP/typo.out" 2>&1; then
  fail "typo caught" "a Deployment with 'replica:' passed the schema check"
else
  pass "typo caught"
fi

# 3 and 4. The kinds without schemas, and a protected configuration.
if "$PY" - "$DIR" "$TMP" docs/wharf.example.toml >"$TMP/crd.out" 2>&1 <<'PYEOF'
import os, re, subprocess, sys, tomllib, yaml

d, tmp, example = sys.argv[1], sys.argv[2], sys.argv[3]
problems = []
def load(name):
    with open(os.path.join(d, name)) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]

kust = load("kustomization.yaml")[0]
listed = kust.get("resources", [])
for r in listed:
    if not os.path.exists(os.path.join(d, r)):
        problems.append(f"kustomization lists {r}, which does not exist")
for f in sorted(os.listdir(d)):
    if f.endswith(".yaml") and f not in listed and f not in ("kustomization.yaml", "secret.example.yaml"):
        problems.append(f"{f} is not listed in kustomization.yaml")

for f in ("prometheusrule.yaml", "prometheusrule-placement.yaml"):
    for doc in load(f):
        groups = doc.get("spec", {}).get("groups")
        if not groups:
            problems.append(f"{f}: spec.groups is empty")
            continue
        rules = os.path.join(tmp, f + ".rules.yml")
        with open(rules, "w") as out:
            yaml.safe_dump({"groups": groups}, out)
        r = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            problems.append(f"{f}: promtool check rules: {r.stdout.strip()} {r.stderr.strip()}")

svc = load("service.yaml")
sm = load("servicemonitor.yaml")[0]
ports = {p.get("name") for s in svc for p in s["spec"].get("ports", [])}
labels = [s["metadata"].get("labels", {}) for s in svc]
want = sm["spec"]["selector"].get("matchLabels", {})
if not any(all(l.get(k) == v for k, v in want.items()) for l in labels):
    problems.append(f"servicemonitor selects {want}, which no Service carries")
for e in sm["spec"].get("endpoints", []):
    if e.get("port") not in ports:
        problems.append(f"servicemonitor scrapes port {e.get('port')!r}, not a port of the Service ({sorted(ports)})")

cm = load("configmap.yaml")[0]
conf = tomllib.loads(cm["data"]["wharf.toml"])
with open(example) as f:
    known = {m.group(1) for m in re.finditer(r"^# ([a-z0-9_]+) = ", f.read(), re.M)}
for k in conf:
    if k not in known:
        problems.append(f"configmap sets {k}, a key wharf serve does not accept")
if conf.get("auth") != "token":
    problems.append(f"configmap: auth is {conf.get('auth')!r}, not \"token\"")
dep = load("deployment.yaml")[0]
pod = dep["spec"]["template"]["spec"]
secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
def from_secret(key):
    path = conf.get(key)
    if not path:
        problems.append(f"configmap sets no {key}")
        return
    p = path
    while p not in mounts and p not in ("/", ""):
        p = os.path.dirname(p)
    if mounts.get(p) not in secret_volumes:
        problems.append(f"{key} = {path!r} is not on a volume from a Secret")
for key in ("admin_token_file", "token_signing_key", "token_keys"):
    from_secret(key)
print("\n".join(problems))
sys.exit(1 if problems else 0)
PYEOF
then
  pass "kustomization, prometheus operator kinds, protected configuration"
else
  fail "kustomization, prometheus operator kinds, protected configuration" "$(tr '\n' ';' <"$TMP/crd.out" | cut -c1-400)"
fi

echo "kubernetes: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
